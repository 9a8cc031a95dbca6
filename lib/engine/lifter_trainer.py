"""Train a registered lifter on ground-truth 2D -> 3D pairs of the prepared dataset
(docs/weights.md#training-the-lifters).

Shapes: N samples, J dataset joints. 2D in original-image pixels, 3D root-relative camera frame
(cm in the prepared index, metres for the screen-normalised lifters' loss).

The recipe of each lifter comes from ``model_3d.LIFTER_RECIPES`` (loss, epochs, lr, batch size,
optimizer, decay, flip augmentation, BN-momentum schedule). Single frame (receptive field 1).

* schedules: the LR decay and VideoPose3D's BN momentum are functions of (optimizer step, total
  steps of the run) (:func:`model_3d.lr_factor`, :func:`model_3d.bn_momentum`): the official values
  at the official scale, the same shape compressed into a short run;
* mean-pose initialisation (recipes with ``init_mean_pose``, ``LIFTER_TRAIN.INIT_MEAN_POSE``): the
  output layer of the metre-regressing lifters is fitted to the training poses before the first step
  (:func:`model_3d.init_output_at_mean_pose`);
* BN re-estimation (recipes with ``bn_recalibrate``, ``LIFTER_TRAIN.BN_RECALIBRATE``): before each
  validation the running statistics are recomputed on a fixed training subset (with its flips) from
  the current weights (:func:`recalibrate_bn`), so validation and checkpoint never use stale ones;
* sizes: ``MODEL_3D.<NAME>.*`` (IGANet, MixSTE) are recorded as ``arch`` in the checkpoint.

* ``mse_zscore`` (``sb``): MSE between the network's z-scored output and the z-scored 3D target,
  with the stats of the training split (``<DATASET.ROOT>/stats.npz``: 2D px, 3D cm), which are
  stored inside the checkpoint.
* ``mpjpe`` (``videopose``, ``iganet``, the default recipe): mean Euclidean joint error in metres of
  the wrapper's output (screen-normalised input) against the root-relative target.
* ``weighted_mpjpe`` (``mixste``): the same with MixSTE's per-joint weights; its recipe also scales
  the backward by the loss value (``loss_scaled_backward``) and trains the network with its
  ``train_kwargs`` (drop-path 0.1), while the checkpoint records only its sizes.
* the parameters trained are those the network itself leaves trainable (``Lifter.unfreeze``):
  IGANet's fixed mixing scalars, or a frozen part of a user's lifter, stay as they are; a frozen
  output layer is not given the mean-pose initialisation either.
* flip augmentation (recipes with ``flip_augment``): each training sample is mirrored with
  probability 1/2: ``x -> w - x`` in pixels (``x_n -> -x_n`` after screen normalisation),
  ``X -> -X`` in 3D, left/right joints swapped.

Every epoch the GT-2D MPJPE / P-MPJPE (mm) on the valid split is computed; the best epoch is saved
as a self-contained ``l2d-lifter`` checkpoint at ``cfg.MODEL_3D.WEIGHTS.<NAME>`` or the default
``model_3d.default_weight_path(name, dataset)`` (where ``train_hrnet.py`` looks). A log,
``history.json`` and ``curves.png`` go to ``<OUTPUT_DIR>/<dataset>/lifters/<name>/``.

Config: ``LIFTER_TRAIN.<NAME>.EPOCHS`` / ``BATCH_SIZE`` / ``LR`` (> 0: this lifter only), else
``LIFTER_TRAIN.EPOCHS`` / ``BATCH_SIZE`` / ``LR`` (<= 0: the recipe's value),
``LIFTER_TRAIN.MAX_STEPS_PER_EPOCH`` (> 0: quick runs), ``LIFTER_TRAIN.FLIP`` (off disables flip).

Under ``torchrun`` (``WORLD_SIZE`` > 1; helpers in :mod:`lib.engine.distributed`):

* the batch size is the GLOBAL batch: every rank draws the same per-epoch permutation and flip
  mask (generator seeded with ``SEED``), takes its contiguous part of each global batch
  (``tensor_split``: sizes differ by at most one) and weights its loss by ``world * n_rank / n_global``,
  so DDP's gradient average is the global-batch mean. Steps per epoch, the LR schedule and the BN
  momentum schedule are those of the single-process recipe, whatever the number of processes.
  Under DDP a trailing global batch smaller than ``2 x world`` is skipped (a rank would get fewer
  than two samples, which training-mode BatchNorm rejects);
* the network is wrapped in DistributedDataParallel (rank 0's initial weights everywhere);
  ``TRAIN.SYNC_BN`` synchronises its BatchNorm1d layers over the global batch (torch's
  ``SyncBatchNorm`` on GPUs; on CPUs :class:`GlooSyncBatchNorm` behind a 1D->2D view); without it
  rank 0's running statistics are broadcast before each validation;
* dropout draws differ per rank (rank r reseeds with ``SEED + r`` after the shared initialisation;
  rank 0 keeps the single-process stream);
* validation is sharded ``rank::world`` and the per-sample errors gathered back into dataset
  order, so the logged metric is the full-split value (the same as re-evaluating the saved
  checkpoint in one process);
* only rank 0 logs and writes the checkpoint, ``history.json`` and ``curves.png``; the training
  loss is averaged over ranks and a non-finite one stops every rank together; all ranks meet at a
  barrier before returning. :func:`train_lifter` leaves a process group it did not create to its
  caller (``run/train_lifter.py`` destroys it after the last lifter).

"""
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

