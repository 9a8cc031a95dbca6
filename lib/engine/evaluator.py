"""Validation (SPEC §4): 2D decode, PDJ@0.2, per-lifter MPJPE / P-MPJPE, cross lifters, median
ensemble and per-action means, vectorised on the model's device.

Shapes: N batch, J dataset joints, K lifters. Units: 2D in original-image pixels, 3D in mm
(lifter outputs in metres x 1000; ground truth ``joints_3d`` in cm x 10).

Numbers are those of the original ``validate()`` (SPEC §4.2-4.6):

* PDJ: every joint of every sample counts (no visibility); detected iff error < 0.2 x the GT
  left-shoulder/right-hip distance (strict); reported in %.
* Per-lifter errors are per-sample means over joints; the main MPJPE pools the per-sample errors
  of all main lifters (= their average for equal counts); cross lifters are pooled apart.
* For z-scored lifters (``sb``) the GT goes through the original's normalise -> unnormalise round
  trip (``(x - m) / (s + 1e-8) * s + m``; SPEC §9 #22) before the x10.
* Ensemble: element-wise median over ALL evaluated lifters (main + cross, as the original),
  mean of the two middle values for an even count (numpy semantics); with ``ensemble=True`` it
  replaces the main MPJPE / P-MPJPE, as the original does.

Per batch nothing is copied to the host; lifters and metrics run on chunks of ``LIFT_CHUNK``
samples (several batches), and the per-sample tensors are concatenated and reduced once at the end
(one synchronisation per validation).

Returned dict (plain floats; ``-1`` where no lifter was evaluated, as the original)::

    {'num_samples', 'non_finite_samples', 'pdj', 'mpjpe', 'p_mpjpe',
     'per_lifter': {name: {'mpjpe', 'p_mpjpe', 'held_out': bool}},
     'main': {'mpjpe', 'p_mpjpe', 'lifters'},            # pooled training (main) lifters
     'cross': {'mpjpe', 'p_mpjpe', 'lifters'} | None,    # pooled held-out lifters
     'ensemble': {'mpjpe', 'p_mpjpe', 'lifters'} | None,
     'unmasked': {'mpjpe', 'p_mpjpe', 'per_lifter'}       # only with DATASET.MASK_LOW_CONFIDENCE
     'per_action': {name: {action: mean MPJPE or None}} | None,
     'per_sample_mpjpe': {name: numpy (num_samples,)}}   # not JSON; see results_for_json()
"""
import math
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

import torch

from lib.core.heatmap import decode_argmax, decode_soft, prepare_heatmaps
from lib.core.skeleton import H36M_ACTIONS, get_skeleton
from lib.engine.distributed import all_gather_cat, is_dist
from lib.eval.metrics import mpjpe_masked_torch, mpjpe_torch, p_mpjpe_masked_torch, p_mpjpe_torch
from lib.utils.device import apply_tf32, autocast

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


def _mean(values: torch.Tensor) -> float:
    return float(values.double().mean()) if values.numel() else -1.0


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


class _LiftScorer:
    """Lifts and scores pending batches as one chunk of at most ``LIFT_CHUNK`` samples.

    The original lifts each batch; every value here is per sample, so scoring several batches at
    once changes only the float round-off, while the lifters' matrix products and the batched SVD
    cost less per sample on hundreds of samples than on one batch. Batches with and without a
    joint mask are never scored together.
    """

    def __init__(self, evaluated: Mapping, ensemble: bool):
        self.evaluated, self.ensemble = evaluated, ensemble
        names = list(evaluated)
        self.per_sample, self.per_sample_p = {n: [] for n in names}, {n: [] for n in names}
        self.unmasked, self.unmasked_p = {n: [] for n in names}, {n: [] for n in names}
        self.ens, self.ens_p = [], []
        self.pending = []

    def add(self, batch: Dict[str, torch.Tensor]) -> None:
        if self.pending and set(self.pending[0]) != set(batch):
            self.flush()
        self.pending.append(batch)
        if sum(len(b["pred_2d"]) for b in self.pending) >= LIFT_CHUNK:
            self.flush()

    def flush(self) -> None:
        batches, self.pending = self.pending, []
        if not batches or not self.evaluated:
            return
        joined = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
        pred_2d, joints_3d_cm, image_size = joined["pred_2d"], joined["joints_3d_cm"], joined["image_size"]
        valid = joined.get("valid")
        preds_mm, gt0 = [], None
        for name, lifter in self.evaluated.items():
            pred_mm = lifter(pred_2d, image_size).float() * MM_PER_M
            gt_mm = gt_mm_for(lifter, joints_3d_cm)
            gt0 = gt_mm if gt0 is None else gt0
            self._score(self.per_sample[name], self.per_sample_p[name], pred_mm, gt_mm, valid)
            if valid is not None:
                self._score(self.unmasked[name], self.unmasked_p[name], pred_mm, gt_mm, None)
            preds_mm.append(pred_mm)
        if self.ensemble:
            self._score(self.ens, self.ens_p, median_over_lifters(torch.stack(preds_mm)), gt0, valid)

    @staticmethod
    def _score(errors, errors_p, pred_mm, gt_mm, valid) -> None:
        errors.append(mpjpe_torch(pred_mm, gt_mm) if valid is None else mpjpe_masked_torch(pred_mm, gt_mm, valid))
        errors_p.append(p_mpjpe_guarded(pred_mm, gt_mm, valid))


