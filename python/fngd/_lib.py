"""ctypes binding of libfngd (include/fngd.h): struct mirrors, prototypes, library loading.

Nothing here does math; it only describes the C ABI so the adapter can pass pointers.
The struct layouts are checked against the C header by python/tests/test_binding.py
(offsetof/sizeof printed by a compiled C program) and at load time against the sizes the
library itself reports (struct_size filled by fngd_config_init and the desc helpers).
"""

from __future__ import annotations

import ctypes
import glob
import os
from ctypes import (POINTER, Structure, c_char_p, c_double, c_float, c_int, c_int64, c_size_t,
                    c_void_p)

# ---- enums (C enums are ints on every ABI we target) --------------------------------------

SUCCESS = 0
ERROR_INVALID_ARGUMENT = 1
ERROR_INVALID_STATE = 2
ERROR_OUT_OF_MEMORY = 3
ERROR_NOT_POSITIVE_DEFINITE = 4
ERROR_NONFINITE = 5
ERROR_BACKEND = 6
ERROR_NOT_SUPPORTED = 7
ERROR_IO = 8
ERROR_CORRUPT_STATE = 9
ERROR_VERSION_MISMATCH = 10
ERROR_INTERNAL = 11

BACKEND_CPU, BACKEND_CUDA = 0, 1
COEF_PER_LAYER, COEF_GLOBAL = 0, 1
DAMPING_ABSOLUTE, DAMPING_TRACE_RELATIVE = 0, 1
GRAD_MEAN_LOSS, GRAD_PER_SAMPLE = 0, 1
RHS_ONES, RHS_CUSTOM = 0, 1
FALLBACK_STORED_MEAN, FALLBACK_UNIFORM = 0, 1
OUTPUT_WRITE_GRAD, OUTPUT_APPLY_SGD = 0, 1
GRAM_AUTO, GRAM_MATERIALIZE, GRAM_POSITION = 0, 1, 2
PHASE_COLLECT, PHASE_REUSE = 0, 1
FILTER_NONE, FILTER_RANGE = 0, 1
STEP_NONE, STEP_KL_CLIP, STEP_GRAFT = 0, 1, 2
LAYER_LINEAR, LAYER_CONV2D, LAYER_NORM_AFFINE, LAYER_GENERIC, LAYER_EMBEDDING = 0, 1, 2, 3, 4


class Config(Structure):
    """Mirror of fngd_config_t."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("backend", c_int),
        ("device", c_int),
        ("max_batch", c_int),
        ("num_samples", c_int64),
        ("coef_mode", c_int),
        ("damping_kind", c_int),
        ("damping", c_double),
        ("max_damping_retries", c_int),
        ("damping_growth", c_double),
        ("recompute_every", c_int),
        ("grad_convention", c_int),
        ("rhs", c_int),
        ("fallback", c_int),
        ("output", c_int),
        ("learning_rate", c_float),
        ("momentum", c_float),
        ("weight_decay", c_float),
        ("check_finite", c_int),
        ("max_workspace_bytes", c_size_t),
        ("coef_filter", c_int),
        ("exact_small_layers", c_int),
        ("step_control", c_int),
        ("kl_clip", c_double),
        ("allow_tf32", c_int),
    ]


class LayerDesc(Structure):
    """Mirror of fngd_layer_desc_t."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("kind", c_int),
        ("has_bias", c_int),
        ("in_features", c_int),
        ("out_features", c_int),
        ("positions", c_int),
        ("in_channels", c_int),
        ("out_channels", c_int),
        ("in_h", c_int),
        ("in_w", c_int),
        ("kernel_h", c_int),
        ("kernel_w", c_int),
        ("stride_h", c_int),
        ("stride_w", c_int),
        ("pad_h", c_int),
        ("pad_w", c_int),
        ("dilation_h", c_int),
        ("dilation_w", c_int),
        ("num_features", c_int),
        ("norm_positions", c_int),
        ("channels_last", c_int),
        ("num_params", c_int64),
        ("gram_method", c_int),
        ("weight", c_void_p),
        ("bias", c_void_p),
        ("grad_weight", c_void_p),
        ("grad_bias", c_void_p),
        ("groups", c_int),
        ("num_embeddings", c_int),
        ("embedding_dim", c_int),
    ]


