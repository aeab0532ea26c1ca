"""FNGDPreconditioner's options: names of the choices, and the constructor's type and range
checks (the library's own check runs afterwards, in fngd._handle.build_config)."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from . import _lib

MODES = {"layer": _lib.COEF_PER_LAYER, "global": _lib.COEF_GLOBAL}
DAMPING = {"absolute": _lib.DAMPING_ABSOLUTE, "trace_relative": _lib.DAMPING_TRACE_RELATIVE}
REDUCTION = {"mean": _lib.GRAD_MEAN_LOSS, "sum": _lib.GRAD_PER_SAMPLE}
FALLBACK = {"stored_mean": _lib.FALLBACK_STORED_MEAN, "uniform": _lib.FALLBACK_UNIFORM}
GRAM = {"auto": _lib.GRAM_AUTO, "materialize": _lib.GRAM_MATERIALIZE,
        "position": _lib.GRAM_POSITION}
FILTER = {"none": _lib.FILTER_NONE, "range": _lib.FILTER_RANGE}
STEP = {"none": _lib.STEP_NONE, "kl_clip": _lib.STEP_KL_CLIP, "graft": _lib.STEP_GRAFT}
RHS = {"ones": _lib.RHS_ONES, "ief": _lib.RHS_CUSTOM}
UNSUPPORTED = {"error": None, "skip": None}

INT_MAX, INT64_MAX, SIZE_MAX = 2**31 - 1, 2**63 - 1, 2**64 - 1


def choice(name, value, table):
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {sorted(table)}; got "
                        f"{type(value).__name__} {value!r}")
    if value not in table:
        raise ValueError(f"{name}={value!r}: expected one of {sorted(table)}")
    return value


def integer(name, value, lo, hi, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int ({what}); got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value}: must be {what}")
    return int(value)


def real(name, value, ok, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number ({what}); got {type(value).__name__} "
                        f"{value!r}")
    value = float(value)
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"{name}={value}: must be {what}")
    return value


def flag(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return value


def learning_rate(lr, where="lr"):
    """The lr argument: None, a float >= 0, a zero-argument callable or a torch optimizer."""
    if lr is None or callable(lr) or isinstance(lr, torch.optim.Optimizer):
        return lr
    return real(where, lr, lambda v: v >= 0, "a finite learning rate >= 0, a callable or a "
                                             "torch optimizer")


def current_lr(lr) -> float:
    """The learning rate to hand the library at this step."""
    v = (lr.param_groups[0]["lr"] if isinstance(lr, torch.optim.Optimizer)
         else lr() if callable(lr) else lr)
    if type(v) is float and 0.0 <= v < math.inf:  # the usual case, without the ABC checks
        return v
    return real("the learning rate (lr)", v, lambda x: x >= 0, "finite and >= 0")


def resolve(model, defaults: _lib.Config, **kw) -> dict:
    """Checked options (library defaults filled in for the None ones) as the dict that
    state_dict() records; raises TypeError/ValueError naming the bad argument."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    names = {k: {v: n for n, v in t.items()} for k, t in
             (("damping_kind", DAMPING), ("coef_filter", FILTER), ("step_control", STEP))}
    if kw["damping"] is None:
        kw["damping"] = defaults.damping
    if kw["damping_kind"] is None:
        kw["damping_kind"] = names["damping_kind"][defaults.damping_kind]
    if kw["coef_filter"] is None:
        kw["coef_filter"] = names["coef_filter"][defaults.coef_filter]
    if kw["exact_small_layers"] is None:
        kw["exact_small_layers"] = bool(defaults.exact_small_layers)
    if kw["step_control"] is None:
        kw["step_control"] = names["step_control"][defaults.step_control]
    if kw["kl_clip"] is None:
        kw["kl_clip"] = defaults.kl_clip
    for name, table in (("mode", MODES), ("damping_kind", DAMPING),
                        ("loss_reduction", REDUCTION), ("fallback", FALLBACK),
                        ("gram_method", GRAM), ("coef_filter", FILTER),
                        ("step_control", STEP), ("rhs", RHS), ("unsupported", UNSUPPORTED)):
        choice(name, kw[name], table)
    o = dict(
        num_samples=integer("num_samples", kw["num_samples"], 1, INT64_MAX,
                            "positive (the size of the id space, len(dataset))"),
        max_batch=integer("max_batch", kw["max_batch"], 1, 65536,
                          "positive and at most 65536 (the largest batch passed to step())"),
        damping=real("damping", kw["damping"], lambda v: v >= 0, "finite and >= 0"),
        mode=kw["mode"],
        recompute_every=integer("recompute_every", kw["recompute_every"], 0, INT_MAX,
                                ">= 0 (0: collect in the first epoch only)"),
        damping_kind=kw["damping_kind"], loss_reduction=kw["loss_reduction"],
        fallback=kw["fallback"], gram_method=kw["gram_method"],
        max_damping_retries=integer("max_damping_retries", kw["max_damping_retries"], 0, 64,
                                    "in 0..64"),
        damping_growth=real("damping_growth", kw["damping_growth"], lambda v: v > 1,
                            "finite and > 1"),
        check_finite=flag("check_finite", kw["check_finite"]),
        max_workspace_bytes=integer("max_workspace_bytes", kw["max_workspace_bytes"], 1,
                                    SIZE_MAX, "a positive number of bytes"),
        coef_filter=kw["coef_filter"],
        exact_small_layers=flag("exact_small_layers", kw["exact_small_layers"]),
        step_control=kw["step_control"],
        kl_clip=real("kl_clip", kw["kl_clip"], lambda v: v > 0, "finite and > 0"),
        rhs=kw["rhs"])
    flag("skip_weight_grad", kw["skip_weight_grad"])
    modules = kw["modules"]
    if modules is not None:
        if isinstance(modules, str) or not hasattr(modules, "__iter__"):
            raise TypeError("modules must be an iterable of module names (as in "
                            f"model.named_modules()), got {type(modules).__name__} {modules!r}")
        bad = [m for m in modules if not isinstance(m, str)]
        if bad:
            raise TypeError(f"modules must hold module names (strings), got {bad!r}")
    if kw["ief_layer"] is not None and not isinstance(kw["ief_layer"], str):
        raise TypeError(f"ief_layer must be a module name (str) or None, got "
                        f"{type(kw['ief_layer']).__name__}")
    return o


