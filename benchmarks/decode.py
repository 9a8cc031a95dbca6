"""Time of the training-step decode: ``decode_soft`` (post-processing on) forward + backward.

Shapes: heatmaps (N, J, H, W) = (batch, 17, 96, 72) by default. Printed beside it (median of
repeats, milliseconds): the same with every map forced down the full-map path (``tol_px=0``,
the decode before the windowed soft-argmax), ``torch.softmax`` alone (forward only, and with
autograd's backward) and the original ``get_final_preds_softargmax`` (``original_decode`` in
``benchmarks/reference.py``: a Python loop over N x J for the quarter-pixel shift, one OpenCV
affine solve per sample).

``--maps peaked`` (default) gives maps that look like a trained detector's (a unit Gaussian per
joint over a background near 0): with beta = 100 most exponents then fall in float32's denormal
range, which is what makes a plain softmax slow on CPUs, and the windowed soft-argmax reads them
once. ``--maps noise`` gives N(0, 0.1) maps, where every map takes the full-map fallback. The
first line names the machine (CPU model, GPU when used). On a GPU every map takes the full map (one
numeric path per device; ``lib/core/soft_argmax.py``). The rows take
turns, each repeat starting one row further (no row always follows the same one).
``memory floor`` times what any decode + backward must do (read the maps once, write a zeroed
gradient as large as them): ``loop / floor`` is the largest speed-up this machine allows. Usage::

    python benchmarks/decode.py [--batch 64] [--repeats 20] [--maps peaked|noise] [--device cpu|cuda:N]
                                [--threads 0] [--json-out FILE]
"""
import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # `python benchmarks/decode.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (Timer, add_device_args, add_json_out, device_from_args, peaked_heatmaps,  # noqa: E402
                               print_machine, write_json_out)
from benchmarks.reference import original_decode  # noqa: E402
from lib.core.heatmap import decode_soft  # noqa: E402
from lib.core.soft_argmax import window_plan  # noqa: E402

LOOP = "per-sample loop (original style)"


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
    add_device_args(parser)
    add_json_out(parser)
    args = parser.parse_args(argv)
    device = device_from_args(args)
    gen = torch.Generator().manual_seed(0)
    shape = (args.batch, args.joints, args.height, args.width)
    if args.maps == "peaked":
        heatmaps = peaked_heatmaps(*shape, sigma=2.0, seed=1)
    else:
        heatmaps = 0.1 * torch.randn(shape, generator=gen)
    heatmaps = heatmaps.to(device)
    center = (400 + 200 * torch.rand(args.batch, 2, generator=gen)).to(device)
    scale = (1.5 + torch.rand(args.batch, 2, generator=gen)).to(device)

    machine = print_machine(device)
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
            (LOOP, lambda h, c, s: original_decode(h, c, s, 100.0, True), True)]
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
    loop = ms[LOOP]
    for label, value in ms.items():
        print(f"{label:<34} {value:8.2f} ms   loop / this {loop / value:5.1f}x")
    out = {"device": str(device), "machine": machine, "maps": args.maps, "shape": list(shape),
           "repeats": args.repeats, "window_maps": windowed, "maps_total": int(plan["use_window"].numel()),
           "ms": ms, "loop_over_row": {label: loop / value for label, value in ms.items()}}
    write_json_out(args.json_out, "decode", out)
    return out


if __name__ == "__main__":
    main()
