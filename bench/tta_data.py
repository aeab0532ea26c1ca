"""Data sets of the time-to-accuracy benchmark (bench/time_to_accuracy.py). Nothing downloads:

  digits         examples/data/digits.csv (1797 8x8 images, see examples/data/README.md)
  breast_cancer  sklearn.datasets.load_breast_cancer (569 x 30, ships inside scikit-learn)
  cifar10        --data DIR with cifar-10-batches-py/{data_batch_1..5,test_batch}
  cifar100       --data DIR with cifar-100-python/{train,test} (read by cifar100_data.py)

Every split is fixed (a permutation drawn from a seed that does not depend on the run's
seed): a test split, and a validation split held out of the training data for selecting
hyper-parameters. Standardisation statistics come from the training part only.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DIGITS_CSV = os.path.join(REPO, "examples", "data", "digits.csv")

SPLIT_SEED = 20240305  # fixed for every run: the splits never depend on --seeds

# Default target test accuracy per data set (--target overrides).
DEFAULT_TARGET = {"digits": 0.95, "breast_cancer": 0.95, "cifar10": 0.85, "cifar100": 0.60}

CIFAR_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
               "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


@dataclass
class TTAData:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    # augment(x_batch, generator) -> x_batch, applied to training batches only (CIFAR)
    augment: Optional[Callable] = None
    notes: list = field(default_factory=list)

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}

    def to(self, device) -> "TTAData":
        for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            setattr(self, k, getattr(self, k).to(device))
        return self


def _split(n: int, test: int, val_frac: float):
    """Fixed index sets (train, val, test) of n samples: test of size `test`, then a
    fraction val_frac of the remaining samples as validation."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    te, rest = perm[:test], perm[test:]
    nv = int(round(val_frac * len(rest)))
    return np.sort(rest[nv:]), np.sort(rest[:nv]), np.sort(te)


def _make(name, x, y, idx, num_classes, notes, augment=None):
    tr, va, te = (torch.as_tensor(i, dtype=torch.int64) for i in idx)
    x = torch.as_tensor(x)
    y = torch.as_tensor(y, dtype=torch.int64)
    return TTAData(name, x[tr].contiguous(), y[tr], x[va].contiguous(), y[va],
                   x[te].contiguous(), y[te], num_classes, augment, notes)


def load_digits(val_frac: float = 0.1, csv: str = DIGITS_CSV) -> TTAData:
    """1797 images 1 x 8 x 8: 360 test, 10% of the other 1437 for validation; pixels /16 to
    [0, 1], then standardised with the training part's mean and standard deviation (one
    scalar each, so the images keep their spatial structure)."""
    raw = np.loadtxt(csv, delimiter=",", dtype=np.float64)
    x = (raw[:, :64] / 16.0).reshape(-1, 1, 8, 8)
    y = raw[:, 64].astype(np.int64)
    idx = _split(len(y), 360, val_frac)
    mean, std = x[idx[0]].mean(), x[idx[0]].std()
    x = ((x - mean) / std).astype(np.float32)
    return _make("digits", x, y, idx, 10, [f"digits.csv, standardised (mean {mean:.4f}, "
                                           f"std {std:.4f} of the training part)"])


