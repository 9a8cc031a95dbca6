"""Evaluation protocols of the 3D pose literature as switches (docs/detections.md#protocols).

Shapes: N samples, J joints, K actions. Errors are per sample (N,) in any unit; 2D in pixels with the
image size (N, 2) = (w, h); 3D root-relative in any unit.

* metrics: P1 = MPJPE, P2 = P-MPJPE (rigid alignment with scale, :func:`lib.eval.metrics.p_mpjpe_torch`),
  N-MPJPE = MPJPE after the least-squares scale alone (VideoPose3D's protocol #3);
* averaging: ``frame`` (every sample weighs the same, the original's) or ``action`` (the mean of
  the per-action means over the actions present: VideoPose3D's "action-wise average", which pools
  the subjects, cameras and both recordings of an action);
* frames: every prepared frame, or those on a frame interval (``(frame - 1) % interval == 0``,
  which is the original's every-Nth-row sampling when the preparation kept every frame);
* test-time flip for the lifters: the 2D mirrored (``x -> w - x``, left/right joints swapped), lifted,
  the prediction un-mirrored (``X -> -X``, joints swapped back) and averaged with the plain one;
* the S11 "Directions" recording (camera 54138969's video is corrupt) kept or left out.

The defaults are the original's: frame-wise, P1 and P2, every prepared frame, no flip, S11
Directions kept (:func:`protocol_from_cfg` of an unchanged config).
"""
from dataclasses import asdict, dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from lib.utils.errors import BadValueError

AVERAGES = ("frame", "action")
S11_DIRECTIONS = ("S11", "Directions")      # (subject, VideoPose3D sequence name) of the corrupt recording


@dataclass(frozen=True)
class Protocol:
    """The switches of one evaluation (TEST.PROTOCOL); :meth:`describe` is what metrics files record."""
    average: str = "frame"
    interval: int = 0
    flip: bool = False
    n_mpjpe: bool = False
    exclude_s11_directions: bool = False

    def __post_init__(self):
        if self.average not in AVERAGES:
            raise BadValueError(f"TEST.PROTOCOL.AVERAGE {self.average!r}: use 'frame' (every sample weighs the "
                                f"same) or 'action' (mean of the per-action means)")
        if int(self.interval) < 0:
            raise BadValueError(f"TEST.PROTOCOL.INTERVAL {self.interval}: use 0 (every prepared frame) or N > 0 "
                                f"(frames 1, N + 1, 2N + 1, ...)")

    @property
    def selects_frames(self) -> bool:
        """Whether some prepared samples are left out of the scores."""
        return int(self.interval) > 1 or self.exclude_s11_directions

    def describe(self) -> Dict:
        """The switches as plain data, with the metrics they give (for metrics.json and report.json)."""
        out = asdict(self)
        out["metrics"] = ["mpjpe", "p_mpjpe"] + (["n_mpjpe"] if self.n_mpjpe else [])
        return out


def protocol_from_cfg(cfg) -> Protocol:
    """The TEST.PROTOCOL node of a config as a :class:`Protocol` (checked)."""
    p = cfg.TEST.PROTOCOL
    return Protocol(average=str(p.AVERAGE).lower(), interval=int(p.INTERVAL), flip=bool(p.FLIP),
                    n_mpjpe=bool(p.N_MPJPE), exclude_s11_directions=bool(p.EXCLUDE_S11_DIRECTIONS))


# ----------------------------------------------------------------------------- which samples count
def frame_mask(frames: np.ndarray, interval: int) -> np.ndarray:
    """(N,) frame numbers (counted from 1) -> (N,) bool: on the interval (all True for interval <= 1)."""
    frames = np.asarray(frames, dtype=np.int64)
    if int(interval) <= 1:
        return np.ones(frames.shape, dtype=bool)
    return (frames - 1) % int(interval) == 0


