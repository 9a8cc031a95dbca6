"""Prepare Human3.6M for L2D: a versioned npz/json index per split plus normalisation stats.

    python run/prepare_h36m.py --src /data/h36m-fetch --dst data/h36m

--src: the h36m-fetch folder (holding processed/S*/<Action>-<n>/annot.h5) or processed/ itself, or the
original L2D layout (S*/<action>/annot.pkl, img_%08d.jpg, camera_parameters.json).
Re-running with the same inputs is a no-op unless --force.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/prepare_h36m.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.datasets.prepare_h36m import prepare_h36m


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="h36m-fetch folder (or its processed/), or the L2D h36m folder")
    p.add_argument("--dst", default="data/h36m", help="prepared dataset root (DATASET.ROOT)")
    p.add_argument("--cameras", default=None,
                   help="calibration json (shipped / karfly camera-parameters.json / L2D camera_parameters.json); "
                        "default: camera_parameters.json in --src if present, else the shipped one")
    p.add_argument("--train-interval", type=int, default=40, help="keep every Nth frame per camera (train)")
    p.add_argument("--valid-interval", type=int, default=100, help="keep every Nth frame per camera (valid)")
    p.add_argument("--splits", default="train,valid", help="comma-separated splits to prepare")
    p.add_argument("--no-check-images", dest="check_images", action="store_false",
                   help="skip reading every kept image for the black-frame test (missing files are still counted)")
    p.add_argument("--workers", type=int, default=None, help="threads for the image check")
    p.add_argument("--force", action="store_true", help="rebuild even if the index is up to date")
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="an L2D annot.pkl (or a folder of them) you trust to be read with full pickle, which can "
                        "run code; repeatable. Without it annot.pkl files are read as plain data only")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return prepare_h36m(args.src, args.dst, cameras=args.cameras, train_interval=args.train_interval,
                        valid_interval=args.valid_interval, splits=[s for s in args.splits.split(",") if s],
                        check_images=args.check_images, force=args.force, workers=args.workers,
                        trusted=args.trust)


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
