"""Time of the training-step decode: ``decode_soft`` (post-processing on) forward + backward.

Shapes: heatmaps (N, J, H, W) = (batch, 17, 96, 72) by default. Printed beside it (median of
repeats, milliseconds): the same with every map forced down the full-map path (``tol_px=0``,
the decode before the windowed soft-argmax), ``torch.softmax`` alone (forward only, and with
autograd's backward) and a per-sample loop in the style of the original ``get_final_preds_softargmax`` (Python loop over
N x J for the quarter-pixel shift, one OpenCV affine solve per sample).

``--maps peaked`` (default) gives maps that look like a trained detector's (a unit Gaussian per
joint over a background near 0): with beta = 100 most exponents then fall in float32's denormal
range, which is what makes a plain softmax slow on CPUs, and the windowed soft-argmax reads them
once. ``--maps noise`` gives N(0, 0.1) maps, where every map takes the full-map fallback. The
first line names the machine (CPU model, GPU when used). On a GPU every map takes the full map (one
numeric path per device; ``lib/core/soft_argmax.py``). The rows take
turns, each repeat starting one row further (no row always follows the same one).
``memory floor`` times what any decode + backward must do (read the maps once, write a zeroed
gradient as large as them): ``loop / floor`` is the largest speed-up this machine allows. Usage::

    python benchmarks/decode.py [--batch 64] [--repeats 20] [--maps peaked|noise] [--device cpu] [--threads 0]
"""
import argparse
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.core.heatmap import decode_soft  # noqa: E402
from lib.core.soft_argmax import window_plan  # noqa: E402
from lib.utils.machine import machine_info, machine_line  # noqa: E402
from benchmarks.benchmark import Timer  # noqa: E402


def loop_decode(heatmaps, center, scale, beta=100.0):
    """The original's structure: batched softmax, then Python loops and per-sample affine solves."""
    n, j, h, w = heatmaps.shape
    prob = torch.softmax(beta * heatmaps.reshape(n, j, -1), dim=-1).reshape(n, j, h, w)
    grid_x = (torch.linspace(0, 1, w, device=heatmaps.device) * (w - 1)).expand(h, w)
    grid_y = (torch.linspace(0, 1, h, device=heatmaps.device) * (h - 1)).unsqueeze(1).expand(h, w)
    coords = torch.stack(((prob * grid_x).sum(dim=(2, 3)), (prob * grid_y).sum(dim=(2, 3))), dim=-1)
    raw = heatmaps.detach().cpu().numpy()
    values = coords.detach().cpu().numpy()
    shift = np.zeros_like(values)
    for b in range(n):
        for p in range(j):
            hm = raw[b, p]
            px, py = int(math.floor(values[b, p, 0] + 0.5)), int(math.floor(values[b, p, 1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                shift[b, p] = np.sign([hm[py][px + 1] - hm[py][px - 1], hm[py + 1][px] - hm[py - 1][px]]) * 0.25
    coords = coords + torch.from_numpy(shift).to(coords.device)
    out = []
    centers, scales = center.cpu().numpy(), scale.cpu().numpy()
    for b in range(n):
        src_w = scales[b, 0] * 200.0
        src = np.float32([centers[b], centers[b] + [0, -0.5 * src_w], centers[b] + [-0.5 * src_w, 0]])
        dst = np.float32([[w / 2, h / 2], [w / 2, h / 2 - w / 2], [0, h / 2]])
        matrix = torch.from_numpy(cv2.getAffineTransform(dst, src)).to(coords)
        out.append(coords[b] @ matrix[:, :2].T + matrix[:, 2])
    return torch.stack(out)


def softmax_only(heatmaps, center, scale, beta=100.0):
    n, j = heatmaps.shape[:2]
    return torch.softmax(beta * heatmaps.reshape(n, j, -1), dim=-1)


def memory_floor(h, c, s):
    """What any decode + backward must do at least: read every map once (here a max) and write a
    zeroed gradient as large as the maps (the windows' entries excluded)."""
    torch.zeros_like(h)
    return h.detach().amax(dim=(-2, -1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--joints", type=int, default=17)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=72)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--maps", choices=("peaked", "noise"), default="peaked")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.joints, args.height, args.width)
    if args.maps == "peaked":
        mu = torch.rand(args.batch, args.joints, 2, generator=gen) * torch.tensor([args.width - 6.0, args.height - 6.0]) + 3
        xs = torch.arange(args.width, dtype=torch.float32)
        ys = torch.arange(args.height, dtype=torch.float32)[:, None]
        d2 = (xs - mu[..., 0, None, None]) ** 2 + (ys - mu[..., 1, None, None]) ** 2
        heatmaps = torch.exp(-d2 / 8.0) + 0.01 * torch.randn(shape, generator=gen)
    else:
        heatmaps = 0.1 * torch.randn(shape, generator=gen)
    heatmaps = heatmaps.to(device)
    center = (400 + 200 * torch.rand(args.batch, 2, generator=gen)).to(device)
    scale = (1.5 + torch.rand(args.batch, 2, generator=gen)).to(device)

    print(machine_line(machine_info(device)))
    print(f"device {device}, {args.maps} heatmaps {tuple(shape)}; median of {args.repeats} repeats")
    plan = window_plan(heatmaps.float().reshape(-1, args.height, args.width), 100.0)
    windowed = int(plan["use_window"].sum())
    print(f"soft-argmax window ({plan['size'][1]}x{plan['size'][0]} px) proven exact on {windowed} of "
          f"{plan['use_window'].numel()} maps; the others take the full map")
    rows = [("memory floor (read + zeroed grad)", memory_floor, False),
            ("torch.softmax forward only", softmax_only, False),
            ("torch.softmax forward + backward", softmax_only, True),
            ("decode_soft, post-process", lambda h, c, s: decode_soft(h, c, s, 100.0, True), True),
            # tol_px = 0 sends every map down the full-map path: the decode before the window existed
            ("decode_soft, full map forced", lambda h, c, s: decode_soft(h, c, s, 100.0, True, tol_px=0.0), True),
            ("per-sample loop (original style)", loop_decode, True)]
    # Each call gets a fresh copy of the maps, made outside the timing (the rows take turns).
    backward = {label: bw for label, _, bw in rows}

    def run_row(fn, label):
        def call(hm):
            out = fn(hm, center, scale)
            if backward[label]:
                out.sum().backward()
        return call

    ms = Timer(device).interleaved({label: run_row(fn, label) for label, fn, _ in rows}, args.repeats, 3,
                                   prepare=lambda label: heatmaps.detach().clone().requires_grad_(backward[label]))
    loop = ms["per-sample loop (original style)"]
    for label, value in ms.items():
        print(f"{label:<34} {value:8.2f} ms   loop / this {loop / value:5.1f}x")


if __name__ == "__main__":
    main()
