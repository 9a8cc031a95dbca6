"""Validation (docs/original.md#validation-metrics): 2D decode, PDJ@0.2, per-lifter MPJPE / P-MPJPE, cross lifters, median
ensemble and per-action means, vectorised on the model's device.

Shapes: N batch, J dataset joints, K lifters. Units: 2D in original-image pixels, 3D in mm
(lifter outputs in metres x 1000; ground truth ``joints_3d`` in cm x 10).

Numbers are those of the original ``validate()`` (docs/original.md#validation-metrics):

* PDJ: every joint of every sample counts (no visibility); detected iff error < 0.2 x the GT
  left-shoulder/right-hip distance (strict); reported in %.
* Per-lifter errors are per-sample means over joints; the main MPJPE pools the per-sample errors
  of all main lifters (= their average for equal counts); cross lifters are pooled apart.
* For z-scored lifters (``sb``) the GT goes through the original's normalise -> unnormalise round
  trip (``(x - m) / (s + 1e-8) * s + m``; docs/original.md#quirks, quirk 22) before the x10.
* Ensemble: element-wise median over ALL evaluated lifters (main + cross, as the original),
  mean of the two middle values for an even count (numpy semantics); with ``ensemble=True`` it
  replaces the main MPJPE / P-MPJPE, as the original does.

Per batch nothing is copied to the host; lifters and metrics run on chunks of ``LIFT_CHUNK``
samples (several batches), and the per-sample tensors are concatenated and reduced once at the end
(one synchronisation per validation).

TEST.PROTOCOL (:mod:`lib.eval.protocols`, docs/detections.md#protocols) chooses the samples scored
(a frame interval, S11 "Directions" out), the lifters' test-time flip, N-MPJPE beside P1/P2 and
frame- or action-wise averages; the defaults are the original's. Every number below follows it,
and the result records it under ``protocol``.

Returned dict (plain floats; ``-1`` where no lifter was evaluated, as the original)::

    {'num_samples', 'non_finite_samples', 'pdj', 'mpjpe', 'p_mpjpe', 'protocol',
     'per_lifter': {name: {'mpjpe', 'p_mpjpe', ['n_mpjpe',] 'held_out': bool}},
     'main': {'mpjpe', 'p_mpjpe', 'lifters'},            # pooled training (main) lifters
     'cross': {'mpjpe', 'p_mpjpe', 'lifters'} | None,    # pooled held-out lifters
     'ensemble': {'mpjpe', 'p_mpjpe', 'lifters'} | None,
     'unmasked': {'mpjpe', 'p_mpjpe', 'per_lifter'}       # only with DATASET.MASK_LOW_CONFIDENCE
     'per_action': {name: {action: mean MPJPE or None}} | None,
     'per_sample_mpjpe': {name: numpy (num_samples,)},  # not JSON; see results_for_json()
     'pred_2d': numpy (all samples, J, 2)}               # with return_predictions; not JSON
"""
import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from lib.core.heatmap import decode_argmax, decode_soft, prepare_heatmaps
from lib.core.skeleton import H36M_ACTIONS, get_skeleton
from lib.engine.distributed import all_gather_cat, is_dist
from lib.eval.metrics import mpjpe_masked_torch, mpjpe_torch, p_mpjpe_masked_torch, p_mpjpe_torch
from lib.eval.protocols import (Protocol, average, flip_permutation, mirror_2d, n_mpjpe_torch, protocol_from_cfg,
                                sample_mask, unmirror_3d)
from lib.utils.device import apply_tf32, autocast
from lib.utils.errors import BadValueError

MM_PER_CM = 10.0
MM_PER_M = 1000.0
ZSCORE_EPS = 1e-8
PDJ_FRACTION = 0.2
# Samples lifted and scored at once: a 1024-wide SimpleBaseline costs ~25 % less per sample at 512
# than at 64 on a 2-core CPU, and the per-call overhead of the batched SVD is shared.
LIFT_CHUNK = 512