import model_3d
from lib.core.skeleton import get_skeleton
from lib.datasets import index as idx
from lib.datasets.base import dataset_root
from lib.datasets.stats import train_stats
from lib.engine import distributed as ddp
from lib.engine.checkpoint import plain
from lib.eval.metrics import mpjpe_masked_torch, mpjpe_torch, p_mpjpe_masked_torch, p_mpjpe_torch
from lib.utils.atomic_io import write_text_atomic
from lib.utils.device import apply_tf32
from lib.utils.errors import UserError
from lib.utils.logger import close_logger, setup_logger
from lib.utils.plots import plot_curves

CM_PER_M = 100.0
MM_PER_CM = 10.0
PLOT_EVERY_S = 60.0


def _flip_perm(skeleton) -> torch.Tensor:
    perm = list(range(skeleton.num_joints))
    for a, b in skeleton.flip_pairs:
        perm[a], perm[b] = b, a
    return torch.tensor(perm, dtype=torch.long)


def flip_batch(pose_2d_px, image_size, pose_3d_cm, perm, mask, valid=None):
    """Mirror the samples where ``mask`` (N,) is True: 2D ``x -> w - x``, 3D ``X -> -X``, joints swapped.

    With ``valid`` (N, J) (DATASET.MASK_LOW_CONFIDENCE) returns a third item, the swapped flags.
    """
    w = image_size[:, :1].unsqueeze(1)                                  # (N, 1, 1)
    f2 = pose_2d_px[:, perm].clone()
    f2[..., 0] = w[..., 0] - f2[..., 0]
    f3 = pose_3d_cm[:, perm].clone()
    f3[..., 0] = -f3[..., 0]
    m = mask.view(-1, 1, 1)
    if valid is not None:
        return (torch.where(m, f2, pose_2d_px), torch.where(m, f3, pose_3d_cm),
                torch.where(mask.view(-1, 1), valid[:, perm], valid))
    return torch.where(m, f2, pose_2d_px), torch.where(m, f3, pose_3d_cm)


def _set_bn_momentum(net, momentum: float):
    for mod in net.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.momentum = momentum


