"""Data-parallel FNGD on torch.distributed: FNGDPreconditioner(..., distributed=True).

Semantics (docs/METHOD.md "Data-parallel"; README "Data-parallel"): each rank forms the Gram
of its own local batch, solves for its local alpha and writes its local direction (what
fngd_step computes alone); then the preconditioned parameters' .grad are averaged over the
ranks with one bucketed all-reduce, which replaces DDP's gradient all-reduce for them: the
direction every rank applies is

    delta = (1/W) sum_r delta_r,   delta_r = sum_{i in batch_r} alpha^(r)_i g_i,
    alpha^(r) = (K_r + n lambda I)^-1 1 (range filter: (K_r + n lambda I)^-1 K_r (...)^-1 1)

(the block-diagonal-over-ranks approximation of the global Gram's direction; its distance
from the exact one is measured by bench/dp_cosine.py). At end_epoch() of a collect epoch the
(id, alpha) pairs of every coefficient set are all-gathered and imported with
fngd_set_coefficients, so every rank holds the same coefficient table and can reuse any
sample's coefficients whichever rank it lands on in later epochs (a DistributedSampler
reshuffles samples over ranks every epoch). Reuse steps need no other communication than
the all-reduce of the d direction floats: what DDP with SGD sends.

Rules:
- step() needs the sample ids (position keys would collide across ranks) and the same batch
  size on every rank (the coefficients scale with it): checked at every step through the
  all-reduce itself (W extra floats in the first bucket), and at the first step an all-gather
  of a signature (layer set, sizes, options, batch size) refuses ranks that disagree, with a
  message naming what differs.
- Global mode's reuse epochs: call step(ids) after backward as in every other epoch; there it
  only averages the gradients of the weighted loss (with a plain model) - no fngd_step.
- Other trainable parameters of the model (modules that are not preconditioned) are averaged
  in the same buckets (reduce_other_grads=True, the default; a parameter without a .grad counts
  as zeros, as DDP does). With a DDP-wrapped model call prepare_ddp(model, pre) before wrapping:
  DDP then ignores the preconditioned parameters (no parameter is communicated twice) and
  averages the others itself; or run every forward/backward under ddp.no_sync() and let
  step() average everything.
- Buffers (BatchNorm running statistics) are not synchronised: as DDP with
  broadcast_buffers=False.
- A collective that fails raises FNGDDistributedError; a rank that dies or stalls makes the
  others fail once the process group's timeout passes (init_process_group(timeout=...)), not
  hang. A failed step is not rolled back: restart from a checkpoint.
- Checkpoints: state_dict() of rank 0 loaded on every rank restores the same state everywhere;
  take them at epoch boundaries (after end_epoch): the ids a collect epoch recorded before the
  checkpoint are not part of it.
"""

from __future__ import annotations

import zlib

import torch
import torch.distributed as dist

__all__ = ["FNGDDistributedError", "DataParallel", "prepare_ddp"]


class FNGDDistributedError(RuntimeError):
    """A collective of data-parallel FNGD failed, or the ranks disagree."""


def _group_world(group):
    return dist.get_world_size(group), dist.get_rank(group)


