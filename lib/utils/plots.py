"""Loss and metric curves as one PNG (matplotlib Agg), rewritten after every epoch.

``history`` is the run's ``history.json`` content: ``{"epochs": [{"epoch", "lr", "train": {term:
value}, "valid": {metric: value}, ...}, ...]}``.
"""
import math
import os
from pathlib import Path

TRAIN_KEYS = ("total", "loss_2d", "weighted_2d", "weighted_3d", "loss_3d", "loss_3d_xy", "loss_3d_z",
              "loss_ohklm", "loss_3d_avg", "loss_3d_cons")
VALID_KEYS = (("mpjpe", "MPJPE (mm)"), ("p_mpjpe", "P-MPJPE (mm)"), ("cross_mpjpe", "cross MPJPE (mm)"),
              ("pdj", "PDJ@0.2 (%)"))


def _finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_curves(history: dict, path) -> Path:
    """Write the curves PNG atomically; returns its path."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = history.get("epochs", [])
    xs = [e["epoch"] for e in epochs]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for key in TRAIN_KEYS:
        ys = [e.get("train", {}).get(key) for e in epochs]
        pts = [(x, y) for x, y in zip(xs, ys) if _finite(y) and y > 0]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=key)
    ax.set_yscale("log")
    ax.set_title("training loss terms (epoch means)")
    ax.set_xlabel("epoch")
    if ax.lines:
        ax.legend(fontsize=7)
    ax = axes[1]
    for key, label in VALID_KEYS[:3]:
        pts = [(x, e.get("valid", {}).get(key)) for x, e in zip(xs, epochs)]
        pts = [(x, y) for x, y in pts if _finite(y) and y >= 0]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax.set_title("validation 3D error")
    ax.set_xlabel("epoch")
    if ax.lines:
        ax.legend(fontsize=7)
    ax = axes[2]
    pts = [(x, e.get("valid", {}).get("pdj")) for x, e in zip(xs, epochs)]
    pts = [(x, y) for x, y in pts if _finite(y)]
    if pts:
        ax.plot(*zip(*pts), marker="o", ms=3, color="tab:green", label="PDJ@0.2 (%)")
    lrs = [(x, e.get("lr")) for x, e in zip(xs, epochs) if _finite(e.get("lr"))]
    if lrs:
        twin = ax.twinx()
        twin.plot(*zip(*lrs), ls="--", color="tab:gray", label="LR")
        twin.set_yscale("log")
        twin.set_ylabel("LR")
    ax.set_title("PDJ@0.2 and learning rate")
    ax.set_xlabel("epoch")
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)
    return path
