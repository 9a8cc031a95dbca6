"""The frozen ``Lifter`` wrapper: image-pixel 2D joints -> root-relative 3D joints in metres.

Shapes: N batch, J joints. ``Lifter.forward(pose_2d_px (N, J, 2), image_size (N, 2) = (w, h))``
-> ``pose_3d_m (N, J, 3)``. The wrapper owns the network's input normalisation
(docs/original.md#lifter-inputs-and-units):

* ``zscore`` (``sb``): ``(p - mean_2d) / (std_2d + 1e-8)``, flattened joint-major to ``(N, 2J)``;
  the output ``(N, 3J)`` is reshaped to ``(N, J, 3)``, unnormalised as ``z * std_3d + mean_3d``
  (cm, no eps) and divided by 100.
* ``screen`` (``videopose``, ``iganet``, ``mixste``): ``x_n = x/w*2 - 1``, ``y_n = y/w*2 - h/w``;
  outputs are metres as the networks give them.

Frame layout: these three are fed ``(N, 1, J, 2)`` (N sequences of one frame). The original
passed the batch as ONE sequence ``[1, N, J, 2]``; for a receptive field of 1 in eval mode every
frame is processed independently, so both give identical results (VideoPose: 1x1 convolutions and
frozen BN; IGANet: frames are merged into the batch; MixSTE: temporal attention over one frame).

Units / root: outputs are kept exactly as the networks give them. VideoPose and IGANet were
trained on root-zeroed targets, so their root is ~0; MixSTE's root is NOT subtracted
(docs/original.md#3d-errors-per-lifter).

The lifter is frozen: no parameter requires grad, and ``train()`` keeps every submodule in eval
mode (BN statistics never change, dropout is off); gradients still flow to ``pose_2d_px``.
"""
from pathlib import Path
from typing import Dict, Optional, Union

import numpy as np
import torch
import torch.nn as nn

from lib.utils.errors import BadValueError

STATS_KEYS = ("mean_2d", "std_2d", "mean_3d", "std_3d")
ZSCORE_EPS = 1e-8


def screen_normalize(pose_2d_px: torch.Tensor, image_size: torch.Tensor) -> torch.Tensor:
    """(N, J, 2) pixels, (N, 2) or (2,) (w, h) -> (N, J, 2): ``x/w*2 - 1``, ``y/w*2 - h/w``."""
    size = torch.as_tensor(image_size, device=pose_2d_px.device).to(pose_2d_px.dtype).reshape(-1, 1, 2)
    w, h = size[..., :1], size[..., 1:]
    offset = torch.cat([torch.ones_like(w), h / w], dim=-1)
    return pose_2d_px / w * 2 - offset


