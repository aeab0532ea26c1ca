"""Shared fixtures: small models, a dense float64 reference of the FNGD direction built with
torch.func (per-sample gradients by vmap(grad)), and a training-step helper."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import fngd  # noqa: E402  (after the path insert)

torch.set_num_threads(1)  # CI has 2 cores; keeps timings and reductions steady

EPS32 = torch.finfo(torch.float32).eps


class TokenNet(nn.Module):
    """Linear over T=3 positions, LayerNorm over features, then a classifier."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(24, 5, bias=False)

    def forward(self, x):  # x: N x 3 x 4
        return self.head(torch.relu(self.norm(self.proj(x))).flatten(1))


def conv_net():
    """Conv (bias) -> BN -> ReLU(inplace) -> strided conv (no bias) -> Linear; 8x8 inputs."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                         nn.Conv2d(4, 5, 3, stride=2, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(5 * 3 * 3, 6))


def make_model(name, seed=0):
    torch.manual_seed(seed)
    if name == "conv":
        m = conv_net()
        with torch.no_grad():  # non-trivial running statistics for eval-mode BN
            m[1].running_mean.uniform_(-0.5, 0.5)
            m[1].running_var.uniform_(0.5, 2.0)
            m[1].weight.uniform_(0.5, 1.5)
            m[1].bias.uniform_(-0.5, 0.5)
        return m
    return TokenNet()


def make_data(name, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g) if name == "conv" else torch.randn(n, 3, 4, generator=g)
    y = torch.randint(0, 6 if name == "conv" else 5, (n,), generator=g)
    return x, y


def per_sample_grads(model, x, y):
    """{param name: N x shape} gradients of the per-sample losses l_i (float64 copies).
    Valid only for models whose samples do not interact (BN in eval mode)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_i(p, xi, yi):
        out = functional_call(model, (p, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    g = vmap(grad(loss_i), in_dims=(None, 0, 0))(params, x, y)
    return {k: v.double() for k, v in g.items()}


def layer_blocks(pre):
    """Parameter names of each preconditioned layer, in the preconditioner's order."""
    names = {id(p): n for n, p in pre.model.named_parameters()}
    return [[names[id(p)] for p in layer.params] for layer in pre.layers]


def reference_direction(grads, blocks, damping, mode, alphas=None, coef_filter="range",
                        rhs=None):
    """Dense float64 FNGD direction per parameter name:
    delta = G^T alpha, alpha = (K + N*lambda*I)^-1 1, K = G G^T (summed over layers in global
    mode); coef_filter="range": alpha = (K + N*lambda*I)^-1 K (K + N*lambda*I)^-1 1. With
    `alphas` (one N-vector per coefficient set) the solve is skipped (reuse). rhs: the
    right-hand side instead of ones."""
    mats = []
    for names in blocks:
        mats.append(torch.cat([grads[n].flatten(1) for n in names], dim=1))
    n = mats[0].shape[0]

    def solve(ks):
        k = sum(ks)
        damped = k + n * damping * torch.eye(n, dtype=k.dtype)
        r = torch.ones(n, dtype=k.dtype) if rhs is None else rhs.to(k.dtype)
        a = torch.linalg.solve(damped, r)
        return torch.linalg.solve(damped, k @ a) if coef_filter == "range" else a

    out, conds = {}, []
    if mode == "global":
        a_all = alphas[0] if alphas is not None else solve([m @ m.T for m in mats])
        if alphas is None:
            conds.append(torch.linalg.cond(sum(m @ m.T for m in mats) +
                                           n * damping * torch.eye(n, dtype=torch.float64)))
    for i, (names, m) in enumerate(zip(blocks, mats)):
        if mode == "global":
            a = a_all
        elif alphas is not None:
            a = alphas[i]
        else:
            k = m @ m.T
            a = solve([k])
            conds.append(torch.linalg.cond(k + n * damping * torch.eye(n, dtype=k.dtype)))
        d = m.T @ a.double()
        off = 0
        for name in names:
            size = grads[name][0].numel()
            out[name] = d[off:off + size].reshape(grads[name].shape[1:])
            off += size
    return out, (max(conds) if conds else 1.0)


def step_against_reference(model, x, y, mode, damping=1e-3):
    """One collect step of a fresh preconditioner (absolute damping, the paper's plain solve)
    on model(x) with the cross-entropy loss, and the float64 reference direction of the same
    batch. Returns (pre, ref, cond)."""
    pre = fngd.FNGDPreconditioner(model, num_samples=20, max_batch=8, damping=damping, mode=mode,
                                  damping_kind="absolute", coef_filter="none")
    grads = per_sample_grads(model, x, y)
    F.cross_entropy(model(x), y).backward()
    pre.step(torch.arange(len(x)))
    ref, cond = reference_direction(grads, layer_blocks(pre), damping, mode, coef_filter="none")
    return pre, ref, cond


def assert_grads_match(model, ref, tol, cond):
    """Every parameter's .grad within relative error tol of the reference direction."""
    for pname, p in model.named_parameters():
        err = rel_err(p.grad, ref[pname])
        assert err <= tol, (pname, err, cond)


def train_step(model, pre, opt, x, y, ids):
    """One step of the documented training loop; returns the loss."""
    opt.zero_grad()
    out = model(x)
    if pre.needs_loss_weights:
        w = pre.loss_weights(ids)
        loss = (w * F.cross_entropy(out, y, reduction="none")).mean()
        loss.backward()
    else:
        loss = F.cross_entropy(out, y)
        loss.backward()
        pre.step(ids)
    opt.step()
    return loss.item()


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300)).item()


@pytest.fixture(autouse=True)
def _unscaled_direction(monkeypatch, request):
    """The tests compare the direction with unscaled references, so FNGDPreconditioner's
    step_control defaults to "none" here; tests of the library's defaults (the KL clip) are
    marked @pytest.mark.library_defaults and see the real default."""
    if request.node.get_closest_marker("library_defaults"):
        return
    init = fngd.FNGDPreconditioner.__init__

    def unscaled_init(self, *args, step_control="none", **kwargs):
        init(self, *args, step_control=step_control, **kwargs)
    monkeypatch.setattr(fngd.FNGDPreconditioner, "__init__", unscaled_init)


@pytest.fixture
def lib():
    return fngd._lib.load()
