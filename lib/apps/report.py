"""Run reports and the plots they embed. Every function takes plain dicts and writes files.

Shapes/units: metric values are floats (MPJPE / P-MPJPE in mm, PDJ in %); a training history is a
run's ``history.json`` content (or ``{term: [value per epoch]}``); per-action results are
``{lifter: {action: mpjpe_mm}}``.

    write_run_report(run_dir)          # reads history.json, config.yaml, metrics*.json -> report.md
    plot_training_curves(history, run_dir / "curves.png")      # lib/utils/plots.py
    plot_per_action(metrics["per_action"], run_dir)             # per_action_<lifter>.png

``report.md`` embeds the plots by paths relative to the run folder, so the folder can be moved or
browsed on GitHub as it is. Figures are drawn on matplotlib's Agg canvas (no pyplot state).
"""
import json
import math
import os
import shlex
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from lib.config import read_yaml
from lib.core.skeleton import H36M_ACTION_ABBR, H36M_ACTIONS
from lib.utils.errors import BadValueError
from lib.utils.plots import PathLike, as_number, new_figure, plot_training_curves, save_figure

KEY_CONFIG = (
    "DATASET.DATASET", "DATASET.ROOT", "MODEL.NAME", "MODEL.IMAGE_SIZE", "MODEL.HEATMAP_SIZE",
    "MODEL_3D.NAMES", "LOSS.LOSS_3D", "LOSS.LOSS_3D_Z", "LOSS.OHKLM", "LOSS.OHKLM_TOP_K", "LOSS.DWA",
    "LOSS.DROPOUT", "LOSS.LOSS_3D_AVG", "LOSS.LOSS_3D_CONS", "LOSS.LOSS_2D_W", "LOSS.OHKLM_W",
    "LOSS.LOSS_3D_W", "LOSS.LOSS_3D_XY_W", "LOSS.LOSS_3D_Z_W", "TRAIN.EPOCHS", "TRAIN.LR",
    "TRAIN.OPTIMIZER", "TRAIN.BATCH_SIZE_PER_GPU", "TRAIN.FINETUNE", "TRAIN.AMP", "TEST.SOFT_ARGMAX",
    "TEST.BETA", "TEST.POST_PROCESS", "TEST.ENSEMBLE", "SEED",
)

# Terms whose values span decades (heatmap losses, weighted sums) read better on a log axis.
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


def _key_config_lines(config, keys) -> List[str]:
    """Markdown table of the ``keys`` present in ``config`` (nested dict or yacs node); [] if none."""
    flat = flatten(config) if config else {}
    shown = [(k, flat[k]) for k in keys if k in flat]
    if not shown:
        return []
    return (["## Key configuration", "", "| key | value |", "|---|---|"]
            + [f"| {k} | `{_fmt(v)}` |" for k, v in shown] + [""])


# ---------------------------------------------------------------------------------------------- curves
# Training bookkeeping, not curves worth a panel.
def _action_order(actions: Iterable[str]) -> List[str]:
    known = [a for a in H36M_ACTIONS if a in actions]
    return known + sorted(a for a in actions if a not in H36M_ACTIONS)