def _bn_layers(net):
    return [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recalibrate_bn(lifter, pose_2d_px, image_size, batch_size: int) -> int:
    """Re-estimate the BatchNorm running statistics of ``lifter.net`` on the given (training) inputs.

    Shapes: pose_2d_px (N, J, 2) px, image_size (N, 2). Every BN layer restarts and takes the plain
    average over the batches (momentum None) of its batch statistics, with dropout off, as at test
    time; the weights are untouched. Returns the number of batches. Under torchrun every rank must
    call it with the same arrays (synchronised BN layers meet in collectives; the results agree).
    """
    layers = _bn_layers(lifter.net)
    if not layers:
        return 0
    was = lifter.net.training
    momenta = [m.momentum for m in layers]
    lifter.net.eval()                      # dropout off: the statistics the eval-mode network will see
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    batches = 0
    n = pose_2d_px.shape[0]
    for s in range(0, n, batch_size):
        if n - s < 2 and batches:          # a trailing single sample has no batch variance
            break
        lifter.net(_net_layout_input(lifter, pose_2d_px[s:s + batch_size], image_size[s:s + batch_size]))
        batches += 1
    for m, mom in zip(layers, momenta):
        m.momentum = mom
    lifter.net.train(was)
    return batches


def _net_layout_input(lifter, pose_2d_px, image_size):
    """The wrapper's input normalisation and layout, without its eval-mode forward."""
    x = lifter.normalize_input(pose_2d_px, image_size)
    n = x.shape[0]
    if lifter.layout == "flat":
        return x.reshape(n, -1)
    return x.unsqueeze(1) if lifter.layout == "frames" else x


# Batches of the BN re-estimation: a fixed random subset of at most this many training samples
# (precise-BN practice: a few dozen large batches pin the statistics down; the whole 1.5 M-frame
# Human3.6M set would cost a third of an epoch every epoch).
BN_RECALIBRATE_MAX_SAMPLES = 65536
# Samples for the mean-pose initialisation's ridge fit (model_3d.init).
INIT_MAX_SAMPLES = 4096


def lifter_settings(cfg, name: str, recipe: dict):
    """(epochs, batch size, lr) of lifter ``name``: LIFTER_TRAIN.<NAME>.<KEY> > LIFTER_TRAIN.<KEY> > the recipe
    (the first value > 0 wins)."""
    lt = cfg.LIFTER_TRAIN
    own = lt.get(name.upper(), None)
    own = own if isinstance(own, dict) else {}

    def setting(key, recipe_key, cast):
        for value in (own.get(key, 0), lt[key]):
            if cast(value) > 0:
                return cast(value)
        return cast(recipe[recipe_key])

    return setting("EPOCHS", "epochs", int), setting("BATCH_SIZE", "batch_size", int), setting("LR", "lr", float)


def steps_per_epoch(n: int, batch_size: int, max_steps: int = 0, world: int = 1) -> int:
    """Optimizer steps of one epoch over ``n`` samples: ceil(n / batch), capped by ``max_steps`` (> 0);
    under DDP a trailing global batch smaller than ``2 x world`` is skipped."""
    steps = math.ceil(n / batch_size)
    if world > 1 and n % batch_size and n % batch_size < 2 * world:
        steps -= 1
    return min(steps, max_steps) if max_steps > 0 else steps


def _load_arrays(root, split, dataset, max_samples, device, mask_low_confidence=False):
    """-> (2D px, image size, 3D cm, valid (n, J) float or None) tensors of a prepared split.

    ``valid`` only with ``mask_low_confidence`` and a split that flags invalid 3D joints (Panoptic).
    """
    from lib.datasets import index as idx
    _info, arrays = idx.load_split(root, split, dataset)
    n = len(arrays["joints_2d"]) if max_samples <= 0 else min(max_samples, len(arrays["joints_2d"]))
    if n == 0:
        raise RuntimeError(f"split {split!r} of {root} is empty; re-run {idx.prepare_hint(dataset, root)}")
    size = np.stack([arrays["width"][:n], arrays["height"][:n]], axis=1).astype(np.float32)
    to = lambda a: torch.as_tensor(np.ascontiguousarray(a[:n]), dtype=torch.float32, device=device)  # noqa: E731
    valid = to(arrays["joints_3d_valid"]) if mask_low_confidence and "joints_3d_valid" in arrays else None
    return to(arrays["joints_2d"]), torch.as_tensor(size, device=device), to(arrays["joints_3d"]), valid


@torch.no_grad()
def _per_sample_errors_mm(lifter, pose_2d_px, image_size, pose_3d_cm, batch_size=4096, valid=None):
    """-> (mpjpe (N,), p_mpjpe (N,)) in mm, float64, lifter's net in eval mode; with ``valid`` (N, J)
    these leave the invalid joints out and two more follow: the same errors with every joint."""
    was = lifter.net.training
    lifter.net.eval()
    cols = [[], []] if valid is None else [[], [], [], []]
    for s in range(0, pose_2d_px.shape[0], batch_size):
        pred_mm = lifter(pose_2d_px[s:s + batch_size], image_size[s:s + batch_size]) * 1000.0
        gt_mm = pose_3d_cm[s:s + batch_size] * MM_PER_CM
        if valid is None:
            cols[0].append(mpjpe_torch(pred_mm, gt_mm).double())
            cols[1].append(p_mpjpe_torch(pred_mm, gt_mm).double())
            continue
        v = valid[s:s + batch_size]
        cols[0].append(mpjpe_masked_torch(pred_mm, gt_mm, v).double())
        cols[1].append(p_mpjpe_masked_torch(pred_mm, gt_mm, v).double())
        cols[2].append(mpjpe_torch(pred_mm, gt_mm).double())
        cols[3].append(p_mpjpe_torch(pred_mm, gt_mm).double())
    lifter.net.train(was)
    dev = pose_2d_px.device
    empty = torch.zeros(0, dtype=torch.float64, device=dev)
    return tuple(torch.cat(c) if c else empty for c in cols)


def evaluate_lifter(lifter, pose_2d_px, image_size, pose_3d_cm, batch_size=4096, valid=None) -> Dict[str, float]:
    """GT-2D MPJPE / P-MPJPE in mm over the given arrays (lifter's net in eval mode).

    ``valid`` (N, J) (DATASET.MASK_LOW_CONFIDENCE): ``mpjpe``/``p_mpjpe`` over the valid joints, and
    ``mpjpe_unmasked``/``p_mpjpe_unmasked`` with every joint (the original's numbers).

    Shapes: pose_2d_px (N,J,2), image_size (N,2), pose_3d_cm (N,J,3). Under torchrun (a collective:
    every rank calls it with the same arrays) each rank evaluates rows ``rank::world`` and the
    per-sample errors are gathered back into dataset order, so every rank returns the full-split means.
    """
    n = pose_2d_px.shape[0]
    world, rank = ddp.world_size(), ddp.rank()
    rows = torch.arange(rank, n, world, device=pose_2d_px.device)
    if world > 1:
        pose_2d_px, image_size, pose_3d_cm = pose_2d_px[rows], image_size[rows], pose_3d_cm[rows]
        valid = valid[rows] if valid is not None else None
    cols = _per_sample_errors_mm(lifter, pose_2d_px, image_size, pose_3d_cm, batch_size, valid)
    if world > 1:
        gathered = ddp.all_gather_cat(torch.stack(cols, dim=1))              # (n, columns), rank-major
        order = torch.cat([torch.arange(r, n, world, device=gathered.device) for r in range(world)])
        full = torch.empty_like(gathered)
        full[order] = gathered
        cols = full.unbind(dim=1)
    names = ("mpjpe", "p_mpjpe", "mpjpe_unmasked", "p_mpjpe_unmasked")
    return {k: float(c.mean()) for k, c in zip(names, cols)}


class _TrainLoss(torch.nn.Module):
    """The recipe's training loss as a module, so DDP sees one forward: (x_px, size, y_cm) -> 0-dim loss.

    Shapes: x (n,J,2) px, size (n,2), y (n,J,3) cm. ``mse_zscore``: MSE of the net's z-scored output;
    ``mpjpe``: mean joint error in metres; ``weighted_mpjpe``: the same with ``joint_weights`` (J,)
    multiplying each joint's error before the mean. Holds the lifter (its net trains, its stats are buffers).
    """

    def __init__(self, lifter, loss: str, num_joints: int, joint_weights=None):
        super().__init__()
        if loss not in ("mse_zscore", "mpjpe", "weighted_mpjpe"):
            raise ValueError(f"lifter {lifter.name!r}: unknown recipe loss {loss!r}; use mse_zscore, mpjpe or "
                             f"weighted_mpjpe")
        if loss == "weighted_mpjpe" and (joint_weights is None or len(joint_weights) != num_joints):
            raise ValueError(f"lifter {lifter.name!r}: weighted_mpjpe needs {num_joints} joint weights, "
                             f"got {joint_weights}")
        self.lifter, self.loss, self.num_joints = lifter, loss, num_joints
        self.register_buffer("joint_weights", None if loss != "weighted_mpjpe" else
                             torch.as_tensor(joint_weights, dtype=torch.float32))

    def forward(self, pose_2d_px, image_size, pose_3d_cm, valid=None):
        """``valid`` (n, J) (DATASET.MASK_LOW_CONFIDENCE): the loss averages over the valid joints only."""
        lifter, n, J = self.lifter, pose_2d_px.shape[0], self.num_joints
        if self.loss == "mse_zscore":
            raw = lifter.net(lifter.normalize_input(pose_2d_px).reshape(n, -1)).reshape(n, J, 3)
            target = (pose_3d_cm - lifter.mean_3d) / (lifter.std_3d + 1e-8)
            sq = (raw - target) ** 2
            if valid is None:
                return torch.mean(sq)
            return (sq * valid.unsqueeze(-1)).sum() / (3 * valid.sum().clamp(min=1.0))
        pred_m = lifter(pose_2d_px, image_size)
        err = torch.linalg.vector_norm(pred_m - pose_3d_cm / CM_PER_M, dim=-1)       # (n, J)
        if self.joint_weights is not None:
            err = err * self.joint_weights
        if valid is None:
            return err.mean()
        return (err * valid).sum() / valid.sum().clamp(min=1.0)


class WeightsExistError(UserError, FileExistsError):
    """The lifter's output file exists and ``overwrite`` was not given."""


def guard_existing_weights(out_path: Path, overwrite: bool, log=None, write: bool = True) -> None:
    """Refuse to replace trained weights unless ``overwrite``; then keep the old file as ``<name>.bak``.

    Checked before training starts, so a refusal costs nothing. The backup is a copy, so the
    current file stays in place (and in use) until the first better epoch replaces it atomically.
    """
    out_path = Path(out_path)
    if not out_path.exists():
        return
    backup = out_path.with_name(out_path.name + ".bak")
    if not overwrite:
        raise WeightsExistError(
            f"lifter weights already exist: {out_path}; they are not replaced. Pass --overwrite to train anew "
            f"(the old file is kept as {backup}), or --weights NEW_FILE (MODEL_3D.WEIGHTS.<NAME>) to write "
            f"elsewhere")
    if write:
        tmp = backup.with_name(backup.name + ".tmp")
        shutil.copy2(out_path, tmp)
        os.replace(tmp, backup)
    if log is not None:
        log.info("--overwrite: %s will be replaced by this run; the previous file is kept as %s", out_path, backup)


@dataclass
class LifterData:
    """Ground-truth pairs of both splits on the device: 2D px, image size, 3D cm, valid joints or None."""
    x_tr: torch.Tensor
    size_tr: torch.Tensor
    y_tr: torch.Tensor
    v_tr: Optional[torch.Tensor]
    x_va: torch.Tensor
    size_va: torch.Tensor
    y_va: torch.Tensor
    v_va: Optional[torch.Tensor]
    stats: Optional[dict]
    root: Path


def _tensors(arrays, key_2d, device, masking):
    """A split's (2D px, image size, 3D cm, valid or None) tensors from numpy arrays."""
    to = lambda a: torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)  # noqa: E731
    size = np.stack([arrays["width"], arrays["height"]], axis=1)
    valid = to(arrays["joints_3d_valid"]) if masking and "joints_3d_valid" in arrays else None
    return to(arrays[key_2d][..., :2]), to(size), to(arrays["joints_3d"]), valid


