#!/usr/bin/env python3
"""Step time of ResNet-18 (CIFAR variant, 100 classes) under SGD, FNGD and KFAC.

Rows:
  sgd                  SGD with momentum 0.9, weight decay 5e-4 (the baseline)
  fngd-layer/epoch1    per-layer FNGD, collect steps (Gram, Cholesky, store coefficients)
  fngd-layer/later     per-layer FNGD, reuse steps (stored coefficients, weighted reduction)
  fngd-global/epoch1   global FNGD, collect steps
  fngd-global/later    global FNGD, reuse steps: a weighted loss, no fngd_step, no hooks
  kfac-pytorch         KFACPreconditioner from kfac-pytorch, when importable
  asdl-kfac            KfacGradientMaker from ASDL (asdfghjkl), when importable, at ASDL's
                       default intervals (curvature and inverse every step)
  asdl-smw-ng          SmwEmpNaturalGradientMaker from ASDL: the empirical-Fisher natural
                       gradient by Sherman-Morrison-Woodbury, N x N Gram and solve every step
                       (the "recompute every step" reference; see asdl_smw_runner)

ASDL is optional (`pip install --no-deps asdfghjkl` into a venv that has torch: a plain
install also pulls torch's full CUDA dependency set); rows that cannot run are reported as
skipped.

Each row: warm-up steps, then --steps timed steps (CUDA events on GPU, perf_counter on CPU);
the median and mean step time, the median of each phase (forward, backward, precondition,
optimizer), peak GPU memory, and a projection of 100 epochs of CIFAR-100 (50,000 images):
FNGD = one collect epoch + 99 reuse epochs; others = 100 epochs at their mean step time (the
mean, not the median, carries KFAC's periodic inversions). Results go to JSON, a markdown table
and a PNG plot in --out.

Data: CIFAR-100 from a local torchvision-format folder (--data DIR holding
cifar-100-python/train), else synthetic tensors of the same shape. The batches are moved to the
device before timing, so data loading is not measured.

--train-epochs E (with --data): instead of timing steps, train SGD and per-layer FNGD for E
epochs each and write train_curves.json and train_curves.png (see train_curves.py).

--smoke: 2 timed steps on the CPU with a batch of 4, no warm-up and (unless --width is given)
a network 8 channels wide instead of 64, so that CI exercises every row in seconds; with
--train-epochs, at most 256 training and 256 test images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(REPO, "python"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import fngd  # noqa: E402
import train_curves  # noqa: E402
from cifar100_data import load_cifar100  # noqa: E402
from resnet_cifar import resnet18_cifar  # noqa: E402

CIFAR100_TRAIN = 50_000
EPOCHS = 100


# ---- data ---------------------------------------------------------------------------------

def make_batches(args, device, n_batches):
    n = n_batches * args.batch
    if args.data:
        x, y = load_cifar100(args.data, n)
        reps = math.ceil(n / len(x))
        x, y = x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]
        source = f"CIFAR-100 ({args.data})"
    else:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 3, 32, 32, generator=g)
        y = torch.randint(0, 100, (n,), generator=g)
        source = "synthetic"
    ids = torch.arange(n)
    out = [(x[i:i + args.batch].to(device), y[i:i + args.batch].to(device), ids[i:i + args.batch])
           for i in range(0, n, args.batch)]
    return out, source


# ---- timing -------------------------------------------------------------------------------

class PhaseTimer:
    """Marks phase ends within one step; CUDA events on GPU (read after one sync per step),
    perf_counter on CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self):
        self.marks = [("start", self._now())]

    def mark(self, phase):
        self.marks.append((phase, self._now()))

    def finish(self) -> dict:
        if self.cuda:
            torch.cuda.synchronize()
        out = {}
        for (_, a), (name, b) in zip(self.marks, self.marks[1:]):
            ms = a.elapsed_time(b) if self.cuda else (b - a) * 1e3
            out[name] = out.get(name, 0.0) + ms
        return out


# ---- optimizer variants -------------------------------------------------------------------

def sgd(model, args):
    return torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)


