#!/usr/bin/env python3
"""Transformer benchmark (issue 12, item 2): a small encoder-decoder Transformer trained on a
synthetic translation task (bench/transformer_data.py: a fixed grammar with word reordering
and agreement; nothing downloads) with AdamW, SGD with momentum and FNGD (per-layer and
global, the direction fed to SGD with momentum as bench/tta_optimizers.py does, and to AdamW).
Reports test BLEU (sacrebleu.corpus_bleu on detokenised greedy translations) against epochs
and against training seconds, BLEU at AdamW's wall-clock budget, time to a BLEU target, and
step-time ratios to AdamW measured in one interleaved timing pass. A benchmark, not a test.

  python bench/transformer_bleu.py            # full protocol (about 18 min on 2 vCPUs)
  python bench/transformer_bleu.py --quick    # smoke: tiny data, 2 epochs, one lr each

Protocol: every optimizer gets an equal-size learning-rate grid (3 values), trained with
seed 0 for --epochs epochs (same initial weights and batch order per seed for every
optimizer, cosine schedule, batch 64); the setting with the best final validation BLEU is
selected and trained with the other seeds; test BLEU of the selected setting is reported as
mean and sample standard deviation over the seeds. Training time excludes evaluation. Runs go
to --jobs spawned worker processes with --threads torch threads each; the times of the
curves and of every ratio come from the timing pass (see timing_pass), run alone afterwards.
Output: <out>/transformer_bleu.{json,md,png}.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # before torch / libfngd load; workers inherit it

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _p in (HERE, os.path.join(REPO, "python")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

import transformer_data as D  # noqa: E402
import transformer_model as M  # noqa: E402
import tta_optimizers as O  # noqa: E402
import tta_report  # noqa: E402
import tta_train  # noqa: E402
from tta_summary import mean_std  # noqa: E402

# name -> (family of the learning-rate grid, FNGDPreconditioner kwargs or None, base optimizer)
# The FNGD rows run without the library's default KL clip (step_control="none"), a choice made
# after a pilot in which global FNGD with every default stayed below 1 BLEU after 10 epochs at
# lr 0.03-0.3; on the full grid it trains at lr 1 as well (README "Transformer benchmark").
# fngd-global-klclip keeps every library default (the clip included) on the same grid, to
# show what the clip costs or gives. With AdamW the clip would rarely bind (it reads AdamW's
# small rate).
_NO_CLIP = {"step_control": "none"}
OPTIMIZERS = {
    "adamw": ("adamw", None, "adamw"),
    "sgd": ("sgd", None, "sgd"),
    "fngd-layer": ("fngd", {"mode": "layer", **_NO_CLIP}, "sgd"),
    "fngd-global": ("fngd", {"mode": "global", **_NO_CLIP}, "sgd"),
    "fngd-layer-adamw": ("adamw", {"mode": "layer", **_NO_CLIP}, "adamw"),
    "fngd-global-adamw": ("adamw", {"mode": "global", **_NO_CLIP}, "adamw"),
    "fngd-global-klclip": ("fngd", {"mode": "global"}, "sgd"),
}
DEFAULT_OPTIMIZERS = ",".join(OPTIMIZERS)
# Equal-size grids: 3 rates a factor of about 3 apart for every optimizer (by name, else by
# family), placed with 4-epoch pilot runs of each family. Global FNGD's coefficients average
# 0.1-0.2 / N here (SGD's are 1 / N; per-layer FNGD's about 1 / N), so its rates sit an order
# of magnitude higher. Per-layer FNGD diverged at 1 in the pilot; a first full
# run with its grid at 0.1, 0.3, 1 selected the lowest rate, 0.1 (0.3 collapsed, 1 diverged
# over 10 epochs), so its grid was moved down one step to keep the optimum inside.
GRIDS = {"adamw": [1e-3, 3e-3, 1e-2], "sgd": [0.03, 0.1, 0.3], "fngd": [0.3, 1.0, 3.0],
         "fngd-layer": [0.03, 0.1, 0.3]}
QUICK_LR = {"adamw": 3e-3, "sgd": 0.03, "fngd": 0.3}

_DATA: dict = {}


# ---- steppers: tta_optimizers' interface, with the sequence loss --------------------------

class Seq2SeqStepper(O.Stepper):
    """x = (src, tgt_in), y = tgt_out; the loss is the batch mean of per-sentence sums."""

    def step(self, x, y, ids):
        self.zero_grad()
        loss = M.sentence_losses(self.model(*x), y).mean()
        loss.backward()
        self.update()
        return loss.detach()


class Seq2SeqFNGDStepper(O.FNGDStepper):
    """tta_optimizers.FNGDStepper's loop with the per-sentence losses."""

    def step(self, x, y, ids):
        opt, pre = self.optimizers[0], self.pre
        opt.zero_grad(set_to_none=True)
        per = M.sentence_losses(self.model(*x), y)
        if pre.needs_loss_weights:  # global mode, reuse epochs: one ordinary backward
            (pre.loss_weights(ids) * per).mean().backward()
        else:
            per.mean().backward()
            pre.step(ids)
        opt.step()
        return per.detach().mean()


