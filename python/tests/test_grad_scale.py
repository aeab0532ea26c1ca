"""fp16 loss scaling: step(ids, grad_scale=S) after backward of S * loss gives the direction of
the unscaled loss, and an overflowed scaled batch is skipped without changing anything."""

import torch
import torch.nn.functional as F

import fngd
from conftest import EPS32, make_data, make_model


def directions(scale):
    model = make_model("token")
    x, y = make_data("token", 8)
    pre = fngd.FNGDPreconditioner(model, num_samples=16, max_batch=8, damping=1e-2)
    ids = torch.arange(8)
    out = []
    for _ in range(2):  # a collect epoch, then a reuse epoch
        model.zero_grad()
        (F.cross_entropy(model(x), y) * scale).backward()
        if scale == 1.0:
            assert pre.step(ids) is True
        else:
            assert pre.step(ids, grad_scale=scale) is True
        out.append([p.grad.clone() for p in model.parameters()])
        pre.end_epoch()
    return out


def test_scaled_loss_gives_the_unscaled_direction():
    plain, scaled = directions(1.0), directions(1024.0)
    for a_epoch, b_epoch in zip(plain, scaled):  # collect epoch, then reuse epoch
        for a, b in zip(a_epoch, b_epoch):
            # Scaling by a power of two is exact; what differs is only the float rounding of
            # the scaled backward pass: a few eps of the largest entry.
            assert torch.allclose(a, b, rtol=0, atol=64 * EPS32 * a.abs().max().item()), \
                (a - b).abs().max()


def test_overflowed_scaled_batch_is_skipped():
    model = make_model("token")
    x, y = make_data("token", 8)
    pre = fngd.FNGDPreconditioner(model, num_samples=16, max_batch=8, damping=1e-2)
    model.zero_grad(set_to_none=True)
    (F.cross_entropy(model(x), y) * float("inf")).backward()
    before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    assert pre.step(torch.arange(8), grad_scale=float("inf")) is False
    after = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    for b, a in zip(before, after):
        assert (b is None and a is None) or torch.equal(b.nan_to_num(), a.nan_to_num())
    # Nothing was stored: the next good batch is still the first collect step.
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    assert pre.step(torch.arange(8)) is True
