"""Output of the time-to-accuracy benchmark: JSON (everything, raw runs included), a markdown
table, and a PNG of test accuracy vs epoch and vs training seconds (one curve per optimizer
at its selected setting, mean over the seeds, shaded +- one standard deviation)."""

from __future__ import annotations

import json
import math
import os


def clean(x):
    """JSON-safe copy: non-finite floats become the strings "nan", "inf", "-inf" (a diverged
    loss stays visible), callables their repr."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if callable(x):
        return repr(x)
    return x


def paths(out_dir: str, dataset: str) -> dict:
    stem = os.path.join(out_dir, f"tta_{dataset}")
    return {"json": stem + ".json", "md": stem + ".md", "png": stem + ".png"}


def write_json(result: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(clean(result), f, indent=1, allow_nan=False)
    os.replace(tmp, path)


def _pm(mean, std, fmt="{:.3f}"):
    if mean is None:
        return "-"
    return (fmt + " ± " + fmt).format(mean, std or 0.0)


def _target_cell(agg, key, fmt):
    n, total = agg["n_reached"], agg["n_runs"]
    if n == 0:
        return f"not reached (0/{total})"
    cell = _pm(agg[key], agg[key + "_std"], fmt)
    return cell if n == total else f"{cell} ({n}/{total})"


def _ratio(x, base):
    return f"{x / base:.2f}x" if x is not None and base else "-"


def _timing_text(result):
    if result.get("time_source") == "timing pass":
        t = result["timing"]
        return (f"Times come from a timing pass after the sweep: each selected setting rerun "
                f"{t['repeats']}x for {t['epochs']} epochs (seed {result['config']['seeds'][0]}, "
                "no evaluation), interleaved across optimizers in one process; epoch k of a "
                "run is charged the median epoch time of its phase, and seconds to target sum "
                "those. Epoch time / SGD divides those medians by SGD's.")
    return ("Times are those of the sweep's own runs (--timing-repeats 0), which shared the "
            "CPUs with the other worker processes; epoch time / SGD: median epoch time over "
            "all epochs and seeds of the selected setting divided by SGD's (all SGD runs).")


def markdown(result: dict) -> str:
    cfg = result["config"]
    target = cfg["target"]
    sel = result["selected"]
    base = result.get("sgd_median_epoch_seconds")
    split = result["selection_split"]
    lines = [f"# Time to accuracy: {cfg['dataset']}", "",
             f"{cfg['epochs']} epochs, batch {cfg['batch']}, seeds {cfg['seeds']}, "
             f"{cfg['schedule']} learning-rate schedule, device {cfg['device']}, "
             f"{cfg['jobs']} worker process(es) with 1 torch thread each. "
             f"Data: {result['sizes']['train']} train / {result['sizes']['val']} validation / "
             f"{result['sizes']['test']} test. Model: {result['model']}.",
             "",
             f"Each optimizer's setting is selected by the highest mean final **{split}** "
             f"accuracy over the seeds among settings without a diverged or failed run"
             + (" (no validation split: selection is on the test split, so the test numbers "
                "are optimistic)" if split == "test" else
                "; the table reports **test** accuracy of that setting") +
             ". Accuracies are mean ± standard deviation over the seeds; time to target = "
             f"first epoch with test accuracy >= {target} and the training seconds up to it "
             "(evaluation excluded), averaged over the seeds that reached it (k/n when not all "
             "did). " + _timing_text(result) + " FNGD: collect epochs (epoch 1, and every "
             "R-th with recompute_every=R) and reuse epochs apart. Failed runs: diverged "
             "(non-finite loss), collapsed (final train loss >= 0.9 x the untrained loss) or "
             "error.",
             "",
             f"| optimizer | selected setting | final test acc | best test acc | "
             f"epochs to {target} | seconds to {target} | epoch time / SGD | "
             f"failed runs in sweep |",
             "|---|---|---|---|---|---|---|---|"]
    for name in result["optimizers"]:
        if name not in sel:
            continue
        a = sel[name]
        if a["median_collect_epoch_seconds"] is not None:
            t = (f"collect {_ratio(a['median_collect_epoch_seconds'], base)}, "
                 f"reuse {_ratio(a['median_reuse_epoch_seconds'], base)}")
        else:
            t = _ratio(a["median_epoch_seconds"], base)
        sw = result["sweep_failures"][name]
        lines.append(f"| {name} | {a['label']} | "
                     f"{_pm(a['final_test_acc'], a['final_test_acc_std'])} | "
                     f"{_pm(a['best_test_acc'], a['best_test_acc_std'])} | "
                     f"{_target_cell(a, 'epochs_to_target', '{:.1f}')} | "
                     f"{_target_cell(a, 'seconds_to_target', '{:.2f}')} | {t} | "
                     f"{sw['failed']}/{sw['runs']} |")
    opts = []
    for name in result["optimizers"]:
        run = next((r for r in result.get("runs", []) if r["optimizer"] == name
                    and (r.get("info") or {}).get("options")), None)
        if run:
            o = run["info"]["options"]
            shown = ", ".join(f"{k}={o[k]}" for k in ("mode", "damping_kind", "coef_filter",
                              "exact_small_layers", "step_control", "kl_clip", "rhs",
                              "recompute_every") if k in o)
            opts.append(f"- {name}: {shown}")
    if opts:
        lines += ["", "FNGD options as resolved by FNGDPreconditioner (damping is swept):", ""]
        lines += opts
    if result["skipped"]:
        lines += ["", "Skipped:", ""]
        lines += [f"- {k}: {v}" for k, v in result["skipped"].items()]
    if base:
        lines += ["", f"SGD median epoch: {base * 1000:.1f} ms."]
    lines += ["", "## Sweep", "",
              f"Mean final {split} / test accuracy per setting (failed: diverged, collapsed "
              "or error).",
              "", f"| optimizer | setting | final {split} acc | final test acc | failed | "
                  "loss spikes (> 2x untrained) |",
              "|---|---|---|---|---|---|"]
    for name in result["optimizers"]:
        for a in result["settings"].get(name, []):
            mark = " **(selected)**" if name in sel and sel[name]["label"] == a["label"] else ""
            lines.append(f"| {name} | {a['label']}{mark} | "
                         f"{_pm(a['final_' + split + '_acc'], a['final_' + split + '_acc_std'])}"
                         f" | {_pm(a['final_test_acc'], a['final_test_acc_std'])} | "
                         f"{a['n_failed']}/{a['n_runs']} | {a['n_spiked']}/{a['n_runs']} |")
    errs = [(n, a["label"], e) for n in result["optimizers"]
            for a in result["settings"].get(n, []) for e in a["errors"]]
    if errs:
        lines += ["", "Failures:", ""]
        lines += [f"- {n} {lab}: {e}" for n, lab, e in errs[:40]]
        if len(errs) > 40:
            lines.append(f"- ... {len(errs) - 40} more in the JSON")
    if result.get("study_seconds") is not None:
        lines += ["", f"Study wall time: {result['study_seconds']:.0f} s "
                      f"({result['n_runs']} sweep runs in {result['sweep_seconds']:.0f} s, "
                      "then the timing pass)."]
    return "\n".join(lines) + "\n"


def write_markdown(result: dict, path: str) -> str:
    text = markdown(result)
    with open(path, "w") as f:
        f.write(text)
    return text


def write_png(result: dict, path: str) -> bool:
    """False (and nothing written) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    target = result["config"]["target"]
    names = result["config"].get("plot") or result["optimizers"]
    colors = plt.get_cmap("tab20" if len(names) > 10 else "tab10").colors
    for k, name in enumerate(names):
        a = result["selected"].get(name)
        if not a or not a["curve"]:
            continue
        ep = [c["epoch"] for c in a["curve"]]
        acc = [c["test_acc"] for c in a["curve"]]
        sd = [c["test_acc_std"] or 0.0 for c in a["curve"]]
        wall = [c["wall"] for c in a["curve"]]
        lo = [x - s for x, s in zip(acc, sd)]
        hi = [x + s for x, s in zip(acc, sd)]
        line, = ax1.plot(ep, acc, marker=".", color=colors[k % len(colors)],
                         label=f"{name} ({a['label']})")
        ax1.fill_between(ep, lo, hi, color=line.get_color(), alpha=0.15)
        ax2.plot(wall, acc, marker=".", color=line.get_color(), label=name)
        ax2.fill_between(wall, lo, hi, color=line.get_color(), alpha=0.15)
    for ax in (ax1, ax2):
        ax.axhline(target, color="gray", linestyle="--", linewidth=0.8)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        accs = [c["test_acc"] for a in result["selected"].values() for c in a["curve"]]
        if accs:
            ax.set_ylim(max(0.0, min(target, sorted(accs)[len(accs) // 10]) - 0.05), 1.0)
    ax1.set_xlabel("epoch")
    ax2.set_xlabel("training seconds (evaluation excluded)")
    ax1.legend(fontsize=7, loc="lower right")
    cfg = result["config"]
    fig.suptitle(f"{cfg['dataset']}: test accuracy, mean over seeds {cfg['seeds']} "
                 f"(selected setting per optimizer)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
