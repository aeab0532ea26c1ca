#!/usr/bin/env python3
"""Data-parallel FNGD against DDP with SGD on 2 CPU processes (Gloo), measured in one run:
bytes communicated per step and rank, and step time.

Configurations (each rank: its own copy of bench/tta_models.py's digits CNN, same weights,
torch at 1 thread; local batch 32 of the digits training set; SGD with momentum 0.9 as the
optimizer of every configuration):
  ddp-sgd        DistributedDataParallel(model), plain backward, optimizer step
  fngd-collect   FNGDPreconditioner(distributed=True), per-layer mode, in its collect epoch
                 (Gram, Cholesky, coefficients stored), step(idx) = local direction + one
                 bucketed all-reduce
  fngd-reuse     the same after one collect epoch whose coefficients were replicated
  global-reuse   global mode after its collect epoch: weighted loss, step(idx) = all-reduce only
Bytes: DDP's through a counting communication hook around its all-reduce; FNGD's from
pre.distributed.comm (the all-reduced payload, including the W batch-size floats). The
end-of-collect-epoch exchange (all-gather of (id, alpha) pairs and import) is timed once.

Timing: after warm-up, rounds of a block of 10 steps per configuration, the order rotating
each round; the step is wall time on rank 0 (both ranks are in lockstep through the
collectives), medians over all steps and ratios to ddp-sgd's median.

    FNGD_LIBRARY=build/libfngd.so PYTHONPATH=python python bench/dp_step_time.py
writes bench/results/dp_step_time.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
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

B = 32


def worker(rank, world, tmp, rounds, block, out_path):
    import fngd
    import tta_data
    import tta_models
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rv", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    data = tta_data.load_digits()
    x, y = data.x_train, data.y_train
    n = len(y)
    per_epoch = n // (B * world)

    def batches(epoch):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        mine = perm[rank::world]
        return [mine[s * B:(s + 1) * B] for s in range(per_epoch)]

    def fresh():
        torch.manual_seed(0)
        return tta_models.digits_cnn()

    configs = {}
    # DDP + SGD, with a byte-counting hook.
    m = fresh()
    ddp = DDP(m)
    counted = {"bytes": 0, "calls": 0}

    def hook(state, bucket):
        buf = bucket.buffer()
        counted["bytes"] += buf.numel() * buf.element_size()
        counted["calls"] += 1
        return default_hooks.allreduce_hook(None, bucket)
    ddp.register_comm_hook(None, hook)
    configs["ddp-sgd"] = dict(net=ddp, model=m, pre=None,
                              opt=torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.9))

    def fngd_config(mode, collect_first):
        m = fresh()
        pre = fngd.FNGDPreconditioner(m, num_samples=n, max_batch=B, mode=mode, lr=0.03,
                                      distributed=True)
        opt = torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.9)
        c = dict(net=m, model=m, pre=pre, opt=opt)
        if collect_first:
            for idx in batches(0):
                run_step(c, idx)
            t0 = time.perf_counter()
            pre.end_epoch()
            c["exchange_s"] = time.perf_counter() - t0
        return c

    def run_step(c, idx):
        net, pre, opt = c["net"], c["pre"], c["opt"]
        opt.zero_grad()
        out = net(x[idx])
        if pre is not None and pre.needs_loss_weights:
            (pre.loss_weights(idx) * F.cross_entropy(out, y[idx], reduction="none")).mean() \
                .backward()
        else:
            F.cross_entropy(out, y[idx]).backward()
        if pre is not None:
            pre.step(idx)
        opt.step()

    configs["fngd-collect"] = fngd_config("layer", False)
    configs["fngd-reuse"] = fngd_config("layer", True)
    configs["global-reuse"] = fngd_config("global", True)
    names = list(configs)
    times = {k: [] for k in names}
    comm = {}
    step_no = 0
    all_batches = [b for e in range(1, 4) for b in batches(e)]
    for k in names:  # warm-up, and the bytes of one step
        before = (dict(counted) if k == "ddp-sgd" else dict(configs[k]["pre"].distributed.comm))
        run_step(configs[k], all_batches[0])
        after = counted if k == "ddp-sgd" else configs[k]["pre"].distributed.comm
        comm[k] = {"bytes_per_step": (after["bytes"] - before["bytes"]) if k == "ddp-sgd"
                   else after["all_reduce_bytes"] - before["all_reduce_bytes"],
                   "collectives_per_step": (after["calls"] - before["calls"]) if k == "ddp-sgd"
                   else after["all_reduce_calls"] - before["all_reduce_calls"]}
        for _ in range(3):
            run_step(configs[k], all_batches[1])
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            dist.barrier()
            for _ in range(block):
                idx = all_batches[step_no % len(all_batches)]
                step_no += 1
                t0 = time.perf_counter()
                run_step(configs[k], idx)
                times[k].append(time.perf_counter() - t0)
    if rank == 0:
        med = {k: statistics.median(v) for k, v in times.items()}
        params = sum(p.numel() for p in configs["ddp-sgd"]["model"].parameters())
        res = {"world_size": world, "local_batch": B, "model": "digits_cnn", "params": params,
               "torch_threads": 1, "steps_per_config": len(times["ddp-sgd"]),
               "median_step_s": med, "ratio_to_ddp_sgd": {k: med[k] / med["ddp-sgd"]
                                                        for k in med},
               "comm": comm,
               "exchange_s": {k: configs[k]["exchange_s"] for k in ("fngd-reuse",
                                                                    "global-reuse")},
               "exchange_bytes_per_rank": {
                   k: configs[k]["pre"].distributed.comm["gather_bytes"]
                   for k in ("fngd-reuse", "global-reuse")},
               "torch": torch.__version__}
        with open(out_path, "w") as f:
            json.dump(res, f, indent=1)
    for c in configs.values():
        if c["pre"] is not None:
            c["pre"].close()
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "dp_step_time.json"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(2, tmp, args.rounds, args.block, args.out), nprocs=2)
    with open(args.out) as f:
        r = json.load(f)
    print(f"digits CNN ({r['params']} parameters), 2 CPU processes (Gloo), local batch {B}")
    print("| configuration | step (ms) | / ddp-sgd | bytes sent per step and rank | "
          "collectives per step |")
    print("|---|---|---|---|---|")
    for k, t in r["median_step_s"].items():
        c = r["comm"][k]
        print(f"| {k} | {1e3 * t:.2f} | {r['ratio_to_ddp_sgd'][k]:.2f}x | "
              f"{c['bytes_per_step']} | {c['collectives_per_step']} |")
    print("end of the collect epoch (all-gather of (id, alpha) pairs + import): " +
          ", ".join(f"{k} {1e3 * s:.1f} ms, {r['exchange_bytes_per_rank'][k]} bytes sent"
                    for k, s in r["exchange_s"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