def build_stepper(name, model, lr, ctx: O.Context):
    fam, kw, base = OPTIMIZERS[name]
    setting = {"lr": lr}
    if kw is None:
        b = O.build_adamw if base == "adamw" else O.build_sgd
        return Seq2SeqStepper(model, b(model, setting, ctx).optimizers)
    if base == "sgd":  # exactly tta_optimizers' FNGD + SGD momentum
        s = O.build_fngd(name, model, setting, ctx)
        return Seq2SeqFNGDStepper(model, s.optimizers[0], s.pre, s.kwargs)
    import fngd  # FNGD's direction in .grad, AdamW steps on it
    opt = O.build_adamw(model, setting, ctx).optimizers[0]
    kwargs = O.fngd_kwargs(name, ctx)
    kwargs["lr"] = lambda: opt.param_groups[0]["lr"]  # the KL clip reads the current rate
    pre = fngd.FNGDPreconditioner(model, num_samples=ctx.num_samples, max_batch=ctx.max_batch,
                                  **kwargs)
    shown = {k: (v if not callable(v) else "<current lr>") for k, v in kwargs.items()}
    return Seq2SeqFNGDStepper(model, opt, pre, shown)


def make_ctx(num_samples, batch, names, fngd_extra=None):
    variants = {n: OPTIMIZERS[n][1] for n in names if OPTIMIZERS[n][1] is not None}
    return O.Context(num_samples=num_samples, max_batch=batch, variants=variants,
                     fngd_extra=dict(fngd_extra or {}))


# ---- one run ------------------------------------------------------------------------------

def init_worker(threads=1):
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def get_data(spec):
    key = tuple(sorted(spec.items()))
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = D.load(**spec)
    return _DATA[key]


@torch.no_grad()
def evaluate(model, split, vocab, chunk=500):
    """(corpus BLEU, exact-match rate) of greedy translations against the references."""
    import sacrebleu
    was = model.training
    model.eval()
    hyps = []
    max_len = split.tgt.shape[1] + 2
    for i in range(0, len(split), chunk):
        out = model.greedy(split.src[i:i + chunk], max_len)
        hyps += [vocab.decode(r.tolist()) for r in out]
    model.train(was)
    refs = split.tgt_text
    bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
    exact = sum(h == r for h, r in zip(hyps, refs)) / max(len(refs), 1)
    return bleu, exact, hyps[:3]


