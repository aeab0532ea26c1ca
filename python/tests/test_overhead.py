"""What the drop-in does per step, beyond the library call (issue 13): no copies of inputs
autograd already keeps, xhat from the statistics the norm layer saved (equal to recomputing
them), the per-step argument block built once, no hooks at all in global mode's reuse epochs,
and bench/dropin_overhead.py's smoke run."""

import importlib.util
import json
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fngd
from fngd import _handle
from fngd import layers as L
from conftest import EPS32, make_data, make_model, train_step

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "dropin_overhead.py")


def ours(model):
    """Forward (pre-)hooks registered on the model's modules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_global_reuse_epochs_run_without_hooks_and_recollection_brings_them_back():
    model = make_model("conv").train()
    x, y = make_data("conv", 16)
    pre = fngd.FNGDPreconditioner(model, num_samples=16, max_batch=8, damping=1e-2,
                                  mode="global", recompute_every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    counts = []
    for _ in range(3):  # collect, reuse, collect
        counts.append(ours(model))
        for ids in torch.arange(16).split(8):
            train_step(model, pre, opt, x[ids], y[ids], ids)
        pre.end_epoch()
    assert counts == [2 * len(pre.layers), 0, 2 * len(pre.layers)]
    assert pre.stats()["factorizations"] == 4  # both collect epochs captured and solved
    pre.remove_hooks()
    assert ours(model) == 0


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_xhat_from_saved_statistics(training):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5).train(training)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = (torch.randn(6, 5, 4, 3) * 3 + 1).requires_grad_()
    out = bn(x)
    got = L.BatchNorm2dKind().capture(bn, x, out)
    if training:  # the batch statistics the module normalised with
        ref = F.batch_norm(x.detach().double(), None, None, training=True, eps=bn.eps)
        assert type(out.grad_fn).__name__ == "NativeBatchNormBackward0"
    else:
        ref = ((x.detach().double() - bn.running_mean.double()[:, None, None])
               / (bn.running_var.double()[:, None, None] + bn.eps).sqrt())
    assert got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=64 * EPS32)
    # Without a recognised node (here: no grad_fn at all) the statistics are computed instead.
    with torch.no_grad():
        plain = bn(x)
    torch.testing.assert_close(L.BatchNorm2dKind().capture(bn, x, plain), got, rtol=0,
                               atol=16 * EPS32)


def test_layernorm_xhat_from_saved_statistics_and_channels_last_input():
    torch.manual_seed(0)
    ln = nn.LayerNorm(7)
    x = (torch.randn(4, 3, 7) * 2 - 1).requires_grad_()
    out = ln(x)
    got = L.LayerNormKind().capture(ln, x, out)
    ref = F.layer_norm(x.detach().double(), (7,), eps=ln.eps)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=64 * EPS32)
    bn = nn.BatchNorm2d(3).train()
    xc = torch.randn(2, 3, 4, 4).to(memory_format=torch.channels_last).requires_grad_()
    a = L.BatchNorm2dKind().capture(bn, xc, bn(xc))
    assert a.is_contiguous()  # NCHW for the library, written in the same single pass
    torch.testing.assert_close(a.double(), F.batch_norm(xc.detach().double(), None, None,
                                                        training=True, eps=bn.eps),
                               rtol=0, atol=64 * EPS32)


def test_inputs_are_not_copied_and_the_step_block_is_built_once(monkeypatch):
    model = make_model("conv").train()
    x, y = make_data("conv", 8)
    pre = fngd.FNGDPreconditioner(model, num_samples=16, max_batch=8, damping=1e-2)
    seen = {}

    def spy(layer):
        def fwd(module, args, out):
            seen[layer.name] = args[0].data_ptr()
        return fwd
    for layer in pre.layers:
        layer.module.register_forward_hook(spy(layer))
    calls = []
    orig = _handle.Handle.set_layer_buffers

    def counted(self, *a):
        calls.append(a[0])
        return orig(self, *a)
    monkeypatch.setattr(_handle.Handle, "set_layer_buffers", counted)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    blocks = []
    for _ in range(3):
        opt.zero_grad(set_to_none=False)  # .grad tensors stay: the same pointers every step
        F.cross_entropy(model(x), y).backward()
        for layer in pre.layers:
            if layer.kind in ("linear", "conv2d"):  # the module's own input, not a copy
                assert layer.captures[0].a.data_ptr() == seen[layer.name], layer.name
        pre.step(torch.arange(8))
        blocks.append(pre._handle.batches)
    assert blocks[0] is blocks[1] is blocks[2]
    assert len(calls) == len(pre.layers)  # only when the .grad pointers first appear


def test_benchmark_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("dropin_overhead", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "overhead.json"
    res = bench.main(["--smoke", "--models", "digits", "--profile", "--out", str(out)])
    saved = json.loads(out.read_text())
    rows = saved["timing"][0]["rows"]
    assert set(rows) == set(bench.CONFIGS)
    assert all(r["cpu_ms"] > 0 and r["steps"] == 2 for r in rows.values())
    assert rows["sgd"]["cpu_ratio"] == 1.0
    again = bench.main(["--from-json", str(out), "--compare", str(out)])  # tables only
    assert again["timing"] == saved["timing"]
    prof = res["profile"][0]["rows"]
    assert prof["layer-reuse/none"]["parts_cpu_ms"]["library: fngd_step"] > 0
    assert prof["layer-reuse/none"]["copies_per_step"].get("input copies", 0) == 0
