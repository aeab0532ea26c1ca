"""Which torch modules libfngd can precondition, what to capture from them, and their descriptors.

Supported (each module's own parameters form one library layer):
- nn.Linear                       -> FNGD_LAYER_LINEAR, positions = product of the middle dims
- nn.Conv2d, groups == 1, zero padding (int/tuple, 'valid', or a symmetric 'same')
                                  -> FNGD_LAYER_CONV2D
- nn.BatchNorm2d, affine          -> FNGD_LAYER_NORM_AFFINE, N x C x (H*W)
- nn.LayerNorm over one dimension, elementwise affine
                                  -> FNGD_LAYER_NORM_AFFINE, channels_last, N x T x C

Normalisation layers need the normalised input xhat. It is recomputed in the forward hook from
the captured input: batch statistics when the module normalises with them (training mode, or no
running statistics), else the running statistics; LayerNorm always uses per-position
statistics. This mirrors what the module computed in its forward (same eps, biased variance);
it costs one extra elementwise pass and one activation-sized fp32 buffer per norm layer.
"""

from __future__ import annotations

import ctypes

import torch
from torch import nn

from . import _lib


class UnsupportedLayerError(ValueError):
    """A module with trainable parameters that libfngd cannot precondition."""


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def classify(module: nn.Module) -> tuple[str | None, str]:
    """(kind, reason): kind is 'linear' | 'conv2d' | 'batchnorm2d' | 'layernorm', or None with
    the reason the module cannot be preconditioned."""
    if isinstance(module, nn.Linear):
        return "linear", ""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            return None, f"Conv2d with groups={module.groups} (only groups=1 is supported)"
        if module.padding_mode != "zeros":
            return None, f"Conv2d with padding_mode='{module.padding_mode}' (only 'zeros')"
        if isinstance(module.padding, str) and module.padding == "same":
            dh, dw = _pair(module.dilation)
            kh, kw = _pair(module.kernel_size)
            if (dh * (kh - 1)) % 2 or (dw * (kw - 1)) % 2:
                return None, "Conv2d with padding='same' that pads asymmetrically"
        return "conv2d", ""
    if isinstance(module, nn.BatchNorm2d):
        if not module.affine:
            return None, "BatchNorm2d without affine parameters"
        return "batchnorm2d", ""
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            return None, (f"LayerNorm over {len(module.normalized_shape)} dimensions "
                          "(only the last dimension is supported)")
        if module.weight is None:
            return None, "LayerNorm without elementwise affine parameters"
        return "layernorm", ""
    return None, f"{type(module).__name__} is not a supported layer type"


def conv_padding(module: nn.Conv2d) -> tuple[int, int]:
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return 0, 0
        dh, dw = _pair(module.dilation)
        kh, kw = _pair(module.kernel_size)
        return dh * (kh - 1) // 2, dw * (kw - 1) // 2
    return _pair(module.padding)


def capture_input(kind: str, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the library needs as `input` for this layer, fp32 and contiguous: the input itself
    for Linear/Conv2d, the normalised input xhat for the norm layers. Runs without autograd."""
    with torch.no_grad():
        x = x.detach()
        if kind in ("linear", "conv2d"):
            return x.to(torch.float32).contiguous()
        x = x.to(torch.float32)
        if kind == "batchnorm2d":
            batch_stats = module.training or module.running_mean is None
            if batch_stats:
                var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
            else:
                mean, var = module.running_mean.float(), module.running_var.float()
            inv = torch.rsqrt(var + module.eps)
            return ((x - mean[None, :, None, None]) * inv[None, :, None, None]).contiguous()
        # layernorm over the last dimension
        var, mean = torch.var_mean(x, dim=-1, keepdim=True, unbiased=False)
        return ((x - mean) * torch.rsqrt(var + module.eps)).contiguous()


def geometry(kind: str, module: nn.Module, a: torch.Tensor) -> dict:
    """Descriptor shape fields for this layer from one captured (fp32) input of batch N."""
    has_bias = int(getattr(module, "bias", None) is not None)
    if kind == "linear":
        if a.dim() < 2 or a.shape[-1] != module.in_features:
            raise ValueError(f"Linear input of shape {tuple(a.shape)} does not end in "
                             f"in_features={module.in_features}")
        positions = a[0].numel() // module.in_features
        return dict(kind=kind, in_features=module.in_features,
                    out_features=module.out_features, positions=positions, has_bias=has_bias)
    if kind == "conv2d":
        if a.dim() != 4:
            raise ValueError(f"Conv2d input must be N x C x H x W, got {tuple(a.shape)}")
        kh, kw = _pair(module.kernel_size)
        sh, sw = _pair(module.stride)
        ph, pw = conv_padding(module)
        dh, dw = _pair(module.dilation)
        return dict(kind=kind, in_channels=module.in_channels, out_channels=module.out_channels,
                    in_h=a.shape[2], in_w=a.shape[3], kernel_h=kh, kernel_w=kw, stride_h=sh,
                    stride_w=sw, pad_h=ph, pad_w=pw, dilation_h=dh, dilation_w=dw,
                    has_bias=has_bias)
    if kind == "batchnorm2d":
        if a.dim() != 4:
            raise ValueError(f"BatchNorm2d input must be N x C x H x W, got {tuple(a.shape)}")
        return dict(kind=kind, num_features=module.num_features,
                    norm_positions=a.shape[2] * a.shape[3], channels_last=0, has_bias=has_bias)
    c = module.normalized_shape[0]
    return dict(kind=kind, num_features=c, norm_positions=a[0].numel() // c, channels_last=1,
                has_bias=has_bias)


def make_desc(geom: dict, gram_method: int) -> _lib.LayerDesc:
    """An fngd_layer_desc_t from the library's own helper (so new fields get their defaults)."""
    lib = _lib.load()
    kind = geom["kind"]
    if kind == "linear":
        d = lib.fngd_linear_desc(geom["in_features"], geom["out_features"], geom["has_bias"])
        d.positions = geom["positions"]
    elif kind == "conv2d":
        d = lib.fngd_conv2d_desc(geom["in_channels"], geom["out_channels"], geom["in_h"],
                                 geom["in_w"], geom["kernel_h"], geom["kernel_w"],
                                 geom["has_bias"])
        for f in ("stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w"):
            setattr(d, f, geom[f])
    else:
        d = lib.fngd_norm_affine_desc(geom["num_features"], geom["norm_positions"],
                                      geom["has_bias"])
        d.channels_last = geom["channels_last"]
    d.gram_method = gram_method
    return d


def ptr(t: torch.Tensor | None):
    """Raw data pointer for ctypes (None for no tensor)."""
    return ctypes.c_void_p(t.data_ptr()) if t is not None else None