def step_plain(model, opt, x, y, t):
    opt.zero_grad(set_to_none=True)
    out = model(x)
    loss = F.cross_entropy(out, y)
    t.mark("forward")
    loss.backward()
    t.mark("backward")
    opt.step()
    t.mark("optimizer")


def step_fngd(model, opt, pre, x, y, ids, t):
    opt.zero_grad(set_to_none=True)
    out = model(x)
    if pre.needs_loss_weights:
        w = pre.loss_weights(ids)
        loss = (w * F.cross_entropy(out, y, reduction="none")).mean()
        t.mark("forward")
        loss.backward()
        t.mark("backward")
    else:
        loss = F.cross_entropy(out, y)
        t.mark("forward")
        loss.backward()
        t.mark("backward")
        pre.step(ids)
        t.mark("precondition")
    opt.step()
    t.mark("optimizer")


def kfac_pytorch_runner(model, args):
    from kfac.preconditioner import KFACPreconditioner  # noqa: import only when present
    opt = sgd(model, args)
    pre = KFACPreconditioner(model, factor_update_steps=args.kfac_factor_every,
                             inv_update_steps=args.kfac_inv_every, damping=args.kfac_damping,
                             lr=args.lr)

    def step(x, y, ids, t):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        t.mark("forward")
        loss.backward()
        t.mark("backward")
        pre.step()
        t.mark("precondition")
        opt.step()
        t.mark("optimizer")
    step.config = {"factor_update_steps": args.kfac_factor_every,
                   "inv_update_steps": args.kfac_inv_every, "damping": args.kfac_damping}
    return step


def asdl_runner(model, args):
    import asdl  # noqa: the asdfghjkl distribution installs the `asdl` package
    opt = sgd(model, args)
    # Update intervals: ASDL's documented defaults (PreconditioningConfig: curvature and
    # inverse every step) unless --asdl-curvature-every / --asdl-inv-every are given.
    intervals = {}
    if args.asdl_curvature_every:
        intervals["curvature_upd_interval"] = args.asdl_curvature_every
    if args.asdl_inv_every:
        intervals["preconditioner_upd_interval"] = args.asdl_inv_every
    cfg = asdl.PreconditioningConfig(data_size=args.batch, damping=args.kfac_damping,
                                     **intervals)
    gm = asdl.KfacGradientMaker(model, cfg, fisher_type="fisher_emp")

    def step(x, y, ids, t):
        opt.zero_grad(set_to_none=True)
        dummy = gm.setup_model_call(model, x)
        gm.setup_loss_call(F.cross_entropy, dummy, y)
        gm.forward_and_backward()  # forward, backward and preconditioning in one call
        t.mark("forward+backward+precondition")
        opt.step()
        t.mark("optimizer")
    step.config = {"fisher_type": "fisher_emp", "damping": cfg.damping,
                   # ASDL's None: the curvature follows the preconditioner's interval
                   "curvature_upd_interval": (cfg.curvature_upd_interval
                                              or cfg.preconditioner_upd_interval),
                   "preconditioner_upd_interval": cfg.preconditioner_upd_interval}
    return step


def asdl_smw_runner(model, args):
    """ASDL's SmwEmpNaturalGradientMaker: the natural gradient under the empirical Fisher of
    the batch by the Sherman-Morrison-Woodbury identity, (U^T U / N + lambda I)^-1 g, i.e. an
    N x N Gram and its Cholesky solve recomputed every step: the "recompute every step"
    reference for FNGD. One extended forward and backward build the Gram, then the per-sample
    losses are back-propagated once more with the solved weights. As ASDL implements it, the
    Gram covers Conv2d and Linear only (BatchNorm2d has no gram_hada operation: ASDL warns and
    its parameters get the weighted gradient without entering the Gram), and a convolution's
    block is ASDL's Hadamard-factored approximation (input Gram times output-gradient Gram)."""
    import warnings

    import asdl  # noqa: the asdfghjkl distribution installs the `asdl` package
    opt = sgd(model, args)
    cfg = asdl.SmwEmpNaturalGradientConfig(data_size=args.batch, damping=args.damping)
    gm = asdl.SmwEmpNaturalGradientMaker(model, cfg)

    def step(x, y, ids, t):
        opt.zero_grad(set_to_none=True)
        dummy = gm.setup_model_call(model, x)
        gm.setup_loss_call(F.cross_entropy, dummy, y)  # ASDL makes it reduction='none'
        with warnings.catch_warnings():  # "gram_hada not supported for BatchNorm2d", per step
            warnings.simplefilter("ignore")
            gm.forward_and_backward()  # both passes, Gram and solve in one call
        t.mark("forward+backward+precondition")
        opt.step()
        t.mark("optimizer")
    step.config = {"fisher_type": "fisher_emp", "damping": cfg.damping,
                   "data_size": cfg.data_size, "gram": "Conv2d and Linear only (ASDL)"}
    return step