_INT_DTYPES = frozenset(d for d in (torch.uint8, torch.int8, torch.int16, torch.int32,
                                    torch.int64, getattr(torch, "uint16", None),
                                    getattr(torch, "uint32", None),
                                    getattr(torch, "uint64", None)) if d is not None)


def sample_ids(ids, n=None) -> torch.Tensor:
    """Sample ids as the library reads them: a 1-D host int64 tensor. Integer tensors (any
    device), NumPy integer arrays and sequences of ints are accepted; floats, bools and
    anything that is not 1-D are refused rather than truncated or flattened."""
    if not isinstance(ids, torch.Tensor):
        if isinstance(ids, (list, tuple)):
            if not ids:
                ids = torch.empty(0, dtype=torch.int64)
            elif any(isinstance(v, (bool, float)) for v in ids):
                raise TypeError("sample_ids must be integers (data-set indices); the sequence "
                                "holds bool or float values")
        try:
            ids = torch.as_tensor(ids)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TypeError(f"sample_ids must be a 1-D sequence of integers: {e}") from None
    if ids.dtype not in _INT_DTYPES:
        raise TypeError(f"sample_ids must be integers (data-set indices), got dtype {ids.dtype}"
                        " (a float or bool tensor would be truncated)")
    if ids.dim() != 1:
        raise ValueError(f"sample_ids must be 1-D (one id per sample), got shape "
                         f"{tuple(ids.shape)}")
    if n is not None and ids.shape[0] != n:
        raise ValueError(f"sample_ids has {ids.shape[0]} entries, the batch has {n} samples")
    if ids.dtype != torch.int64 or ids.device.type != "cpu":
        ids = ids.detach().to("cpu", torch.int64)
    return ids if ids.is_contiguous() else ids.contiguous()
