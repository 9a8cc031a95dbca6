"""Prepare Human3.6M (h36m-fetch output, the original L2D layout or the extracted official archives) into a
versioned index; --help lists the options.

The arguments and what they do: lib/datasets/commands.py (shared with the reproduction pipeline).
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/prepare_h36m.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.datasets.commands import h36m_parser, prepare_h36m_data


def main(argv=None):
    return prepare_h36m_data(h36m_parser().parse_args(argv))


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
