"""Statistics of the time-to-accuracy benchmark: metrics of one run, and their mean and
spread over the seeds of one (optimizer, setting)."""

from __future__ import annotations

import math
import statistics

# A finished run "collapsed" when its last epoch's mean train loss is still >= COLLAPSE times
# the untrained model's loss (it learnt nothing, or blew up and never recovered: e.g. stuck at
# chance after a finite loss explosion); it counts as a failed run like a diverged one. A
# "spike" is any epoch whose mean train loss exceeds SPIKE times the untrained loss (reported,
# not failed: runs can recover).
COLLAPSE = 0.9
SPIKE = 2.0


def mean_std(values):
    """(mean, sample standard deviation) of the finite values; (None, None) when there are
    none; std 0 for a single value."""
    v = [float(x) for x in values if x is not None and math.isfinite(x)]
    if not v:
        return None, None
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def run_metrics(rec: dict, target: float) -> dict:
    """Per-run numbers: final/best accuracies, first epoch (and training seconds up to it)
    with test accuracy >= target, epoch times split by FNGD phase."""
    eps = rec["epochs"]
    ok = rec["status"] == "ok"
    init_loss = (rec.get("init") or {}).get("test_loss")
    losses = [e["train_loss"] for e in eps]
    finite = [x for x in losses if isinstance(x, float) and math.isfinite(x)]
    collapsed = bool(ok and init_loss and finite and len(finite) == len(losses)
                     and losses[-1] >= COLLAPSE * init_loss)
    spiked = bool(init_loss and any(x > SPIKE * init_loss for x in finite))
    test = [e["test_acc"] for e in eps if e.get("test_acc") is not None]
    val = [e["val_acc"] for e in eps if e.get("val_acc") is not None]
    hit = next((e for e in eps if e.get("test_acc") is not None and e["test_acc"] >= target),
               None)
    collect = [e["seconds"] for e in eps if e["phase"] == "collect"]
    reuse = [e["seconds"] for e in eps if e["phase"] == "reuse"]
    return {
        "ok": ok,
        "collapsed": collapsed,
        "spiked": spiked,
        "final_val_acc": val[-1] if ok and val else None,
        "final_test_acc": test[-1] if ok and test else None,
        "best_val_acc": max(val) if val else None,
        "best_test_acc": max(test) if test else None,
        "mean_val_acc": statistics.fmean(val) if ok and val else None,  # area under the curve
        "epochs_to_target": hit["epoch"] if hit else None,
        "seconds_to_target": hit["wall"] if hit else None,
        "train_seconds": eps[-1]["wall"] if eps else None,
        "epoch_seconds": [e["seconds"] for e in eps],
        "collect_epoch_seconds": collect,
        "reuse_epoch_seconds": reuse,
    }


def _median(xs):
    return statistics.median(xs) if xs else None


