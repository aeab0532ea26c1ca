"""Which torch modules libfngd can precondition: one helper class per module kind.

Each kind knows whether a module is supported (and says why not), the descriptor geometry of a
layer from one captured input, what the library receives as the layer's `input` (the module's
input itself, or the normalised input xhat of a norm layer), and how its fngd_layer_desc_t is
built (through the library's own descriptor helpers, called by fngd._handle).

Supported (each module's own parameters form one library layer):
- nn.Linear                       -> FNGD_LAYER_LINEAR, positions = product of the middle dims
- nn.Conv2d, any groups (depthwise included), zero padding (int/tuple, 'valid', or a
  symmetric 'same')               -> FNGD_LAYER_CONV2D (groups in the descriptor)
- nn.Conv1d, same options         -> FNGD_LAYER_CONV2D with H = 1 (N x C x L read as N x C x 1 x L)
- nn.BatchNorm2d, affine          -> FNGD_LAYER_NORM_AFFINE, N x C x (H*W)
- nn.LayerNorm over one dimension, elementwise affine
                                  -> FNGD_LAYER_NORM_AFFINE, channels_last, N x T x C
- nn.GroupNorm, affine            -> FNGD_LAYER_NORM_AFFINE, N x C x T, xhat per group
- nn.Embedding (no max_norm, dense gradients)
                                  -> FNGD_LAYER_EMBEDDING (CPU backend), int64 ids, padding -1
- nn.MultiheadAttention (kdim = vdim = embed_dim, no add_bias_kv)
                                  -> two FNGD_LAYER_LINEAR layers, in_proj and out_proj (see
                                     MultiheadAttentionKind: its forward is replaced while capturing)

Captures keep what autograd keeps: the input of a Linear/Conv2d is handed over as it is (no
copy when it is fp32 and contiguous, the usual case). Norm layers need xhat = (x - mean) * rstd
with the statistics the module normalised with. BatchNorm2d in training mode and LayerNorm save
those statistics for their backward pass (mean and rstd on the output's grad_fn, the very values
of the forward): xhat is then one elementwise pass over x into a fresh fp32 buffer, with no
second reduction (BatchNorm2d: torch's eval-mode batch-norm kernel with those statistics;
LayerNorm, and inputs that are not fp32 NCHW-contiguous: x * rstd - mean * rstd in one
addcmul). Running statistics (eval-mode BatchNorm2d) go to the same kernel the module ran; a
node that is not recognised (another backend, autocast) falls back to computing the batch
statistics with var_mean (same eps, biased variance, as the module).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class UnsupportedLayerError(ValueError):
    """A module with trainable parameters that libfngd cannot precondition."""


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _as_input(x: torch.Tensor) -> torch.Tensor:
    """x as the library reads it: fp32, contiguous (a copy only when it is neither)."""
    x = x.detach()
    if x.dtype != torch.float32:
        x = x.float()
    return x if x.is_contiguous() else x.contiguous()


def _normalise(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor) -> torch.Tensor:
    """xhat = (x - mean) * rstd in one pass, into a new contiguous fp32 tensor; mean and rstd
    broadcast against x (per channel or per position)."""
    rstd = rstd.float()
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    return torch.addcmul(-mean.float() * rstd, x, rstd, out=out)


def _saved_stats(output, node_name: str, numel: int):
    """(mean, rstd) the norm op saved for its backward, or None when the output's grad_fn is not
    the expected node (or holds something unexpected)."""
    fn = getattr(output, "grad_fn", None)
    if fn is None or type(fn).__name__ != node_name:
        return None
    try:
        mean, rstd = fn._saved_result1, fn._saved_result2
    except (AttributeError, RuntimeError):
        return None
    if mean.numel() != numel or rstd.numel() != numel:
        return None  # e.g. eval mode: nothing saved
    return mean, rstd


class LayerKind:
    """One supported module type. `name` is what state_dict() records for the layer."""
    name = ""
    module_type: type = nn.Module

    def unsupported_reason(self, module) -> str:
        """Why this module (of module_type) cannot be preconditioned, '' when it can."""
        return ""

    def params(self, module) -> list:
        """The module's parameters this kind preconditions (weight, then bias)."""
        return [p for p in (module.weight, getattr(module, "bias", None)) if p is not None]

    def geometry(self, module, a: torch.Tensor) -> dict:
        """Descriptor shape fields from one captured input `a` (batch first)."""
        raise NotImplementedError

    def capture(self, module, x: torch.Tensor, output) -> torch.Tensor:
        """The library's `input` for this layer (fp32, contiguous), from the forward's input
        `x` and `output`. Runs in the forward hook; needs no autograd."""
        return _as_input(x)

    def descriptor(self, geom: dict, descs):
        """The layer's fngd_layer_desc_t, built with `descs` (fngd._handle.Descriptors)."""
        raise NotImplementedError