def batches(n, batch, seed, epoch):
    """The batch order of one epoch: a permutation from (seed, epoch), same for every
    optimizer; the last partial batch is kept (FNGD stores its coefficients too)."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    perm = torch.randperm(n, generator=g)
    return [perm[i:i + batch] for i in range(0, n, batch)]


def run_one(task):
    init_worker(task["threads"])
    name, lr, seed = task["optimizer"], task["lr"], task["seed"]
    rec = {"optimizer": name, "lr": lr, "seed": seed, "status": "ok", "error": None,
           "epochs": [], "info": {}}
    t_start = time.perf_counter()
    stepper = None
    try:
        data = get_data(task["data"])
        tr = data.train
        model = M.build(len(data.src_vocab), len(data.tgt_vocab), seed).train()
        ctx = make_ctx(len(tr), task["batch"], [name], task["fngd_extra"])
        stepper = build_stepper(name, model, lr, ctx)
        if hasattr(stepper, "kwargs"):
            rec["fngd_kwargs"] = stepper.kwargs
        epochs = task["epochs"]
        steps_per_epoch = math.ceil(len(tr) / task["batch"])
        total = epochs * steps_per_epoch

        def ev(row, val):
            # validation BLEU (selection) after the last epoch only: greedy decoding costs
            # about as much as training here; test BLEU (the curves) after every epoch
            if val:
                row["val_bleu"], row["val_exact"], _ = evaluate(model, data.val,
                                                                data.tgt_vocab)
            row["test_bleu"], row["test_exact"], ex = evaluate(model, data.test,
                                                               data.tgt_vocab)
            return ex

        rec["init"] = {}
        ev(rec["init"], False)
        wall, step_i = 0.0, 0
        for ep in range(epochs):
            phase = stepper.phase
            t0 = time.perf_counter()
            loss_sum, nb = torch.zeros(()), 0
            for ids in batches(len(tr), task["batch"], seed, ep):
                stepper.set_lr_factor(O.cosine_factor(step_i, total))
                x = (tr.src[ids], tr.tgt[ids, :-1])
                loss_sum += stepper.step(x, tr.tgt[ids, 1:], ids)
                step_i += 1
                nb += 1
            stepper.end_epoch()
            train_loss = (loss_sum / nb).item()
            dt = time.perf_counter() - t0
            wall += dt
            row = {"epoch": ep + 1, "phase": phase, "seconds": dt, "wall": wall,
                   "train_loss": train_loss}
            finite = math.isfinite(train_loss) and tta_train.finite_params(model)
            if not finite:
                rec["status"] = "diverged"
                rec["error"] = f"non-finite train loss or parameters in epoch {ep + 1}"
                rec["epochs"].append(row)
                break
            rec["examples"] = ev(row, ep == epochs - 1)
            rec["epochs"].append(row)
        rec["info"] = stepper.info()
    except Exception as e:  # fngd errors included: recorded, never raised
        # a NaN/Inf that reached the library (its finite check) is a divergence too
        tta_train.record_failure(rec, e, stepper, diverged="NaN or Inf" in str(e))
    finally:
        tta_train.close_quietly(stepper)
    rec["run_seconds"] = time.perf_counter() - t_start
    return rec


def run_tasks(tasks, jobs, threads):
    t0 = time.perf_counter()
    out = [None] * len(tasks)

    def show(k, rec):
        last = rec["epochs"][-1] if rec["epochs"] else {}
        nan = float("nan")
        print(f"  [{k:3d}/{len(tasks)}] {time.perf_counter() - t0:7.1f}s {rec['optimizer']:18s}"
              f" lr {rec['lr']:<7g} seed {rec['seed']} {rec['status']:8s} val BLEU "
              f"{last.get('val_bleu', nan):5.1f} test {last.get('test_bleu', nan):5.1f}"
              f" ({rec['run_seconds']:.0f}s) {rec['error'] or ''}", flush=True)

    if jobs <= 1:
        init_worker(threads)
        for i, t in enumerate(tasks):
            out[i] = run_one(t)
            show(i + 1, out[i])
        return out
    mp = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp, initializer=init_worker,
                             initargs=(threads,)) as pool:
        futs = {pool.submit(run_one, t): i for i, t in enumerate(tasks)}
        for k, f in enumerate(as_completed(futs), 1):
            i = futs[f]
            try:
                out[i] = f.result()
            except Exception as e:  # a worker died: record it, keep going
                t = tasks[i]
                out[i] = {"optimizer": t["optimizer"], "lr": t["lr"], "seed": t["seed"],
                          "status": "error", "error": f"worker: {e}", "epochs": [],
                          "info": {}, "run_seconds": 0.0}
            show(k, out[i])
    return out


# ---- the interleaved timing pass ----------------------------------------------------------

def timing_pass(names, lrs, data, args):
    """Step times of the selected settings (seed 0), all optimizers in this one process,
    alternating block by block (--timing-block steps each, the order rotating every block)
    so that the machine's load falls on every optimizer alike. Each optimizer trains
    --timing-epochs epochs (FNGD: epoch 1 collects, later epochs reuse) with the full run's
    cosine schedule. Per step: wall seconds (perf_counter) and process CPU seconds; an
    epoch's time is the sum of its steps' wall times plus end_epoch()."""
    tr = data.train
    spe = math.ceil(len(tr) / args.batch)
    ctx = make_ctx(len(tr), args.batch, names, args.fngd_extra)
    state = {}
    for n in names:
        model = M.build(len(data.src_vocab), len(data.tgt_vocab), 0).train()
        state[n] = {"stepper": build_stepper(n, model, lrs[n], ctx), "epoch": 0, "pos": 0,
                    "order": batches(len(tr), args.batch, 0, 0), "steps": [], "epochs": [],
                    "epoch_wall": 0.0, "i": 0, "phase": None}
    # warm-up on a throwaway model (first-call allocations), not recorded
    warm = build_stepper("adamw", M.build(len(data.src_vocab), len(data.tgt_vocab), 0),
                         1e-3, ctx)
    ids = batches(len(tr), args.batch, 0, 0)[0]
    for _ in range(3):
        warm.step((tr.src[ids], tr.tgt[ids, :-1]), tr.tgt[ids, 1:], ids)
    t0 = time.perf_counter()
    active, k = list(names), 0
    while active:
        rot = k % len(active)
        for n in active[rot:] + active[:rot]:
            s = state[n]
            st = s["stepper"]
            for _ in range(args.timing_block):
                if s["pos"] == 0:
                    s["phase"] = st.phase or "epoch"
                ids = s["order"][s["pos"]]
                st.set_lr_factor(O.cosine_factor(s["i"], args.epochs * spe))
                x, y = (tr.src[ids], tr.tgt[ids, :-1]), tr.tgt[ids, 1:]
                c0, w0 = time.process_time(), time.perf_counter()
                loss = st.step(x, y, ids)
                float(loss)  # the step's result is used (no deferred work left)
                w, c = time.perf_counter() - w0, time.process_time() - c0
                s["steps"].append({"phase": s["phase"], "epoch": s["epoch"] + 1, "wall": w,
                                   "cpu": c})
                s["epoch_wall"] += w
                s["pos"] += 1
                s["i"] += 1
                if s["pos"] == len(s["order"]):
                    w0 = time.perf_counter()
                    st.end_epoch()
                    s["epoch_wall"] += time.perf_counter() - w0
                    s["epochs"].append({"epoch": s["epoch"] + 1, "phase": s["phase"],
                                        "seconds": s["epoch_wall"]})
                    s["epoch"] += 1
                    s["pos"], s["epoch_wall"] = 0, 0.0
                    s["order"] = batches(len(tr), args.batch, 0, s["epoch"])
                    if s["epoch"] == args.timing_epochs:
                        break
        k += 1
        active = [n for n in active if state[n]["epoch"] < args.timing_epochs]
    seconds = time.perf_counter() - t0
    out = {}
    for n in names:
        s = state[n]
        s["stepper"].close()
        by = {}
        for x in s["steps"][1:]:  # the first step builds the library handle: left out
            by.setdefault(x["phase"], []).append(x)
        ph = {}
        for p, xs in by.items():
            eps = [e["seconds"] for e in s["epochs"] if e["phase"] == p]
            ph[p] = {"n_steps": len(xs),
                     "median_step_wall": statistics.median(x["wall"] for x in xs),
                     "median_step_cpu": statistics.median(x["cpu"] for x in xs),
                     "median_epoch_seconds": statistics.median(eps) if eps else None}
        out[n] = {"lr": lrs[n], "phases": ph, "epochs": s["epochs"],
                  "median_step_wall_all": statistics.median(x["wall"] for x in s["steps"]),
                  "median_step_cpu_all": statistics.median(x["cpu"] for x in s["steps"])}
    base = out["adamw"]["median_step_wall_all"]
    base_cpu = out["adamw"]["median_step_cpu_all"]
    for n in names:
        for p in out[n]["phases"].values():
            p["wall_ratio_to_adamw"] = p["median_step_wall"] / base
            p["cpu_ratio_to_adamw"] = p["median_step_cpu"] / base_cpu
    print(f"  timing pass: {len(names)} optimizers x {args.timing_epochs} epochs, blocks of "
          f"{args.timing_block} steps, {seconds:.0f} s", flush=True)
    return {"seconds": seconds, "epochs": args.timing_epochs, "block": args.timing_block,
            "steps_per_epoch": spe, "optimizers": out}


# ---- selection and statistics -------------------------------------------------------------

def epoch_cost(timing, name, phase):
    ph = timing["optimizers"][name]["phases"]
    p = ph.get(phase) or ph.get("reuse") or next(iter(ph.values()))
    return p["median_epoch_seconds"] or p["median_step_wall"] * timing["steps_per_epoch"]


def walls(rec, timing):
    """Cumulative training seconds after each epoch (0 first), charged at the timing pass's
    median epoch time of the epoch's phase."""
    out, w = [0.0], 0.0
    for e in rec["epochs"]:
        w += epoch_cost(timing, rec["optimizer"], e["phase"] or "epoch")
        out.append(w)
    return out


