"""bench/time_to_accuracy.py --quick: digits (worker pool), breast_cancer (scikit-learn) and the
CIFAR-10/100 path on tiny fake pickle folders write JSON, markdown and PNG with finite
accuracies in [0, 1]; FNGD variants whose options fngd lacks are skipped with a note; --merge
keeps the other optimizers' runs. Third-party rows (ASDL, SINGD) run when importable."""

import importlib.util
import json
import math
import os
import pickle

import numpy as np
import pytest

# The benchmark measures FNGDPreconditioner as shipped: not conftest's step_control="none".
pytestmark = pytest.mark.library_defaults

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "time_to_accuracy.py")
FNGD_ROWS = ("fngd-layer", "fngd-global")


def load_bench():
    spec = importlib.util.spec_from_file_location("time_to_accuracy_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def importable(mod):
    try:
        __import__(mod)
    except Exception:
        return False
    return True


def third_party():
    rows = []
    if importable("asdl"):
        rows += ["asdl-kfac", "asdl-smw"]
    if importable("singd.optim.optimizer"):
        rows.append("singd")
    return rows


def check_outputs(res, out, dataset, want):
    stem = out / f"tta_{dataset}"
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert saved["n_runs"] == len(saved["runs"]) == res["n_runs"]
    md = stem.with_suffix(".md").read_text()
    for name in want:
        assert name in saved["selected"], (name, saved["skipped"])
        a = saved["selected"][name]
        assert a["n_failed"] == 0, (name, a["errors"])
        for key in ("final_test_acc", "best_test_acc", "final_val_acc"):
            assert isinstance(a[key], float) and math.isfinite(a[key]), (name, key)
            assert 0.0 <= a[key] <= 1.0, (name, key)
        assert a["curve"] and all(0.0 <= c["test_acc"] <= 1.0 for c in a["curve"])
        assert a["median_epoch_seconds"] > 0
        assert f"| {name} |" in md
    for name in FNGD_ROWS:
        if name in want:
            a = saved["selected"][name]
            assert a["median_collect_epoch_seconds"] > 0 and a["median_reuse_epoch_seconds"] > 0
            for losses in a["train_loss_by_seed"].values():  # per-epoch train loss of FNGD
                assert len(losses) == saved["config"]["epochs"]
                assert all(math.isfinite(x) for x in losses)
    runs = [r for r in saved["runs"] if r["optimizer"] == "fngd-layer"]
    for r in runs:
        assert [e["phase"] for e in r["epochs"]] == ["collect", "reuse"]
        assert r["info"]["fallback_ids"] == 0
    if importable("matplotlib"):
        assert stem.with_suffix(".png").stat().st_size > 1000
    return saved


def test_tta_quick_digits_workers(tmp_path):
    bench = load_bench()
    want = ["sgd", "adamw", *FNGD_ROWS, *third_party()]
    rows = want + ["fngd-bogus", "asdl-kfac", "asdl-smw", "singd"]
    res = bench.main(["--quick", "--dataset", "digits", "--jobs", "2", "--out", str(tmp_path),
                      "--optimizers", ",".join(dict.fromkeys(rows)),
                      "--variant", 'fngd-bogus={"mode": "layer", "no_such_option": 1}'])
    saved = check_outputs(res, tmp_path, "digits", want)
    assert "no_such_option" in saved["skipped"]["fngd-bogus"]  # skipped with a note
    for name in ("asdl-kfac", "asdl-smw", "singd"):
        assert name in saved["selected"] or name in saved["skipped"]
    assert saved["sizes"] == {"train": 1293, "val": 144, "test": 360}
    assert saved["config"]["jobs"] == 2 and saved["time_source"] == "timing pass"


def test_tta_quick_breast_cancer_and_merge(tmp_path):
    pytest.importorskip("sklearn")
    bench = load_bench()
    args = ["--quick", "--dataset", "breast_cancer", "--jobs", "1", "--out", str(tmp_path),
            "--timing-repeats", "0"]
    bench.main(args + ["--optimizers", "sgd,fngd-layer", "--fngd-extra",
                       '{"check_finite": false}'])
    res = bench.main(args + ["--optimizers", "adamw,fngd-global", "--merge",
                             "--fngd-extra", '{"check_finite": false}'])
    saved = check_outputs(res, tmp_path, "breast_cancer", ["sgd", "adamw", *FNGD_ROWS])
    assert saved["time_source"] == "sweep"
    assert {r["optimizer"] for r in saved["runs"]} == {"sgd", "adamw", *FNGD_ROWS}
    for r in saved["runs"]:
        if r["optimizer"].startswith("fngd"):
            assert r["fngd_kwargs"]["check_finite"] is False


def write_fake_cifar(root, name, n_train, n_test):
    """torchvision's python-pickle layout: cifar-10-batches-py/data_batch_1..5, test_batch
    (b"labels") or cifar-100-python/train, test (b"fine_labels")."""
    rng = np.random.default_rng(0)
    classes, key = (10, b"labels") if name == "cifar10" else (100, b"fine_labels")

    def dump(path, n):
        with open(path, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         key: rng.integers(0, classes, n).tolist(),
                         b"batch_label": b"fake"}, f)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        for i in range(1, 6):
            dump(folder / f"data_batch_{i}", n_train // 5)
        dump(folder / "test_batch", n_test)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir()
        dump(folder / "train", n_train)
        dump(folder / "test", n_test)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_tta_quick_cifar_fake_folder(tmp_path, dataset):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_fake_cifar(data, dataset, 40, 12)
    bench = load_bench()
    res = bench.main(["--quick", "--dataset", dataset, "--data", str(data), "--out", str(out),
                      "--jobs", "1", "--batch", "8", "--arch", "resnet10", "--width", "4",
                      "--optimizers", "sgd,fngd-layer,fngd-global"])
    assert res["sizes"] == {"train": 36, "val": 4, "test": 12}
    saved = json.loads((out / f"tta_{dataset}.json").read_text())
    for r in saved["runs"]:  # random labels: no learning expected ("collapsed" is fine)
        assert r["status"] == "ok", (r["optimizer"], r["error"])
        assert [e["epoch"] for e in r["epochs"]] == [1, 2]
    for name in ("sgd", *FNGD_ROWS):
        a = saved["selected"][name]
        assert 0.0 <= a["final_test_acc"] <= 1.0 and 0.0 <= a["best_test_acc"] <= 1.0
    assert (out / f"tta_{dataset}.md").exists()
    if importable("matplotlib"):
        assert (out / f"tta_{dataset}.png").stat().st_size > 1000


def test_tta_cli_errors():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse(["--dataset", "cifar10"])  # needs --data
    with pytest.raises(SystemExit):
        bench.parse(["--optimizers", "sgd,no-such-optimizer"])
    args = bench.parse(["--lrs", "fngd=0.05", "--dampings", "fngd-layer=0.5,2"])
    import tta_optimizers as O  # bench/ is on sys.path once the bench is loaded
    ctx = O.Context(num_samples=1, max_batch=1, variants=args.variants)
    assert bench.settings_for("fngd-layer", args, ctx) == [{"lr": 0.05, "damping": 0.5},
                                                           {"lr": 0.05, "damping": 2.0}]
    assert len(bench.settings_for("sgd", args, ctx)) == 4