def plot_per_action(per_action: Mapping[str, Mapping[str, float]], out_dir: PathLike,
                    prefix: str = "per_action", unit: str = "MPJPE (mm)") -> List[Path]:
    """One bar chart per lifter of ``{lifter: {action: value}}`` -> ``<out_dir>/<prefix>_<lifter>.png``.

    Bars follow the Human3.6M action order (docs/original.md#per-action-breakdown) with the paper's abbreviations; an
    'Avg.'
    bar (mean over the actions shown) closes each chart.
    """
    paths = []
    for lifter, by_action in per_action.items():
        # actions without samples (None / NaN) are left out rather than drawn as empty slots
        actions = _action_order([a for a, v in by_action.items()
                                 if a.lower() not in ("avg", "average", "mean") and math.isfinite(as_number(v))])
        if not actions:
            continue
        values = np.array([as_number(by_action[a]) for a in actions])
        abbr = dict(zip(H36M_ACTIONS, H36M_ACTION_ABBR))
        labels = [abbr.get(a, a) for a in actions] + ["Avg."]
        values = np.append(values, np.nanmean(values) if np.isfinite(values).any() else np.nan)
        fig, canvas = new_figure(max(6.0, 0.5 * len(labels) + 1.5), 3.4)
        ax = fig.add_subplot(1, 1, 1)
        colors = ["tab:blue"] * (len(labels) - 1) + ["tab:red"]
        bars = ax.bar(np.arange(len(labels)), values, color=colors)
        ax.bar_label(bars, labels=[f"{v:.1f}" if np.isfinite(v) else "n/a" for v in values], fontsize=6,
                     padding=1)
        ax.set_xticks(np.arange(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(unit, fontsize=9)
        ax.set_title(f"per-action {unit.split(' ')[0]}: {lifter}", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_axisbelow(True)
        fig.tight_layout()
        paths.append(save_figure(fig, canvas, Path(out_dir) / f"{prefix}_{lifter}.png"))
    return paths


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
    lines += _key_config_lines(config, key_config)
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


# ---------------------------------------------------------------------------------------------- run report
VIS_SHOWN = 4          # vis/ sheets embedded in report.md (the rest are listed by count)


def _read_json(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not readable JSON ({err}); delete or fix it and rerun") from err


def _read_config(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    import yaml
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not readable YAML ({err})") from err
    return data if isinstance(data, dict) else None


def summarize_metrics(m: Optional[Mapping], train: Optional[Mapping] = None) -> Dict[str, float]:
    """A history ``valid`` entry or a metrics.json dict -> ordered {row label: value} for the table.

    Rows: MPJPE / P-MPJPE / PDJ, MPJPE per lifter (held-out ones marked), cross and ensemble errors,
    the epoch and sample count when known, and ``train`` loss ``total`` when given. Values below
    zero (the evaluator's -1 for "no lifter evaluated") and None are left out.
    """
    rows: Dict[str, float] = {}
    if not m:
        return rows

    def put(label, value):
        value = as_number(value)
        if math.isfinite(value) and value >= 0:
            rows[label] = value

    put("MPJPE (mm)", m.get("mpjpe"))
    put("P-MPJPE (mm)", m.get("p_mpjpe"))
    put("PDJ@0.2 (%)", m.get("pdj"))
    for name, v in (m.get("per_lifter") or {}).items():
        held = isinstance(v, Mapping) and v.get("held_out")
        put(f"MPJPE {name}{' (held out)' if held else ''} (mm)", v.get("mpjpe") if isinstance(v, Mapping) else v)
    for group in ("cross", "ensemble"):
        sub = m.get(group)
        if isinstance(sub, Mapping):
            put(f"{group} MPJPE (mm)", sub.get("mpjpe"))
            put(f"{group} P-MPJPE (mm)", sub.get("p_mpjpe"))
        else:
            put(f"{group} MPJPE (mm)", m.get(f"{group}_mpjpe"))
            put(f"{group} P-MPJPE (mm)", m.get(f"{group}_p_mpjpe"))
    if train:
        put("train loss (total)", train.get("total"))
    if isinstance(m.get("num_samples"), int):
        rows["samples"] = m["num_samples"]
    return rows


def _per_action_table(per_action: Mapping[str, Mapping[str, Optional[float]]]) -> List[str]:
    lifters = [n for n, v in per_action.items() if v]
    if not lifters:
        return []
    actions = _action_order({a for n in lifters for a in per_action[n]})
    abbr = dict(zip(H36M_ACTIONS, H36M_ACTION_ABBR))
    lines = ["| lifter | " + " | ".join(abbr.get(a, a) for a in actions) + " | Avg. |",
             "|---|" + "---:|" * (len(actions) + 1)]
    for n in lifters:
        vals = np.array([as_number(per_action[n].get(a)) for a in actions])
        avg = np.nanmean(vals) if np.isfinite(vals).any() else math.nan
        cells = [f"{v:.1f}" if math.isfinite(v) else "-" for v in list(vals) + [avg]]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def _cmd_text(command) -> str:
    return command if isinstance(command, str) else " ".join(shlex.quote(str(c)) for c in command)


def write_run_report(run_dir: PathLike, command: Union[str, Sequence[str], None] = None, *,
                     config: Optional[Mapping] = None, title: Optional[str] = None) -> Path:
    """(Re)write ``<run_dir>/report.md`` from what the run folder holds; returns its path.

    Reads ``history.json`` (training: per-epoch terms and metrics, best flags), ``config.yaml``
    (else ``config``), ``metrics.json`` / ``metrics_cross.json`` (the trainer's best checkpoint, or
    ``run/valid_hrnet.py``'s validation, which records its own command). Writes: the commands
    (training: ``history['command']`` when recorded, else ``command``, which is then recorded in
    history.json so a later re-report keeps it), the key config values, a metrics table (last epoch,
    best epoch, best cross epoch, validation), the per-action table, and embeds ``curves.png``
    (drawn here from the history when missing), ``per_action_*.png`` and the first
    ``VIS_SHOWN`` ``vis/*.png`` by relative path. Safe to call after every training and validation.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"write_run_report: run folder {run_dir} does not exist")
    history = _read_json(run_dir / "history.json")
    cfg = _read_config(run_dir / "config.yaml") or (dict(config) if config is not None else None)
    metrics = _read_json(run_dir / "metrics.json")
    metrics_cross = _read_json(run_dir / "metrics_cross.json")

    commands: List[Tuple[str, str]] = []
    train_cmd = None
    if history is not None:
        train_cmd = history.get("command") or history.get("argv")
        if not train_cmd and command:
            train_cmd = _cmd_text(command)
            history["command"] = train_cmd          # kept for the reports written after validation
            tmp = run_dir / "history.json.tmp"
            tmp.write_text(json.dumps(history, indent=1))
            os.replace(tmp, run_dir / "history.json")
    if not train_cmd and cfg:
        train_cmd = flatten(cfg).get("COMMAND")
    if train_cmd:
        commands.append(("training", _cmd_text(train_cmd)))
    elif command:
        commands.append(("command", _cmd_text(command)))
    for m, what in ((metrics, "validation"), (metrics_cross, "validation (model_best_cross.pth)")):
        if m and m.get("command"):
            commands.append((what, _cmd_text(m["command"])))

    entries = (history or {}).get("epochs") or []
    columns: Dict[str, Dict[str, float]] = {}
    if entries:
        last = entries[-1]
        columns[f"last epoch ({last.get('epoch')})"] = summarize_metrics(last.get("valid"), last.get("train"))
        best = [e for e in entries if e.get("best")]
        if best:
            columns[f"best epoch ({best[-1].get('epoch')})"] = summarize_metrics(best[-1].get("valid"),
                                                                               best[-1].get("train"))
        best_cross = [e for e in entries if e.get("best_cross")]
        if best_cross:
            columns[f"best cross epoch ({best_cross[-1].get('epoch')})"] = summarize_metrics(
                best_cross[-1].get("valid"), best_cross[-1].get("train"))
    for m, ckpt in ((metrics, "model_best.pth"), (metrics_cross, "model_best_cross.pth")):
        if m and ("model_path" in m or not entries):       # written by run/valid_hrnet.py
            label = "validation, GT 2D" if m.get("gt_2d") else f"validation ({Path(str(m.get('model_path', ckpt))).name})"
            columns[label] = summarize_metrics(m)

    lines = [f"# {title or run_dir.name}", "", f"Run folder: `{run_dir}`", ""]
    if history and history.get("mode"):
        lifters = "+".join(history.get("lifters") or []) or "none"
        info = f"Mode: **{history['mode']}**, training lifters: {lifters}"
        if history.get("cross_lifters"):
            info += ", held out: " + "+".join(history["cross_lifters"])
        if entries:
            secs = [as_number((e.get("train") or {}).get("seconds")) for e in entries]
            sps = [as_number((e.get("train") or {}).get("samples_per_s")) for e in entries]
            info += f"; {len(entries)} epochs"
            if np.isfinite(secs).any():
                info += f", {np.nansum(secs) / 60:.1f} min training"
            if np.isfinite(sps).any():
                info += f", {np.nanmean(sps):.1f} samples/s"
        lines += [info + ".", ""]
    for what, cmd in commands:
        lines += [f"## Command ({what})", "", "```", cmd, "```", ""]
    lines += _key_config_lines(cfg, KEY_CONFIG)
    if columns:
        lines += ["## Metrics", ""] + metrics_table(columns) + [""]
    per_action = next((m["per_action"] for m in (metrics, metrics_cross) if m and m.get("per_action")), None)
    if per_action:
        table = _per_action_table(per_action)
        if table:
            lines += ["## Per-action MPJPE (mm)", ""] + table + [""]

    curves = run_dir / "curves.png"
    if history and entries and not curves.is_file():
        try:
            plot_training_curves(history, curves)
        except ValueError:
            pass
    figures: List[Tuple[str, Path]] = []
    if curves.is_file():
        figures.append(("training curves", curves))
    figures += [(f"per-action MPJPE: {p.stem[len('per_action_'):]}", p)
                for p in sorted(run_dir.glob("per_action_*.png"))]
    if figures:
        lines += ["## Plots", ""]
        for caption, path in figures:
            lines += [f"### {caption}", "", f"![{caption}]({path.relative_to(run_dir).as_posix()})", ""]
    sheets = sorted((run_dir / "vis").glob("*.png")) if (run_dir / "vis").is_dir() else []
    if sheets:
        lines += ["## Validation samples", "",
                  f"{len(sheets)} sheets in `vis/`: the crop with ground truth (green) and predicted 2D "
                  f"skeletons, then per lifter the 3D ground truth (dashed) and prediction.", ""]
        for path in sheets[:VIS_SHOWN]:
            rel = path.relative_to(run_dir).as_posix()
            lines += [f"![{path.stem}]({rel})", ""]
    out = run_dir / "report.md"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines).rstrip() + "\n")
    os.replace(tmp, out)
    return out


def report_after_training(run_dir: PathLike, argv: Optional[Sequence[str]] = None,
                          script: str = "run/train_hrnet.py") -> Optional[Path]:
    """Rank 0, after a finished training: ``write_run_report`` with the command that ran. A report
    never fails a finished training: a problem is one warning on stderr, and None is returned."""
    import sys
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    command = f"python {script} " + shlex.join(str(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        return write_run_report(run_dir, command=command)
    except Exception as err:   # noqa: BLE001 - the run's files are written; a report problem must not hide them
        print(f"warning: could not write {Path(run_dir) / 'report.md'}: {err}", file=sys.stderr)
        return None


# ---------------------------------------------------------------------------------------------- validation
def explain_missing_cross(model_dir):
    """--cross_valid needs model_best_cross.pth, which only a multi-model run with a held-out lifter writes."""
    path = model_dir / "model_best_cross.pth"
    need = ("a multi-model training run (two or more lifters in --model_3d, MODEL_3D.CROSS_VALID True) with a "
            "held-out lifter (a registered lifter outside --model_3d whose weights were on disk) writes")
    run_cfg = model_dir / "config.yaml"
    names = []
    if run_cfg.is_file():
        names = list(read_yaml(str(run_cfg)).get("MODEL_3D", {}).get("NAMES", []))
    if run_cfg.is_file() and len(names) < 2:
        raise BadValueError(f"--cross_valid evaluates {path}, which only {need}; the run in {model_dir} is a "
                            f"single-lifter run (MODEL_3D.NAMES {names}), so it has none: drop --cross_valid "
                            f"(model_best.pth is then evaluated)")
    raise FileNotFoundError(f"{path} not found: --cross_valid needs the file that {need}; check --model_dir "
                            f"and the run log's line 'held-out (cross) lifters'")


def validation_lines(cfg, results, model_path, lifters, gt_2d, soft_argmax, beta):
    """``run/valid_hrnet.py``'s printed lines: the original's (docs/original.md#validation-metrics)."""
    ds = cfg.DATASET.DATASET
    lines = [f"model dir: {os.path.dirname(str(model_path))}",
             f"[{ds}] HRNet + {'+'.join(lifters)} (GT 2D: {gt_2d}, soft argmax: {soft_argmax}, beta:{beta:g})",
             f"[{ds}] Test MPJPE: {results['mpjpe']:.2f}mm, Test P-MPJPE: {results['p_mpjpe']:.2f}mm, "
             f"Test PDJ@0.2: {results['pdj']:.2f}%"]
    if results.get("detections"):
        source_3d = results.get("data_3d") or "the prepared split"
        lines.insert(2, f"[{ds}] 2D from {results['detections']}, 3D from {source_3d}")
    proto = results.get("protocol") or {}
    if proto.get("average", "frame") != "frame" or proto.get("interval") or proto.get("flip") \
            or proto.get("exclude_s11_directions") or proto.get("n_mpjpe"):
        lines.append(f"[{ds}] protocol: {proto.get('average')}-wise average, frame interval {proto.get('interval')}, "
                     f"lifter flip {proto.get('flip')}, S11 Directions excluded {proto.get('exclude_s11_directions')}, "
                     f"{proto.get('samples_left_out', 0)} samples left out"
                     + (f"; Test N-MPJPE: {results['n_mpjpe']:.2f}mm" if "n_mpjpe" in results else ""))
    if results.get("unmasked"):
        u = results["unmasked"]
        lines.append(f"[{ds}] (DATASET.MASK_LOW_CONFIDENCE: low-confidence joints left out above) with them: "
                     f"Test MPJPE: {u['mpjpe']:.2f}mm, Test P-MPJPE: {u['p_mpjpe']:.2f}mm")
    for name, v in results["per_lifter"].items():
        lines.append(f"[{ds}] {name} Test MPJPE: {v['mpjpe']:.2f}mm")
    lines.append("")
    if results.get("per_action"):
        for name, actions in results["per_action"].items():
            vals = [math.nan if v is None else v for v in actions.values()]
            lines.append(f"[{ds}] {name} " + " | ".join(f"{a}{v:.1f}" for a, v in zip(H36M_ACTION_ABBR, vals)))
            lines.append("")
    lines.append("")
    return lines


def write_validation_extras(cfg, results, model_dir, *, cross_valid, vis, gt_2d, context, model, soft_argmax,
                            beta) -> None:
    """``run/valid_hrnet.py``'s per-action charts, --vis sheets (with a detector or --gt: ``context`` not
    None) and report.md, never hiding the metrics already written."""
    from lib.apps.vis import render_validation_sheets
    model_dir = Path(model_dir)
    if cfg.TEST.ACTION_VALID and results.get("per_action"):
        prefix = "per_action_cross" if cross_valid else "per_action"
        charts = plot_per_action(results["per_action"], model_dir, prefix=prefix)
        print(f"per-action charts: {', '.join(str(c) for c in charts)}")
    if vis and context is not None:
        num = int(cfg.TEST.VIS_NUM) or 8
        paths = render_validation_sheets(cfg, context.dataset, model, context.device, context.lifters, gt_2d,
                                         soft_argmax, beta, model_dir / "vis", num)
        print(f"--vis: {len(paths)} sheets in {model_dir / 'vis'}")
    try:
        print(f"report: {write_run_report(model_dir, config=cfg)}")
    except Exception as err:   # noqa: BLE001 - the metrics are written; a report problem must not hide them
        print(f"warning: could not write {model_dir / 'report.md'}: {err}")


__all__ = ["KEY_CONFIG", "flatten", "plot_per_action", "metrics_table", "summarize_metrics", "write_report",
           "write_run_report", "report_after_training", "validation_lines", "write_validation_extras",
           "explain_missing_cross"]