def bleus(rec, key="test_bleu"):
    rows = [rec.get("init") or {}] + rec["epochs"]
    return [r.get(key) for r in rows]


def select(runs, names):
    """Per optimizer: the lr of the best final validation BLEU (seed 0) among runs that did
    not fail; ties by the final validation exact-match rate."""
    sel, sweep = {}, {}
    for n in names:
        rs = [r for r in runs if r["optimizer"] == n and r["seed"] == 0]
        rows = []
        for r in rs:
            last = r["epochs"][-1] if r["epochs"] else {}
            ok = r["status"] == "ok" and last.get("val_bleu") is not None
            rows.append({"lr": r["lr"], "status": r["status"], "error": r["error"],
                         "final_val_bleu": last["val_bleu"] if ok else None,
                         "final_val_exact": last["val_exact"] if ok else None,
                         "final_test_bleu": last["test_bleu"] if ok else None})
        sweep[n] = sorted(rows, key=lambda a: a["lr"])
        good = [a for a in rows if a["final_val_bleu"] is not None]
        if good:
            sel[n] = max(good, key=lambda a: (a["final_val_bleu"], a["final_val_exact"]))["lr"]
    return sel, sweep


def summarise(runs, sel, timing, target, epochs):
    base_budget = sum(epoch_cost(timing, "adamw", "epoch") for _ in range(epochs))
    out = {}
    for n, lr in sel.items():
        rs = sorted((r for r in runs if r["optimizer"] == n and r["lr"] == lr),
                    key=lambda r: r["seed"])
        ok = [r for r in rs if r["status"] == "ok"]
        a = {"lr": lr, "seeds": [r["seed"] for r in rs], "n_ok": len(ok),
             "errors": sorted({r["error"] for r in rs if r["error"]})}
        a["final_test_bleu"], a["final_test_bleu_std"] = mean_std(bleus(r)[-1] for r in ok)
        a["final_val_bleu"], a["final_val_bleu_std"] = mean_std(
            bleus(r, "val_bleu")[-1] for r in ok)
        a["final_test_exact"], _ = mean_std(r["epochs"][-1]["test_exact"] for r in ok)
        at, done, hit_s, hit_e = [], [], [], []
        for r in ok:
            w, b = walls(r, timing), bleus(r)
            k = max(i for i in range(len(w)) if w[i] <= base_budget * (1 + 1e-9))
            at.append(b[k])
            done.append(k)
            hit = next((i for i in range(1, len(b)) if b[i] >= target), None)
            if hit is not None:
                hit_e.append(hit)
                hit_s.append(w[hit])
        a["bleu_at_budget"], a["bleu_at_budget_std"] = mean_std(at)
        a["epochs_in_budget"] = done
        a["n_reached"] = len(hit_e)
        a["epochs_to_target"], a["epochs_to_target_std"] = mean_std(hit_e)
        a["seconds_to_target"], a["seconds_to_target_std"] = mean_std(hit_s)
        a["train_seconds"] = walls(ok[0], timing)[-1] if ok else None
        a["sweep_train_seconds"], _ = mean_std(r["epochs"][-1]["wall"] for r in ok)
        curve = []
        for ep in range(epochs + 1):
            vals = [bleus(r)[ep] for r in ok if len(bleus(r)) > ep]
            if len(vals) < len(ok) or not ok:
                break
            m, s = mean_std(vals)
            curve.append({"epoch": ep, "test_bleu": m, "test_bleu_std": s,
                          "wall": walls(ok[0], timing)[ep]})
        a["curve"] = curve
        a["timing"] = timing["optimizers"].get(n)
        out[n] = a
    return out, base_budget


