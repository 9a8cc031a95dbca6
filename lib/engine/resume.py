"""What ``--resume`` may change, how it applies the change, and the command that resumes a run.

A checkpoint carries the resolved config of its run. On ``--resume`` the current config is
compared with it key by key:

* keys in :data:`SAFE_RESUME_KEYS` (learning rate and its schedule, number of epochs, logging,
  loader and device settings, the initialisation files that the checkpoint's weights replace)
  are applied, logged and recorded (``history['resumes']`` and a comment in ``config.yaml``);
* any other difference (losses, lifters, model, data, batch size, seed, ...) would make the
  resumed run a different experiment, so resuming is refused with the list of differences.

A change that renames the run folder cannot reach the checkpoint at all; :func:`missing_checkpoint`
builds the refusal that names the expected folder and the runs that do exist.
"""
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from lib.utils.errors import UserError

# The learning rate and its schedule: changing them must reach the restored optimizer/scheduler.
LR_KEYS = ("TRAIN.LR", "TRAIN.LR_STEP", "TRAIN.LR_FACTOR", "TRAIN.LR_BUMP_EPOCH", "TRAIN.LR_BUMP_FACTOR")
SAFE_RESUME_KEYS = frozenset(LR_KEYS + (
    "TRAIN.EPOCHS", "TRAIN.END_EPOCH", "TRAIN.BEGIN_EPOCH", "TRAIN.RESUME", "AUTO_RESUME",
    "PRINT_FREQ", "WORKERS", "PIN_MEMORY", "TRAIN.PREFETCH_FACTOR", "TEST.BATCH_SIZE_PER_GPU", "TEST.VIS_NUM",
    "GPUS", "USE_CUDA", "CUDNN.BENCHMARK", "CUDNN.DETERMINISTIC", "CUDNN.ENABLED",
    "OUTPUT_DIR", "LOG_DIR", "CFG_NAME", "CFG_FILE",
    # only initialise the detector; on resume the checkpoint's weights replace what they load
    "MODEL.PRETRAINED", "MODEL.INIT_WEIGHTS", "TRAIN.FINETUNE",
))


class ResumeError(UserError):
    """``--resume`` cannot continue this run as asked (no checkpoint, or options that change the run)."""


def _flatten(tree, prefix="") -> Dict[str, object]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_differences(saved: dict, cfg) -> Dict[str, Tuple[object, object]]:
    """Checkpoint config (plain dict) vs ``cfg`` -> {KEY: (saved value, current value)} of changed keys.

    A key the checkpoint lacks (written before the key existed) counts as changed only when the
    current value is not the default; a key the current config lacks (since removed) is ignored.
    """
    from lib.config import LIFTER_TRAIN_KEYS, get_cfg
    from lib.engine.checkpoint import plain
    old, new = _flatten(plain(saved)), _flatten(plain(cfg))
    defaults = _flatten(plain(get_cfg()))
    missing = object()

    def default(key):                  # the open per-lifter keys default to '' and 0
        parts = key.split(".")
        if key.startswith("MODEL_3D.WEIGHTS.") and len(parts) == 3:
            return ""
        if parts[0] == "LIFTER_TRAIN" and len(parts) == 3 and parts[2] in LIFTER_TRAIN_KEYS:
            return LIFTER_TRAIN_KEYS[parts[2]]
        return defaults.get(key, missing)

    diffs = {}
    for key in sorted(new):
        a, b = old.get(key, missing), new[key]
        if a is missing and default(key) == b:
            continue
        if a != b:
            diffs[key] = (None if a is missing else a, None if b is missing else b)
    return diffs


def _fmt(diffs: Dict[str, Tuple[object, object]]) -> str:
    return ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diffs.items())


def check_resume_options(saved_cfg: Optional[dict], cfg, checkpoint: Path) -> Dict[str, Tuple[object, object]]:
    """-> the safe changes to apply; raises :class:`ResumeError` listing every unsafe difference."""
    if not saved_cfg:
        return {}
    diffs = config_differences(saved_cfg, cfg)
    unsafe = {k: v for k, v in diffs.items() if k not in SAFE_RESUME_KEYS}
    if unsafe:
        raise ResumeError(
            f"--resume {checkpoint}: these options differ from the run's and would change what it trains: "
            f"{_fmt(unsafe)}. Resume with the run's own options (its config.yaml), or start a new run "
            f"without --resume (another OUTPUT_DIR). Options that may change on --resume: "
            f"{', '.join(sorted(SAFE_RESUME_KEYS))}.")
    return diffs


def describe(diffs: Dict[str, Tuple[object, object]]) -> str:
    return _fmt(diffs)


def apply_lr_schedule(optimizer, scheduler, cfg, factor) -> None:
    """Make the restored optimizer and scheduler follow ``cfg``'s TRAIN.LR and schedule.

    ``load_state_dict`` restores the checkpoint's base LR and current LR, which would silently
    override a new TRAIN.LR. ``factor(cfg, epoch)`` is the schedule's multiplier; the scheduler has
    stepped ``last_epoch`` times, so the LR of the coming epoch is base x factor(last_epoch).
    """
    base = float(cfg.TRAIN.LR)
    lr_now = base * factor(cfg, int(scheduler.last_epoch))
    scheduler.base_lrs = [base for _ in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["initial_lr"] = base
        group["lr"] = lr_now
    scheduler._last_lr = [lr_now for _ in optimizer.param_groups]   # what get_last_lr() reports


def _run_folders(root: Path, limit: int = 8) -> List[str]:
    if not root.is_dir():
        return []
    found = sorted(str(p.parent) for p in root.rglob("checkpoint.pth"))
    return found[:limit] + ([f"... {len(found) - limit} more"] if len(found) > limit else [])


def missing_checkpoint(out_dir: Path, search_root: Path) -> ResumeError:
    """The refusal for ``--resume`` without ``<out_dir>/checkpoint.pth``: name the folder and what exists."""
    runs = _run_folders(search_root)
    there = (f"runs with a checkpoint under {search_root}: {'; '.join(runs)}" if runs
             else f"no run with a checkpoint.pth under {search_root}")
    return ResumeError(
        f"--resume: no checkpoint at {out_dir / 'checkpoint.pth'} (the run folder follows from the loss, "
        f"lifter and model options, so a changed option names another folder); {there}. Resume with the "
        f"options of the run you mean, or drop --resume to start a new run in {out_dir}.")


def resume_command(argv: Optional[Sequence[str]], world_size: int = 1, script: str = "run/train_hrnet.py") -> str:
    """The shell command that continues this run: the same arguments plus ``--resume``."""
    args = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    if "--resume" not in args:
        args.append("--resume")
    launcher = f"torchrun --nproc_per_node={world_size} " if world_size > 1 else "python "
    return launcher + script + " " + shlex.join(args)
