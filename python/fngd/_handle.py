"""The only caller of libfngd's fngd_* functions: configuration, handle lifecycle, the step,
epochs, statistics, coefficients and checkpoints. Everything else in the package works with
torch tensors and calls in here; fngd._lib only describes the C ABI."""

from __future__ import annotations

import ctypes

import torch

from . import _lib
from . import _options as O
from ._lib import FNGDError

_CUDA_STREAM_LEGACY = 1  # cudaStreamLegacy in cuda_runtime_api.h


def _load():
    return _lib.load()


def library_version() -> tuple[int, int, int]:
    v = [ctypes.c_int() for _ in range(3)]
    _load().fngd_get_version(*(ctypes.byref(x) for x in v))
    return tuple(x.value for x in v)


def default_config() -> _lib.Config:
    """fngd_config_init's defaults."""
    cfg = _lib.Config()
    _lib.check(_load().fngd_config_init(ctypes.byref(cfg)), None, "fngd_config_init")
    return cfg


def build_config(o: dict) -> _lib.Config:
    """The fngd_config_t of checked options (fngd._options.resolve), validated by the library
    itself on a throwaway handle, so that a bad option fails now and not at the first step."""
    cfg = default_config()
    cfg.max_batch = o["max_batch"]
    cfg.num_samples = o["num_samples"]
    cfg.coef_mode = O.MODES[o["mode"]]
    cfg.damping_kind = O.DAMPING[o["damping_kind"]]
    cfg.damping = o["damping"]
    cfg.max_damping_retries = o["max_damping_retries"]
    cfg.damping_growth = o["damping_growth"]
    cfg.recompute_every = o["recompute_every"]
    cfg.grad_convention = O.REDUCTION[o["loss_reduction"]]
    cfg.fallback = O.FALLBACK[o["fallback"]]
    cfg.output = _lib.OUTPUT_WRITE_GRAD
    cfg.check_finite = int(o["check_finite"])
    cfg.max_workspace_bytes = o["max_workspace_bytes"]
    cfg.coef_filter = O.FILTER[o["coef_filter"]]
    cfg.exact_small_layers = int(o["exact_small_layers"])
    cfg.step_control = O.STEP[o["step_control"]]
    cfg.kl_clip = o["kl_clip"]
    cfg.rhs = O.RHS[o["rhs"]]
    lib = _load()
    h = _lib.Handle()
    _lib.check(lib.fngd_create(ctypes.byref(cfg), ctypes.byref(h)), None,
               "FNGDPreconditioner options")
    lib.fngd_destroy(h)
    return cfg


class Descriptors:
    """The library's descriptor helpers (new fields get their defaults from the library)."""

    def __init__(self, gram_method: int):
        self.lib, self.gram_method = _load(), gram_method

    def _done(self, d):
        d.gram_method = self.gram_method
        return d

    def linear(self, in_features, out_features, has_bias):
        return self._done(self.lib.fngd_linear_desc(in_features, out_features, has_bias))

    def conv2d(self, cin, cout, in_h, in_w, kh, kw, has_bias):
        return self._done(self.lib.fngd_conv2d_desc(cin, cout, in_h, in_w, kh, kw, has_bias))

    def norm_affine(self, num_features, positions, has_bias):
        return self._done(self.lib.fngd_norm_affine_desc(num_features, positions, has_bias))

    def embedding(self, num_embeddings, embedding_dim, tokens):
        return self._done(self.lib.fngd_embedding_desc(num_embeddings, embedding_dim, tokens))


def _ids_ptr(ids):
    return ctypes.cast(ids.data_ptr(), ctypes.POINTER(ctypes.c_int64))


def _stats_dict(s) -> dict:
    out = {name: getattr(s, name) for name, _ in _lib.Stats._fields_ if name != "struct_size"}
    out["phase"] = "collect" if s.phase == _lib.PHASE_COLLECT else "reuse"
    return out


EMPTY_STATS = {"epoch": 0, "phase": "collect", "steps_total": 0, "steps_in_epoch": 0,
               "factorizations": 0, "damping_retries": 0, "fallback_ids": 0,
               "rejected_steps": 0, "coefs_stored": 0}


