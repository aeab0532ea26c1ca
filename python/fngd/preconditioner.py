"""FNGDPreconditioner: a drop-in FNGD preconditioner for torch models, backed by libfngd.

Usage (kfac-pytorch style; the user's optimizer does the update):

    pre = fngd.FNGDPreconditioner(model, num_samples=len(ds), max_batch=B, lr=opt)
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

The package is split as kfac-pytorch splits its own: fngd._handle is the only caller of libfngd
(config, handle, step, stats, checkpoints), fngd._capture holds the hooks (what runs in the
forward and backward passes, and why no weight gradient is computed twice), fngd.layers has
one helper class per module kind (descriptor geometry, input capture including xhat), and
fngd._options checks the constructor's arguments; this module ties them together. Global
mode's reuse epochs capture nothing and call no fngd_step: the weighted loss
(w * per_sample_loss).mean() back-propagates to exactly the FNGD direction. Weight decay
belongs in the torch optimizer (added to .grad after preconditioning, not preconditioned).
Parameters of modules that are not preconditioned keep their plain gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from . import _handle
from . import _lib
from . import _options as O
from . import layers as L
from ._capture import Hooks
from ._lib import FNGDError

_STATE_FORMAT = 1
_CLOSED = ("this FNGDPreconditioner is closed: close() freed its library handle (the stored "
           "coefficients with it) and removed its hooks; create a new one")


class FNGDPreconditioner:
    """Writes the FNGD direction into .grad of every supported layer's parameters.

    Args:
        model: the module tree; Linear, Conv2d (groups=1), BatchNorm2d and LayerNorm (last
            dim) with trainable parameters are preconditioned.
        num_samples: size of the id space (len(dataset)); ids passed to step() are in
            [0, num_samples).
        max_batch: the largest batch passed to step() (at most 65536).
        damping: lambda (absolute) or gamma (damping_kind="trace_relative"), finite and >= 0;
            None: the library's default (fngd_config_init). See the README's "Choosing damping
            and the learning rate".
        mode: "layer" (one coefficient set per layer) or "global" (one for the model).
        recompute_every: R >= 0; recollect coefficients every R epochs (0: only in epoch one).
        loss_reduction: "mean" if the loss back-propagated is the batch mean (default), "sum"
            if it is the sum of per-sample losses.
        fallback: coefficient of ids with none stored: "stored_mean" or "uniform".
        gram_method: "auto" (cost model), "materialize" or "position" for every layer.
        max_damping_retries (0..64), damping_growth (> 1): the retry ladder when a Cholesky
            factorisation fails; check_finite (bool): refuse batches with NaN/Inf;
            max_workspace_bytes (> 0): memory the Gram cost model may plan for.
        skip_weight_grad: stop autograd from computing the weight gradients that libfngd
            replaces (see fngd._capture).
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
        kl_clip: the bound of step_control="kl_clip" (finite, > 0); None: library default.
        lr: the optimizer's learning rate for step_control="kl_clip" (the default): a float,
            a zero-argument callable, or the torch optimizer itself (its first param group's
            lr), read at every step. None: the library's learning_rate (0.1). When the clip
            is active the step length lr * nu * |delta| = sqrt(kl_clip / <delta, g>) does not
            depend on lr, so lr only decides when clipping starts.
        rhs: "ones" (FNGD) or "ief" (improved empirical Fisher: r_i = squared norm of sample
            i's gradient at the output of `ief_layer`, by default the last preconditioned
            layer, i.e. the logits of a classifier head).
        distributed: False, True (default process group) or a ProcessGroup: data-parallel
            FNGD on torch.distributed, see fngd/distributed.py (pre.distributed).

    Every argument is checked here (type and range, then the library's own validation), so
    that a bad option fails at construction and not at the first step. After close(), every
    method refuses with one RuntimeError.
    """

    def __init__(self, model: nn.Module, num_samples: int, max_batch: int, damping=None,
                 mode: str = "layer", recompute_every: int = 0,
                 damping_kind=None, loss_reduction: str = "mean",
                 fallback: str = "stored_mean", gram_method: str = "auto",
                 max_damping_retries: int = 8, damping_growth: float = 10.0,
                 check_finite: bool = True, max_workspace_bytes: int = 1 << 30,
                 skip_weight_grad: bool = True, unsupported: str = "error", modules=None,
                 coef_filter=None, exact_small_layers=None, step_control=None, kl_clip=None,
                 lr=None, rhs: str = "ones", ief_layer=None, distributed=False):
        self._closed, self._handle, self._hooks = False, None, None
        self.distributed = None  # fngd.distributed.DataParallel with distributed=True
        args = dict(locals())
        for k in ("self", "model", "__class__", "distributed"):
            args.pop(k, None)
        self.options = O.resolve(model, _handle.default_config(), **args)
        self._lr = O.learning_rate(lr)
        self._config = _handle.build_config(self.options)
        self.skip_weight_grad = skip_weight_grad
        self.model = model
        self.layers = L.find_layers(model, unsupported, modules)
        self._ief_layer = self._pick_ief_layer(ief_layer) if rhs == "ief" else None
        self._device_cached = None
        self._phase = _lib.PHASE_COLLECT
        self._hooks = Hooks(self.layers, skip_weight_grad)
        if distributed is not False and distributed is not None:
            from .distributed import DataParallel  # data-parallel FNGD (fngd/distributed.py)
            self.distributed = DataParallel(self, distributed)

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

    # ---- state ----------------------------------------------------------------------------

    def _check_open(self, what):
        if self._closed:
            raise RuntimeError(f"{what}: {_CLOSED}")

    @property
    def closed(self) -> bool:
        """close() was called: the preconditioner can do nothing any more."""
        return self._closed

    @property
    def needs_loss_weights(self) -> bool:
        """Global mode in a reuse epoch: use loss_weights() instead of step()."""
        self._check_open("needs_loss_weights")
        return self.options["mode"] == "global" and self._phase == _lib.PHASE_REUSE

    @property
    def capturing(self) -> bool:
        """Hooks record inputs and output gradients (False in global mode's reuse epochs)."""
        return not self.needs_loss_weights

    @property
    def phase(self) -> str:
        self._check_open("phase")
        return "collect" if self._phase == _lib.PHASE_COLLECT else "reuse"

    def _set_phase(self, phase):
        self._phase = phase
        self._hooks.set_capturing(not self.needs_loss_weights)

    def _device(self) -> torch.device:
        devs = {p.device for layer in self.layers for p in layer.params}
        if len(devs) != 1:
            raise ValueError(f"preconditioned parameters live on several devices: {devs}")
        return devs.pop()

    def _create_handle(self, device):
        self._handle = _handle.Handle(self._config, self.layers, self.options["gram_method"],
                                      device)
        self._device_cached = device

    def _drop_handle(self):
        if self._handle is not None:
            self._handle.destroy()
            self._handle = None

    def close(self) -> None:
        """Free the library handle and detach the hooks (also done when the object is
        garbage-collected). Every later call refuses; close() itself may be repeated."""
        if getattr(self, "_closed", True):
            return
        self._drop_handle()
        if self._hooks is not None:
            self._hooks.remove()
        self._closed = True

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def stats(self) -> dict:
        """The library's counters and coefficient statistics (fngd_stats_t as a dict)."""
        self._check_open("stats()")
        return dict(_handle.EMPTY_STATS) if self._handle is None else self._handle.stats()

    def gram_methods(self) -> dict:
        """Gram method the library chose per layer name ('materialize' or 'position')."""
        self._require_handle("gram_methods()")
        names = {v: k for k, v in O.GRAM.items()}
        return {l.name: names[self._handle.gram_method(i)] for i, l in enumerate(self.layers)}

    def coefficients(self, ids=None, set: int = 0) -> torch.Tensor:
        """Stored coefficients (alpha, not loss weights) of coefficient set `set` (layer index
        in mode='layer', 0 in mode='global') for `ids` (default: all); NaN where none stored."""
        self._require_handle("coefficients()")
        ids = (torch.arange(self.options["num_samples"], dtype=torch.int64) if ids is None
               else O.sample_ids(ids))
        return self._handle.coefficients(O.integer("set", set, 0, 2**31 - 1, ">= 0"), ids)

    def _require_handle(self, what):
        self._check_open(what)
        if self._handle is None:
            raise RuntimeError(f"{what} called before the first step(): nothing is stored yet")

    # ---- hooks ----------------------------------------------------------------------------

    def discard(self) -> None:
        """Drop everything captured since the last step (e.g. after an aborted iteration)."""
        if self._hooks is not None:
            self._hooks.discard()

    def remove_hooks(self) -> None:
        """Detach from the model (the preconditioner cannot step afterwards)."""
        self._check_open("remove_hooks()")
        self._hooks.remove()

    # ---- training -------------------------------------------------------------------------

    def _check_layer(self, l, a, e, dev):
        """Everything step() refuses about one layer's capture (the slow path of the checks)."""
        if dev != self._device():
            raise RuntimeError(f"parameters moved from {dev} to {self._device()} after the "
                               "first step; create a new preconditioner")
        for what, t in (("input", a), ("output gradient", e)):
            if t.device != dev:
                raise RuntimeError(f"layer '{l.name}': {what} on {t.device}, parameters on "
                                   f"{dev}")

    def step(self, sample_ids=None, grad_scale=None) -> bool:
        """Write the FNGD direction of this batch into .grad of every preconditioned parameter.

        sample_ids: the data-set index of each sample in the batch (a 1-D integer tensor on any
        device, NumPy array or sequence of N ints; fngd.IndexedDataset provides them), or None
        to key coefficients by batch position (right only when every epoch visits the data in
        the same order). Float, bool and multi-dimensional ids are refused.
        grad_scale: with fp16 loss scaling (torch.amp.GradScaler), the scale the loss was
        multiplied by (scaler.get_scale()); the captured output gradients are divided by it, so
        the direction is that of the true loss. Call scaler.unscale_(optimizer) before step()
        and scaler.step(optimizer) after. A batch whose scaled gradients overflowed (Inf/NaN) is
        then skipped: step() returns False, changes nothing, and scaler.step skips it too.
        Call after loss.backward() and before optimizer.step(). Returns True when the direction
        was written.
        """
        self._check_open("step()")
        if not self._hooks:
            raise RuntimeError("step() after remove_hooks()")
        if self.needs_loss_weights and self.distributed is not None:
            return self.distributed.reuse_step(sample_ids)  # global reuse: only average
        if self.needs_loss_weights:
            raise RuntimeError("mode='global' in a reuse epoch: no step() is needed; weight the "
                               "per-sample losses with loss_weights(ids) and back-propagate "
                               "(see needs_loss_weights)")
        replaced = []
        try:
            n = self._hooks.gather(self.options["max_batch"])
            ids = None if sample_ids is None else O.sample_ids(sample_ids, n)
            if self.distributed is not None:
                self.distributed.before_step(n, ids)
            if self._handle is None:
                device = self._device()
                for l in self.layers:
                    a = l.captures[0].a
                    l.fix_geometry(l.helper.geometry(l.module, a))
                    l.sample_shape = a.shape[1:]
                self._create_handle(device)
            h = self._handle
            dev, batches, f32 = h.device, h.batches, torch.float32
            for i, l in enumerate(self.layers):
                cap = l.captures[0]
                a, e = cap.a, cap.e
                if a.device != dev or e.device != dev:
                    self._check_layer(l, a, e, dev)
                if a._version != cap.version:
                    raise RuntimeError(
                        f"layer '{l.name}': its input was modified in place after the layer "
                        "ran (its captured value is stale); make that operation out of place")
                if a.shape[1:] != l.sample_shape:
                    l.check_shape(a)
                if e.dtype != f32 or not e.is_contiguous():
                    e = e.to(f32).contiguous()
                if grad_scale is not None:  # the loss was scaled: back to the true gradients
                    e = e / float(grad_scale)
                cap.e = e  # kept alive until discard(), after the call
                b = batches[i]
                b.input, b.grad_output = a.data_ptr(), e.data_ptr()
                ptrs = l.grad_ptrs(replaced)
                if ptrs != l.buffers:
                    h.set_layer_buffers(i, ptrs[0], ptrs[1], l.name)
                    l.buffers = ptrs
            rhs = None
            if self._ief_layer is not None:
                rhs = self._ief_rhs(self._ief_layer.captures[0].e, n).contiguous()
            if self._lr is not None:
                h.set_learning_rate(O.current_lr(self._lr))
            if dev.type == "cuda":
                self._record_stream(rhs)
            status = h.step(n, ids, rhs)
            if status != _lib.SUCCESS:  # non-finite input
                if grad_scale is not None:  # an overflowed loss-scaled batch: GradScaler
                    for p, g in reversed(replaced):  # skips it as well
                        p.grad = g
                    return False
                h.raise_for(status)
            for l in self.layers:
                if l.staging:
                    l.copy_staged()
            if self.distributed is not None:
                self.distributed.after_step(n, ids, self._phase == _lib.PHASE_COLLECT)
            return True
        except BaseException:
            # fngd_step changes nothing on failure (fngd.h); neither does this method.
            for p, g in reversed(replaced):
                p.grad = g
            raise
        finally:
            self._hooks.discard()

    def _record_stream(self, rhs):
        """The library reads these tensors on PyTorch's current stream: tell the caching
        allocator, so that memory allocated on another stream (a capture made on a side
        stream, .grad created elsewhere) is not reused before that work is done."""
        s = torch.cuda.current_stream(self._handle.device)
        for l in self.layers:
            cap = l.captures[0]
            cap.a.record_stream(s)
            cap.e.record_stream(s)
            for p in l.params:
                if p.grad is not None:
                    p.grad.record_stream(s)
        if rhs is not None:
            rhs.record_stream(s)

    def end_epoch(self) -> None:
        """Close the epoch: the library switches to reuse (or back to collect every R epochs)."""
        self._require_handle("end_epoch()")
        self.discard()
        if self.distributed is not None:
            self.distributed.before_end_epoch(self._phase == _lib.PHASE_COLLECT)
        self._set_phase(self._handle.end_epoch())

    def loss_weights(self, sample_ids) -> torch.Tensor:
        """Global mode, reuse epochs: per-sample loss weights w (N floats on the parameters'
        device) such that (w * per_sample_loss).mean() back-propagates to the FNGD direction."""
        self._check_open("loss_weights()")
        if self.options["mode"] != "global":
            raise RuntimeError("loss_weights() needs mode='global' (per-layer coefficients "
                               "cannot be expressed as loss weights)")
        if not self.needs_loss_weights:
            raise RuntimeError("loss_weights() is for reuse epochs; this is a collect epoch: "
                               "back-propagate the plain loss and call step(ids)")
        ids = O.sample_ids(sample_ids)
        if ids.numel() > self.options["max_batch"]:
            raise ValueError(f"{ids.numel()} ids exceed max_batch={self.options['max_batch']}")
        return self._handle.loss_weights(ids)

    # ---- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue: options, layer geometry, the library's own state
        image (fngd_save_state: coefficient table, fallback means, epoch, phase, counters) and,
        for inspection, the coefficient table (num_sets x num_samples, NaN = none stored) and
        the statistics. `library_state` is None when libfngd lacks the checkpoint API."""
        self._check_open("state_dict()")
        sd = {"format": _STATE_FORMAT, "options": dict(self.options),
              "layers": [{"name": l.name, "kind": l.kind, "geometry": l.geom}
                         for l in self.layers],
              "library_state": None, "coefficients": None, "stats": None}
        if self._handle is None:
            return sd
        sd["stats"] = self.stats()
        nsets = len(self.layers) if self.options["mode"] == "layer" else 1
        sd["coefficients"] = torch.stack([self.coefficients(set=s) for s in range(nsets)])
        if self._handle.has_checkpoint():
            sd["library_state"] = self._handle.save_state()
        return sd

    def load_state_dict(self, sd: dict) -> None:
        """Restore a state_dict() of a preconditioner built with the same options on the same
        architecture. The library validates the image; on any error nothing changes."""
        self._check_open("load_state_dict()")
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
            self._drop_handle()
            for l in self.layers:
                l.fix_geometry(None)
            self._set_phase(_lib.PHASE_COLLECT)
            return
        if sd["library_state"] is None or not _handle.Handle.has_checkpoint():
            raise FNGDError(_lib.ERROR_NOT_SUPPORTED,
                            "cannot restore the coefficient table: "
                            + ("the state_dict has no library_state"
                               if sd["library_state"] is None
                               else "this libfngd lacks fngd_load_state"))
        old = (self._handle, [(l.geom, l.buffers, l.sample_shape) for l in self.layers],
               self._device_cached)
        self._handle = None
        try:
            for l, g in zip(self.layers, geoms):
                l.fix_geometry(g)
                l.sample_shape = None  # checked against the geometry at the next step
            self._create_handle(self._device())
            self._handle.load_state(sd["library_state"])
        except Exception:
            self._drop_handle()
            self._handle = old[0]
            for l, (g, b, s) in zip(self.layers, old[1]):
                l.geom, l.buffers, l.sample_shape = g, b, s
            self._device_cached = old[2]
            raise
        if old[0] is not None:
            old[0].destroy()
        self.discard()
        self._set_phase(self._handle.raw_stats().phase)
        if self.distributed is not None:
            self.distributed.reset()
