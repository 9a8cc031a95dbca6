"""The trainers' ``curves.png``: a thin name kept for their call sites.

The figure itself is :func:`lib.utils.report.plot_training_curves` (one plotting function for
training curves in the whole repository); ``history`` is a run's ``history.json`` content.
"""
from pathlib import Path

from lib.utils.report import plot_training_curves


def plot_curves(history: dict, path) -> Path:
    """Write the training-curves PNG for ``history`` atomically at ``path``; returns the path."""
    return plot_training_curves(history, path)


__all__ = ["plot_curves"]