def load_breast_cancer(val_frac: float = 0.1) -> TTAData:
    """569 x 30 features: 114 test (20%), 10% of the rest for validation; every feature
    standardised with the training part's statistics."""
    from sklearn.datasets import load_breast_cancer as sk_load  # ships its data, no download
    d = sk_load()
    x, y = d.data.astype(np.float64), d.target.astype(np.int64)
    idx = _split(len(y), 114, val_frac)
    mean, std = x[idx[0]].mean(0), x[idx[0]].std(0)
    x = ((x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
    return _make("breast_cancer", x, y, idx, 2, ["sklearn load_breast_cancer, standardised "
                                                 "per feature (training part)"])


# ---- CIFAR in torchvision's python-pickle folder layout -----------------------------------

def _unpickle(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")  # written by Python 2: byte-string keys


def _find(folder: str, sub: str, name: str) -> str:
    for path in (os.path.join(folder, sub, name), os.path.join(folder, name)):
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no {sub}/{name} under {folder}")


def load_cifar10_uint8(folder: str):
    """(x_train, y_train, x_test, y_test): uint8 N x 3 x 32 x 32 and int64 labels from
    cifar-10-batches-py/data_batch_1..5 and test_batch (b"data", b"labels")."""
    xs, ys = [], []
    for i in range(1, 6):
        d = _unpickle(_find(folder, "cifar-10-batches-py", f"data_batch_{i}"))
        xs.append(np.asarray(d[b"data"], dtype=np.uint8))
        ys.extend(d[b"labels"])
    d = _unpickle(_find(folder, "cifar-10-batches-py", "test_batch"))
    xtr = torch.from_numpy(np.concatenate(xs)).reshape(-1, 3, 32, 32)
    xte = torch.from_numpy(np.asarray(d[b"data"], dtype=np.uint8)).reshape(-1, 3, 32, 32)
    return (xtr, torch.tensor(ys, dtype=torch.int64), xte,
            torch.tensor(d[b"labels"], dtype=torch.int64))


def load_cifar100_uint8(folder: str):
    import cifar100_data  # bench/cifar100_data.py (bench/ is on sys.path)
    xtr, ytr = cifar100_data.load_split_uint8(folder, "train")
    xte, yte = cifar100_data.load_split_uint8(folder, "test")
    return xtr, ytr, xte, yte


def _normalize(x_uint8: torch.Tensor, name: str) -> torch.Tensor:
    mean, std = CIFAR_STATS[name]
    m = torch.tensor(mean)[:, None, None]
    s = torch.tensor(std)[:, None, None]
    return (x_uint8.float().div_(255) - m) / s


def load_cifar(name: str, folder: str, val_frac: float = 0.1, augment: bool = True,
               limit: int | None = None) -> TTAData:
    """CIFAR-10/100: the official test set as test, val_frac of the training set (fixed
    permutation) as validation; per-channel normalisation; random crop + flip on training
    batches (cifar100_data.augment) unless augment=False. limit: use only the first `limit`
    training and test images (for quick looks)."""
    if not folder:
        raise ValueError(f"--dataset {name} needs --data DIR (a torchvision-format folder)")
    loader = load_cifar10_uint8 if name == "cifar10" else load_cifar100_uint8
    xtr, ytr, xte, yte = loader(folder)
    if limit:
        xtr, ytr, xte, yte = xtr[:limit], ytr[:limit], xte[:limit], yte[:limit]
    n = len(ytr)
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    nv = int(round(val_frac * n))
    tr, va = (torch.as_tensor(np.sort(p), dtype=torch.int64) for p in (perm[nv:], perm[:nv]))
    xtr, xte = _normalize(xtr, name), _normalize(xte, name)
    aug = None
    if augment:
        import cifar100_data
        aug = cifar100_data.augment
    return TTAData(name, xtr[tr].contiguous(), ytr[tr], xtr[va].contiguous(), ytr[va],
                   xte, yte, 10 if name == "cifar10" else 100, aug,
                   [f"{folder}: {n} training images ({len(va)} held out for validation), "
                    f"{len(yte)} test; augmentation {'crop+flip' if augment else 'off'}"])


def load(name: str, val_frac: float = 0.1, data_dir: str | None = None,
         augment: bool = True, limit: int | None = None) -> TTAData:
    if name == "digits":
        return load_digits(val_frac)
    if name == "breast_cancer":
        return load_breast_cancer(val_frac)
    if name in ("cifar10", "cifar100"):
        return load_cifar(name, data_dir, val_frac, augment, limit)
    raise ValueError(f"unknown dataset {name!r}")