# ---- measurement --------------------------------------------------------------------------

def measure(label, step, batches, args, device):
    """Warm up, then time args.steps steps; returns the row dict."""
    t = PhaseTimer(device)
    it = iter(batches)
    for _ in range(args.warmup):
        x, y, ids = next(it)
        t.start()
        step(x, y, ids, t)
        t.finish()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    totals, phases = [], {}
    for _ in range(args.steps):
        x, y, ids = next(it)
        t.start()
        step(x, y, ids, t)
        ph = t.finish()
        totals.append(sum(ph.values()))
        for k, v in ph.items():
            phases.setdefault(k, []).append(v)
    row = {"name": label, "steps": len(totals), "median_ms": statistics.median(totals),
           "mean_ms": statistics.fmean(totals), "min_ms": min(totals),
           "phases_median_ms": {k: statistics.median(v) for k, v in phases.items()},
           "peak_memory_mib": (torch.cuda.max_memory_allocated(device) / 2**20
                               if device.type == "cuda" else None)}
    print(f"  {label:22s} median {row['median_ms']:9.2f} ms  mean {row['mean_ms']:9.2f} ms",
          flush=True)
    return row


def fresh_model(device, args):
    torch.manual_seed(0)
    return resnet18_cifar(num_classes=100, width=args.width).to(device).train()


