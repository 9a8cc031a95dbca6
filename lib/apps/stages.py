"""Resumable pipeline stages (lib/apps/pipeline.py): a finished training run is reused only when it was made
from the same inputs (start checkpoint, options), so changing one re-runs what depends on it.

A stage folder holds one training run (found by its ``final_state.pth``) and ``stage.json``, the
inputs it was made from, written after the run finished.
"""
import json
import shutil
from pathlib import Path
from typing import Dict, Sequence

from lib.utils.atomic_io import write_text_atomic

STAGE_FILE = "stage.json"


def find_run(out_dir: Path, marker: str = "model_best.pth") -> Path:
    """The run folder under ``out_dir`` holding ``marker`` (the newest by name)."""
    hits = sorted(Path(out_dir).rglob(marker))
    if not hits:
        raise RuntimeError(f"no {marker} under {out_dir}: the run did not finish; delete the folder and re-run")
    return hits[-1].parent


def stage_inputs(checkpoints: Sequence[Path] = (), options: Sequence[str] = ()) -> Dict:
    """The inputs of a stage: the checkpoints it starts from or uses (resolved path and modification
    time, so a re-made checkpoint counts as new) and its command-line options."""
    files = [Path(c).resolve() for c in checkpoints]
    return {"checkpoints": [[str(f), f.stat().st_mtime_ns] for f in files], "options": [str(o) for o in options]}


def stage_done(out_dir: Path, inputs: Dict, marker: str = "final_state.pth") -> bool:
    """True when ``out_dir`` holds a finished output (a file named ``marker`` below it) recorded as
    made from ``inputs``. Reads only; nothing is cleared."""
    out_dir = Path(out_dir)
    stage = out_dir / STAGE_FILE
    if not (stage.is_file() and list(out_dir.rglob(marker))):
        return False
    try:
        return json.loads(stage.read_text()) == inputs
    except ValueError:              # a truncated record counts as no record
        return False


def reuse_stage(out_dir: Path, inputs: Dict, marker: str = "final_state.pth") -> bool:
    """True when ``out_dir`` holds a finished run made from ``inputs``; otherwise clears it (a stale
    or unfinished run) and returns False so that the caller trains it again. ``marker`` is the file
    a finished stage leaves (a detector run's ``final_state.pth``, a lifter's weights file)."""
    out_dir = Path(out_dir)
    if stage_done(out_dir, inputs, marker):
        return True
    if (out_dir / STAGE_FILE).is_file() and list(out_dir.rglob(marker)):
        print(f"{out_dir}: made from other inputs than now (start checkpoint or options); training it again")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    return False


def mark_stage(out_dir: Path, inputs: Dict) -> None:
    """Record the inputs of the run that just finished in ``out_dir`` (written atomically)."""
    write_text_atomic(Path(out_dir) / STAGE_FILE, json.dumps(inputs, indent=1))
