"""Data-parallel FNGD (fngd.distributed) with real processes: torch.multiprocessing spawn, Gloo
on the CPU, 2 processes (4 for one case). The workers are in _dist_workers.py.

- the averaged direction equals the documented formula (the mean of the ranks' local
  directions, each computed here by a fresh single-process preconditioner);
- after the collect epoch every rank holds the same coefficient table, with every id any rank
  saw stored (no fallback ids in the reuse epochs);
- parameters are bit-identical across ranks after 3 epochs, and equal to a run resumed at
  epoch 2 from rank 0's state_dict loaded on every rank;
- ranks that disagree on the layer set or the batch size all raise FNGDDistributedError;
  ids stored by two ranks (a padding sampler) get the lowest rank's values on every rank;
- a rank that fails (raises and exits, or stalls) makes the other fail within the process
  group's timeout instead of hanging.
"""

import os
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))

import _dist_workers as W  # noqa: E402

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with Gloo is not available")


def run(fn, world, tmp_path, *args):
    mp.spawn(fn, args=(world, str(tmp_path)) + args, nprocs=world, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.parametrize("world,modes", [(2, ("layer", "global")), (4, ("layer",))])
def test_training_matches_formula_replicates_and_stays_identical(tmp_path, world, modes):
    if world == 4 and os.environ.get("FNGD_SKIP_SLOW"):
        pytest.skip("FNGD_SKIP_SLOW")
    out = run(W.train, world, tmp_path, modes)
    for mode in modes:
        check_training([r[mode] for r in out], world)


def check_training(res, world):
    for r in res:
        assert r["direction_err"] < 1e-5, r["direction_err"]
    # Coefficients replicated: the same table (bit for bit, NaN where none) on every rank,
    # holding every id of the collect epoch.
    seen = torch.unique(torch.cat([torch.cat(W.epoch_batches(0, r, world))
                                   for r in range(world)]))
    for r in res:
        assert r["stored"] == seen.numel()
        assert torch.equal(torch.isnan(r["table"]), torch.isnan(res[0]["table"]))
        t, t0 = torch.nan_to_num(r["table"], nan=0.0), torch.nan_to_num(res[0]["table"], nan=0.0)
        assert torch.equal(t.view(torch.int32), t0.view(torch.int32))
        assert not torch.isnan(r["table"][:, seen]).any()
        assert r["fallback_ids"] == 0
    # Parameters: bit-identical across ranks, and resumed == uninterrupted.
    for r in res:
        assert torch.equal(r["params"].view(torch.int32), res[0]["params"].view(torch.int32))
        assert torch.equal(r["params_resumed"].view(torch.int32),
                           r["params"].view(torch.int32))


def test_ranks_that_disagree_all_raise(tmp_path):
    res = run(W.disagree, 2, tmp_path)
    expect = {"layers": "layer set", "batch_first": "batch size",
              "batch_later": "batch sizes differ"}
    for r in res:
        for what, text in expect.items():
            assert text in r[what], (what, r[what])
    # Overlapping ids: the same table on both ranks; rank 0's values win on ids 4..7.
    t0, t1 = res[0]["table"], res[1]["table"]
    assert torch.equal(torch.isnan(t0), torch.isnan(t1))
    assert torch.equal(torch.nan_to_num(t0), torch.nan_to_num(t1))
    h = W.N_LOCAL // 2
    assert torch.equal(t0[:, :W.N_LOCAL], res[0]["local"][:, :W.N_LOCAL])
    assert torch.equal(t0[:, W.N_LOCAL:W.N_LOCAL + h], res[1]["local"][:, W.N_LOCAL:W.N_LOCAL + h])
    assert not torch.equal(res[0]["local"][:, h:W.N_LOCAL], res[1]["local"][:, h:W.N_LOCAL])
    assert not torch.isnan(t0[:, :W.N_LOCAL + h]).any()


@pytest.mark.parametrize("how", ["raise", "stall"])
def test_failed_rank_makes_the_others_fail_not_hang(tmp_path, how):
    ctx = mp.start_processes(W.failing, args=(2, str(tmp_path), how), nprocs=2, join=False,
                             start_method="spawn")
    t0 = time.time()
    try:
        ctx.processes[0].join(60)
        assert not ctx.processes[0].is_alive(), "rank 0 hangs"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join(10)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    assert "fngd.distributed" in r0["msg"] and "failed on rank 0" in r0["msg"], r0["msg"]
    assert r0["seconds"] < 30
    assert time.time() - t0 < 60


def test_ddp_wrapped_model(tmp_path):
    """prepare_ddp + DDP, and DDP under no_sync(), give the parameters of the plain model's
    run (2 ranks: averaging by halves is exact, so bit for bit), identical across ranks."""
    res = run(W.ddp, 2, tmp_path)
    want = res[0]["plain"].view(torch.int32)
    for r in res:
        for how in ("plain", "prepare_ddp", "no_sync"):
            assert torch.equal(r[how].view(torch.int32), want), how


def test_single_process_rules(tmp_path):
    """In this process (a world of one): distributed=True needs an initialised process group;
    step() refuses position keys; global-mode reuse epochs take step(ids); prepare_ddp's
    misuse is refused."""
    import torch.nn.functional as F

    import fngd
    from fngd.distributed import prepare_ddp
    m = W.model()
    if not dist.is_initialized():
        with pytest.raises(RuntimeError, match="init_process_group"):
            fngd.FNGDPreconditioner(m, num_samples=64, max_batch=8, distributed=True)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/rv", rank=0, world_size=1)
    try:
        x, y = W.data(1)
        pre = fngd.FNGDPreconditioner(m, num_samples=64, max_batch=8, mode="global",
                                      distributed=True)
        F.cross_entropy(m(x[:8]), y[:8]).backward()
        with pytest.raises(ValueError, match="sample ids"):
            pre.step(None)
        m.zero_grad()
        F.cross_entropy(m(x[:8]), y[:8]).backward()  # the refused step dropped the captures
        idx = torch.arange(8)
        assert pre.step(idx)
        pre.end_epoch()
        assert pre.needs_loss_weights
        m.zero_grad()
        (pre.loss_weights(idx) * F.cross_entropy(m(x[:8]), y[:8], reduction="none")).mean() \
            .backward()
        g = [p.grad.clone() for p in m.parameters()]
        assert pre.step(idx)  # only averages (a world of one: unchanged)
        assert all(torch.equal(a, p.grad) for a, p in zip(g, m.parameters()))
        assert pre.distributed.comm["all_reduce_calls"] == 2
        plain = fngd.FNGDPreconditioner(W.model(), num_samples=64, max_batch=8)
        with pytest.raises(ValueError, match="distributed=True"):
            prepare_ddp(plain.model, plain)
        ddp = torch.nn.parallel.DistributedDataParallel(W.model())
        with pytest.raises(ValueError, match="before DistributedDataParallel"):
            prepare_ddp(ddp, pre)
        pre.close()
        plain.close()
    finally:
        dist.destroy_process_group()