def run(args):
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    per_row = args.warmup + args.steps
    batches, source = make_batches(args, device, per_row)
    steps_per_epoch = math.ceil(CIFAR100_TRAIN / args.batch)
    rows, skipped = [], {}
    want = set(args.optimizers.split(","))

    if "sgd" in want:
        model = fresh_model(device, args)
        opt = sgd(model, args)
        rows.append(measure("sgd", lambda x, y, i, t: step_plain(model, opt, x, y, t),
                            batches, args, device))
    for mode in ("layer", "global"):
        if f"fngd-{mode}" not in want:
            continue
        model = fresh_model(device, args)
        opt = sgd(model, args)
        pre = fngd.FNGDPreconditioner(model, num_samples=per_row * args.batch,
                                      max_batch=args.batch, damping=args.damping,
                                      damping_kind=args.damping_kind, mode=mode)

        def step(x, y, ids, t, pre=pre, model=model, opt=opt):
            step_fngd(model, opt, pre, x, y, ids, t)
        rows.append(measure(f"fngd-{mode}/epoch1", step, batches, args, device))
        rows[-1]["gram_methods"] = pre.gram_methods()
        pre.end_epoch()  # the same ids come back: every later step uses stored coefficients
        rows.append(measure(f"fngd-{mode}/later", step, batches, args, device))
        rows[-1]["fallback_ids"] = pre.stats()["fallback_ids"]
        pre.close()
    third_party = (("kfac-pytorch", kfac_pytorch_runner), ("asdl-kfac", asdl_runner),
                   ("asdl-smw-ng", asdl_smw_runner))
    for name, factory in third_party:
        if name not in want:
            continue
        try:
            model = fresh_model(device, args)
            step = factory(model, args)
        except ImportError as e:
            skipped[name] = f"not importable: {e}"
            print(f"  {name:22s} skipped ({skipped[name]})")
            continue
        except Exception as e:  # e.g. an ASDL release without this class or argument
            skipped[name] = f"unavailable: {type(e).__name__}: {e}"
            print(f"  {name:22s} skipped ({skipped[name]})")
            continue
        try:
            rows.append(measure(name, step, batches, args, device))
        except Exception as e:  # a third-party failure must not lose the other rows
            skipped[name] = f"failed: {type(e).__name__}: {e}"
            print(f"  {name:22s} skipped ({skipped[name]})")
            continue
        if hasattr(step, "config"):
            rows[-1]["config"] = step.config

    by = {r["name"]: r for r in rows}
    projections = {}
    for r in rows:
        if r["name"].endswith("/later"):
            continue
        if r["name"].endswith("/epoch1"):
            later = by[r["name"].replace("/epoch1", "/later")]
            sec = steps_per_epoch * (r["mean_ms"] + (EPOCHS - 1) * later["mean_ms"]) / 1e3
            name = r["name"].replace("/epoch1", "")
        else:
            sec, name = steps_per_epoch * EPOCHS * r["mean_ms"] / 1e3, r["name"]
        projections[name] = {"seconds": sec}
    base = projections.get("sgd", {}).get("seconds")
    for p in projections.values():
        p["vs_sgd"] = p["seconds"] / base if base else None
    return {
        "benchmark": "resnet18_cifar100_step_time",
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"CPU ({platform.processor() or platform.machine()}, "
                        f"{torch.get_num_threads()} threads)"),
        "torch": torch.__version__, "libfngd": ".".join(map(str, fngd.library_version())),
        "data": source, "batch": args.batch, "width": args.width, "warmup": args.warmup,
        "timed_steps": args.steps, "damping": args.damping, "damping_kind": args.damping_kind,
        "timer": "cuda events" if device.type == "cuda" else "perf_counter",
        "projection": f"{EPOCHS} epochs x {steps_per_epoch} steps (CIFAR-100 train, batch "
                      f"{args.batch}); FNGD = 1 collect epoch + {EPOCHS - 1} reuse epochs",
        "rows": rows, "projected_100_epochs": projections, "skipped": skipped,
    }


# ---- reports ------------------------------------------------------------------------------

def phase_order(rows):
    """Phases in the order they run (forward, backward, precondition, optimizer, others)."""
    out = []
    for r in rows:
        out += [p for p in r["phases_median_ms"] if p not in out]
    known = ["forward", "backward", "precondition", "forward+backward+precondition", "optimizer"]
    return sorted(out, key=lambda p: known.index(p) if p in known else len(known))


def markdown(res) -> str:
    phases = phase_order(res["rows"])
    lines = [f"# ResNet-18 / CIFAR-100 step time ({res['device']})", "",
             f"batch {res['batch']}, {res['timed_steps']} timed steps after {res['warmup']} "
             f"warm-up, data: {res['data']}, torch {res['torch']}, libfngd {res['libfngd']}", "",
             "| optimizer | median ms | mean ms | " + " | ".join(phases) +
             " | peak MiB |", "|---|---:|---:|" + "---:|" * len(phases) + "---:|"]
    for r in res["rows"]:
        cells = [f"{r['phases_median_ms'][p]:.2f}" if p in r["phases_median_ms"] else ""
                 for p in phases]
        mem = f"{r['peak_memory_mib']:.0f}" if r["peak_memory_mib"] is not None else "n/a"
        lines.append(f"| {r['name']} | {r['median_ms']:.2f} | {r['mean_ms']:.2f} | " +
                     " | ".join(cells) + f" | {mem} |")
    lines += ["", f"Projected training time ({res['projection']}):", "",
              "| optimizer | hours | vs SGD |", "|---|---:|---:|"]
    for name, p in res["projected_100_epochs"].items():
        ratio = f"{p['vs_sgd']:.2f}x" if p["vs_sgd"] else "n/a"
        lines.append(f"| {name} | {p['seconds'] / 3600:.2f} | {ratio} |")
    for name, why in res["skipped"].items():
        lines.append(f"\n{name}: {why}")
    return "\n".join(lines) + "\n"


