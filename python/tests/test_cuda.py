"""The CUDA path of the adapter against its CPU path (every test here skips without a GPU):
backend and device ordinal taken from the parameters (cuda:1 while cuda:0 is current, when
there are two GPUs), CUDA sample ids, CUDA loss weights, .grad replaced by zero_grad between
steps, a side stream, fp16/bf16 parameters, and state moved GPU -> CPU -> GPU."""

import copy
import ctypes
import io

import pytest
import torch
import torch.nn.functional as F

import fngd
from fngd import _lib
from conftest import make_data, make_model, rel_err

import os

# FNGD_REQUIRE_GPU=1 (scripts/gpu_check.sh sets it): a GPU run must not pass by skipping.
REQUIRE_GPU = os.environ.get("FNGD_REQUIRE_GPU") == "1"
pytestmark = pytest.mark.skipif(not torch.cuda.is_available() and not REQUIRE_GPU,
                                reason="no CUDA device")


@pytest.fixture(autouse=True)
def _exact_fp32():
    """PyTorch may use TF32 in cuDNN convolutions and matmuls; the comparisons with the CPU at
    1e-4 need plain FP32 in the model's forward and backward too."""
    if not torch.cuda.is_available():
        if REQUIRE_GPU:
            pytest.fail("FNGD_REQUIRE_GPU=1 but torch sees no CUDA device")
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

N_SAMPLES, BATCH, DAMPING = 20, 8, 1e-2
# CPU (OpenBLAS) and CUDA (cuBLAS) sum in different orders: fp32 rounding of a few ulps,
# amplified by the conditioning of these small damped solves.
TOL = 1e-4


def cuda_backend() -> bool:
    avail = ctypes.c_int(0)
    _lib.load().fngd_backend_available(_lib.BACKEND_CUDA, ctypes.byref(avail))
    return bool(avail.value)


needs_backend = pytest.mark.skipif(
    not REQUIRE_GPU and (not torch.cuda.is_available() or not cuda_backend()),
    reason="needs a GPU and a libfngd with a usable CUDA backend")


def devices():
    out = ["cuda:0"]
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        out.append("cuda:1")  # not the current device: index and stream must follow the model
    return out


def step(model, pre, x, y, ids):
    """One iteration of the documented loop (weights unchanged); returns .grad on the CPU."""
    model.zero_grad(set_to_none=True)
    out = model(x)
    if pre.needs_loss_weights:
        w = pre.loss_weights(ids)
        assert w.device == out.device and w.dtype == torch.float32
        (w * F.cross_entropy(out, y, reduction="none")).mean().backward()
    else:
        F.cross_entropy(out, y).backward()
        pre.step(ids)
    return {n: p.grad.detach().float().cpu() for n, p in model.named_parameters()}


def pair(name, mode, dev, dtype=torch.float32, damping=DAMPING):
    cpu_model = make_model(name).eval()
    gpu_model = copy.deepcopy(cpu_model).to(dev, dtype)
    if dtype != torch.float32:  # the CPU twin gets the same rounded weights
        cpu_model.load_state_dict({k: v.float().cpu() for k, v in gpu_model.state_dict().items()})
    opts = dict(num_samples=N_SAMPLES, max_batch=BATCH, damping=damping, mode=mode)
    return (cpu_model, fngd.FNGDPreconditioner(cpu_model, **opts),
            gpu_model, fngd.FNGDPreconditioner(gpu_model, **opts))


def schedule():
    g = torch.Generator().manual_seed(5)
    return [torch.randperm(N_SAMPLES, generator=g).split(BATCH) for _ in range(2)]


@pytest.mark.skipif(not torch.cuda.is_available() or cuda_backend(),
                    reason="needs a GPU and a libfngd without the CUDA backend")
def test_cpu_only_library_refuses_cuda_parameters():
    model = make_model("token").cuda()
    pre = fngd.FNGDPreconditioner(model, num_samples=N_SAMPLES, max_batch=BATCH)
    x, y = make_data("token", BATCH)
    F.cross_entropy(model(x.cuda()), y.cuda()).backward()
    with pytest.raises(fngd.FNGDError) as info:
        pre.step(torch.arange(BATCH))
    assert info.value.status == _lib.ERROR_NOT_SUPPORTED


@needs_backend
@pytest.mark.parametrize("dev", devices())
@pytest.mark.parametrize("mode,name", [("layer", "conv"), ("global", "token"),
                                       ("global", "conv")])
def test_cuda_matches_cpu_over_collect_and_reuse(mode, name, dev):
    x, y = make_data(name, N_SAMPLES)
    xd, yd = x.to(dev), y.to(dev)
    cpu_model, cpu_pre, gpu_model, gpu_pre = pair(name, mode, dev)
    for epoch in schedule():
        for ids in epoch:
            ref = step(cpu_model, cpu_pre, x[ids], y[ids], ids)
            ids_d = ids.to(dev)  # DataLoader ids may live on the GPU: moved to host int64
            got = step(gpu_model, gpu_pre, xd[ids_d], yd[ids_d], ids_d)
            for n in ref:
                assert rel_err(got[n], ref[n]) < TOL, (n, cpu_pre.phase)
            assert torch.cuda.current_device() == 0  # the library restores the device
        cpu_pre.end_epoch()
        gpu_pre.end_epoch()
    assert gpu_pre._device_cached == torch.device(dev)
    torch.testing.assert_close(gpu_pre.state_dict()["coefficients"],
                               cpu_pre.state_dict()["coefficients"], rtol=TOL, atol=0,
                               equal_nan=True)