def predict_2d(cfg, model_2d, images, meta, device, *, soft_argmax: bool = True, beta: float = 100.0) -> torch.Tensor:
    """The detector's 2D joints of one batch in original-image pixels (N, J, 2): heatmaps (under
    TRAIN.AMP), the Panoptic remap, then the soft (or hard) argmax decode with TEST.POST_PROCESS."""
    center = meta["center"].to(device, non_blocking=True).float()
    scale = meta["scale"].to(device, non_blocking=True).float()
    with autocast(device, str(cfg.TRAIN.AMP)):
        heatmaps = model_2d(images.to(device, non_blocking=True))
    heatmaps = prepare_heatmaps(heatmaps.float(), cfg.DATASET.DATASET)
    post_process = bool(cfg.TEST.POST_PROCESS)
    if soft_argmax:
        return decode_soft(heatmaps, center, scale, beta, post_process)
    return decode_argmax(heatmaps, center, scale, post_process)[0]


@torch.no_grad()
def validate(cfg, loader, model_2d, device, lifters: Optional[Mapping] = None,
             cross_lifters: Optional[Mapping] = None, *, gt_2d: bool = False, soft_argmax: bool = True,
             beta: Optional[float] = None, ensemble: bool = False, action_valid: bool = False,
             max_batches: int = 0) -> Dict:
    """Evaluate ``model_2d`` (heatmaps) + lifters on ``loader`` (module docstring for the result).

    ``lifters``: main name -> frozen lifter; ``cross_lifters``: held-out ones. ``gt_2d`` feeds the
    ground-truth 2D to the lifters (``model_2d`` may be None). ``beta`` defaults to cfg.TEST.BETA.
    Under DDP each rank evaluates its shard (e.g. :class:`lib.engine.distributed.ShardSampler`);
    the per-sample values are gathered from every rank, put back in dataset order by
    ``meta['index']`` and de-duplicated (a padding sampler repeats a few samples), so every metric
    equals the single-process value on every rank.
    """
    skel = get_skeleton(cfg.DATASET.DATASET)
    beta = float(cfg.TEST.BETA if beta is None else beta)
    lifters = dict(lifters or {})
    cross_lifters = {k: v for k, v in dict(cross_lifters or {}).items() if k not in lifters}
    scorer = _LiftScorer({**lifters, **cross_lifters}, ensemble)
    if not gt_2d and model_2d is None:
        raise ValueError("validate: model_2d is None; pass a detector or gt_2d=True")
    was_training = model_2d.training if model_2d is not None else False
    if model_2d is not None:
        model_2d.eval()
    # DATASET.MASK_LOW_CONFIDENCE: main numbers over the valid joints; the unmasked ones kept beside
    masking = bool(cfg.DATASET.MASK_LOW_CONFIDENCE)
    hits, non_finite, actions = [], [], []
    sample_index = [] if is_dist() else None
    for step, (images, _target, _weight, meta) in enumerate(loader):
        if max_batches and step >= max_batches:
            break
        joints_2d = meta["joints_2d"].to(device, non_blocking=True).float()
        pred_2d = joints_2d if gt_2d else predict_2d(cfg, model_2d, images, meta, device,
                                                     soft_argmax=soft_argmax, beta=beta)
        # Non-finite guard (one flag per sample, no host sync): a diverged detector's joints. Such
        # samples never count as PDJ hits and make the MPJPE NaN, so a validation with any of them
        # can never become "best" (the trainer checks the count). A NaN or +inf anywhere in a map
        # makes its joint NaN in both decodings, so the joints alone tell (no second read of the
        # maps); -inf pixels get weight 0 in the soft-argmax, as in the original's softmax.
        bad = ~torch.isfinite(pred_2d).flatten(1).all(dim=1)
        non_finite.append(bad)
        hits.append(pdj_hits(pred_2d, joints_2d, skel.left_shoulder, skel.right_hip) & ~bad[:, None])
        # indices stay on the host here and go to the device once, in _summarise: a per-batch copy
        # of host numbers would wait for the stream (docs/scaling.md#gpu-notes)
        if sample_index is not None:
            if "index" in meta:
                sample_index.append(torch.as_tensor(meta["index"]).long().reshape(-1))
            else:
                sample_index = None      # no dataset index: keep the rank-by-rank order
        actions.append(torch.as_tensor(meta["action_idx"]).long().reshape(-1) if "action_idx" in meta
                       else torch.full((joints_2d.shape[0],), -1, dtype=torch.long))
        if not scorer.evaluated:
            continue
        batch = {"pred_2d": pred_2d, "joints_3d_cm": meta["joints_3d"].to(device, non_blocking=True).float(),
                 "image_size": meta["image_size"].to(device, non_blocking=True).float().expand(len(pred_2d), 2)}
        if masking and "joints_3d_valid" in meta:
            batch["valid"] = meta["joints_3d_valid"].to(device, non_blocking=True).float()
        scorer.add(batch)
    scorer.flush()
    if model_2d is not None and was_training:
        model_2d.train()
    return _summarise(cfg, device, skel, scorer, lifters, cross_lifters, hits, non_finite, actions, sample_index,
                      masking, ensemble, action_valid)


