"""The original code's slow way, written once: the benchmarks time it and the tests compare with it.

Everything here keeps the original's structure (docs/original.md): Python loops over samples and
joints, OpenCV's float32 three-point affine solve per sample, per-sample numpy Procrustes. It is
deliberately not vectorised; ``lib`` holds the fast versions that must give the same numbers.

* box and affine: :func:`original_affine` (docs/original.md#heatmap-to-image-coordinates;
  ``exact=True`` solves the same three points in float64 for tight test tolerances),
  :func:`apply_affine`;
* decoding: :func:`original_decode` (soft-argmax, docs/original.md#soft-argmax-decoding),
  :func:`original_decode_argmax` (argmax), both with :func:`quarter_pixel_shift`;
* data: :func:`original_target` (one Gaussian per joint, docs/original.md#sample-pipeline),
  :func:`original_crop_target` (box, crop, normalisation and target of one sample);
* validation: :func:`procrustes_error_mm`, :func:`original_validate`
  (docs/original.md#validation-metrics);
* training: :func:`make_original_step`, the guided step (docs/original.md#one-training-step).
"""
import math
from collections import deque

import cv2
import numpy as np
import torch

from lib.core.heatmap import prepare_heatmaps
from lib.core.losses import JointsMSELoss, joints_mse_per_joint, ohklm
from lib.core.skeleton import get_skeleton
from lib.engine.evaluator import MM_PER_M, gt_mm_for
from lib.utils.device import autocast

PIXEL_STD = 200.0                                      # box size unit of centre / scale
CM_PER_M = 100.0
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ----------------------------------------------------------------------------- box -> affine
def _three_points(center, scale, output_size, dtype):
    """HRNet's ``get_affine_transform`` points (rotation 0, no shift), computed in ``dtype`` as the
    original does: the centre, a point half the box width above it, and a third at a right angle."""
    src_w = scale[0] * PIXEL_STD
    dst_w, dst_h = output_size
    src = np.zeros((3, 2), dtype)
    dst = np.zeros((3, 2), dtype)
    src[0] = center
    src[1] = center + np.array([0.0, -0.5 * src_w])
    dst[0] = [0.5 * dst_w, 0.5 * dst_h]
    dst[1] = dst[0] + np.array([0.0, -0.5 * dst_w])
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]], dtype)
    return src, dst


def original_affine(center, scale, output_size, inverse: bool = False, exact: bool = False) -> np.ndarray:
    """The (2, 3) matrix image px -> output px (crop or heatmap of ``output_size`` = (w, h)), or
    output -> image with ``inverse``. ``exact=False``: OpenCV's solve on float32 points, as the
    original; ``exact=True``: the same points in float64, solved as a linear system."""
    src, dst = _three_points(_numpy(center), _numpy(scale), output_size, np.float64 if exact else np.float32)
    frm, to = (dst, src) if inverse else (src, dst)
    if exact:
        return np.linalg.solve(np.concatenate([frm, np.ones((3, 1))], axis=1), to).T
    return cv2.getAffineTransform(frm, to)


def apply_affine(points, matrix):
    """(..., 2) points through a (2, 3) matrix (numpy arrays or torch tensors, both of one kind)."""
    return points @ matrix[:, :2].T + matrix[:, 2]


