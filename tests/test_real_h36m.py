"""The dataset pipeline on four real Human3.6M frames (../shared/data/h36m_sample; skipped when absent).

The frames are indexed exactly as run/prepare_h36m.py would (calibrated image size, visibility, cm),
then read through the registered dataset with the original's 288x384 input, 72x96 heatmaps, sigma 3.
"""
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lib.config import get_cfg
from lib.core.heatmap import decode_soft
from lib.core.skeleton import H36M
from lib.core.transforms import affine_points, get_affine_transform
from lib.datasets import build_dataset, index as idx
from lib.datasets.cameras import load_h36m_cameras
from lib.datasets.prepare_h36m import normalise_action

IMAGE_SIZE, HEATMAP_SIZE = (288, 384), (72, 96)


@pytest.fixture(scope="module")
def real_root(shared_data, tmp_path_factory):
    z = np.load(shared_data / "test_h36m_body3d.npz")
    cams = load_h36m_cameras()
    rows = {k: [] for k in idx.SPLIT_KEYS}
    for name, part, S in zip(z["imgname"], z["part"], z["S"]):
        base = Path(str(name)).name                                   # S1_Directions_1.54138969_000001.jpg
        m = re.fullmatch(r"(S\d+)_(.+)\.(\d+)_(\d+)\.jpg", base)
        subject, folder, cam_id, frame = m.group(1), m.group(2), m.group(3), int(m.group(4))
        cam = cams[subject][cam_id]
        j2d = part[:, :2]
        j3d_cm = S[:, :3] * 100.0
        vis = ((j2d[:, 0] >= 0) & (j2d[:, 0] < cam["width"]) & (j2d[:, 1] >= 0) & (j2d[:, 1] < cam["height"]))
        for k, v in dict(image=base, joints_2d=j2d, joints_vis=vis.astype(np.uint8), joints_3d=j3d_cm - j3d_cm[0],
                         hip_camera=j3d_cm[0], width=cam["width"], height=cam["height"],
                         action=normalise_action(folder), subject=subject, camera=cam_id, frame=frame,
                         cam_R=cam["R"], cam_T=cam["t_mm"] / 10, cam_K=cam["K"], cam_dist=cam["dist"]).items():
            rows[k].append(v)
    root = tmp_path_factory.mktemp("real_h36m")
    arrays = {k: np.array(v) for k, v in rows.items()}
    for split in ("train", "valid"):
        idx.write_split(root, split, arrays, 17)
    idx.write_index(root, {"dataset": "h36m", "num_joints": 17, "image_root": str(shared_data),
                           "splits": {s: {"file": f"{s}.npz", "count": 4} for s in ("train", "valid")}})
    return root, arrays, z


def _cfg(root):
    cfg = get_cfg()
    cfg.DATASET.ROOT = str(root)
    cfg.MODEL.IMAGE_SIZE = list(IMAGE_SIZE)
    cfg.MODEL.HEATMAP_SIZE = list(HEATMAP_SIZE)
    cfg.MODEL.SIGMA = 3.0
    return cfg


def test_crop_target_decode_returns_the_annotation(real_root):
    root, arrays, _ = real_root
    ds = build_dataset(_cfg(root), "valid", is_train=False)
    assert [normalise_action(a) for a in ("Directions_1", "SittingDown", "Greeting", "WalkDog_1")] == \
        list(arrays["action"])
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    _, target, weight, meta = batch
    pred = decode_soft(target, meta["center"], meta["scale"], post_process=False).numpy().astype(np.float64)
    gt = arrays["joints_2d"].astype(np.float64)
    k = meta["scale"][:, 0].numpy().astype(np.float64) * 200.0 / HEATMAP_SIZE[0]   # image px per heatmap px
    # 1) exact: the target's blob sits on the rounded heatmap cell mu = int(x/4 + 0.5); decoding returns it.
    M = get_affine_transform(meta["center"].numpy(), meta["scale"].numpy(), 0, IMAGE_SIZE)
    mu = np.floor(affine_points(gt, M) / 4.0 + 0.5)
    Minv = get_affine_transform(meta["center"].numpy(), meta["scale"].numpy(), 0, HEATMAP_SIZE, inv=True)
    inside = (mu[..., 0] >= 3) & (mu[..., 0] < HEATMAP_SIZE[0] - 3) & (mu[..., 1] >= 3) & (mu[..., 1] < HEATMAP_SIZE[1] - 3)
    assert inside.sum() == 4 * 17 and (weight[..., 0] == 1).all()
    np.testing.assert_allclose(pred, affine_points(mu, Minv), atol=1e-3)
    # 2) against the annotation: within half a heatmap pixel (the encoder's rounding), i.e. 0.5 px at
    #    heatmap resolution, k/2 = 2.2 .. 3.0 image px here.
    err_hm = np.abs(pred - gt) / k[:, None, None]
    assert err_hm.max() <= 0.5 + 1e-4, err_hm.max()


