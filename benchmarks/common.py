"""What every benchmark shares: timing, the machine, the JSON figures and the synthetic inputs.

* :class:`Timer`: wall-clock of a callable, synchronising the timed CUDA device; medians of
  repeats, several callables timed in turns, samples per second;
* the machine a figure was measured on (``lib/utils/machine.py``): :func:`print_machine`, and
  ``machine`` in every JSON;
* ``--json-out FILE`` for every benchmark: :func:`add_json_out` and :func:`write_json_out`;
* ``--device`` / ``--threads``: :func:`add_device_args`, :func:`device_from_args`, :func:`pick_device`;
* :func:`peak_memory_mb`;
* synthetic inputs: :func:`random_batch` (images, targets and meta of a config's sizes),
  :func:`peaked_heatmaps` (maps that look like a trained detector's), :func:`build_lifters`
  (randomly initialised, plausible normalisation stats), :func:`make_synthetic_h36m` (a prepared
  synthetic Human3.6M set).

Speed ratios against the original depend on the machine (docs/scaling.md#benchmarks), so no
figure is written without it.
"""
import argparse
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch

import model_3d
from lib.core.skeleton import get_skeleton
from lib.engine.trainer import write_json
from lib.utils.machine import machine_info, machine_line

IMAGE_SIZE_PX = (1000.0, 1000.0)                          # a Human3.6M frame (w, h)
PIXEL_STD = 200.0
MIB = 1024.0 * 1024.0


# ----------------------------------------------------------------------------- timing
class Timer:
    """Wall-clock of a callable in ms. On a CUDA device it synchronises that device (not the current
    one) before and after, so that the time covers the kernels and not only their launches."""

    def __init__(self, device):
        self.device = torch.device(device)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return 1000.0 * (time.perf_counter() - start)

    def median(self, fn: Callable, steps: int, warmup: int) -> float:
        for _ in range(warmup):
            fn()
        return statistics.median(self(fn) for _ in range(steps))

    def rate(self, fn: Callable, samples: int) -> float:
        """Samples per second of one call of ``fn`` that processes ``samples`` samples."""
        return samples / max(self(fn) / 1000.0, 1e-12)

    def interleaved(self, fns: Dict[str, Callable], steps: int, warmup: int,
                    prepare: Optional[Callable] = None) -> Dict[str, float]:
        """Median ms of each callable, timed in turns (a, b, c, then b, c, a, then c, a, b, ...): a
        drift of the machine's speed (frequency, background load on a shared host) hits every one
        alike, and each repeat starts one further along, so that no callable always runs right
        after the same one (one that fills the cache or makes the allocator give memory back would
        otherwise always slow the next). With ``prepare``, each call is ``fn(prepare(name))`` and
        ``prepare`` runs outside the timing."""
        def call(name, fn):
            if prepare is None:
                return fn
            arg = prepare(name)
            return lambda: fn(arg)

        names = list(fns)
        for _ in range(warmup):
            for k in names:
                call(k, fns[k])()
        times = {k: [] for k in names}
        for step in range(steps):
            first = step % len(names)
            for k in names[first:] + names[:first]:
                times[k].append(self(call(k, fns[k])))
        return {k: statistics.median(v) for k, v in times.items()}


def peak_memory_mb(device) -> float:
    """``torch.cuda.max_memory_allocated`` on a CUDA device, else the process's peak resident set."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (MIB if sys.platform == "darwin" else 1024.0)


# ----------------------------------------------------------------------------- device, machine, JSON
def pick_device(name: Optional[str]) -> torch.device:
    """``cpu`` / ``cuda`` / ``cuda:N``, or the first GPU when there is one and ``name`` is None."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return device


def add_device_args(parser: argparse.ArgumentParser, default: Optional[str] = "cpu") -> None:
    parser.add_argument("--device", default=default,
                        help="cpu | cuda | cuda:N" + (" (default: cuda if available)" if default is None else ""))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")


def device_from_args(args) -> torch.device:
    """Applies ``--threads`` and returns the checked ``--device``."""
    if getattr(args, "threads", 0):
        torch.set_num_threads(int(args.threads))
    return pick_device(args.device)


def print_machine(device=None) -> Dict:
    """Prints the machine line (``machine: <CPU> (...)[, GPU <name>], torch <version>``); returns its dict."""
    info = machine_info(device)
    print(machine_line(info))
    return info


def add_json_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json-out", metavar="FILE", default=None,
                        help="also write the figures, with the machine, as JSON to FILE")


def write_json_out(path, benchmark: str, figures: Dict, device=None) -> Optional[Path]:
    """Writes ``figures`` to ``path`` (nothing when ``path`` is None) with ``benchmark`` (the script's
    name), the command line and ``machine`` (taken from ``figures`` or measured for ``device``);
    non-finite numbers become null. -> the path written."""
    if path is None:
        return None
    payload = {"benchmark": benchmark, "argv": sys.argv[1:], **figures}
    payload.setdefault("machine", machine_info(device))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, payload)
    return path