def zscore(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / (std + 1e-8)`` (the original's normalisation; unnormalising uses std only)."""
    return (x - mean) / (std + ZSCORE_EPS)


def load_stats(path: Union[str, Path], trusted=None) -> Dict[str, np.ndarray]:
    """Normalisation stats ``{mean_2d, std_2d, mean_3d, std_3d}`` from ``stats.npz`` or the original pkl.

    ``.npz`` is read with ``allow_pickle=False``. ``.pkl`` (the original ``<dataset>_stats.pkl``, a
    dict of numpy arrays) is read as plain data only: a pickle that would run code is refused unless
    ``path`` is in ``trusted`` (``TRUSTED_FILES`` / ``--trust``; :func:`lib.utils.safe_io.load_pickle`).
    """
    from lib.utils.safe_io import load_npz, load_pickle
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stats file not found: {path} (expected stats.npz written by "
                                f"run/prepare_*.py or the original <dataset>_stats.pkl)")
    if path.suffix == ".npz":
        raw = load_npz(path, rebuild_hint="re-create it (run/prepare_*.py --force writes stats.npz)")
    elif path.suffix in (".pkl", ".pickle"):
        raw = load_pickle(path, trusted)
        if not isinstance(raw, dict):
            raise BadValueError(f"{path}: expected a dict with keys {STATS_KEYS}, got {type(raw).__name__}")
    else:
        raise BadValueError(f"{path}: unknown stats format {path.suffix!r}; use .npz or .pkl")
    missing = [k for k in STATS_KEYS if k not in raw]
    if missing:
        raise KeyError(f"{path}: stats keys {missing} missing (found {sorted(raw)})")
    return {k: np.asarray(_to_numpy(raw[k]), dtype=np.float64) for k in STATS_KEYS}


def _to_numpy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def coerce_stats(stats, num_joints: int) -> Optional[Dict[str, torch.Tensor]]:
    """Stats as float32 tensors shaped (J, 2)/(J, 3); accepts flat (2J,)/(3J,) joint-major arrays."""
    if stats is None:
        return None
    if isinstance(stats, (str, Path)):
        stats = load_stats(stats)
    out = {}
    for key in STATS_KEYS:
        if key not in stats or stats[key] is None:
            raise KeyError(f"stats[{key!r}] missing; stats need keys {STATS_KEYS} (found {sorted(stats)})")
        value = torch.as_tensor(_to_numpy(stats[key]), dtype=torch.float32)
        dims = 2 if key.endswith("2d") else 3
        if tuple(value.shape) not in ((num_joints, dims), (num_joints * dims,)):
            raise ValueError(f"stats[{key!r}] has shape {tuple(value.shape)}; expected ({num_joints}, {dims}) "
                             f"or flat ({num_joints * dims},) for {num_joints} joints")
        out[key] = value.reshape(num_joints, dims)
    return out


def freeze_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class Lifter(nn.Module):
    """Frozen 2D->3D lifter: ``forward(pose_2d_px (N, J, 2), image_size (N, 2)) -> (N, J, 3)`` metres."""

    def __init__(self, net: nn.Module, num_joints: int, normalization: str = "screen",
                 layout: str = "frames", stats=None, name: str = ""):
        super().__init__()
        if normalization not in ("zscore", "screen", "none"):
            raise ValueError(f"Lifter {name!r}: unknown normalization {normalization!r}")
        if layout not in ("flat", "frames", "joints"):
            raise ValueError(f"Lifter {name!r}: unknown layout {layout!r}")
        receptive_field = getattr(net, "receptive_field", None)
        if callable(receptive_field) and receptive_field() != 1:
            raise ValueError(f"Lifter {name!r}: the network's receptive field is {receptive_field()} "
                             f"frames; L2D feeds single frames (receptive field 1, filter widths [1,1,1])")
        self.name = name
        self.num_joints = int(num_joints)
        self.normalization = normalization
        self.layout = layout
        # what the network itself leaves trainable (IGANet's mixing scalars are not): training restores it
        self.trainable_names = tuple(n for n, p in net.named_parameters() if p.requires_grad)
        self.net = freeze_(net)
        stats_t = coerce_stats(stats, self.num_joints)
        if normalization == "zscore" and stats_t is None:
            raise BadValueError(f"lifter {name!r} works on z-scored coordinates and needs stats "
                             f"(mean_2d/std_2d px, mean_3d/std_3d cm): pass stats= (dict or stats.npz / "
                             f"<dataset>_stats.pkl path) or a self-contained checkpoint that carries them")
        for key in STATS_KEYS:
            self.register_buffer(key, None if stats_t is None else stats_t[key])
        self.train(False)

    @property
    def stats(self) -> Optional[Dict[str, torch.Tensor]]:
        if self.mean_2d is None:
            return None
        return {k: getattr(self, k) for k in STATS_KEYS}

    def train(self, mode: bool = True):
        # Always eval: BN running stats and dropout of a frozen lifter must never change.
        return super().train(False)

    def unfreeze(self):
        """For training the network itself: the parameters its definition leaves trainable get
        ``requires_grad`` back (frozen parts stay frozen); -> those parameters, in definition order.
        ``self.net.train()`` is then the caller's (this wrapper's own ``train`` keeps eval mode)."""
        named = dict(self.net.named_parameters())
        params = [named[n] for n in self.trainable_names if n in named]
        for p in params:
            p.requires_grad_(True)
        return params

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, num_joints={self.num_joints}, normalization={self.normalization!r}, "
                f"layout={self.layout!r}")

    def normalize_input(self, pose_2d_px: torch.Tensor, image_size=None) -> torch.Tensor:
        """(N, J, 2) pixels -> (N, J, 2) in the network's input space."""
        if self.normalization == "zscore":
            return zscore(pose_2d_px, self.mean_2d.to(pose_2d_px.dtype), self.std_2d.to(pose_2d_px.dtype))
        if self.normalization == "screen":
            if image_size is None:
                raise ValueError(f"lifter {self.name!r} screen-normalises its input and needs image_size (N, 2)")
            return screen_normalize(pose_2d_px, image_size)
        return pose_2d_px

    def forward(self, pose_2d_px: torch.Tensor, image_size: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pose_2d_px.dim() != 3 or pose_2d_px.shape[1:] != (self.num_joints, 2):
            raise ValueError(f"lifter {self.name!r} expects pose_2d_px of shape (N, {self.num_joints}, 2), "
                             f"got {tuple(pose_2d_px.shape)}")
        n, j = pose_2d_px.shape[0], self.num_joints
        x = self.normalize_input(pose_2d_px, image_size)
        if self.layout == "flat":
            y = self.net(x.reshape(n, j * 2)).reshape(n, j, 3)
        elif self.layout == "frames":
            y = self.net(x.unsqueeze(1))
            if y.shape != (n, 1, j, 3):
                raise RuntimeError(f"lifter {self.name!r}: net returned {tuple(y.shape)}, expected ({n}, 1, {j}, 3)")
            y = y[:, 0]
        else:
            y = self.net(x)
        if y.shape != (n, j, 3):
            raise RuntimeError(f"lifter {self.name!r}: output {tuple(y.shape)}, expected ({n}, {j}, 3)")
        if self.normalization == "zscore":
            pose_3d_cm = y * self.std_3d.to(y.dtype) + self.mean_3d.to(y.dtype)
            return pose_3d_cm / 100.0
        return y