class LinearKind(LayerKind):
    name, module_type = "linear", nn.Linear

    def geometry(self, module, a):
        if a.dim() < 2 or a.shape[-1] != module.in_features:
            raise ValueError(f"Linear input of shape {tuple(a.shape)} does not end in "
                             f"in_features={module.in_features}")
        return dict(kind=self.name, in_features=module.in_features,
                    out_features=module.out_features,
                    positions=a[0].numel() // module.in_features,
                    has_bias=int(module.bias is not None))

    def descriptor(self, geom, descs):
        d = descs.linear(geom["in_features"], geom["out_features"], geom["has_bias"])
        d.positions = geom["positions"]
        return d


class Conv2dKind(LayerKind):
    """nn.Conv2d, grouped and depthwise included (groups goes to the descriptor's appended
    `groups` field; it appears in the geometry only when > 1, so geometries saved before
    grouped convolutions were supported still match)."""
    name, module_type = "conv2d", nn.Conv2d
    dims = 2

    def unsupported_reason(self, module):
        t = type(module).__name__
        if module.padding_mode != "zeros":
            return f"{t} with padding_mode='{module.padding_mode}' (only 'zeros')"
        if isinstance(module.padding, str) and module.padding == "same":
            dil, ks = self._taps(module.dilation), self._taps(module.kernel_size)
            if any((d * (k - 1)) % 2 for d, k in zip(dil, ks)):
                return f"{t} with padding='same' that pads asymmetrically"
        return ""

    def _taps(self, v):
        return _pair(v) if self.dims == 2 else (tuple(v) if isinstance(v, (tuple, list)) else (v,))

    def padding(self, module) -> tuple:
        if isinstance(module.padding, str):
            dil, ks = self._taps(module.dilation), self._taps(module.kernel_size)
            if module.padding == "valid":
                return tuple(0 for _ in ks)
            return tuple(d * (k - 1) // 2 for d, k in zip(dil, ks))
        return self._taps(module.padding)

    def geometry(self, module, a):
        if a.dim() != 4:
            raise ValueError(f"Conv2d input must be N x C x H x W, got {tuple(a.shape)}")
        (kh, kw), (sh, sw) = _pair(module.kernel_size), _pair(module.stride)
        (ph, pw), (dh, dw) = self.padding(module), _pair(module.dilation)
        g = dict(kind=self.name, in_channels=module.in_channels,
                 out_channels=module.out_channels, in_h=a.shape[2], in_w=a.shape[3],
                 kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw,
                 dilation_h=dh, dilation_w=dw, has_bias=int(module.bias is not None))
        if module.groups > 1:
            g["groups"] = module.groups
        return g

    def descriptor(self, geom, descs):
        d = descs.conv2d(geom["in_channels"], geom["out_channels"], geom["in_h"], geom["in_w"],
                         geom["kernel_h"], geom["kernel_w"], geom["has_bias"])
        for f in ("stride_h", "stride_w", "pad_h", "pad_w", "dilation_h", "dilation_w"):
            setattr(d, f, geom[f])
        d.groups = geom.get("groups", 1)
        return d


class Conv1dKind(Conv2dKind):
    """nn.Conv1d as the library's CONV2D with H = 1: N x C x L is read as N x C x 1 x L (the
    same memory; so is the output gradient N x C_out x L_out)."""
    name, module_type = "conv1d", nn.Conv1d
    dims = 1

    def geometry(self, module, a):
        if a.dim() != 3:
            raise ValueError(f"Conv1d input must be N x C x L, got {tuple(a.shape)}")
        (k,), (s,) = self._taps(module.kernel_size), self._taps(module.stride)
        (p,), (d,) = self.padding(module), self._taps(module.dilation)
        g = dict(kind=self.name, in_channels=module.in_channels,
                 out_channels=module.out_channels, in_h=1, in_w=a.shape[2],
                 kernel_h=1, kernel_w=k, stride_h=1, stride_w=s, pad_h=0, pad_w=p,
                 dilation_h=1, dilation_w=d, has_bias=int(module.bias is not None))
        if module.groups > 1:
            g["groups"] = module.groups
        return g


class _NormKind(LayerKind):
    def descriptor(self, geom, descs):
        d = descs.norm_affine(geom["num_features"], geom["norm_positions"], geom["has_bias"])
        d.channels_last = geom["channels_last"]
        return d


class BatchNorm2dKind(_NormKind):
    name, module_type = "batchnorm2d", nn.BatchNorm2d

    def unsupported_reason(self, module):
        return "" if module.affine else "BatchNorm2d without affine parameters"

    def geometry(self, module, a):
        if a.dim() != 4:
            raise ValueError(f"BatchNorm2d input must be N x C x H x W, got {tuple(a.shape)}")
        return dict(kind=self.name, num_features=module.num_features,
                    norm_positions=a.shape[2] * a.shape[3], channels_last=0,
                    has_bias=int(module.bias is not None))

    def capture(self, module, x, output):
        x = x.detach()
        c = x.shape[1] if x.dim() == 4 else -1
        if module.training or module.running_mean is None:  # the batch statistics
            stats = _saved_stats(output, "NativeBatchNormBackward0", c)
            if stats is None:
                var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), unbiased=False)
                stats = mean, torch.rsqrt(var + module.eps)
            mean, rstd = stats
            var, eps = None, 0.0
        else:
            mean, var, eps = module.running_mean, module.running_var, module.eps
            rstd = None
        if x.dtype == torch.float32 and x.is_contiguous() and mean.dtype == torch.float32:
            # The eval-mode batch-norm kernel (per-channel scale and shift, no affine) is one
            # pass like addcmul but vectorised per channel: 1.2-3x faster on the CPU.
            if var is None:
                var = rstd.float().pow(-2)  # rsqrt(var + 0) gives back rstd
            return F.batch_norm(x, mean, var.float(), None, None, False, 0.0, eps)
        if rstd is None:
            rstd = torch.rsqrt(var.float() + eps)
        return _normalise(x, mean.reshape(1, -1, 1, 1), rstd.reshape(1, -1, 1, 1))


