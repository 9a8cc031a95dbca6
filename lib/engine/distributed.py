"""torchrun / DistributedDataParallel helpers: one process per device, NCCL on GPUs, gloo on the CPU.

Every function is a no-op (identity) in a single process, so callers never branch on the world size::

    info = init_distributed(use_cuda=True, gpu_id=0)   # reads WORLD_SIZE / RANK / LOCAL_RANK (torchrun)
    seed_per_rank(cfg.SEED)                            # seed + rank for torch, numpy, random
    loss_mean = all_reduce_mean(loss.detach())         # same value on every rank
    values = all_gather_cat(per_sample_values)         # (sum of N_r, ...) in rank order
    if is_main_process(): save(...)
    result = run_on_main(prepare_data)                 # long rank-0 work; the others wait in short polls

Collectives must be reached by every rank in the same order: call them from code whose control
flow is identical on all ranks (same step counts, same validation loop).

Also here, because the training loop needs them under torchrun:

* :class:`GlobalDWAState` - the DWA history fed with the per-lifter 3D losses averaged over the
  ranks, so every rank (and a single-process run with the global batch) derives the same weights.
* :class:`GlooSyncBatchNorm` / :func:`convert_sync_batchnorm` - batch statistics over the global
  batch on any device (torch's ``SyncBatchNorm`` is GPU-only); on CUDA torch's own is used.
* :class:`ShardSampler` - validation shards ``rank::world`` without padding.
"""
import datetime
import os
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Sampler

from lib.core.losses import DWAState
from lib.utils.errors import BadValueError, UserError


# ----------------------------------------------------------------------------- process group
@dataclass
class DistInfo:
    device: torch.device
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_dist() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return rank() == 0


# The process group's timeout when the config gives none (DIST_TIMEOUT_MINUTES, docs/config.md).
DEFAULT_TIMEOUT_MINUTES = 60.0


def cuda_device_index(local_rank: int, device_count: int) -> int:
    """The visible GPU for process ``local_rank`` of this node.

    torchrun shows every process all GPUs: process r takes GPU r. Launchers that show each process
    only its own GPU (SLURM ``--gpus-per-task=1``, a per-rank ``CUDA_VISIBLE_DEVICES``) leave one
    visible device, index 0, whatever the rank; there ``set_device(LOCAL_RANK)`` fails with
    "invalid device ordinal". ``LOCAL_RANK mod visible GPUs`` covers both (and a node that shows
    each process a group of GPUs). Tested with mocked device counts; the NCCL group on top of it
    only a GPU run shows.
    """
    if device_count < 1:
        raise RuntimeError("CUDA is available but no CUDA device is visible")
    return int(local_rank) % int(device_count)


