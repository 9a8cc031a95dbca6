"""A whole reproduction as named, resumable stages: data -> lifters -> 2D pre-training -> 2D-only and
3D-guided fine-tunings (single-lifter, leave-one-out multi-model) -> validation -> report.

    python run/reproduce.py --preset experiments/pipeline/demo.yaml          # = make demo
    python run/reproduce.py --preset experiments/pipeline/demo_multi.yaml    # = make demo-multi
    python run/reproduce.py --preset experiments/pipeline/h36m.yaml --data-root data/h36m
    torchrun --standalone --nproc_per_node=4 run/reproduce.py --preset experiments/pipeline/h36m.yaml
    # any preset key after the flags:  ... PIPELINE.FINETUNE_EPOCHS 1 SEED 7

A stage is reused when it was made from the same inputs; --fresh deletes the output folder first;
--only STAGE makes that stage alone (the ones before it must be finished). Writes <out>/report.json,
report.md and report.png. lib/apps/pipeline.py documents the stages; README 'Reproduction pipeline'.
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/reproduce.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.apps.pipeline import STAGES, reproduce


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", required=True, help="pipeline preset YAML (experiments/pipeline/*.yaml)")
    p.add_argument("--out", default=None, help="output folder (default: the preset's OUTPUT_DIR)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the preset's DATASET.ROOT)")
    p.add_argument("--fresh", action="store_true", help="delete the output folder first (the data stays)")
    p.add_argument("--only", choices=STAGES, default=None, help="make this stage only")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (CPU fallback with a warning; -1 = CPU)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="preset overrides as KEY VALUE pairs")
    return p


def main(argv=None):
    args = build_parser().parse_intermixed_args(argv)
    return reproduce(args.preset, out=args.out, data_root=args.data_root, fresh=args.fresh, only=args.only,
                     gpu_id=args.gpu_id, opts=args.opts)


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