class LayerNormKind(_NormKind):
    name, module_type = "layernorm", nn.LayerNorm

    def unsupported_reason(self, module):
        if len(module.normalized_shape) != 1:
            return (f"LayerNorm over {len(module.normalized_shape)} dimensions "
                    "(only the last dimension is supported)")
        if module.weight is None:
            return "LayerNorm without elementwise affine parameters"
        return ""

    def geometry(self, module, a):
        c = module.normalized_shape[0]
        return dict(kind=self.name, num_features=c, norm_positions=a[0].numel() // c,
                    channels_last=1, has_bias=int(module.bias is not None))

    def capture(self, module, x, output):
        x = x.detach()
        stats = _saved_stats(output, "NativeLayerNormBackward0", x.numel() // x.shape[-1])
        if stats is None:
            var, mean = torch.var_mean(x.float(), dim=-1, keepdim=True, unbiased=False)
            stats = mean, torch.rsqrt(var + module.eps)
        mean, rstd = stats
        shape = x.shape[:-1] + (1,)
        return _normalise(x, mean.reshape(shape), rstd.reshape(shape))


class GroupNormKind(_NormKind):
    """nn.GroupNorm's per-channel gamma/beta through NORM_AFFINE: xhat is normalised per
    (sample, group) over the group's C/G channels and all positions, then laid out N x C x T
    (T = product of the spatial dims, 1 for an N x C input) like BatchNorm2d's."""
    name, module_type = "groupnorm", nn.GroupNorm

    def unsupported_reason(self, module):
        return "" if module.affine else "GroupNorm without affine parameters"

    def geometry(self, module, a):
        if a.dim() < 2 or a.shape[1] != module.num_channels:
            raise ValueError(f"GroupNorm input of shape {tuple(a.shape)} does not have "
                             f"num_channels={module.num_channels} in dim 1")
        return dict(kind=self.name, num_features=module.num_channels,
                    norm_positions=a[0].numel() // module.num_channels, channels_last=0,
                    has_bias=int(module.bias is not None))

    def capture(self, module, x, output):
        x = x.detach()
        n, g = x.shape[0], module.num_groups
        xg = x.reshape(n, g, -1)
        stats = _saved_stats(output, "NativeGroupNormBackward0", n * g)
        if stats is None:
            var, mean = torch.var_mean(xg.float(), dim=-1, keepdim=True, unbiased=False)
            stats = mean, torch.rsqrt(var + module.eps)
        mean, rstd = stats[0].detach(), stats[1].detach()
        xhat = _normalise(xg, mean.reshape(n, g, 1), rstd.reshape(n, g, 1))
        return xhat.reshape(n, module.num_channels, -1)


class EmbeddingKind(LayerKind):
    """nn.Embedding -> FNGD_LAYER_EMBEDDING: the library's input is the token
    ids (int64, N x T with T the product of the dims after the batch), padding_idx mapped to
    -1 so that its row gets no direction (as it gets no gradient in PyTorch)."""
    name, module_type = "embedding", nn.Embedding

    def unsupported_reason(self, module):
        if module.max_norm is not None:
            return "Embedding with max_norm (renormalises its weight in the forward)"
        if module.sparse:
            return "Embedding with sparse=True (sparse gradients)"
        return ""

    def geometry(self, module, a):
        if a.dim() < 1:
            raise ValueError("Embedding input must have a batch dimension")
        return dict(kind=self.name, num_embeddings=module.num_embeddings,
                    embedding_dim=module.embedding_dim, positions=max(a[0].numel(), 1))

    def capture(self, module, x, output):
        ids = x.detach().to(torch.int64)
        if ids.dim() == 1:
            ids = ids.unsqueeze(1)
        if module.padding_idx is not None:
            ids = torch.where(ids == module.padding_idx, -1, ids)
        return ids.contiguous()

    def descriptor(self, geom, descs):
        return descs.embedding(geom["num_embeddings"], geom["embedding_dim"], geom["positions"])


class _MHACapture:
    """The in-projection capture of a MultiheadAttention forward: `a` the projections' inputs
    (N x T x E), `e` assembled from the three projection gradients once all have arrived
    (self-attention: N x T x 3E side by side; else block rows of a stacked N x (Tq+2Tk) x 3E)."""
    __slots__ = ("a", "e", "version", "parts", "stacked")

    def __init__(self, a, stacked):
        self.a, self.e, self.version = a, None, a._version
        self.parts, self.stacked = [None, None, None], stacked

    def part(self, k):
        def hook(grad):
            self.parts[k] = grad.detach().transpose(0, 1)  # T x N x E -> N x T x E
            if all(p is not None for p in self.parts):
                g = [p.float() for p in self.parts]
                if not self.stacked:
                    self.e = torch.cat(g, dim=2).contiguous()
                else:
                    n, e = g[0].shape[0], g[0].shape[2]
                    rows = [F.pad(p, (k * e, (2 - k) * e)) for k, p in enumerate(g)]
                    self.e = torch.cat(rows, dim=1).contiguous()
                self.parts = [None, None, None]
        return hook


class _OutCapture:
    __slots__ = ("a", "e", "version")

    def __init__(self, a):
        self.a, self.e, self.version = a, None, a._version

    def __call__(self, grad):
        self.e = grad.detach().transpose(0, 1)  # T x N x E -> N x T x E (made contiguous later)


_MHA_SIGNATURE = None


class MultiheadAttentionKind(LayerKind):
    """nn.MultiheadAttention: two library LINEAR layers, '<name>' (in_proj_weight/in_proj_bias,
    E -> 3E) and '<name>.out_proj' (E -> E over the query tokens). Its projections run through
    F.linear inside F.multi_head_attention_forward, so no module hook sees them: a forward hook
    computes the attention with the projections outside (q, k, v = F.linear(...), then
    F.multi_head_attention_forward with identity projections, which is exact, so masks, dropout
    and attention weights are PyTorch's own), with tensor hooks on the projections' outputs:
    while capturing, the module's forward is replaced by that computation (an instance
    attribute, removed with the other hooks; other forward hooks still run). Self-attention (query, key and value the same
    tensor) is one linear over the T tokens with output gradients [e_q e_k e_v]; otherwise the
    three inputs are stacked over Tq + 2 Tk positions with block output gradients (exact: the
    zero blocks add nothing). Key padding masks make the padded keys' gradients zero. The cost
    over the module's own forward is the three identity projections (E x E per token)."""
    name, module_type = "mha_in_proj", nn.MultiheadAttention

    def unsupported_reason(self, module):
        if not module._qkv_same_embed_dim:
            return "MultiheadAttention with kdim/vdim != embed_dim (separate q/k/v weights)"
        if module.bias_k is not None:
            return "MultiheadAttention with add_bias_kv"
        return ""

    def params(self, module):
        return [p for p in (module.in_proj_weight, module.in_proj_bias) if p is not None]

    def geometry(self, module, a):
        e = module.embed_dim
        if a.dim() != 3 or a.shape[2] != e:
            raise ValueError(f"MultiheadAttention projection input {tuple(a.shape)} is not "
                             f"N x T x {e}")
        return dict(kind=self.name, in_features=e, out_features=3 * e, positions=a.shape[1],
                    has_bias=int(module.in_proj_bias is not None))

    def descriptor(self, geom, descs):
        d = descs.linear(geom["in_features"], geom["out_features"], geom["has_bias"])
        d.positions = geom["positions"]
        return d

    def attach(self, layer):
        from ._capture import _functorch_active
        import inspect
        global _MHA_SIGNATURE
        if _MHA_SIGNATURE is None:
            _MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)
        out_layer = layer.partner

        def run(module, args, kwargs):
            if not torch.is_grad_enabled() or _functorch_active():
                return None
            b = _MHA_SIGNATURE.bind(module, *args, **kwargs)
            b.apply_defaults()
            a = b.arguments
            query, key, value = a["query"], a["key"], a["value"]
            if query.dim() != 3:
                raise ValueError("FNGD: unbatched MultiheadAttention inputs are not supported")
            same = query is key and key is value
            bf = module.batch_first
            q, k, v = ((t.transpose(0, 1) if bf else t) for t in (query, key, value))  # T x N x E
            E = module.embed_dim
            w, bias = module.in_proj_weight, module.in_proj_bias
            ws = w.chunk(3)
            bs = bias.chunk(3) if bias is not None else (None, None, None)
            qp, kp, vp = (F.linear(x, ws[i], bs[i]) for i, x in enumerate((q, k, v)))
            eye = torch.eye(E, dtype=qp.dtype, device=qp.device)
            ctx, weights = F.multi_head_attention_forward(
                qp, kp, vp, E, module.num_heads, None, None, None, None, module.add_zero_attn,
                module.dropout, eye, None, training=module.training,
                key_padding_mask=a["key_padding_mask"], need_weights=a["need_weights"],
                attn_mask=a["attn_mask"], use_separate_proj_weight=True, q_proj_weight=eye,
                k_proj_weight=eye, v_proj_weight=eye,
                average_attn_weights=a["average_attn_weights"], is_causal=a["is_causal"])
            out = F.linear(ctx, module.out_proj.weight, module.out_proj.bias)
            if not out.requires_grad:
                return (out.transpose(0, 1) if bf else out), weights
            xin = q.detach().transpose(0, 1) if same else torch.cat(
                [t.detach().transpose(0, 1) for t in (q, k, v)], dim=1)
            cap = _MHACapture(_as_input(xin), stacked=not same)
            for i, t in enumerate((qp, kp, vp)):
                if t.requires_grad:
                    t.register_hook(cap.part(i))
                else:
                    cap.parts[i] = torch.zeros_like(t).transpose(0, 1)
            layer.captures.append(cap)
            ocap = _OutCapture(_as_input(ctx.detach().transpose(0, 1)))
            out.register_hook(ocap)
            out_layer.captures.append(ocap)
            if bf:
                out = out.transpose(0, 1)
            return out, weights

        module = layer.module
        original = type(module).forward

        def forward(*args, **kwargs):  # the module's forward while capturing
            r = run(module, args, kwargs)
            return original(module, *args, **kwargs) if r is None else r

        class _Restore:
            def remove(self):
                if module.__dict__.get("forward") is forward:
                    del module.forward

        module.forward = forward  # nn.Module.__call__ (and its hooks) call it
        return [_Restore()]