# ----------------------------------------------------------------------------- synthetic inputs
def plausible_stats(num_joints: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Normalisation stats of the right shapes and Human3.6M-like magnitudes (px / cm)."""
    rng = np.random.RandomState(seed)
    return {"mean_2d": 500.0 + rng.uniform(-60, 60, (num_joints, 2)),
            "std_2d": rng.uniform(60, 120, (num_joints, 2)),
            "mean_3d": rng.uniform(-40, 40, (num_joints, 3)),
            "std_3d": rng.uniform(10, 40, (num_joints, 3))}


def build_lifters(names, num_joints: int, device, cfg=None) -> Dict[str, torch.nn.Module]:
    """Randomly initialised registered lifters with :func:`plausible_stats`, at the sizes of
    ``cfg.MODEL_3D.<NAME>`` (e.g. the CPU presets' small IGANet and MixSTE), else the published ones."""
    stats = plausible_stats(num_joints)
    return {n: model_3d.build_lifter(n, num_joints, stats=stats,
                                     arch=model_3d.lifter_arch(cfg, n) if cfg is not None else None).to(device)
            for n in names}


def random_batch(cfg, batch: int, device, seed: int = 0):
    """(images (N,3,H,W), target (N,J,Hm,Wm), target_weight (N,J,1), meta) of the configured sizes."""
    g = torch.Generator().manual_seed(seed)
    w, h = (int(v) for v in cfg.MODEL.IMAGE_SIZE)
    wm, hm = (int(v) for v in cfg.MODEL.HEATMAP_SIZE)
    skeleton = get_skeleton(cfg.DATASET.DATASET)
    joints = skeleton.num_joints
    images = torch.randn(batch, 3, h, w, generator=g)
    target = torch.rand(batch, joints, hm, wm, generator=g)
    target_weight = torch.ones(batch, joints, 1)
    # A person box of ~300-500 px in a 1000 px frame, with the crop's aspect ratio.
    box_w_px = 300.0 + 200.0 * torch.rand(batch, generator=g)
    scale = torch.stack((box_w_px, box_w_px * h / w), dim=-1) / PIXEL_STD
    center = torch.tensor(IMAGE_SIZE_PX) / 2 + 100.0 * (torch.rand(batch, 2, generator=g) - 0.5)
    joints_3d_cm = 30.0 * torch.randn(batch, joints, 3, generator=g)
    joints_3d_cm[:, skeleton.root] = 0.0
    joints_2d_px = center[:, None] + (torch.rand(batch, joints, 2, generator=g) - 0.5) * box_w_px[:, None, None]
    meta = {"center": center, "scale": scale, "joints_3d": joints_3d_cm,
            "image_size": torch.tensor(IMAGE_SIZE_PX).expand(batch, 2).contiguous(),
            "joints_2d": joints_2d_px, "action_idx": torch.randint(0, 15, (batch,), generator=g)}
    if bool(cfg.TRAIN.CHANNELS_LAST):
        images = images.contiguous(memory_format=torch.channels_last)
    move = lambda t: t.to(device)   # noqa: E731
    return move(images), move(target), move(target_weight), {k: move(v) for k, v in meta.items()}


def peaked_heatmaps(n: int, joints: int, height: int, width: int, sigma: float, seed: int) -> torch.Tensor:
    """(N, J, H, W) float32: a unit Gaussian of ``sigma`` px per map at a random point at least 3 px
    inside, plus N(0, 0.01) noise: a trained detector's look, where with beta = 100 most softmax
    weights are denormal or zero in float32 and the quarter-pixel shift really happens."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(n, joints, 2, generator=g) * torch.tensor([width - 6.0, height - 6.0]) + 3.0
    xs = torch.arange(width, dtype=torch.float32)
    ys = torch.arange(height, dtype=torch.float32)[:, None]
    d2 = (xs - mu[..., 0, None, None]) ** 2 + (ys - mu[..., 1, None, None]) ** 2
    return torch.exp(-d2 / (2.0 * sigma ** 2)) + 0.01 * torch.randn(n, joints, height, width, generator=g)


def make_synthetic_h36m(dst, frames_per_seq: int, actions_per_subject: int = 1) -> Path:
    """Generates and prepares the synthetic Human3.6M set (docs/data.md) in ``dst``; -> ``dst``."""
    from lib.datasets.prepare_h36m import prepare_h36m
    from lib.datasets.synthetic import make_h36m_demo

    dst = Path(dst)
    make_h36m_demo(dst, frames_per_seq=frames_per_seq, actions_per_subject=actions_per_subject, preview=False)
    prepare_h36m(dst, dst, train_interval=1, valid_interval=1, progress=False, log=lambda *_: None)
    return dst
