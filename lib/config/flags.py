"""The original command lines' flags as config keys: one table for the CLIs and the pipeline.

``run/train_hrnet.py`` builds its parser from :data:`TRAIN_BOOL_FLAGS` / :data:`TRAIN_VALUE_FLAGS`;
the reproduction pipeline turns a preset's flag lists (``PIPELINE.SINGLE_FLAGS``,
``PIPELINE.MULTI_FLAGS``) into the same ``KEY VALUE`` overrides with :func:`train_flags_to_opts`.
Flag names, types and defaults are the original's (docs/original.md#command-lines).
"""
from typing import List, Sequence

from lib.utils.errors import BadValueError

# flag -> (config key, help); a store_true flag sets its key to True when given.
TRAIN_BOOL_FLAGS = {
    "loss_3d": ("LOSS.LOSS_3D", "enable 3D guidance through the lifters (without it: 2D-only training)"),
    "loss_3d_z": ("LOSS.LOSS_3D_Z", "separate xy and z 3D losses instead of one xyz loss"),
    "resume": ("TRAIN.RESUME", "continue the run from <run folder>/checkpoint.pth"),
    "ensemble": ("TEST.ENSEMBLE", "validate on the per-sample median of the lifters' predictions"),
    "dropout": ("LOSS.DROPOUT", "lifter dropout in multi-model mode"),
    "ohklm": ("LOSS.OHKLM", "add the OHKLM 2D loss (online hard keypoint lifting mining)"),
    "dwa": ("LOSS.DWA", "dynamic weight average (always on in the original; LOSS.DWA False turns it off)"),
    "loss_3d_cons": ("LOSS.LOSS_3D_CONS", "add the pairwise lifter-consistency loss"),
    "loss_3d_avg": ("LOSS.LOSS_3D_AVG", "add the loss on the mean of the lifters' predictions"),
}
# flag -> (config key, type, help)
TRAIN_VALUE_FLAGS = {
    "loss_2d_w": ("LOSS.LOSS_2D_W", float, "weight of the heatmap MSE loss (3D mode; default 0.5)"),
    "ohklm_w": ("LOSS.OHKLM_W", float, "weight of the OHKLM loss (default 0.3)"),
    "loss_3d_xy_w": ("LOSS.LOSS_3D_XY_W", float, "weight of the xy 3D loss with --loss_3d_z (default 0.02)"),
    "loss_3d_z_w": ("LOSS.LOSS_3D_Z_W", float, "weight of the z 3D loss with --loss_3d_z (default 0.04)"),
    "loss_3d_w": ("LOSS.LOSS_3D_W", float, "weight of the xyz 3D loss without --loss_3d_z (default 0.06)"),
    "loss_3d_cons_w": ("LOSS.LOSS_3D_CONS_W", float, "weight of the consistency loss (default 0.1)"),
    "loss_3d_avg_w": ("LOSS.LOSS_3D_AVG_W", float, "weight of the average-prediction loss (default 0.05)"),
    "loss_single_w": ("LOSS.LOSS_SINGLE_W", float, "multiplies (weighted 2D + weighted 3D) (default 1.0)"),
    "epochs": ("TRAIN.EPOCHS", int, "train epochs 0..N inclusive (N+1 epochs; default 40)"),
    "top_k": ("LOSS.OHKLM_TOP_K", int, "OHKLM top-k joints (default 10)"),
}


def parse_lifter_list(text) -> List[str]:
    """'sb,iganet' -> ['iganet', 'sb'] (sorted, as the original's --model_3d)."""
    names = sorted({n.strip() for n in str(text).split(",") if n.strip()})
    if not names:
        raise BadValueError(f"--model_3d {text!r}: give at least one lifter name")
    return names


def train_flags_to_opts(flags: Sequence[str]) -> List:
    """A list of train_hrnet.py flags (``['--loss_3d', '--loss_2d_w', '0.4']``) -> ``KEY VALUE`` overrides."""
    opts, items = [], [str(f) for f in flags]
    i = 0
    while i < len(items):
        name = items[i].lstrip("-")
        if not items[i].startswith("--") or (name not in TRAIN_BOOL_FLAGS and name not in TRAIN_VALUE_FLAGS):
            known = sorted(TRAIN_BOOL_FLAGS) + sorted(TRAIN_VALUE_FLAGS)
            raise BadValueError(f"flag {items[i]!r}: not a run/train_hrnet.py flag; use one of "
                                f"{['--' + k for k in known]}")
        if name in TRAIN_BOOL_FLAGS:
            opts += [TRAIN_BOOL_FLAGS[name][0], True]
            i += 1
            continue
        key, cast, _ = TRAIN_VALUE_FLAGS[name]
        if i + 1 >= len(items):
            raise BadValueError(f"flag --{name} needs a value")
        try:
            opts += [key, cast(items[i + 1])]
        except ValueError:
            raise BadValueError(f"flag --{name} {items[i + 1]!r}: expected a {cast.__name__}") from None
        i += 2
    return opts


def lifter_flag_opts(names: Sequence[str], epochs=None, batch_size=None, lr=None) -> List:
    """``run/train_lifter.py``'s --epochs / --batch_size / --lr for the lifters ``names`` as overrides.

    A flag beats the YAML's per-lifter presets: it sets LIFTER_TRAIN.<KEY> and LIFTER_TRAIN.<NAME>.<KEY>
    (which wins over LIFTER_TRAIN.<KEY>).
    """
    opts = []
    for value, key in ((epochs, "EPOCHS"), (batch_size, "BATCH_SIZE"), (lr, "LR")):
        if value is not None:
            opts += ["LIFTER_TRAIN." + key, value]
            opts += [x for name in names for x in (f"LIFTER_TRAIN.{name.upper()}.{key}", value)]
    return opts