@needs_backend
@pytest.mark.parametrize("mode", ["layer", "global"])
def test_all_five_modules_match_cpu(mode):
    """Embedding, MultiheadAttention, depthwise Conv1d, grouped Conv2d and GroupNorm on the GPU
    (the CUDA backend's embedding and grouped-convolution paths) give the CPU backend's
    directions over a collect and a reuse epoch. Looser than TOL: the capture recomputes the
    attention and GroupNorm's xhat on each device, a few ulps apart, in a deeper model."""
    from test_layers_attention import PAD, AllFive
    torch.manual_seed(0)
    cpu_model = AllFive()
    gpu_model = copy.deepcopy(cpu_model).cuda()
    opts = dict(num_samples=N_SAMPLES, max_batch=BATCH, damping=DAMPING, mode=mode)
    cpu_pre = fngd.FNGDPreconditioner(cpu_model, **opts)
    gpu_pre = fngd.FNGDPreconditioner(gpu_model, **opts)
    g = torch.Generator().manual_seed(7)
    x = torch.randint(1, 9, (N_SAMPLES, 5), generator=g)
    x[:, 4] = PAD
    y = torch.randint(0, 3, (N_SAMPLES,), generator=g)
    for epoch in schedule():
        for ids in epoch:
            ref = step(cpu_model, cpu_pre, x[ids], y[ids], ids)
            got = step(gpu_model, gpu_pre, x[ids].cuda(), y[ids].cuda(), ids)
            for n in ref:
                assert rel_err(got[n], ref[n]) < 10 * TOL, (n, cpu_pre.phase)
        cpu_pre.end_epoch()
        gpu_pre.end_epoch()


@needs_backend
def test_side_stream_and_switching_streams():
    x, y = make_data("conv", N_SAMPLES)
    xd, yd = x.cuda(), y.cuda()
    cpu_model, cpu_pre, gpu_model, gpu_pre = pair("conv", "layer", "cuda:0")
    side = torch.cuda.Stream()
    for e, epoch in enumerate(schedule()):
        for i, ids in enumerate(epoch):
            ref = step(cpu_model, cpu_pre, x[ids], y[ids], ids)
            if (e + i) % 2:  # alternate streams between calls of the same handle
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    got = step(gpu_model, gpu_pre, xd[ids], yd[ids], ids)
                torch.cuda.current_stream().wait_stream(side)
            else:
                got = step(gpu_model, gpu_pre, xd[ids], yd[ids], ids)
            for n in ref:
                assert rel_err(got[n], ref[n]) < TOL, n
        cpu_pre.end_epoch()
        gpu_pre.end_epoch()  # on the default stream, after side-stream steps


@needs_backend
@pytest.mark.parametrize("dtype,tol", [(torch.float16, 3e-2), (torch.bfloat16, 1.5e-1)])
def test_half_precision_parameters_are_staged(dtype, tol):
    x, y = make_data("token", N_SAMPLES)
    cpu_model, cpu_pre, gpu_model, gpu_pre = pair("token", "layer", "cuda:0", dtype,
                                                  damping=1e-1)
    for ids in schedule()[0]:
        xd = x[ids].cuda().to(dtype)
        ref = step(cpu_model, cpu_pre, xd.float().cpu(), y[ids], ids)
        got = step(gpu_model, gpu_pre, xd, y[ids].cuda(), ids)
        for n, p in gpu_model.named_parameters():
            assert p.grad.dtype == dtype and torch.isfinite(p.grad).all(), n
            # low-precision forward/backward vs fp32: loose, but catches a wrong buffer
            assert rel_err(got[n], ref[n]) < tol, n


@needs_backend
@pytest.mark.parametrize("mode,name", [("layer", "conv"), ("global", "token")])
def test_state_moves_gpu_to_cpu_and_back(mode, name):
    x, y = make_data(name, N_SAMPLES)
    first, second = schedule()
    cpu_model, cpu_pre, gpu_model, gpu_pre = pair(name, mode, "cuda:0")
    for ids in first:
        step(gpu_model, gpu_pre, x[ids].cuda(), y[ids].cuda(), ids)
    gpu_pre.end_epoch()

    buf = io.BytesIO()
    torch.save(gpu_pre.state_dict(), buf)
    buf.seek(0)
    cpu_pre.load_state_dict(torch.load(buf, map_location="cpu", weights_only=False))
    assert cpu_pre.phase == "reuse" and cpu_pre._device_cached == torch.device("cpu")
    buf.seek(0)
    # Mapped onto the GPU (the image is read back to the host for the library).
    back_model = copy.deepcopy(cpu_model).cuda()
    back = fngd.FNGDPreconditioner(back_model, num_samples=N_SAMPLES, max_batch=BATCH,
                                   damping=DAMPING, mode=mode)
    back.load_state_dict(torch.load(buf, map_location="cuda", weights_only=False))
    for pre in (cpu_pre, back):
        torch.testing.assert_close(pre.state_dict()["coefficients"],
                                   gpu_pre.state_dict()["coefficients"], rtol=0, atol=0,
                                   equal_nan=True)
    for ids in second:  # reuse steps: the restored coefficients give the same directions
        ref = step(gpu_model, gpu_pre, x[ids].cuda(), y[ids].cuda(), ids)
        for pre, model, dev in ((cpu_pre, cpu_model, "cpu"), (back, back_model, "cuda")):
            got = step(model, pre, x[ids].to(dev), y[ids].to(dev), ids)
            for n in ref:
                assert rel_err(got[n], ref[n]) < TOL, (n, dev)
