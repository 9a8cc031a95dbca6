"""The L2D training objective: heatmap loss plus multi-lifter 3D guidance, combined as docs/original.md#the-total-loss

Shapes: N batch, J dataset joints (17 H36M / 15 Panoptic), K training lifters, heatmaps
(N, 17, H, W) raw detector output. Units: heatmap MSE on heatmap values; 3D terms in m^2.

One step: remap the heatmaps to the dataset's joints, decode them ONCE with the soft-argmax
(post-processing per ``TEST.POST_PROCESS``), feed the same image-pixel 2D pose to every lifter,
and combine::

    W2d   = LOSS_2D_W * L2d + [OHKLM] OHKLM_W * sum_k w_k O_k
    W3d   = [LOSS_3D_Z] LOSS_3D_XY_W * sum_k w_k L3dxy_k + LOSS_3D_Z_W * sum_k w_k L3dz_k
            [else]      LOSS_3D_W * sum_k w_k L3d_k
    total = LOSS_SINGLE_W * (W2d + W3d) + [LOSS_3D_AVG] LOSS_3D_AVG_W * Lavg
                                        + [LOSS_3D_CONS] LOSS_3D_CONS_W * Lcons

``w`` = DWA weights (uniform 1/K when ``LOSS.DWA`` is off) times the lifter-dropout mask.
Without lifters (or with ``LOSS.LOSS_3D`` off) the objective is the plain heatmap loss.
"""
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from lib.core.heatmap import decode_soft, prepare_heatmaps
from lib.core.losses import (DWAState, JointsMSELoss, average_prediction_loss, consistency_loss,
                             joints_mse_per_joint, lifter_dropout_mask, mse_3d_terms, ohklm_per_group)

CM_PER_M = 100.0
META_KEYS = ("center", "scale", "joints_3d", "image_size")


def combine_losses(loss_2d, ohklm_k, l3d_k, l3d_xy_k, l3d_z_k, weights, avg, cons, *, loss_2d_w, ohklm_w,
                   loss_3d_w, loss_3d_xy_w, loss_3d_z_w, loss_3d_avg_w, loss_3d_cons_w, loss_single_w,
                   use_ohklm, use_3d_z, use_avg, use_cons) -> Dict[str, torch.Tensor]:
    """docs/original.md#the-total-loss on already computed terms: (K,) per-lifter tensors, (K,) weights, scalars.

    Returns (still attached) ``weighted_2d``, ``weighted_3d``, ``total`` and the weighted sums
    ``loss_ohklm``, ``loss_3d``, ``loss_3d_xy``, ``loss_3d_z``.
    """
    out = {"loss_ohklm": (weights * ohklm_k).sum() if use_ohklm else None,
           "loss_3d": (weights * l3d_k).sum(), "loss_3d_xy": (weights * l3d_xy_k).sum(),
           "loss_3d_z": (weights * l3d_z_k).sum()}
    weighted_2d = loss_2d_w * loss_2d
    if use_ohklm:
        weighted_2d = weighted_2d + ohklm_w * out["loss_ohklm"]
    if use_3d_z:
        weighted_3d = loss_3d_xy_w * out["loss_3d_xy"] + loss_3d_z_w * out["loss_3d_z"]
    else:
        weighted_3d = loss_3d_w * out["loss_3d"]
    total = loss_single_w * (weighted_2d + weighted_3d)
    # The avg / consistency terms sit outside LOSS_SINGLE_W and the DWA weights (docs/original.md#quirks, quirk 14).
    if use_avg:
        total = total + loss_3d_avg_w * avg
    if use_cons:
        total = total + loss_3d_cons_w * cons
    out.update(weighted_2d=weighted_2d, weighted_3d=weighted_3d, total=total)
    return out


