"""Prepare CMU Panoptic (panoptic-toolbox layout) into a versioned index; --help lists the options.

The arguments and what they do: lib/datasets/commands.py (shared with the reproduction pipeline).
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/prepare_panoptic.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.datasets.commands import panoptic_parser, prepare_panoptic_data


def main(argv=None):
    return prepare_panoptic_data(panoptic_parser().parse_args(argv))


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
