"""Where the direction goes: the .grad tensors current at step() time, whatever happened to
the previous ones (zero_grad(set_to_none=True), swapped tensors); a failed step leaves .grad
as it was; integer sample ids in any host/sequence form; stale (in-place modified) inputs refused."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fngd
from fngd import _lib
from conftest import (EPS32, layer_blocks, make_data, make_model, per_sample_grads,
                      reference_direction, rel_err)

N_SAMPLES, BATCH, DAMPING = 24, 6, 1e-3


def check_direction(model, pre, x, y, ids):
    """loss.backward() + step(ids) in a collect epoch, then .grad against the dense reference."""
    grads = per_sample_grads(model, x[ids], y[ids])
    F.cross_entropy(model(x[ids]), y[ids]).backward()
    pre.step(ids)
    ref, cond = reference_direction(grads, layer_blocks(pre), DAMPING, "layer")
    for name, p in model.named_parameters():
        assert rel_err(p.grad, ref[name]) <= 16 * EPS32 * cond, name


def test_direction_lands_in_the_current_grad_after_set_to_none_and_swaps():
    model = make_model("conv").eval()
    x, y = make_data("conv", N_SAMPLES)
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH, damping=DAMPING)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: same weights, fresh batches
    batches = torch.arange(N_SAMPLES).split(BATCH)

    check_direction(model, pre, x, y, batches[0])
    # set_to_none while the old tensors stay alive (so the new .grad gets other addresses):
    # the library must write the new tensors and leave the old ones alone.
    old = {n: p.grad for n, p in model.named_parameters()}
    snapshot = {n: g.clone() for n, g in old.items()}
    opt.zero_grad(set_to_none=True)
    check_direction(model, pre, x, y, batches[1])
    for n, p in model.named_parameters():
        assert p.grad is not old[n], n
        assert torch.equal(old[n], snapshot[n]), n  # the released buffers were not written

    # zero_grad(set_to_none=False) keeps the tensors: the direction goes into them.
    opt.zero_grad(set_to_none=False)
    kept = {n: p.grad for n, p in model.named_parameters()}
    check_direction(model, pre, x, y, batches[2])
    for n, p in model.named_parameters():
        assert p.grad is kept[n], n

    # The user swaps in other tensors, including a non-contiguous one (which the adapter
    # replaces; given to a layer autograd skips, so no layout warning from autograd).
    for n, p in model.named_parameters():
        p.grad = torch.full(p.shape, 7.0)
    model[3].weight.grad = torch.zeros(model[3].weight.shape).to(
        memory_format=torch.channels_last)
    check_direction(model, pre, x, y, batches[3])
    for p in model.parameters():
        assert p.grad.is_contiguous()


def test_failed_step_leaves_grad_as_it_was():
    model = make_model("token")
    x, y = make_data("token", N_SAMPLES)
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH, damping=DAMPING)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(x[:BATCH]), y[:BATCH]).backward()
    pre.step(torch.arange(BATCH))
    opt.step()

    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x[:BATCH]), y[:BATCH]).backward()
    before = {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}
    assert before["proj.weight"] is not None and before["head.weight"] is None  # first layer
    dup = torch.tensor([0, 1, 2, 3, 4, 4])
    with pytest.raises(fngd.FNGDError) as info:
        pre.step(dup)
    assert info.value.status == _lib.ERROR_INVALID_ARGUMENT
    for n, p in model.named_parameters():
        if before[n] is None:
            assert p.grad is None, n  # not uninitialised memory an optimizer would apply
        else:
            assert torch.equal(p.grad, before[n]), n


def test_sample_ids_in_any_host_form():
    x, y = make_data("token", N_SAMPLES)
    forms = [torch.tensor([3, 9, 1, 20, 7, 0]), [3, 9, 1, 20, 7, 0], (3, 9, 1, 20, 7, 0),
             np.array([3, 9, 1, 20, 7, 0], dtype=np.int32),
             torch.tensor([3, 9, 1, 20, 7, 0], dtype=torch.int32)]
    # (float, bool and 2-D ids are refused: tests/test_api_edges.py)
    stored = []
    for ids in forms:
        model = make_model("token")
        pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH,
                                      damping=DAMPING)
        F.cross_entropy(model(x[:BATCH]), y[:BATCH]).backward()
        pre.step(ids)
        stored.append(pre.coefficients(set=0))
    assert torch.isfinite(stored[0][[3, 9, 1, 20, 7, 0]]).all()
    for s in stored[1:]:
        torch.testing.assert_close(s, stored[0], equal_nan=True, rtol=0, atol=0)


def test_input_modified_in_place_after_the_layer_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 5)

        def forward(self, x):
            h = self.a(x)
            out = self.b(h)
            h.mul_(2.0)  # nothing saved h (b's weight-gradient node is skipped)
            return out

    model = Net()
    x, y = make_data("token", BATCH)
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH)
    F.cross_entropy(model(x[:, 0]), y).backward()
    with pytest.raises(RuntimeError, match="'b'.*modified in place"):
        pre.step(torch.arange(BATCH))
    assert model.b.weight.grad is None
