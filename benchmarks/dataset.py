"""Dataset throughput: our pipeline vs the original's way, on the demo data (prints figures).

    python benchmarks/dataset.py [--root data/demo_h36m] [--cfg experiments/demo/tiny_96x128.yaml] [-n 600]
                                 [--workers 0,2,4] [--json-out FILE] [KEY VALUE ...]

Rows (samples per second):
* ``dataset[i]``            : our __getitem__ (decode, closed-form affine precomputed per split, warp,
                              normalise, vectorised heatmap encoding);
* ``DataLoader wK``         : the same through torch's DataLoader with K workers, batch 32;
* ``original way``          : per sample the original's recipe on the same images -- Python box and
                              centre/scale, OpenCV 3-point affine solve, warp, ToTensor+Normalize,
                              per-joint affine and per-joint Gaussian target loop
                              (``original_crop_target`` in ``benchmarks/reference.py``);
* ``crop+target only``      : both pipelines on already decoded images (JPEG decoding excluded).
Without --root, the synthetic demo set is generated and prepared under a temporary folder first.
The first line names the machine (CPU model).
"""
import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

if __package__ in (None, ""):  # `python benchmarks/dataset.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Timer, add_json_out, make_synthetic_h36m, print_machine, write_json_out  # noqa: E402
from benchmarks.reference import original_crop_target  # noqa: E402
from lib.config import load_cfg  # noqa: E402
from lib.datasets import build_dataset  # noqa: E402


def ensure_demo(root):
    if root is not None:
        return Path(root)
    default = Path("data/demo_h36m")
    if (default / "index.json").is_file():
        return default
    tmp = Path(tempfile.mkdtemp(prefix="l2d_bench_"))
    print(f"generating the demo data under {tmp} ...")
    return make_synthetic_h36m(tmp, frames_per_seq=30, actions_per_subject=2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=None, help="prepared dataset root (default: data/demo_h36m or a fresh demo)")
    p.add_argument("--cfg", default="experiments/demo/tiny_96x128.yaml")
    p.add_argument("--split", default="train")
    p.add_argument("-n", type=int, default=600, help="samples per measurement")
    p.add_argument("--workers", default="0,2,4")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, e.g. MODEL.IMAGE_SIZE [288,384]")
    add_json_out(p)
    args = p.parse_args(argv)
    root = ensure_demo(args.root)
    cfg = load_cfg(args.cfg, ["DATASET.ROOT", str(root)] + list(args.opts))
    torch.set_num_threads(1)
    machine = print_machine()
    rate = Timer("cpu").rate
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
    check = {"target_max_abs_diff": float((a[1] - b[1]).abs().max()),
             "image_mean_abs_diff": float((a[0] - b[0]).abs().mean())}
    print(f"check: |target diff| max {check['target_max_abs_diff']:.2e}, "
          f"|image diff| mean {check['image_mean_abs_diff']:.2e}")
    width = max(len(r[0]) for r in rows)
    for name, r in rows:
        print(f"  {name:<{width}}  {r:9.1f} samples/s")
    out = {"machine": machine, "dataset": ds.name, "split": args.split, "samples": n, "torch_threads": 1,
           "image_size": list(isz), "heatmap_size": list(hsz), "samples_per_s": dict(rows), "check": check}
    write_json_out(args.json_out, "dataset", out)
    return out


if __name__ == "__main__":
    main()