class MHAOutProjKind(LinearKind):
    """out_proj of a MultiheadAttention (captured by MultiheadAttentionKind's hook)."""
    name = "mha_out_proj"

    def attach(self, layer):
        return []  # the attention's hook fills this layer's captures


MHA_OUT_PROJ = MHAOutProjKind()


KINDS = (LinearKind(), Conv2dKind(), Conv1dKind(), BatchNorm2dKind(), LayerNormKind(),
         GroupNormKind(), EmbeddingKind(), MultiheadAttentionKind())


def kind_of(module: nn.Module) -> tuple[LayerKind | None, str]:
    """(helper, reason): the kind that preconditions `module`, or None with the reason why
    none can."""
    for kind in KINDS:
        if isinstance(module, kind.module_type):
            reason = kind.unsupported_reason(module)
            return (None, reason) if reason else (kind, "")
    return None, f"{type(module).__name__} is not a supported layer type"


def classify(module: nn.Module) -> tuple[str | None, str]:
    """(kind name, reason): 'linear' | 'conv2d' | 'conv1d' | 'batchnorm2d' | 'layernorm' |
    'groupnorm' | 'embedding', or None with the
    reason the module cannot be preconditioned."""
    kind, reason = kind_of(module)
    return (kind.name if kind else None), reason


