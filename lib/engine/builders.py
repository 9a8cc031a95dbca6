"""Everything a run is built from, made in one place: loaders, detectors, lifter sets, optimizers.

The trainer, the lifter trainer, the evaluator, the pipeline and the benchmarks all build through
these functions, so a setting means the same thing everywhere.

* Loaders: :class:`EpochRandomSampler` (a permutation per epoch, drawn from ``SEED + epoch``, so a
  resumed run sees the same order) and :func:`make_loader` (``WORKERS`` capped by the CPUs of the
  process, :func:`loader_workers`; OpenCV single-threaded in the workers; pinned memory on CUDA);
  :func:`valid_loader`, replayed from memory with TEST.CACHE_MB (:class:`ReplayLoader`);
  :func:`train_dataset_view`, an un-augmented training split's samples kept in memory with
  TRAIN.CACHE_MB (:class:`SampleCache`).
* Detectors: :func:`build_detector` (initialised from ``TRAIN.FINETUNE`` or ``MODEL.PRETRAINED``)
  and :func:`load_detector` (a trained checkpoint, strictly, for evaluation), both placed by
  :func:`place_detector` (device, TRAIN.CHANNELS_LAST).
* Lifters: :func:`build_lifter_sets` -> the training lifters and the held-out ones, in the
  registry's order (the built-ins register as sb, videopose, iganet, mixste: the original's order,
  docs/original.md#training-setup).
* Optimizers: :func:`make_optimizer` and :func:`make_scheduler` with :func:`lr_factor`.
"""
import os
from typing import Optional

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

import model_2d
import model_3d
from lib.engine import optim
from lib.engine.run_dir import lifter_names
from lib.utils.machine import usable_cpus


