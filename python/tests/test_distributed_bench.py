"""Smoke test of bench/dp_cosine.py (the data-parallel cosine table of the README): it runs,
writes its JSON, W = 1 reproduces the exact direction, and every cosine is a cosine."""

import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def test_dp_cosine_smoke(tmp_path):
    out = tmp_path / "dp_cosine.json"
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "dp_cosine.py"), "--batches", "1",
                    "--out", str(out)], check=True, env=env, timeout=120,
                   capture_output=True)
    res = json.loads(out.read_text())["results"]
    assert {r["world_size"] for r in res} == {1, 2, 4, 8, "sgd"}
    for r in res:
        assert -1.0 <= r["cos_min"] <= r["cos_mean"] <= 1.0 + 1e-9
        if r["world_size"] == 1:
            assert r["cos_mean"] > 1 - 1e-6 and abs(r["len_ratio_mean"] - 1) < 1e-6