class DataParallel:
    """The data-parallel part of one FNGDPreconditioner (pre.distributed). Created by the
    preconditioner; its attributes may be changed before the first step:
    reduce_other_grads (bool), bucket_cap_mb (float)."""

    def __init__(self, pre, group=None, reduce_other_grads: bool = True,
                 bucket_cap_mb: float = 25.0):
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("distributed=True needs torch.distributed initialised first "
                               "(torch.distributed.init_process_group)")
        self.pre = pre
        self.group = group if group not in (None, True) else dist.group.WORLD
        self.world, self.rank = _group_world(self.group)
        self.reduce_other_grads = reduce_other_grads
        self.bucket_cap_mb = bucket_cap_mb
        self.backend = dist.get_backend(self.group)
        self._checked = False
        self._ids: list[torch.Tensor] = []   # ids this rank stepped in the current collect epoch
        self._params = None
        # Payload bytes this rank sent into collectives, and their number (bench/dp_step_time.py).
        self.comm = {"all_reduce_bytes": 0, "all_reduce_calls": 0, "gather_bytes": 0,
                     "gather_calls": 0}

    # ---- helpers --------------------------------------------------------------------------

    def _comm_device(self, dev):
        """NCCL needs CUDA tensors; Gloo takes CPU (and CUDA) tensors."""
        if self.backend == "nccl":
            return dev if dev.type == "cuda" else torch.device("cuda",
                                                                torch.cuda.current_device())
        return dev

    def _call(self, what, fn, *args, **kwargs):
        try:
            return fn(*args, group=self.group, **kwargs)
        except Exception as e:  # Gloo/NCCL errors, timeouts, a peer that exited
            raise FNGDDistributedError(
                f"fngd.distributed: {what} failed on rank {self.rank} of {self.world} (another "
                f"rank failed, stalled past the process group's timeout, or called a different "
                f"collective): {e}") from e

    def _all_gather(self, what, t):
        out = [torch.empty_like(t) for _ in range(self.world)]
        self.comm["gather_bytes"] += t.numel() * t.element_size()
        self.comm["gather_calls"] += 1
        self._call(what, dist.all_gather, out, t)
        return out

    def params(self):
        """The parameters whose .grad are averaged: the preconditioned ones, in layer order,
        then (reduce_other_grads) every other trainable parameter of the model."""
        if self._params is None:
            pre_params = [p for layer in self.pre.layers for p in layer.params]
            seen = {id(p) for p in pre_params}
            others = []
            if self.reduce_other_grads:
                others = [p for p in self.pre.model.parameters()
                          if p.requires_grad and id(p) not in seen]
            self._params = pre_params + others
        return self._params

    # ---- the first step: do the ranks agree? ----------------------------------------------

    def _signature(self, n):
        o = self.pre.options
        desc = ";".join(f"{l.name}:{l.kind}:{[tuple(p.shape) for p in l.params]}"
                        for l in self.pre.layers)
        others = "" if not self.reduce_other_grads else ";".join(
            str(tuple(p.shape)) for p in self.params()[sum(len(l.params)
                                                         for l in self.pre.layers):])
        opts = repr(sorted((k, repr(v)) for k, v in o.items()))
        fields = [n, o["max_batch"], o["num_samples"], len(self.pre.layers),
                  sum(p.numel() for l in self.pre.layers for p in l.params),
                  zlib.crc32(desc.encode()), zlib.crc32(others.encode()),
                  zlib.crc32(opts.encode())]
        return fields

    _FIELDS = ("batch size", "max_batch", "num_samples", "number of preconditioned layers",
               "preconditioned parameters", "layer set (names, kinds, shapes; CRC-32)",
               "other trainable parameters (shapes; CRC-32)", "options (CRC-32)")

    def _check_signature(self, n):
        dev = self._comm_device(self.pre._device())
        mine = torch.tensor(self._signature(n), dtype=torch.int64, device=dev)
        rows = [r.cpu().tolist() for r in self._all_gather("signature all-gather", mine)]
        bad = [k for k in range(len(self._FIELDS)) if len({r[k] for r in rows}) > 1]
        if bad:
            what = "; ".join(f"{self._FIELDS[k]}: " +
                             ", ".join(f"rank {r} {rows[r][k]}" for r in range(self.world))
                             for k in bad)
            raise FNGDDistributedError(f"fngd.distributed: the ranks disagree ({what}); every "
                                       "rank must precondition the same model with the same "
                                       "options and the same batch size")
        self._checked = True

    # ---- steps ----------------------------------------------------------------------------

    def before_step(self, n, ids):
        if ids is None:
            raise ValueError("distributed=True: step() needs the sample ids (position keys "
                             "would give samples of different ranks the same key)")
        if not self._checked:
            self._check_signature(n)

    def reuse_step(self, sample_ids) -> bool:
        """step() in a global-mode reuse epoch: average the weighted loss's gradients."""
        from . import _options as O
        ids = None if sample_ids is None else O.sample_ids(sample_ids)
        self.before_step(0 if ids is None else ids.numel(), ids)
        self.after_step(ids.numel(), ids, record=False)
        return True

    def after_step(self, n, ids, record: bool):
        """Average .grad over the ranks (bucketed), check the batch sizes agree, and record
        the ids of a collect step for the end-of-epoch exchange."""
        self.all_reduce_grads(n)
        if record:
            self._ids.append(ids.detach().to("cpu", torch.int64).reshape(-1).clone())

    def all_reduce_grads(self, n):
        params = self.params()
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        # Buckets: consecutive grads of one dtype and device, up to bucket_cap_mb each.
        cap = max(1, int(self.bucket_cap_mb * (1 << 20)))
        buckets, cur, size, key = [], [], 0, None
        for g in grads:
            k = (g.dtype, g.device)
            b = g.numel() * g.element_size()
            if cur and (k != key or size + b > cap):
                buckets.append(cur)
                cur, size = [], 0
            cur.append(g)
            size, key = size + b, k
        if cur:
            buckets.append(cur)
        sizes_checked = False
        for bi, bucket in enumerate(buckets):
            dev = self._comm_device(bucket[0].device)
            parts = [g.reshape(-1) for g in bucket]
            extra = None
            if not sizes_checked and bucket[0].dtype in (torch.float32, torch.float64):
                extra = torch.zeros(self.world, dtype=bucket[0].dtype, device=bucket[0].device)
                extra[self.rank] = float(n)
                parts.append(extra)
            flat = torch.cat(parts)
            if flat.device != dev:
                flat = flat.to(dev)
            self._call(f"all-reduce of bucket {bi} ({flat.numel()} values)", dist.all_reduce,
                       flat, op=dist.ReduceOp.SUM)
            self.comm["all_reduce_bytes"] += flat.numel() * flat.element_size()
            self.comm["all_reduce_calls"] += 1
            if extra is not None:
                self._check_sizes(flat[-self.world:])
                sizes_checked = True
                flat = flat[:-self.world]
            flat.mul_(1.0 / self.world)
            off = 0
            for g in bucket:
                k = g.numel()
                g.copy_(flat[off:off + k].view_as(g))
                off += k
        if not sizes_checked:  # no float32/64 bucket: one small integer all-reduce
            t = torch.zeros(self.world, dtype=torch.int64,
                            device=self._comm_device(params[0].device if params else
                                                     torch.device("cpu")))
            t[self.rank] = n
            self._call("batch-size all-reduce", dist.all_reduce, t, op=dist.ReduceOp.SUM)
            self._check_sizes(t)

    def _check_sizes(self, t):
        sizes = [int(v) for v in t.cpu().tolist()]
        if len(set(sizes)) > 1:
            raise FNGDDistributedError(
                f"fngd.distributed: the ranks' batch sizes differ in this step ({sizes}); "
                "data-parallel FNGD needs the same local batch size on every rank (the "
                "coefficients scale with it): drop the last incomplete batch "
                "(DataLoader(drop_last=True)) or let DistributedSampler pad")

    # ---- epochs ---------------------------------------------------------------------------

    def before_end_epoch(self, collect: bool):
        """At the end of a collect epoch: all-gather every rank's (id, alpha of every set) pairs
        and import them on every rank (the lowest rank's value wins where two ranks stored the
        same id, e.g. DistributedSampler's padding)."""
        if not collect:
            self._ids = []
            return
        h = self.pre._handle
        ids = (torch.unique(torch.cat(self._ids)) if self._ids
               else torch.empty(0, dtype=torch.int64))
        nsets = h.num_coefficient_sets()
        vals = h.coefficients_all(ids) if ids.numel() else torch.empty(0, nsets)
        dev = self._comm_device(self.pre._device())
        count = torch.tensor([ids.numel()], dtype=torch.int64, device=dev)
        counts = [int(c.item()) for c in self._all_gather("coefficient count all-gather",
                                                          count)]
        m = max(counts)
        if m == 0:
            self._ids = []
            return
        pid = torch.full((m,), -1, dtype=torch.int64)
        pid[:ids.numel()] = ids
        pval = torch.zeros(m, nsets, dtype=torch.float32)
        pval[:ids.numel()] = vals
        all_ids = self._all_gather("coefficient id all-gather", pid.to(dev))
        all_vals = self._all_gather("coefficient all-gather", pval.to(dev))
        gid = torch.cat([t.cpu()[:c] for t, c in zip(all_ids, counts)])
        gval = torch.cat([t.cpu()[:c] for t, c in zip(all_vals, counts)])
        uniq, inv = torch.unique(gid, return_inverse=True)
        first = torch.full((uniq.numel(),), gid.numel(), dtype=torch.int64)
        first.scatter_reduce_(0, inv, torch.arange(gid.numel()), reduce="amin")
        h.set_coefficients_all(gid[first].contiguous(), gval[first].contiguous())
        self._ids = []

    def reset(self):
        """After load_state_dict: nothing recorded (the ranks load the same state)."""
        self._ids = []


def prepare_ddp(model, pre) -> None:
    """Before wrapping `model` in DistributedDataParallel: make DDP ignore the parameters that
    `pre` preconditions (their directions are averaged by pre.step(), so no parameter is
    communicated twice, and DDP does not wait for the weight gradients that the drop-in
    skips), and leave the other parameters to DDP (pre.distributed.reduce_other_grads = False).
    """
    from torch.nn.parallel import DistributedDataParallel as DDP
    if isinstance(model, DDP):
        raise ValueError("prepare_ddp(model, pre) must run before DistributedDataParallel(model)"
                         ": build the preconditioner on the plain model, call prepare_ddp, "
                         "then wrap")
    if pre.distributed is None:
        raise ValueError("prepare_ddp: the preconditioner was built without distributed=True")
    ids = {id(p) for layer in pre.layers for p in layer.params}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    DDP._set_params_and_buffers_to_ignore_for_model(model, names)
    pre.distributed.reduce_other_grads = False
    pre.distributed._params = None
