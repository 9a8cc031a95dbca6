"""Dataset throughput: our pipeline vs the original's way, on the demo data (prints figures).

    python benchmarks/dataset.py [--root data/demo_h36m] [--cfg experiments/demo/tiny_96x128.yaml] [-n 600]

Rows (samples per second):
* ``dataset[i]``            : our __getitem__ (decode, closed-form affine precomputed per split, warp,
                              normalise, vectorised heatmap encoding);
* ``DataLoader wK``         : the same through torch's DataLoader with K workers, batch 32;
* ``original way``          : per sample the original's recipe on the same images -- Python box and
                              centre/scale, OpenCV 3-point affine solve, warp, ToTensor+Normalize,
                              per-joint affine and per-joint Gaussian target loop;
* ``crop+target only``      : both pipelines on already decoded images (JPEG decoding excluded).
Without --root, the synthetic demo set is generated and prepared under a temporary folder first.
The first line names the machine (CPU model).
"""
import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

if __package__ in (None, ""):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_cfg
from lib.datasets import build_dataset
from lib.utils.machine import machine_info, machine_line

MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]


def original_affine(center, scale, output_size):
    src_w = scale[0] * 200.0
    dst_w, dst_h = output_size
    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = center
    src[1] = center + np.array([0.0, src_w * -0.5])
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + np.array([0.0, dst_w * -0.5])
    for pts in (src, dst):
        d = pts[0] - pts[1]
        pts[2] = pts[1] + np.array([-d[1], d[0]], np.float32)
    return cv2.getAffineTransform(src, dst)


def original_target(joints_crop, vis, image_size, heatmap_size, sigma):
    J = len(joints_crop)
    target = np.zeros((J, heatmap_size[1], heatmap_size[0]), np.float32)
    weight = np.array(vis, np.float32).reshape(J, 1)
    radius = int(sigma * 3)
    stride = (image_size[0] / heatmap_size[0], image_size[1] / heatmap_size[1])
    for j in range(J):
        mx, my = int(joints_crop[j][0] / stride[0] + 0.5), int(joints_crop[j][1] / stride[1] + 0.5)
        ul, br = (mx - radius, my - radius), (mx + radius + 1, my + radius + 1)
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        size = 2 * radius + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, np.newaxis]
        g = np.exp(-((x - radius) ** 2 + (y - radius) ** 2) / (2 * sigma ** 2))
        gx = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        gy = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        ix = max(0, ul[0]), min(br[0], heatmap_size[0])
        iy = max(0, ul[1]), min(br[1], heatmap_size[1])
        if weight[j] > 0.5:
            target[j, iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
    return target, weight


def original_crop_target(image, joints, vis, width, height, image_size, heatmap_size, sigma):
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
    scale = np.array([bw / 200.0, bh / 200.0], np.float32) * 1.25
    M = original_affine(center, scale, image_size)
    crop = cv2.warpAffine(image, M, (int(image_size[0]), int(image_size[1])), flags=cv2.INTER_LINEAR)
    tensor = (torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0 - MEAN) / STD
    joints_crop = joints.copy()
    for j in range(len(joints)):
        if vis[j] > 0:
            joints_crop[j] = np.dot(M, np.array([joints[j, 0], joints[j, 1], 1.0]))
    target, weight = original_target(joints_crop, vis, image_size, heatmap_size, sigma)
    return tensor, torch.from_numpy(target), torch.from_numpy(weight)


def rate(fn, n):
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def ensure_demo(root):
    if root is not None:
        return Path(root)
    default = Path("data/demo_h36m")
    if (default / "index.json").is_file():
        return default
    tmp = Path(tempfile.mkdtemp(prefix="l2d_bench_"))
    from lib.datasets.prepare_h36m import prepare_h36m
    from lib.datasets.synthetic import make_h36m_demo
    print(f"generating the demo data under {tmp} ...")
    make_h36m_demo(tmp, preview=False)
    prepare_h36m(tmp, tmp, train_interval=1, valid_interval=1, progress=False, log=lambda *_: None)
    return tmp


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="prepared dataset root (default: data/demo_h36m or a fresh demo)")
    p.add_argument("--cfg", default="experiments/demo/tiny_96x128.yaml")
    p.add_argument("--split", default="train")
    p.add_argument("-n", type=int, default=600, help="samples per measurement")
    p.add_argument("--workers", default="0,2,4")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.IMAGE_SIZE [288,384]")
    args = p.parse_args(argv)
    root = ensure_demo(args.root)
    cfg = load_cfg(args.cfg, ["DATASET.ROOT", str(root)] + list(args.opts))
    torch.set_num_threads(1)
    print(machine_line(machine_info()))
    ds = build_dataset(cfg, args.split, is_train=True)
    n = min(args.n, len(ds))
    isz, hsz, sigma = tuple(cfg.MODEL.IMAGE_SIZE), tuple(cfg.MODEL.HEATMAP_SIZE), float(cfg.MODEL.SIGMA)
    print(f"dataset {ds.name}/{args.split}: {len(ds)} samples of {ds.width[0]}x{ds.height[0]} px -> input "
          f"{isz[0]}x{isz[1]}, heatmaps {hsz[0]}x{hsz[1]}, sigma {sigma:g}; {n} samples per row; torch threads 1")
    rows = []
    ds[0]
    rows.append(("dataset[i]", rate(lambda: [ds[i] for i in range(n)], n)))
    for w in [int(x) for x in args.workers.split(",") if x]:
        sub = torch.utils.data.Subset(ds, range(n))
        loader = torch.utils.data.DataLoader(sub, batch_size=32, num_workers=w, shuffle=False)
        rows.append((f"DataLoader w{w}", rate(lambda: [b for b in loader], n)))

    def original(i):
        bgr = cv2.imread(str(ds.image_path(i)), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return original_crop_target(rgb, ds.joints_2d[i].astype(np.float64), ds.joints_vis[i], int(ds.width[i]),
                                    int(ds.height[i]), isz, hsz, sigma)
    rows.append(("original way", rate(lambda: [original(i) for i in range(n)], n)))
    images = [ds.read_image(i) for i in range(n)]
    ours = rate(lambda: [ds.make_sample(i, images[i]) for i in range(n)], n)
    theirs = rate(lambda: [original_crop_target(images[i], ds.joints_2d[i].astype(np.float64), ds.joints_vis[i],
                                                int(ds.width[i]), int(ds.height[i]), isz, hsz, sigma)
                           for i in range(n)], n)
    rows += [("crop+target only, ours", ours), ("crop+target only, original", theirs)]
    # same numbers either way
    a, b = ds.make_sample(0, images[0]), original_crop_target(images[0], ds.joints_2d[0].astype(np.float64),
                                                              ds.joints_vis[0], int(ds.width[0]), int(ds.height[0]),
                                                              isz, hsz, sigma)
    print(f"check: |target diff| max {float((a[1] - b[1]).abs().max()):.2e}, "
          f"|image diff| mean {float((a[0] - b[0]).abs().mean()):.2e}")
    width = max(len(r[0]) for r in rows)
    for name, r in rows:
        print(f"  {name:<{width}}  {r:9.1f} samples/s")
    return dict(rows)


if __name__ == "__main__":
    main()