def init_distributed(use_cuda: bool = True, gpu_id: int = 0, backend: Optional[str] = None,
                     timeout_minutes: Optional[float] = None) -> DistInfo:
    """Join the torchrun process group (``WORLD_SIZE`` > 1) or pick the single-process device.

    Under torchrun each process takes the visible GPU :func:`cuda_device_index` (``gpu_id`` is
    ignored) with NCCL, or the CPU with gloo when CUDA is off or absent. ``backend`` overrides that
    choice. ``timeout_minutes`` (the config's DIST_TIMEOUT_MINUTES; default
    :data:`DEFAULT_TIMEOUT_MINUTES`): how long a collective may wait for the slowest rank before
    the job is stopped (NCCL's own default is 10 minutes); work that only rank 0 does for longer
    goes through :func:`run_on_main`, whose waits are short.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        from lib.utils.device import select_device
        return DistInfo(select_device(gpu_id, bool(use_cuda)), 0, 1, 0)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = bool(use_cuda) and torch.cuda.is_available()
    if cuda:
        index = cuda_device_index(local_rank, torch.cuda.device_count())
        torch.cuda.set_device(index)
        device = torch.device(f"cuda:{index}")
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        minutes = DEFAULT_TIMEOUT_MINUTES if timeout_minutes is None else float(timeout_minutes)
        if not minutes > 0:
            raise BadValueError(f"DIST_TIMEOUT_MINUTES {timeout_minutes!r}: give a number of minutes > 0")
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"),
                                timeout=datetime.timedelta(minutes=minutes))
    return DistInfo(device, dist.get_rank(), dist.get_world_size(), local_rank)


def cleanup() -> None:
    """Leave the process group (end of a torchrun script); nothing in a single process.

    The barrier first: a rank that tears gloo down while its peer still talks to it aborts
    ("terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def barrier() -> None:
    if is_dist():
        dist.barrier()


def seed_per_rank(seed: int, rank_: Optional[int] = None) -> int:
    """Seed torch, numpy and random with ``seed + rank`` (rank 0 = the single-process stream).

    Distinct streams per rank keep augmentation and dropout independent across replicas; DDP
    broadcasts rank 0's initial weights, so the model still starts identical everywhere.
    Returns the seed used.
    """
    s = int(seed) + (rank() if rank_ is None else int(rank_))
    torch.manual_seed(s)
    np.random.seed(s % (2 ** 32))
    random.seed(s)
    return s


# ----------------------------------------------------------------------------- rank 0's long work
class RankZeroFailedError(UserError, RuntimeError):
    """Rank 0 stopped with an error in work the other ranks were waiting for (rank 0's output names it)."""


def _collective_device() -> torch.device:
    """Where this group's collectives take their tensors: this process's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def run_on_main(fn: Callable[[], Any], poll_s: float = 5.0) -> Any:
    """``fn()`` on rank 0 only; its (picklable) result on every rank (``fn()`` in a single process).

    The other ranks never wait inside one collective for the whole of ``fn``: preparing Human3.6M
    or Panoptic takes longer than any collective timeout (NCCL stops a job whose collective waited
    10 minutes by default). Rank 0 runs ``fn`` in a thread and broadcasts every ``poll_s`` seconds
    whether it has finished, so each wait lasts at most ``poll_s``; ``fn`` returning at once costs
    one broadcast. When ``fn`` raises, rank 0 re-raises its error and the others raise
    :class:`RankZeroFailedError`, instead of waiting for a result that never comes. ``fn`` runs
    outside the main thread and must not use collectives itself. Tested with gloo, whose timeout
    stops a plain wait the same way; NCCL's watchdog only a GPU run shows.
    """
    if not is_dist():
        return fn()
    main = is_main_process()
    box, worker = {}, None
    if main:
        def work():
            try:
                box["value"] = fn()
            except BaseException as err:     # noqa: BLE001 - handed to the main thread, raised there
                box["error"] = err

        worker = threading.Thread(target=work, name="l2d-rank0-work", daemon=True)
        worker.start()
    state = torch.zeros(1, dtype=torch.long, device=_collective_device())   # 0 running, 1 done, 2 failed
    while True:
        if main:
            worker.join(poll_s)
            state.fill_(0 if worker.is_alive() else 2 if "error" in box else 1)
        dist.broadcast(state, src=0)
        done = int(state)                    # host sync: once per poll, never in a training step
        if done:
            break
    if done == 2:
        if main:
            raise box["error"]
        raise RankZeroFailedError(f"rank 0 stopped with an error (its output above names it) while rank {rank()} "
                                  f"waited for it")
    out = [box.get("value")]
    dist.broadcast_object_list(out, src=0)
    return out[0]


# ----------------------------------------------------------------------------- reductions
def _all_reduce(t: torch.Tensor, op) -> torch.Tensor:
    """``op`` over ranks into a new tensor (``t`` is untouched); identity in a single process."""
    if not is_dist():
        return t
    out = t.detach().clone()
    dist.all_reduce(out, op=op)
    return out


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a new tensor; ``t`` is untouched). No host sync on GPUs."""
    return _all_reduce(t, dist.ReduceOp.SUM) if is_dist() else t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (a new tensor). Equal to the global-batch mean when per-rank batches are equal."""
    if not is_dist():
        return t
    return all_reduce_sum(t) / dist.get_world_size()


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    return _all_reduce(t, dist.ReduceOp.MAX) if is_dist() else t


def all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    return _all_reduce(t, dist.ReduceOp.MIN) if is_dist() else t


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """(N_r, ...) on each rank -> (sum_r N_r, ...) on every rank, rank 0's rows first.

    Ranks may hold different N_r (e.g. 7 and 6 validation samples): rows are padded to the
    largest N_r for the collective and the padding is dropped again.
    """
    if not is_dist():
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device, dtype=torch.long)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    rows = max(sizes)
    padded = t
    if t.shape[0] < rows:
        pad = torch.zeros((rows - t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
        padded = torch.cat([t, pad])
    parts = [torch.empty((rows,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def all_gather_object(obj: Any) -> List[Any]:
    """Any picklable ``obj`` from every rank, as a list indexed by rank (``[obj]`` in one process)."""
    if not is_dist():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def first_bad_step(bad_step: torch.Tensor) -> torch.Tensor:
    """Collective non-finite check: the earliest flagged step over all ranks, -1 if none.

    ``bad_step`` (0-dim long) is a rank's first step with a non-finite loss or -1. Every rank gets
    the same answer, so all stop together instead of the healthy ones waiting forever in the
    next gradient all-reduce.
    """
    if not is_dist():
        return bad_step
    big = torch.iinfo(torch.long).max
    flagged = torch.where(bad_step >= 0, bad_step, torch.full_like(bad_step, big))
    earliest = all_reduce_min(flagged)
    return torch.where(earliest == big, torch.full_like(earliest, -1), earliest)


# ----------------------------------------------------------------------------- replicas
def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank.

    Without SyncBatchNorm each rank updates its running statistics from its own shard after
    DDP's last per-forward broadcast; validation and checkpoints then use rank 0's.
    """
    if not is_dist():
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)