def sequence_mask(subjects: Sequence[str], sequences: Sequence[str], exclude_s11_directions: bool) -> np.ndarray:
    """(N,) subjects and VideoPose3D sequence names -> (N,) bool: False on S11's "Directions" when excluded."""
    subjects, sequences = np.asarray(subjects).astype(str), np.asarray(sequences).astype(str)
    if not exclude_s11_directions:
        return np.ones(subjects.shape, dtype=bool)
    return ~((subjects == S11_DIRECTIONS[0]) & (sequences == S11_DIRECTIONS[1]))


def sample_mask(protocol: Protocol, frames, subjects, sequences=None) -> np.ndarray:
    """(N,) bool: the samples the protocol scores (``sequences`` needed only to exclude S11 Directions)."""
    keep = frame_mask(frames, protocol.interval)
    if protocol.exclude_s11_directions:
        keep &= sequence_mask(subjects, sequences, True)
    return keep


# ----------------------------------------------------------------------------- averages
def average(values: torch.Tensor, action_idx: Optional[torch.Tensor], mode: str, num_actions: int) -> float:
    """(N,) per-sample errors -> one number: their mean (``frame``) or the mean over the actions
    present of each action's mean (``action``; ``action_idx`` (N,) in [0, num_actions), -1 = none,
    which is refused). -1.0 for no sample (the evaluator's "not evaluated")."""
    if values.numel() == 0:
        return -1.0
    values = values.double()
    if mode == "frame":
        return float(values.mean())
    if action_idx is None or bool((action_idx < 0).any()):
        raise BadValueError("TEST.PROTOCOL.AVERAGE action needs an action for every sample (Human3.6M); this "
                            "split has samples without one (CMU Panoptic): use TEST.PROTOCOL.AVERAGE frame")
    idx = action_idx.long()
    sums = torch.zeros(num_actions, dtype=torch.float64, device=values.device).index_add_(0, idx, values)
    counts = torch.zeros(num_actions, dtype=torch.float64, device=values.device).index_add_(
        0, idx, torch.ones_like(values))
    present = counts > 0
    return float((sums[present] / counts[present]).mean())


# ----------------------------------------------------------------------------- flip and scale
def flip_permutation(flip_pairs: Sequence[Sequence[int]], num_joints: int) -> torch.Tensor:
    """The joint order of the mirrored pose: each (left, right) pair swapped."""
    perm = list(range(num_joints))
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return torch.tensor(perm, dtype=torch.long)


def mirror_2d(pose_2d_px: torch.Tensor, image_size: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """(N, J, 2) px, (N, 2) (w, h) -> the mirrored image's joints: ``x -> w - x``, left/right swapped.

    ``w - x`` is VideoPose3D's flip of screen coordinates (``x_n -> -x_n`` with ``x_n = 2x/w - 1``)."""
    out = pose_2d_px[:, perm.to(pose_2d_px.device)].clone()
    out[..., 0] = image_size[:, None, 0].to(out.dtype) - out[..., 0]
    return out


def unmirror_3d(pose_3d: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """(N, J, 3) predicted from a mirrored input -> the pose of the unmirrored one: ``X -> -X``, joints swapped."""
    out = pose_3d[:, perm.to(pose_3d.device)].clone()
    out[..., 0] = -out[..., 0]
    return out


def n_mpjpe_torch(pred: torch.Tensor, gt: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, J, 3) x2 -> (N,): MPJPE after scaling ``pred`` by ``<pred, gt> / <pred, pred>`` per sample
    (float64 inside; :func:`lib.eval.metrics.n_mpjpe` is the numpy version). ``valid`` (N, J): the
    scale is fitted and the error averaged over the valid joints only (DATASET.MASK_LOW_CONFIDENCE)."""
    p, g = pred.double(), gt.double()
    w = torch.ones_like(p[..., 0]) if valid is None else valid.double()
    scale = (p * g * w[..., None]).sum(dim=(1, 2), keepdim=True) / (p * p * w[..., None]).sum(dim=(1, 2), keepdim=True)
    err = torch.linalg.vector_norm(scale * p - g, dim=-1)
    return ((err * w).sum(dim=-1) / w.sum(dim=-1).clamp(min=1.0)).to(pred.dtype)
