"""state_dict / load_state_dict: a mid-run round trip continues exactly as the original run."""

import copy
import io

import pytest
import torch

import fngd
from fngd import _lib
from conftest import make_data, make_model, train_step

N_SAMPLES, BATCH = 20, 8

pytestmark = pytest.mark.skipif(not _lib.has_checkpoint(),
                                reason="libfngd lacks the checkpoint API (fngd_save_state)")


def schedule(seed):
    """(epoch end?, ids) events: 3 epochs of shuffled batches of 8, 8, 4."""
    g = torch.Generator().manual_seed(seed)
    events = []
    for _ in range(3):
        events += [(False, ids) for ids in torch.randperm(N_SAMPLES, generator=g).split(BATCH)]
        events.append((True, None))
    return events


def run(model, pre, opt, x, y, events):
    for end, ids in events:
        if end:
            pre.end_epoch()
        else:
            train_step(model, pre, opt, x[ids], y[ids], ids)


def fresh(name, mode, seed):
    model = make_model(name, seed=seed).train()
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH, damping=1e-2,
                                  mode=mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    return model, pre, opt


@pytest.mark.parametrize("cut", [2, 5])  # inside the collect epoch; inside the first reuse epoch
@pytest.mark.parametrize("mode,name", [("layer", "conv"), ("global", "token")])
def test_round_trip_mid_run_continues_identically(mode, name, cut):
    x, y = make_data(name, N_SAMPLES)
    events = schedule(7)
    model, pre, opt = fresh(name, mode, seed=0)
    run(model, pre, opt, x, y, events[:cut])
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "pre": pre.state_dict()},
               buf)
    sd = pre.state_dict()
    assert sd["library_state"] is not None and sd["library_state"].dtype == torch.uint8
    assert sd["coefficients"].shape == ((len(pre.layers) if mode == "layer" else 1), N_SAMPLES)
    run(model, pre, opt, x, y, events[cut:])

    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    model2, pre2, opt2 = fresh(name, mode, seed=123)  # different weights until loaded
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    pre2.load_state_dict(saved["pre"])
    assert pre2.phase == ("collect" if cut <= 3 else "reuse")
    assert pre2.stats()["steps_total"] == saved["pre"]["stats"]["steps_total"]
    torch.testing.assert_close(pre2.state_dict()["coefficients"], saved["pre"]["coefficients"],
                               equal_nan=True, rtol=0, atol=0)
    run(model2, pre2, opt2, x, y, events[cut:])
    for (n1, p1), (_, p2) in zip(model.named_parameters(), model2.named_parameters()):
        assert torch.equal(p1, p2), n1  # same library, same data, same order: bitwise
    # last_step_scale is a diagnostic of the last step that checkpoints do not carry.
    s1, s2 = pre.stats(), pre2.stats()
    s1.pop("last_step_scale"), s2.pop("last_step_scale")
    assert s1 == s2


def test_state_before_first_step_and_mismatches():
    model, pre, opt = fresh("token", "layer", seed=0)
    sd = pre.state_dict()
    assert sd["library_state"] is None and all(l["geometry"] is None for l in sd["layers"])
    pre.load_state_dict(sd)  # nothing to restore, and no error
    other = fngd.FNGDPreconditioner(make_model("token"), num_samples=N_SAMPLES, max_batch=BATCH,
                                    damping=5e-2)
    with pytest.raises(ValueError, match="options differ"):
        other.load_state_dict(sd)
    conv = fngd.FNGDPreconditioner(make_model("conv"), num_samples=N_SAMPLES, max_batch=BATCH,
                                   damping=1e-2)
    with pytest.raises(ValueError, match="layers"):
        conv.load_state_dict(sd)


def test_corrupt_image_is_rejected_and_state_kept():
    x, y = make_data("token", N_SAMPLES)
    model, pre, opt = fresh("token", "layer", seed=0)
    run(model, pre, opt, x, y, schedule(1)[:4])  # one full collect epoch
    good = pre.state_dict()
    bad = copy.deepcopy(good)
    bad["library_state"][len(bad["library_state"]) // 2] ^= 0xFF
    with pytest.raises(fngd.FNGDError) as info:
        pre.load_state_dict(bad)
    assert info.value.status in (_lib.ERROR_CORRUPT_STATE, _lib.ERROR_VERSION_MISMATCH)
    assert pre.phase == "reuse" and pre.stats()["coefs_stored"] == N_SAMPLES
    torch.testing.assert_close(pre.state_dict()["coefficients"], good["coefficients"],
                               equal_nan=True, rtol=0, atol=0)
    truncated = dict(good, library_state=good["library_state"][:100])
    with pytest.raises(fngd.FNGDError):
        pre.load_state_dict(truncated)
    train_step(model, pre, opt, x[:BATCH], y[:BATCH], torch.arange(BATCH))  # still usable