def _load_detection_data(cfg, name: str, spec, device, log) -> LifterData:
    """LIFTER_TRAIN.DETECTIONS: the 2D of a VideoPose3D-format file (docs/detections.md#training-lifters-on-detections),
    the 3D of the prepared splits or of LIFTER_TRAIN.DATA_3D (Human3.6M: S1, S5-S8 train, S9, S11 valid).
    Every training row must be in the file; validation takes the file's 2D when it holds every
    validation row, else the ground-truth 2D (logged). Normalisation statistics come from the
    training rows as trained on (the file's 2D)."""
    from lib.datasets import vp3d
    from lib.datasets.prepare_h36m import TRAIN_SUBJECTS, VALID_SUBJECTS
    from lib.datasets.stats import compute_stats
    dataset, root = cfg.DATASET.DATASET, dataset_root(cfg)
    max_samples, masking = int(cfg.DATASET.MAX_SAMPLES), bool(cfg.DATASET.MASK_LOW_CONFIDENCE)
    trusted = list(cfg.TRUSTED_FILES)
    det = vp3d.read_detections(cfg.LIFTER_TRAIN.DETECTIONS, trusted)
    if cfg.LIFTER_TRAIN.DATA_3D:
        if dataset != "h36m":
            raise vp3d.DetectionsFileError(f"LIFTER_TRAIN.DATA_3D reads VideoPose3D's Human3.6M 3D; DATASET.DATASET is "
                                           f"{dataset!r}")
        data_3d = vp3d.read_data_3d(cfg.LIFTER_TRAIN.DATA_3D, trusted)
        tr, va = (vp3d.vp3d_split(det, data_3d, [s for s in subjects if s in data_3d])
                  for subjects in (TRAIN_SUBJECTS, VALID_SUBJECTS))
        if max_samples > 0:
            tr, va = ({k: v[:max_samples] for k, v in a.items()} for a in (tr, va))
        where = cfg.LIFTER_TRAIN.DATA_3D
    else:
        tr, va = (vp3d.prepared_split_2d(root, split, dataset, det, max_samples)
                  for split in (cfg.DATASET.TRAIN_SET, cfg.DATASET.TEST_SET))
        if not tr["found"].all():
            raise vp3d.DetectionsFileError(vp3d.missing_rows_message(det, tr, tr["found"],
                                                                     f"the training split of {root}"))
        if not va["found"].all():
            log.info("validation on ground-truth 2D: %s",
                     vp3d.missing_rows_message(det, va, va["found"], "the validation split"))
            va["pred_2d"] = va["joints_2d"]
        where = root
    log.info("lifter %s: 2D from %s (layout %s), 3D from %s", name, det.path, det.layout, where)
    stats, _ = compute_stats(tr["pred_2d"][..., :2], tr["joints_3d"], tr["width"], tr["height"])
    x_tr, size_tr, y_tr, v_tr = _tensors(tr, "pred_2d", device, masking)
    x_va, size_va, y_va, v_va = _tensors(va, "pred_2d", device, masking)
    return LifterData(x_tr, size_tr, y_tr, v_tr, x_va, size_va, y_va, v_va, stats, Path(root))


