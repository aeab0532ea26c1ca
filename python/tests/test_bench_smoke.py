"""bench/resnet18_cifar.py --smoke: every row runs and the JSON, markdown and PNG are written;
--train-epochs on a tiny fake CIFAR-100 folder writes finite training curves."""

import importlib.util
import json
import math
import os
import pickle

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "resnet18_cifar.py")
THIRD_PARTY = ("kfac-pytorch", "asdl-kfac", "asdl-smw-ng")


def load_bench():
    spec = importlib.util.spec_from_file_location("resnet18_cifar_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_resnet18_cifar_smoke(tmp_path):
    bench = load_bench()
    res = bench.main(["--smoke", "--out", str(tmp_path), "--optimizers",
                      "sgd,fngd-layer,fngd-global," + ",".join(THIRD_PARTY)])
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
    for name in THIRD_PARTY:
        assert name in names or name in res["skipped"]
    if "asdl-kfac" in by:  # ASDL's documented default: curvature and inverse every step
        assert by["asdl-kfac"]["config"]["curvature_upd_interval"] == 1
        assert by["asdl-kfac"]["config"]["preconditioner_upd_interval"] == 1
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(res["rows"]))
    assert "| fngd-layer/later |" in (tmp_path / "results.md").read_text()
    if not has_matplotlib():
        pytest.skip("matplotlib not installed: no plot to check")
    assert (tmp_path / "results.png").stat().st_size > 1000


def write_fake_cifar100(root, n_train, n_test):
    """A folder in the torchvision layout: cifar-100-python/{train,test,meta} pickles holding
    what the real (Python 2) ones hold once loaded with encoding="bytes"."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir()
    for split, n in (("train", n_train), ("test", n_test)):
        d = {b"filenames": [f"img_{i}.png".encode() for i in range(n)],
             b"batch_label": f"{split} batch".encode(),
             b"fine_labels": rng.integers(0, 100, n).tolist(),
             b"coarse_labels": rng.integers(0, 20, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        with open(folder / split, "wb") as f:
            pickle.dump(d, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, f)


def test_resnet18_cifar_train_epochs_smoke(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    write_fake_cifar100(data, 64, 32)
    bench = load_bench()
    res = bench.main(["--smoke", "--train-epochs", "2", "--data", str(data), "--out", str(out)])
    assert res["train_images"] == 64 and res["test_images"] == 32
    saved = json.loads((out / "train_curves.json").read_text())
    assert set(saved["runs"]) == {"sgd", "fngd-layer"}
    for name, run in saved["runs"].items():
        assert [r["epoch"] for r in run["epochs"]] == [1, 2], name
        for r in run["epochs"]:
            assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"]), name
            assert 0.0 <= r["test_acc"] <= 1.0 and r["epoch_seconds"] > 0
        assert run["epochs"][1]["wall_seconds"] >= run["epochs"][0]["wall_seconds"]
    stats = saved["runs"]["fngd-layer"]["fngd_stats"]
    assert stats["fallback_ids"] == 0 and stats["phase"] == "reuse"  # epoch 2 reused
    if not has_matplotlib():
        pytest.skip("matplotlib not installed: no plot to check")
    assert (out / "train_curves.png").stat().st_size > 1000


def test_resnet18_cifar_train_epochs_needs_data():
    with pytest.raises(SystemExit):
        load_bench().parse(["--smoke", "--train-epochs", "2"])


def test_cifar_augment_crop_and_flip():
    import sys

    import torch
    sys.path.insert(0, os.path.dirname(BENCH))
    from cifar100_data import augment
    x = torch.randn(64, 3, 32, 32)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.equal(out, x)  # 64 images: some are shifted or flipped
    xp = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):  # each image is one 32 x 32 window of the padded one, maybe flipped
        hits = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
                if torch.equal(out[i], (lambda w: w.flip(-1) if f else w)(
                    xp[i, :, dy:dy + 32, dx:dx + 32]))]
        assert hits, i
