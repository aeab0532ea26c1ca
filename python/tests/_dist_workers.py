"""Worker processes of test_distributed.py (torch.multiprocessing.spawn, Gloo). Each worker
writes its findings to <tmp>/rank<r>.pt (or raises: spawn reports the failure)."""

from __future__ import annotations

import copy
import datetime
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import fngd  # noqa: E402
from fngd.distributed import FNGDDistributedError  # noqa: E402

N_LOCAL = 8        # batch size per rank
STEPS = 3          # steps per epoch per rank


def finish():
    """Both ranks done with every collective, then exit without running the process group's
    destructors: under load, tearing Gloo down while the peer still exits sometimes ends in
    std::terminate (SIGABRT) in the child, which spawn reports as a failure."""
    dist.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def init(rank, world, tmp, timeout_s=30):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=timeout_s))


def model(seed=0, extra=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(6, 10), nn.LayerNorm(10), nn.ReLU(), nn.Linear(10, 4)]
    if extra:  # a module that is not preconditioned (kept on plain gradients)
        layers.insert(0, nn.PReLU())
    return nn.Sequential(*layers)


def data(world):
    g = torch.Generator().manual_seed(5)
    n = N_LOCAL * STEPS * world
    return torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


def epoch_batches(epoch, rank, world):
    """DistributedSampler-like: a fresh permutation per epoch, rank r takes every W-th."""
    n = N_LOCAL * STEPS * world
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(100 + epoch))
    mine = perm[rank::world]
    return [mine[s * N_LOCAL:(s + 1) * N_LOCAL] for s in range(STEPS)]


def make_pre(m, mode, **kw):
    return fngd.FNGDPreconditioner(m, num_samples=N_LOCAL * STEPS * 8, max_batch=N_LOCAL,
                                   mode=mode, step_control="none", distributed=True,
                                   unsupported="skip", **kw)


def train_epoch(m, pre, opt, x, y, epoch, rank, world):
    for idx in epoch_batches(epoch, rank, world):
        opt.zero_grad()
        out = m(x[idx])
        if pre.needs_loss_weights:
            w = pre.loss_weights(idx)
            (w * F.cross_entropy(out, y[idx], reduction="none")).mean().backward()
        else:
            F.cross_entropy(out, y[idx]).backward()
        pre.step(idx)
        opt.step()
    pre.end_epoch()


def flat_params(m):
    return torch.cat([p.detach().reshape(-1) for p in m.parameters()])


def local_direction(m_state, x, y, idx, mode):
    """What one process computes for one rank's batch alone (fresh, not distributed)."""
    m = model()
    m.load_state_dict(m_state)
    pre = fngd.FNGDPreconditioner(m, num_samples=N_LOCAL * STEPS * 8, max_batch=N_LOCAL,
                                  mode=mode, step_control="none")
    F.cross_entropy(m(x[idx]), y[idx]).backward()
    pre.step(idx)
    d = [p.grad.detach().clone() for p in m.parameters()]
    pre.close()
    return d


def train(rank, world, tmp, modes):
    """train_mode for each of `modes` in one process group; results by mode."""
    init(rank, world, tmp)
    out = {mode: train_mode(rank, world, mode) for mode in modes}
    torch.save(out, f"{tmp}/rank{rank}.pt")
    finish()


def train_mode(rank, world, mode):
    """Direction formula at the first step, replicated coefficients after epoch 0,
    bit-identical parameters after 3 epochs, resume from rank 0's state_dict."""
    x, y = data(world)
    m = model()
    pre = make_pre(m, mode)
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    res = {}
    # First step by hand: the averaged direction against the formula.
    state0 = {k: v.clone() for k, v in m.state_dict().items()}
    idx = epoch_batches(0, rank, world)[0]
    opt.zero_grad()
    F.cross_entropy(m(x[idx]), y[idx]).backward()
    pre.step(idx)
    got = [p.grad.detach().clone() for p in m.parameters()]
    locs = [local_direction(state0, x, y, epoch_batches(0, r, world)[0], mode)
            for r in range(world)]
    want = [sum(ds[k] for ds in locs) / world for k in range(len(got))]
    res["direction_err"] = max(float((a - b).norm() / b.norm()) for a, b in zip(got, want))
    opt.step()
    for idx in epoch_batches(0, rank, world)[1:]:
        opt.zero_grad()
        F.cross_entropy(m(x[idx]), y[idx]).backward()
        pre.step(idx)
        opt.step()
    pre.end_epoch()
    nsets = len(pre.layers) if mode == "layer" else 1
    res["table"] = torch.stack([pre.coefficients(set=s) for s in range(nsets)])
    res["stored"] = pre.stats()["coefs_stored"]
    res["fallback_means"] = None
    for epoch in (1, 2):
        if epoch == 2:  # resume: rank 0's state, broadcast, loaded everywhere
            sd = [{"model": m.state_dict(), "opt": opt.state_dict(), "pre": pre.state_dict()}
                  if rank == 0 else None]
            dist.broadcast_object_list(sd, src=0)
            sd = copy.deepcopy(sd)  # rank 0: not the live tensors (as a file would be)
            m2 = model(seed=123)
            m2.load_state_dict(sd[0]["model"])
            pre2 = make_pre(m2, mode)
            pre2.load_state_dict(sd[0]["pre"])
            opt2 = torch.optim.SGD(m2.parameters(), lr=0.05, momentum=0.9)
            opt2.load_state_dict(sd[0]["opt"])
            train_epoch(m2, pre2, opt2, x, y, epoch, rank, world)
        train_epoch(m, pre, opt, x, y, epoch, rank, world)
    res["params"] = flat_params(m)
    res["params_resumed"] = flat_params(m2)
    res["fallback_ids"] = pre.stats()["fallback_ids"]
    pre.close()
    pre2.close()
    return res