def test_item_from_real_frame(real_root, tmp_path):
    root, arrays, z = real_root
    ds = build_dataset(_cfg(root), "train", is_train=True)
    for i in range(4):
        image, target, weight, meta = ds[i]
        assert image.shape == (3, 384, 288) and target.shape == (17, 96, 72)
        j2d = arrays["joints_2d"][i].astype(np.float64)
        W, H = int(arrays["width"][i]), int(arrays["height"][i])
        xmin, xmax = min(p[0] for p in j2d), max(p[0] for p in j2d)
        ymin, ymax = min(p[1] for p in j2d), max(p[1] for p in j2d)
        w, h = xmax - xmin, ymax - ymin
        x1, x2 = int(max(0, xmin - 0.075 * w)), int(min(W, xmax + 0.075 * w))
        y1, y2 = int(max(0, ymin - 0.075 * h)), int(min(H, ymax + 0.075 * h))
        bw, bh = x2 - x1, y2 - y1
        cx, cy = x1 + bw / 2, y1 + bh / 2
        bw, bh = (bw, bw / 0.75) if bw > 0.75 * bh else (bh * 0.75, bh)
        np.testing.assert_allclose(meta["center"], [cx, cy], rtol=1e-6)
        np.testing.assert_allclose(meta["scale"], [bw / 200 * 1.25, bh / 200 * 1.25], rtol=1e-6)
        # every annotated joint of these frames is inside the image and marked visible
        assert (z["part"][i, :, 2] == 1).all() and (meta["joints_2d_vis"] == 1).all() and (weight == 1).all()
        assert meta["image_size"].tolist() == [W, H] and meta["joints_3d"][0].tolist() == [0, 0, 0]
        # the crop equals the original's: OpenCV 3-point affine, warpAffine, ToTensor + Normalize
        s200 = meta["scale"][0] * 200.0
        src = np.float32([[cx, cy], [cx, cy - s200 * 0.5], [cx - s200 * 0.5, cy]])
        dst = np.float32([[144, 192], [144, 192 - 144], [0, 192]])
        rgb = cv2.cvtColor(cv2.imread(meta["image"]), cv2.COLOR_BGR2RGB)
        crop = cv2.warpAffine(rgb, cv2.getAffineTransform(src, dst), IMAGE_SIZE, flags=cv2.INTER_LINEAR)
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        ref = ((crop / 255.0 - mean) / std).transpose(2, 0, 1)
        assert np.abs(image.numpy() - ref).mean() < 0.01
    # one debug picture: the crop with its joints and bones (L2D_DEBUG_DIR keeps a copy to look at)
    image, _, _, meta = ds[0]
    rgb = (image.numpy().transpose(1, 2, 0) * np.array([0.229, 0.224, 0.225]) + np.array([0.485, 0.456, 0.406]))
    bgr = cv2.cvtColor(np.clip(rgb * 255, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    pts = affine_points(meta["joints_2d"], get_affine_transform(meta["center"], meta["scale"], 0, IMAGE_SIZE))
    for a, b in H36M.bones:
        cv2.line(bgr, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), (0, 255, 255), 1, cv2.LINE_AA)
    for x, y in pts:
        cv2.circle(bgr, (int(x), int(y)), 3, (0, 0, 255), -1)
    out_dir = Path(os.environ.get("L2D_DEBUG_DIR", tmp_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(out_dir / "debug_crop_h36m.png"), bgr)
