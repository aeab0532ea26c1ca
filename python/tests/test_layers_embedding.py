"""nn.Embedding in the drop-in (FNGD_LAYER_EMBEDDING, CPU backend): the direction equals the
dense float64 torch.func reference, the padding_idx row included (no gradient, no direction),
alone and in a model with a depthwise Conv1d over the tokens, GroupNorm and Linear layers."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fngd
from conftest import EPS32, assert_grads_match, step_against_reference


class TokenConvNet(nn.Module):
    def __init__(self, padding_idx):
        super().__init__()
        self.emb = nn.Embedding(11, 4, padding_idx=padding_idx)
        self.dw = nn.Conv1d(4, 4, 3, padding=1, groups=4)
        self.gn = nn.GroupNorm(2, 4)
        self.proj = nn.Linear(4, 5)
        self.head = nn.Linear(5 * 6, 3)

    def forward(self, ids):  # N x 6
        h = self.emb(ids).transpose(1, 2)               # N x 4 x 6
        h = torch.relu(self.gn(self.dw(h))).transpose(1, 2)
        return self.head(torch.tanh(self.proj(h)).flatten(1))


@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("mode", ["layer", "global"])
@pytest.mark.parametrize("padding_idx", [None, 0])
def test_embedding_matches_dense_reference(padding_idx, mode, n):
    torch.manual_seed(0)
    model = TokenConvNet(padding_idx)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 6, (n, 6), generator=g)  # ids 6..10 never occur; 0 often does
    y = torch.randint(0, 3, (n,), generator=g)
    pre, ref, cond = step_against_reference(model, ids, y, mode)
    assert [l.kind for l in pre.layers][0] == "embedding"
    tol = 16 * EPS32 * cond
    assert_grads_match(model, ref, tol, cond)
    w = model.emb.weight.grad
    assert torch.count_nonzero(w[6:]) == 0  # rows no sample used
    if padding_idx is not None:
        assert torch.count_nonzero(w[padding_idx]) == 0


def test_unsupported_embeddings_are_named():
    for bad, why in [(nn.Embedding(5, 3, max_norm=1.0), "max_norm"),
                     (nn.Embedding(5, 3, sparse=True), "sparse")]:
        with pytest.raises(fngd.UnsupportedLayerError, match=why):
            fngd.FNGDPreconditioner(nn.Sequential(bad), num_samples=10, max_batch=4)


class MaskedTokenNet(nn.Module):
    """Linear layers over the tokens of a padded batch: padded positions are masked out of the
    pooled features, so their output gradients are exactly zero."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(9, 6, padding_idx=0)
        self.tok = nn.Linear(6, 5)
        self.ln = nn.LayerNorm(5)
        self.head = nn.Linear(5, 3)

    def forward(self, ids):  # N x 7, 0 = padding
        keep = (ids != 0).unsqueeze(-1).float()
        h = torch.tanh(self.ln(self.tok(self.emb(ids)))) * keep
        return self.head(h.sum(1) / keep.sum(1).clamp(min=1))


@pytest.mark.parametrize("mode", ["layer", "global"])
def test_linear_over_padded_tokens_matches_dense_reference(mode):
    torch.manual_seed(0)
    model = MaskedTokenNet()
    g = torch.Generator().manual_seed(5)
    n = 7
    ids = torch.randint(1, 9, (n, 7), generator=g)
    lengths = torch.tensor([7, 3, 5, 1, 6, 2, 4])
    ids[torch.arange(7).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    y = torch.randint(0, 3, (n,), generator=g)
    pre, ref, cond = step_against_reference(model, ids, y, mode)
    tol = 16 * EPS32 * max(float(cond), 4.0)  # floor: fp32 xhat of the LayerNorm capture
    assert_grads_match(model, ref, tol, cond)