def _load_data(cfg, name: str, spec, device, log=None) -> LifterData:
    if str(cfg.LIFTER_TRAIN.DETECTIONS):
        return _load_detection_data(cfg, name, spec, device, log)
    dataset = cfg.DATASET.DATASET
    root = dataset_root(cfg)
    max_samples = int(cfg.DATASET.MAX_SAMPLES)
    masking = bool(cfg.DATASET.MASK_LOW_CONFIDENCE)
    train_set = str(cfg.LIFTER_TRAIN.TRAIN_SET or cfg.DATASET.TRAIN_SET)      # e.g. a pose-only split
    x_tr, size_tr, y_tr, v_tr = _load_arrays(root, train_set, dataset, max_samples, device, masking)
    x_va, size_va, y_va, v_va = _load_arrays(root, cfg.DATASET.TEST_SET, dataset, max_samples, device, masking)
    if masking and dataset == "panoptic" and v_tr is None:
        raise idx.DatasetIndexError(f"DATASET.MASK_LOW_CONFIDENCE needs the per-joint confidence flags "
                                    f"(joints_3d_valid) that {root} lacks; re-run "
                                    f"{idx.prepare_hint(dataset, root)} --force")
    stats = train_stats(cfg, root)      # with masking: low-confidence joints left out of the 3D stats
    if spec.normalization == "zscore" and stats is None:
        raise FileNotFoundError(f"{root}/stats.npz not found: lifter {name!r} needs normalisation stats; "
                                f"re-run {idx.prepare_hint(dataset, root)}")
    return LifterData(x_tr, size_tr, y_tr, v_tr, x_va, size_va, y_va, v_va, stats, root)


def _build_trainable(cfg, name: str, spec, recipe: dict, data: LifterData, flip: bool, batch_size: int,
                     device, log):
    """The lifter to train, its output fitted to the training poses where the recipe says so.

    -> (lifter, trainable parameters, random-network MPJPE or None, BN re-estimation inputs or None).
    """
    J = data.y_tr.shape[1]
    seed = int(cfg.SEED)
    arch = model_3d.lifter_arch(cfg, name)
    lifter = model_3d.build_lifter(name, J, stats=data.stats if spec.normalization == "zscore" else None,
                                   arch={**arch, **recipe.get("train_kwargs", {})}).to(device)
    lifter.arch = arch                     # the checkpoint records the sizes, not the training-only keywords
    if arch:
        log.info("lifter %s sizes: %s (published sizes otherwise)", name, arch)
    params = lifter.unfreeze()
    init_mean = bool(recipe.get("init_mean_pose")) and bool(cfg.LIFTER_TRAIN.INIT_MEAN_POSE)
    out_layer = model_3d.output_layer_name(lifter.net, J) if init_mean else None
    if init_mean and out_layer is None:
        log.info("lifter %s: no output layer with a bias and 3 or 3 x %d outputs, so no mean-pose "
                 "initialisation", name, J)
        init_mean = False
    elif init_mean and not all(p.requires_grad for p in lifter.net.get_submodule(out_layer).parameters(recurse=False)):
        log.info("lifter %s: its output layer %s is frozen, so no mean-pose initialisation (the network's "
                 "frozen parameters stay as they are)", name, out_layer)
        init_mean = False
    random_init = None
    if init_mean:   # the same seeded subset on every rank -> the same initial weights everywhere
        random_init = evaluate_lifter(lifter, data.x_va, data.size_va, data.y_va, valid=data.v_va)["mpjpe"]
        log.info("reference: random network (seed %d) -> valid MPJPE %.2f mm", seed, random_init)
        pick = torch.randperm(data.x_tr.shape[0], generator=torch.Generator().manual_seed(seed))[:INIT_MAX_SAMPLES]
        pick = pick.to(device)
        # BN layers first take the training batches' statistics, so that the eval-mode network the fit
        # sees behaves like the train-mode one of the first steps (fresh running stats are 0 / 1)
        recalibrate_bn(lifter, data.x_tr[pick], data.size_tr[pick], batch_size)
        model_3d.init_output_at_mean_pose(lifter.net, spec.layout,
                                          lifter.normalize_input(data.x_tr[pick], data.size_tr[pick]),
                                          data.y_tr[pick] / CM_PER_M)
    recal = None
    if bool(recipe.get("bn_recalibrate")) and bool(cfg.LIFTER_TRAIN.BN_RECALIBRATE) and _bn_layers(lifter.net):
        pick = torch.randperm(data.x_tr.shape[0], generator=torch.Generator().manual_seed(seed + 1))
        pick = pick[:BN_RECALIBRATE_MAX_SAMPLES].to(device)
        recal_x, recal_size = data.x_tr[pick], data.size_tr[pick]
        if flip:                           # the training inputs are mirrored half of the time
            mirror = (torch.rand(pick.shape[0], generator=torch.Generator().manual_seed(seed + 2)) < 0.5)
            recal_x, _ = flip_batch(recal_x, recal_size, data.y_tr[pick], _flip_perm(get_skeleton(
                cfg.DATASET.DATASET)).to(device), mirror.to(device))
        recal = (recal_x, recal_size)
    return lifter, params, (random_init if init_mean else None), recal


