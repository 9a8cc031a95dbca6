"""Loss terms of L2D training (docs/original.md#dwa-and-lifter-dropout, docs/original.md#losses): heatmap MSE, OHKLM,
3D MSE terms, DWA, lifter dropout.

Shapes: N batch, J joints, K lifters, heatmaps (N, J, H, W), target_weight (N, J, 1) (0/1),
3D poses (N, J, 3) in metres. Every torch function is batched and device-side (no host sync);
the only host-side pieces are the numpy dropout draw and ``dwa_weights`` (a reference helper).
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn


# ----------------------------------------------------------------------------- 2D heatmap loss
def _weighted_sq_err(output: torch.Tensor, target: torch.Tensor, target_weight: Optional[torch.Tensor],
                     use_target_weight: bool) -> torch.Tensor:
    if output.shape != target.shape:
        raise ValueError(f"heatmap loss: output {tuple(output.shape)} and target {tuple(target.shape)} differ")
    if use_target_weight:
        # HRNet multiplies prediction and target separately; kept for bitwise-faithful values.
        w = target_weight.reshape(output.shape[0], output.shape[1], 1, 1).to(output.dtype)
        return (output * w - target * w) ** 2
    return (output - target) ** 2


def joints_mse_per_joint(output: torch.Tensor, target: torch.Tensor, target_weight: torch.Tensor,
                         use_target_weight: bool = True) -> torch.Tensor:
    """(N, J, H, W) x2, (N, J, 1) -> (N, J): ``0.5 * mean_pixels (v (P - G))^2``
    (docs/original.md#per-joint-heatmap-loss)."""
    return 0.5 * _weighted_sq_err(output, target, target_weight, use_target_weight).mean(dim=(2, 3))


class JointsMSELoss(nn.Module):
    """HRNet heatmap loss: ``0.5 * mean over N*J*H*W of (v P - v G)^2`` (docs/original.md#heatmap-loss).

    forward(output (N, J, H, W), target (N, J, H, W), target_weight (N, J, 1)) -> scalar.
    """

    def __init__(self, use_target_weight: bool = True):
        super().__init__()
        self.use_target_weight = bool(use_target_weight)

    def forward(self, output, target, target_weight):
        return 0.5 * _weighted_sq_err(output, target, target_weight, self.use_target_weight).mean()


# ----------------------------------------------------------------------------- OHKLM
def ohklm_per_group(loss_2d: torch.Tensor, loss_3d: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(..., N, J) 2D and 3D per-joint losses -> pair of (...) tensors.

    For each sample, the ``top_k`` joints with the largest 3D loss are selected (not differentiable);
    both losses are averaged over those joints and then over N. Leading dims (e.g. K lifters)
    are kept, so K lifters are mined in one call.
    """
    if loss_2d.shape[-1] != loss_3d.shape[-1] or loss_2d.shape[-2] != loss_3d.shape[-2]:
        raise ValueError(f"ohklm: loss_2d {tuple(loss_2d.shape)} and loss_3d {tuple(loss_3d.shape)} "
                         f"must share the trailing (N, J) dims")
    num_joints = loss_3d.shape[-1]
    if not 1 <= top_k <= num_joints:
        raise ValueError(f"ohklm: top_k={top_k} must be in [1, J={num_joints}] (LOSS.OHKLM_TOP_K)")
    loss_2d = loss_2d.expand(loss_3d.shape[:-2] + loss_2d.shape[-2:])
    index = torch.topk(loss_3d.detach(), top_k, dim=-1, sorted=False).indices
    hard_2d = torch.gather(loss_2d, -1, index).mean(dim=(-2, -1))
    hard_3d = torch.gather(loss_3d, -1, index).mean(dim=(-2, -1))
    return hard_2d, hard_3d


def ohklm(loss_2d: torch.Tensor, loss_3d: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, J), (N, J) -> (loss_2d, loss_3d) scalars over each sample's ``top_k`` hardest-to-lift joints.

    docs/original.md#ohklm: ``O = (1/N) sum_b (1/top_k) sum_{j in S_b} l2d[b, j]`` with ``S_b`` the ``top_k``
    largest ``loss_3d[b]``; the 3D value is the same mean of the selected 3D losses.
    """
    if loss_2d.dim() != 2:
        raise ValueError(f"ohklm: expected (N, J) losses, got {tuple(loss_2d.shape)}")
    return ohklm_per_group(loss_2d, loss_3d, top_k)


# ----------------------------------------------------------------------------- 3D terms
def mse_3d_terms(pred_3d_m: torch.Tensor, gt_3d_m: torch.Tensor,
                 valid: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """(..., N, J, 3) x2 metres -> dict of MSEs in m^2 over the trailing (N, J, *) dims.

    ``xyz`` (over N*J*3), ``xy`` (N*J*2), ``z`` (N*J), ``per_joint`` (..., N, J) = mean over xyz.
    ``valid`` (N, J) (``DATASET.MASK_LOW_CONFIDENCE``): the means run over the valid joints only
    and ``per_joint`` is 0 at the others.
    """
    if pred_3d_m.shape[-1] != 3 or pred_3d_m.shape[-2:] != gt_3d_m.shape[-2:]:
        raise ValueError(f"mse_3d_terms: pred {tuple(pred_3d_m.shape)} and gt {tuple(gt_3d_m.shape)} "
                         f"must both end in (N, J, 3)")
    sq = (pred_3d_m - gt_3d_m) ** 2
    if valid is not None:
        w = valid.to(sq.dtype)
        count = w.sum().clamp(min=1.0)
        sq = sq * w.unsqueeze(-1)
        return {"xyz": sq.sum(dim=(-3, -2, -1)) / (3 * count), "xy": sq[..., :2].sum(dim=(-3, -2, -1)) / (2 * count),
                "z": sq[..., 2].sum(dim=(-2, -1)) / count, "per_joint": sq.mean(dim=-1)}
    return {"xyz": sq.mean(dim=(-3, -2, -1)), "xy": sq[..., :2].mean(dim=(-3, -2, -1)),
            "z": sq[..., 2].mean(dim=(-2, -1)), "per_joint": sq.mean(dim=-1)}


def average_prediction_loss(preds_3d_m: torch.Tensor, gt_3d_m: torch.Tensor,
                            valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(K, N, J, 3) lifter predictions, (N, J, 3) GT -> scalar MSE of their mean vs GT (m^2).

    ``valid`` (N, J): over the valid joints only (``DATASET.MASK_LOW_CONFIDENCE``).
    """
    sq = (preds_3d_m.mean(dim=0) - gt_3d_m) ** 2
    if valid is None:
        return sq.mean()
    w = valid.to(sq.dtype)
    return (sq * w.unsqueeze(-1)).sum() / (3 * w.sum().clamp(min=1.0))


def consistency_loss(preds_3d_m: torch.Tensor) -> torch.Tensor:
    """(K, N, J, 3) -> scalar ``sum over pairs a < b of mean (p_a - p_b)^2`` (0 for K = 1)."""
    k = preds_3d_m.shape[0]
    first, second = torch.triu_indices(k, k, offset=1, device=preds_3d_m.device)
    return ((preds_3d_m[first] - preds_3d_m[second]) ** 2).mean(dim=(1, 2, 3)).sum()


# ----------------------------------------------------------------------------- DWA
def dwa_weights(history: Sequence[Sequence[float]], T: float = 2.0) -> list:
    """History of per-step lists of K losses (oldest first, >= 3 entries) -> K floats summing to 1.

    docs/original.md#dwa-and-lifter-dropout: ``r_k = Q[-2][k] / Q[-3][k]``, ``w = softmax(r / T)``; the newest entry
    Q[-1] is
    deliberately not used (the original's one-step lag).
    """
    if len(history) < 3:
        raise ValueError(f"dwa_weights: need at least 3 history entries, got {len(history)}")
    older = np.array([float(v) for v in history[-3]], dtype=np.float64)
    newer = np.array([float(v) for v in history[-2]], dtype=np.float64)
    z = newer / older / T
    e = np.exp(z - z.max())
    return [float(v) for v in e / e.sum()]


class DWAState:
    """Dynamic Weight Average history kept on the device of the losses (no host sync).

    A FIFO of capacity 3 holding per-step (K,) losses, initially two all-ones entries (docs/original.md#training-setup
    step 13). Call ``update(losses)`` with the current step's detached losses, then ``weights()``,
    which uses the two entries BEFORE the current one: step 1 -> uniform, step 2 -> softmax(L1 / T),
    step t >= 3 -> softmax(L(t-1) / L(t-2) / T).
    """

    def __init__(self, K: int, T: float = 2.0):
        if K < 1:
            raise ValueError(f"DWAState: K must be >= 1 (number of training lifters), got {K}")
        self.K, self.T = int(K), float(T)
        # Row 0 is a placeholder for the FIFO's empty third slot; it is shifted out before use.
        self.history = torch.ones(3, self.K)
        self.num_updates = 0

    def update(self, losses: torch.Tensor) -> None:
        """Append the current (K,) losses (detached); the oldest entry falls out."""
        losses = losses.detach().reshape(-1)
        if losses.numel() != self.K:
            raise ValueError(f"DWAState.update: expected {self.K} losses, got shape {tuple(losses.shape)}")
        history = self.history.to(device=losses.device)
        self.history = torch.cat((history[1:], losses.to(history.dtype).unsqueeze(0)), dim=0)
        self.num_updates += 1

    def weights(self) -> torch.Tensor:
        """(K,) weights summing to 1, on the device of the last update."""
        ratio = self.history[1] / self.history[0]
        return torch.softmax(ratio / self.T, dim=0)

    def state_dict(self) -> dict:
        return {"K": self.K, "T": self.T, "num_updates": self.num_updates,
                "history": [[float(v) for v in row] for row in self.history.tolist()]}

    def load_state_dict(self, state: dict) -> None:
        if int(state["K"]) != self.K:
            raise ValueError(f"DWAState.load_state_dict: checkpoint has K={state['K']} lifters, this run "
                             f"has K={self.K}; resume with the same MODEL_3D.NAMES")
        self.T = float(state["T"])
        self.num_updates = int(state["num_updates"])
        self.history = torch.tensor(state["history"], dtype=torch.float32, device=self.history.device)


# ----------------------------------------------------------------------------- lifter dropout
RngLike = Union[np.random.RandomState, np.random.Generator]


def draw_dropout_index(K: int, rng: RngLike) -> int:
    """One draw of ``d`` uniform in {0, ..., K} (inclusive of K = 'no drop')."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, K + 1))
    return int(rng.randint(0, K + 1))


def lifter_dropout_mask(K: int, rng: RngLike, enabled: bool) -> np.ndarray:
    """(K,) float32 mask of 1s with at most one 0 (docs/original.md#dwa-and-lifter-dropout).

    ``d`` is drawn on every call, even when disabled, so the RNG stream matches the original.
    Lifter ``d`` is dropped iff enabled, ``K > 1`` and ``d < K``: each lifter with probability
    1/(K+1), none with probability 1/(K+1). The surviving weights are NOT renormalised.
    """
    d = draw_dropout_index(K, rng)
    mask = np.ones(K, dtype=np.float32)
    if enabled and K > 1 and d < K:
        mask[d] = 0.0
    return mask
