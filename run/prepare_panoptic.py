"""Prepare CMU Panoptic for L2D from the panoptic-toolbox layout: npz/json index per split + stats.

    python run/prepare_panoptic.py --src /data/panoptic --dst data/panoptic

--src holds <seq>/calibration_<seq>.json, <seq>/hdPose3d_stage1_coco19/body3DScene_*.json and
<seq>/hdImgs/00_XX/00_XX_<frame>.jpg. Re-running with the same inputs is a no-op unless --force.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/prepare_panoptic.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.datasets.prepare_panoptic import TRAIN_SEQUENCES, VALID_SEQUENCES, prepare_panoptic


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="folder of panoptic-toolbox sequences")
    p.add_argument("--dst", default="data/panoptic", help="prepared dataset root (DATASET.ROOT)")
    p.add_argument("--interval", type=int, default=15, help="keep every Nth annotation file (train and valid)")
    p.add_argument("--train-seqs", default=",".join(TRAIN_SEQUENCES), help="comma-separated training sequences")
    p.add_argument("--valid-seqs", default=",".join(VALID_SEQUENCES), help="comma-separated validation sequences")
    p.add_argument("--splits", default="train,valid", help="comma-separated splits to prepare")
    p.add_argument("--no-check-images", dest="check_images", action="store_false",
                   help="skip reading every kept image for the black-frame test")
    p.add_argument("--workers", type=int, default=None, help="threads for the image check")
    p.add_argument("--force", action="store_true", help="rebuild even if the index is up to date")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    return prepare_panoptic(args.src, args.dst, train_seqs=split(args.train_seqs), valid_seqs=split(args.valid_seqs),
                            interval=args.interval, splits=split(args.splits), check_images=args.check_images,
                            force=args.force, workers=args.workers)


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