class Handle:
    """One fngd_handle_t on the backend of `device` with the given layers, plus the per-step
    argument block: the LayerBatch array is built once and its pointers refreshed in place."""

    def __init__(self, config: _lib.Config, layers, gram: str, device: torch.device):
        self.lib = lib = _load()
        cfg = _lib.Config.from_buffer_copy(config)
        if device.type == "cuda":
            avail = ctypes.c_int(0)
            lib.fngd_backend_available(_lib.BACKEND_CUDA, ctypes.byref(avail))
            if not avail.value:
                raise FNGDError(_lib.ERROR_NOT_SUPPORTED,
                                "parameters are on CUDA but this libfngd has no usable CUDA "
                                "backend (built with FNGD_ENABLE_CUDA=OFF, or no device)")
            cfg.backend = _lib.BACKEND_CUDA
            cfg.device = device.index if device.index is not None else torch.cuda.current_device()
        elif device.type == "cpu":
            cfg.backend = _lib.BACKEND_CPU
        else:
            raise ValueError(f"unsupported device {device}")
        h = _lib.Handle()
        _lib.check(lib.fngd_create(ctypes.byref(cfg), ctypes.byref(h)), None, "fngd_create")
        try:
            descs = Descriptors(O.GRAM[gram])
            for layer in layers:
                desc = layer.helper.descriptor(layer.geom, descs)
                _lib.check(lib.fngd_add_layer(h, ctypes.byref(desc), None), h,
                           f"fngd_add_layer({layer.name})")
                layer.buffers = None
        except Exception:
            lib.fngd_destroy(h)
            raise
        self.h, self.device, self.num_layers = h, device, len(layers)
        self.batches = (_lib.LayerBatch * len(layers))()
        self.last_stream = None  # no work enqueued by this handle yet

    def destroy(self) -> None:
        if self.h is not None:
            self.lib.fngd_destroy(self.h)
            self.h = None

    def _check(self, status, what):
        if status != _lib.SUCCESS:
            _lib.check(status, self.h, what)

    def stream(self):
        """PyTorch's current stream on the handle's device as an fngd_stream_t (None on CPU).
        A handle's calls share its workspace, and fngd.h leaves ordering calls made on
        different streams to the caller: when the current stream differs from the last one
        used, it first waits for the work already enqueued there."""
        if self.device.type != "cuda":
            return None
        s = torch.cuda.current_stream(self.device)
        last = self.last_stream
        if last is not None and last != s:
            s.wait_stream(last)
        self.last_stream = s
        # PyTorch's default stream has handle 0, which means the legacy default stream there;
        # to libfngd NULL means the per-thread default stream, so pass cudaStreamLegacy (0x1).
        return ctypes.c_void_p(s.cuda_stream or _CUDA_STREAM_LEGACY)

    def set_layer_buffers(self, i, grad_weight, grad_bias, name):
        self._check(self.lib.fngd_set_layer_buffers(self.h, i, None, None, grad_weight,
                                                    grad_bias),
                    f"fngd_set_layer_buffers({name})")

    def set_learning_rate(self, lr: float) -> None:
        self._check(self.lib.fngd_set_learning_rate(self.h, lr), "fngd_set_learning_rate")

    def step(self, n, ids, rhs) -> int:
        """fngd_step on self.batches (pointers set by the caller); returns the status, raising
        FNGDError for every failure but ERROR_NONFINITE (the caller decides about that one)."""
        status = self.lib.fngd_step(self.h, n, None if ids is None else _ids_ptr(ids),
                                    self.batches,
                                    None if rhs is None else ctypes.c_void_p(rhs.data_ptr()),
                                    self.stream())
        if status != _lib.SUCCESS and status != _lib.ERROR_NONFINITE:
            _lib.check(status, self.h, "fngd_step")
        return status

    def raise_for(self, status, what="fngd_step"):
        _lib.check(status, self.h, what)

    def end_epoch(self) -> int:
        """fngd_end_epoch; returns the new phase."""
        self._check(self.lib.fngd_end_epoch(self.h, self.stream()), "fngd_end_epoch")
        return self.raw_stats().phase

    def loss_weights(self, ids) -> torch.Tensor:
        w = torch.empty(ids.numel(), dtype=torch.float32, device=self.device)
        self._check(self.lib.fngd_get_loss_weights(self.h, ids.numel(), _ids_ptr(ids),
                                                   ctypes.c_void_p(w.data_ptr()),
                                                   self.stream()),
                    "fngd_get_loss_weights")
        return w

    def raw_stats(self) -> _lib.Stats:
        s = _lib.Stats()
        s.struct_size = ctypes.sizeof(_lib.Stats)
        self._check(self.lib.fngd_get_stats(self.h, ctypes.byref(s)), "fngd_get_stats")
        return s

    def stats(self) -> dict:
        return _stats_dict(self.raw_stats())

    def gram_method(self, i) -> int:
        m = ctypes.c_int()
        self._check(self.lib.fngd_get_layer_gram_method(self.h, i, ctypes.byref(m)),
                    "fngd_get_layer_gram_method")
        return m.value

    def coefficients(self, set_index, ids) -> torch.Tensor:
        out = torch.empty(len(ids), dtype=torch.float32)
        self._check(self.lib.fngd_get_coefficients(
            self.h, set_index, len(ids), _ids_ptr(ids),
            ctypes.cast(out.data_ptr(), ctypes.POINTER(ctypes.c_float))),
            "fngd_get_coefficients")
        return out

    def num_coefficient_sets(self) -> int:
        n = ctypes.c_int()
        self._check(self.lib.fngd_get_num_coefficient_sets(self.h, ctypes.byref(n)),
                    "fngd_get_num_coefficient_sets")
        return n.value

    def coefficients_all(self, ids) -> torch.Tensor:
        """Every coefficient set of `ids` (host int64): len(ids) x nsets, NaN = none stored."""
        out = torch.empty(len(ids), self.num_coefficient_sets(), dtype=torch.float32)
        self._check(self.lib.fngd_get_coefficients(
            self.h, _lib.ALL_SETS, len(ids), _ids_ptr(ids),
            ctypes.cast(out.data_ptr(), ctypes.POINTER(ctypes.c_float))),
            "fngd_get_coefficients")
        return out

    def set_coefficients_all(self, ids, values) -> None:
        """fngd_set_coefficients of every set: ids host int64 (distinct), values len x nsets."""
        ids = ids.to("cpu", torch.int64).contiguous()
        values = values.to("cpu", torch.float32).contiguous()
        if not hasattr(self.lib, "fngd_set_coefficients"):
            raise FNGDError(_lib.ERROR_NOT_SUPPORTED,
                            "this libfngd lacks fngd_set_coefficients (rebuild it)")
        self._check(self.lib.fngd_set_coefficients(
            self.h, _lib.ALL_SETS, len(ids), _ids_ptr(ids),
            ctypes.cast(values.data_ptr(), ctypes.POINTER(ctypes.c_float))),
            "fngd_set_coefficients")

    @staticmethod
    def has_checkpoint() -> bool:
        return _lib.has_checkpoint(_load())

    def save_state(self) -> torch.Tensor:
        """The library's checkpoint image (fngd_save_state) as a uint8 tensor."""
        size = ctypes.c_size_t()
        self._check(self.lib.fngd_state_size(self.h, ctypes.byref(size)), "fngd_state_size")
        buf = torch.empty(size.value, dtype=torch.uint8)
        written = ctypes.c_size_t()
        self._check(self.lib.fngd_save_state(self.h, ctypes.c_void_p(buf.data_ptr()), size.value,
                                             ctypes.byref(written)), "fngd_save_state")
        return buf[:written.value].clone()

    def load_state(self, image: torch.Tensor) -> None:
        img = image.to("cpu", torch.uint8).contiguous()
        self._check(self.lib.fngd_load_state(self.h, ctypes.c_void_p(img.data_ptr()),
                                             img.numel()), "fngd_load_state")
