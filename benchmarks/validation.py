"""Validation speed: our evaluator (batched on the device) vs the original's per-sample post-processing.

Shapes: N samples per batch, J = 17 joints, heatmaps (N, 17, Hm, Wm) of the config (72 x 96 for
w32_384x288). Both sides get the same heatmaps, run the same lifters and must report the same
numbers (checked here: PDJ@0.2, per-lifter MPJPE and P-MPJPE); only what differs is timed by
default:

* ours: ``lib.engine.evaluator.validate`` (soft-argmax decode with post-processing, one affine for
  the batch, PDJ; lifters, MPJPE and batched-SVD P-MPJPE on the device over chunks of
  ``LIFT_CHUNK`` samples; one host sync per pass);
* original (docs/original.md#soft-argmax-decoding, #validation-metrics; ``benchmarks/reference.py``):
  softmax over the batch, then a Python double loop over samples and joints for the quarter-pixel
  shift and one OpenCV 3-point affine per sample (``original_decode``), the lifters per batch, PDJ
  and MPJPE per sample, and a per-sample numpy Procrustes (SVD, reflection fix) per lifter
  (``original_validate``).

``--with-detector`` adds the detector forward to both sides (end-to-end samples/s; the forward is
identical in both, so the ratio shrinks towards 1 as the detector dominates on a CPU). The forward
runs on random images but its output is replaced by the same trained-looking maps: an untrained
network's nearly flat maps put every soft-argmax at the map centre, exactly on the rounding
boundary of the quarter-pixel shift, where float32 round-off alone would decide the shift.
The output (table or JSON ``machine``) names the CPU model and, on CUDA, the GPU. Usage::

    python benchmarks/validation.py [--cfg FILE] [--batch 64] [--batches 8] [--lifters sb,videopose]
                                    [--device cpu|cuda|cuda:N] [--threads N] [--repeats 5]
                                    [--with-detector] [--json] [--json-out FILE]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # `python benchmarks/validation.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (Timer, add_device_args, add_json_out, build_lifters, device_from_args,  # noqa: E402
                               peaked_heatmaps, random_batch, write_json_out)
from benchmarks.reference import original_decode, original_validate, procrustes_error_mm  # noqa: E402
from lib.config import load_cfg  # noqa: E402
from lib.core.heatmap import decode_soft, prepare_heatmaps  # noqa: E402
from lib.core.skeleton import get_skeleton  # noqa: E402
from lib.engine.evaluator import LIFT_CHUNK, validate  # noqa: E402
from lib.eval.metrics import mpjpe_torch, p_mpjpe_torch  # noqa: E402
from lib.utils.machine import machine_info, machine_line  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="experiments/h36m/w32_384x288_adam_lr1e-3.yaml")
    p.add_argument("--batch", type=int, default=64, help="samples per batch (TEST.BATCH_SIZE_PER_GPU)")
    p.add_argument("--batches", type=int, default=8, help="batches per validation pass")
    p.add_argument("--lifters", default="sb,videopose", help="comma-separated lifters evaluated per batch")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per side, taking turns (median)")
    p.add_argument("--with-detector", action="store_true", help="include the detector forward on both sides")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    add_device_args(p)
    add_json_out(p)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- inputs
class Replay(torch.nn.Module):
    """A stand-in detector that returns its input: lets ``validate`` start from given heatmaps.

    With ``detector`` and ``images`` it first runs the detector on the images (for its cost) and
    discards the output (see ``--with-detector``)."""

    def __init__(self, detector=None, images=None):
        super().__init__()
        self.detector, self.images = detector, images

    def forward(self, heatmaps):
        if self.detector is not None:
            self.detector(self.images)
        return heatmaps


# ----------------------------------------------------------------------------- run
def run(args) -> dict:
    device = device_from_args(args)
    cfg = load_cfg(args.cfg, [])
    names = [n for n in args.lifters.split(",") if n]
    torch.manual_seed(0)                   # the same (untrained) lifters every run
    lifters = build_lifters(names, get_skeleton(cfg.DATASET.DATASET).num_joints, device, cfg)
    for lifter in lifters.values():
        lifter.eval()
    batches = []
    for i in range(args.batches):
        _, target, weight, meta = random_batch(cfg, args.batch, device, seed=100 + i)
        wm, hm = (int(v) for v in cfg.MODEL.HEATMAP_SIZE)
        images = peaked_heatmaps(args.batch, 17, hm, wm, float(cfg.MODEL.SIGMA), seed=200 + i).to(device)
        batches.append((images, target, weight, meta))
    model = Replay()
    if args.with_detector:
        import model_2d
        torch.manual_seed(0)
        w, h = (int(v) for v in cfg.MODEL.IMAGE_SIZE)
        images = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(1)).to(device)
        model = Replay(model_2d.build_pose_net(cfg).to(device).eval(), images)
    timer = Timer(device)

    ours = {}

    def run_ours():
        ours["res"] = validate(cfg, batches, model, device, lifters)

    orig = {}

    def run_orig():
        orig["pdj"], orig["lifters"] = original_validate(cfg, batches, model, lifters, device)

    # The lifters' forward: the original runs it per batch; ours lifts LIFT_CHUNK samples at once
    # (lib.engine.evaluator). Both are timed on the same number of samples: ours can be no faster
    # than its own lifting, so (original's time) / (that) is the largest speed-up possible.
    joints = get_skeleton(cfg.DATASET.DATASET).num_joints
    total = args.batch * args.batches
    chunk = min(LIFT_CHUNK, total)
    probe_size = batches[0][3]["image_size"].to(device).float().reshape(-1, 2)[:1]

    def lift_in(size):
        probe = torch.zeros(size, joints, 2, device=device)
        sizes = probe_size.expand(size, 2)

        @torch.no_grad()
        def run():
            for _ in range(total // size):
                for lifter in lifters.values():
                    lifter(probe, sizes)
        return run

    reps = max(args.repeats, 1)          # one warm-up each (allocator, kernels, cudnn autotuning)
    med = timer.interleaved({"ours": run_ours, "orig": run_orig, "lift_batch": lift_in(args.batch),
                             "lift_chunk": lift_in(chunk)}, reps, 1)
    t_ours, t_orig, t_lift_batch, t_lift = (med[k] / 1e3 for k in ("ours", "orig", "lift_batch", "lift_chunk"))

    # the same numbers: PDJ up to one borderline joint, errors to float32 round-off
    res, n = ours["res"], args.batch * args.batches
    one_joint = 100.0 / (n * get_skeleton(cfg.DATASET.DATASET).num_joints)
    if abs(res["pdj"] - orig["pdj"]) > one_joint + 1e-9:
        raise RuntimeError(f"PDJ differs: ours {res['pdj']} vs original {orig['pdj']}")
    for name, (mpjpe, p_mpjpe) in orig["lifters"].items():
        got = res["per_lifter"][name]
        for key, want in (("mpjpe", mpjpe), ("p_mpjpe", p_mpjpe)):
            if abs(got[key] - want) > 1e-4 * abs(want) + 1e-6:
                raise RuntimeError(f"{name} {key} differs: ours {got[key]} vs original {want}")

    # where the time goes: the decode alone, and the metrics alone (given the same predictions)
    hm0, meta0 = prepare_heatmaps(batches[0][0].float(), cfg.DATASET.DATASET), batches[0][3]
    beta, post = float(cfg.TEST.BETA), bool(cfg.TEST.POST_PROCESS)
    dec = timer.interleaved({"ours": lambda: decode_soft(hm0, meta0["center"], meta0["scale"], beta, post),
                             "orig": lambda: original_decode(hm0.cpu(), meta0["center"], meta0["scale"], beta, post)},
                            reps, 1)
    pred = torch.randn(args.batch, 17, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 300
    gt = torch.randn(args.batch, 17, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 300
    pred_d, gt_d = pred.float().to(device), gt.float().to(device)
    pn, gn = pred.numpy(), gt.numpy()
    met = timer.interleaved(
        {"ours": lambda: (float(mpjpe_torch(pred_d, gt_d).mean()), float(p_mpjpe_torch(pred_d, gt_d).mean())),
         "orig": lambda: [(np.linalg.norm(pn[b] - gn[b], axis=-1).mean(), procrustes_error_mm(pn[b], gn[b]))
                          for b in range(args.batch)]}, reps, 1)

    return {"cfg": args.cfg, "device": str(device), "machine": machine_info(device),
            "batch": args.batch, "batches": args.batches,
            "lifters": names, "with_detector": bool(args.with_detector),
            "heatmap_size": [int(v) for v in cfg.MODEL.HEATMAP_SIZE], "threads": torch.get_num_threads(),
            "ours_samples_per_s": n / t_ours, "original_samples_per_s": n / t_orig, "speedup": t_orig / t_ours,
            "lift_chunk": chunk, "lifters_forward_ms_per_batch": {"original": 1e3 * t_lift_batch / args.batches,
                                                                  "ours": 1e3 * t_lift / args.batches},
            "speedup_ceiling": t_orig / t_lift,
            "decode_ms": {"ours": dec["ours"], "original": dec["orig"]},
            "metrics_ms_per_lifter": {"ours": met["ours"], "original": met["orig"]},
            "pdj": res["pdj"], "mpjpe": {k: v["mpjpe"] for k, v in res["per_lifter"].items()},
            "p_mpjpe": {k: v["p_mpjpe"] for k, v in res["per_lifter"].items()}, "numbers_equal": True}


def main(argv=None):
    args = parse_args(argv)
    out = run(args)
    write_json_out(args.json_out, "validation", out)
    if args.json:
        print(json.dumps(out))
        return out
    scope = "detector + decode + lifters + metrics" if out["with_detector"] else "decode + lifters + metrics"
    print(f"validation ({scope}), {out['batches']} x {out['batch']} samples, heatmaps "
          f"{out['heatmap_size'][0]}x{out['heatmap_size'][1]}, lifters {','.join(out['lifters'])}, "
          f"{out['device']} ({out['threads']} threads)")
    print(machine_line(out["machine"]))
    print(f"  ours      {out['ours_samples_per_s']:10.1f} samples/s")
    print(f"  original  {out['original_samples_per_s']:10.1f} samples/s")
    d, m = out["decode_ms"], out["metrics_ms_per_lifter"]
    print(f"  per batch of {out['batch']}: decode {d['ours']:.1f} ms vs {d['original']:.1f} ms "
          f"(x{d['original'] / d['ours']:.1f}); MPJPE + P-MPJPE per lifter {m['ours']:.2f} ms vs {m['original']:.2f} ms "
          f"(x{m['original'] / m['ours']:.1f})")
    lift = out["lifters_forward_ms_per_batch"]
    print(f"  lifters' forward alone per {out['batch']} samples: {lift['original']:.1f} ms a batch at a time (original), "
          f"{lift['ours']:.1f} ms in chunks of {out['lift_chunk']} (ours): no speed-up above "
          f"x{out['speedup_ceiling']:.1f} is possible")
    print(f"  speed-up  {out['speedup']:10.1f}x   (goal >= 5x); same numbers: PDJ {out['pdj']:.2f} %, "
          + ", ".join(f"{k} MPJPE {v:.2f} / P-MPJPE {out['p_mpjpe'][k]:.2f} mm" for k, v in out["mpjpe"].items()))
    return out


if __name__ == "__main__":
    main()
