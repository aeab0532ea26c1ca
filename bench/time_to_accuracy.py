#!/usr/bin/env python3
"""Time to accuracy: train the same model on real data with several optimizers and report,
per optimizer at its best setting, final and best test accuracy, epochs and training seconds
to a target test accuracy, and epoch time relative to SGD (FNGD: collect and reuse epochs
apart), as mean and spread over seeds, after a learning-rate sweep per optimizer (and a
damping sweep for the curvature methods). A benchmark program, not a test.

  python bench/time_to_accuracy.py                        # digits, 10 epochs, 3 seeds, all
  python bench/time_to_accuracy.py --dataset breast_cancer
  python bench/time_to_accuracy.py --dataset cifar10 --data DIR --device cuda --epochs 30
  python bench/time_to_accuracy.py --quick                # 1 seed, 2 epochs, one setting each
  python bench/time_to_accuracy.py --optimizers fngd-layer-r1 --merge   # add to the last JSON

Files (one job each): tta_data.py data sets and fixed splits, tta_models.py models,
tta_optimizers.py one builder per optimizer + the FNGD variant table + default grids,
tta_train.py one run, tta_summary.py statistics, tta_report.py JSON/markdown/PNG; this file
is the command line, the sweep, the worker pool and the selection.

Protocol: for every seed the same initial weights and the same batch order for every
optimizer, and the same epoch budget; the setting of each optimizer is selected on a
validation split held out of the training data (--val-frac; 0 selects on the test split and
says so), by the mean final validation accuracy over the seeds, among settings none of whose
runs diverged or failed. Wall time is training time only. Runs of independent (optimizer,
setting, seed) go to --jobs spawned worker processes with one torch thread each.
Output: <out>/tta_<dataset>.{json,md,png}.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # before torch / libfngd load; workers inherit it

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _p in (HERE, os.path.join(REPO, "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

import tta_data  # noqa: E402
import tta_optimizers as O  # noqa: E402
import tta_report  # noqa: E402
import tta_summary  # noqa: E402
import tta_train  # noqa: E402

DEFAULT_OPTIMIZERS = "sgd,adamw,fngd-layer,fngd-global,asdl-kfac,asdl-smw,singd"
# rough relative cost per run, to start the slow runs first (load balance)
_COST = {"asdl-kfac": 5, "asdl-smw": 3, "singd": 2, "fngd": 2, "sgd": 1, "adamw": 1}


def _floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


def _grid_option(values, what):
    """["fngd=0.01,0.1", "sgd=0.1"] -> {"fngd": {what: [0.01, 0.1]}, "sgd": {...}}."""
    out = {}
    for item in values or []:
        key, sep, vals = item.partition("=")
        if not sep:
            raise SystemExit(f"--{what}s wants NAME=v1,v2,... (NAME: an optimizer or a family "
                             f"such as fngd), got {item!r}")
        out.setdefault(key.strip(), {})[what] = _floats(vals)
    return out


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="digits",
                    choices=["digits", "breast_cancer", "cifar10", "cifar100"])
    ap.add_argument("--data", default=None, help="CIFAR folder (torchvision pickle layout)")
    ap.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS,
                    help=f"comma list (default {DEFAULT_OPTIMIZERS}); known: "
                         + ",".join(O.known()))
    ap.add_argument("--epochs", type=int, default=None, help="default 10 (--quick: 2)")
    ap.add_argument("--seeds", default=None,
                    help="N (seeds 0..N-1) or a comma list; default 3 (--quick: 1)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--target", type=float, default=None,
                    help="target test accuracy (default per dataset: "
                         + ", ".join(f"{k} {v}" for k, v in tta_data.DEFAULT_TARGET.items())
                         + ")")
    ap.add_argument("--lrs", action="append", metavar="NAME=v1,v2",
                    help="learning-rate grid of an optimizer or family (sgd, adamw, fngd, "
                         "asdl-kfac, asdl-smw, singd); repeatable")
    ap.add_argument("--dampings", action="append", metavar="NAME=v1,v2",
                    help="damping grid of an optimizer or family; repeatable")
    ap.add_argument("--fngd-extra", default="{}", metavar="JSON",
                    help="FNGDPreconditioner kwargs merged into every FNGD variant")
    ap.add_argument("--variant", action="append", metavar="NAME=JSON",
                    help="add (or replace) an FNGD variant: NAME='{\"mode\": \"layer\"}'")
    ap.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    ap.add_argument("--weight-decay", type=float, default=5e-4,
                    help="SGD-style weight decay of sgd, fngd-*, asdl-*, singd")
    ap.add_argument("--adamw-weight-decay", type=float, default=1e-2)
    ap.add_argument("--singd-rest-lr", type=float, default=0.1,
                    help="SGD lr of the parameters SINGD does not precondition (norm layers)")
    ap.add_argument("--val-frac", type=float, default=None,
                    help="fraction of the training data held out for selection (0: select "
                         "on the test split); default 0.2 for breast_cancer, else 0.1")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=None,
                    help="worker processes (default 2 on the CPU, 1 on CUDA)")
    ap.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet10"],
                    help="CIFAR model")
    ap.add_argument("--width", type=int, default=64, help="CIFAR ResNet base width")
    ap.add_argument("--no-augment", action="store_true", help="CIFAR: no crop/flip")
    ap.add_argument("--limit", type=int, default=None,
                    help="CIFAR: only the first N training and test images")
    ap.add_argument("--timing-repeats", type=int, default=3,
                    help="timing pass: rerun each selected setting (seed 0, no evaluation) "
                         "this many times, interleaved across optimizers, in one process; "
                         "epoch times, ratios and seconds to target come from it (0: from "
                         "the sweep's own runs, which share the CPUs with --jobs workers)")
    ap.add_argument("--timing-epochs", type=int, default=3,
                    help="epochs per timing run (at most --epochs; >= 2 times both FNGD "
                         "phases)")
    ap.add_argument("--quick", action="store_true",
                    help="1 seed, 2 epochs, one setting per optimizer (CI smoke)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the runs of other optimizers from an existing "
                         "<out>/tta_<dataset>.json with the same protocol, replace these")
    ap.add_argument("--plot", default=None, metavar="NAME,NAME",
                    help="optimizers drawn in the PNG (default: all)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.quick else 10
    if args.quick and "--timing-repeats" not in (sys.argv if argv is None else argv):
        args.timing_repeats = 1
    if args.seeds is None:
        args.seeds = "1" if args.quick else "3"
    args.seed_list = (list(range(int(args.seeds))) if "," not in args.seeds and
                      args.seeds.strip().isdigit() else [int(s) for s in args.seeds.split(",")])
    if args.val_frac is None:
        args.val_frac = 0.2 if args.dataset == "breast_cancer" else 0.1
    if args.target is None:
        args.target = tta_data.DEFAULT_TARGET[args.dataset]
    if args.jobs is None:
        args.jobs = 1 if args.device.startswith("cuda") else 2
    if args.dataset.startswith("cifar") and not args.data:
        ap.error(f"--dataset {args.dataset} needs --data DIR")
    try:
        args.fngd_extra_kw = json.loads(args.fngd_extra)
    except json.JSONDecodeError as e:
        ap.error(f"--fngd-extra is not JSON: {e}")
    args.variants = dict(O.FNGD_VARIANTS)
    for item in args.variant or []:
        name, sep, js = item.partition("=")
        if not sep:
            ap.error(f"--variant wants NAME=JSON, got {item!r}")
        try:
            kw = json.loads(js)
        except json.JSONDecodeError as e:
            ap.error(f"--variant {name}: not JSON: {e}")
        if not isinstance(kw, dict):
            ap.error(f"--variant {name}: JSON must be an object of FNGDPreconditioner kwargs")
        args.variants[name.strip()] = kw
    args.optimizer_list = [s.strip() for s in args.optimizers.split(",") if s.strip()]
    for name in args.optimizer_list:
        try:
            O.family(name, args.variants)
        except KeyError as e:
            ap.error(str(e))
    args.grid_overrides = _grid_option(args.lrs, "lr")
    for k, v in _grid_option(args.dampings, "damping").items():
        args.grid_overrides.setdefault(k, {}).update(v)
    return args


def context_fields(args) -> dict:
    return {"weight_decay": args.weight_decay, "adamw_weight_decay": args.adamw_weight_decay,
            "singd_rest_lr": args.singd_rest_lr, "fngd_extra": args.fngd_extra_kw,
            "variants": args.variants}


def settings_for(name, args, ctx):
    fam = O.family(name, args.variants)
    over = {}
    for key in (fam, name):  # the family's grid, then the optimizer's own
        for k, v in args.grid_overrides.get(key, {}).items():
            over.setdefault(fam, {})[k] = v
    return O.grid(name, ctx, over, quick=args.quick)


def protocol(args) -> dict:
    """The options that must agree for runs of two invocations to be merged."""
    return {"dataset": args.dataset, "epochs": args.epochs, "seeds": args.seed_list,
            "batch": args.batch, "target": args.target, "schedule": args.schedule,
            "val_frac": args.val_frac, "weight_decay": args.weight_decay,
            "adamw_weight_decay": args.adamw_weight_decay, "device": args.device,
            "arch": args.arch, "width": args.width, "augment": not args.no_augment,
            "limit": args.limit, "data": args.data}


def make_task(args, ctx_fields, name, setting, seed, **more):
    data_spec = {"dataset": args.dataset, "val_frac": args.val_frac, "data_dir": args.data,
                 "augment": not args.no_augment, "limit": args.limit}
    model = ({"arch": args.arch, "width": args.width} if args.dataset.startswith("cifar")
             else {})
    task = {"optimizer": name, "setting": setting, "seed": seed, "epochs": args.epochs,
            "batch": args.batch, "device": args.device, "schedule": args.schedule,
            "data": data_spec, "model": model, "ctx": ctx_fields}
    task.update(more)
    return task


def make_tasks(args, ctx_fields):
    ctx = O.Context(num_samples=1, max_batch=args.batch, **ctx_fields)
    tasks, skipped, grids = [], {}, {}
    for name in args.optimizer_list:
        why = O.unavailable(name, ctx)
        if why:
            skipped[name] = why
            print(f"  note: {name} skipped: {why}", flush=True)
            continue
        grids[name] = settings_for(name, args, ctx)
        for setting in grids[name]:
            for seed in args.seed_list:
                tasks.append(make_task(args, ctx_fields, name, setting, seed))
    return tasks, skipped, grids


def _progress(i, n, rec, t0):
    last = rec["epochs"][-1] if rec["epochs"] else {}
    acc = last.get("test_acc")
    print(f"  [{i:4d}/{n}] {time.perf_counter() - t0:7.1f}s  {rec['optimizer']:16s} "
          f"{rec['label']:22s} seed {rec['seed']}  {rec['status']:8s} "
          f"test {acc if acc is None else round(acc, 4)}  ({rec['run_seconds']:.1f}s)"
          + (f"  {rec['error']}" if rec.get("error") else ""), flush=True)


def run_tasks(tasks, jobs):
    """All runs, in the order of `tasks` (slow ones are started first)."""
    order = sorted(range(len(tasks)), key=lambda i: -_COST.get(
        O.family(tasks[i]["optimizer"], tasks[i]["ctx"]["variants"]), 1))
    results = [None] * len(tasks)
    t0 = time.perf_counter()
    if jobs <= 1:
        tta_train.init_worker()
        for k, i in enumerate(order, 1):
            results[i] = tta_train.run_one(tasks[i])
            _progress(k, len(tasks), results[i], t0)
        return results
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx,
                             initializer=tta_train.init_worker) as pool:
        futs = {pool.submit(tta_train.run_one, tasks[i]): i for i in order}
        for k, fut in enumerate(as_completed(futs), 1):
            i = futs[fut]
            try:
                results[i] = fut.result()
            except Exception as e:  # a worker died (e.g. killed): record, keep going
                t = tasks[i]
                results[i] = {"optimizer": t["optimizer"], "setting": t["setting"],
                              "label": O.setting_label(t["setting"]), "seed": t["seed"],
                              "status": "error", "error": f"worker: {type(e).__name__}: {e}",
                              "epochs": [], "info": {}, "run_seconds": 0.0}
            _progress(k, len(tasks), results[i], t0)
    return results


def select(settings: list, split: str) -> dict:
    """The setting with the highest mean final `split` accuracy among those without failed
    runs (if every setting failed somewhere: among all), ties broken by the mean accuracy
    over the epochs (faster rise)."""
    def key(a):
        acc = a[f"final_{split}_acc"]
        auc = a["mean_val_acc"] if split == "val" else None
        return (a["n_failed"] == 0, acc if acc is not None else -1.0,
                auc if auc is not None else -1.0)
    return max(settings, key=key)


def analyse(runs, args, skipped):
    split = "val" if args.val_frac > 0 else "test"
    groups = {}
    for r in runs:
        groups.setdefault(r["optimizer"], {}).setdefault(r["label"], []).append(r)
    settings, selected, failures = {}, {}, {}
    for name in args.optimizer_list:
        if name not in groups:
            continue
        aggs = [tta_summary.aggregate(sorted(rs, key=lambda r: r["seed"]), args.target,
                                      args.epochs) for rs in groups[name].values()]
        settings[name] = aggs
        selected[name] = select(aggs, split)
        failures[name] = {"failed": sum(a["n_failed"] for a in aggs),
                          "runs": sum(a["n_runs"] for a in aggs)}
    sgd_epochs = [e["seconds"] for r in runs if r["optimizer"] == "sgd" for e in r["epochs"]]
    return {"selection_split": split, "settings": settings, "selected": selected,
            "sweep_failures": failures,
            "sgd_median_epoch_seconds": (sorted(sgd_epochs)[len(sgd_epochs) // 2]
                                         if sgd_epochs else None)}


def timing_pass(args, ctx_fields, selected):
    """Rerun each selected setting (seed 0, no evaluation, --timing-epochs epochs with the
    full run's schedule) --timing-repeats times, interleaved across optimizers (the order
    rotates every repeat) in this process: the sweep's timings come from --jobs processes
    sharing the CPUs. SGD is always included (the ratios' base; lr 0.1 when not swept)."""
    if args.timing_repeats <= 0:
        return {}
    names = [n for n in args.optimizer_list if n in selected]
    plan = {n: selected[n]["setting"] for n in names}
    if "sgd" not in plan:
        plan = {"sgd": {"lr": 0.1}, **plan}
    order = list(plan)
    epochs = max(1, min(args.epochs, args.timing_epochs))
    seed = args.seed_list[0]
    tta_train.init_worker()
    tta_train.run_one(make_task(args, ctx_fields, "sgd", plan["sgd"], seed, epochs=1,
                                evaluate=False))  # warm-up, discarded
    out = {n: [] for n in order}
    t0 = time.perf_counter()
    for rep in range(args.timing_repeats):
        k = rep % len(order)
        for name in order[k:] + order[:k]:
            rec = tta_train.run_one(make_task(args, ctx_fields, name, plan[name], seed,
                                              epochs=epochs, schedule_epochs=args.epochs,
                                              evaluate=False))
            out[name].append(rec)
    print(f"  timing pass: {len(order)} optimizers x {args.timing_repeats} repeats x {epochs} "
          f"epochs in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def apply_timing(analysis, timing, runs, args):
    """Epoch times, ratios and seconds to target of the selected settings from the timing
    pass (see timing_pass)."""
    meds = {n: tta_summary.phase_medians(recs) for n, recs in timing.items()}
    analysis["timing"] = {"repeats": args.timing_repeats,
                          "epochs": max(1, min(args.epochs, args.timing_epochs)),
                          "median_epoch_seconds": meds,
                          "failed": {n: [r["error"] for r in recs if r["status"] != "ok"]
                                     for n, recs in timing.items()}}
    for name, agg in analysis["selected"].items():
        if name in meds and meds[name]:
            recs = sorted((r for r in runs if r["optimizer"] == name
                           and r["label"] == agg["label"]), key=lambda r: r["seed"])
            tta_summary.retime(agg, recs, meds[name], args.target)
    if meds.get("sgd"):
        analysis["sgd_median_epoch_seconds_sweep"] = analysis["sgd_median_epoch_seconds"]
        analysis["sgd_median_epoch_seconds"] = meds["sgd"]["all"]
    analysis["time_source"] = "timing pass"


def environment() -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "machine": platform.machine(), "processor": platform.processor(),
           "cpu_count": os.cpu_count(), "fngd_library": os.environ.get("FNGD_LIBRARY")}
    try:
        import fngd
        env["fngd_version"] = ".".join(map(str, fngd.library_version()))
        env["fngd_kwargs"] = list(O.fngd_signature().parameters)
    except Exception as e:
        env["fngd_error"] = f"{type(e).__name__}: {e}"
    for mod in ("asdl", "singd", "sklearn"):
        try:
            m = __import__(mod)
            env[mod] = getattr(m, "__version__", "installed")
        except Exception:
            env[mod] = None
    return env


def load_previous(args, path):
    """--merge: the existing JSON, checked to have this invocation's protocol (before any
    run starts); None when there is none yet."""
    if not os.path.exists(path):
        print(f"  --merge: no {path} yet, nothing to merge", flush=True)
        return None
    with open(path) as f:
        old = json.load(f)
    if old.get("protocol") != json.loads(json.dumps(protocol(args))):
        raise SystemExit(f"--merge: {path} was made with another protocol "
                         f"({old.get('protocol')}); not merging")
    for name, kw in old.get("fngd_variants", {}).items():
        args.variants.setdefault(name, kw)  # variants given with --variant back then
    return old


def merge(args, old, runs, skipped):
    """The runs of the optimizers not re-run now from `old`, plus this invocation's."""
    now = set(args.optimizer_list)
    kept = [r for r in old["runs"] if r["optimizer"] not in now]
    extra = [n for n in old["optimizers"] if n not in now]
    for n, why in old.get("skipped", {}).items():
        if n not in now:
            skipped[n] = why
    print(f"  --merge: kept {len(kept)} runs of {', '.join(extra) or 'nothing'}", flush=True)
    args.optimizer_list = extra + args.optimizer_list
    return kept + runs


def main(argv=None) -> dict:
    args = parse(argv)
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    out = tta_report.paths(args.out, args.dataset)
    old = load_previous(args, out["json"]) if args.merge else None
    ctx_fields = context_fields(args)
    t0 = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    data = tta_data.load(args.dataset, args.val_frac, args.data, not args.no_augment,
                         args.limit)
    import tta_models
    model_desc = tta_models.describe(tta_models.build(
        args.dataset, data.num_classes, 0, in_features=data.x_train[0].numel(),
        **({"arch": args.arch, "width": args.width} if args.dataset.startswith("cifar")
           else {})))
    tasks, skipped, grids = make_tasks(args, ctx_fields)
    print(f"time_to_accuracy: {args.dataset} ({data.sizes()}), {args.epochs} epochs, seeds "
          f"{args.seed_list}, {len(tasks)} runs on {args.jobs} worker(s)", flush=True)
    runs = run_tasks(tasks, args.jobs)
    sweep_seconds = time.perf_counter() - t0
    if old is not None:
        runs = merge(args, old, runs, skipped)
    optimizers = list(args.optimizer_list)
    analysis = analyse(runs, args, skipped)
    analysis["time_source"] = "sweep"
    timing = timing_pass(args, ctx_fields, analysis["selected"])
    if timing:
        apply_timing(analysis, timing, runs, args)
    study_seconds = time.perf_counter() - t0
    env = environment()
    env["loadavg_start"] = load_start  # 1/5/15-minute load: the machine may be shared
    env["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    result = {"config": {**protocol(args), "optimizers": optimizers, "jobs": args.jobs,
                         "plot": args.plot.split(",") if args.plot else None,
                         "quick": args.quick, "fngd_extra": args.fngd_extra_kw,
                         "grids": {n: g for n, g in grids.items()},
                         "singd_rest_lr": args.singd_rest_lr,
                         "timing_repeats": args.timing_repeats,
                         "timing_epochs": args.timing_epochs,
                         "argv": list(argv) if argv is not None else sys.argv[1:]},
              "protocol": protocol(args), "optimizers": optimizers,
              "fngd_variants": {n: args.variants[n] for n in optimizers if n in args.variants},
              "sizes": data.sizes(), "data_notes": data.notes, "model": model_desc,
              "environment": env, "skipped": skipped, "sweep_seconds": sweep_seconds,
              "study_seconds": study_seconds, "n_runs": len(runs)}
    result.update(analysis)
    result["runs"] = runs
    tta_report.write_json(result, out["json"])
    text = tta_report.write_markdown(result, out["md"])
    png = tta_report.write_png(result, out["png"])
    print(text)
    print(f"wrote {out['json']}, {out['md']}" + (f", {out['png']}" if png else
                                                 " (no PNG: matplotlib missing)"))
    print(f"study wall time: {study_seconds:.1f} s ({len(tasks)} sweep runs in "
          f"{sweep_seconds:.1f} s, then the timing pass)", flush=True)
    return result


if __name__ == "__main__":
    main()