def _summarise(cfg, device, skel, scorer: _LiftScorer, lifters, cross_lifters, hits, non_finite, actions,
               sample_index, masking: bool, ensemble: bool, action_valid: bool) -> Dict:
    """Per-batch results -> the result dict, gathered over the ranks in dataset order."""
    names = list(scorer.evaluated)
    # Every rank reaches the same collectives, even one whose shard gave no batch (empty tensors).
    empty_f = torch.zeros(0, dtype=torch.float32, device=device)
    actions = [torch.cat(actions).to(device)] if actions else []             # host indices: one copy each
    order = None
    if sample_index is not None:
        order = _dataset_order(all_gather_cat(torch.cat(sample_index).to(device) if sample_index else empty_f.long()))

    def gather(parts, empty=empty_f):
        """Per-batch (B, ...) tensors -> (num_samples, ...) over all ranks, in dataset order."""
        t = all_gather_cat(torch.cat(parts) if parts else empty)
        return t if order is None else t[order]

    hits = gather(hits, torch.zeros(0, skel.num_joints, dtype=torch.bool, device=device))
    num_samples = int(hits.shape[0])
    non_finite = gather(non_finite, torch.zeros(0, dtype=torch.bool, device=device))
    out = {"num_samples": num_samples, "dataset": cfg.DATASET.DATASET, "non_finite_samples": int(non_finite.sum()),
           "pdj": 100.0 * float(hits.double().mean()) if num_samples else 0.0,
           "per_lifter": {}, "per_action": None, "per_sample_mpjpe": {}, "cross": None, "ensemble": None}
    cat = {n: gather(scorer.per_sample[n]) for n in names}
    cat_p = {n: gather(scorer.per_sample_p[n]) for n in names}
    for n in names:
        out["per_lifter"][n] = {"mpjpe": _mean(cat[n]), "p_mpjpe": _mean(cat_p[n]), "held_out": n in cross_lifters}
        out["per_sample_mpjpe"][n] = cat[n].double().cpu().numpy()

    def pooled(group):
        if not group:
            return {"mpjpe": -1.0, "p_mpjpe": -1.0, "lifters": []}
        return {"mpjpe": _mean(torch.cat([cat[n] for n in group])),
                "p_mpjpe": _mean(torch.cat([cat_p[n] for n in group])), "lifters": list(group)}

    out["main"] = pooled(list(lifters))
    if cross_lifters:
        out["cross"] = pooled(list(cross_lifters))
    if ensemble and names:
        out["ensemble"] = {"mpjpe": _mean(gather(scorer.ens)), "p_mpjpe": _mean(gather(scorer.ens_p)),
                           "lifters": names}
    main = out["ensemble"] if out["ensemble"] is not None else out["main"]
    out["mpjpe"], out["p_mpjpe"] = main["mpjpe"], main["p_mpjpe"]
    if masking and names:            # on every rank alike (gather is a collective)
        # with DATASET.MASK_LOW_CONFIDENCE the numbers above leave low-confidence joints out; these keep
        # them (the original's numbers), pooled over the main lifters and per lifter
        um = {n: gather(scorer.unmasked[n]) for n in names}
        um_p = {n: gather(scorer.unmasked_p[n]) for n in names}
        group = list(lifters) or names
        out["unmasked"] = {"mpjpe": _mean(torch.cat([um[n] for n in group])),
                           "p_mpjpe": _mean(torch.cat([um_p[n] for n in group])),
                           "per_lifter": {n: {"mpjpe": _mean(um[n]), "p_mpjpe": _mean(um_p[n])} for n in names}}
    if action_valid and names:
        out["per_action"] = _per_action(gather(actions, empty_f.long()), cat)
    return out


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


def results_for_json(results: Dict) -> Dict:
    """The JSON-able part of :func:`validate`'s result (drops per-sample arrays)."""
    return {k: v for k, v in results.items() if k != "per_sample_mpjpe"}


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
    under torchrun) and every lifter of MODEL_3D.NAMES (all evaluated, none held out); z-scored
    lifters without stats of their own take the prepared training split's."""
    from lib.datasets import build_dataset
    from lib.datasets.base import dataset_root
    from lib.datasets.stats import train_stats
    from lib.engine.builders import build_lifter_sets, valid_loader
    from lib.engine.distributed import init_distributed

    apply_tf32(bool(cfg.TRAIN.TF32))
    info = init_distributed(bool(cfg.USE_CUDA), gpu_id, timeout_minutes=float(cfg.DIST_TIMEOUT_MINUTES))
    dataset = build_dataset(cfg, split or cfg.DATASET.TEST_SET, False)
    loader = valid_loader(cfg, dataset, info.device, info.rank, info.world_size)
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
