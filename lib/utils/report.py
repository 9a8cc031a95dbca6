"""Run reports and the plots they embed. Every function takes plain dicts and writes files.

Shapes/units: metric values are floats (MPJPE / P-MPJPE in mm, PDJ in %); a per-epoch history is
``{term: [value per epoch]}``; per-action results are ``{lifter: {action: mpjpe_mm}}``.

    plots = [plot_training_curves(history, run_dir / "plots" / "curves.png")]
    plots += plot_per_action(per_action, run_dir / "plots")
    write_report(run_dir, command=sys.argv, config=cfg, final=final, best=best, plots=plots)

``report.md`` embeds the plots by paths relative to the run folder, so the folder can be moved or
browsed on GitHub as it is. Figures are drawn on matplotlib's Agg canvas (no pyplot state).
"""
import math
import os
import shlex
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lib.core.skeleton import H36M_ACTION_ABBR, H36M_ACTIONS

PathLike = Union[str, os.PathLike]

# The config values a reader needs to tell runs apart; absent keys are skipped.
KEY_CONFIG = (
    "DATASET.DATASET", "DATASET.ROOT", "MODEL.NAME", "MODEL.IMAGE_SIZE", "MODEL.HEATMAP_SIZE",
    "MODEL_3D.NAMES", "LOSS.LOSS_3D", "LOSS.LOSS_3D_Z", "LOSS.OHKLM", "LOSS.OHKLM_TOP_K", "LOSS.DWA",
    "LOSS.DROPOUT", "LOSS.LOSS_3D_AVG", "LOSS.LOSS_3D_CONS", "LOSS.LOSS_2D_W", "LOSS.OHKLM_W",
    "LOSS.LOSS_3D_W", "LOSS.LOSS_3D_XY_W", "LOSS.LOSS_3D_Z_W", "TRAIN.EPOCHS", "TRAIN.LR",
    "TRAIN.OPTIMIZER", "TRAIN.BATCH_SIZE_PER_GPU", "TRAIN.FINETUNE", "TRAIN.AMP", "TEST.SOFT_ARGMAX",
    "TEST.BETA", "TEST.POST_PROCESS", "TEST.ENSEMBLE", "SEED",
)

# Terms whose values span decades (heatmap losses, weighted sums) read better on a log axis.
_LOG_HINTS = ("loss", "weighted", "total")

METRIC_TITLES = {"mpjpe": "MPJPE (mm, lower is better)", "p_mpjpe": "P-MPJPE (mm, lower is better)",
                 "pdj": "PDJ@0.2 (%, higher is better)"}


def _new_figure(width_in: float, height_in: float, dpi: int = 110):
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    return fig, FigureCanvasAgg(fig)


def _save(fig: Figure, canvas: FigureCanvasAgg, out_path: PathLike) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    os.replace(tmp, out_path)       # a reader never sees half a PNG
    return out_path