def _make_optimizer(recipe: dict, params, lr: float):
    opt_cls = torch.optim.AdamW if recipe["optimizer"] == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=lr, amsgrad=bool(recipe["amsgrad"]), weight_decay=float(recipe["weight_decay"]))


@dataclass
class _Schedule:
    recipe: dict
    lr0: float
    batch_size: int
    max_steps: int
    steps_per_epoch: int
    total_steps: int
    flip: bool


def _step_sizes(n: int, sched: "_Schedule", world: int):
    """Global batch sizes of the steps one epoch of :func:`_train_epoch` makes (the same on every
    rank) and whether a tail too short for every rank to get 2 samples was skipped."""
    sizes = []
    for step, s in enumerate(range(0, n, sched.batch_size)):
        if sched.max_steps and step >= sched.max_steps:
            return sizes, False
        n_glob = min(sched.batch_size, n - s)
        if world > 1 and n_glob < 2 * world:
            return sizes, True
        sizes.append(n_glob)
    return sizes, False


def _train_epoch(step_loss, lifter, optimizer, data: LifterData, sched: _Schedule, gen, perm, iteration: int,
                 world: int, rank: int, device):
    """One epoch of the recipe. -> (loss sum, samples, iterations done, lr of the last step, tail skipped)."""
    recipe = sched.recipe
    lifter.net.train()
    n = data.x_tr.shape[0]
    order = torch.randperm(n, generator=gen).to(device)
    # The flip masks of the epoch's steps, drawn at once and moved to the device once: a mask drawn
    # on the host and copied every step would wait for the stream each time. One draw of sum(sizes)
    # numbers is the same stream as one draw per step (the CPU generator fills serially), so the
    # flips are those of per-step draws, bit for bit.
    sizes, skipped_tail = _step_sizes(n, sched, world)      # the same on every rank (n is shared)
    masks = (torch.rand(sum(sizes), generator=gen) < 0.5).to(device) if sched.flip else None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen, start = 0, 0
    lr_now = sched.lr0 * model_3d.lr_factor(recipe, iteration, sched.total_steps)
    for n_glob in sizes:
        idx_b = order[start:start + n_glob]
        lr_now = sched.lr0 * model_3d.lr_factor(recipe, iteration, sched.total_steps)
        for g in optimizer.param_groups:
            g["lr"] = lr_now
        momentum = model_3d.bn_momentum(recipe, iteration, sched.total_steps, sched.steps_per_epoch)
        if momentum is not None:
            _set_bn_momentum(lifter.net, momentum)
        mask = masks[start:start + n_glob] if sched.flip else None
        start += n_glob
        if world > 1:                  # this rank's contiguous part of the global batch
            part = torch.tensor_split(torch.arange(n_glob, device=device), world)[rank]
            idx_b = idx_b[part]
            mask = mask[part] if mask is not None else None
        x, size, y_cm = data.x_tr[idx_b], data.size_tr[idx_b], data.y_tr[idx_b]
        v = data.v_tr[idx_b] if data.v_tr is not None else None
        if sched.flip and v is not None:
            x, y_cm, v = flip_batch(x, size, y_cm, perm, mask, v)
        elif sched.flip:
            x, y_cm = flip_batch(x, size, y_cm, perm, mask)
        loss = step_loss(x, size, y_cm) if v is None else step_loss(x, size, y_cm, v)
        share = x.shape[0] / n_glob
        # DDP averages gradients over ranks: weight by the rank's share -> the global-batch mean
        objective = loss * (world * share) if world > 1 else loss
        if recipe.get("loss_scaled_backward"):
            # MixSTE's loss.backward(loss.clone().detach()): every gradient times the (global-batch) loss
            objective = objective * (ddp.all_reduce_sum(loss.detach() * share) if world > 1 else loss.detach())
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        iteration += 1
        loss_sum += loss.detach().double() * x.shape[0]
        seen += x.shape[0]
    return loss_sum, seen, iteration, lr_now, skipped_tail


def _save_best(cfg, name: str, lifter, out_path: Path, recipe: dict, sched: _Schedule, epoch: int, metrics: dict,
               extra: dict, root: Path) -> None:
    config = plain({"lifter_train": dict(cfg.LIFTER_TRAIN), "recipe": dict(recipe), "epochs": extra["epochs"],
                    "batch_size": sched.batch_size, "lr": sched.lr0, "flip": sched.flip,
                    "steps_per_epoch": sched.steps_per_epoch, "total_steps": sched.total_steps, **extra["flags"],
                    "dataset_root": str(root), "cfg_file": cfg.get("CFG_FILE", "")})
    model_3d.save_lifter_checkpoint(out_path, lifter, name=name, num_joints=lifter.num_joints,
                                    dataset=cfg.DATASET.DATASET, stats=lifter.stats, epoch=epoch, metrics=metrics,
                                    config=config)