def median_over_lifters(preds: torch.Tensor) -> torch.Tensor:
    """(K, ...) -> (...): numpy's median (mean of the two middle values when K is even)."""
    k = preds.shape[0]
    ordered = preds.sort(dim=0).values
    if k % 2:
        return ordered[k // 2]
    return 0.5 * (ordered[k // 2 - 1] + ordered[k // 2])


def gt_mm_for(lifter, joints_3d_cm: torch.Tensor) -> torch.Tensor:
    """(N, J, 3) cm -> mm ground truth as the original computes it for this lifter."""
    if getattr(lifter, "normalization", None) == "zscore" and getattr(lifter, "mean_3d", None) is not None:
        mean = lifter.mean_3d.to(joints_3d_cm.dtype)
        std = lifter.std_3d.to(joints_3d_cm.dtype)
        joints_3d_cm = (joints_3d_cm - mean) / (std + ZSCORE_EPS) * std + mean
    return joints_3d_cm * MM_PER_CM


def pdj_hits(pred_2d_px: torch.Tensor, gt_2d_px: torch.Tensor, left_shoulder: int, right_hip: int,
             fraction: float = PDJ_FRACTION) -> torch.Tensor:
    """(N, J, 2) x2 -> (N, J) bool: error < fraction x GT torso diameter (strict)."""
    torso = torch.linalg.vector_norm(gt_2d_px[:, left_shoulder] - gt_2d_px[:, right_hip], dim=-1)
    err = torch.linalg.vector_norm(pred_2d_px - gt_2d_px, dim=-1)
    return err < fraction * torso[:, None]


def p_mpjpe_guarded(pred_mm: torch.Tensor, gt_mm: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """P-MPJPE per sample, NaN for a sample with non-finite predictions (the SVD would raise on it).

    ``valid`` (N, J): fitted and scored on the valid joints only (DATASET.MASK_LOW_CONFIDENCE).
    """
    finite = torch.isfinite(pred_mm).flatten(1).all(dim=1)
    safe = torch.where(finite[:, None, None], pred_mm, gt_mm)
    err = p_mpjpe_torch(safe, gt_mm) if valid is None else p_mpjpe_masked_torch(safe, gt_mm, valid)
    return torch.where(finite, err, torch.full_like(err, float("nan")))


def _dataset_order(sample_index: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Gathered dataset indices (M,) -> positions putting the rows in dataset order, each sample once.

    Under DDP the gathered rows come rank by rank; sorting by the dataset index restores the
    single-process order (so per-sample arrays and float sums match it), and keeping the first of
    equal indices drops the duplicates a padding sampler (torch's DistributedSampler) adds.
    ``None`` when not distributed or the loader gave no ``meta['index']``.
    """
    if sample_index is None:
        return None
    order = torch.sort(sample_index, stable=True).indices
    ordered = sample_index[order]
    keep = torch.ones_like(ordered, dtype=torch.bool)
    keep[1:] = ordered[1:] != ordered[:-1]
    return order[keep]


METRICS = ("mpjpe", "p_mpjpe", "n_mpjpe")


class _LiftScorer:
    """Lifts and scores pending batches as one chunk of at most ``LIFT_CHUNK`` samples.

    The original lifts each batch; every value here is per sample, so scoring several batches at
    once changes only the float round-off, while the lifters' matrix products and the batched SVD
    cost less per sample on hundreds of samples than on one batch. Batches with and without a
    joint mask are never scored together. ``flip_perm`` (TEST.PROTOCOL.FLIP): each lifter's
    prediction is averaged with its un-mirrored prediction of the mirrored 2D.
    """

    def __init__(self, evaluated: Mapping, ensemble: bool, protocol: Protocol, flip_perm=None):
        self.evaluated, self.ensemble, self.flip_perm = evaluated, ensemble, flip_perm
        self.metrics = METRICS if protocol.n_mpjpe else METRICS[:2]
        names = list(evaluated)
        self.errors = {m: {n: [] for n in names} for m in self.metrics}
        self.unmasked = {m: {n: [] for n in names} for m in self.metrics}
        self.ens = {m: [] for m in self.metrics}
        self.pending = []

    def add(self, batch: Dict[str, torch.Tensor]) -> None:
        if self.pending and set(self.pending[0]) != set(batch):
            self.flush()
        self.pending.append(batch)
        if sum(len(b["pred_2d"]) for b in self.pending) >= LIFT_CHUNK:
            self.flush()

    def lift_mm(self, lifter, pred_2d: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
        pred_mm = lifter(pred_2d, image_size).float() * MM_PER_M
        if self.flip_perm is None:
            return pred_mm
        mirrored = lifter(mirror_2d(pred_2d, image_size, self.flip_perm), image_size).float() * MM_PER_M
        return 0.5 * (pred_mm + unmirror_3d(mirrored, self.flip_perm))

    def flush(self) -> None:
        batches, self.pending = self.pending, []
        if not batches or not self.evaluated:
            return
        joined = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        pred_2d, joints_3d_cm, image_size = joined["pred_2d"], joined["joints_3d_cm"], joined["image_size"]
        valid = joined.get("valid")
        preds_mm, gt0 = [], None
        for name, lifter in self.evaluated.items():
            pred_mm = self.lift_mm(lifter, pred_2d, image_size)
            gt_mm = gt_mm_for(lifter, joints_3d_cm)
            gt0 = gt_mm if gt0 is None else gt0
            self._score(self.errors, name, pred_mm, gt_mm, valid)
            if valid is not None:
                self._score(self.unmasked, name, pred_mm, gt_mm, None)
            preds_mm.append(pred_mm)
        if self.ensemble:
            self._score({m: {"": self.ens[m]} for m in self.metrics}, "", median_over_lifters(torch.stack(preds_mm)),
                        gt0, valid)

    def _score(self, store, name, pred_mm, gt_mm, valid) -> None:
        store["mpjpe"][name].append(mpjpe_torch(pred_mm, gt_mm) if valid is None
                                    else mpjpe_masked_torch(pred_mm, gt_mm, valid))
        store["p_mpjpe"][name].append(p_mpjpe_guarded(pred_mm, gt_mm, valid))
        if "n_mpjpe" in store:
            store["n_mpjpe"][name].append(n_mpjpe_torch(pred_mm, gt_mm, valid))


def predict_2d(cfg, model_2d, images, meta, device, *, soft_argmax: bool = True, beta: float = 100.0,
               confidence: bool = False):
    """The detector's 2D joints of one batch in original-image pixels (N, J, 2): heatmaps (under
    TRAIN.AMP), the Panoptic remap, then the soft (or hard) argmax decode with TEST.POST_PROCESS.
    ``confidence``: -> (joints, (N, J) maximum of each joint's heatmap)."""
    center = meta["center"].to(device, non_blocking=True).float()
    scale = meta["scale"].to(device, non_blocking=True).float()
    with autocast(device, str(cfg.TRAIN.AMP)):
        heatmaps = model_2d(images.to(device, non_blocking=True))
    heatmaps = prepare_heatmaps(heatmaps.float(), cfg.DATASET.DATASET)
    post_process = bool(cfg.TEST.POST_PROCESS)
    if soft_argmax:
        joints = decode_soft(heatmaps, center, scale, beta, post_process, tol_px=float(cfg.MODEL.SOFT_ARGMAX_TOL_PX))
    else:
        joints = decode_argmax(heatmaps, center, scale, post_process)[0]
    return (joints, heatmaps.flatten(2).amax(dim=-1)) if confidence else joints


def protocol_keep(cfg, dataset, protocol: Protocol):
    """(len(dataset),) bool numpy: the samples ``protocol`` scores, or None when it scores every one.

    ``dataset``: a prepared dataset (lib.datasets) or a ``torch.utils.data.Subset`` of one; the mask
    is over the indices of the underlying dataset (``meta['index']``)."""
    if not protocol.selects_frames:
        return None
    base = getattr(dataset, "dataset", dataset)
    if not all(hasattr(base, a) for a in ("frames", "subjects", "images")):
        raise BadValueError("TEST.PROTOCOL.INTERVAL / EXCLUDE_S11_DIRECTIONS need a prepared dataset's loader "
                            "(frame numbers and sequences); this loader has none")
    sequences = None
    if protocol.exclude_s11_directions:
        from lib.datasets.vp3d import sequence_names
        sequences = sequence_names(cfg.DATASET.DATASET, base.subjects, base.images)
    return sample_mask(protocol, base.frames, base.subjects, sequences)


class _Accumulator:
    """Per-batch 2D, PDJ hits, flags and lifter scores of one validation (loader or arrays)."""

    def __init__(self, cfg, device, lifters, cross_lifters, ensemble: bool, keep=None, predictions: bool = False):
        self.cfg, self.device = cfg, device
        self.skel = get_skeleton(cfg.DATASET.DATASET)
        self.protocol = protocol_from_cfg(cfg)
        self.lifters = dict(lifters or {})
        self.cross = {k: v for k, v in dict(cross_lifters or {}).items() if k not in self.lifters}
        perm = flip_permutation(self.skel.flip_pairs, self.skel.num_joints).to(device) if self.protocol.flip else None
        self.scorer = _LiftScorer({**self.lifters, **self.cross}, ensemble, self.protocol, perm)
        self.ensemble = ensemble
        self.masking = bool(cfg.DATASET.MASK_LOW_CONFIDENCE)
        self.keep = None if keep is None else torch.as_tensor(keep, dtype=torch.bool)      # host, as the indices
        self.hits, self.non_finite, self.actions, self.kept = [], [], [], []
        self.preds = ([], []) if predictions else None      # predicted and ground-truth 2D
        self.sample_index = [] if (is_dist() or self.keep is not None) else None
        self.gather_index = is_dist()

    def add(self, pred_2d: torch.Tensor, meta: Mapping) -> None:
        device, skel = self.device, self.skel
        joints_2d = meta["joints_2d"].to(device, non_blocking=True).float()
        # Non-finite guard (one flag per sample, no host sync): a diverged detector's joints. Such
        # samples never count as PDJ hits and make the MPJPE NaN, so a validation with any of them
        # can never become "best" (the trainer checks the count). A NaN or +inf anywhere in a map
        # makes its joint NaN in both decodings, so the joints alone tell (no second read of the
        # maps); -inf pixels get weight 0 in the soft-argmax, as in the original's softmax.
        bad = ~torch.isfinite(pred_2d).flatten(1).all(dim=1)
        self.non_finite.append(bad)
        self.hits.append(pdj_hits(pred_2d, joints_2d, skel.left_shoulder, skel.right_hip) & ~bad[:, None])
        if self.preds is not None:
            self.preds[0].append(pred_2d.float())
            self.preds[1].append(joints_2d)
        # indices stay on the host here and go to the device once, in summarise: a per-batch copy
        # of host numbers would wait for the stream (docs/scaling.md#gpu-notes)
        if self.sample_index is not None:
            if "index" in meta:
                index = torch.as_tensor(meta["index"]).long().reshape(-1)
                self.sample_index.append(index)
                if self.keep is not None:
                    self.kept.append(self.keep[index])
            elif self.keep is not None:
                raise BadValueError("TEST.PROTOCOL selects samples by their dataset index; this loader gives none")
            else:
                self.sample_index = None      # no dataset index: keep the rank-by-rank order
        self.actions.append(torch.as_tensor(meta["action_idx"]).long().reshape(-1) if "action_idx" in meta
                            else torch.full((joints_2d.shape[0],), -1, dtype=torch.long))
        if not self.scorer.evaluated:
            return
        batch = {"pred_2d": pred_2d, "joints_3d_cm": meta["joints_3d"].to(device, non_blocking=True).float(),
                 "image_size": meta["image_size"].to(device, non_blocking=True).float().expand(len(pred_2d), 2)}
        if self.masking and "joints_3d_valid" in meta:
            batch["valid"] = meta["joints_3d_valid"].to(device, non_blocking=True).float()
        self.scorer.add(batch)

    def summarise(self, action_valid: bool) -> Dict:
        """Per-batch results -> the result dict, gathered over the ranks in dataset order and reduced
        to the samples of the protocol."""
        self.scorer.flush()
        device, skel, scorer, protocol = self.device, self.skel, self.scorer, self.protocol
        names = list(scorer.evaluated)
        # Every rank reaches the same collectives, even one whose shard gave no batch (empty tensors).
        empty_f = torch.zeros(0, dtype=torch.float32, device=device)
        # the host-side indices, flags and actions go to the device once each
        once = lambda parts: [torch.cat(parts).to(device)] if parts else []      # noqa: E731
        self.actions, self.kept = once(self.actions), once(self.kept)
        order = None
        if self.gather_index and self.sample_index is not None:
            index = torch.cat(self.sample_index).to(device) if self.sample_index else empty_f.long()
            order = _dataset_order(all_gather_cat(index))

        def gather_all(parts, empty=empty_f):
            """Per-batch (B, ...) tensors -> (all samples, ...) over all ranks, in dataset order."""
            t = all_gather_cat(torch.cat(parts) if parts else empty)
            return t if order is None else t[order]

        sel = None
        if self.keep is not None:
            sel = gather_all(self.kept, torch.zeros(0, dtype=torch.bool, device=device))

        def gather(parts, empty=empty_f):
            t = gather_all(parts, empty)
            return t if sel is None else t[sel]

        hits = gather(self.hits, torch.zeros(0, skel.num_joints, dtype=torch.bool, device=device))
        num_samples = int(hits.shape[0])
        non_finite = gather(self.non_finite, torch.zeros(0, dtype=torch.bool, device=device))
        actions = gather(self.actions, empty_f.long())
        described = protocol.describe()
        described["samples_left_out"] = 0 if sel is None else int((~sel).sum())
        out = {"num_samples": num_samples, "dataset": self.cfg.DATASET.DATASET,
               "non_finite_samples": int(non_finite.sum()),
               "pdj": 100.0 * float(hits.double().mean()) if num_samples else 0.0, "protocol": described,
               "per_lifter": {}, "per_action": None, "per_sample_mpjpe": {}, "cross": None, "ensemble": None}
        if self.preds is not None:                # one host copy, at the end
            empty_j = torch.zeros(0, skel.num_joints, 2, device=device)
            out["pred_2d"], out["gt_2d"] = (gather_all(part, empty_j).cpu().numpy() for part in self.preds)
        n_act = len(H36M_ACTIONS)

        def avg(values, repeat=1):
            return average(values, actions.repeat(repeat), protocol.average, n_act)

        cat = {m: {n: gather(scorer.errors[m][n]) for n in names} for m in scorer.metrics}
        for n in names:
            out["per_lifter"][n] = {**{m: avg(cat[m][n]) for m in scorer.metrics}, "held_out": n in self.cross}
            out["per_sample_mpjpe"][n] = cat["mpjpe"][n].double().cpu().numpy()

        def pooled(group, source=cat):
            if not group:
                return {**{m: -1.0 for m in scorer.metrics}, "lifters": []}
            return {**{m: avg(torch.cat([source[m][n] for n in group]), len(group)) for m in scorer.metrics},
                    "lifters": list(group)}

        out["main"] = pooled(list(self.lifters))
        if self.cross:
            out["cross"] = pooled(list(self.cross))
        if self.ensemble and names:
            out["ensemble"] = {**{m: avg(gather(scorer.ens[m])) for m in scorer.metrics}, "lifters": names}
        main = out["ensemble"] if out["ensemble"] is not None else out["main"]
        for m in scorer.metrics:
            out[m] = main[m]
        if self.masking and names:            # on every rank alike (gather is a collective)
            # with DATASET.MASK_LOW_CONFIDENCE the numbers above leave low-confidence joints out; these keep
            # them (the original's numbers), pooled over the main lifters and per lifter
            um = {m: {n: gather(scorer.unmasked[m][n]) for n in names} for m in scorer.metrics}
            group = list(self.lifters) or names
            out["unmasked"] = {**{k: v for k, v in pooled(group, um).items() if k != "lifters"},
                               "per_lifter": {n: {m: avg(um[m][n]) for m in scorer.metrics} for n in names}}
        if action_valid and names:
            out["per_action"] = _per_action(actions, cat["mpjpe"])
        return out


@torch.no_grad()
def validate(cfg, loader, model_2d, device, lifters: Optional[Mapping] = None,
             cross_lifters: Optional[Mapping] = None, *, gt_2d: bool = False, soft_argmax: bool = True,
             beta: Optional[float] = None, ensemble: bool = False, action_valid: bool = False,
             max_batches: int = 0, return_predictions: bool = False) -> Dict:
    """Evaluate ``model_2d`` (heatmaps) + lifters on ``loader`` (module docstring for the result).

    ``lifters``: main name -> frozen lifter; ``cross_lifters``: held-out ones. ``gt_2d`` feeds the
    ground-truth 2D to the lifters (``model_2d`` may be None). ``beta`` defaults to cfg.TEST.BETA.
    ``return_predictions``: the predicted and ground-truth 2D of every sample (before TEST.PROTOCOL's
    selection) as ``pred_2d`` and ``gt_2d`` (num_samples, J, 2) numpy, in dataset order.
    Under DDP each rank evaluates its shard (e.g. :class:`lib.engine.distributed.ShardSampler`);
    the per-sample values are gathered from every rank, put back in dataset order by
    ``meta['index']`` and de-duplicated (a padding sampler repeats a few samples), so every metric
    equals the single-process value on every rank.
    """
    beta = float(cfg.TEST.BETA if beta is None else beta)
    if not gt_2d and model_2d is None:
        raise ValueError("validate: model_2d is None; pass a detector or gt_2d=True")
    keep = protocol_keep(cfg, getattr(loader, "dataset", None), protocol_from_cfg(cfg))
    acc = _Accumulator(cfg, device, lifters, cross_lifters, ensemble, keep, return_predictions)
    was_training = model_2d.training if model_2d is not None else False
    if model_2d is not None:
        model_2d.eval()
    for step, (images, _target, _weight, meta) in enumerate(loader):
        if max_batches and step >= max_batches:
            break
        pred_2d = (meta["joints_2d"].to(device, non_blocking=True).float() if gt_2d else
                   predict_2d(cfg, model_2d, images, meta, device, soft_argmax=soft_argmax, beta=beta))
        acc.add(pred_2d, meta)
    if model_2d is not None and was_training:
        model_2d.train()
    return acc.summarise(action_valid)


@torch.no_grad()
def validate_arrays(cfg, arrays: Mapping, pred_2d, device, lifters: Optional[Mapping] = None, *,
                    ensemble: bool = False, action_valid: bool = False) -> Dict:
    """:func:`validate` of given 2D joints (N, J, 2) px on the rows of ``arrays`` (no images read).

    ``arrays``: a prepared split's ``joints_2d`` (ground truth, for PDJ), ``joints_3d`` (cm),
    ``width``, ``height``, ``action``, ``subject``, ``frame`` and ``sequence`` (VideoPose3D's action
    key, for TEST.PROTOCOL.EXCLUDE_S11_DIRECTIONS); ``joints_3d_valid`` used with
    DATASET.MASK_LOW_CONFIDENCE. Rows go through the scoring of :func:`validate` in batches of
    TEST.BATCH_SIZE_PER_GPU, so the same 2D gives the same numbers. One process.
    """
    protocol = protocol_from_cfg(cfg)
    keep = (sample_mask(protocol, arrays["frame"], arrays["subject"], arrays["sequence"])
            if protocol.selects_frames else None)
    acc = _Accumulator(cfg, device, lifters, None, ensemble, keep)
    lookup = {a: i for i, a in enumerate(H36M_ACTIONS)}
    action_idx = torch.as_tensor([lookup.get(a, -1) for a in np.asarray(arrays["action"]).astype(str).tolist()])
    size = torch.as_tensor(np.stack([arrays["width"], arrays["height"]], axis=1), dtype=torch.float32)
    pred_2d = torch.as_tensor(np.asarray(pred_2d)[..., :2], dtype=torch.float32)
    tensors = {"joints_2d": torch.as_tensor(arrays["joints_2d"], dtype=torch.float32),
               "joints_3d": torch.as_tensor(arrays["joints_3d"], dtype=torch.float32),
               "image_size": size, "action_idx": action_idx}
    if "joints_3d_valid" in arrays:
        tensors["joints_3d_valid"] = torch.as_tensor(arrays["joints_3d_valid"], dtype=torch.float32)
    batch = max(1, int(cfg.TEST.BATCH_SIZE_PER_GPU))
    for s in range(0, len(pred_2d), batch):
        meta = {k: v[s:s + batch] for k, v in tensors.items()}
        meta["index"] = torch.arange(s, min(s + batch, len(pred_2d)))
        acc.add(pred_2d[s:s + batch].to(device), meta)
    return acc.summarise(action_valid)


def _per_action(action_idx: torch.Tensor, errors: Dict[str, torch.Tensor]) -> Dict:
    """{lifter: {action: mean MPJPE or None}} over the samples with a Human3.6M action index."""
    n_act = len(H36M_ACTIONS)
    valid = action_idx >= 0
    dev = action_idx.device
    counts = torch.zeros(n_act, dtype=torch.float64, device=dev).index_add_(
        0, action_idx[valid], torch.ones(int(valid.sum()), dtype=torch.float64, device=dev))
    out = {}
    for n, err in errors.items():
        sums = torch.zeros(n_act, dtype=torch.float64, device=dev).index_add_(0, action_idx[valid], err[valid].double())
        means = (sums / counts).cpu().tolist()
        out[n] = {a: (None if math.isnan(m) else m) for a, m in zip(H36M_ACTIONS, means)}
    return out


PER_SAMPLE_KEYS = ("per_sample_mpjpe", "pred_2d", "gt_2d")


def results_for_json(results: Dict) -> Dict:
    """The JSON-able part of :func:`validate`'s result (drops the per-sample arrays)."""
    return {k: v for k, v in results.items() if k not in PER_SAMPLE_KEYS}


# ----------------------------------------------------------------------------- one checkpoint
@dataclass
class EvalContext:
    """What evaluating several checkpoints on the same split shares: the split's (sharded) loader
    and the frozen lifters of MODEL_3D.NAMES, on one device."""
    cfg: object
    device: torch.device
    dataset: object
    loader: object
    lifters: Dict


def evaluation_context(cfg, *, gpu_id: int = 0, split: Optional[str] = None) -> EvalContext:
    """Build the validation split (``split`` or DATASET.TEST_SET), its loader (this rank's shard
    under torchrun, over the samples TEST.PROTOCOL scores) and every lifter of MODEL_3D.NAMES (all
    evaluated, none held out); z-scored lifters without stats of their own take the prepared
    training split's."""
    from lib.datasets import build_dataset
    from lib.datasets.base import dataset_root
    from lib.datasets.stats import train_stats
    from lib.engine.builders import build_lifter_sets, valid_loader
    from lib.engine.distributed import init_distributed

    apply_tf32(bool(cfg.TRAIN.TF32))
    info = init_distributed(bool(cfg.USE_CUDA), gpu_id, timeout_minutes=float(cfg.DIST_TIMEOUT_MINUTES))
    dataset = build_dataset(cfg, split or cfg.DATASET.TEST_SET, False)
    keep = protocol_keep(cfg, dataset, protocol_from_cfg(cfg))
    scored = dataset if keep is None else torch.utils.data.Subset(dataset, np.flatnonzero(keep).tolist())
    loader = valid_loader(cfg, scored, info.device, info.rank, info.world_size)   # only the samples scored
    lifters, _, _ = build_lifter_sets(cfg, train_stats(cfg, dataset_root(cfg)), cross=False, device=info.device)
    return EvalContext(cfg, info.device, dataset, loader, lifters)


def evaluate_checkpoint(cfg, checkpoint=None, *, context: Optional[EvalContext] = None, gpu_id: int = 0,
                        model_2d=None, **options) -> Dict:
    """Score a detector checkpoint with the lifters of MODEL_3D.NAMES on the validation split
    (:func:`validate`'s result). ``checkpoint`` None (and no ``model_2d``): ground-truth 2D. The
    one evaluation of ``run/valid_hrnet.py``, the pipeline and the benchmarks.

    ``context``: an :func:`evaluation_context` to reuse across checkpoints (built here otherwise).
    ``options``: :func:`validate`'s keywords; by default TEST.SOFT_ARGMAX, TEST.BETA,
    TEST.ENSEMBLE and TEST.ACTION_VALID of ``cfg``.
    """
    from lib.engine.builders import load_detector

    ctx = context or evaluation_context(cfg, gpu_id=gpu_id)
    if model_2d is None and checkpoint is not None:
        model_2d = load_detector(cfg, checkpoint, ctx.device)
    kwargs = dict(gt_2d=model_2d is None, soft_argmax=bool(cfg.TEST.SOFT_ARGMAX), beta=float(cfg.TEST.BETA),
                  ensemble=bool(cfg.TEST.ENSEMBLE), action_valid=bool(cfg.TEST.ACTION_VALID))
    kwargs.update(options)
    return validate(cfg, ctx.loader, model_2d, ctx.device, ctx.lifters, None, **kwargs)
