"""The hooks: what each preconditioned layer's forward and backward leave for step().

Per layer, a forward pre-hook and a forward hook on the module and, per forward pass, a tensor
hook on the module's output:
- pre-hook: with skip_weight_grad, switch the parameters' requires_grad off for the duration
  of the module's forward, so that autograd builds no weight-gradient node for them (libfngd
  overwrites .grad with the direction computed from the same inputs and output gradients, so
  autograd's own weight gradient would be wasted work). A layer whose input does not require
  grad (the first layer) keeps its node, or nothing upstream of the loss would require grad.
- forward hook: restore requires_grad, record the library's input for the layer (the kind
  helper's capture: the input itself, or xhat for norm layers) and register the tensor hook.
- tensor hook on the output: record dL/dy. Tensor hooks, not register_full_backward_hook, which
  breaks on in-place operations after the module (ReLU(inplace=True) after BatchNorm2d, as in
  torchvision's ResNet); a hook registered before an in-place op receives the gradient of the
  module's output as the module produced it.
Nothing is recorded under torch.no_grad() or inside torch.func transforms. While capturing is
off (global mode's reuse epochs, which need no capture at all) the hooks are not registered at
all, so nn.Module runs its hook-free call path; they are registered again (after any hooks
added meanwhile) when an epoch captures again (recompute_every).
"""

from __future__ import annotations

import torch

_functorch = getattr(torch._C, "_are_functorch_transforms_active", None)


def _functorch_active() -> bool:
    """Inside torch.func transforms (vmap/grad of a functional_call of the model) the hooks
    must stay out of the way: no capture, no requires_grad toggling."""
    return bool(_functorch and _functorch())


class Capture:
    """One forward pass of one layer: its library input `a` and (after backward) dL/dy `e`.

    `a` may share storage with the module's input (no copy when it is fp32 and contiguous).
    With the weight-gradient node skipped, autograd no longer saves that input, so its version
    check cannot catch an in-place change made after the layer ran; the version recorded here
    lets step() refuse such a stale input instead of using it silently. Calling the capture
    with a gradient (it is the output's tensor hook) records e."""
    __slots__ = ("a", "e", "version")

    def __init__(self, a):
        self.a = a
        self.e = None
        self.version = a._version

    def __call__(self, grad):
        self.e = grad.detach()


def _restore(layer):
    for p in layer.toggled:
        p.requires_grad_(True)
    layer.toggled = []


class Hooks:
    """The hooks of every preconditioned layer. set_capturing(False) unregisters them until
    set_capturing(True); remove() detaches them for good."""

    def __init__(self, layers, skip_weight_grad: bool):
        self.layers = layers
        self.skip_weight_grad = skip_weight_grad
        self.attached, self.capturing, self.handles = True, False, []
        self.set_capturing(True)

    def __bool__(self) -> bool:
        return self.attached

    def set_capturing(self, on: bool) -> None:
        if on == self.capturing:
            return
        self.capturing = on
        if not on:
            self._unregister()
        elif self.attached:
            for layer in self.layers:
                m = layer.module
                attach = getattr(layer.helper, "attach", None)
                if attach is not None:  # a kind with its own capture (MultiheadAttention)
                    self.handles.extend(attach(layer))
                    continue
                self.handles.append(m.register_forward_pre_hook(self._pre_hook(layer)))
                self.handles.append(m.register_forward_hook(self._hook(layer)))

    def _unregister(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.discard()

    def _pre_hook(self, layer):
        def pre_hook(module, args):
            if layer.toggled:
                _restore(layer)  # a previous forward of this module raised
            if not (self.skip_weight_grad and torch.is_grad_enabled()) or _functorch_active():
                return
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.requires_grad:
                toggled = layer.toggled = [p for p in layer.params if p.requires_grad]
                for p in toggled:
                    p.requires_grad_(False)
        return pre_hook

    def _hook(self, layer):
        helper = layer.helper

        def hook(module, args, output):
            if layer.toggled:
                _restore(layer)
            if not torch.is_grad_enabled() or _functorch_active():
                return
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return
            cap = Capture(helper.capture(module, args[0], output))
            layer.captures.append(cap)
            output.register_hook(cap)
        return hook

    def discard(self) -> None:
        """Drop everything captured since the last step."""
        for layer in self.layers:
            layer.captures = []
            if layer.toggled:
                _restore(layer)

    def remove(self) -> None:
        self._unregister()
        self.attached = False

    def gather(self, max_batch: int) -> int:
        """Validate what was captured for this step; returns the batch size N. Afterwards each
        layer's captures[0] holds its (input, output gradient)."""
        n = self._batch_size(max_batch)
        if n is None:  # not one complete capture per layer: the slow path
            self._drop_unreached()
            n = self._batch_size(max_batch)
            if n is None:
                self._refuse()
        return n

    def _batch_size(self, max_batch):
        n, same = None, True
        for l in self.layers:
            c = l.captures
            if len(c) != 1 or c[0].e is None:
                return None
            m = c[0].a.shape[0]
            if n is None:
                n = m
            same = same and m == n
        if not same:
            raise RuntimeError("layers saw different batch sizes: "
                               f"{ {l.name: l.captures[0].a.shape[0] for l in self.layers} }")
        if n > max_batch:
            raise ValueError(f"batch of {n} samples exceeds max_batch={max_batch}")
        return n

    def _refuse(self):
        layers = self.layers
        runs = {l.name: len(l.captures) for l in layers}
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
        raise RuntimeError("step() called before loss.backward(): no output gradient for "
                           f"{[l.name for l in layers if l.captures[0].e is None]}")

    def _drop_unreached(self) -> None:
        """Forward passes that no backward reached (evaluation with gradients enabled, an
        aborted pass) are not part of this step: drop them rather than refuse the step."""
        if any(c.e is not None for l in self.layers for c in l.captures):
            for l in self.layers:
                l.captures = [c for c in l.captures if c.e is not None]
