"""FNGDPreconditioner: a drop-in FNGD preconditioner for torch models, backed by libfngd.

Usage (kfac-pytorch style; the user's optimizer does the update):

    pre = fngd.FNGDPreconditioner(model, num_samples=len(ds), max_batch=B, damping=1e-3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for epoch in range(E):
        for x, y, idx in loader:                      # fngd.IndexedDataset yields idx
            opt.zero_grad()
            out = model(x)
            if pre.needs_loss_weights:                # global mode, later epochs
                w = pre.loss_weights(idx)
                (w * F.cross_entropy(out, y, reduction="none")).mean().backward()
            else:
                F.cross_entropy(out, y).backward()
                pre.step(idx)                         # direction -> param.grad
            opt.step()
        pre.end_epoch()

What runs when (so that no weight gradient is computed twice):
- Capturing phases (every epoch in mode="layer", collect epochs in mode="global"): forward
  hooks record each preconditioned layer's input (xhat for norm layers) and a tensor hook on
  the layer's output records dL/dy. Autograd's own gradient of a preconditioned layer's
  parameters is useless there (libfngd overwrites .grad with the direction computed from the
  same inputs and output gradients), so with skip_weight_grad=True (default) the parameters'
  requires_grad is switched off for the duration of the module's forward: autograd then builds
  no weight-gradient node for it and back-propagates to the layer's input only. The flag is
  restored as soon as the module's forward returns. A layer whose input does not require grad
  (the first layer) keeps its weight-gradient node, or nothing upstream of the loss would
  require grad. After loss.backward(), .grad of those parameters is None until step().
- Global mode, reuse epochs: no hooks, no capture, no fngd_step. The weighted loss
  (w * per_sample_loss).mean() back-propagates to exactly the FNGD direction in one ordinary
  backward pass.
- Output gradients are captured with tensor hooks rather than register_full_backward_hook
  because the latter breaks on in-place operations after the module (ReLU(inplace=True) after
  BatchNorm2d, as in torchvision's ResNet); a tensor hook registered before an in-place op
  receives the gradient of the module's output as the module produced it.

Weight decay belongs in the torch optimizer (it is added to .grad after preconditioning, not
preconditioned). Parameters of modules that are not preconditioned keep their plain gradient.
"""

from __future__ import annotations

import ctypes

import torch
from torch import nn

from . import _lib
from . import layers as L
from ._lib import FNGDError

_MODES = {"layer": _lib.COEF_PER_LAYER, "global": _lib.COEF_GLOBAL}
_DAMPING = {"absolute": _lib.DAMPING_ABSOLUTE, "trace_relative": _lib.DAMPING_TRACE_RELATIVE}
_REDUCTION = {"mean": _lib.GRAD_MEAN_LOSS, "sum": _lib.GRAD_PER_SAMPLE}
_FALLBACK = {"stored_mean": _lib.FALLBACK_STORED_MEAN, "uniform": _lib.FALLBACK_UNIFORM}
_GRAM = {"auto": _lib.GRAM_AUTO, "materialize": _lib.GRAM_MATERIALIZE,
         "position": _lib.GRAM_POSITION}
_FILTER = {"none": _lib.FILTER_NONE, "range": _lib.FILTER_RANGE}
_STEP = {"none": _lib.STEP_NONE, "kl_clip": _lib.STEP_KL_CLIP, "graft": _lib.STEP_GRAFT}
_RHS = ("ones", "ief")
_STATE_FORMAT = 1


def _choice(name, value, table):
    if value not in table:
        raise ValueError(f"{name}={value!r}: expected one of {sorted(table)}")
    return table[value]


class _Capture:
    """One forward pass of one layer: its library input and (after backward) dL/dy.

    `a` may share storage with the module's input (no copy when it already is fp32 and
    contiguous). With the weight-gradient node skipped, autograd no longer saves that input,
    so its version check cannot catch an in-place change made after the layer ran; the version
    recorded here lets step() refuse such a stale input instead of using it silently."""
    __slots__ = ("a", "e", "version")

    def __init__(self, a):
        self.a = a
        self.e = None
        self.version = a._version


def _functorch_active() -> bool:
    """Inside torch.func transforms (vmap/grad of a functional_call of the model) the hooks
    must stay out of the way: no capture, no requires_grad toggling."""
    f = getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(f and f())


