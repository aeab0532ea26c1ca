"""bench/transformer_bleu.py --quick: the Transformer translation benchmark runs every default
optimizer row (AdamW, SGD, FNGD per-layer and global into SGD and into AdamW, global with
the library's KL clip) on a tiny split and writes JSON, markdown and PNG with finite BLEU and
step-time ratios for both FNGD phases."""

import importlib.util
import json
import math
import os

import pytest

pytest.importorskip("sacrebleu")

# The benchmark measures FNGDPreconditioner as shipped: not conftest's step_control="none".
pytestmark = pytest.mark.library_defaults

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "transformer_bleu.py")
ROWS = ("adamw", "sgd", "fngd-layer", "fngd-global", "fngd-layer-adamw", "fngd-global-adamw",
        "fngd-global-klclip")


def load_bench():
    spec = importlib.util.spec_from_file_location("transformer_bleu_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_transformer_bench_quick(tmp_path):
    res = load_bench().main(["--quick", "--out", str(tmp_path)])
    stem = tmp_path / "transformer_bleu"
    for ext in (".json", ".md", ".png"):
        assert stem.with_suffix(ext).exists(), ext
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert saved["optimizers"] == list(ROWS), saved["skipped"]
    assert len(saved["runs"]) == len(res["runs"]) == len(ROWS)
    md = stem.with_suffix(".md").read_text()
    for name in ROWS:
        a = saved["selected"][name]
        assert a["n_ok"] == 1, (name, a["errors"])
        for key in ("final_test_bleu", "final_val_bleu", "bleu_at_budget"):
            assert isinstance(a[key], float) and math.isfinite(a[key]), (name, key)
            assert 0.0 <= a[key] <= 100.0, (name, key)
        assert a["curve"] and all(math.isfinite(c["test_bleu"]) for c in a["curve"])
        phases = saved["timing"]["optimizers"][name]["phases"]
        want = {"collect", "reuse"} if name.startswith("fngd") else {"epoch"}
        assert set(phases) == want, (name, phases)
        for p in phases.values():
            assert p["median_step_wall"] > 0 and math.isfinite(p["wall_ratio_to_adamw"])
        assert f"| {name} |" in md
    assert saved["environment"]["torch_threads"] == 1
