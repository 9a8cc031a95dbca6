"""Figures of training runs on matplotlib's Agg canvas (no pyplot state), written atomically.

    plot_training_curves(history, run_dir / "curves.png")    # a run's history.json content
    plot_metric_table({row: {metric: value}}, out_path)      # a results table as bar charts

Metric values are floats (MPJPE / P-MPJPE in mm, PDJ in %). The trainers call :func:`plot_curves`.
"""
import math
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PathLike = Union[str, os.PathLike]

# The config values a reader needs to tell runs apart; absent keys are skipped.
_LOG_HINTS = ("loss", "weighted", "total")

METRIC_TITLES = {"mpjpe": "MPJPE (mm, lower is better)", "p_mpjpe": "P-MPJPE (mm, lower is better)",
                 "pdj": "PDJ@0.2 (%, higher is better)"}


def new_figure(width_in: float, height_in: float, dpi: int = 110):
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    return fig, FigureCanvasAgg(fig)


def save_figure(fig: Figure, canvas: FigureCanvasAgg, out_path: PathLike) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out_path)       # a reader never sees half a PNG
    return out_path


_SKIP_TRAIN = ("steps", "seconds", "samples_per_s")
_LOSS_PANEL = "loss terms (epoch means)"
_LOG_PANELS = (_LOSS_PANEL, "3D loss per lifter", "learning rate")