# ----------------------------------------------------------------------------- data
class EpochRandomSampler(Sampler):
    """A permutation drawn from ``seed + epoch``: the order depends on the epoch only (exact resume)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


def loader_workers(requested: int, validation: bool = False, cpus: Optional[int] = None,
                   local_processes: Optional[int] = None) -> int:
    """DataLoader worker processes of one loader of this process (docs/scaling.md#gpu-notes).

    ``requested`` (WORKERS), at most the CPUs this process may run on (its affinity mask, ``cpus``)
    shared by the processes of its node (torchrun's LOCAL_WORLD_SIZE, ``local_processes``), less
    one for the process itself; at least 1 when ``requested`` > 0. A validation loader gets half of
    that, rounded up: its persistent workers sit idle through every training epoch (and the
    training loader's through validation), so one loader's workers per process use the CPUs at a
    time, and the validation ones only cost memory. WORKERS 24 on 8 GPUs and 96 CPUs: 11 training
    and 6 validation workers per process (136 processes) instead of 384. Whether that many keep a
    GPU fed only a GPU run's samples/s shows.
    """
    requested = int(requested)
    if requested <= 0:
        return 0
    cpus = usable_cpus() if cpus is None else int(cpus)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if local_processes is None else int(local_processes)
    workers = min(requested, max(1, cpus // max(local, 1) - 1))
    return max(1, (workers + 1) // 2) if validation else workers


def loader_worker_init(worker_id: int) -> None:
    """Start of every DataLoader worker: OpenCV without its own thread pool (``cv2.setNumThreads(0)``).

    torch already runs each worker on one thread; OpenCV would otherwise start as many threads as
    CPUs in every worker (the crops' ``warpAffine``), hundreds of threads competing per GPU.
    """
    import cv2
    cv2.setNumThreads(0)


def make_loader(dataset, batch_size, sampler, cfg, device, validation: bool = False) -> DataLoader:
    """A DataLoader over ``dataset`` with ``sampler`` and the config's worker settings
    (:func:`loader_workers`; ``validation``: the validation loader's share)."""
    workers = loader_workers(int(cfg.WORKERS), validation)
    kwargs = dict(batch_size=int(batch_size), sampler=sampler, num_workers=workers, drop_last=False,
                  pin_memory=bool(cfg.PIN_MEMORY) and device.type == "cuda")
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=int(cfg.TRAIN.PREFETCH_FACTOR),
                      worker_init_fn=loader_worker_init)
    return DataLoader(dataset, **kwargs)


def train_sampler(dataset, cfg, rank: int, world: int):
    """The training split's sampler: one permutation per epoch, sharded over the ranks under torchrun."""
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler
        return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=bool(cfg.TRAIN.SHUFFLE),
                                  seed=int(cfg.SEED))
    return EpochRandomSampler(len(dataset), int(cfg.SEED), bool(cfg.TRAIN.SHUFFLE))


class _Wrapper:
    """Attributes a wrapper lacks, and its length, are those of the object it wraps (the attribute
    named by ``_inner``)."""
    _inner = ""

    def __getattr__(self, name):
        if name == self._inner:            # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(getattr(self, self._inner), name)

    def __len__(self):
        return len(getattr(self, self._inner))


class ReplayLoader(_Wrapper):
    """A loader whose first complete pass is kept, while its tensors fit in ``max_mb`` MiB, and
    replayed by every later pass. For the validation split only: its samples and their order are
    the same at every validation (no augmentation, a fixed shard), so the crops are cut once per
    run instead of once per epoch. A pass stopped early, or one that outgrows the budget, keeps
    nothing and the next pass reads again. Consumers must not change a batch in place (validation
    does not). Everything else (``dataset``, ``num_workers``, ...) is the wrapped loader's."""

    _inner = "loader"

    def __init__(self, loader, max_mb: float):
        self.loader, self.max_bytes = loader, float(max_mb) * 2 ** 20
        self.batches = None

    def __iter__(self):
        if self.batches is not None:
            yield from self.batches
            return
        kept, size = [], 0
        for batch in self.loader:
            if kept is not None:
                size += sum(t.nbytes for t in _tensors(batch))
                if size <= self.max_bytes:
                    kept.append(batch)
                else:
                    kept = None
            yield batch
        self.batches = kept


class SampleCache(_Wrapper, Dataset):
    """The samples of ``dataset`` kept in memory as they are first read, up to ``max_mb`` MiB; a
    later read of a kept index returns the kept sample. Only for a training split without
    augmentation, whose sample ``i`` is the same at every draw: a fine-tuning that sees each image
    several times then reads and crops it once.

    A sample's tensors go into one preallocated tensor per position (kept samples are views of
    them): kept one by one, each sample's tensors pinned the heap around them, almost four times
    their size (docs/scaling.md#memory-layout). Its other parts (the meta dict) are kept as they
    are; a sample of another shape is read each time. The loader's collation copies every sample
    into a new batch, so the kept ones are never changed. Each DataLoader worker keeps its own."""

    _inner = "dataset"

    def __init__(self, dataset, max_mb: float):
        self.dataset, self.max_bytes = dataset, float(max_mb) * 2 ** 20
        self.slot_of, self.others = {}, []
        self.store, self.capacity = None, 0

    @property
    def nbytes(self) -> int:
        """Bytes of the kept samples' tensors."""
        return 0 if self.store is None else len(self.slot_of) * sum(t[0].nbytes for t in self.store.values())

    def _allocate(self, sample) -> None:
        if not isinstance(sample, tuple):       # a dataset of another shape than (tensors..., meta): read each time
            self.store = {}
            return
        tensors = {k: v for k, v in enumerate(sample) if isinstance(v, torch.Tensor)}
        size = sum(v.nbytes for v in tensors.values())
        self.capacity = min(len(self.dataset), int(self.max_bytes // max(size, 1)))
        self.store = {k: torch.empty((self.capacity,) + tuple(v.shape), dtype=v.dtype) for k, v in tensors.items()}

    def __getitem__(self, i):
        i = int(i)
        slot = self.slot_of.get(i)
        if slot is not None:
            other = self.others[slot]
            return tuple(self.store[k][slot] if k in self.store else other[k] for k in range(len(other)))
        sample = self.dataset[i]
        if self.store is None:
            self._allocate(sample)
        if len(self.slot_of) < self.capacity and all(
                isinstance(sample[k], torch.Tensor) and sample[k].shape == t.shape[1:] for k, t in self.store.items()):
            slot = len(self.slot_of)
            for k, t in self.store.items():
                t[slot].copy_(sample[k])
            self.others.append(tuple(None if k in self.store else v for k, v in enumerate(sample)))
            self.slot_of[i] = slot
        return sample


def train_dataset_view(dataset, cfg, log=None):
    """``dataset`` itself, or a :class:`SampleCache` of it where TRAIN.CACHE_MB > 0 and its samples
    do not change from draw to draw (DATASET.AUGMENT off); with augmentation on the key does nothing
    and says so once."""
    cache_mb = float(cfg.TRAIN.CACHE_MB)
    if cache_mb <= 0:
        return dataset
    if getattr(dataset, "augment", False):
        if log is not None:
            log.info("TRAIN.CACHE_MB %g unused: DATASET.AUGMENT draws a new crop at every read", cache_mb)
        return dataset
    return SampleCache(dataset, cache_mb)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def valid_loader(cfg, dataset, device, rank: int = 0, world: int = 1):
    """The validation loader: this rank's shard (``rank::world``) in dataset order; a
    :class:`ReplayLoader` of it with TEST.CACHE_MB > 0."""
    from lib.engine.distributed import ShardSampler
    loader = make_loader(dataset, cfg.TEST.BATCH_SIZE_PER_GPU, ShardSampler(len(dataset), rank, world), cfg, device,
                         validation=True)
    cache_mb = float(cfg.TEST.CACHE_MB)
    return ReplayLoader(loader, cache_mb) if cache_mb > 0 else loader


# ----------------------------------------------------------------------------- detectors
def build_detector(cfg, log=None):
    """The detector of cfg.MODEL, initialised from TRAIN.FINETUNE (whole net, strict) or MODEL.PRETRAINED."""
    from model_2d.convert import MissingWeightsError, how_to_make_pretrained, load_pretrained
    model = model_2d.build_pose_net(cfg)
    if cfg.TRAIN.FINETUNE:
        if not os.path.isfile(cfg.TRAIN.FINETUNE):
            raise MissingWeightsError(
                f"TRAIN.FINETUNE {cfg.TRAIN.FINETUNE!r} does not exist: it names a detector checkpoint in our "
                f"layout, e.g. <run dir>/model_best.pth of an earlier run. " + how_to_make_pretrained(cfg))
        report = model_2d.load_pose_checkpoint(model, cfg.TRAIN.FINETUNE, strict=True)
        if log:
            log.info("=> fine-tuning from %s", report.summary())
    elif cfg.MODEL.PRETRAINED:
        report = load_pretrained(model, cfg, log)
        if log:
            log.info("=> pretrained: %s", report.summary())
    elif log:
        log.info("=> no MODEL.PRETRAINED / TRAIN.FINETUNE: detector starts from its initialisation")
    return model


def place_detector(model, cfg, device):
    """``model`` on ``device``, in channels-last memory layout where TRAIN.CHANNELS_LAST asks for it.
    The layout only changes the order of the float sums (docs/scaling.md#memory-layout); inputs
    need no conversion, the convolutions follow their weights' layout."""
    model = model.to(device)
    if bool(cfg.TRAIN.CHANNELS_LAST):
        model = model.to(memory_format=torch.channels_last)
    return model


def load_detector(cfg, checkpoint, device):
    """A trained detector checkpoint (``model_best.pth`` and the like), loaded strictly, on ``device``."""
    model = model_2d.build_pose_net(cfg)
    model_2d.load_pose_checkpoint(model, str(checkpoint), strict=True)
    return place_detector(model, cfg, device)


# ----------------------------------------------------------------------------- lifters
def ordered_lifter_names(names):
    """``names`` in the registry's order (the built-ins first, as the original's lifter dict)."""
    model_3d.check_lifter_names(names, "--model_3d / MODEL_3D.NAMES")
    return [n for n in model_3d.LIFTERS if n in names]


def build_lifter_sets(cfg, stats=None, log=None, cross: Optional[bool] = None, device=None):
    """-> (training dict, held-out dict, skipped names), every lifter frozen (and on ``device``).

    Training lifters (MODEL_3D.NAMES) must have weights (the error names the file and the
    ``run/train_lifter.py`` command). In multi-model mode with MODEL_3D.CROSS_VALID, every other
    registered lifter whose weight file exists is loaded as a held-out (cross) lifter; the others
    are listed as skipped (docs/differences.md).
    """
    model_3d.check_lifter_config(cfg)
    names = ordered_lifter_names(lifter_names(cfg))
    train = {n: model_3d.resolve_lifter(cfg, n, stats_fallback=stats) for n in names}
    held_out, skipped = {}, []
    if cross is None:
        cross = len(names) > 1 and bool(cfg.MODEL_3D.CROSS_VALID)
    if cross:
        for n in model_3d.LIFTERS:
            if n in train:
                continue
            path = model_3d.lifter_weight_path(cfg, n)
            if path.is_file():
                held_out[n] = model_3d.resolve_lifter(cfg, n, stats_fallback=stats)
            else:
                skipped.append(f"{n} ({path} not found)")
    if device is not None:
        for lifter in list(train.values()) + list(held_out.values()):
            lifter.to(device)
    if log is not None:
        log.info("training lifters: %s", ", ".join(f"{n} <- {v.weights_source}" for n, v in train.items()) or "none")
        if cross:
            log.info("held-out (cross) lifters: %s", ", ".join(held_out) or "none")
            if skipped:
                log.info("held-out lifters skipped (no weights): %s", "; ".join(skipped))
    return train, held_out, skipped


# ----------------------------------------------------------------------------- optimisation
def lr_factor(cfg, epoch: int) -> float:
    """LR multiplier during ``epoch`` (after ``epoch`` scheduler steps), docs/original.md#optimiser-and-learning-rate-schedule.

    MultiStepLR: x LR_FACTOR for every milestone m <= epoch (counted with multiplicity); then
    x LR_BUMP_FACTOR for every epoch after LR_BUMP_EPOCH (the bump happens after that epoch's
    step and persists through later milestones). LR_BUMP_EPOCH < 0 disables the bump.
    """
    steps = sum(1 for m in cfg.TRAIN.LR_STEP if int(m) <= epoch)
    factor = float(cfg.TRAIN.LR_FACTOR) ** steps
    bump_epoch = int(cfg.TRAIN.LR_BUMP_EPOCH)
    if bump_epoch >= 0 and epoch > bump_epoch:
        factor *= float(cfg.TRAIN.LR_BUMP_FACTOR)
    return factor


def make_scheduler(optimizer, cfg):
    """LambdaLR with :func:`lr_factor`: stateless in the epoch, so resuming is exact."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(cfg, e))


def make_optimizer(params, cfg):
    """The optimizer of TRAIN.OPTIMIZER over ``params`` (parameters, or the detector module).

    ``adamw`` needs the module: its groups come from parameter names (layer-wise decay,
    :mod:`lib.engine.optim`).
    """
    name = str(cfg.TRAIN.OPTIMIZER).lower()
    if name == "adamw":
        if not isinstance(params, torch.nn.Module):
            raise TypeError("make_optimizer: TRAIN.OPTIMIZER adamw needs the detector module "
                            "(parameter names decide the groups), not a parameter list")
        return optim.make_adamw(params, cfg)
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    if name == "adam":   # the original: default betas/eps, no weight decay (TRAIN.WD ignored)
        return torch.optim.Adam(params, lr=float(cfg.TRAIN.LR))
    if name == "sgd":
        return torch.optim.SGD(params, lr=float(cfg.TRAIN.LR), momentum=float(cfg.TRAIN.MOMENTUM),
                               weight_decay=float(cfg.TRAIN.WD), nesterov=bool(cfg.TRAIN.NESTEROV))
    raise ValueError(f"TRAIN.OPTIMIZER={cfg.TRAIN.OPTIMIZER!r}: use 'adam' (the original), 'sgd' or "
                     f"'adamw' (ViTPose's recipe)")