@torch.no_grad()
def max_replica_difference(module: nn.Module) -> float:
    """Largest |value - rank 0's value| over every parameter and buffer, on every rank (0.0 alone).

    One broadcast of the model: a check that DDP kept the replicas identical.
    """
    if not is_dist():
        return 0.0
    worst = torch.zeros((), dtype=torch.float64, device=next(module.parameters()).device)
    for t in list(module.parameters()) + list(module.buffers()):
        ref = t.detach().clone()
        dist.broadcast(ref, src=0)
        if t.numel():
            worst = torch.maximum(worst, (t.detach().double() - ref.double()).abs().max())
    return float(all_reduce_max(worst))


# ----------------------------------------------------------------------------- DWA over the global batch
class GlobalDWAState(DWAState):
    """:class:`DWAState` fed with the per-lifter losses averaged over the ranks.

    With equal per-rank batches the average equals the global-batch loss, so every rank derives
    the same weights as a single-process run with the whole batch.
    """

    @classmethod
    def wrap(cls, state: DWAState) -> "GlobalDWAState":
        new = cls(state.K, state.T)
        new.history = state.history
        new.num_updates = state.num_updates
        return new

    def update(self, losses: torch.Tensor) -> None:
        # clone: all-reduce works in place and ``losses`` may share storage with the autograd graph
        super().update(all_reduce_mean(losses.detach().clone()))


def make_dwa_global(objective) -> None:
    """Replace ``objective.dwa`` (an :class:`L2DObjective`'s) by its rank-averaged version in place."""
    if is_dist() and not isinstance(objective.dwa, GlobalDWAState):
        objective.dwa = GlobalDWAState.wrap(objective.dwa)


# ----------------------------------------------------------------------------- SyncBatchNorm on any device
class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the backward sums the incoming gradients over ranks too."""

    @staticmethod
    def forward(ctx, x):
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training statistics cover the global batch (all ranks), on any device.

    Shapes: x (N, C, *): it stands in for BatchNorm1d/2d/3d alike. Mean and biased variance come
    from per-channel sums over all ranks (two all-reduces: sum -> mean, then sum of squared
    deviations), in float32 at least; the running variance takes the unbiased global variance, as
    BatchNorm. Eval mode and a single process fall back to plain BatchNorm. DDP averages the
    parameter gradients; the all-reduce in the backward sums the statistics' gradients over ranks,
    so the result equals one BatchNorm over the concatenated batch.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"BatchNorm expects (N, C, *) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_dist()):
            return super().forward(x)
        c = x.shape[1]
        dims = (0,) + tuple(range(2, x.dim()))
        shape = (1, c) + (1,) * (x.dim() - 2)
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x   # statistics in >= float32
        count = torch.tensor([float(x.numel() // c)], device=x.device, dtype=xf.dtype)
        total = _AllReduceSum.apply(torch.cat([xf.sum(dim=dims), count]))
        n = total[-1]
        mean = total[:c] / n
        centred = xf - mean.view(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dim=dims)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                unbiased = var.detach() * (n / (n - 1).clamp(min=1))
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm (1d/2d/3d) -> synchronised BatchNorm (torch's on CUDA, :class:`GlooSyncBatchNorm` else).

    Parameters and running statistics are kept (the same tensors; state_dict keys unchanged).
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        new = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child, device))
    return module


# ----------------------------------------------------------------------------- samplers
class ShardSampler(Sampler):
    """Indices ``rank::world`` without padding: over all ranks every sample exactly once (validation)."""

    def __init__(self, n: int, rank_: int, world: int):
        self.indices = list(range(int(rank_), int(n), int(world)))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)
