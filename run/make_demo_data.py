"""Generate the small synthetic demo dataset (procedural stick-people, real Human3.6M cameras).

    python run/make_demo_data.py --dst data/demo_h36m [--seed 0] [--frames-per-seq 30] [--image-size 256]
        [--held-out-actions 8] [--held-out-frames 40] [--test-split] [--lifter-poses N]
    python run/make_demo_data.py --dst data/demo_panoptic --panoptic

Human3.6M mode writes the anibali/h36m-fetch layout (processed/<S>/<Action>-1/annot.h5 and
imageSequence/<cam>/img_%06d.jpg) plus camera_parameters.json with the scaled intrinsics;
--panoptic writes the CMU panoptic-toolbox layout. Both write <dst>/preview.jpg.
"""
import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/make_demo_data.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.datasets.synthetic import make_h36m_demo, make_panoptic_demo, write_pose_only_split


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dst", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames-per-seq", type=int, default=None,
                   help="frames per sequence and camera (h36m, default 30) / kept frames per sequence "
                        "(panoptic, default 12; 15x as many skeleton JSONs are written)")
    p.add_argument("--image-size", type=int, default=256,
                   help="h36m: images are the 1000-px frames scaled by image_size/1000 (256 -> 256x256 / 256x257)")
    p.add_argument("--actions-per-subject", type=int, default=2)
    p.add_argument("--held-out-actions", type=int, default=None,
                   help="h36m: actions of each held-out subject (S9, S11; default --actions-per-subject; "
                        "8 = every demo action, as Human3.6M's test subjects)")
    p.add_argument("--held-out-frames", type=int, default=None,
                   help="h36m: frames per held-out sequence and camera (default --frames-per-seq)")
    p.add_argument("--test-split", action="store_true",
                   help="h36m: S9 -> valid (checkpoint selection), S11 -> test (reported figures), via "
                        "<dst>/splits.json, which run/prepare_h36m.py reads")
    p.add_argument("--lifter-poses", type=int, default=0, metavar="N",
                   help="h36m: also write N image-free ground-truth poses of the training subjects (other takes, "
                        "same cameras) as the prepared split train_poses for the lifters")
    p.add_argument("--panoptic", action="store_true", help="write the CMU Panoptic layout instead")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.panoptic:
        summary = make_panoptic_demo(args.dst, seed=args.seed, kept_frames=args.frames_per_seq or 12)
    else:
        summary = make_h36m_demo(args.dst, seed=args.seed, frames_per_seq=args.frames_per_seq or 30,
                                 image_size=args.image_size, actions_per_subject=args.actions_per_subject,
                                 held_out_actions=args.held_out_actions, held_out_frames=args.held_out_frames,
                                 test_split=args.test_split)
        if args.lifter_poses > 0:
            summary["lifter_poses"] = write_pose_only_split(
                args.dst, seed=args.seed, num_frames=args.lifter_poses, image_size=args.image_size,
                actions_per_subject=args.actions_per_subject)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
