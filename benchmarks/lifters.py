"""Forward + backward-to-input time of every registered lifter (median of repeats).

The first line names the machine (CPU model, GPU when used). The lifters are randomly initialised
at their published sizes, with plausible normalisation stats (``benchmarks/common.py``).

Shapes: batch N (default 64), J joints (default 17). Usage::

    python benchmarks/lifters.py [--batch 64] [--joints 17] [--repeats 10] [--device cpu|cuda:N]
                                 [--threads 2] [--lifters sb,...] [--json-out FILE]
"""
import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # `python benchmarks/lifters.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model_3d  # noqa: E402
from benchmarks.common import (IMAGE_SIZE_PX, Timer, add_device_args, add_json_out, build_lifters,  # noqa: E402
                               device_from_args, print_machine, write_json_out)


def time_lifter(lifter, batch, num_joints, repeats, device, warmup=2) -> float:
    """Median ms of one forward + backward to the (N, J, 2) input (joints in a 200 px square of a
    1000 px frame)."""
    gen = torch.Generator().manual_seed(2)
    pose = (400.0 + 200.0 * torch.rand(batch, num_joints, 2, generator=gen)).to(device).requires_grad_(True)
    size = torch.tensor([IMAGE_SIZE_PX], device=device).expand(batch, 2)

    def step():
        lifter(pose, size).square().sum().backward()
        pose.grad = None
    return Timer(device).median(step, repeats, warmup)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--joints", type=int, default=17)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--lifters", nargs="*", default=None)
    add_device_args(parser)
    add_json_out(parser)
    args = parser.parse_args(argv)
    device = device_from_args(args)
    machine = print_machine(device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, J={args.joints}, "
          f"device {device}")
    print(f"{'lifter':<10} {'params':>12} {'fwd+bwd ms (median)':>22}")
    names = args.lifters or sorted(model_3d.LIFTERS)
    ms, params = {}, {}
    for name, lifter in build_lifters(names, args.joints, device).items():
        ms[name] = time_lifter(lifter, args.batch, args.joints, args.repeats, device)
        params[name] = sum(p.numel() for p in lifter.parameters())
        print(f"{name:<10} {params[name]:>12,} {ms[name]:>22.1f}")
    out = {"device": str(device), "machine": machine, "batch": args.batch, "joints": args.joints,
           "repeats": args.repeats, "ms": ms, "params": params}
    write_json_out(args.json_out, "lifters", out)
    return out


if __name__ == "__main__":
    main()
