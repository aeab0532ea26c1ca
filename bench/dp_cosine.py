#!/usr/bin/env python3
"""Data-parallel FNGD: how far is the average of the ranks' local directions from the exact
direction of the global batch's Gram matrix?

Data-parallel FNGD (README "Data-parallel", docs/METHOD.md) lets each of W ranks form the Gram
of its own n = N/W samples, solve its own alpha and form its local direction; the directions
are averaged with one all-reduce. That is block-diagonal over ranks: the cross-rank blocks
K_ij (i, j on different ranks) of the global N x N Gram are dropped. This script simulates the
ranks in one process by splitting each batch of N = 64 samples into W = 1, 2, 4, 8 shards: one
fresh preconditioner per shard (max_batch n), the shards' directions averaged, against one
preconditioner on the whole batch (max_batch N, the exact global-Gram direction). Reported:
cosine similarity and relative length |avg| / |exact| over every preconditioned parameter,
mean and minimum over batches, for both coefficient modes, at two points of training (the
initial weights and after 2 epochs of SGD), plus the cosine of the plain mean gradient with the
exact direction for scale (how much FNGD turns the gradient at all).

Model: bench/tta_models.py's digits CNN (conv-BN-conv-BN-linear-linear), BatchNorm in eval
mode while measuring (train-mode BatchNorm would couple the samples of a shard through its
batch statistics, a different effect from the Gram's: every rank of a real data-parallel run
without SyncBatchNorm has it anyway). Step control "none" (the KL clip rescales each rank's
direction by its own factor: measured separately as "kl_clip" rows), damping 0.1 (absolute,
the default), range filter on.

    FNGD_LIBRARY=build/libfngd.so PYTHONPATH=python python bench/dp_cosine.py
writes bench/results/dp_cosine.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))

import fngd  # noqa: E402
import tta_data  # noqa: E402
import tta_models  # noqa: E402


def direction(model, x, y, ids, mode, step_control, damping):
    """The direction a fresh preconditioner writes for this batch (its first, collect step),
    flattened over the preconditioned parameters."""
    pre = fngd.FNGDPreconditioner(model, num_samples=100000, max_batch=len(ids), mode=mode,
                                  step_control=step_control, damping=damping, lr=0.1)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    pre.step(ids)
    params = [p for layer in pre.layers for p in layer.params]
    d = torch.cat([p.grad.reshape(-1).double() for p in params])
    pre.close()
    return d


def plain_gradient(model, x, y, params):
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1).double() for p in params])


def cosine(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def measure(model, data, batches, N, worlds, modes, controls, damping, gen):
    model.eval()  # BatchNorm: running statistics (no coupling of a shard's samples)
    params = None
    rows = {}
    perm = torch.randperm(len(data.y_train), generator=gen)
    for b in range(batches):
        idx = perm[b * N:(b + 1) * N]
        x, y = data.x_train[idx], data.y_train[idx]
        for mode in modes:
            for sc in controls:
                exact = direction(model, x, y, idx, mode, sc, damping)
                if params is None:
                    tmp = fngd.FNGDPreconditioner(model, num_samples=1, max_batch=1)
                    params = [p for layer in tmp.layers for p in layer.params]
                    tmp.close()
                g = plain_gradient(model, x, y, params)
                key0 = (mode, sc, "sgd")
                rows.setdefault(key0, []).append((cosine(g, exact), float("nan")))
                for W in worlds:
                    n = N // W
                    avg = sum(direction(model, x[r * n:(r + 1) * n], y[r * n:(r + 1) * n],
                                        idx[r * n:(r + 1) * n], mode, sc, damping)
                              for r in range(W)) / W
                    rows.setdefault((mode, sc, W), []).append(
                        (cosine(avg, exact), float(avg.norm() / exact.norm())))
    return rows


def train_sgd(model, data, epochs, gen, lr=0.03, batch=64):
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data.y_train), generator=gen)
        for k in range(0, len(perm) - batch + 1, batch):
            i = perm[k:k + batch]
            opt.zero_grad()
            F.cross_entropy(model(data.x_train[i]), data.y_train[i]).backward()
            opt.step()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64, help="global batch N")
    ap.add_argument("--batches", type=int, default=8, help="batches per point")
    ap.add_argument("--damping", type=float, default=0.1)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dp_cosine.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    data = tta_data.load_digits()
    model = tta_models.digits_cnn()
    worlds, modes, controls = [1, 2, 4, 8], ["layer", "global"], ["none", "kl_clip"]
    t0 = time.time()
    results = []
    for point, epochs in (("init", 0), ("after 2 SGD epochs", 2)):
        train_sgd(model, data, epochs, gen)
        rows = measure(model, data, args.batches, args.batch, worlds, modes, controls,
                       args.damping, gen)
        for (mode, sc, W), v in rows.items():
            cos = torch.tensor([c for c, _ in v], dtype=torch.float64)
            ln = torch.tensor([l for _, l in v], dtype=torch.float64)
            results.append({"point": point, "mode": mode, "step_control": sc,
                            "world_size": W, "local_batch": None if W == "sgd" else args.batch // W,
                            "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                            "len_ratio_mean": float(ln.mean()) if W != "sgd" else None})
    out = {"what": "cosine(average of W local FNGD directions, exact global-Gram direction)",
           "model": "bench/tta_models.py digits_cnn, BatchNorm in eval mode",
           "global_batch": args.batch, "batches_per_point": args.batches,
           "damping": args.damping, "coef_filter": "range", "seconds": time.time() - t0,
           "torch": torch.__version__, "results": results}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"| point | mode | step control | W=1 | W=2 | W=4 | W=8 | plain gradient |")
    print("|---|---|---|---|---|---|---|---|")
    for point in ("init", "after 2 SGD epochs"):
        for mode in modes:
            for sc in controls:
                cells = []
                for W in worlds + ["sgd"]:
                    r = next(r for r in results if r["point"] == point and r["mode"] == mode
                             and r["step_control"] == sc and r["world_size"] == W)
                    cells.append(f"{r['cos_mean']:.3f} (min {r['cos_min']:.3f})"
                                 + (f", len {r['len_ratio_mean']:.2f}"
                                    if r["len_ratio_mean"] is not None else ""))
                print(f"| {point} | {mode} | {sc} | " + " | ".join(cells) + " |")
    print(f"wrote {args.out} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
