"""CIFAR-100 from a torchvision-format folder (cifar-100-python/{train,test}: pickles of a dict
with b"data", N x 3072 uint8 in channel-major order, and b"fine_labels"), read with pickle so
the benchmark needs no torchvision; plus the usual training augmentation, done on the batch's
device so that it costs no data-loader time."""

from __future__ import annotations

import os
import pickle

import torch

MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)


def split_path(folder: str, split: str) -> str:
    """The pickle of `split` ("train" or "test") under folder or folder/cifar-100-python."""
    for path in (os.path.join(folder, "cifar-100-python", split), os.path.join(folder, split)):
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no cifar-100-python/{split} under {folder}")


def load_split_uint8(folder: str, split: str, n: int | None = None):
    """The first n (default all) images of a split as uint8 N x 3 x 32 x 32 and int64 labels."""
    with open(split_path(folder, split), "rb") as f:
        d = pickle.load(f, encoding="bytes")  # written by Python 2: byte-string keys
    data = d[b"data"][:n]
    x = torch.as_tensor(data, dtype=torch.uint8).reshape(-1, 3, 32, 32)
    y = torch.tensor(d[b"fine_labels"][:len(x)], dtype=torch.int64)
    return x, y


def normalize(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images (any device) to float32, scaled to [0, 1] and standardised per channel."""
    mean = torch.tensor(MEAN, device=x_uint8.device)[:, None, None]
    std = torch.tensor(STD, device=x_uint8.device)[:, None, None]
    return (x_uint8.float().div_(255) - mean) / std


def load_cifar100(folder: str, n: int | None = None, split: str = "train"):
    """The first n images of a split, normalised float32, and their labels."""
    x, y = load_split_uint8(folder, split, n)
    return normalize(x), y


def augment(x: torch.Tensor, gen: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding (zero = the channel mean once normalised) and random
    horizontal flip, independently per image; x is a normalised N x C x H x W batch."""
    n, _, h, w = x.shape
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(x.device)
    flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)                      # n x h
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]        # n x w
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]]     # n x h x w x C
    return out.permute(0, 3, 1, 2).contiguous()
