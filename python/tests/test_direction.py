"""The direction the adapter writes into .grad equals (a) a dense float64 reference built from
torch.func per-sample gradients and (b) what libfngd returns when called directly."""

import ctypes

import pytest
import torch
import torch.nn.functional as F

import fngd
from fngd import _lib
from conftest import (EPS32, layer_blocks, make_data, make_model, per_sample_grads,
                      reference_direction, rel_err)


def tolerance(cond):
    """fp32 library vs float64 reference. Each fp32 Gram entry is a blocked (BLAS) dot product
    whose relative error stays within a few eps for these lengths (<= 300 terms); the Cholesky
    solve amplifies the relative error of K by at most cond(K + N*lambda*I), and the final
    weighted sum adds a few eps more. 16 * eps * cond covers both with margin (observed errors
    are ~1e-7 against bounds of ~1e-5..1e-4 here)."""
    return 16 * EPS32 * cond


@pytest.mark.parametrize("coef_filter", ["range", "none"])
@pytest.mark.parametrize("mode", ["layer", "global"])
@pytest.mark.parametrize("name", ["conv", "token"])
def test_matches_dense_reference(name, mode, coef_filter):
    model = make_model(name).eval()  # eval BN: samples independent, so vmap(grad) is exact
    n, damping = 7, 1e-3  # odd batch, below max_batch
    x, y = make_data(name, n)
    ids = torch.tensor([3, 11, 0, 19, 5, 8, 2])
    pre = fngd.FNGDPreconditioner(model, num_samples=20, max_batch=8, damping=damping, mode=mode,
                                  damping_kind="absolute", coef_filter=coef_filter)
    grads = per_sample_grads(model, x, y)
    F.cross_entropy(model(x), y).backward()
    pre.step(ids)
    ref, cond = reference_direction(grads, layer_blocks(pre), damping, mode,
                                    coef_filter=coef_filter)
    # The range filter applies the damped inverse twice: twice the bound.
    tol = tolerance(cond) * (2 if coef_filter == "range" else 1)
    for pname, p in model.named_parameters():
        err = rel_err(p.grad, ref[pname])
        assert err <= tol, (pname, err, cond)
        assert p.grad.dtype == torch.float32 and p.grad.is_contiguous()
    # The coefficients the library stored are the reference alphas (checked through the
    # direction above); every id of the batch now has one.
    assert pre.stats()["coefs_stored"] == n
    assert not torch.isnan(pre.coefficients(ids)).any()
    assert torch.isnan(pre.coefficients([1, 4])).all()


def _capture(model):
    """Test-side hooks, independent of the adapter: inputs and output gradients per module."""
    store, handles = {}, []
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.BatchNorm2d)):
            def fwd(mod, args, out, key=m):
                store[key] = {"x": args[0].detach().clone()}
                out.register_hook(lambda g, key=key: store[key].__setitem__("e", g.clone()))
            handles.append(m.register_forward_hook(fwd))
    return store, handles


def _direct_direction(model, store, ids, damping, mode):
    """Call libfngd through the binding with hand-built descriptors; returns {param: grad}."""
    lib = _lib.load()
    cfg = _lib.Config()
    lib.fngd_config_init(ctypes.byref(cfg))
    cfg.max_batch, cfg.num_samples, cfg.damping = 8, 20, damping
    cfg.step_control = _lib.STEP_NONE  # as the preconditioner under test (conftest)
    cfg.coef_mode = _lib.COEF_GLOBAL if mode == "global" else _lib.COEF_PER_LAYER
    h = _lib.Handle()
    _lib.check(lib.fngd_create(ctypes.byref(cfg), ctypes.byref(h)))
    try:
        conv1, bn, conv2, lin = model[0], model[1], model[3], model[6]
        n, _, hh, ww = store[conv1]["x"].shape
        descs = [lib.fngd_conv2d_desc(3, 4, hh, ww, 3, 3, 1), lib.fngd_norm_affine_desc(4, hh * ww, 1),
                 lib.fngd_conv2d_desc(4, 5, hh, ww, 3, 3, 0), lib.fngd_linear_desc(45, 6, 1)]
        descs[0].pad_h = descs[0].pad_w = 1
        descs[2].stride_h = descs[2].stride_w = 2
        out = {p: torch.zeros_like(p) for p in model.parameters()}
        keep = []
        batches = (_lib.LayerBatch * 4)()
        for i, (m, d) in enumerate(zip((conv1, bn, conv2, lin), descs)):
            d.grad_weight = out[m.weight].data_ptr()
            d.grad_bias = out[m.bias].data_ptr() if m.bias is not None else None
            _lib.check(lib.fngd_add_layer(h, ctypes.byref(d), None), h)
            x = store[m]["x"]
            if m is bn:  # xhat from the batch statistics, as the module normalised in training
                x = F.batch_norm(x, None, None, training=True, eps=bn.eps)
            x, e = x.contiguous(), store[m]["e"].contiguous()
            keep += [x, e]
            batches[i].input, batches[i].grad_output = x.data_ptr(), e.data_ptr()
        ids64 = ids.to(torch.int64).contiguous()
        _lib.check(lib.fngd_step(h, n, ctypes.cast(ids64.data_ptr(), ctypes.POINTER(ctypes.c_int64)),
                                 batches, None, None), h)
        return out
    finally:
        lib.fngd_destroy(h)


@pytest.mark.parametrize("mode", ["layer", "global"])
def test_matches_direct_library_call_batchnorm_training(mode):
    model = make_model("conv").train()  # BN normalises with batch statistics
    x, y = make_data("conv", 8)
    ids = torch.arange(12, 20)
    pre = fngd.FNGDPreconditioner(model, num_samples=20, max_batch=8, damping=1e-2, mode=mode)
    store, handles = _capture(model)
    F.cross_entropy(model(x), y).backward()
    for hd in handles:
        hd.remove()
    pre.step(ids)
    direct = _direct_direction(model, store, ids, 1e-2, mode)
    for pname, p in model.named_parameters():
        # Same library, same data; only xhat is computed by two different torch paths (fp32
        # rounding of a few ulps), amplified by the modest conditioning of this small solve.
        assert rel_err(p.grad, direct[p]) < 2e-5, pname


def test_positional_keys_and_channels_last_params():
    """sample_ids=None keys by position; non-contiguous (channels_last) grads are replaced by
    contiguous fp32 buffers, and the direction still matches the reference."""
    model = make_model("conv").eval().to(memory_format=torch.channels_last)
    x, y = make_data("conv", 6)
    pre = fngd.FNGDPreconditioner(model, num_samples=16, max_batch=8, damping=1e-3)
    grads = per_sample_grads(model, x, y)
    F.cross_entropy(model(x.to(memory_format=torch.channels_last)), y).backward()
    pre.step(None)
    ref, cond = reference_direction(grads, layer_blocks(pre), 1e-3, "layer")
    for pname, p in model.named_parameters():
        assert rel_err(p.grad, ref[pname]) <= tolerance(cond), pname
    assert pre.stats()["coefs_stored"] == 6