class Layer:
    """One preconditioned module: its kind helper, parameters and per-step state."""

    def __init__(self, name, module, kind: LayerKind):
        self.name, self.module, self.helper, self.kind = name, module, kind, kind.name
        self.params = kind.params(module)
        self.partner = None                # MultiheadAttention: its out_proj layer
        self.captures: list = []           # fngd._capture.Capture, one per forward since step
        self.geom: dict | None = None      # descriptor shape fields, fixed at handle creation
        self.sample_shape = None           # captured input shape without the batch dimension
        self.buffers = None                # (grad_weight ptr, grad_bias ptr) last given to C
        self.toggled: list[nn.Parameter] = []
        self.staging: dict[int, torch.Tensor] = {}

    def fix_geometry(self, geom: dict | None) -> None:
        """Set (or clear) the geometry the library handle is built with."""
        self.geom = None if geom is None else dict(geom)
        self.buffers = None

    def check_shape(self, a: torch.Tensor) -> None:
        """A captured input of another shape than the last one: refused unless its geometry is
        the one the handle was built with."""
        g = self.helper.geometry(self.module, a)
        if g != self.geom:
            raise ValueError(f"layer '{self.name}': input shape {tuple(a.shape[1:])} differs "
                             f"from the one the preconditioner was set up with ({self.geom}); "
                             "every step must use the same per-sample shape")
        self.sample_shape = a.shape[1:]

    def grad_ptrs(self, replaced: list) -> tuple:
        """Data pointers of the fp32 contiguous buffers the library writes into: param.grad
        itself when it can be, else a staging buffer copied into .grad after the step
        (copy_staged). Looked up anew every step, as optimizer.zero_grad(set_to_none=True) (or
        the user) may have dropped or swapped .grad. Each (param, previous .grad) it replaces
        is appended to `replaced`, so that a failed step puts back what was there instead of
        leaving uninitialised memory in .grad."""
        ptrs = []
        for p in self.params:
            g = p.grad
            if not (g is not None and g.dtype == torch.float32 and g.is_contiguous()
                    and g.shape == p.shape and g.device == p.device):
                if p.dtype == torch.float32:
                    replaced.append((p, g))
                    g = p.grad = torch.empty(p.shape, dtype=torch.float32, device=p.device)
                else:
                    g = self.staging.get(id(p))
                    if g is None:
                        g = self.staging[id(p)] = torch.empty(p.shape, dtype=torch.float32,
                                                              device=p.device)
                    ptrs.append(g.data_ptr())
                    continue
            if self.staging:
                self.staging.pop(id(p), None)
            ptrs.append(g.data_ptr())
        return ptrs[0], (ptrs[1] if len(ptrs) > 1 else None)

    def copy_staged(self) -> None:
        """Staged directions (non-fp32 parameters) into their .grad."""
        for p in self.params:
            buf = self.staging.get(id(p))
            if buf is not None:
                if p.grad is None:
                    p.grad = torch.empty_like(p)
                p.grad.copy_(buf)