class L2DObjective(nn.Module):
    """``forward(heatmaps (N, 17, H, W), target (N, J, H, W), target_weight (N, J, 1), meta)``
    -> ``(total_loss, terms)``.

    ``meta`` holds tensors on the heatmaps' device: ``center (N, 2)`` px, ``scale (N, 2)`` (/200),
    ``joints_3d (N, J, 3)`` cm root-relative camera frame, ``image_size (N, 2)`` (width, height).
    ``lifters``: name -> frozen lifter ``(pose_2d_px (N, J, 2), image_size (N, 2)) -> (N, J, 3) m``,
    in docs/original.md#training-setup step 10 order (dropout index and DWA entries follow it). They are kept in a plain
    dict, not registered as submodules, so this module's ``state_dict`` carries only the DWA
    history and the dropout RNG (as ``_extra_state``, plain Python types).

    ``terms`` (detached 0-dim tensors): ``loss_2d``, ``weighted_2d``, ``weighted_3d``, ``total``
    always; in 3D mode also ``loss_ohklm`` (sum_k w_k O_k), ``loss_3d``, ``loss_3d_xy``, ``loss_3d_z``
    (sum_k w_k of each), ``loss_3d_avg``, ``loss_3d_cons`` (unweighted), ``loss_3d/<name>``
    (unweighted xyz MSE) and ``dwa_w/<name>`` (effective weight after dropout). Terms whose
    switch is off are reported as 0. In 2D-only mode ``weighted_3d`` is 0.
    """

    def __init__(self, cfg, lifters: Optional[Mapping[str, nn.Module]] = None, seed: Optional[int] = None):
        super().__init__()
        loss = cfg.LOSS
        self.dataset = cfg.DATASET.DATASET
        self.post_process = bool(cfg.TEST.POST_PROCESS)
        # DATASET.MASK_LOW_CONFIDENCE: GT joints flagged invalid (meta['joints_3d_valid']) leave the 3D losses
        self.mask_low_confidence = bool(cfg.DATASET.MASK_LOW_CONFIDENCE)
        self.beta = float(loss.BETA)
        self.tol_px = float(cfg.MODEL.SOFT_ARGMAX_TOL_PX)
        self.lifters = dict(lifters or {})
        self.use_3d = bool(loss.LOSS_3D) and len(self.lifters) > 0
        self.use_ohklm = bool(loss.OHKLM)
        self.use_3d_z = bool(loss.LOSS_3D_Z)
        self.use_avg = bool(loss.LOSS_3D_AVG)
        self.use_cons = bool(loss.LOSS_3D_CONS)
        self.use_dwa = bool(loss.DWA)
        self.use_dropout = bool(loss.DROPOUT)
        self.top_k = int(loss.OHKLM_TOP_K)
        self.weights_cfg = dict(loss_2d_w=float(loss.LOSS_2D_W), ohklm_w=float(loss.OHKLM_W),
                                loss_3d_w=float(loss.LOSS_3D_W), loss_3d_xy_w=float(loss.LOSS_3D_XY_W),
                                loss_3d_z_w=float(loss.LOSS_3D_Z_W), loss_3d_avg_w=float(loss.LOSS_3D_AVG_W),
                                loss_3d_cons_w=float(loss.LOSS_3D_CONS_W),
                                loss_single_w=float(loss.LOSS_SINGLE_W))
        self.heatmap_loss = JointsMSELoss(bool(loss.USE_TARGET_WEIGHT))
        self.use_target_weight = bool(loss.USE_TARGET_WEIGHT)
        self.names = list(self.lifters)
        self.dwa = DWAState(max(len(self.names), 1), float(loss.DWA_T))
        self.rng = np.random.RandomState(int(cfg.SEED if seed is None else seed))

    @property
    def K(self) -> int:
        return len(self.names)

    def _check_meta(self, meta):
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise KeyError(f"L2DObjective: meta lacks {missing}; the dataset's meta dict must provide "
                           f"{list(META_KEYS)} as batched tensors")

    def lifter_weights(self, device) -> torch.Tensor:
        """(K,) effective weights for this step: DWA (or 1/K) times the dropout mask (one RNG draw)."""
        base = self.dwa.weights().to(device) if self.use_dwa else torch.full((self.K,), 1.0 / self.K, device=device)
        dropped = np.flatnonzero(lifter_dropout_mask(self.K, self.rng, self.use_dropout) == 0)
        if dropped.size == 0:
            return base
        # Compare against a Python int: no host-to-device copy (which could synchronise the stream).
        keep = torch.arange(self.K, device=device) != int(dropped[0])
        return base * keep.to(base.dtype)

    def forward(self, heatmaps: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor,
                meta: Mapping[str, torch.Tensor]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        heatmaps = prepare_heatmaps(heatmaps, self.dataset)
        loss_2d = self.heatmap_loss(heatmaps, target, target_weight)
        if not self.use_3d:
            zero = loss_2d.detach().new_zeros(())
            terms = {"loss_2d": loss_2d, "weighted_2d": loss_2d, "weighted_3d": zero, "total": loss_2d}
            return loss_2d, {k: v.detach() for k, v in terms.items()}

        self._check_meta(meta)
        image_size = meta["image_size"]
        pose_2d_px = decode_soft(heatmaps, meta["center"], meta["scale"], self.beta, self.post_process,
                                 tol_px=self.tol_px)
        gt_3d_m = meta["joints_3d"].to(pose_2d_px.dtype) / CM_PER_M
        preds_3d_m = torch.stack([self.lifters[name](pose_2d_px, image_size) for name in self.names])
        if preds_3d_m.shape[1:] != gt_3d_m.shape:
            raise ValueError(f"L2DObjective: lifter outputs {tuple(preds_3d_m.shape[1:])} do not match "
                             f"meta['joints_3d'] {tuple(gt_3d_m.shape)}")
        valid = meta.get("joints_3d_valid") if self.mask_low_confidence else None
        if self.mask_low_confidence and valid is None:
            raise KeyError("L2DObjective: DATASET.MASK_LOW_CONFIDENCE needs meta['joints_3d_valid'] (N, J)")
        per_lifter = mse_3d_terms(preds_3d_m, gt_3d_m.unsqueeze(0), valid)  # each (K,) / (K, N, J)

        self.dwa.update(per_lifter["xyz"])
        weights = self.lifter_weights(heatmaps.device)

        zero = loss_2d.new_zeros(())
        ohklm_k = None
        if self.use_ohklm:
            loss_2d_pj = joints_mse_per_joint(heatmaps, target, target_weight, self.use_target_weight)
            ohklm_k, _ = ohklm_per_group(loss_2d_pj.unsqueeze(0), per_lifter["per_joint"], self.top_k)
        avg = average_prediction_loss(preds_3d_m, gt_3d_m, valid) if self.use_avg else zero
        cons = consistency_loss(preds_3d_m) if self.use_cons else zero
        combined = combine_losses(loss_2d, ohklm_k, per_lifter["xyz"], per_lifter["xy"], per_lifter["z"],
                                  weights, avg, cons, use_ohklm=self.use_ohklm, use_3d_z=self.use_3d_z,
                                  use_avg=self.use_avg, use_cons=self.use_cons, **self.weights_cfg)
        terms = {"loss_2d": loss_2d, "loss_ohklm": combined["loss_ohklm"] if self.use_ohklm else zero,
                 "loss_3d": combined["loss_3d"], "loss_3d_xy": combined["loss_3d_xy"],
                 "loss_3d_z": combined["loss_3d_z"], "loss_3d_avg": avg, "loss_3d_cons": cons,
                 "weighted_2d": combined["weighted_2d"], "weighted_3d": combined["weighted_3d"],
                 "total": combined["total"]}
        for i, name in enumerate(self.names):
            terms[f"loss_3d/{name}"] = per_lifter["xyz"][i]
            terms[f"dwa_w/{name}"] = weights[i]
        return combined["total"], {k: v.detach() for k, v in terms.items()}

    # ------------------------------------------------------------------ resume support
    def get_extra_state(self) -> dict:
        kind, keys, pos, has_gauss, cached = self.rng.get_state()
        return {"dwa": self.dwa.state_dict(), "names": list(self.names),
                "rng": {"kind": str(kind), "keys": [int(v) for v in keys], "pos": int(pos),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}

    def set_extra_state(self, state: dict) -> None:
        if list(state.get("names", self.names)) != self.names:
            raise ValueError(f"L2DObjective: checkpoint lifters {state.get('names')} differ from this run's "
                             f"{self.names}; resume with the same MODEL_3D.NAMES")
        self.dwa.load_state_dict(state["dwa"])
        rng = state["rng"]
        self.rng.set_state((rng["kind"], np.asarray(rng["keys"], dtype=np.uint32), rng["pos"],
                            rng["has_gauss"], rng["cached_gaussian"]))