def as_number(value) -> float:
    """A history value -> float; None, non-numbers and the evaluator's -1 'not evaluated' -> NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return math.nan
    return float(value)


def history_series(history: Mapping) -> Tuple[List[float], Dict[str, List[float]], Optional[float]]:
    """history -> (epochs (E,), {series name: E values (NaN where absent)}, best epoch or None).

    ``history`` is either a run's ``history.json`` content (``{'epochs': [{'epoch', 'lr', 'train':
    {term: mean}, 'valid': {metric: value, 'per_lifter': {name: mpjpe}}, 'best'}, ...]}``, as the
    detector and lifter trainers write it) or a plain ``{series name: [value per epoch]}``.
    Series names: the training terms as logged (``loss_2d``, ``loss_3d/sb``, ``dwa_w/sb``,
    ``accuracy_2d``), the validation metrics (``mpjpe``, ``mpjpe/<lifter>``, ``p_mpjpe``, ``pdj``,
    ``cross_mpjpe``, ...) and ``lr``. Negative validation errors (the evaluator's -1) become NaN.
    """
    entries = history.get("epochs") if isinstance(history, Mapping) else None
    if not isinstance(entries, list):
        series = {str(k): [as_number(v) for v in vals] for k, vals in history.items()
                  if isinstance(vals, (list, tuple, np.ndarray)) and len(vals)}
        length = max((len(v) for v in series.values()), default=0)
        return list(range(length)), series, None
    epochs = [as_number(e.get("epoch", i)) for i, e in enumerate(entries)]
    rows: List[Dict[str, float]] = []
    for e in entries:
        row = {}
        for k, v in (e.get("train") or {}).items():
            if k not in _SKIP_TRAIN:
                row[k] = as_number(v)
        for k, v in (e.get("valid") or {}).items():
            if k == "per_lifter" and isinstance(v, Mapping):
                for name, val in v.items():
                    val = val.get("mpjpe") if isinstance(val, Mapping) else val
                    row[f"mpjpe/{name}"] = as_number(val)
            elif not isinstance(v, Mapping):
                val = as_number(v)
                row[k] = val if not (val < 0) else math.nan     # -1: no lifter evaluated
        row["lr"] = as_number(e.get("lr"))
        rows.append(row)
    names: List[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    series = {k: [row.get(k, math.nan) for row in rows] for k in names}
    series = {k: v for k, v in series.items() if np.isfinite(v).any()}
    # terms that are zero throughout are switched off (e.g. loss_3d_cons without --loss_3d_cons), and
    # a single lifter's DWA weight is 1 by construction: neither says anything as a curve
    series = {k: v for k, v in series.items()
              if not (_panel_of(k) in _LOG_PANELS and np.all(np.nan_to_num(v) == 0.0))}
    dwa = [k for k in series if k.startswith("dwa_w/")]
    if len(dwa) == 1:
        del series[dwa[0]]
    best = [x for x, e in zip(epochs, entries) if e.get("best")]
    return epochs, series, (best[-1] if best else None)


def _panel_of(name: str) -> str:
    low = name.lower()
    if low.startswith("dwa_w/"):
        return "DWA weights per lifter"
    if low.startswith("loss_3d/"):
        return "3D loss per lifter"
    if low == "lr":
        return "learning rate"
    if low.startswith("accuracy"):
        return "2D heatmap accuracy (training)"
    if "p_mpjpe" in low:
        return "P-MPJPE (mm)"
    if "mpjpe" in low:
        return "MPJPE (mm)"
    if "pdj" in low:
        return "PDJ@0.2 (%)"
    if any(h in low for h in _LOG_HINTS):
        return _LOSS_PANEL
    return name


def _history_title(history: Mapping) -> Optional[str]:
    if not isinstance(history, Mapping) or not isinstance(history.get("epochs"), list):
        return None
    if history.get("lifter"):
        return f"lifter {history['lifter']} ({history.get('dataset', '')})"
    lifters = history.get("lifters") or []
    text = "2D-only training" if history.get("mode") == "2d_only" or not lifters else \
        "3D-guided training: " + "+".join(lifters)
    if history.get("cross_lifters"):
        text += " (held out: " + "+".join(history["cross_lifters"]) + ")"
    return text


def plot_training_curves(history: Mapping, out_path: PathLike, title: Optional[str] = None) -> Path:
    """The one training-curves figure: every loss term, MPJPE, P-MPJPE, PDJ, accuracy and LR per epoch.

    history: ``history.json`` content or ``{series: [value per epoch]}`` (see :func:`history_series`).
    Series are grouped into panels by name (all loss terms in one panel, MPJPE of every lifter /
    cross / ensemble in one, ...). Loss and LR panels use a log axis when every value is positive;
    metric panels switch to log when their values span more than a factor of 10. The best epoch
    (history ``best`` flags) is a dotted vertical line. Written atomically; returns the path.
    """
    epochs, series, best_epoch = history_series(history)
    if not series:
        raise ValueError("plot_training_curves: history has no values to plot")
    panels: Dict[str, List[str]] = {}
    for name in series:
        panels.setdefault(_panel_of(name), []).append(name)
    order = [_LOSS_PANEL, "3D loss per lifter", "DWA weights per lifter", "MPJPE (mm)", "P-MPJPE (mm)",
             "PDJ@0.2 (%)", "2D heatmap accuracy (training)", "learning rate"]
    keys = [p for p in order if p in panels] + [p for p in panels if p not in order]
    cols = min(4, len(keys))
    rows = int(math.ceil(len(keys) / cols))
    fig, canvas = new_figure(3.9 * cols, 3.0 * rows + 0.4)
    xs = np.asarray(epochs, dtype=np.float64)
    for i, panel in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = []
        ys_all = {name: np.asarray(series[name], dtype=np.float64) for name in panels[panel]}
        finite = np.concatenate([v[np.isfinite(v)] for v in ys_all.values()])
        positive = finite[finite > 0]
        # losses and LR on a log axis (non-positive points cannot show there and are skipped);
        # metrics only when they span more than a decade
        log = len(positive) > 0 and (panel in _LOG_PANELS or (len(positive) == len(finite)
                                                               and positive.max() / positive.min() > 10.0))
        for name, ys in ys_all.items():
            ok = np.isfinite(ys) & ((ys > 0) if log else True)
            ax.plot(xs[ok], ys[ok], marker="o", markersize=3, linewidth=1.4, label=name)
        if log:
            ax.set_yscale("log")
        if best_epoch is not None and panel not in _LOG_PANELS:
            ax.axvline(best_epoch, color="0.5", linestyle=":", linewidth=1)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(which="both", labelsize=7)      # after set_yscale: log minor labels too
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(xs) and np.nanmax(xs) - np.nanmin(xs) < 1:          # one epoch: whole-number ticks around it
            ax.set_xlim(np.nanmin(xs) - 1, np.nanmax(xs) + 1)
        ax.grid(True, alpha=0.3, which="both" if ax.get_yscale() == "log" else "major")
        if len(panels[panel]) > 1 or panel != panels[panel][0]:
            ax.legend(fontsize=6, loc="best", framealpha=0.6)
    title = title or _history_title(history)
    if title:
        fig.suptitle(title + (f"  (dotted: best epoch {int(best_epoch)})" if best_epoch is not None else ""),
                     fontsize=10)
    fig.tight_layout()
    return save_figure(fig, canvas, out_path)


def plot_metric_table(rows: Mapping[str, Mapping[str, float]], out_path: PathLike,
                      metrics: Optional[Sequence[str]] = None,
                      titles: Optional[Mapping[str, str]] = None) -> Path:
    """Bar chart of a results table ``{row label: {metric: value}}`` (e.g. the demo table).

    One panel per metric (default: every metric of the first row), one bar per row, in row order.
    """
    labels = list(rows)
    if not labels:
        raise ValueError("plot_metric_table: no rows")
    metrics = list(metrics) if metrics is not None else list(next(iter(rows.values())))
    titles = {**METRIC_TITLES, **(titles or {})}
    fig, canvas = new_figure(max(3.0, 1.1 * len(labels)) * len(metrics) * 0.9 + 0.5, 3.8)
    palette = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"]
    for m_i, metric in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), m_i + 1)
        values = np.array([float(rows[r].get(metric, np.nan)) for r in labels])
        xs = np.arange(len(labels))
        bars = ax.bar(xs, values, color=[palette[i % len(palette)] for i in range(len(labels))])
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7, padding=1)
        ax.set_xticks(xs, [_wrap(lbl) for lbl in labels], fontsize=7)
        ax.set_title(titles.get(metric, metric), fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return save_figure(fig, canvas, out_path)


def _wrap(label: str, width: int = 12) -> str:
    words, lines, line = str(label).replace("_", " ").split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)


def plot_curves(history: dict, path) -> Path:
    """Write the training-curves PNG for ``history`` atomically at ``path``; returns the path."""
    return plot_training_curves(history, path)