class LayerBatch(Structure):
    """Mirror of fngd_layer_batch_t."""
    _fields_ = [("input", c_void_p), ("grad_output", c_void_p)]


class Stats(Structure):
    """Mirror of fngd_stats_t."""
    _fields_ = [
        ("struct_size", c_size_t),
        ("epoch", c_int),
        ("phase", c_int),
        ("steps_total", c_int64),
        ("steps_in_epoch", c_int64),
        ("factorizations", c_int64),
        ("damping_retries", c_int64),
        ("fallback_ids", c_int64),
        ("rejected_steps", c_int64),
        ("coefs_stored", c_int64),
        ("coef_min", c_double),
        ("coef_max", c_double),
        ("coef_mean", c_double),
        ("last_damping", c_double),
        ("last_step_scale", c_double),
    ]


STRUCTS = {"fngd_config_t": Config, "fngd_layer_desc_t": LayerDesc,
           "fngd_layer_batch_t": LayerBatch, "fngd_stats_t": Stats}

Handle = c_void_p
_st = c_int  # fngd_status_t

# name: (restype, argtypes). Every listed symbol must exist in the library.
_PROTOTYPES = {
    "fngd_get_version": (_st, [POINTER(c_int), POINTER(c_int), POINTER(c_int)]),
    "fngd_status_string": (c_char_p, [c_int]),
    "fngd_get_last_error": (c_char_p, [Handle]),
    "fngd_config_init": (_st, [POINTER(Config)]),
    "fngd_backend_available": (_st, [c_int, POINTER(c_int)]),
    "fngd_linear_desc": (LayerDesc, [c_int, c_int, c_int]),
    "fngd_conv2d_desc": (LayerDesc, [c_int, c_int, c_int, c_int, c_int, c_int, c_int]),
    "fngd_norm_affine_desc": (LayerDesc, [c_int, c_int, c_int]),
    "fngd_generic_desc": (LayerDesc, [c_int64]),
    "fngd_embedding_desc": (LayerDesc, [c_int, c_int, c_int]),
    "fngd_create": (_st, [POINTER(Config), POINTER(Handle)]),
    "fngd_destroy": (_st, [Handle]),
    "fngd_add_layer": (_st, [Handle, POINTER(LayerDesc), POINTER(c_int)]),
    "fngd_set_layer_buffers": (_st, [Handle, c_int, c_void_p, c_void_p, c_void_p, c_void_p]),
    "fngd_get_num_layers": (_st, [Handle, POINTER(c_int)]),
    "fngd_get_layer_gram_method": (_st, [Handle, c_int, POINTER(c_int)]),
    "fngd_prepare": (_st, [Handle]),
    "fngd_get_workspace_size": (_st, [Handle, POINTER(c_size_t)]),
    "fngd_set_workspace": (_st, [Handle, c_void_p, c_size_t]),
    "fngd_step": (_st, [Handle, c_int, POINTER(c_int64), POINTER(LayerBatch), c_void_p,
                        c_void_p]),
    "fngd_end_epoch": (_st, [Handle, c_void_p]),
    "fngd_get_loss_weights": (_st, [Handle, c_int, POINTER(c_int64), c_void_p, c_void_p]),
    "fngd_set_learning_rate": (_st, [Handle, c_float]),
    "fngd_get_stats": (_st, [Handle, POINTER(Stats)]),
    "fngd_get_coefficients": (_st, [Handle, c_int, c_int64, POINTER(c_int64),
                                    POINTER(c_float)]),
}

# Checkpoint entry points: bound when the library exports them (see has_checkpoint()).
_OPTIONAL_PROTOTYPES = {
    "fngd_state_size": (_st, [Handle, POINTER(c_size_t)]),
    "fngd_save_state": (_st, [Handle, c_void_p, c_size_t, POINTER(c_size_t)]),
    "fngd_load_state": (_st, [Handle, c_void_p, c_size_t]),
    "fngd_save_file": (_st, [Handle, c_char_p]),
    "fngd_load_file": (_st, [Handle, c_char_p]),
    # Coefficient import (fngd.distributed).
    "fngd_set_coefficients": (_st, [Handle, c_int, c_int64, POINTER(c_int64), POINTER(c_float)]),
    "fngd_get_num_coefficient_sets": (_st, [Handle, POINTER(c_int)]),
}

ALL_SETS = -1  # FNGD_ALL_SETS