def train_lifter(cfg, name: str, *, gpu_id: int = 0, out_path=None, log=None, overwrite: bool = False) -> Dict:
    """Train lifter ``name`` as configured (one process, or every rank of a ``torchrun`` launch).

    An existing output file is refused before training unless ``overwrite`` (which keeps it as
    ``<file>.bak``; :func:`guard_existing_weights`).

    Returns ``{'path', 'best', 'history', 'baseline_mean_pose_mm', 'untrained_mm', 'random_init_mm', 'run_folder'}``:
    the references are the valid MPJPE (mm) of predicting the training mean pose, of the network before
    training (after the mean-pose initialisation, if any) and of the random network (before it).
    Every rank returns the same metrics; only rank 0 writes files.
    """
    model_3d.check_lifter_config(cfg)
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    apply_tf32(bool(cfg.TRAIN.TF32))
    info = ddp.init_distributed(bool(cfg.USE_CUDA), gpu_id, timeout_minutes=float(cfg.DIST_TIMEOUT_MINUTES))
    device, rank, world, is_main = info.device, info.rank, info.world_size, info.is_main
    dataset = cfg.DATASET.DATASET
    spec, recipe = model_3d.get_spec(name), model_3d.get_recipe(name, dataset)
    run_folder = Path(cfg.OUTPUT_DIR) / dataset / "lifters" / name
    own_log = log is None
    if own_log:
        log, _ = setup_logger(run_folder, (cfg.CFG_NAME or "lifter") + f"_{name}", "train_lifter", enabled=is_main)
    try:
        seed = int(cfg.SEED)
        torch.manual_seed(seed)            # the same initial weights on every rank (= the single-process run)
        np.random.seed(seed)
        data = _load_data(cfg, name, spec, device, log)
        epochs, batch_size, lr0 = lifter_settings(cfg, name, recipe)
        flip = bool(recipe["flip_augment"]) and bool(cfg.LIFTER_TRAIN.FLIP)
        sync_bn = world > 1 and bool(cfg.TRAIN.SYNC_BN)
        out_path = Path(out_path) if out_path else model_3d.lifter_weight_path(cfg, name)
        guard_existing_weights(out_path, overwrite, log, write=is_main)
        log.info("training lifter %s on %s %s 2D->3D: %d train / %d valid samples, %d epochs, batch %d, lr %g, "
                 "loss %s, flip %s, device %s -> %s (recipe: %s)", name, dataset,
                 "detected" if cfg.LIFTER_TRAIN.DETECTIONS else "GT", data.x_tr.shape[0],
                 data.x_va.shape[0], epochs, batch_size, lr0, recipe["loss"], flip, device, out_path, recipe["source"])
        _check_recipe(name, spec, recipe, world, batch_size, sync_bn, log)
        lifter, params, random_init, recal = _build_trainable(cfg, name, spec, recipe, data, flip, batch_size,
                                                              device, log)
        if sync_bn:
            lifter.net = ddp.convert_sync_batchnorm(lifter.net, device)
        step_loss = _TrainLoss(lifter, recipe["loss"], lifter.num_joints,
                               (recipe.get("joint_weights") or {}).get(dataset)).to(device)
        if world > 1:
            step_loss = torch.nn.parallel.DistributedDataParallel(
                step_loss, device_ids=[device.index] if device.type == "cuda" else None)
            if rank > 0:                       # own dropout stream; rank 0 keeps the single-process one
                ddp.seed_per_rank(seed, rank)
        optimizer = _make_optimizer(recipe, [p for p in lifter.net.parameters() if p.requires_grad], lr0)
        spe = steps_per_epoch(data.x_tr.shape[0], batch_size, int(cfg.LIFTER_TRAIN.MAX_STEPS_PER_EPOCH), world)
        sched = _Schedule(recipe, lr0, batch_size, int(cfg.LIFTER_TRAIN.MAX_STEPS_PER_EPOCH), spe,
                          max(epochs * spe, 1), flip)
        history = _references(lifter, data, recipe, sched, random_init, seed, log, name, dataset,
                              world, sync_bn, recal is not None)
        extra = {"epochs": epochs, "flags": {"init_mean_pose": random_init is not None,
                                             "bn_recalibrate": recal is not None, "world_size": world,
                                             "sync_bn": sync_bn}}
        best = _train_epochs(cfg, name, lifter, step_loss, optimizer, data, sched, recal, history, out_path,
                             run_folder, extra, log, device, rank, world, is_main)
        ddp.barrier()                          # no rank returns before rank 0 has written everything
        log.info("lifter %s: best epoch %s, valid MPJPE %.2f mm, P-MPJPE %.2f mm -> %s", name, best.get("epoch"),
                 best["mpjpe"], best.get("p_mpjpe", float("nan")), out_path)
        return {"path": out_path, "best": best, "history": history,
                "baseline_mean_pose_mm": history["baseline_mean_pose_mm"], "untrained_mm": history["untrained_mm"],
                "random_init_mm": history["random_init_mm"], "run_folder": run_folder}
    finally:
        if own_log:
            close_logger()
        if owns_group:
            ddp.cleanup()


def _check_recipe(name, spec, recipe, world, batch_size, sync_bn, log) -> None:
    if world > 1:
        log.info("torchrun: %d processes, global batch %d (about %d per process), SYNC_BN %s",
                 world, batch_size, math.ceil(batch_size / world), sync_bn)
    if world > 1 and batch_size < 2 * world:
        raise ValueError(f"LIFTER_TRAIN.BATCH_SIZE {batch_size} is the global batch and must give every one of "
                         f"the {world} processes at least 2 samples: set it to >= {2 * world}")
    if recipe["loss"] == "mse_zscore" and spec.layout != "flat":
        raise ValueError(f"lifter {name!r}: loss 'mse_zscore' expects a 'flat' layout, got {spec.layout!r}")


