#!/usr/bin/env python3
"""Drop-in overhead: FNGD steps through fngd.FNGDPreconditioner against PyTorch's SGD step.

Per model size and step control (the library's default "kl_clip", and "none"):
  sgd             zero_grad, forward, cross-entropy, backward, torch.optim.SGD step (momentum 0.9)
  layer-collect   the same loop with a per-layer preconditioner in its collect epoch (Gram,
                  Cholesky, coefficients stored) and pre.step(ids) before the optimizer
  layer-reuse     per-layer, after one collect epoch: stored coefficients, one weighted
                  reduction per layer (plus, with kl_clip, the plain gradient per layer)
  global-reuse    global mode after one collect epoch: no hooks at work and no fngd_step, the
                  loss weighted by pre.loss_weights(ids) (step control plays no part: one row)
  sgd-weighted    sgd with global reuse's weighted loss (weights of one): what the weighting
                  itself costs, so that global-reuse / sgd-weighted is the drop-in's own part
Models: digits (bench/tta_models.py's CNN, 1x8x8, batch 64), mnist (Conv-BN-Conv-BN-Linear on
1x28x28 random data, batch 64), resnet18 (bench/resnet_cifar.py, 3x32x32, 100 classes, batch 32).

Timing: every configuration has its own copy of the model (same initial weights), optimizer and
preconditioner; after warm-up, rounds run a block of steps (10 for digits, 5 for mnist, 1 for
resnet18) of each configuration in turn, the order rotating every round, so that changes in the
machine's load hit all of them alike while each block runs with its own data in the caches.
Each step is timed as CPU time of the process (time.process_time; torch and OpenBLAS at one
thread, so that is the compute of the step, robust to other jobs waiting for the cores) and as
wall time (perf_counter; CUDA: synchronised). The tables report medians and ratios to sgd's.

--profile adds a separate, instrumented pass (means over its steps) of layer-reuse and
layer-collect (both step controls): where the time of a step goes (forward with hooks: hook
bodies, Linear/Conv2d input handover and the copies it made, norm-layer xhat; backward; step():
Python side and the library call, and inside the library what check_finite, exact small layers
and the KL clip's plain-gradient reduction add, from handles with each switched off; the
optimizer).

Results: JSON (--out, default bench/results/dropin_overhead_<machine>.json, <machine> from the
CPU model, e.g. intel-xeon-2vcpu) and markdown tables on stdout; --from-json prints the tables
of a saved run (--compare OTHER.json: its ratios beside, e.g. an older package measured with
--fngd-path). --device cuda runs the same on a GPU (each phase is synchronised before it is
timed; the tables then use wall time, and --profile's parts, CPU-time wrappers around
asynchronous calls, mean little there). --smoke: tiny steps counts for CI.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before libfngd (and its OpenBLAS) loads
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


def mnist_cnn(num_classes=10):
    """The small MNIST-sized CNN of issue 13: Conv-BN-Conv-BN-Linear."""
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 14 * 14, num_classes))


def build_model(name):
    from resnet_cifar import resnet18_cifar
    from tta_models import digits_cnn
    return {"digits": (digits_cnn, (1, 8, 8), 10, 64),
            "mnist": (mnist_cnn, (1, 28, 28), 10, 64),
            "resnet18": (lambda: resnet18_cifar(100), (3, 32, 32), 100, 32)}[name]


# warm-up steps, timed steps, steps per block (a round runs one block of each configuration)
STEPS = {"digits": (10, 300, 10), "mnist": (5, 100, 5), "resnet18": (2, 12, 1)}
CONFIGS = ["sgd", "layer-collect/kl_clip", "layer-collect/none", "layer-reuse/kl_clip",
           "layer-reuse/none", "global-reuse", "sgd-weighted"]


class Clock:
    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def now(self):
        if self.cuda:
            torch.cuda.synchronize()
        return time.process_time(), time.perf_counter()


class Runner:
    """One configuration: model copy, optimizer, preconditioner, its batches."""

    def __init__(self, config, base, batches, device, fngd, step_control, num_samples):
        self.config, self.batches, self.i = config, batches, 0
        self.model = copy.deepcopy(base).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.pre = None
        self.weights = torch.ones(batches[0][0].shape[0], device=device)
        if config.startswith("sgd"):
            return
        kind, _, sc = config.partition("/")
        mode = "global" if kind.startswith("global") else "layer"
        self.pre = fngd.FNGDPreconditioner(self.model, num_samples=num_samples,
                                           max_batch=batches[0][0].shape[0], mode=mode,
                                           step_control=sc or step_control, lr=self.opt)
        if "reuse" in kind:
            for _ in batches:
                self.step()
            self.pre.end_epoch()
            assert self.pre.phase == "reuse"

    def step(self, marks=None):
        x, y, ids = self.batches[self.i % len(self.batches)]
        self.i += 1
        model, opt, pre = self.model, self.opt, self.pre
        opt.zero_grad(set_to_none=True)
        out = model(x)
        if pre is not None and pre.needs_loss_weights:
            loss = (pre.loss_weights(ids) * F.cross_entropy(out, y, reduction="none")).mean()
        elif self.config == "sgd-weighted":  # global reuse's loss, weights of one, no fngd
            loss = (self.weights * F.cross_entropy(out, y, reduction="none")).mean()
        else:
            loss = F.cross_entropy(out, y)
        if marks is not None:
            marks.append(("forward", marks.clock.now()))
        loss.backward()
        if marks is not None:
            marks.append(("backward", marks.clock.now()))
        if pre is not None and not pre.needs_loss_weights:
            pre.step(ids)
            if marks is not None:
                marks.append(("precondition", marks.clock.now()))
        opt.step()
        if marks is not None:
            marks.append(("optimizer", marks.clock.now()))


class Marks(list):
    def __init__(self, clock):
        super().__init__()
        self.clock = clock


def make_batches(name, device, n_batches=4, seed=0):
    _, shape, ncls, batch = build_model(name)
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n_batches):
        x = torch.randn(batch, *shape, generator=g).to(device)
        y = torch.randint(0, ncls, (batch,), generator=g).to(device)
        out.append((x, y, torch.arange(b * batch, (b + 1) * batch)))
    return out


def time_model(name, args, fngd, device):
    make, _, _, _ = build_model(name)
    torch.manual_seed(0)
    base = make()
    batches = make_batches(name, device)
    num_samples = len(batches) * batches[0][0].shape[0]
    runners = {c: Runner(c, base, batches, device, fngd, None, num_samples) for c in CONFIGS}
    warm, steps, block = STEPS[name] if not args.smoke else (1, 2, 1)
    warm, steps = args.warmup if args.warmup is not None else warm, args.steps or steps
    block = min(block, steps)
    clock = Clock(device)
    for _ in range(warm):
        for r in runners.values():
            r.step()
    cpu, wall, phases = ({c: [] for c in CONFIGS} for _ in range(3))
    for k in range((steps + block - 1) // block):
        order = CONFIGS[k % len(CONFIGS):] + CONFIGS[:k % len(CONFIGS)]
        for c in order:
            for _ in range(block):
                marks = Marks(clock)
                t0 = clock.now()
                runners[c].step(marks)
                t1 = marks[-1][1]
                cpu[c].append((t1[0] - t0[0]) * 1e3)
                wall[c].append((t1[1] - t0[1]) * 1e3)
                prev, ph = t0, {}
                for label, t in marks:
                    ph[label] = (t[0] - prev[0]) * 1e3
                    prev = t
                phases[c].append(ph)
    rows = {}
    for c in CONFIGS:
        keys = phases[c][0].keys()
        rows[c] = {"cpu_ms": statistics.median(cpu[c]), "wall_ms": statistics.median(wall[c]),
                   "cpu_ms_min": min(cpu[c]), "steps": len(cpu[c]),
                   "phases_cpu_ms": {k: statistics.median(p[k] for p in phases[c])
                                     for k in keys}}
    for c in CONFIGS:
        rows[c]["cpu_ratio"] = rows[c]["cpu_ms"] / rows["sgd"]["cpu_ms"]
        rows[c]["wall_ratio"] = rows[c]["wall_ms"] / rows["sgd"]["wall_ms"]
    for r in runners.values():
        if r.pre is not None:
            r.pre.close()
    return {"model": name, "batch": batches[0][0].shape[0],
            "input": list(batches[0][0].shape[1:]),
            "parameters": sum(p.numel() for p in base.parameters()),
            "warmup": warm, "rows": rows}


# ---- the instrumented profile -----------------------------------------------------------

class Acc(dict):
    def add(self, key, seconds):
        self[key] = self.get(key, 0.0) + seconds * 1e3


PROFILE = {"acc": Acc(), "copies": {}}  # the current pass's accumulators


def instrument(fngd):
    """Wrap the package's hook bodies, captures, step() and the library's entry points with
    CPU-time accumulators (this package's layout: fngd._capture, fngd.layers, fngd._handle)."""
    from fngd import _capture, _handle
    from fngd import layers as L
    pt = time.process_time
    undo = []

    def patch(obj, name, value):
        undo.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def timed(key, fn):
        def wrapper(*a, **k):
            t = pt()
            try:
                return fn(*a, **k)
            finally:
                PROFILE["acc"].add(key, pt() - t)
        return wrapper

    def count(key, n=1):
        PROFILE["copies"][key] = PROFILE["copies"].get(key, 0) + n

    for kind in L.KINDS:
        cls = type(kind)
        key = "xhat" if kind.name in ("batchnorm2d", "layernorm") else "input handover"

        def capture(self, module, x, output, orig=cls.capture, key=key):
            t = pt()
            a = orig(self, module, x, output)
            PROFILE["acc"].add(key, pt() - t)
            if key == "input handover" and a.data_ptr() != x.data_ptr():
                count("input copies")
            return a
        patch(cls, "capture", capture)
    for name in ("_pre_hook", "_hook"):
        orig = getattr(_capture.Hooks, name)
        patch(_capture.Hooks, name,
              lambda self, layer, orig=orig: timed("hooks (incl. captures)", orig(self, layer)))
    patch(_capture.Capture, "__call__",
          timed("output-gradient hooks", _capture.Capture.__call__))
    step = fngd.FNGDPreconditioner.step

    def counted_step(self, *a, **k):
        if PROFILE.get("snapshot") is not None and not PROFILE["snapshot"]:
            PROFILE["snapshot"] += [(l, l.captures[0].a, l.captures[0].e) for l in self.layers]
        for l in self.layers:
            e = l.captures[0].e if len(l.captures) == 1 else None
            if e is not None and (e.dtype != torch.float32 or not e.is_contiguous()):
                count("output-gradient copies")
        return step(self, *a, **k)
    patch(fngd.FNGDPreconditioner, "step", counted_step)

    class LibProxy:
        def __init__(self, lib):
            self._lib = lib

        def __getattr__(self, n):
            f = getattr(self._lib, n)
            return timed("library: " + n, f) if n.startswith("fngd_") else f
    proxy = LibProxy(_handle._load())
    patch(_handle, "_load", lambda: proxy)

    def restore():
        for obj, name, value in reversed(undo):
            setattr(obj, name, value)
    return restore


def profile_model(name, args, fngd, device):
    make, _, _, _ = build_model(name)
    torch.manual_seed(0)
    base = make()
    batches = make_batches(name, device)
    num_samples = len(batches) * batches[0][0].shape[0]
    warm, steps, _ = STEPS[name] if not args.smoke else (1, 2, 1)
    steps = max(2, min(60, (args.steps or steps) // 2))
    clock = Clock(device)
    out = {}
    variants = [("sgd", {}), ("layer-reuse/kl_clip", {}), ("layer-reuse/none", {}),
                ("layer-collect/kl_clip", {}), ("layer-collect/none", {}),
                # the library call with one of its optional parts switched off:
                ("layer-reuse/none", {"check_finite": False}),
                ("layer-reuse/none", {"exact_small_layers": False}),
                ("layer-collect/none", {"check_finite": False}),
                ("layer-collect/none", {"exact_small_layers": False})]
    for config, extra in variants:
        orig_init = fngd.FNGDPreconditioner.__init__
        if extra:
            def init(self, *a, _orig=orig_init, **k):
                k.update(extra)
                _orig(self, *a, **k)
            fngd.FNGDPreconditioner.__init__ = init
        try:
            r = Runner(config, base, batches, device, fngd, None, num_samples)
        finally:
            fngd.FNGDPreconditioner.__init__ = orig_init
        for _ in range(warm):
            r.step()
        acc = PROFILE["acc"] = Acc()
        copies = PROFILE["copies"] = {}
        phases = []
        for _ in range(steps):
            marks = Marks(clock)
            t0 = clock.now()
            r.step(marks)
            prev, ph = t0, {}
            for label, t in marks:
                ph[label] = (t[0] - prev[0]) * 1e3
                prev = t
            phases.append(ph)
        label = config + "".join(f" {k}={v}" for k, v in extra.items())
        torch_ms = None
        if config == "layer-reuse/none" and not extra and device.type == "cpu":
            PROFILE["snapshot"], PROFILE["acc"] = [], Acc()  # this step is not accounted
            r.step()
            torch_ms = torch_reductions_ms(PROFILE["snapshot"])
            PROFILE["snapshot"] = None
        out[label] = {"phases_cpu_ms": {k: statistics.fmean(p[k] for p in phases)
                                        for k in phases[0]},
                      "parts_cpu_ms": {k: v / steps for k, v in acc.items()},
                      "copies_per_step": {k: v / steps for k, v in copies.items()},
                      "torch_reductions_ms": torch_ms}
        if r.pre is not None:
            r.pre.close()
    return {"model": name, "rows": out}


def torch_reductions_ms(snapshot, repeat=5):
    """CPU time of the reuse step's weighted reductions done with torch's own kernels on the
    same captured tensors: rows of each output gradient scaled by a coefficient, then the
    weight (and bias) gradient kernel autograd would run (convolution_backward with only the
    weight mask, a matmul, or the norm layers' two sums). A reference for what the library's
    reduction could cost on this machine, not a path the package takes."""
    def once():
        for l, a, e in snapshot:
            s = torch.rand(e.shape[0], dtype=e.dtype, device=e.device)
            es = e * s.view(-1, *([1] * (e.dim() - 1)))
            m = l.module
            if l.kind == "conv2d":
                g = l.geom
                torch.ops.aten.convolution_backward(
                    es, a, m.weight.detach(), [m.out_channels] if m.bias is not None else None,
                    [g["stride_h"], g["stride_w"]], [g["pad_h"], g["pad_w"]],
                    [g["dilation_h"], g["dilation_w"]], False, [0, 0], 1,
                    [False, True, m.bias is not None])
            elif l.kind == "linear":
                e2, a2 = es.reshape(-1, es.shape[-1]), a.reshape(-1, a.shape[-1])
                e2.t() @ a2
                if m.bias is not None:
                    e2.sum(0)
            else:
                dims = (0, 2, 3) if l.kind == "batchnorm2d" else tuple(range(a.dim() - 1))
                (es * a).sum(dims), es.sum(dims)
    once()
    t = time.process_time()
    for _ in range(repeat):
        once()
    return (time.process_time() - t) / repeat * 1e3


# ---- report ------------------------------------------------------------------------------

def table_profile(prof) -> str:
    """Where a step's CPU time goes, ms per step (means over the instrumented steps)."""
    lines = []
    for m in prof:
        rows = m["rows"]
        cols = ["sgd", "layer-reuse/kl_clip", "layer-reuse/none", "layer-collect/kl_clip",
                "layer-collect/none"]
        lines += [f"**{m['model']}** (ms per step, CPU time)", "",
                  "| part | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]

        def ph(c, k):
            return rows[c]["phases_cpu_ms"].get(k, 0.0)

        def part(c, k):
            return rows[c]["parts_cpu_ms"].get(k, 0.0)

        def lib(c):
            return part(c, "library: fngd_step")

        def fmt(v):
            return f"{v:.2f}"
        spec = [
            ("forward (with hooks)", lambda c: ph(c, "forward")),
            ("  hook bodies (no capture)", lambda c: part(c, "hooks (incl. captures)")
             - part(c, "xhat") - part(c, "input handover")),
            ("  Linear/Conv2d input handover", lambda c: part(c, "input handover")),
            ("  BatchNorm/LayerNorm xhat", lambda c: part(c, "xhat")),
            ("backward", lambda c: ph(c, "backward")),
            ("  output-gradient hooks", lambda c: part(c, "output-gradient hooks")),
            ("step(): Python side", lambda c: ph(c, "precondition") - lib(c)
             - part(c, "library: fngd_set_learning_rate")
             - part(c, "library: fngd_set_layer_buffers")),
            ("step(): ctypes calls besides fngd_step", lambda c:
             part(c, "library: fngd_set_learning_rate")
             + part(c, "library: fngd_set_layer_buffers")),
            ("step(): library fngd_step", lib),
            ("optimizer", lambda c: ph(c, "optimizer")),
            ("total", lambda c: sum(rows[c]["phases_cpu_ms"].values())),
        ]
        for label, f in spec:
            lines.append(f"| {label} | " + " | ".join(fmt(f(c)) for c in cols) + " |")
        extra = []
        for phase in ("reuse", "collect"):
            base = lib(f"layer-{phase}/none")
            kl = lib(f"layer-{phase}/kl_clip") - base
            cf = base - lib(f"layer-{phase}/none check_finite=False")
            ex = base - lib(f"layer-{phase}/none exact_small_layers=False")
            extra.append(f"{phase}: fngd_step {base:.2f} ms without the clip; the KL clip adds "
                         f"{kl:.2f}, check_finite {cf:.2f}, exact small layers {ex:.2f}")
        wg = ph("sgd", "backward") - ph("layer-reuse/none", "backward")
        tr = rows["layer-reuse/none"].get("torch_reductions_ms")
        ref = (f" The same reductions with torch's kernels on the captured tensors: {tr:.2f} ms"
               " (reference, not a path the package takes)." if tr is not None else "")
        lines += ["", "Inside the library: " + "; ".join(extra)
                  + f". Autograd's weight gradients that the drop-in skips: {wg:.2f} ms "
                  "(sgd's backward minus layer-reuse's)." + ref, ""]
    return "\n".join(lines)


def markdown(res) -> str:
    gpu = res["machine"].get("device", "cpu").startswith("cuda")
    what = "wall time, synchronised" if gpu else "CPU time"
    out = [f"Step time relative to PyTorch's SGD step ({what}, median of the step; ms in "
           "brackets)", "", _timing_table(res["timing"], "wall" if gpu else "cpu")]
    if res.get("profile"):
        out += ["", table_profile(res["profile"])]
    return "\n".join(out)


def compare_table(after, before) -> str:
    """Ratios to sgd of two runs (e.g. the package before and after a change) side by side."""
    cols = CONFIGS[1:]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    old = {m["model"]: m["rows"] for m in before["timing"]}
    for m in after["timing"]:
        cells = []
        for c in cols:
            b = old.get(m["model"], {}).get(c)
            a = m["rows"][c]["cpu_ratio"]
            cells.append(f"{b['cpu_ratio']:.2f}x -> {a:.2f}x" if b else f"{a:.2f}x")
        lines.append(f"| {m['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _timing_table(results, metric="cpu") -> str:
    """metric "cpu" (CPU time, the CPU runs) or "wall" (a GPU's synchronised wall time)."""
    cols = CONFIGS[1:]
    other = "wall" if metric == "cpu" else "cpu"
    lines = ["| model | batch | sgd | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 3) + "|"]
    for m in results:
        r = m["rows"]
        lines.append(f"| {m['model']} | {m['batch']} | {r['sgd'][metric + '_ms']:.2f} ms | "
                     + " | ".join(f"{r[c][metric + '_ratio']:.2f}x ({r[c][metric + '_ms']:.2f})"
                                  for c in cols) + " |")
    lines += ["", f"{'Wall-clock' if other == 'wall' else 'CPU-time'} ratios (the same steps): "
              + "; ".join(f"{m['model']}: " + ", ".join(
                  f"{c} {m['rows'][c][other + '_ratio']:.2f}x" for c in cols) for m in results)]
    return "\n".join(lines)


def machine_info(device):
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "cpus": os.cpu_count(), "device": str(device)}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_start"] = os.getloadavg()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_slug() -> str:
    """intel-xeon-2vcpu, amd-epyc-2vcpu, ...: the CPU family and the logical CPU count."""
    try:
        with open("/proc/cpuinfo") as f:
            model = next(l.split(":", 1)[1] for l in f if l.startswith("model name")).lower()
    except (OSError, StopIteration):
        model = platform.processor().lower()
    family = next((k for k in ("amd-epyc", "intel-xeon", "amd-ryzen", "intel-core")
                   if all(w in model for w in k.split("-"))), "cpu")
    return f"{family}-{os.cpu_count()}vcpu"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="digits,mnist,resnet18")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--profile", action="store_true", help="add the instrumented profile")
    p.add_argument("--out", default=None, help="JSON path (default: bench/results/"
                   "dropin_overhead_<machine>.json; '-' for none)")
    p.add_argument("--machine", default=None, help="name in the default --out (default: "
                   "from the CPU model and count, e.g. intel-xeon-2vcpu)")
    p.add_argument("--fngd-path", default=os.path.join(REPO, "python"),
                   help="directory holding the fngd package to measure (e.g. an older copy)")
    p.add_argument("--smoke", action="store_true", help="1 warm-up and 2 timed steps")
    p.add_argument("--from-json", default=None, help="measure nothing: print the tables of "
                   "this result file")
    p.add_argument("--compare", default=None, help="with --from-json: a second result file "
                   "(e.g. an older package) whose ratios are shown beside")
    return p.parse_args(argv)


def main(argv=None):
    args = parse(argv)
    if args.from_json:
        with open(args.from_json) as f:
            res = json.load(f)
        print(markdown(res))
        if args.compare:
            with open(args.compare) as f:
                print("\nBefore -> after (CPU-time ratios to sgd)\n\n"
                      + compare_table(res, json.load(f)))
        return res
    sys.path.insert(0, args.fngd_path)
    import fngd
    torch.set_num_threads(1)
    device = torch.device(args.device)
    res = {"benchmark": "dropin_overhead", "machine": machine_info(device),
           "fngd_path": os.path.abspath(args.fngd_path), "timing": [], "profile": []}
    t0 = time.perf_counter()
    models = [m for m in args.models.split(",") if m]
    for name in models:
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        res["timing"].append(time_model(name, args, fngd, device))
    if args.profile:
        restore = instrument(fngd)
        try:
            for name in models:
                print(f"profiling {name} ...", file=sys.stderr, flush=True)
                res["profile"].append(profile_model(name, args, fngd, device))
        finally:
            restore()
    res["machine"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    res["seconds"] = time.perf_counter() - t0
    out = args.out or os.path.join(HERE, "results",
                                   f"dropin_overhead_{args.machine or machine_slug()}.json")
    if out != "-":
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
        print(f"wrote {out}", file=sys.stderr)
    print(markdown(res))
    return res


if __name__ == "__main__":
    main()
