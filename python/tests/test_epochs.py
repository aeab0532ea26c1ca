"""Epoch transitions: collect -> reuse with stored coefficients, global-mode loss weights,
fallback for unseen ids, periodic recollection, and a short training run."""

import pytest
import torch
import torch.nn.functional as F

import fngd
from conftest import (EPS32, layer_blocks, make_data, make_model, per_sample_grads,
                      reference_direction, rel_err, train_step)

N_SAMPLES, BATCH, DAMPING = 20, 8, 1e-3
# Reuse-phase directions are fixed weighted sums (no solve): fp32 dot products of a few
# hundred terms against float64, so a few hundred eps of relative error at most.
TOL_REUSE = 256 * EPS32


def batches(perm):
    return [perm[i:i + BATCH] for i in range(0, len(perm), BATCH)]  # 8, 8, 4: ragged last


def collect_epoch(model, pre, x, y, opt):
    for ids in batches(torch.arange(N_SAMPLES)):
        train_step(model, pre, opt, x[ids], y[ids], ids)
    pre.end_epoch()


def test_layer_mode_reuse_uses_stored_coefficients_and_skips_weight_grads():
    model = make_model("conv").eval()
    x, y = make_data("conv", N_SAMPLES)
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH, damping=DAMPING,
                                  exact_small_layers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    assert pre.phase == "collect"
    collect_epoch(model, pre, x, y, opt)
    assert pre.phase == "reuse" and not pre.needs_loss_weights
    stats = pre.stats()
    assert stats["coefs_stored"] == N_SAMPLES and stats["epoch"] == 1
    stored = [pre.coefficients(set=s) for s in range(len(pre.layers))]
    factorizations = stats["factorizations"]

    first = {id(p) for p in pre.layers[0].params}  # its input needs no grad: autograd keeps it
    for ids in batches(torch.randperm(N_SAMPLES, generator=torch.Generator().manual_seed(3))):
        grads = per_sample_grads(model, x[ids], y[ids])
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[ids]), y[ids]).backward()
        for layer in pre.layers:
            for p in layer.params:
                assert (p.grad is None) == (id(p) not in first)  # no wasted weight gradient
        pre.step(ids)
        alphas = [s[ids] for s in stored]
        ref, _ = reference_direction(grads, layer_blocks(pre), DAMPING, "layer", alphas=alphas)
        for name, p in model.named_parameters():
            assert rel_err(p.grad, ref[name]) <= TOL_REUSE, name
            assert p.requires_grad  # toggled off only inside each module's forward
        opt.step()
    stats = pre.stats()
    assert stats["factorizations"] == factorizations and stats["fallback_ids"] == 0
    # Coefficients never change in reuse epochs.
    for s, before in enumerate(stored):
        assert torch.equal(pre.coefficients(set=s), before)


def test_global_mode_reuse_is_a_weighted_loss_without_hooks():
    model = make_model("token").eval()
    x, y = make_data("token", N_SAMPLES)
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH,
                                  damping=DAMPING, mode="global")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    collect_epoch(model, pre, x, y, opt)
    assert pre.needs_loss_weights and not pre.capturing
    stored = pre.coefficients(set=0)
    steps = pre.stats()["steps_total"]

    ids = torch.tensor([4, 17, 0, 9, 12])
    w = pre.loss_weights(ids)
    assert torch.allclose(w, len(ids) * stored[ids], rtol=1e-6)  # w_i = N * alpha_i
    grads = per_sample_grads(model, x[ids], y[ids])
    opt.zero_grad()
    out = model(x[ids])
    assert all(not layer.captures for layer in pre.layers)  # hooks are idle
    (w * F.cross_entropy(out, y[ids], reduction="none")).mean().backward()
    ref, _ = reference_direction(grads, layer_blocks(pre), DAMPING, "global",
                                 alphas=[stored[ids]])
    for name, p in model.named_parameters():
        assert rel_err(p.grad, ref[name]) <= TOL_REUSE, name
    with pytest.raises(RuntimeError, match="loss_weights"):
        pre.step(ids)
    stats = pre.stats()
    assert stats["steps_total"] == steps + 1  # loss_weights() is the library's whole step
    assert stats["factorizations"] == 3  # only the collect epoch's


def test_unseen_ids_fall_back_to_stored_mean_and_are_counted():
    model = make_model("token").eval()
    x, y = make_data("token", N_SAMPLES + 4)
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES + 4, max_batch=BATCH,
                                  damping=DAMPING)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # keep the weights fixed
    collect_epoch(model, pre, x, y, opt)  # ids 20..23 never visited
    means = [torch.nanmean(pre.coefficients(set=s)) for s in range(len(pre.layers))]
    ids = torch.tensor([20, 21, 22, 23])
    grads = per_sample_grads(model, x[ids], y[ids])
    train_step(model, pre, opt, x[ids], y[ids], ids)
    assert pre.stats()["fallback_ids"] == 4
    alphas = [m.expand(4) for m in means]
    ref, _ = reference_direction(grads, layer_blocks(pre), DAMPING, "layer", alphas=alphas)
    for name, p in model.named_parameters():
        assert rel_err(p.grad, ref[name]) <= 1e-5, name  # the mean itself is fp32 (~eps*20)


def test_recompute_every_two_epochs_recollects():
    model = make_model("token")
    x, y = make_data("token", N_SAMPLES)
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH,
                                  damping=DAMPING, mode="global", recompute_every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    phases = []
    for _ in range(4):
        phases.append(pre.phase)
        for ids in batches(torch.randperm(N_SAMPLES)):
            train_step(model, pre, opt, x[ids], y[ids], ids)
        pre.end_epoch()
    assert phases == ["collect", "reuse", "collect", "reuse"]
    assert pre.stats()["factorizations"] == 6  # 3 batches in each of the 2 collect epochs


@pytest.mark.parametrize("mode", ["layer", "global"])
def test_training_reduces_the_loss(mode):
    """BatchNorm in training mode; the loss of the whole set (not the weighted batch losses
    of global reuse epochs, which are not comparable) must fall."""
    model = make_model("conv").train()
    x, y = make_data("conv", 32)
    pre = fngd.FNGDPreconditioner(model, num_samples=32, max_batch=BATCH, damping=0.1,
                                  mode=mode)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)

    def full_loss():
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    before = full_loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        for ids in torch.randperm(32, generator=g).split(BATCH):
            train_step(model, pre, opt, x[ids], y[ids], ids)
        pre.end_epoch()
    after = full_loss()
    assert after < 0.7 * before, (before, after)
    assert all(torch.isfinite(p).all() for p in model.parameters())