def disagree(rank, world, tmp):
    """Ranks that disagree on the layer set or the batch size (at the first step, or in a
    later one): every rank raises. The three cases run one after the other in one group (the
    collectives themselves succeed; the ranks refuse what they gathered)."""
    init(rank, world, tmp)
    x, y = data(world)
    out = {}
    for what in ("layers", "batch_first", "batch_later"):
        m = model()
        if what == "layers" and rank == 1:
            m = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
        pre = make_pre(m, "layer")
        msg = ""
        try:
            for s in range(2):
                k = N_LOCAL
                if what == "batch_first" or (what == "batch_later" and s == 1):
                    k = N_LOCAL - rank
                idx = torch.arange(k) + N_LOCAL * s + 2 * N_LOCAL * rank
                m.zero_grad()
                F.cross_entropy(m(x[idx]), y[idx]).backward()
                pre.step(idx)
        except FNGDDistributedError as e:
            msg = str(e)
        pre.close()
        out[what] = msg
    # Overlapping ids (a padding sampler): ranks 0 and 1 both step ids 4..7; after end_epoch
    # every rank holds rank 0's values for them.
    m = model()
    pre = make_pre(m, "layer")
    idx = torch.arange(N_LOCAL) + (N_LOCAL // 2) * rank
    m.zero_grad()
    F.cross_entropy(m(x[idx] * (1 + rank)), y[idx]).backward()  # different data per rank
    pre.step(idx)
    nsets = len(pre.layers)
    out["local"] = torch.stack([pre.coefficients(set=s) for s in range(nsets)])
    pre.end_epoch()
    out["table"] = torch.stack([pre.coefficients(set=s) for s in range(nsets)])
    pre.close()
    torch.save(out, f"{tmp}/rank{rank}.pt")
    finish()


def failing(rank, world, tmp, how):
    """Rank 1 fails before the collective (raises and exits, or stalls): the other ranks get
    an error within the process group's timeout instead of hanging."""
    init(rank, world, tmp, timeout_s=3)
    x, y = data(world)
    m = model()
    pre = make_pre(m, "layer")
    idx = torch.arange(N_LOCAL) + N_LOCAL * rank
    F.cross_entropy(m(x[idx]), y[idx]).backward()
    if rank == 1:
        if how == "raise":
            raise RuntimeError("rank 1 fails on purpose before its step")
        time.sleep(30)  # stalls past the timeout; killed by the test afterwards
        return
    t0 = time.time()
    msg = ""
    try:
        pre.step(idx)
    except FNGDDistributedError as e:
        msg = str(e)
    torch.save({"msg": msg, "seconds": time.time() - t0}, f"{tmp}/rank{rank}.pt")
    os._exit(0)  # do not wait for the failed peer in destroy_process_group


def ddp(rank, world, tmp):
    """DistributedDataParallel-wrapped model with a module that is not preconditioned (PReLU),
    three ways in one group: "plain" (no DDP: pre.step averages every gradient),
    "prepare_ddp" (DDP ignores the preconditioned parameters and averages the PReLU weight
    itself) and "no_sync" (DDP wrapper, every step under ddp.no_sync(): pre.step averages
    every gradient)."""
    from torch.nn.parallel import DistributedDataParallel as DDP
    from fngd.distributed import prepare_ddp
    init(rank, world, tmp)
    x, y = data(world)
    out = {}
    for how in ("plain", "prepare_ddp", "no_sync"):
        m = model(extra=True)
        pre = make_pre(m, "layer")
        net = m
        if how == "prepare_ddp":
            prepare_ddp(m, pre)
            net = DDP(m)
        elif how == "no_sync":
            net = DDP(m)
        opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
        for epoch in range(2):
            for idx in epoch_batches(epoch, rank, world):
                opt.zero_grad()
                if how == "no_sync":
                    with net.no_sync():
                        F.cross_entropy(net(x[idx]), y[idx]).backward()
                else:
                    F.cross_entropy(net(x[idx]), y[idx]).backward()
                pre.step(idx)
                opt.step()
            pre.end_epoch()
        out[how] = flat_params(m)
        pre.close()
    torch.save(out, f"{tmp}/rank{rank}.pt")
    finish()
