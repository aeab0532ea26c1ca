"""Grouped / depthwise Conv2d, Conv1d (plain, grouped, depthwise) and GroupNorm in the drop-in:
the direction written into .grad equals the dense float64 reference built from torch.func
per-sample gradients (all these modules keep samples independent, so vmap(grad) is exact)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fngd
from conftest import EPS32, assert_grads_match, step_against_reference


class Conv1dNet(nn.Module):
    """N x 4 x 11 -> depthwise Conv1d -> GroupNorm -> grouped Conv1d (stride 2) -> Conv1d ->
    Linear."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv1d(4, 8, 3, padding=1, groups=4)            # depth multiplier 2
        self.gn = nn.GroupNorm(2, 8)
        self.gc = nn.Conv1d(8, 6, 5, stride=2, padding=2, groups=2, bias=False)
        self.pw = nn.Conv1d(6, 3, 1, padding="same")
        self.head = nn.Linear(3 * 6, 5)

    def forward(self, x):
        h = torch.relu(self.gn(self.dw(x)))
        h = torch.relu(self.pw(torch.tanh(self.gc(h))))
        return self.head(h.flatten(1))


class Conv2dNet(nn.Module):
    """N x 6 x 7 x 6 -> grouped Conv2d (3 groups) -> GroupNorm(3) -> depthwise Conv2d with
    dilation -> GroupNorm(1) -> Linear."""

    def __init__(self):
        super().__init__()
        self.gc = nn.Conv2d(6, 6, 3, padding=1, groups=3)
        self.gn = nn.GroupNorm(3, 6)
        self.dw = nn.Conv2d(6, 6, (3, 2), stride=(2, 1), dilation=(1, 2), groups=6)
        self.gn1 = nn.GroupNorm(1, 6)
        self.head = nn.Linear(6 * 3 * 4, 4)

    def forward(self, x):
        h = torch.relu(self.gn(self.gc(x)))
        h = self.gn1(self.dw(h))
        return self.head(torch.tanh(h).flatten(1))


def _model(name):
    torch.manual_seed(0)
    m = Conv1dNet() if name == "conv1d" else Conv2dNet()
    with torch.no_grad():  # non-trivial affine parameters
        for mod in m.modules():
            if isinstance(mod, nn.GroupNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
    return m


def _data(name, n):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, 11, generator=g) if name == "conv1d" else torch.randn(n, 6, 7, 6, generator=g)
    return x, torch.randint(0, 5 if name == "conv1d" else 4, (n,), generator=g)


@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("mode", ["layer", "global"])
@pytest.mark.parametrize("name", ["conv1d", "conv2d"])
def test_grouped_modules_match_dense_reference(name, mode, n):
    model = _model(name)
    x, y = _data(name, n)
    pre, ref, cond = step_against_reference(model, x, y, mode)
    kinds = {l.name: l.kind for l in pre.layers}
    assert set(kinds.values()) >= {"groupnorm", name}
    tol = 16 * EPS32 * cond
    assert_grads_match(model, ref, tol, cond)


def test_geometry_records_groups_only_when_grouped():
    model = _model("conv2d")
    x, y = _data("conv2d", 3)
    pre = fngd.FNGDPreconditioner(model, num_samples=4, max_batch=4)
    F.cross_entropy(model(x), y).backward()
    pre.step(torch.arange(3))
    geoms = {d["name"]: d["geometry"] for d in pre.state_dict()["layers"]}
    assert geoms["gc"]["groups"] == 3 and geoms["dw"]["groups"] == 6
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    pre2 = fngd.FNGDPreconditioner(plain, num_samples=4, max_batch=4)
    F.cross_entropy(plain(torch.randn(2, 2, 6, 6)), torch.tensor([0, 1])).backward()
    pre2.step(torch.arange(2))
    assert "groups" not in pre2.state_dict()["layers"][0]["geometry"]


def test_groupnorm_xhat_per_group():
    gn = nn.GroupNorm(2, 4)
    x = torch.randn(3, 4, 5)
    from fngd.layers import GroupNormKind
    xhat = GroupNormKind().capture(gn, x, gn(x))
    ref = F.group_norm(x, 2, eps=gn.eps)  # no affine: xhat itself
    assert xhat.shape == (3, 4, 5)
    assert torch.allclose(xhat, ref, atol=1e-6)
