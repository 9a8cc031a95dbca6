"""Heatmap encoding (dataset targets) and decoding (soft and hard argmax) for the 2D detector.

Shapes: N batch, J joints, heatmaps (N, J, H, W) with W x H = ``heatmap_size`` (width, height);
coordinates are (x, y) = (column, row). Units are in the names: ``_hm`` heatmap pixels, ``_px``
original-image pixels, ``_crop_px`` network-input (crop) pixels.

Decoding follows docs/original.md#soft-argmax-decoding and docs/original.md#2d-predictions: a softmax over each map
scaled by ``beta`` (or a hard
argmax), the optional quarter-pixel shift towards the higher raw neighbour (``TEST.POST_PROCESS``,
applied in training as in the original), then the inverse of the crop's isotropic affine. All
torch functions are batched and stay on the input's device; off the CPU they never synchronise
with the host (on the CPU the soft-argmax picks its window or full-map path per map there).
Encoding (``encode_heatmaps``) is numpy, for the data loader, and reproduces HRNet's per-joint
Gaussian target loop (docs/original.md#sample-pipeline step 7) for any sigma.
"""
import functools
from typing import Sequence, Tuple, Union

import numpy as np
import torch

from lib.core.skeleton import H36M, H36M_TO_PANOPTIC
from lib.core.soft_argmax import WINDOW_TOL_PX, windowed_soft_argmax

PIXEL_STD = 200.0
SizeLike = Union[Sequence[float], torch.Tensor, np.ndarray]


# ----------------------------------------------------------------------------- decoding
def soft_argmax(heatmaps: torch.Tensor, beta: float = 100.0, *, tol_px: float = WINDOW_TOL_PX) -> torch.Tensor:
    """(N, J, H, W) heatmaps -> (N, J, 2) expected (x, y) in heatmap pixels (differentiable).

    Softmax of ``beta * heatmap`` over all H*W pixels of each map, then the probability-weighted
    mean of the column and row indices (docs/original.md#soft-argmax-decoding steps 1-3). Output dtype is at least
    float32.
    Where a bound proves that the pixels outside a 16 x 16 window holding the peak move the result
    by at most ``tol_px`` heatmap px, only the window is summed (``lib.core.soft_argmax``).
    """
    _check_maps(heatmaps)
    return windowed_soft_argmax(heatmaps, float(beta), tol_px)


def _check_maps(heatmaps: torch.Tensor) -> None:
    if heatmaps.dim() != 4:
        raise ValueError(f"soft_argmax: heatmaps must be (N, J, H, W), got shape {tuple(heatmaps.shape)}")