def plot(res, path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = res["rows"]
    phases = phase_order(rows)
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    left = [0.0] * len(rows)
    names = [r["name"] for r in rows]
    for p in phases:
        vals = [r["phases_median_ms"].get(p, 0.0) for r in rows]
        ax.barh(names, vals, left=left, label=p)
        left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set_xlabel("median time per step (ms), by phase")
    ax.set_title(f"ResNet-18 / CIFAR-100, batch {res['batch']} — {res['device']}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="folder with cifar-100-python/train (default: synthetic)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=100, help="timed steps per row (>= 50)")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--width", type=int, default=None,
                    help="stem channels (default 64 = ResNet-18; 8 with --smoke)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--damping", type=float, default=1e-3)
    ap.add_argument("--damping-kind", default="absolute", choices=["absolute", "trace_relative"])
    ap.add_argument("--kfac-damping", type=float, default=3e-3)
    ap.add_argument("--kfac-factor-every", type=int, default=10)
    ap.add_argument("--kfac-inv-every", type=int, default=100)
    ap.add_argument("--asdl-curvature-every", type=int, default=None,
                    help="asdl-kfac curvature interval (default: ASDL's, every step)")
    ap.add_argument("--asdl-inv-every", type=int, default=None,
                    help="asdl-kfac inverse interval (default: ASDL's, every step)")
    ap.add_argument("--optimizers",
                    default="sgd,fngd-layer,fngd-global,kfac-pytorch,asdl-kfac,asdl-smw-ng")
    ap.add_argument("--out", default=os.path.join(REPO, "build-bench", "resnet18_cifar"))
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    tr = ap.add_argument_group("training curves (--train-epochs; needs --data)")
    tr.add_argument("--train-epochs", type=int, default=0,
                    help="train SGD and per-layer FNGD for this many epochs each and plot "
                         "loss and accuracy curves, instead of timing steps")
    tr.add_argument("--fngd-lr", type=float, default=None, help="FNGD's rate (default --lr)")
    tr.add_argument("--recompute-every", type=int, default=0,
                    help="FNGD: recollect coefficients every R epochs (0: epoch one only)")
    tr.add_argument("--no-augment", dest="augment", action="store_false",
                    help="no random crop and flip")
    tr.add_argument("--train-limit", type=int, default=None,
                    help="use the first N training images (default all; 256 with --smoke)")
    tr.add_argument("--test-limit", type=int, default=None,
                    help="use the first N test images (default all; 256 with --smoke)")
    ap.add_argument("--smoke", action="store_true",
                    help="CI: 2 CPU steps, batch 4, no warm-up, width 8 unless --width is given")
    args = ap.parse_args(argv)
    if args.train_epochs < 0:
        ap.error("--train-epochs must not be negative")
    if args.train_epochs and not args.data:
        ap.error("--train-epochs needs --data (a folder with cifar-100-python/{train,test})")
    if args.smoke:
        args.device, args.batch, args.steps, args.warmup = "cpu", 4, 2, 0
        args.width = args.width or 8
        args.threads = args.threads or 1  # 2-core CI: oversubscribed OpenMP spins for seconds
        args.train_limit = args.train_limit or 256
        args.test_limit = args.test_limit or 256
    elif args.steps < 50 and not args.train_epochs:
        ap.error("--steps must be at least 50 for a meaningful median (use --smoke for CI)")
    args.width = args.width or 64
    return args


def main(argv=None):
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.train_epochs:
        res = train_curves.train(args)
        train_curves.write(res, args.out)
        print(f"written to {args.out}")
        return res
    print(f"resnet18_cifar: device {args.device}, batch {args.batch}, {args.warmup} warm-up + "
          f"{args.steps} timed steps per row", flush=True)
    res = run(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=2)
    md = markdown(res)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(md)
    png = os.path.join(args.out, "results.png")
    if not plot(res, png):
        print("matplotlib not importable: no plot written")
    print(md)
    print(f"written to {args.out}")
    return res


if __name__ == "__main__":
    main()
