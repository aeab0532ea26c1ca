"""bench/resnet18_cifar.py --smoke: every row runs and the JSON, markdown and PNG are written."""

import importlib.util
import json
import os

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "resnet18_cifar.py")


def test_resnet18_cifar_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("resnet18_cifar_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--smoke", "--out", str(tmp_path),
                      "--optimizers", "sgd,fngd-layer,fngd-global,kfac-pytorch,asdl-kfac"])
    names = [r["name"] for r in res["rows"]]
    for want in ("sgd", "fngd-layer/epoch1", "fngd-layer/later", "fngd-global/epoch1",
                 "fngd-global/later"):
        assert want in names
    for r in res["rows"]:
        assert r["steps"] == 2 and r["median_ms"] > 0
    by = {r["name"]: r for r in res["rows"]}
    assert "precondition" in by["fngd-layer/later"]["phases_median_ms"]
    assert "precondition" not in by["fngd-global/later"]["phases_median_ms"]  # weighted loss
    assert by["fngd-layer/later"]["fallback_ids"] == 0
    assert set(res["projected_100_epochs"]) >= {"sgd", "fngd-layer", "fngd-global"}
    for name in ("kfac-pytorch", "asdl-kfac"):
        assert name in names or name in res["skipped"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    assert "| fngd-layer/later |" in (tmp_path / "results.md").read_text()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        pytest.skip("matplotlib not installed: no plot to check")
    assert (tmp_path / "results.png").stat().st_size > 1000