def maps_finite(heatmaps: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (...) bool: the map holds no NaN or inf.

    Tested through each map's sum: one read of the maps and an (N, J) result, where
    ``isfinite(maps).all()`` first writes a bool tensor as large as the maps (on a CPU that costs
    as much as the whole windowed decode). A NaN or an inf makes the sum non-finite; so does a sum
    past float32's range (maps of ~1e34 per pixel), which only a diverged detector produces and
    which is then flagged too.

    Half-precision maps are summed in float32: an fp16 sum overflows (to inf) once a map averages
    about 21 (64 x 48) or 9.5 (96 x 72) per pixel, finite maps whose overflowing step the fp16
    gradient scaler would simply have skipped (docs/scaling.md#gpu-notes).
    """
    return torch.isfinite(heatmaps.sum(dim=(-2, -1), dtype=torch.promote_types(heatmaps.dtype, torch.float32)))


@functools.lru_cache(maxsize=256)
def device_constant(values: tuple, dtype: torch.dtype, device: str) -> torch.Tensor:
    """A small constant tensor, made once per (values, dtype, device): copying host numbers to a GPU
    is a blocking copy that waits for the stream, so a training step must not make one
    (docs/scaling.md#gpu-notes). ``device`` as ``str(tensor.device)``. Callers never write to it."""
    return torch.tensor(values, dtype=dtype).to(device)


def _half_size(size: SizeLike, like: torch.Tensor) -> torch.Tensor:
    """(W / 2, H / 2) as a (2,) tensor of ``like``'s dtype and device."""
    if isinstance(size, torch.Tensor):
        return size.to(device=like.device, dtype=like.dtype).reshape(2) / 2
    return device_constant(tuple(float(v) / 2 for v in np.asarray(size).reshape(2)), like.dtype, str(like.device))


def to_image_coords(coords: torch.Tensor, center: torch.Tensor, scale: torch.Tensor,
                    heatmap_size: SizeLike) -> torch.Tensor:
    """(N, J, 2) heatmap px, center (N, 2) px, scale (N, 2) /200 -> (N, J, 2) image px (differentiable).

    Inverse of the crop affine with rotation 0 (docs/original.md#heatmap-to-image-coordinates). The original builds
    it from ``scale[:, 0]``
    only, so it is isotropic: ``x = cx + k (x_hm - W/2)``, ``y = cy + k (y_hm - H/2)`` with
    ``k = sx * 200 / W``; ``heatmap_size`` = (W, H).
    """
    if coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError(f"to_image_coords: coords must be (N, J, 2), got shape {tuple(coords.shape)}")
    half = _half_size(heatmap_size, coords)
    center = center.to(coords.dtype).reshape(-1, 1, 2)
    # k = sx * 200 / W with W = 2 * half[0]: (N, 1, 1)
    px_per_hm = scale.to(coords.dtype).reshape(-1, 2)[:, :1, None] * (PIXEL_STD / 2) / half[0]
    return center + px_per_hm * (coords - half)


def _quarter_pixel_shift(heatmaps: torch.Tensor, coords_hm: torch.Tensor) -> torch.Tensor:
    """(N, J, H, W), (N, J, 2) -> (N, J, 2) constant shift of ±0.25 px towards the higher neighbour.

    HRNet's post-processing: ``p = floor(c + 0.5)``; only when ``1 < px < W-1`` and ``1 < py < H-1``
    (strict), add ``0.25 * sign`` of the raw heatmap differences right-left and below-above.
    No gradient flows through it (docs/original.md#soft-argmax-decoding step 4, quirk 23).
    """
    with torch.no_grad():
        n, j, h, w = heatmaps.shape
        rounded = torch.floor(coords_hm.detach() + 0.5)                  # (N, J, 2) = (px, py)
        edge = device_constant((w - 1.0, h - 1.0), rounded.dtype, str(rounded.device))
        inside = ((rounded > 1) & (rounded < edge)).all(dim=-1, keepdim=True)   # False for NaN / inf
        # Clamp so that the gather is valid everywhere; the mask discards clamped entries. A
        # diverged detector gives NaN coordinates, and NaN.long() is INT64_MIN (an out-of-range
        # index), so non-finite values are replaced before the cast; they stay NaN in the output.
        finite = torch.nan_to_num(rounded, nan=1.0, posinf=1.0, neginf=1.0)
        p = torch.minimum(finite.clamp_(min=1.0), edge - 1).long()           # in [1, (W - 2, H - 2)]
        centre = p[..., :1] + p[..., 1:] * w                              # (N, J, 1)
        index = centre + device_constant((1, -1, w, -w), torch.long, str(p.device))   # right, left, below, above
        nb = torch.gather(heatmaps.detach().reshape(n, j, h * w), 2, index).unflatten(-1, (2, 2))
        shift = torch.sign(nb[..., 0] - nb[..., 1]).to(coords_hm.dtype) * 0.25
        # where(), not a product: NaN neighbours times a 0 mask would still be NaN.
        return torch.where(inside, shift, torch.zeros((), dtype=shift.dtype, device=shift.device))


def decode_soft(heatmaps: torch.Tensor, center: torch.Tensor, scale: torch.Tensor, beta: float = 100.0,
                post_process: bool = True, *, tol_px: float = WINDOW_TOL_PX) -> torch.Tensor:
    """(N, J, H, W) raw heatmaps, center (N, 2), scale (N, 2) -> (N, J, 2) image px (differentiable).

    The decoding of training and validation (docs/original.md#soft-argmax-decoding): soft-argmax, optional quarter-pixel
    shift (a constant w.r.t. gradients), inverse crop affine. ``tol_px`` as in :func:`soft_argmax`.
    """
    _check_maps(heatmaps)
    coords_hm = windowed_soft_argmax(heatmaps, float(beta), tol_px)
    if post_process:
        coords_hm = coords_hm + _quarter_pixel_shift(heatmaps, coords_hm)
    h, w = heatmaps.shape[-2:]
    return to_image_coords(coords_hm, center, scale, (w, h))


def decode_argmax(heatmaps: torch.Tensor, center: torch.Tensor, scale: torch.Tensor,
                  post_process: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, J, H, W) -> (coords (N, J, 2) image px, maxvals (N, J, 1)); classic HRNet decoding.

    Argmax of each flattened map (first maximum), ``x = idx mod W``, ``y = idx // W``; coordinates
    are zeroed where the maximum is <= 0, then the same optional quarter-pixel shift and inverse
    affine as :func:`decode_soft` (docs/original.md#2d-predictions). Not differentiable.
    """
    with torch.no_grad():
        n, j, h, w = heatmaps.shape
        dtype = torch.promote_types(heatmaps.dtype, torch.float32)
        flat = heatmaps.reshape(n, j, h * w)
        idx = flat.argmax(dim=-1, keepdim=True)          # first maximum, as numpy's argmax
        maxvals = flat.gather(-1, idx)
        coords_hm = torch.cat((idx % w, torch.div(idx, w, rounding_mode="floor")), dim=-1).to(dtype)
        coords_hm = coords_hm * (maxvals > 0).to(dtype)
        # A map holding NaN/inf has no meaningful maximum: its joint is NaN, as with decode_soft.
        finite = maps_finite(heatmaps).unsqueeze(-1)
        coords_hm = torch.where(finite, coords_hm, torch.full_like(coords_hm, float("nan")))
        if post_process:
            coords_hm = coords_hm + _quarter_pixel_shift(heatmaps, coords_hm)
        return to_image_coords(coords_hm, center, scale, (w, h)), maxvals


# ----------------------------------------------------------------------------- joint sets
def remap_h36m_to_panoptic(heatmaps: torch.Tensor) -> torch.Tensor:
    """(N, 17, H, W) H36M-ordered maps -> (N, 15, H, W) Panoptic order (docs/original.md#panoptic-heatmap-remapping)."""
    if heatmaps.shape[1] != H36M.num_joints:
        raise ValueError(f"remap_h36m_to_panoptic: expected {H36M.num_joints} H36M channels, "
                         f"got shape {tuple(heatmaps.shape)}")
    index = device_constant(tuple(H36M_TO_PANOPTIC), torch.long, str(heatmaps.device))
    return heatmaps.index_select(1, index)


def prepare_heatmaps(heatmaps: torch.Tensor, dataset: str) -> torch.Tensor:
    """(N, 17, H, W) detector output -> the dataset's joints: 15 for 'panoptic', unchanged for 'h36m'.

    A detector that already predicts 15 Panoptic channels is passed through unchanged.
    """
    if dataset == "h36m":
        return heatmaps
    if dataset == "panoptic":
        if heatmaps.shape[1] == len(H36M_TO_PANOPTIC):
            return heatmaps
        return remap_h36m_to_panoptic(heatmaps)
    raise ValueError(f"prepare_heatmaps: unknown DATASET.DATASET {dataset!r}; known: 'h36m', 'panoptic'")


# ----------------------------------------------------------------------------- encoding
def encode_heatmaps(joints_crop_px: np.ndarray, joints_vis: np.ndarray, image_size: SizeLike,
                    heatmap_size: SizeLike, sigma: float) -> Tuple[np.ndarray, np.ndarray]:
    """Gaussian targets. joints_crop_px (..., J, 2), joints_vis (..., J) or (..., J, 1) ->
    (target (..., J, H, W) float32, target_weight (..., J, 1) float32).

    HRNet's loop, vectorised (docs/original.md#sample-pipeline step 7): stride = image_size / heatmap_size (both (w,
    h));
    ``mu = int(c / stride + 0.5)`` (truncation towards zero, as Python's ``int``); window
    ``ul = int(mu - 3 sigma)``, ``br = int(mu + 3 sigma + 1)``; a window wholly outside the map gives
    weight 0 and no blob; otherwise the weight is the visibility and, if it is > 0.5, the clipped
    window holds the unnormalised Gaussian (peak 1) centred at ``ul + (2*3sigma+1) // 2``.
    """
    joints = np.asarray(joints_crop_px, dtype=np.float64)
    if joints.ndim < 2 or joints.shape[-1] != 2:
        raise ValueError(f"encode_heatmaps: joints_crop_px must be (..., J, 2), got {joints.shape}")
    vis = np.asarray(joints_vis, dtype=np.float32)
    if vis.shape == joints.shape[:-1] + (1,):
        vis = vis[..., 0]
    if vis.shape != joints.shape[:-1]:
        raise ValueError(f"encode_heatmaps: joints_vis shape {vis.shape} does not match joints "
                         f"{joints.shape} (expected (..., J) or (..., J, 1))")
    image_size = np.asarray(image_size, dtype=np.float64).reshape(2)
    heatmap_size = np.asarray(heatmap_size).reshape(2).astype(np.int64)
    width, height = int(heatmap_size[0]), int(heatmap_size[1])
    stride = image_size / heatmap_size

    tmp_size = sigma * 3
    size = 2 * tmp_size + 1
    centre = size // 2
    mu = np.trunc(joints / stride + 0.5)                       # (..., J, 2)
    ul = np.trunc(mu - tmp_size)
    br = np.trunc(mu + tmp_size + 1)
    outside = (ul[..., 0] >= width) | (ul[..., 1] >= height) | (br[..., 0] < 0) | (br[..., 1] < 0)
    weight = np.where(outside, np.float32(0), vis).astype(np.float32)

    # Same float32 arithmetic as the reference: g = exp(-((x - x0)^2 + (y - y0)^2) / (2 sigma^2))
    # with x the (integer-valued) offset of a pixel from the window's upper-left corner.
    cols = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)
    off_x = cols - ul[..., 0:1]                                # (..., J, W)
    off_y = rows - ul[..., 1:2]                                # (..., J, H)
    # The reference pastes g[g0:g1] over [max(0, ul), min(br, size)) and g has ceil(size) entries.
    g_len = np.ceil(size)
    in_x = (off_x >= 0) & (cols < br[..., 0:1]) & (off_x < g_len)
    in_y = (off_y >= 0) & (rows < br[..., 1:2]) & (off_y < g_len)
    dx2 = (off_x.astype(np.float32) - centre) ** 2
    dy2 = (off_y.astype(np.float32) - centre) ** 2
    blob = np.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma ** 2)).astype(np.float32)
    draw = (weight > 0.5)[..., None, None]
    mask = in_y[..., :, None] & in_x[..., None, :] & draw
    target = np.where(mask, blob, np.float32(0)).astype(np.float32)
    return target, weight[..., None]
