"""The small encoder-decoder Transformer of bench/transformer_bleu.py, built only from modules
the fngd drop-in preconditions (nn.Embedding, nn.MultiheadAttention inside
nn.TransformerEncoderLayer / nn.TransformerDecoderLayer, nn.Linear, nn.LayerNorm): every
trainable parameter gets the FNGD direction, none is left to plain gradients.

Pre-LayerNorm blocks (norm_first=True: trains without warm-up), fixed sinusoidal positions (a
buffer, no parameters), separate source and target embeddings and an untied output layer (the
drop-in allows each module to run once per step, so no weight is shared between two uses).

Loss: per-sample loss = the sum of the token cross-entropies of that sentence (padding
excluded), and the training loss is their mean over the batch, so that FNGD's per-sample
gradients are per sentence (loss_reduction="mean").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transformer_data import BOS, EOS, PAD


def sinusoid(length: int, d: int) -> torch.Tensor:
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(length, d)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab: int, tgt_vocab: int, d_model: int = 64, heads: int = 4,
                 ffn: int = 128, enc_layers: int = 2, dec_layers: int = 2,
                 dropout: float = 0.1, max_len: int = 32):
        super().__init__()
        self.d = d_model
        self.src_emb = nn.Embedding(src_vocab, d_model, padding_idx=PAD)
        self.tgt_emb = nn.Embedding(tgt_vocab, d_model, padding_idx=PAD)
        self.register_buffer("pos", sinusoid(max_len, d_model), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.enc = nn.ModuleList(nn.TransformerEncoderLayer(
            d_model, heads, ffn, dropout, batch_first=True, norm_first=True)
            for _ in range(enc_layers))
        self.dec = nn.ModuleList(nn.TransformerDecoderLayer(
            d_model, heads, ffn, dropout, batch_first=True, norm_first=True)
            for _ in range(dec_layers))
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, tgt_vocab)

    def _embed(self, emb, ids):
        return self.drop(emb(ids) * math.sqrt(self.d) + self.pos[:ids.shape[1]])

    def encode(self, src):
        pad = src == PAD
        h = self._embed(self.src_emb, src)
        for layer in self.enc:
            h = layer(h, src_key_padding_mask=pad)
        return self.enc_norm(h), pad

    def decode(self, tgt_in, mem, mem_pad):
        t = tgt_in.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=tgt_in.device), 1)
        h = self._embed(self.tgt_emb, tgt_in)
        for layer in self.dec:
            # no target key-padding mask: pads come after every real token, so the causal
            # mask already hides them from real positions, and pad positions carry no loss
            h = layer(h, mem, tgt_mask=causal, memory_key_padding_mask=mem_pad)
        return self.out(self.dec_norm(h))

    def forward(self, src, tgt_in):
        mem, pad = self.encode(src)
        return self.decode(tgt_in, mem, pad)

    @torch.no_grad()
    def greedy(self, src, max_len: int) -> torch.Tensor:
        """Greedy decoding (N x <= max_len token ids, eos-terminated where it ended)."""
        mem, pad = self.encode(src)
        ys = torch.full((src.shape[0], 1), BOS, dtype=torch.int64, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(ys, mem, pad)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            ys = torch.cat([ys, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if bool(done.all()):
                break
        return ys[:, 1:]


def sentence_losses(logits, tgt_out):
    """Per-sentence loss: sum of token cross-entropies, pad positions excluded (N)."""
    n, t, v = logits.shape
    tok = F.cross_entropy(logits.reshape(n * t, v), tgt_out.reshape(n * t),
                          ignore_index=PAD, reduction="none")
    return tok.reshape(n, t).sum(1)


def build(src_vocab: int, tgt_vocab: int, seed: int, **kw) -> Seq2Seq:
    """Same initial weights for every optimizer of a seed."""
    torch.manual_seed(seed)
    return Seq2Seq(src_vocab, tgt_vocab, **kw)


def describe(model: nn.Module) -> str:
    n = sum(p.numel() for p in model.parameters())
    return (f"Transformer encoder-decoder, d_model {model.d}, {len(model.enc)}+{len(model.dec)} "
            f"pre-LN layers, {model.enc[0].self_attn.num_heads} heads, FFN "
            f"{model.enc[0].linear1.out_features}, {n} parameters")