class LibraryNotFoundError(ImportError):
    """libfngd.so could not be located or loaded."""


class FNGDError(RuntimeError):
    """A libfngd call failed; `status` is the fngd_status_t code, the message the library's."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def candidate_paths() -> list[str]:
    """Where the library is looked for, in order: $FNGD_LIBRARY (when set, the only candidate:
    an explicit choice never falls back silently), a copy packaged next to this module (what
    `pip install ./python` puts there, see python/setup.py), then <repo>/build*/libfngd.so
    (most recently built first; only exists when this module runs from a source checkout)."""
    out = []
    env = os.environ.get("FNGD_LIBRARY")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    out += sorted(glob.glob(os.path.join(here, "libfngd.so*")))
    builds = glob.glob(os.path.join(_repo_root(), "build*", "libfngd.so"))
    out += sorted(builds, key=os.path.getmtime, reverse=True)
    return out


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    for name, (res, args) in _PROTOTYPES.items():
        fn = getattr(lib, name)  # AttributeError: an incompatible (older) library
        fn.restype, fn.argtypes = res, args
    for name, (res, args) in _OPTIONAL_PROTOTYPES.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = res, args
    return lib


def _check_abi(lib: ctypes.CDLL) -> None:
    """The library reports sizeof() of its structs; a mismatch means this binding is stale."""
    cfg = Config()
    lib.fngd_config_init(ctypes.byref(cfg))
    desc = lib.fngd_linear_desc(1, 1, 0)
    for what, got, want in (("fngd_config_t", cfg.struct_size, ctypes.sizeof(Config)),
                            ("fngd_layer_desc_t", desc.struct_size, ctypes.sizeof(LayerDesc))):
        if got != want:
            raise LibraryNotFoundError(
                f"libfngd at {lib._name} has sizeof({what}) = {got}, the Python binding expects "
                f"{want}: the binding and the library are from different versions")


_LIB: ctypes.CDLL | None = None


def _needs_sanitizer_runtime(path: str) -> bool:
    """An ASan/TSan build names its runtime among the needed libraries; dlopen-ing it from a
    Python that was not started with that runtime preloaded aborts the process."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return b"libasan.so" in data or b"libtsan.so" in data


def load() -> ctypes.CDLL:
    """Load (once) and return the bound library; raises LibraryNotFoundError with the paths
    tried when no usable copy is found."""
    global _LIB
    if _LIB is not None:
        return _LIB
    tried = []
    for path in candidate_paths():
        if not os.path.exists(path):
            tried.append(f"{path} (does not exist)")
            continue
        if _needs_sanitizer_runtime(path):
            tried.append(f"{path} (built with a sanitizer: loading it would abort Python)")
            continue
        try:
            lib = _bind(ctypes.CDLL(path))
        except (OSError, AttributeError) as e:
            tried.append(f"{path} ({e})")
            continue
        _check_abi(lib)
        _LIB = lib
        return lib
    raise LibraryNotFoundError(
        "libfngd.so not found. Install the package with `pip install ./python` from the "
        "repository root (it builds and bundles the library), or build it (cmake -S . -B build "
        "-DFNGD_ENABLE_CUDA=OFF && cmake --build build) or point FNGD_LIBRARY at it. Tried: " +
        ("; ".join(tried) if tried else "no candidate (FNGD_LIBRARY unset, no packaged copy, "
                                        f"no {_repo_root()}/build*/libfngd.so)"))


def has_checkpoint(lib: ctypes.CDLL | None = None) -> bool:
    """Does the loaded library export the checkpoint API (fngd_state_size/save/load_state)?"""
    lib = lib or load()
    return all(hasattr(lib, n) for n in ("fngd_state_size", "fngd_save_state", "fngd_load_state"))


def status_string(status: int) -> str:
    return load().fngd_status_string(status).decode()


def check(status: int, handle=None, what: str = "") -> None:
    """Raise FNGDError carrying the library's last-error message when status != SUCCESS."""
    if status == SUCCESS:
        return
    lib = load()
    msg = (lib.fngd_get_last_error(handle) or b"").decode(errors="replace")
    prefix = f"{what}: " if what else ""
    raise FNGDError(status, f"{prefix}{status_string(status)} ({msg})" if msg
                    else f"{prefix}{status_string(status)}")
