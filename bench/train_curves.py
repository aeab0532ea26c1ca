"""--train-epochs E: train ResNet-18 on CIFAR-100 with SGD and with per-layer FNGD for E
epochs each, from the same initial weights and with the same shuffling, recording per epoch
the mean training loss and accuracy, the test loss and accuracy, and the training wall time
(data loading included, evaluation excluded); then train_curves.json and train_curves.png.

Both use SGD with momentum 0.9, weight decay 5e-4 and a cosine learning-rate schedule over
the E epochs (per step); FNGD writes its direction into .grad before that SGD step. FNGD keys
its stored coefficients by data-set index through fngd.IndexedDataset, so shuffling and
augmentation (random crop and flip, on the device) leave the reuse epochs correct."""

from __future__ import annotations

import json
import math
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import fngd
from cifar100_data import augment, load_split_uint8, normalize
from resnet_cifar import resnet18_cifar


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(model, x_u8, y, device, batch=500):
    """Test loss and accuracy (eval mode: running BatchNorm statistics)."""
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():  # the preconditioner ignores forwards without grad
        for i in range(0, len(x_u8), batch):
            xb = normalize(x_u8[i:i + batch].to(device))
            yb = y[i:i + batch].to(device)
            out = model(xb)
            loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
            correct += (out.argmax(1) == yb).sum().item()
    model.train()
    return loss_sum / len(x_u8), correct / len(x_u8)


def train_one(name, train_set, test, args, device):
    """Train one optimizer for args.train_epochs epochs; returns its per-epoch history."""
    torch.manual_seed(0)  # same initial weights for every optimizer
    model = resnet18_cifar(num_classes=100, width=args.width).to(device).train()
    lr = args.lr if name == "sgd" else (args.fngd_lr or args.lr)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    loader = DataLoader(fngd.IndexedDataset(train_set), batch_size=args.batch, shuffle=True,
                        generator=torch.Generator().manual_seed(1),
                        pin_memory=device.type == "cuda")
    total_steps = args.train_epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total_steps)))
    pre = None
    if name == "fngd-layer":
        pre = fngd.FNGDPreconditioner(model, num_samples=len(train_set), max_batch=args.batch,
                                      damping=args.damping, damping_kind=args.damping_kind,
                                      mode="layer", recompute_every=args.recompute_every)
    aug_gen = torch.Generator().manual_seed(2)
    history, elapsed = [], 0.0
    for epoch in range(1, args.train_epochs + 1):
        _sync(device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)  # summed on the device: no sync per step
        correct = torch.zeros((), device=device, dtype=torch.int64)
        for xb, yb, ids in loader:
            xb = normalize(xb.to(device, non_blocking=True))
            yb = yb.to(device, non_blocking=True)
            if args.augment:
                xb = augment(xb, aug_gen)
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = F.cross_entropy(out, yb)
            loss.backward()
            if pre is not None:
                pre.step(ids)
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(yb)
            correct += (out.detach().argmax(1) == yb).sum()
        if pre is not None:
            pre.end_epoch()
        _sync(device)
        seconds = time.perf_counter() - t0
        elapsed += seconds
        test_loss, test_acc = evaluate(model, *test, device)
        row = {"epoch": epoch, "train_loss": loss_sum.item() / len(train_set),
               "train_acc": correct.item() / len(train_set), "test_loss": test_loss,
               "test_acc": test_acc, "epoch_seconds": seconds, "wall_seconds": elapsed}
        history.append(row)
        print(f"  {name:11s} epoch {epoch:3d}  train loss {row['train_loss']:.4f}  "
              f"test acc {100 * test_acc:6.2f}%  {seconds:8.2f} s", flush=True)
        if not math.isfinite(row["train_loss"]):
            print(f"  {name}: non-finite training loss, stopping this run")
            break
    out = {"lr": lr, "epochs": history}
    if pre is not None:
        out["fngd_stats"] = {k: v for k, v in pre.stats().items()
                             if isinstance(v, (int, float, str))}
        pre.close()
    return out


def train(args):
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    x, y = load_split_uint8(args.data, "train", args.train_limit)
    test = load_split_uint8(args.data, "test", args.test_limit)
    train_set = TensorDataset(x, y)
    print(f"train_curves: {len(train_set)} train / {len(test[0])} test images, batch "
          f"{args.batch}, {args.train_epochs} epochs per optimizer", flush=True)
    runs = {name: train_one(name, train_set, test, args, device)
            for name in ("sgd", "fngd-layer")}
    return {
        "benchmark": "resnet18_cifar100_training_curves",
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU ({torch.get_num_threads()} threads)"),
        "torch": torch.__version__, "libfngd": ".".join(map(str, fngd.library_version())),
        "data": args.data, "train_images": len(train_set), "test_images": len(test[0]),
        "batch": args.batch, "width": args.width, "epochs": args.train_epochs,
        "augment": args.augment, "damping": args.damping, "damping_kind": args.damping_kind,
        "recompute_every": args.recompute_every,
        "schedule": "SGD momentum 0.9, weight decay 5e-4, cosine learning rate per step",
        "wall_time": "training only (data loading included, evaluation excluded)",
        "runs": runs,
    }


def plot_curves(res, path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401 (integer epoch ticks)
    except ImportError:
        return False
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(14, 4))
    for name, run in res["runs"].items():
        h = run["epochs"]
        ep = [r["epoch"] for r in h]
        a1.plot(ep, [r["train_loss"] for r in h], marker="o", label=name)
        a2.plot(ep, [100 * r["test_acc"] for r in h], marker="o", label=name)
        a3.plot([r["wall_seconds"] for r in h], [100 * r["test_acc"] for r in h], marker="o",
                label=name)
    a1.set(xlabel="epoch", ylabel="training loss (epoch mean)")
    a2.set(xlabel="epoch", ylabel="test accuracy (%)")
    a3.set(xlabel="training wall time (s)", ylabel="test accuracy (%)")
    for a in (a1, a2):
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"ResNet-18 / CIFAR-100, batch {res['batch']}, {res['train_images']} train "
                 f"images — {res['device']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write(res, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "train_curves.json"), "w") as f:
        json.dump(res, f, indent=2)
    if not plot_curves(res, os.path.join(out_dir, "train_curves.png")):
        print("matplotlib not importable: no plot written")