# ---- report -------------------------------------------------------------------------------

def _pm(m, s, fmt="{:.1f}"):
    return "-" if m is None else (fmt + " ± " + fmt).format(m, s or 0.0)


def _steps(t):
    if not t:
        return "-", "-"
    ph = t["phases"]
    if "collect" in ph or "reuse" in ph:
        ms = ", ".join(f"{p} {ph[p]['median_step_wall'] * 1e3:.1f}" for p in ("collect", "reuse")
                       if p in ph)
        r = ", ".join(f"{p} {ph[p]['wall_ratio_to_adamw']:.2f}x (cpu "
                      f"{ph[p]['cpu_ratio_to_adamw']:.2f}x)" for p in ("collect", "reuse")
                      if p in ph)
        return ms, r
    p = ph["epoch"]
    return (f"{p['median_step_wall'] * 1e3:.1f}",
            f"{p['wall_ratio_to_adamw']:.2f}x (cpu {p['cpu_ratio_to_adamw']:.2f}x)")


def verdicts(result):
    sel, out = result["selected"], []
    ad = sel.get("adamw")
    for n in result["optimizers"]:
        if not n.startswith("fngd") or n not in sel:
            continue
        a = sel[n]
        ph = (a["timing"] or {}).get("phases", {})
        if "reuse" in ph:
            r = ph["reuse"]["wall_ratio_to_adamw"]
            won = a["bleu_at_budget"] >= ad["final_test_bleu"]
            out.append(f"- {n}: reuse step {r:.2f}x AdamW's (target <= 1.10x: "
                       f"{'met' if r <= 1.10 else 'missed'}); BLEU at AdamW's wall budget "
                       f"{_pm(a['bleu_at_budget'], a['bleu_at_budget_std'])} vs AdamW "
                       f"{_pm(ad['final_test_bleu'], ad['final_test_bleu_std'])} (target >= "
                       f"AdamW: {'met' if won else 'missed'}, on the means)")
    return out