def _references(lifter, data: LifterData, recipe, sched: _Schedule, random_init, seed, log, name, dataset,
                world, sync_bn, recalibrate) -> Dict:
    """Log the reference errors (mean training pose, untrained network) and the schedules; -> a new history."""
    mean_pose_mm = data.y_tr.mean(dim=0, keepdim=True) * MM_PER_CM
    baseline = float(mpjpe_torch(mean_pose_mm.expand_as(data.y_va), data.y_va * MM_PER_CM).double().mean())
    log.info("reference: mean training pose -> valid MPJPE %.2f mm", baseline)
    untrained = evaluate_lifter(lifter, data.x_va, data.size_va, data.y_va, valid=data.v_va)["mpjpe"]
    log.info("reference: untrained network (seed %d%s) -> valid MPJPE %.2f mm", seed,
             ", output layer fitted to the training poses" if random_init is not None else "", untrained)
    total, spe = sched.total_steps, sched.steps_per_epoch
    log.info("schedules over %d optimizer steps (%d per epoch): lr x%.4g at the end%s%s", total, spe,
             model_3d.lr_factor(recipe, total, total),
             "" if not recipe.get("bn_momentum") else ", BN momentum %.4g -> %.4g" % (
                 model_3d.bn_momentum(recipe, 0, total, spe), model_3d.bn_momentum(recipe, total - 1, total, spe)),
             ", BN statistics re-estimated before each validation" if recalibrate else "")
    history = {"lifter": name, "dataset": dataset, "baseline_mean_pose_mm": baseline, "untrained_mm": untrained,
               "random_init_mm": random_init if random_init is not None else untrained, "epochs": []}
    if world > 1:
        history.update(world_size=world, sync_bn=sync_bn)
    return history


def _train_epochs(cfg, name, lifter, step_loss, optimizer, data, sched: _Schedule, recal, history, out_path,
                  run_folder, extra, log, device, rank, world, is_main) -> Dict:
    """Every epoch: train, re-estimate BN, validate, keep the best (rank 0 writes). -> the best metrics."""
    perm = _flip_perm(get_skeleton(cfg.DATASET.DATASET)).to(device)
    gen = torch.Generator(device="cpu")      # shared stream: the same permutation / flips on every rank
    gen.manual_seed(int(cfg.SEED))
    last_plot, best, iteration, skipped_tail = time.time(), {"mpjpe": math.inf}, 0, False
    epochs = extra["epochs"]
    for epoch in range(epochs):
        t0 = time.time()
        loss_sum, seen, iteration, lr_now, skipped = _train_epoch(step_loss, lifter, optimizer, data, sched, gen,
                                                                  perm, iteration, world, rank, device)
        skipped_tail |= skipped
        if world > 1:
            totals = ddp.all_reduce_sum(torch.stack([loss_sum, loss_sum.new_tensor(float(seen))]))
            loss_sum, seen = totals[0], int(totals[1])
            if not extra["flags"]["sync_bn"]:      # validation and the checkpoint use rank 0's running statistics
                ddp.broadcast_buffers(lifter.net)
        if recal is not None:                  # validated and saved with statistics of the current weights
            recalibrate_bn(lifter, recal[0], recal[1], sched.batch_size)
        metrics = evaluate_lifter(lifter, data.x_va, data.size_va, data.y_va, valid=data.v_va)
        train_loss = float(loss_sum / max(seen, 1))
        if not math.isfinite(train_loss):  # the same value on every rank: all stop together
            raise RuntimeError(f"lifter {name}: non-finite training loss at epoch {epoch}; lower LIFTER_TRAIN.LR")
        is_best = metrics["mpjpe"] < best["mpjpe"]
        log.info("lifter %s epoch %d/%d: loss %.6f, valid MPJPE %.2f mm, P-MPJPE %.2f mm, lr %.3e, %.1fs%s",
                 name, epoch, epochs - 1, train_loss, metrics["mpjpe"], metrics["p_mpjpe"], lr_now,
                 time.time() - t0, "  (best)" if is_best else "")
        if "mpjpe_unmasked" in metrics:
            log.info("lifter %s epoch %d: DATASET.MASK_LOW_CONFIDENCE left low-confidence joints out above; "
                     "with them: MPJPE %.2f mm, P-MPJPE %.2f mm", name, epoch, metrics["mpjpe_unmasked"],
                     metrics["p_mpjpe_unmasked"])
        history["epochs"].append({"epoch": epoch, "lr": lr_now, "train": {"total": train_loss},
                                  "valid": dict(metrics), "best": bool(is_best)})
        if is_best:
            best = {**metrics, "epoch": epoch}
        if not is_main:
            continue
        if is_best:
            _save_best(cfg, name, lifter, out_path, sched.recipe, sched, epoch, metrics, extra, data.root)
        run_folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_folder / "history.json", json.dumps(history, indent=1))
        # drawing costs ~0.3 s: at the end, and at most once a minute meanwhile (quick runs stay quick)
        if epoch == epochs - 1 or time.time() - last_plot > PLOT_EVERY_S:
            last_plot = time.time()
            try:
                plot_curves(history, run_folder / "curves.png")
            except Exception as err:   # noqa: BLE001 - plots never stop training
                log.warning("could not draw curves: %s", err)
    if skipped_tail:
        log.info("torchrun: the trailing global batch of %d samples (< 2 x %d processes) was skipped each epoch",
                 data.x_tr.shape[0] % sched.batch_size, world)
    return best
