"""Export a trained detector's 2D joints in the files 3D-lifting projects read (docs/detections.md#export).

    python run/export_detections.py --cfg experiments/h36m/w32_384x288_adam_lr1e-3.yaml \\
        --model_file <run dir>/model_best.pth --out data_2d_h36m_l2d.npz [--subjects S9,S11] [--confidence]

Human3.6M: VideoPose3D's data_2d_h36m_<name>.npz. positions_2d[subject][action] is a list over the
cameras 54138969, 55011271, 58860488, 60457274 of (T, 17, 2) float32 full-frame pixels ((T, 17, 3)
with --confidence: the joint's heatmap maximum third, as MotionBERT reads it), row t - 1 = frame t;
actions carry the original CDF names ("Directions 1", "Photo", "WalkDog 1"). Every prepared frame
of the chosen subjects is cropped from its ground-truth box and decoded as validation does, so the
file holds the 2D that validation scores. Every recording must be prepared with every frame
(run/prepare_h36m.py --valid-interval 1 for S9/S11, --train-interval 1 for S1-S8); --kept_frames
writes the kept frames only, listing their numbers in metadata['l2d']['frames'] (this project reads
that; VideoPose3D's loader needs every frame). CMU Panoptic: data_2d_panoptic_<name>.npz with
positions_2d[sequence]['panoptic'] over metadata['l2d']['cameras'] and the frame numbers listed.
"""
import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/export_detections.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_cfg


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="experiment YAML of the detector (its DATASET.* chooses the data)")
    p.add_argument("--model_file", required=True, help="detector checkpoint (e.g. <run dir>/model_best.pth)")
    p.add_argument("--out", required=True, help="output file, e.g. data_2d_h36m_l2d.npz")
    p.add_argument("--subjects", default=None,
                   help="comma-separated subjects / Panoptic sequences (default: those of DATASET.TEST_SET)")
    p.add_argument("--confidence", action="store_true", help="add each joint's heatmap maximum as a third channel")
    p.add_argument("--kept_frames", action="store_true",
                   help="write the prepared frames only (with their numbers) when a recording lacks some frames")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (CPU fallback with a warning; -1 = CPU)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides as KEY VALUE pairs")
    return p


def main(argv=None):
    from lib.apps.detections import export_detections

    args = build_parser().parse_intermixed_args(argv)
    cfg = load_cfg(args.cfg, list(args.opts or []))
    cfg.CFG_FILE = args.cfg
    cfg.freeze()
    subjects = args.subjects.split(",") if args.subjects else None
    summary = export_detections(cfg, args.model_file, args.out, subjects, confidence=args.confidence,
                                every_frame=not args.kept_frames, gpu_id=args.gpu_id)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