def markdown(result):
    cfg, sel = result["config"], result["selected"]
    tm = result["timing"]
    env = result["environment"]
    tgt = result["target"]
    lines = [
        "# Transformer benchmark: synthetic translation, BLEU", "",
        f"Data: {result['sizes']['train']} train / {result['sizes']['val']} validation / "
        f"{result['sizes']['test']} test sentence pairs (bench/transformer_data.py; source "
        f"vocabulary {result['data_notes']['src_vocab']}, target "
        f"{result['data_notes']['tgt_vocab']}, target length "
        f"{result['data_notes']['tgt_len'][0]}-{result['data_notes']['tgt_len'][1]} words). "
        f"Model: {result['model']}. {cfg['epochs']} epochs, batch {cfg['batch']}, cosine "
        f"schedule, seeds {cfg['seeds']}, {cfg['jobs']} worker process(es) with "
        f"{cfg['threads']} torch thread(s) each; {env['cpu']} ({env['cpu_count']} CPUs), "
        f"load average {env['loadavg_start']} at the start, {env['loadavg_end']} at the end.",
        "",
        f"Grids (selected on final validation BLEU of seed 0): {cfg['grids']}. FNGD rows: "
        + "; ".join(f"{n} {result['optimizer_table'][n]['fngd']} into "
                    f"{result['optimizer_table'][n]['base']}" for n in result["optimizers"]
                    if result["optimizer_table"][n]["fngd"]) + " (other options the "
        "library's defaults: damping 0.1, range filter, exact small layers; damping not "
        f"swept; --fngd-extra {cfg['fngd_extra']}). Test BLEU: sacrebleu corpus BLEU of "
        "greedy translations, mean ± sd over the seeds. Seconds are training time charged "
        "at the timing pass's median epoch time per phase (all optimizers interleaved in "
        f"blocks of {tm['block']} steps in one process, {tm['epochs']} epochs each, "
        f"{tm['seconds']:.0f} s). Wall budget = "
        f"AdamW's {cfg['epochs']} epochs = {result['budget_seconds']:.1f} s; BLEU at budget = "
        "test BLEU after the last epoch finished within it. Target BLEU "
        f"{tgt:g} ({result['target_source']}).", "",
        f"| optimizer | lr | test BLEU, {cfg['epochs']} epochs | exact match | BLEU at AdamW's "
        f"budget (epochs done) | epochs to {tgt:g} | seconds to {tgt:g} | train seconds | "
        "median step ms | step / AdamW (wall, cpu) |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for n in result["optimizers"]:
        if n not in sel:
            lines.append(f"| {n} | - | every setting failed | | | | | | | |")
            continue
        a = sel[n]
        ms, ratio = _steps(a["timing"])
        k = a["n_reached"], a["n_ok"]
        reach = "" if k[0] == k[1] else f" ({k[0]}/{k[1]})"
        lines.append(
            f"| {n} | {a['lr']:g} | {_pm(a['final_test_bleu'], a['final_test_bleu_std'])} | "
            f"{a['final_test_exact']:.3f} | "
            f"{_pm(a['bleu_at_budget'], a['bleu_at_budget_std'])} "
            f"({','.join(map(str, a['epochs_in_budget']))}) | "
            + ("not reached" if not k[0] else
               _pm(a['epochs_to_target'], a['epochs_to_target_std']) + reach) + " | "
            + ("-" if not k[0] else _pm(a['seconds_to_target'], a['seconds_to_target_std']))
            + f" | {a['train_seconds']:.1f} | {ms} | {ratio} |")
    lines += ["", "Targets:", ""] + verdicts(result)
    lines += ["", "## Sweep (seed 0)", "", "| optimizer | lr | final val BLEU | final test BLEU "
              "| status |", "|---|---|---|---|---|"]
    for n in result["optimizers"]:
        for a in result["sweep"].get(n, []):
            mark = " **(selected)**" if sel.get(n, {}).get("lr") == a["lr"] else ""
            v = "-" if a["final_val_bleu"] is None else f"{a['final_val_bleu']:.1f}"
            t = "-" if a["final_test_bleu"] is None else f"{a['final_test_bleu']:.1f}"
            lines.append(f"| {n} | {a['lr']:g}{mark} | {v} | {t} | {a['status']}"
                         + (f": {a['error']}" if a["error"] else "") + " |")
    lines += ["", f"Study wall time {result['study_seconds']:.0f} s (runs "
              f"{result['runs_seconds']:.0f} s, timing pass {tm['seconds']:.0f} s)."]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items())]
    return "\n".join(lines) + "\n"


