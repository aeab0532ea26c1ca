"""Clear errors for unsupported layers and for calls in the wrong order or with bad input."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fngd
from fngd import _lib
from conftest import make_data, make_model, train_step


def make(name="token", **kw):
    model = make_model(name)
    opts = dict(num_samples=20, max_batch=8, damping=1e-2)
    opts.update(kw)
    return model, fngd.FNGDPreconditioner(model, **opts)


def forward_backward(model, x, y):
    F.cross_entropy(model(x), y).backward()


def test_unsupported_layers_are_named():
    circular = nn.Sequential(nn.Conv2d(4, 4, 3, padding_mode="circular"), nn.Flatten(),
                             nn.Linear(4 * 36, 3))
    with pytest.raises(fngd.UnsupportedLayerError, match=r"'0'.*circular"):
        fngd.FNGDPreconditioner(circular, num_samples=10, max_batch=4)
    for bad, why in [(nn.Conv3d(3, 4, 3), "Conv3d"), (nn.LayerNorm([3, 4]), "2 dimensions"),
                     (nn.Conv2d(3, 4, 3, padding_mode="reflect"), "reflect"),
                     (nn.Conv2d(3, 4, 4, padding="same"), "asymmetric")]:
        with pytest.raises(fngd.UnsupportedLayerError, match=why):
            fngd.FNGDPreconditioner(nn.Sequential(bad), num_samples=10, max_batch=4)
    with pytest.raises(fngd.UnsupportedLayerError, match="no layer"):
        fngd.FNGDPreconditioner(nn.Sequential(nn.ReLU()), num_samples=10, max_batch=4)


def test_skip_leaves_unsupported_layers_to_plain_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding_mode="circular"), nn.Flatten(),
                          nn.Linear(4 * 36, 3))
    pre = fngd.FNGDPreconditioner(model, num_samples=10, max_batch=4, unsupported="skip")
    assert [l.name for l in pre.layers] == ["2"]
    x, y = torch.randn(4, 4, 8, 8), torch.tensor([0, 1, 2, 0])
    forward_backward(model, x, y)
    plain = model[0].weight.grad.clone()
    pre.step(torch.arange(4))
    assert torch.equal(model[0].weight.grad, plain)
    only = fngd.FNGDPreconditioner(make_model("conv"), num_samples=10, max_batch=4,
                                   modules=["6"])
    assert [l.name for l in only.layers] == ["6"]
    with pytest.raises(ValueError, match="not in the model"):
        fngd.FNGDPreconditioner(make_model("conv"), num_samples=10, max_batch=4, modules=["9"])


def test_bad_options():
    model = make_model("token")
    for kw, msg in [(dict(mode="blocks"), "mode"), (dict(damping_kind="x"), "damping_kind"),
                    (dict(loss_reduction="none"), "loss_reduction"),
                    (dict(gram_method="fast"), "gram_method"), (dict(max_batch=0), "positive")]:
        opts = dict(num_samples=10, max_batch=4)
        opts.update(kw)
        with pytest.raises(ValueError, match=msg):
            fngd.FNGDPreconditioner(model, **opts)


def test_step_out_of_order():
    model, pre = make()
    x, y = make_data("token", 8)
    with pytest.raises(RuntimeError, match="nothing captured"):
        pre.step(torch.arange(8))
    model(x)
    with pytest.raises(RuntimeError, match="before loss.backward"):
        pre.step(torch.arange(8))
    forward_backward(model, x, y)
    pre.step(torch.arange(8))
    with pytest.raises(RuntimeError, match="nothing captured"):
        pre.step(torch.arange(8))  # a second step for one backward
    model(x)  # a forward pass no backward reaches (evaluation with gradients on) is ignored
    forward_backward(model, x, y)
    pre.step(torch.arange(8))
    forward_backward(model, x, y)
    forward_backward(model, x, y)  # gradient accumulation: two backward passes, one step
    with pytest.raises(RuntimeError, match="more than one backward"):
        pre.step(torch.arange(8))
    with torch.no_grad():
        model(x)  # evaluation under no_grad is not captured
    forward_backward(model, x, y)
    pre.step(torch.arange(8))


def test_end_epoch_and_loss_weights_out_of_order():
    model, pre = make()
    with pytest.raises(RuntimeError, match="before the first step"):
        pre.end_epoch()
    with pytest.raises(RuntimeError, match="mode='global'"):
        pre.loss_weights(torch.arange(4))
    x, y = make_data("token", 8)
    forward_backward(model, x, y)
    pre.step(torch.arange(8))
    pre.end_epoch()
    with pytest.raises(fngd.FNGDError, match="no step") as info:
        pre.end_epoch()  # an epoch without a step
    assert info.value.status == _lib.ERROR_INVALID_STATE

    gmodel, gpre = make(mode="global")
    with pytest.raises(RuntimeError, match="collect epoch"):
        gpre.loss_weights(torch.arange(4))


def test_bad_batches_change_nothing():
    model, pre = make()
    x, y = make_data("token", 20)
    forward_backward(model, x[:8], y[:8])
    pre.step(torch.arange(8))
    before = pre.stats()
    cases = [(torch.arange(7), ValueError, "8 samples"),                # wrong number of ids
             (torch.tensor([0, 1, 2, 3, 4, 5, 6, 6]), fngd.FNGDError, "twice|duplicate"),
             (torch.arange(13, 21), fngd.FNGDError, "num_samples|range|20")]
    for ids, exc, msg in cases:
        forward_backward(model, x[:8], y[:8])
        with pytest.raises(exc, match=msg):
            pre.step(ids)
    forward_backward(model, x[:9], y[:9])
    with pytest.raises(ValueError, match="max_batch"):
        pre.step(torch.arange(9))
    bad = x[:8].clone()
    bad[0, 0, 0] = float("nan")
    forward_backward(model, bad, y[:8])
    with pytest.raises(fngd.FNGDError) as info:
        pre.step(torch.arange(8))
    assert info.value.status == _lib.ERROR_NONFINITE
    after = pre.stats()
    for k in ("steps_total", "coefs_stored", "factorizations", "epoch"):
        assert after[k] == before[k], k
    forward_backward(model, x[:8], y[:8])
    pre.step(torch.arange(8))  # still usable


def test_shape_change_after_setup_is_rejected():
    conv = fngd.FNGDPreconditioner(nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1),
                                                 nn.Flatten()),
                                   num_samples=20, max_batch=8)
    cmodel = conv.model
    cmodel(torch.randn(4, 3, 8, 8)).sum().backward()
    conv.step(torch.arange(4))
    cmodel(torch.randn(4, 3, 10, 10)).sum().backward()
    with pytest.raises(ValueError, match="per-sample shape"):
        conv.step(torch.arange(4))


def test_requires_grad_restored_when_forward_raises():
    model, pre = make("conv")
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 10, 10, requires_grad=True))  # Linear rejects the shape
    pre.discard()
    assert all(p.requires_grad for p in model.parameters())
    x, y = make_data("conv", 8)
    model.train()
    train_step(model, pre, torch.optim.SGD(model.parameters(), lr=0.01), x, y, torch.arange(8))


def test_removed_hooks():
    model, pre = make()
    pre.remove_hooks()
    with pytest.raises(RuntimeError, match="remove_hooks"):
        pre.step(torch.arange(8))
