"""Forward + backward-to-input time of every registered lifter (CPU, median of repeats).

The first line names the machine (CPU model).

Shapes: batch N (default 64), J joints (default 17). Usage::

    python benchmarks/lifters.py [--batch 64] [--joints 17] [--repeats 10] [--threads 2]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import model_3d  # noqa: E402
from lib.utils.machine import machine_info, machine_line  # noqa: E402


def dummy_stats(num_joints):
    return {"mean_2d": np.full((num_joints, 2), 500.0), "std_2d": np.full((num_joints, 2), 100.0),
            "mean_3d": np.zeros((num_joints, 3)), "std_3d": np.full((num_joints, 3), 20.0)}


def time_lifter(name, batch, num_joints, repeats, warmup=2):
    lifter = model_3d.build_lifter(name, num_joints, stats=dummy_stats(num_joints))
    pose = (torch.rand(batch, num_joints, 2) * 1000).requires_grad_(True)
    size = torch.tensor([[1000.0, 1000.0]]).expand(batch, 2)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        lifter(pose, size).square().sum().backward()
        elapsed = time.perf_counter() - start
        pose.grad = None
        if i >= warmup:
            times.append(elapsed)
    params = sum(p.numel() for p in lifter.parameters())
    return statistics.median(times), params


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--joints", type=int, default=17)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--lifters", nargs="*", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(machine_info()))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, J={args.joints}")
    print(f"{'lifter':<10} {'params':>12} {'fwd+bwd ms (median)':>22}")
    for name in args.lifters or sorted(model_3d.LIFTERS):
        seconds, params = time_lifter(name, args.batch, args.joints, args.repeats)
        print(f"{name:<10} {params:>12,} {seconds * 1e3:>22.1f}")


if __name__ == "__main__":
    main()