def find_layers(model: nn.Module, unsupported: str, modules) -> list[Layer]:
    """The preconditioned layers of `model` in named_modules() order."""
    wanted = set(modules) if modules is not None else None
    found, problems, claimed = [], [], set()
    for name, m in model.named_modules():
        if wanted is not None and name not in wanted:
            continue
        if id(m) in claimed:
            continue
        own = list(m.parameters(recurse=False))
        trainable = [p for p in own if p.requires_grad]
        if not trainable:
            continue
        kind, reason = kind_of(m)
        if kind is not None and len(trainable) != len(own):
            kind, reason = None, "some of its parameters are frozen and others are not"
        if kind is None:
            problems.append(f"'{name or '<root>'}': {reason}")
            continue
        found.append(Layer(name, m, kind))
        if isinstance(kind, MultiheadAttentionKind):  # its out_proj: a second library layer
            out = Layer(f"{name}.out_proj" if name else "out_proj", m.out_proj, MHA_OUT_PROJ)
            found[-1].partner = out
            found.append(out)
            claimed.add(id(m.out_proj))
    if wanted is not None:
        missing = wanted - {n for n, _ in model.named_modules()}
        if missing:
            raise ValueError(f"modules not in the model: {sorted(missing)}")
    if problems and unsupported == "error":
        raise UnsupportedLayerError(
            "FNGD cannot precondition these modules (pass unsupported='skip' to leave them to "
            "plain gradients, or modules=[...] to choose layers): " + "; ".join(problems))
    if not found:
        raise UnsupportedLayerError("the model has no layer FNGD can precondition")
    return found