def _restore(layer):
    for p in layer.toggled:
        p.requires_grad_(True)
    layer.toggled = []


class _Layer:
    def __init__(self, name, module, kind):
        self.name, self.module, self.kind = name, module, kind
        self.params = [p for p in (module.weight, getattr(module, "bias", None)) if p is not None]
        self.captures: list[_Capture] = []
        self.geom: dict | None = None      # descriptor shape fields, fixed at handle creation
        self.buffers = None                # (grad_weight ptr, grad_bias ptr) last given to C
        self.toggled: list[nn.Parameter] = []
        self.staging: dict[int, torch.Tensor] = {}


class FNGDPreconditioner:
    """Writes the FNGD direction into .grad of every supported layer's parameters.

    Args:
        model: the module tree; Linear, Conv2d (groups=1), BatchNorm2d and LayerNorm (last
            dim) with trainable parameters are preconditioned.
        num_samples: size of the id space (len(dataset)); ids passed to step() are in
            [0, num_samples).
        max_batch: the largest batch passed to step().
        damping: lambda (absolute) or gamma (damping_kind="trace_relative"); None: the
            library's default (fngd_config_init). See the README's "Choosing damping and the
            learning rate".
        mode: "layer" (one coefficient set per layer) or "global" (one for the model).
        recompute_every: R; recollect coefficients every R epochs (0: only in epoch one).
        loss_reduction: "mean" if the loss back-propagated is the batch mean (default), "sum"
            if it is the sum of per-sample losses.
        fallback: coefficient of ids with none stored: "stored_mean" or "uniform".
        gram_method: "auto" (cost model), "materialize" or "position" for every layer.
        skip_weight_grad: stop autograd from computing the weight gradients that libfngd
            replaces (see the module docstring).
        unsupported: "error" raises UnsupportedLayerError for a module with trainable
            parameters that cannot be preconditioned; "skip" leaves it to plain gradients.
        modules: optional iterable of module names (as in model.named_modules()) to restrict
            preconditioning to.
        coef_filter: "range" keeps only the part of the coefficients that the Gram matrix
            acts on (stable reuse), "none" the paper's plain solve; None: library default.
        exact_small_layers: mode="layer": layers with at most max_batch parameters are solved
            exactly in every step, reuse epochs included; None: library default.
        step_control: "none", "kl_clip" (KFAC's trust region, needs lr) or "graft" (each
            layer's step as long as SGD's); None: library default.
        kl_clip: the bound of step_control="kl_clip"; None: library default.
        lr: the optimizer's learning rate for step_control="kl_clip" (the default): a float,
            a zero-argument callable, or the torch optimizer itself (its first param group's
            lr), read at every step. None: the library's learning_rate (0.1). When the clip
            is active the step length lr * nu * |delta| = sqrt(kl_clip / <delta, g>) does not
            depend on lr, so lr only decides when clipping starts.
        rhs: "ones" (FNGD) or "ief" (improved empirical Fisher: r_i = squared norm of sample
            i's gradient at the output of `ief_layer`, by default the last preconditioned
            layer, i.e. the logits of a classifier head).
    """

    def __init__(self, model: nn.Module, num_samples: int, max_batch: int, damping=None,
                 mode: str = "layer", recompute_every: int = 0,
                 damping_kind=None, loss_reduction: str = "mean",
                 fallback: str = "stored_mean", gram_method: str = "auto",
                 max_damping_retries: int = 8, damping_growth: float = 10.0,
                 check_finite: bool = True, max_workspace_bytes: int = 1 << 30,
                 skip_weight_grad: bool = True, unsupported: str = "error", modules=None,
                 coef_filter=None, exact_small_layers=None, step_control=None, kl_clip=None,
                 lr=None, rhs: str = "ones", ief_layer=None):
        self._lib = _lib.load()
        if num_samples < 1 or max_batch < 1:
            raise ValueError("num_samples and max_batch must be positive")
        if unsupported not in ("error", "skip"):
            raise ValueError("unsupported must be 'error' or 'skip'")
        if rhs not in _RHS:
            raise ValueError(f"rhs={rhs!r}: expected one of {list(_RHS)}")
        lib_defaults = _lib.Config()
        _lib.check(self._lib.fngd_config_init(ctypes.byref(lib_defaults)), None,
                   "fngd_config_init")
        names = {v: k for k, v in _DAMPING.items()}
        damping = lib_defaults.damping if damping is None else damping
        damping_kind = names[lib_defaults.damping_kind] if damping_kind is None else damping_kind
        coef_filter = ({v: k for k, v in _FILTER.items()}[lib_defaults.coef_filter]
                       if coef_filter is None else coef_filter)
        exact_small_layers = (bool(lib_defaults.exact_small_layers) if exact_small_layers is None
                              else exact_small_layers)
        step_control = ({v: k for k, v in _STEP.items()}[lib_defaults.step_control]
                        if step_control is None else step_control)
        kl_clip = lib_defaults.kl_clip if kl_clip is None else kl_clip
        if not (lr is None or callable(lr) or isinstance(lr, (int, float, torch.optim.Optimizer))):
            raise TypeError(f"lr must be a float, a callable or a torch optimizer, got {type(lr)}")
        self._lr = lr
        self.options = dict(num_samples=int(num_samples), max_batch=int(max_batch),
                            damping=float(damping), mode=mode,
                            recompute_every=int(recompute_every), damping_kind=damping_kind,
                            loss_reduction=loss_reduction, fallback=fallback,
                            gram_method=gram_method,
                            max_damping_retries=int(max_damping_retries),
                            damping_growth=float(damping_growth),
                            check_finite=bool(check_finite),
                            max_workspace_bytes=int(max_workspace_bytes),
                            coef_filter=coef_filter, exact_small_layers=bool(exact_small_layers),
                            step_control=step_control, kl_clip=float(kl_clip), rhs=rhs)
        self._config = self._make_config()  # validates the choices now, not at the first step
        self.skip_weight_grad = skip_weight_grad
        self.model = model
        self.layers = self._find_layers(model, unsupported, modules)
        if not self.layers:
            raise L.UnsupportedLayerError("the model has no layer FNGD can precondition")
        self._ief_layer = self._pick_ief_layer(ief_layer) if rhs == "ief" else None
        self._handle = None
        self._last_stream = None
        self._phase = _lib.PHASE_COLLECT
        self._hooks = []
        for layer in self.layers:
            self._hooks.append(layer.module.register_forward_pre_hook(self._make_pre_hook(layer)))
            self._hooks.append(layer.module.register_forward_hook(self._make_hook(layer)))

    # ---- set-up ---------------------------------------------------------------------------

    def _make_config(self) -> _lib.Config:
        o = self.options
        cfg = _lib.Config()
        _lib.check(self._lib.fngd_config_init(ctypes.byref(cfg)), None, "fngd_config_init")
        cfg.max_batch = o["max_batch"]
        cfg.num_samples = o["num_samples"]
        cfg.coef_mode = _choice("mode", o["mode"], _MODES)
        cfg.damping_kind = _choice("damping_kind", o["damping_kind"], _DAMPING)
        cfg.damping = o["damping"]
        cfg.max_damping_retries = o["max_damping_retries"]
        cfg.damping_growth = o["damping_growth"]
        cfg.recompute_every = o["recompute_every"]
        cfg.grad_convention = _choice("loss_reduction", o["loss_reduction"], _REDUCTION)
        cfg.fallback = _choice("fallback", o["fallback"], _FALLBACK)
        _choice("gram_method", o["gram_method"], _GRAM)
        cfg.output = _lib.OUTPUT_WRITE_GRAD
        cfg.check_finite = int(o["check_finite"])
        cfg.max_workspace_bytes = o["max_workspace_bytes"]
        cfg.coef_filter = _choice("coef_filter", o["coef_filter"], _FILTER)
        cfg.exact_small_layers = int(o["exact_small_layers"])
        cfg.step_control = _choice("step_control", o["step_control"], _STEP)
        cfg.kl_clip = o["kl_clip"]
        cfg.rhs = _lib.RHS_CUSTOM if o["rhs"] == "ief" else _lib.RHS_ONES
        # Everything else the library checks: fngd_create on a throwaway handle, so a bad
        # option fails here and not at the first step.
        h = _lib.Handle()
        _lib.check(self._lib.fngd_create(ctypes.byref(cfg), ctypes.byref(h)), None,
                   "FNGDPreconditioner options")
        self._lib.fngd_destroy(h)
        return cfg

    def _pick_ief_layer(self, name):
        """The layer whose output gradient gives iEF's per-sample right-hand side."""
        if name is None:
            return self.layers[-1]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"ief_layer={name!r} is not a preconditioned layer: "
                         f"{[l.name for l in self.layers]}")

    def _ief_rhs(self, e, n):
        """r_i = squared norm of sample i's per-sample gradient at the ief layer's output (its
        captured output gradient is of the mean loss with loss_reduction='mean': times N)."""
        scale = float(n) if self.options["loss_reduction"] == "mean" else 1.0
        return (e.reshape(n, -1).to(torch.float64) * scale).pow(2).sum(1).to(torch.float32)

    @staticmethod
    def _find_layers(model, unsupported, modules):
        wanted = set(modules) if modules is not None else None
        found, problems = [], []
        for name, m in model.named_modules():
            if wanted is not None and name not in wanted:
                continue
            own = [p for p in m.parameters(recurse=False)]
            trainable = [p for p in own if p.requires_grad]
            if not trainable:
                continue
            kind, reason = L.classify(m)
            if kind is not None and len(trainable) != len(own):
                kind, reason = None, "some of its parameters are frozen and others are not"
            if kind is None:
                problems.append(f"'{name or '<root>'}': {reason}")
                continue
            found.append(_Layer(name, m, kind))
        if wanted is not None:
            missing = wanted - {n for n, _ in model.named_modules()}
            if missing:
                raise ValueError(f"modules not in the model: {sorted(missing)}")
        if problems and unsupported == "error":
            raise L.UnsupportedLayerError(
                "FNGD cannot precondition these modules (pass unsupported='skip' to leave them "
                "to plain gradients, or modules=[...] to choose layers): " + "; ".join(problems))
        return found

    # ---- hooks ----------------------------------------------------------------------------

    @property
    def capturing(self) -> bool:
        """Hooks record inputs and output gradients (False in global mode's reuse epochs)."""
        return not self.needs_loss_weights

    def _make_pre_hook(self, layer):
        def pre_hook(module, args):
            _restore(layer)  # in case a previous forward of this module raised
            if not (self.capturing and self.skip_weight_grad and torch.is_grad_enabled()) \
                    or _functorch_active():
                return
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.requires_grad:
                layer.toggled = [p for p in layer.params if p.requires_grad]
                for p in layer.toggled:
                    p.requires_grad_(False)
        return pre_hook

    def _make_hook(self, layer):
        def hook(module, args, output):
            _restore(layer)
            if not (self.capturing and torch.is_grad_enabled()) or _functorch_active():
                return
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            cap = _Capture(L.capture_input(layer.kind, module, args[0]))
            layer.captures.append(cap)

            def grad_hook(g, cap=cap):
                cap.e = g.detach()
            output.register_hook(grad_hook)
        return hook

    def discard(self) -> None:
        """Drop everything captured since the last step (e.g. after an aborted iteration)."""
        for layer in self.layers:
            layer.captures = []
            _restore(layer)

    def remove_hooks(self) -> None:
        """Detach from the model (the preconditioner cannot step afterwards)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self.discard()

    # ---- state of the library -------------------------------------------------------------

    @property
    def needs_loss_weights(self) -> bool:
        """Global mode in a reuse epoch: use loss_weights() instead of step()."""
        return self.options["mode"] == "global" and self._phase == _lib.PHASE_REUSE

    @property
    def phase(self) -> str:
        return "collect" if self._phase == _lib.PHASE_COLLECT else "reuse"

    def _device(self) -> torch.device:
        devs = {p.device for layer in self.layers for p in layer.params}
        if len(devs) != 1:
            raise ValueError(f"preconditioned parameters live on several devices: {devs}")
        return devs.pop()

    def _stream(self, device):
        """PyTorch's current stream on `device` as an fngd_stream_t (None on CPU). A handle's
        calls share its workspace, and fngd.h leaves ordering calls made on different streams
        to the caller: when the current stream differs from the last one used, it first waits
        for the work already enqueued there."""
        if device.type != "cuda":
            return None
        s = torch.cuda.current_stream(device)
        last = self._last_stream
        if last is not None and last != s:
            s.wait_stream(last)
        self._last_stream = s
        return ctypes.c_void_p(s.cuda_stream)

    def _create_handle(self, device):
        cfg = _lib.Config.from_buffer_copy(self._config)
        if device.type == "cuda":
            avail = ctypes.c_int(0)
            self._lib.fngd_backend_available(_lib.BACKEND_CUDA, ctypes.byref(avail))
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
        _lib.check(self._lib.fngd_create(ctypes.byref(cfg), ctypes.byref(h)), None, "fngd_create")
        try:
            gm = _GRAM[self.options["gram_method"]]
            for i, layer in enumerate(self.layers):
                desc = L.make_desc(layer.geom, gm)
                _lib.check(self._lib.fngd_add_layer(h, ctypes.byref(desc), None), h,
                           f"fngd_add_layer({layer.name})")
                layer.buffers = None
        except Exception:
            self._lib.fngd_destroy(h)
            raise
        self._handle = h
        self._device_cached = device
        self._last_stream = None  # no work enqueued by this handle yet

    def close(self) -> None:
        """Free the library handle (also done when the object is garbage-collected)."""
        if getattr(self, "_handle", None) is not None:
            self._lib.fngd_destroy(self._handle)
            self._handle = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def stats(self) -> dict:
        """The library's counters and coefficient statistics (fngd_stats_t as a dict)."""
        if self._handle is None:
            return {"epoch": 0, "phase": "collect", "steps_total": 0, "steps_in_epoch": 0,
                    "factorizations": 0, "damping_retries": 0, "fallback_ids": 0,
                    "rejected_steps": 0, "coefs_stored": 0}
        s = _lib.Stats()
        s.struct_size = ctypes.sizeof(_lib.Stats)
        _lib.check(self._lib.fngd_get_stats(self._handle, ctypes.byref(s)), self._handle,
                   "fngd_get_stats")
        out = {name: getattr(s, name) for name, _ in _lib.Stats._fields_ if name != "struct_size"}
        out["phase"] = "collect" if s.phase == _lib.PHASE_COLLECT else "reuse"
        return out

    def gram_methods(self) -> dict:
        """Gram method the library chose per layer name ('materialize' or 'position')."""
        self._require_handle("gram_methods()")
        names = {v: k for k, v in _GRAM.items()}
        out = {}
        for i, layer in enumerate(self.layers):
            m = ctypes.c_int()
            _lib.check(self._lib.fngd_get_layer_gram_method(self._handle, i, ctypes.byref(m)),
                       self._handle)
            out[layer.name] = names[m.value]
        return out

    def coefficients(self, ids=None, set: int = 0) -> torch.Tensor:
        """Stored coefficients (alpha, not loss weights) of coefficient set `set` (layer index
        in mode='layer', 0 in mode='global') for `ids` (default: all); NaN where none stored."""
        self._require_handle("coefficients()")
        ids = (torch.arange(self.options["num_samples"], dtype=torch.int64) if ids is None
               else self._ids(ids, None))
        out = torch.empty(len(ids), dtype=torch.float32)
        _lib.check(self._lib.fngd_get_coefficients(
            self._handle, set, len(ids), self._id_ptr(ids),
            ctypes.cast(out.data_ptr(), ctypes.POINTER(ctypes.c_float))), self._handle,
            "fngd_get_coefficients")
        return out

    def _require_handle(self, what):
        if self._handle is None:
            raise RuntimeError(f"{what} called before the first step(): nothing is stored yet")

    # ---- training -------------------------------------------------------------------------

    @staticmethod
    def _ids(sample_ids, n):
        ids = torch.as_tensor(sample_ids).detach().to("cpu", torch.int64).reshape(-1).contiguous()
        if n is not None and ids.numel() != n:
            raise ValueError(f"sample_ids has {ids.numel()} entries, the batch has {n} samples")
        return ids

    @staticmethod
    def _id_ptr(ids):
        return ctypes.cast(ids.data_ptr(), ctypes.POINTER(ctypes.c_int64))

    def _gather(self):
        """The (input, grad_output) of every layer for this step, validated."""
        if any(c.e is not None for l in self.layers for c in l.captures):
            # Forward passes that no backward reached (evaluation with gradients enabled, an
            # aborted pass) are not part of this step: drop them rather than refuse the step.
            for l in self.layers:
                l.captures = [c for c in l.captures if c.e is not None]
        runs = {l.name: len(l.captures) for l in self.layers}
        if all(v == 0 for v in runs.values()):
            raise RuntimeError("step() called with nothing captured: run the forward pass with "
                               "gradients enabled and loss.backward() before step()")
        missing = [n for n, v in runs.items() if v == 0]
        if missing:
            raise RuntimeError(f"step(): these layers were not run in the forward pass since "
                               f"the last step (every preconditioned layer must take part in "
                               f"every step): {missing}")
        repeated = [n for n, v in runs.items() if v > 1]
        if repeated:
            raise RuntimeError(
                f"step(): these layers took part in more than one backward pass since the "
                f"last step: {repeated}. Shared modules and gradient accumulation are not "
                "supported: call step() after every backward pass")
        no_grad = [l.name for l in self.layers if l.captures[0].e is None]
        if no_grad:
            raise RuntimeError("step() called before loss.backward(): no output gradient for "
                               f"{no_grad}")
        sizes = {l.name: l.captures[0].a.shape[0] for l in self.layers}
        n = next(iter(sizes.values()))
        if any(v != n for v in sizes.values()):
            raise RuntimeError(f"layers saw different batch sizes: {sizes}")
        if n > self.options["max_batch"]:
            raise ValueError(f"batch of {n} samples exceeds max_batch={self.options['max_batch']}")
        return n

    def _geometries(self):
        out = []
        for l in self.layers:
            a = l.captures[0].a
            g = L.geometry(l.kind, l.module, a)
            if l.geom is not None and g != l.geom:
                raise ValueError(f"layer '{l.name}': input shape {tuple(a.shape[1:])} differs "
                                 f"from the one the preconditioner was set up with ({l.geom}); "
                                 "every step must use the same per-sample shape")
            out.append(g)
        return out

    def _grad_buffers(self, layer, replaced):
        """fp32 contiguous buffers the library writes into: param.grad itself when it can be,
        else a staging buffer copied into .grad after the step. Looked up anew every step, as
        optimizer.zero_grad(set_to_none=True) (or the user) may have dropped or swapped .grad.
        Each (param, previous .grad) it replaces is appended to `replaced`, so that a failed
        step can put back what was there instead of leaving uninitialised memory in .grad."""
        bufs = []
        for p in layer.params:
            g = p.grad
            usable = (g is not None and g.dtype == torch.float32 and g.is_contiguous()
                      and g.shape == p.shape and g.device == p.device)
            if not usable and p.dtype == torch.float32:
                replaced.append((p, g))
                p.grad = torch.empty(p.shape, dtype=torch.float32, device=p.device)
                usable = True
            if usable:
                layer.staging.pop(id(p), None)
                bufs.append(p.grad)
            else:
                buf = layer.staging.get(id(p))
                if buf is None:
                    buf = layer.staging[id(p)] = torch.empty(p.shape, dtype=torch.float32,
                                                             device=p.device)
                bufs.append(buf)
        return bufs

    def step(self, sample_ids=None, grad_scale=None) -> bool:
        """Write the FNGD direction of this batch into .grad of every preconditioned parameter.

        sample_ids: the data-set index of each sample in the batch (tensor or sequence of N
        ints; fngd.IndexedDataset provides them), or None to key coefficients by batch position
        (right only when every epoch visits the data in the same order).
        grad_scale: with fp16 loss scaling (torch.amp.GradScaler), the scale the loss was
        multiplied by (scaler.get_scale()); the captured output gradients are divided by it, so
        the direction is that of the true loss. Call scaler.unscale_(optimizer) before step()
        and scaler.step(optimizer) after. A batch whose scaled gradients overflowed (Inf/NaN) is
        then skipped: step() returns False, changes nothing, and scaler.step skips it too.
        Call after loss.backward() and before optimizer.step(). Returns True when the direction
        was written.
        """
        if not self._hooks:
            raise RuntimeError("step() after remove_hooks()")
        if self.needs_loss_weights:
            raise RuntimeError("mode='global' in a reuse epoch: no step() is needed; weight the "
                               "per-sample losses with loss_weights(ids) and back-propagate "
                               "(see needs_loss_weights)")
        replaced = []
        try:
            n = self._gather()
            ids = None if sample_ids is None else self._ids(sample_ids, n)
            geoms = self._geometries()
            device = self._device()
            if self._handle is None:
                for l, g in zip(self.layers, geoms):
                    l.geom = g
                self._create_handle(device)
            elif device != self._device_cached:
                raise RuntimeError(f"parameters moved from {self._device_cached} to {device} "
                                   "after the first step; create a new preconditioner")
            batches = (_lib.LayerBatch * len(self.layers))()
            keep = []
            for i, l in enumerate(self.layers):
                cap = l.captures[0]
                for what, t in (("input", cap.a), ("output gradient", cap.e)):
                    if t.device != device:
                        raise RuntimeError(f"layer '{l.name}': {what} on {t.device}, "
                                           f"parameters on {device}")
                if cap.a._version != cap.version:
                    raise RuntimeError(
                        f"layer '{l.name}': its input was modified in place after the layer "
                        "ran (its captured value is stale); make that operation out of place")
                e = cap.e.to(torch.float32).contiguous()
                if grad_scale is not None:  # the loss was scaled: back to the true gradients
                    e = e / float(grad_scale)
                keep.append(e)
                batches[i].input = cap.a.data_ptr()
                batches[i].grad_output = e.data_ptr()
                bufs = self._grad_buffers(l, replaced)
                ptrs = (bufs[0].data_ptr(), bufs[1].data_ptr() if len(bufs) > 1 else None)
                if ptrs != l.buffers:
                    _lib.check(self._lib.fngd_set_layer_buffers(
                        self._handle, i, None, None, ptrs[0], ptrs[1]), self._handle,
                        f"fngd_set_layer_buffers({l.name})")
                    l.buffers = ptrs
            rhs = None
            if self._ief_layer is not None:
                e = keep[self.layers.index(self._ief_layer)]
                rhs = self._ief_rhs(e, n).contiguous()
                keep.append(rhs)
            if self._lr is not None:
                lr = (self._lr.param_groups[0]["lr"] if isinstance(self._lr, torch.optim.Optimizer)
                      else self._lr() if callable(self._lr) else self._lr)
                _lib.check(self._lib.fngd_set_learning_rate(self._handle, float(lr)),
                           self._handle, "fngd_set_learning_rate")
            status = self._lib.fngd_step(self._handle, n,
                                         self._id_ptr(ids) if ids is not None else None,
                                         batches, ctypes.c_void_p(rhs.data_ptr()) if rhs is not None
                                         else None, self._stream(device))
            if status == _lib.ERROR_NONFINITE and grad_scale is not None:
                # An overflowed loss-scaled batch: GradScaler skips it as well.
                for p, g in reversed(replaced):
                    p.grad = g
                return False
            _lib.check(status, self._handle, "fngd_step")
            for l in self.layers:
                for p in l.params:
                    buf = l.staging.get(id(p))
                    if buf is not None:
                        if p.grad is None:
                            p.grad = torch.empty_like(p)
                        p.grad.copy_(buf)
            return True
        except BaseException:
            # fngd_step changes nothing on failure (fngd.h); neither does this method.
            for p, g in reversed(replaced):
                p.grad = g
            raise
        finally:
            self.discard()

    def end_epoch(self) -> None:
        """Close the epoch: the library switches to reuse (or back to collect every R epochs)."""
        self._require_handle("end_epoch()")
        self.discard()
        _lib.check(self._lib.fngd_end_epoch(self._handle, self._stream(self._device_cached)),
                   self._handle, "fngd_end_epoch")
        s = _lib.Stats()
        s.struct_size = ctypes.sizeof(_lib.Stats)
        _lib.check(self._lib.fngd_get_stats(self._handle, ctypes.byref(s)), self._handle)
        self._phase = s.phase

    def loss_weights(self, sample_ids) -> torch.Tensor:
        """Global mode, reuse epochs: per-sample loss weights w (N floats on the parameters'
        device) such that (w * per_sample_loss).mean() back-propagates to the FNGD direction."""
        if self.options["mode"] != "global":
            raise RuntimeError("loss_weights() needs mode='global' (per-layer coefficients "
                               "cannot be expressed as loss weights)")
        if not self.needs_loss_weights:
            raise RuntimeError("loss_weights() is for reuse epochs; this is a collect epoch: "
                               "back-propagate the plain loss and call step(ids)")
        ids = self._ids(sample_ids, None)
        if ids.numel() > self.options["max_batch"]:
            raise ValueError(f"{ids.numel()} ids exceed max_batch={self.options['max_batch']}")
        w = torch.empty(ids.numel(), dtype=torch.float32, device=self._device_cached)
        _lib.check(self._lib.fngd_get_loss_weights(self._handle, ids.numel(), self._id_ptr(ids),
                                                   ctypes.c_void_p(w.data_ptr()),
                                                   self._stream(self._device_cached)),
                   self._handle, "fngd_get_loss_weights")
        return w

    # ---- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue: options, layer geometry, the library's own state
        image (fngd_save_state: coefficient table, fallback means, epoch, phase, counters) and,
        for inspection, the coefficient table (num_sets x num_samples, NaN = none stored) and
        the statistics. `library_state` is None when libfngd lacks the checkpoint API."""
        sd = {"format": _STATE_FORMAT, "options": dict(self.options),
              "layers": [{"name": l.name, "kind": l.kind, "geometry": l.geom}
                         for l in self.layers],
              "library_state": None, "coefficients": None, "stats": None}
        if self._handle is None:
            return sd
        sd["stats"] = self.stats()
        nsets = len(self.layers) if self.options["mode"] == "layer" else 1
        sd["coefficients"] = torch.stack([self.coefficients(set=s) for s in range(nsets)])
        if _lib.has_checkpoint(self._lib):
            size = ctypes.c_size_t()
            _lib.check(self._lib.fngd_state_size(self._handle, ctypes.byref(size)), self._handle,
                       "fngd_state_size")
            buf = torch.empty(size.value, dtype=torch.uint8)
            written = ctypes.c_size_t()
            _lib.check(self._lib.fngd_save_state(self._handle, ctypes.c_void_p(buf.data_ptr()),
                                                 size.value, ctypes.byref(written)),
                       self._handle, "fngd_save_state")
            sd["library_state"] = buf[:written.value].clone()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        """Restore a state_dict() of a preconditioner built with the same options on the same
        architecture. The library validates the image; on any error nothing changes."""
        if sd.get("format") != _STATE_FORMAT:
            raise ValueError(f"state_dict format {sd.get('format')!r}, expected {_STATE_FORMAT}")
        if sd["options"] != self.options:
            diff = {k: (sd["options"].get(k), v) for k, v in self.options.items()
                    if sd["options"].get(k) != v}
            raise ValueError(f"state_dict options differ (saved, current): {diff}")
        saved = [(d["name"], d["kind"]) for d in sd["layers"]]
        mine = [(l.name, l.kind) for l in self.layers]
        if saved != mine:
            raise ValueError(f"state_dict layers {saved} do not match this model's {mine}")
        geoms = [d["geometry"] for d in sd["layers"]]
        if any(g is None for g in geoms):
            # Saved before the first step: nothing but the options.
            self.close()
            for l in self.layers:
                l.geom, l.buffers = None, None
            self._phase = _lib.PHASE_COLLECT
            return
        if sd["library_state"] is None or not _lib.has_checkpoint(self._lib):
            raise FNGDError(_lib.ERROR_NOT_SUPPORTED,
                            "cannot restore the coefficient table: "
                            + ("the state_dict has no library_state"
                               if sd["library_state"] is None
                               else "this libfngd lacks fngd_load_state"))
        old = (self._handle, [l.geom for l in self.layers], [l.buffers for l in self.layers],
               getattr(self, "_device_cached", None), self._last_stream)
        self._handle = None
        try:
            for l, g in zip(self.layers, geoms):
                l.geom = dict(g)
            self._create_handle(self._device())
            img = sd["library_state"].to("cpu", torch.uint8).contiguous()
            _lib.check(self._lib.fngd_load_state(self._handle, ctypes.c_void_p(img.data_ptr()),
                                                 img.numel()), self._handle, "fngd_load_state")
        except Exception:
            self.close()
            self._handle = old[0]
            for l, g, b in zip(self.layers, old[1], old[2]):
                l.geom, l.buffers = g, b
            self._device_cached, self._last_stream = old[3], old[4]
            raise
        if old[0] is not None:
            self._lib.fngd_destroy(old[0])
        self.discard()
        s = _lib.Stats()
        s.struct_size = ctypes.sizeof(_lib.Stats)
        _lib.check(self._lib.fngd_get_stats(self._handle, ctypes.byref(s)), self._handle)
        self._phase = s.phase