def aggregate(recs: list, target: float, epochs: int) -> dict:
    """Mean and spread over the seeds of one (optimizer, setting)."""
    ms = [run_metrics(r, target) for r in recs]
    out = {"optimizer": recs[0]["optimizer"], "setting": recs[0]["setting"],
           "label": recs[0]["label"], "seeds": [r["seed"] for r in recs],
           "n_runs": len(recs), "n_ok": sum(m["ok"] for m in ms),
           "n_diverged": sum(r["status"] == "diverged" for r in recs),
           "n_error": sum(r["status"] == "error" for r in recs),
           "n_collapsed": sum(m["collapsed"] for m in ms),
           "n_spiked": sum(m["spiked"] for m in ms),
           "errors": sorted({r["error"] for r in recs if r.get("error")})}
    if out["n_collapsed"]:
        out["errors"].append(f"{out['n_collapsed']} run(s) collapsed: final train loss >= "
                             f"{COLLAPSE} x the untrained model's loss")
    out["n_failed"] = out["n_diverged"] + out["n_error"] + out["n_collapsed"]
    for k in ("final_val_acc", "final_test_acc", "best_val_acc", "best_test_acc",
              "mean_val_acc", "train_seconds"):
        out[k], out[k + "_std"] = mean_std(m[k] for m in ms)
    reached = [m for m in ms if m["epochs_to_target"] is not None]
    out["n_reached"] = len(reached)
    out["epochs_to_target"], out["epochs_to_target_std"] = mean_std(
        m["epochs_to_target"] for m in reached)
    out["seconds_to_target"], out["seconds_to_target_std"] = mean_std(
        m["seconds_to_target"] for m in reached)
    out["seconds_to_target_sweep"] = out["seconds_to_target"]  # as timed inside the sweep
    out["time_source"] = "sweep"
    # epoch times: medians over all epochs of all seeds (robust to a busy shared machine)
    out["median_epoch_seconds"] = _median([s for m in ms for s in m["epoch_seconds"]])
    out["median_collect_epoch_seconds"] = _median(
        [s for m in ms for s in m["collect_epoch_seconds"]])
    out["median_reuse_epoch_seconds"] = _median(
        [s for m in ms for s in m["reuse_epoch_seconds"]])
    # mean curves over the seeds, for epochs every seed completed with a finite accuracy
    curve = []
    for ep in range(epochs + 1):
        rows = []
        for r in recs:
            if ep == 0:
                row = ({"test_acc": r["init"]["test_acc"], "val_acc": r["init"]["val_acc"],
                        "wall": 0.0, "train_loss": None} if r.get("init") else None)
            else:
                row = r["epochs"][ep - 1] if ep - 1 < len(r["epochs"]) else None
            if row is None or row.get("test_acc") is None:
                rows = None
                break
            rows.append(row)
        if not rows:
            break
        acc, acc_sd = mean_std(x["test_acc"] for x in rows)
        wall, _ = mean_std(x["wall"] for x in rows)
        loss, _ = mean_std(x["train_loss"] for x in rows)
        curve.append({"epoch": ep, "test_acc": acc, "test_acc_std": acc_sd, "wall": wall,
                      "train_loss": loss})
    out["curve"] = curve
    # per-epoch train loss of every seed (FNGD divergence shows here)
    out["train_loss_by_seed"] = {str(r["seed"]): [e["train_loss"] for e in r["epochs"]]
                                 for r in recs}
    return out


def phase_medians(timing_recs: list) -> dict:
    """Median epoch training seconds by FNGD phase ("collect", "reuse"; "epoch" for
    optimizers without phases) and over all epochs ("all"), from the timing pass's runs of one
    optimizer."""
    by = {}
    for r in timing_recs:
        for e in r["epochs"]:
            by.setdefault(e["phase"] or "epoch", []).append(e["seconds"])
            by.setdefault("all", []).append(e["seconds"])
    return {k: statistics.median(v) for k, v in by.items()}


def retime(agg: dict, recs: list, med: dict, target: float) -> None:
    """Replace the sweep-timed seconds of `agg` (one selected setting) by the timing pass's
    median epoch times: epoch k of a run costs med[its phase]; seconds to target and the
    curve's wall axis are sums of those."""
    def cost(e):
        return med.get(e["phase"] or "epoch", med.get("all"))

    secs = []
    for r in recs:
        hit = next((e for e in r["epochs"] if e.get("test_acc") is not None
                    and e["test_acc"] >= target), None)
        if hit is not None:
            secs.append(sum(cost(e) for e in r["epochs"][:hit["epoch"]]))
    agg["seconds_to_target"], agg["seconds_to_target_std"] = mean_std(secs)
    wall, walls = 0.0, [0.0]
    for e in recs[0]["epochs"]:
        wall += cost(e)
        walls.append(wall)
    for c in agg["curve"]:
        if c["epoch"] < len(walls):
            c["wall_sweep"], c["wall"] = c["wall"], walls[c["epoch"]]
    for k in ("median_epoch_seconds", "median_collect_epoch_seconds",
              "median_reuse_epoch_seconds"):
        agg[k + "_sweep"] = agg[k]
    agg["median_epoch_seconds"] = med.get("all")
    agg["median_collect_epoch_seconds"] = med.get("collect")
    agg["median_reuse_epoch_seconds"] = med.get("reuse")
    agg["time_source"] = "timing pass"