def write_png(result, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, n in enumerate(result["optimizers"]):
        a = result["selected"].get(n)
        if not a or not a["curve"]:
            continue
        c = a["curve"]
        ep = [x["epoch"] for x in c]
        b = [x["test_bleu"] for x in c]
        lo = [x["test_bleu"] - (x["test_bleu_std"] or 0) for x in c]
        hi = [x["test_bleu"] + (x["test_bleu_std"] or 0) for x in c]
        w = [x["wall"] for x in c]
        line, = ax1.plot(ep, b, marker=".", color=f"C{k}", label=f"{n} (lr {a['lr']:g})")
        ax1.fill_between(ep, lo, hi, color=line.get_color(), alpha=0.15)
        ax2.plot(w, b, marker=".", color=line.get_color(), label=n)
        ax2.fill_between(w, lo, hi, color=line.get_color(), alpha=0.15)
    ax2.axvline(result["budget_seconds"], color="gray", linestyle="--", linewidth=0.8)
    for ax in (ax1, ax2):
        ax.axhline(result["target"], color="gray", linestyle=":", linewidth=0.8)
        ax.set_ylabel("test BLEU")
        ax.grid(alpha=0.3)
    ax1.set_xlabel("epoch")
    ax2.set_xlabel("training seconds (timing pass; dashed: AdamW's budget)")
    ax1.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Synthetic translation, Transformer: test BLEU, mean ± sd over seeds "
                 f"{result['config']['seeds']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- command line -------------------------------------------------------------------------

def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizers", default=DEFAULT_OPTIMIZERS,
                    help=f"comma list of {', '.join(OPTIMIZERS)} (adamw is always run)")
    ap.add_argument("--epochs", type=int, default=None, help="default 10 (--quick 2)")
    ap.add_argument("--seeds", type=int, default=None, help="default 3 (--quick 1)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lrs", action="append", metavar="NAME=v1,v2,v3",
                    help="grid of an optimizer or a family (adamw, sgd, fngd); repeatable")
    ap.add_argument("--target", type=float, default=None,
                    help="BLEU target (default: 90%% of AdamW's mean final test BLEU, "
                         "rounded down to an integer)")
    ap.add_argument("--n-train", type=int, default=None, help="default 6000 (--quick 384)")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--timing-epochs", type=int, default=3)
    ap.add_argument("--timing-block", type=int, default=5)
    ap.add_argument("--fngd-extra", default="{}", metavar="JSON",
                    help="FNGDPreconditioner kwargs merged into every FNGD row")
    ap.add_argument("--quick", action="store_true",
                    help="smoke: 384 pairs, 2 epochs, 1 seed, one lr each, 1 process")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    a = ap.parse_args(argv)
    a.epochs = a.epochs or (2 if a.quick else 10)
    a.seeds = a.seeds or (1 if a.quick else 3)
    a.jobs = a.jobs or (1 if a.quick else 2)
    a.timing_epochs = min(a.timing_epochs, a.epochs) if not a.quick else 2
    a.n_train = a.n_train or (384 if a.quick else 6000)
    a.data = ({"n_train": a.n_train, "n_val": 64, "n_test": 64} if a.quick
              else {"n_train": a.n_train, "n_val": 500, "n_test": 1000})
    a.fngd_extra = json.loads(a.fngd_extra)
    a.names = [s.strip() for s in a.optimizers.split(",") if s.strip()]
    for n in a.names:
        if n not in OPTIMIZERS:
            ap.error(f"unknown optimizer {n!r}")
    if "adamw" not in a.names:
        a.names.insert(0, "adamw")  # the base of every ratio and of the wall budget
    a.grids = {}
    for n in a.names:
        fam = OPTIMIZERS[n][0]
        a.grids[n] = [QUICK_LR[fam]] if a.quick else list(GRIDS.get(n, GRIDS[fam]))
    for item in a.lrs or []:
        key, sep, vals = item.partition("=")
        if not sep:
            ap.error(f"--lrs wants NAME=v1,v2,..., got {item!r}")
        for n in a.names:
            if key.strip() in (n, OPTIMIZERS[n][0]) and not a.quick:
                a.grids[n] = [float(v) for v in vals.split(",") if v.strip()]
    return a