# ----------------------------------------------------------------------------- decoding
def quarter_pixel_shift(maps: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The original's post-processing, a double loop: (N, J, H, W) maps, (N, J, 2) heatmap px ->
    (N, J, 2) shift of +-0.25 px towards the larger neighbour on each axis, where the rounded
    coordinate lies strictly inside the map (1 < x < W - 1, 1 < y < H - 1); 0 elsewhere."""
    n, j, h, w = maps.shape
    shift = np.zeros(coords.shape, coords.dtype)
    for b in range(n):
        for p in range(j):
            hm = maps[b][p]
            px = int(math.floor(coords[b][p][0] + 0.5))
            py = int(math.floor(coords[b][p][1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]])
                shift[b][p] = np.sign(diff) * 0.25
    return shift


def original_decode(heatmaps: torch.Tensor, center, scale, beta: float, post_process: bool,
                    exact: bool = False) -> torch.Tensor:
    """The original ``get_final_preds_softargmax``: (N, J, H, W) -> (N, J, 2) image px.

    ``torch.softmax`` over each full map (batched, in the maps' dtype and on their device), the
    expectation over the pixel grid, the quarter-pixel shift by :func:`quarter_pixel_shift` on host
    copies, and one affine solve per sample (:func:`original_affine`). Differentiable through the
    softmax (the shift is a constant). ``center`` / ``scale``: (N, 2) tensors or arrays."""
    n, j, h, w = heatmaps.shape
    grid = {"dtype": heatmaps.dtype, "device": heatmaps.device}
    prob = torch.softmax(beta * heatmaps.reshape(n, j, h * w), dim=-1).reshape(n, j, h, w)
    grid_x = torch.linspace(0, 1, w, **grid) * (w - 1)
    grid_y = (torch.linspace(0, 1, h, **grid) * (h - 1)).reshape(h, 1)
    coords = torch.stack(((prob * grid_x).sum(dim=(2, 3)), (prob * grid_y).sum(dim=(2, 3))), dim=-1)
    if post_process:
        shift = quarter_pixel_shift(_numpy(heatmaps), _numpy(coords))
        coords = coords + torch.from_numpy(shift).to(coords.device)
    center, scale = _numpy(center), _numpy(scale)
    rows = []
    for b in range(n):
        matrix = torch.from_numpy(original_affine(center[b], scale[b], (w, h), inverse=True, exact=exact))
        rows.append(apply_affine(coords[b], matrix.to(coords)))
    return torch.stack(rows)


def original_decode_argmax(heatmaps: np.ndarray, center, scale, post_process: bool, exact: bool = True):
    """The original ``get_final_preds`` (argmax), per joint: (N, J, H, W) array -> (coords (N, J, 2)
    image px, maxvals (N, J, 1)). A map whose maximum is not above 0 decodes to (0, 0) before the
    shift and the transform."""
    n, j, h, w = heatmaps.shape
    coords = np.zeros((n, j, 2))
    maxvals = np.zeros((n, j, 1))
    for b in range(n):
        for p in range(j):
            flat = heatmaps[b, p].reshape(-1)
            idx = int(np.argmax(flat))
            maxvals[b, p, 0] = flat[idx]
            if flat[idx] > 0:
                coords[b, p] = float(idx % w), float(idx // w)
    if post_process:
        coords = coords + quarter_pixel_shift(heatmaps, coords)
    center, scale = _numpy(center), _numpy(scale)
    for b in range(n):
        coords[b] = apply_affine(coords[b], original_affine(center[b], scale[b], (w, h), inverse=True, exact=exact))
    return coords, maxvals


# ----------------------------------------------------------------------------- data
def original_target(joints, vis, image_size, heatmap_size, sigma):
    """HRNet's ``JointsDataset.generate_target``, one joint at a time: (J, 2) crop px, (J,) or (J, 1)
    visibility -> ((J, H, W) float32 Gaussians of ``sigma`` heatmap px, (J, 1) float32 weights;
    0 for a joint whose Gaussian lies wholly outside the map)."""
    num_joints = joints.shape[0]
    target_weight = np.ones((num_joints, 1), dtype=np.float32)
    target_weight[:, 0] = np.asarray(vis).reshape(num_joints)
    target = np.zeros((num_joints, heatmap_size[1], heatmap_size[0]), dtype=np.float32)
    tmp_size = sigma * 3
    for joint_id in range(num_joints):
        feat_stride = np.asarray(image_size) / np.asarray(heatmap_size)
        mu_x = int(joints[joint_id][0] / feat_stride[0] + 0.5)
        mu_y = int(joints[joint_id][1] / feat_stride[1] + 0.5)
        ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
        br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            target_weight[joint_id] = 0
            continue
        size = 2 * tmp_size + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        x0 = y0 = size // 2
        g = np.exp(- ((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2))
        g_x = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        g_y = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        img_x = max(0, ul[0]), min(br[0], heatmap_size[0])
        img_y = max(0, ul[1]), min(br[1], heatmap_size[1])
        if target_weight[joint_id] > 0.5:
            target[joint_id][img_y[0]:img_y[1], img_x[0]:img_x[1]] = g[g_y[0]:g_y[1], g_x[0]:g_x[1]]
    return target, target_weight


def original_crop_target(image, joints, vis, width, height, image_size, heatmap_size, sigma):
    """One training sample the original's way (docs/original.md#sample-pipeline): the box of the 2D
    joints grown by 7.5 % a side, centre / scale with the crop's aspect ratio and x1.25, one OpenCV
    affine solve, the warp, ToTensor + Normalize, each joint through the affine, the per-joint
    target. -> (image (3, h, w), target (J, Hm, Wm), weight (J, 1)) tensors."""
    xs, ys = joints[:, 0], joints[:, 1]
    w, h = xs.max() - xs.min(), ys.max() - ys.min()
    x1, y1 = int(max(0, xs.min() - 0.075 * w)), int(max(0, ys.min() - 0.075 * h))
    x2, y2 = int(min(width, xs.max() + 0.075 * w)), int(min(height, ys.max() + 0.075 * h))
    bw, bh = x2 - x1, y2 - y1
    center = np.array([x1 + bw * 0.5, y1 + bh * 0.5], np.float32)
    aspect = image_size[0] / image_size[1]
    if bw > aspect * bh:
        bh = bw / aspect
    elif bw < aspect * bh:
        bw = bh * aspect
    scale = np.array([bw / PIXEL_STD, bh / PIXEL_STD], np.float32) * 1.25
    matrix = original_affine(center, scale, image_size)
    crop = cv2.warpAffine(image, matrix, (int(image_size[0]), int(image_size[1])), flags=cv2.INTER_LINEAR)
    tensor = (torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    joints_crop = joints.copy()
    for j in range(len(joints)):
        if vis[j] > 0:
            joints_crop[j] = np.dot(matrix, np.array([joints[j, 0], joints[j, 1], 1.0]))
    target, weight = original_target(joints_crop, vis, image_size, heatmap_size, sigma)
    return tensor, torch.from_numpy(target), torch.from_numpy(weight)


# ----------------------------------------------------------------------------- validation
def procrustes_error_mm(pred_mm: np.ndarray, gt_mm: np.ndarray) -> float:
    """(J, 3) x2 -> MPJPE after aligning ``pred`` to ``gt`` (docs/original.md#3d-errors-per-lifter:
    similarity transform by SVD with the reflection fixed), one sample, float64."""
    mu_x, mu_y = gt_mm.mean(axis=0), pred_mm.mean(axis=0)
    x0, y0 = gt_mm - mu_x, pred_mm - mu_y
    norm_x, norm_y = np.sqrt((x0 ** 2).sum()), np.sqrt((y0 ** 2).sum())
    x0, y0 = x0 / norm_x, y0 / norm_y
    u, s, vt = np.linalg.svd(x0.T @ y0)
    v = vt.T
    r = v @ u.T
    if np.linalg.det(r) < 0:
        v[:, -1] *= -1
        s[-1] *= -1
        r = v @ u.T
    b = s.sum() * norm_x / norm_y
    t = mu_x - b * (mu_y @ r)
    aligned = b * (pred_mm @ r) + t
    return float(np.linalg.norm(aligned - gt_mm, axis=-1).mean())


@torch.no_grad()
def original_validate(cfg, batches, model, lifters, device):
    """The original's validation loop: per-sample decode, PDJ@0.2, MPJPE and Procrustes.

    ``batches``: (images, target, weight, meta) tuples; -> (PDJ %, {lifter: (MPJPE, P-MPJPE) mm})."""
    skel = get_skeleton(cfg.DATASET.DATASET)
    beta, post = float(cfg.TEST.BETA), bool(cfg.TEST.POST_PROCESS)
    detected, counted = 0, 0
    errors = {n: ([], []) for n in lifters}
    for images, _, _, meta in batches:
        heatmaps = prepare_heatmaps(model(images.to(device)).float(), cfg.DATASET.DATASET)
        pred_2d = original_decode(heatmaps.cpu(), meta["center"], meta["scale"], beta, post)   # (N, J, 2) CPU
        gt_2d = meta["joints_2d"].cpu().numpy()
        pred_np = pred_2d.numpy()
        for b in range(pred_np.shape[0]):
            torso = np.linalg.norm(gt_2d[b][skel.left_shoulder] - gt_2d[b][skel.right_hip])
            for j in range(pred_np.shape[1]):
                detected += int(np.linalg.norm(pred_np[b][j] - gt_2d[b][j]) < 0.2 * torso)
                counted += 1
        image_size = meta["image_size"].to(device).float()
        joints_3d_cm = meta["joints_3d"].to(device).float()
        for name, lifter in lifters.items():
            pred_mm = (lifter(pred_2d.to(device), image_size).float() * MM_PER_M).cpu().numpy().astype(np.float64)
            gt_mm = gt_mm_for(lifter, joints_3d_cm).cpu().numpy().astype(np.float64)
            for b in range(pred_mm.shape[0]):
                errors[name][0].append(float(np.linalg.norm(pred_mm[b] - gt_mm[b], axis=-1).mean()))
                errors[name][1].append(procrustes_error_mm(pred_mm[b], gt_mm[b]))
    return 100.0 * detected / counted, {n: (float(np.mean(e)), float(np.mean(p))) for n, (e, p) in errors.items()}


# ----------------------------------------------------------------------------- training
def make_original_step(model, lifters, optimizer, batch, device, cfg, amp: str):
    """The original's guided step with the given lifters and losses (docs/original.md#one-training-step,
    #dwa-and-lifter-dropout, #the-total-loss): heatmaps copied to the host and decoded again for
    every lifter by :func:`original_decode`, DWA weights computed on the host from the losses read
    back as numbers. -> a callable doing one step on ``batch`` = (images, target, weight, meta)."""
    images, target, target_weight, meta = batch
    L = cfg.LOSS
    dataset = cfg.DATASET.DATASET
    beta, post_process = float(L.BETA), bool(cfg.TEST.POST_PROCESS)
    criterion = JointsMSELoss(bool(L.USE_TARGET_WEIGHT))
    history = deque([[1.0] * len(lifters), [1.0] * len(lifters)], maxlen=3)
    rng = np.random.RandomState(0)

    def step():
        with autocast(device, amp):
            heatmaps = model(images)
        heatmaps = prepare_heatmaps(heatmaps.float(), dataset)
        center = meta["center"].cpu().numpy()
        scale = meta["scale"].cpu().numpy()
        gt_3d_m = meta["joints_3d"] / CM_PER_M
        loss_2d = criterion(heatmaps, target, target_weight)
        loss_2d_pj = joints_mse_per_joint(heatmaps, target, target_weight, bool(L.USE_TARGET_WEIGHT))
        l3d, l3d_xy, l3d_z, ohk = [], [], [], []
        for lifter in lifters.values():
            pose_2d_px = original_decode(heatmaps.cpu().clone(), center, scale, beta, post_process).to(device)
            pred_3d_m = lifter(pose_2d_px, meta["image_size"])
            sq = (pred_3d_m - gt_3d_m) ** 2
            l3d.append(sq.mean())
            l3d_xy.append(sq[..., :2].mean())
            l3d_z.append(sq[..., 2].mean())
            ohk.append(ohklm(loss_2d_pj, sq.mean(dim=-1), int(L.OHKLM_TOP_K))[0])
        history.append(l3d)
        ratio = np.array([float(a) / float(b) for a, b in zip(history[-2], history[-3])])   # host sync
        weights = np.exp(ratio / float(L.DWA_T))
        weights = weights / weights.sum()
        drop = rng.randint(0, len(lifters) + 1)
        if bool(L.DROPOUT) and len(lifters) > 1 and drop < len(lifters):
            weights[drop] = 0.0
        w2d = float(L.LOSS_2D_W) * loss_2d + float(L.OHKLM_W) * sum(wk * o for wk, o in zip(weights, ohk))
        w3d = (float(L.LOSS_3D_XY_W) * sum(wk * v for wk, v in zip(weights, l3d_xy))
               + float(L.LOSS_3D_Z_W) * sum(wk * v for wk, v in zip(weights, l3d_z)))
        loss = float(L.LOSS_SINGLE_W) * (w2d + w3d)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history[-1] = [float(v.detach()) for v in l3d]   # the original reads them back as numbers
    return step