def flatten(tree: Mapping, prefix: str = "", sep: str = ".") -> Dict[str, object]:
    """Nested dicts (a yacs CfgNode is one) -> {'A.B.C': value}."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if (abs(v) < 1e-2 and v != 0) or abs(v) >= 1e5 else f"{v:.2f}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    text = str(value)
    return text if text else "''"


# ---------------------------------------------------------------------------------------------- plots
def plot_training_curves(history: Mapping[str, Sequence[float]], out_path: PathLike,
                         epochs: Optional[Sequence[int]] = None, title: Optional[str] = None,
                         log_scale: Optional[Iterable[str]] = None) -> Path:
    """One small panel per term of ``history`` ({term: values per epoch}) -> PNG at ``out_path``.

    Loss terms (names with 'loss'/'weighted'/'total') whose values are all positive use a log y axis;
    ``log_scale`` names the terms to put on a log axis instead. A term like 'mpjpe/sb' is one curve.
    """
    terms = [k for k, v in history.items() if len(v)]
    if not terms:
        raise ValueError("plot_training_curves: history has no values to plot")
    cols = min(4, len(terms))
    rows = int(math.ceil(len(terms) / cols))
    fig, canvas = _new_figure(3.2 * cols, 2.4 * rows)
    log_terms = set(log_scale) if log_scale is not None else None
    for i, term in enumerate(terms):
        ax = fig.add_subplot(rows, cols, i + 1)
        values = np.asarray(history[term], dtype=np.float64)
        xs = np.asarray(epochs[:len(values)] if epochs is not None else np.arange(len(values)))
        ax.plot(xs, values, marker="o", markersize=3, linewidth=1.5, color="tab:blue")
        finite = values[np.isfinite(values)]
        wants_log = (term in log_terms) if log_terms is not None else any(h in term.lower() for h in _LOG_HINTS)
        if wants_log and len(finite) and (finite > 0).all():
            ax.set_yscale("log")
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, canvas, out_path)


def _action_order(actions: Iterable[str]) -> List[str]:
    known = [a for a in H36M_ACTIONS if a in actions]
    return known + sorted(a for a in actions if a not in H36M_ACTIONS)


def plot_per_action(per_action: Mapping[str, Mapping[str, float]], out_dir: PathLike,
                    prefix: str = "per_action", unit: str = "MPJPE (mm)") -> List[Path]:
    """One bar chart per lifter of ``{lifter: {action: value}}`` -> ``<out_dir>/<prefix>_<lifter>.png``.

    Bars follow the Human3.6M action order (SPEC §4.5) with the paper's abbreviations; an 'Avg.'
    bar (mean over the actions shown) closes each chart.
    """
    paths = []
    for lifter, by_action in per_action.items():
        actions = _action_order([a for a in by_action if a.lower() not in ("avg", "average", "mean")])
        if not actions:
            continue
        values = np.array([float(by_action[a]) for a in actions])
        abbr = dict(zip(H36M_ACTIONS, H36M_ACTION_ABBR))
        labels = [abbr.get(a, a) for a in actions] + ["Avg."]
        values = np.append(values, np.nanmean(values))
        fig, canvas = _new_figure(max(6.0, 0.5 * len(labels) + 1.5), 3.4)
        ax = fig.add_subplot(1, 1, 1)
        colors = ["tab:blue"] * (len(labels) - 1) + ["tab:red"]
        bars = ax.bar(np.arange(len(labels)), values, color=colors)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=6, padding=1)
        ax.set_xticks(np.arange(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(unit, fontsize=9)
        ax.set_title(f"per-action {unit.split(' ')[0]}: {lifter}", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        fig.tight_layout()
        paths.append(_save(fig, canvas, Path(out_dir) / f"{prefix}_{lifter}.png"))
    return paths


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
    fig, canvas = _new_figure(max(3.0, 1.1 * len(labels)) * len(metrics) * 0.9 + 0.5, 3.8)
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
    return _save(fig, canvas, out_path)


plot_demo_table = plot_metric_table


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


# ---------------------------------------------------------------------------------------------- report
def metrics_table(columns: Mapping[str, Optional[Mapping]]) -> List[str]:
    """Markdown table lines: one row per metric key (nested dicts flattened with '/'), one column
    per entry of ``columns`` ({'final': metrics, 'best': metrics}); missing cells are '-'."""
    flat = {name: flatten(m or {}, sep="/") for name, m in columns.items()}
    keys: List[str] = []
    for values in flat.values():
        keys += [k for k in values if k not in keys]
    if not keys:
        return ["(no metrics)"]
    names = list(flat)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for key in keys:
        cells = [_fmt(flat[n][key]) if key in flat[n] else "-" for n in names]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def write_report(run_dir: PathLike, command: Union[str, Sequence[str], None] = None,
                 config: Optional[Mapping] = None, final: Optional[Mapping] = None,
                 best: Optional[Mapping] = None, plots: Union[Sequence[PathLike], Mapping[str, PathLike], None] = None,
                 title: Optional[str] = None, key_config: Sequence[str] = KEY_CONFIG,
                 notes: Union[str, Sequence[str], None] = None, filename: str = "report.md") -> Path:
    """Write ``<run_dir>/report.md``; returns its path.

    command: the command line (string or argv list); config: nested dict / CfgNode, of which the
    ``key_config`` entries are listed; final / best: metric dicts ({'mpjpe': {'sb': 51.2}, ...} or
    flat) shown side by side; plots: paths (or {caption: path}) embedded relative to ``run_dir``
    (paths that do not exist are listed as missing rather than shown broken); notes: extra lines.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title or run_dir.name}", ""]
    if command:
        cmd = command if isinstance(command, str) else " ".join(shlex.quote(str(c)) for c in command)
        lines += ["## Command", "", "```", cmd, "```", ""]
    if config:
        flat = flatten(config)
        shown = [(k, flat[k]) for k in key_config if k in flat]
        if shown:
            lines += ["## Key configuration", "", "| key | value |", "|---|---|"]
            lines += [f"| {k} | `{_fmt(v)}` |" for k, v in shown]
            lines.append("")
    if final or best:
        columns = {}
        if final:
            columns["final"] = final
        if best:
            columns["best"] = best
        lines += ["## Metrics", ""] + metrics_table(columns) + [""]
    if plots:
        items = plots.items() if isinstance(plots, Mapping) else [(Path(p).stem, p) for p in plots]
        lines += ["## Plots", ""]
        for caption, path in items:
            path = Path(path)
            if not path.is_absolute():
                path = run_dir / path if not path.exists() else path
            rel = Path(os.path.relpath(path.resolve(), run_dir.resolve())).as_posix()
            if path.is_file():
                lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
            else:
                lines += [f"- {caption}: `{rel}` (missing)", ""]
    if notes:
        lines += ["## Notes", ""] + ([notes] if isinstance(notes, str) else list(notes)) + [""]
    out = run_dir / filename
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    os.replace(tmp, out)
    return out


__all__ = ["KEY_CONFIG", "flatten", "plot_training_curves", "plot_per_action", "plot_metric_table",
           "plot_demo_table", "metrics_table", "write_report"]
