"""Evaluation protocols (docs/original.md#pdj02): MPJPE, P-MPJPE (Procrustes), N-MPJPE, PDJ, per-action means.

Shapes: N samples, J joints; 3D poses (N, J, 3) and 2D poses (N, J, 2) in any one unit (the
results are in that unit). numpy functions take and return numpy arrays; ``*_torch`` versions
are batched on the inputs' device (for fast validation without host round-trips).
"""
import math
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from lib.core.skeleton import H36M_ACTIONS


def _check_pair(pred, gt, name):
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"{name}: pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be (N, J, D)")


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, J, D) x2 -> (N,) mean per-joint Euclidean error (protocol #1)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_pair(pred, gt, "mpjpe")
    return np.linalg.norm(pred - gt, axis=-1).mean(axis=-1)


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, J, 3) x2 -> (N, J, 3) ``pred`` similarity-aligned (rotation, scale, translation) onto ``gt``.

    docs/original.md#3d-errors-per-lifter: centre both, divide by their Frobenius norms, SVD of ``X0^T Y0 = U S V^T``,
    ``R = V U^T``; a reflection (det R < 0) is removed by negating V's last column and the last
    singular value; scale ``b = sum(S) |X0| / |Y0|``, ``t = mu_X - b mu_Y R``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mu_x = gt.mean(axis=1, keepdims=True)
    mu_y = pred.mean(axis=1, keepdims=True)
    x0, y0 = gt - mu_x, pred - mu_y
    norm_x = np.sqrt((x0 ** 2).sum(axis=(1, 2), keepdims=True))
    norm_y = np.sqrt((y0 ** 2).sum(axis=(1, 2), keepdims=True))
    x0, y0 = x0 / norm_x, y0 / norm_y
    u, s, vt = np.linalg.svd(np.matmul(x0.transpose(0, 2, 1), y0))
    v = vt.transpose(0, 2, 1)
    rot = np.matmul(v, u.transpose(0, 2, 1))
    flip = np.where(np.linalg.det(rot) < 0, -1.0, 1.0)          # (N,)
    v[:, :, -1] *= flip[:, None]
    s[:, -1] *= flip
    rot = np.matmul(v, u.transpose(0, 2, 1))
    scale = s.sum(axis=1)[:, None, None] * norm_x / norm_y
    trans = mu_x - scale * np.matmul(mu_y, rot)
    return scale * np.matmul(pred, rot) + trans


