"""``make demo``: run/reproduce.py with experiments/pipeline/demo.yaml (arguments pass through, e.g. --fresh)."""
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/demo.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from run import reproduce

PRESET = "experiments/pipeline/demo.yaml"


def main(argv=None):
    return reproduce.main(["--preset", PRESET] + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