def environment(threads):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    env = {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
           "cpu_count": os.cpu_count(), "torch_threads": threads,
           "fngd_library": os.environ.get("FNGD_LIBRARY")}
    try:
        import sacrebleu
        env["sacrebleu"] = sacrebleu.__version__
        import fngd
        env["fngd_version"] = ".".join(map(str, fngd.library_version()))
    except Exception as e:
        env["import_error"] = f"{type(e).__name__}: {e}"
    return env


def main(argv=None):
    args = parse(argv)
    init_worker(args.threads)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "transformer_bleu")
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    data = get_data(args.data)
    model_desc = M.describe(M.build(len(data.src_vocab), len(data.tgt_vocab), 0))
    ctx = make_ctx(len(data.train), args.batch, args.names, args.fngd_extra)
    skipped = {}
    for n in list(args.names):
        why = O.fngd_unavailable(n, ctx) if OPTIMIZERS[n][1] is not None else None
        if why:
            skipped[n] = why
            args.names.remove(n)
    base = {"epochs": args.epochs, "batch": args.batch, "data": args.data,
            "threads": args.threads, "fngd_extra": args.fngd_extra}
    print(f"transformer_bleu: {data.sizes()}, {model_desc}; {args.epochs} epochs, "
          f"{args.seeds} seed(s), {args.jobs} job(s)", flush=True)
    # 1: the sweep, seed 0; 2: the selected settings with the other seeds
    tasks = [dict(base, optimizer=n, lr=lr, seed=0) for n in args.names for lr in args.grids[n]]
    runs = run_tasks(tasks, args.jobs, args.threads)
    sel, sweep = select(runs, args.names)
    more = [dict(base, optimizer=n, lr=sel[n], seed=s) for n in args.names if n in sel
            for s in range(1, args.seeds)]
    runs += run_tasks(more, args.jobs, args.threads) if more else []
    runs_seconds = time.perf_counter() - t0
    if "adamw" not in sel:
        raise SystemExit("every AdamW setting failed: no base for the ratios")
    init_worker(args.threads)
    timing = timing_pass([n for n in args.names if n in sel], sel, data, args)
    ad = [bleus(r)[-1] for r in runs if r["optimizer"] == "adamw" and r["lr"] == sel["adamw"]
          and r["status"] == "ok"]
    if args.target is None:
        target = float(math.floor(0.9 * statistics.fmean(ad)))
        target_source = "90 % of AdamW's mean final test BLEU, rounded down"
    else:
        target, target_source = args.target, "--target"
    selected, budget = summarise(runs, sel, timing, target, args.epochs)
    env = environment(args.threads)
    env["loadavg_start"] = [round(x, 2) for x in load0]
    env["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"config": {"epochs": args.epochs, "seeds": list(range(args.seeds)),
                         "batch": args.batch, "jobs": args.jobs, "threads": args.threads,
                         "grids": args.grids, "quick": args.quick, "data": args.data,
                         "timing_epochs": args.timing_epochs,
                         "timing_block": args.timing_block, "fngd_extra": args.fngd_extra,
                         "argv": sys.argv[1:] if argv is None else list(argv)},
              "optimizers": args.names, "skipped": skipped,
              "optimizer_table": {n: {"lr_grid_family": OPTIMIZERS[n][0],
                                      "fngd": OPTIMIZERS[n][1], "base": OPTIMIZERS[n][2]}
                                  for n in args.names},
              "sizes": data.sizes(), "data_notes": data.notes, "model": model_desc,
              "environment": env, "target": target, "target_source": target_source,
              "budget_seconds": budget, "selected": selected, "sweep": sweep,
              "timing": timing, "runs_seconds": runs_seconds,
              "study_seconds": time.perf_counter() - t0, "runs": runs}
    tta_report.write_json(result, stem + ".json")
    text = markdown(result)
    with open(stem + ".md", "w") as f:
        f.write(text)
    png = write_png(result, stem + ".png")
    print(text)
    print(f"wrote {stem}.json, {stem}.md" + (", .png" if png else " (no PNG: no matplotlib)"))
    return result


if __name__ == "__main__":
    main()