def p_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, J, 3) x2 -> (N,) MPJPE after per-sample Procrustes alignment of pred onto gt (protocol #2)."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_pair(pred, gt, "p_mpjpe")
    return mpjpe(procrustes_align(pred, gt), gt.astype(np.float64))


def n_mpjpe(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N, J, 3) x2 -> (N,) MPJPE after the least-squares scale ``<pred, gt> / <pred, pred>`` (per sample)."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    _check_pair(pred, gt, "n_mpjpe")
    scale = (pred * gt).sum(axis=(1, 2), keepdims=True) / (pred * pred).sum(axis=(1, 2), keepdims=True)
    return mpjpe(scale * pred, gt)


def pdj(pred: np.ndarray, gt: np.ndarray, left_shoulder: int, right_hip: int,
        fraction: float = 0.2) -> np.ndarray:
    """(N, J, 2) x2 image px -> (N, J) bool: error strictly below ``fraction`` x torso diameter.

    Torso diameter = |gt[left_shoulder] - gt[right_hip]| per sample (docs/original.md#pdj02); no visibility
    mask (every joint counts, as in the original). PDJ@0.2 in percent = ``100 * pdj(...).mean()``.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    _check_pair(pred, gt, "pdj")
    torso = np.linalg.norm(gt[:, left_shoulder] - gt[:, right_hip], axis=-1)       # (N,)
    return np.linalg.norm(pred - gt, axis=-1) < fraction * torso[:, None]


def per_action_mean(values: Sequence[float], actions: Sequence[str],
                    names: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """(N,) per-sample values and their (N,) action names -> {action: mean} (NaN if no sample).

    ``names`` defaults to the 15 H36M actions in evaluation order (docs/original.md#per-action-breakdown).
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    actions = np.asarray(actions).reshape(-1)
    if values.shape != actions.shape:
        raise ValueError(f"per_action_mean: {values.shape[0]} values but {actions.shape[0]} action labels")
    out = {}
    for name in (H36M_ACTIONS if names is None else names):
        hit = actions == name
        out[name] = float(values[hit].mean()) if hit.any() else math.nan
    return out


# ----------------------------------------------------------------------------- torch versions
def mpjpe_torch(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(N, J, D) x2 -> (N,) on the inputs' device."""
    _check_pair(pred, gt, "mpjpe_torch")
    return torch.linalg.vector_norm(pred - gt, dim=-1).mean(dim=-1)


def mpjpe_masked_torch(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, J, D) x2, valid (N, J) -> (N,): mean joint error over each sample's valid joints only.

    For ``DATASET.MASK_LOW_CONFIDENCE`` (Panoptic joints whose annotation is the world origin). A
    sample without a valid joint gets 0 (Panoptic always keeps the root).
    """
    _check_pair(pred, gt, "mpjpe_masked_torch")
    err = torch.linalg.vector_norm(pred - gt, dim=-1)
    w = valid.to(err.dtype)
    return (err * w).sum(dim=-1) / w.sum(dim=-1).clamp(min=1.0)


def p_mpjpe_masked_torch(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, J, 3) x2, valid (N, J) -> (N,): P-MPJPE with the alignment fitted and scored on valid joints.

    The same Procrustes as :func:`p_mpjpe_torch` restricted to each sample's valid joints: their
    means centre the poses, and zeroed invalid rows drop out of the norms and the cross-covariance.
    The invalid joints are aligned too but not scored. float64 inside.
    """
    _check_pair(pred, gt, "p_mpjpe_masked_torch")
    out_dtype = pred.dtype
    pred, gt = pred.double(), gt.double()
    w = valid.double().unsqueeze(-1)                                   # (N, J, 1)
    count = w.sum(dim=1, keepdim=True).clamp(min=1.0)
    mu_x = (gt * w).sum(dim=1, keepdim=True) / count
    mu_y = (pred * w).sum(dim=1, keepdim=True) / count
    x0, y0 = (gt - mu_x) * w, (pred - mu_y) * w
    norm_x = x0.square().sum(dim=(1, 2), keepdim=True).sqrt()
    norm_y = y0.square().sum(dim=(1, 2), keepdim=True).sqrt()
    x0, y0 = x0 / norm_x, y0 / norm_y
    u, s, vt = torch.linalg.svd(x0.transpose(1, 2) @ y0)
    v, ut = vt.transpose(1, 2), u.transpose(1, 2)
    flip = torch.where(torch.linalg.det(v @ ut) < 0, -1.0, 1.0).to(s.dtype)
    sign = torch.ones_like(s)
    sign[:, -1] = flip
    v, s = v * sign[:, None, :], s * sign
    rot = v @ ut
    scale = s.sum(dim=1)[:, None, None] * norm_x / norm_y
    aligned = scale * (pred @ rot) + (mu_x - scale * (mu_y @ rot))
    return mpjpe_masked_torch(aligned, gt, valid).to(out_dtype)


def p_mpjpe_torch(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(N, J, 3) x2 -> (N,) P-MPJPE on the inputs' device (float64 inside; same math as :func:`p_mpjpe`)."""
    _check_pair(pred, gt, "p_mpjpe_torch")
    out_dtype = pred.dtype
    pred, gt = pred.double(), gt.double()
    mu_x = gt.mean(dim=1, keepdim=True)
    mu_y = pred.mean(dim=1, keepdim=True)
    x0, y0 = gt - mu_x, pred - mu_y
    norm_x = x0.square().sum(dim=(1, 2), keepdim=True).sqrt()
    norm_y = y0.square().sum(dim=(1, 2), keepdim=True).sqrt()
    x0, y0 = x0 / norm_x, y0 / norm_y
    u, s, vt = torch.linalg.svd(x0.transpose(1, 2) @ y0)
    v = vt.transpose(1, 2)
    ut = u.transpose(1, 2)
    flip = torch.where(torch.linalg.det(v @ ut) < 0, -1.0, 1.0).to(s.dtype)          # (N,)
    sign = torch.ones_like(s)
    sign[:, -1] = flip
    v = v * sign[:, None, :]               # negates V's last column where a reflection was found
    s = s * sign
    rot = v @ ut
    scale = s.sum(dim=1)[:, None, None] * norm_x / norm_y
    aligned = scale * (pred @ rot) + (mu_x - scale * (mu_y @ rot))
    return mpjpe_torch(aligned, gt).to(out_dtype)
