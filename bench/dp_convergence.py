#!/usr/bin/env python3
"""Data-parallel FNGD: what the block-diagonal-over-ranks direction does to convergence.

Trains bench/tta_models.py's digits CNN on the digits training set with a global batch of 64
split over W = 1, 2, 4, 8 real processes (torch.distributed, Gloo, fngd.distributed: local
directions averaged, coefficients replicated after the collect epoch), for both coefficient
modes at the learning rates the time-to-accuracy study selected (per layer 0.3, global 0.03,
SGD 0.03; momentum 0.9, constant rate, library defaults otherwise), and SGD at W = 1 for
reference (data-parallel SGD is the same method for every W up to BatchNorm's local
statistics). Every rank's BatchNorm uses its local batch statistics, as in any data-parallel
run without SyncBatchNorm. Reported per run: test accuracy after every epoch (rank 0's model;
the parameters are identical on every rank), final accuracy, first epoch at >= 95 %. One seed
per setting (the time-to-accuracy study's seeds vary by about 0.005 in final accuracy).

    FNGD_LIBRARY=build/libfngd.so PYTHONPATH=python python bench/dp_convergence.py
writes bench/results/dp_convergence.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))

GLOBAL_BATCH = 64
LR = {"sgd": 0.03, "layer": 0.3, "global": 0.03}


def worker(rank, world, tmp, method, epochs, out_path):
    import fngd
    import tta_data
    import tta_models
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rv", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=300))
    data = tta_data.load_digits()
    x, y, n = data.x_train, data.y_train, len(data.y_train)
    b = GLOBAL_BATCH // world
    torch.manual_seed(0)
    m = tta_models.digits_cnn()
    opt = torch.optim.SGD(m.parameters(), lr=LR[method], momentum=0.9)
    pre = None
    if method != "sgd":
        pre = fngd.FNGDPreconditioner(m, num_samples=n, max_batch=b, mode=method, lr=opt,
                                      distributed=True)
    acc = []
    for epoch in range(epochs):
        m.train()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        steps = n // GLOBAL_BATCH
        for s in range(steps):
            idx = perm[s * GLOBAL_BATCH:(s + 1) * GLOBAL_BATCH][rank * b:(rank + 1) * b]
            opt.zero_grad()
            out = m(x[idx])
            if pre is not None and pre.needs_loss_weights:
                (pre.loss_weights(idx) * F.cross_entropy(out, y[idx], reduction="none")) \
                    .mean().backward()
            else:
                F.cross_entropy(out, y[idx]).backward()
            if pre is not None:
                pre.step(idx)
            else:  # data-parallel SGD: average the gradients
                for p in m.parameters():
                    dist.all_reduce(p.grad)
                    p.grad.mul_(1.0 / world)
            opt.step()
        if pre is not None:
            pre.end_epoch()
        m.eval()
        with torch.no_grad():
            acc.append(float((m(data.x_test).argmax(1) == data.y_test).float().mean()))
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(acc, f)
    if pre is not None:
        pre.close()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--worlds", default="1,2,4,8")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dp_convergence.json"))
    args = ap.parse_args()
    worlds = [int(w) for w in args.worlds.split(",")]
    runs = [("sgd", 1)] + [(meth, w) for meth in ("layer", "global") for w in worlds]
    results = []
    t0 = time.time()
    for meth, w in runs:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "acc.json")
            t = time.time()
            mp.spawn(worker, args=(w, tmp, meth, args.epochs, path), nprocs=w)
            with open(path) as f:
                acc = json.load(f)
        hit = next((e + 1 for e, a in enumerate(acc) if a >= 0.95), None)
        results.append({"method": meth, "world_size": w, "local_batch": GLOBAL_BATCH // w,
                         "lr": LR[meth], "test_acc": acc, "final_acc": acc[-1],
                         "epochs_to_95": hit, "seconds": time.time() - t})
        print(f"{meth} W={w}: final {acc[-1]:.3f}, 95% after {hit} epochs", flush=True)
    out = {"what": "digits CNN, global batch 64 over W Gloo processes, fngd.distributed",
           "epochs": args.epochs, "seconds": time.time() - t0, "torch": torch.__version__,
           "results": results}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print("| method | W | local batch | final test acc | epochs to 95 % |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['world_size']} | {r['local_batch']} | "
              f"{r['final_acc']:.3f} | {r['epochs_to_95']} |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
