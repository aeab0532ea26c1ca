"""One training run of the time-to-accuracy benchmark: (optimizer, setting, seed) -> a record
of per-epoch train loss, validation and test accuracy and training seconds. The same
function runs in the main process (--jobs 1) and in spawned worker processes.

Protocol: the model is built from the seed (same initial weights for every optimizer), the
batches come from fngd.IndexedDataset + a DataLoader whose sampler draws its permutations
from a generator seeded by the seed (same data order for every optimizer), augmentation (CIFAR)
from a second seeded generator. Training time is measured with time.perf_counter around each
epoch's training steps and the preconditioner's end_epoch() (after a device synchronisation
on CUDA); evaluation is outside it. A non-finite loss or parameter ends the run as "diverged";
an exception (fngd's included) ends it as "error" with its message; both keep the epochs
completed before.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for p in (HERE, os.path.join(REPO, "python")):
    if p not in sys.path:
        sys.path.insert(0, p)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset  # noqa: E402

import tta_data  # noqa: E402
import tta_models  # noqa: E402
import tta_optimizers as O  # noqa: E402

_DATA_CACHE: dict = {}


def init_worker():
    """Worker-process initializer: one torch thread (the machine is shared)."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def get_data(spec: dict, device: torch.device) -> tta_data.TTAData:
    key = (tuple(sorted(spec.items())), str(device))
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = tta_data.load(spec["dataset"], spec["val_frac"], spec.get("data_dir"),
                                         spec.get("augment", True), spec.get("limit")).to(device)
    return _DATA_CACHE[key]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(model, x, y, chunk=1024):
    """(accuracy, mean cross-entropy) in eval mode, no gradients."""
    was = model.training
    model.eval()
    correct, loss = 0, 0.0
    for i in range(0, len(y), chunk):
        out = model(x[i:i + chunk])
        loss += F.cross_entropy(out.float(), y[i:i + chunk], reduction="sum").item()
        correct += (out.argmax(1) == y[i:i + chunk]).sum().item()
    model.train(was)
    n = max(len(y), 1)
    return correct / n, loss / n


def finite_params(model) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def record_failure(rec: dict, e: Exception, stepper, diverged: bool = False) -> None:
    """A run that raised: "diverged" when the caller says so or the parameters are no longer
    finite, else "error"; the message and a short traceback go into rec."""
    try:
        diverged = diverged or (stepper is not None and not finite_params(stepper.model))
    except Exception:
        pass
    rec["status"] = "diverged" if diverged else "error"
    rec["error"] = f"{type(e).__name__}: {e}"
    rec["traceback"] = traceback.format_exc(limit=4)


def close_quietly(stepper) -> None:
    """Close a stepper after a run whatever state the run left it in."""
    if stepper is not None:
        try:
            stepper.close()
        except Exception:
            pass


def run_one(task: dict) -> dict:
    """task: optimizer, setting, seed, epochs, batch, device, schedule, data (spec for
    tta_data.load), model (arch, width), ctx (tta_optimizers.Context fields)."""
    torch.set_num_threads(1)
    device = torch.device(task["device"])
    name, setting, seed = task["optimizer"], task["setting"], task["seed"]
    rec = {"optimizer": name, "setting": setting, "label": O.setting_label(setting),
           "seed": seed, "status": "ok", "error": None, "epochs": [], "info": {}}
    t_start = time.perf_counter()
    stepper = None
    try:
        data = get_data(task["data"], device)
        model = tta_models.build(data.name, data.num_classes, seed,
                                 in_features=data.x_train[0].numel(),
                                 **task.get("model", {})).to(device).train()
        ctx = O.Context(num_samples=len(data.y_train), max_batch=task["batch"], **task["ctx"])
        stepper = O.build(name, model, setting, ctx)
        if hasattr(stepper, "kwargs"):
            rec["fngd_kwargs"] = stepper.kwargs
        import fngd  # IndexedDataset: items (x, y, index); the index is the FNGD sample id
        ds = fngd.IndexedDataset(TensorDataset(data.x_train, data.y_train))
        # a last batch of one sample would break train-mode BatchNorm: drop it then (FNGD
        # counts the ids it never saw in its fallback_ids)
        drop = len(ds) % task["batch"] == 1
        sampler = BatchSampler(RandomSampler(ds, generator=torch.Generator().manual_seed(seed)),
                               task["batch"], drop_last=drop)
        # batch_size=None: the sampler yields index lists, the dataset is indexed by a list
        # (one gather per batch instead of one __getitem__ per sample)
        loader = DataLoader(ds, sampler=sampler, batch_size=None)
        aug_gen = torch.Generator().manual_seed(10_000 + seed)
        total = task.get("schedule_epochs", task["epochs"]) * len(sampler)
        schedule = task.get("schedule", "cosine")
        do_eval = task.get("evaluate", True)  # False: the timing pass, times only
        if do_eval:
            va, vl = evaluate(model, data.x_val, data.y_val)
            ta, tl = evaluate(model, data.x_test, data.y_test)
            rec["init"] = {"val_acc": va, "test_acc": ta, "val_loss": vl, "test_loss": tl}
        rec["setup_seconds"] = time.perf_counter() - t_start
        wall, step_i = 0.0, 0
        for ep in range(task["epochs"]):
            phase = stepper.phase
            _sync(device)
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            nb = 0
            for x, y, ids in loader:
                if data.augment is not None:
                    x = data.augment(x, aug_gen)
                stepper.set_lr_factor(O.cosine_factor(step_i, total)
                                      if schedule == "cosine" else 1.0)
                loss_sum += stepper.step(x, y, torch.as_tensor(ids))
                step_i += 1
                nb += 1
            stepper.end_epoch()
            train_loss = (loss_sum / nb).item()  # synchronises
            _sync(device)
            dt = time.perf_counter() - t0
            wall += dt
            row = {"epoch": ep + 1, "phase": phase, "seconds": dt, "wall": wall,
                   "train_loss": train_loss, "lr_end": stepper.current_lr()}
            if not math.isfinite(train_loss) or not finite_params(model):
                row.update(val_acc=None, test_acc=None, val_loss=None, test_loss=None)
                rec["epochs"].append(row)
                rec["status"] = "diverged"
                rec["error"] = f"non-finite train loss or parameters in epoch {ep + 1}"
                break
            if do_eval:
                va, vl = evaluate(model, data.x_val, data.y_val)
                ta, tl = evaluate(model, data.x_test, data.y_test)
                row.update(val_acc=va, test_acc=ta, val_loss=vl, test_loss=tl)
            rec["epochs"].append(row)
        rec["info"] = stepper.info()
    except Exception as e:  # fngd.FNGDError, third-party failures: recorded, never raised
        record_failure(rec, e, stepper)
    finally:
        close_quietly(stepper)
    rec["run_seconds"] = time.perf_counter() - t_start
    return rec
