"""Generate the embedded synthetic dataset (h36m-fetch or panoptic-toolbox layout); --help lists the options.

The arguments and what they do: lib/datasets/commands.py (shared with the reproduction pipeline).
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/make_demo_data.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.datasets.commands import demo_parser, make_demo_data


def main(argv=None):
    return make_demo_data(demo_parser().parse_args(argv))


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
