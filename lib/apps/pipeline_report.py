"""The reproduction pipeline's report: report.json, report.md and report.png (docs/pipeline.md).

One seed: the MPJPE of every detector with every lifter, the improvements over 2D-only fine-tuning,
the three figures of the paper's claims (:func:`claims`), ``make demo``'s table and the error
diagnosis of every detector (good / jitter / inversion / miss). Several seeds
(``PIPELINE.SEEDS``, :func:`combine_seeds`): the same tables as means over the seeds, each seed's
figures under ``per_seed``, and the ``verdict`` of the claims with their 95 % intervals and paired
t-test p-values (:mod:`lib.eval.verdict`).
"""
import json
import os
from pathlib import Path
from typing import Dict, List, Sequence

from lib.eval.verdict import summarise
from lib.utils.atomic_io import write_text_atomic
from lib.utils.plots import plot_metric_table

TAXONOMY_KEYS = ("good", "jitter", "inversion", "miss")


def improvement_pct(base: float, value: float) -> float:
    """How much lower ``value`` is than ``base``, in percent of ``base`` (positive = better)."""
    return 100.0 * (base - value) / base


def build_report(cfg, runs, results: Dict[str, Dict], lifters: Sequence[str]) -> Dict:
    """One seed's report.json content from its validation results (``runs``: the pipeline's
    fine-tunings, each with ``name``, ``guided_by``, ``held_out``)."""
    lifters = list(lifters)
    pick = lambda r, key: {n: r["per_lifter"][n][key] for n in lifters}   # noqa: E731
    report: Dict = {"dataset": cfg.DATASET.DATASET, "lifters": lifters,
                    "lifters_gt2d": {n: dict(results["gt_2d"]["per_lifter"][n]) for n in lifters},
                    "pretrained_detector": {"mpjpe": pick(results["pretrained"], "mpjpe"),
                                   "p_mpjpe": pick(results["pretrained"], "p_mpjpe"),
                                   "pdj": results["pretrained"]["pdj"]},
                    "runs": []}
    for run in runs:
        r = results[run.name]
        report["runs"].append({"name": run.name, "guided_by": list(run.guided_by), "held_out": list(run.held_out),
                               "mpjpe": pick(r, "mpjpe"), "p_mpjpe": pick(r, "p_mpjpe"), "pdj": r["pdj"]})
    base = report["runs"][0]
    summary = {}
    for run in report["runs"][1:]:
        summary[run["name"]] = {n: {"mpjpe_improvement_pct": improvement_pct(base["mpjpe"][n], run["mpjpe"][n]),
                                    "p_mpjpe_improvement_pct": improvement_pct(base["p_mpjpe"][n], run["p_mpjpe"][n]),
                                    "held_out": n in run["held_out"]}
                                for n in lifters}
    report["summary"] = summary
    report["claims"] = claims(report)
    # the protocol of every number above, and each detector's 2D in VideoPose3D's format
    report["protocol"] = results["gt_2d"].get("protocol")
    report["exports"] = {name: r["export"] for name, r in results.items() if r.get("export")}
    # make demo's table, unchanged: the first single-lifter run is "3d_guided", scored by its lifter
    single = [r for r in runs if len(r.guided_by) == 1]
    if single:
        one = single[0].guided_by[0]
        row = lambda r: {"mpjpe": r["per_lifter"][one]["mpjpe"], "p_mpjpe": r["per_lifter"][one]["p_mpjpe"],  # noqa
                         "pdj": r["pdj"]}
        report["gt_2d"] = row(results["gt_2d"])
        report["pretrained"] = row(results["pretrained"])
        report["2d_only"] = row(results["2d_only"])
        report["3d_guided"] = row(results[single[0].name])
    report["error_taxonomy"] = {name: r["taxonomy"] for name, r in results.items() if r.get("taxonomy")}
    return report


def claims(report: Dict) -> Dict:
    """The three figures of the paper's claims on this benchmark: each lifter's GT-2D MPJPE over SimpleBaseline's; each single-lifter
    run's improvement of its own lifter; the held-out lifter's improvement averaged over the
    leave-one-out runs (None where the preset has no such runs)."""
    gt = report["lifters_gt2d"]
    out: Dict = {"gt2d_ratio_vs_sb": ({n: v["mpjpe"] / gt["sb"]["mpjpe"] for n, v in gt.items()} if "sb" in gt else None)}
    single = {r["name"]: r for r in report["runs"] if len(r["guided_by"]) == 1}
    out["single_improvement_pct"] = {r["guided_by"][0]: report["summary"][name][r["guided_by"][0]]["mpjpe_improvement_pct"]
                                     for name, r in single.items()} or None
    loo = [r for r in report["runs"] if len(r["held_out"]) == 1 and len(r["guided_by"]) > 1]
    if loo:
        per = {r["held_out"][0]: report["summary"][r["name"]][r["held_out"][0]]["mpjpe_improvement_pct"] for r in loo}
        out["held_out_improvement_pct"] = per
        out["held_out_mean_improvement_pct"] = sum(per.values()) / len(per)
    else:
        out["held_out_improvement_pct"] = out["held_out_mean_improvement_pct"] = None
    return out


def _mean_rows(rows: Sequence[Dict]) -> Dict:
    """Same-shaped nested dicts of numbers (one per seed) -> their element-wise mean; other values
    (names, lifter lists) are taken from the first."""
    first = rows[0]
    if isinstance(first, dict):
        return {k: _mean_rows([r[k] for r in rows]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return sum(float(r) for r in rows) / len(rows)
    return first


def combine_seeds(per_seed: Dict[int, Dict], single_lifter=None) -> Dict:
    """Reports of several seeds (:func:`build_report` each) -> the multi-seed report.

    Its tables (``pretrained_detector``, ``runs``, ``summary``, ``claims``, ``error_taxonomy``, the
    ``make demo`` rows) are the means over the seeds; ``per_seed`` keeps each seed's figures;
    ``verdict`` holds :func:`lib.eval.verdict.summarise` of the per-seed single-lifter improvement
    (``single``: the lifter ``single_lifter``, default the first single-lifter run's) and of the
    per-seed mean held-out improvement (``held_out_mean``), each None where the preset has no such run.
    """
    seeds = list(per_seed)
    reports = [per_seed[s] for s in seeds]
    first = reports[0]
    report = {"dataset": first["dataset"], "lifters": first["lifters"], "seeds": seeds,
              "lifters_gt2d": first["lifters_gt2d"], "protocol": first.get("protocol")}
    for key in ("pretrained_detector", "summary", "claims", "error_taxonomy", "gt_2d", "pretrained", "2d_only",
                "3d_guided"):
        if key in first and first[key] is not None:
            report[key] = _mean_rows([r[key] for r in reports])
    report["runs"] = [_mean_rows([r["runs"][i] for r in reports]) for i in range(len(first["runs"]))]
    report["per_seed"] = {}
    for seed, r in zip(seeds, reports):
        c = r["claims"]
        report["per_seed"][str(seed)] = {
            "single_improvement_pct": c["single_improvement_pct"],
            "held_out_improvement_pct": c["held_out_improvement_pct"],
            "held_out_mean_improvement_pct": c["held_out_mean_improvement_pct"],
            "pretrained_detector": r["pretrained_detector"], "runs": r["runs"],
            "error_taxonomy": r.get("error_taxonomy"), "exports": r.get("exports")}
    singles = first["claims"]["single_improvement_pct"] or {}
    one = single_lifter or next(iter(singles), None)
    report["verdict"] = {
        "single_lifter": one,
        "single": summarise([r["claims"]["single_improvement_pct"][one] for r in reports]) if one else None,
        "held_out_mean": (summarise([r["claims"]["held_out_mean_improvement_pct"] for r in reports])
                          if first["claims"]["held_out_mean_improvement_pct"] is not None else None)}
    return report


def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def report_markdown(report: Dict, curves: Dict[str, str]) -> List[str]:
    lifters = report["lifters"]
    lines = [f"# L2D-Pose reproduction ({report['dataset']})", ""]
    if report.get("preset"):
        lines += [f"Preset: `{report['preset']}`. MPJPE in mm on the {report.get('report_split', 'validation')} "
                  f"split; `*` = held-out lifter (evaluated, never guided the run); improvements are over 2D-only "
                  f"fine-tuning.", ""]
    if report.get("machine"):
        lines += [f"Machine: {report['machine']}.", ""]
    seeds = report.get("seeds")
    if seeds:
        lines += [f"Every table is the mean over {len(seeds)} seeds ({', '.join(map(str, seeds))}); the verdict gives "
                  f"the spread, each seed's figures follow it.", ""]
    else:
        lines += [f"One seed (SEED {report.get('seed', '?')}): a single training run of each detector, whose figures "
                  f"move with float rounding; the verdict over several seeds is `make benchmark`'s.", ""]
    head = "| model | guided by | " + " | ".join(lifters) + " | PDJ@0.2 (%) |"
    lines += ["## MPJPE per lifter", "", head, "|---|---|" + "---:|" * (len(lifters) + 1)]
    gt = report["lifters_gt2d"]
    lines.append("| lifters on ground-truth 2D | - | " + " | ".join(_fmt(gt[n]["mpjpe"]) for n in lifters) + " | 100.00 |")
    pre = report["pretrained_detector"]
    lines.append("| pre-trained detector | - | " + " | ".join(_fmt(pre["mpjpe"][n]) for n in lifters)
                 + f" | {pre['pdj']:.2f} |")
    for r in report["runs"]:
        cells = [_fmt(r["mpjpe"][n]) + ("*" if n in r["held_out"] else "") for n in lifters]
        lines.append(f"| {r['name']} | {'+'.join(r['guided_by']) or '2D only'} | " + " | ".join(cells)
                     + f" | {r['pdj']:.2f} |")
    if report["summary"]:
        lines += ["", "## MPJPE improvement over 2D-only fine-tuning (%)", "",
                  "| run | " + " | ".join(lifters) + " |", "|---|" + "---:|" * len(lifters)]
        for name, per in report["summary"].items():
            cells = [f"{per[n]['mpjpe_improvement_pct']:+.1f}" + ("*" if per[n]["held_out"] else "") for n in lifters]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    c = report["claims"]
    lines += ["", "## The three figures", ""]
    if c["gt2d_ratio_vs_sb"]:
        lines.append("- GT-2D MPJPE / SimpleBaseline's: "
                     + ", ".join(f"{n} {v:.2f}" for n, v in c["gt2d_ratio_vs_sb"].items()))
    if c["single_improvement_pct"]:
        lines.append("- single-lifter guidance, own lifter vs 2D-only: "
                     + ", ".join(f"{n} {v:+.1f} %" for n, v in c["single_improvement_pct"].items()))
    if c["held_out_mean_improvement_pct"] is not None:
        lines.append(f"- held-out lifter vs 2D-only, mean over the leave-one-out runs: "
                     f"{c['held_out_mean_improvement_pct']:+.1f} % ("
                     + ", ".join(f"{n} {v:+.1f}" for n, v in c["held_out_improvement_pct"].items()) + ")")
    lines += _verdict_lines(report) + _taxonomy_lines(report)
    if "3d_guided" in report:
        lines += ["", "## make demo table", "", "| model | MPJPE (mm) | P-MPJPE (mm) | PDJ@0.2 (%) |", "|---|---:|---:|---:|"]
        for key, label in (("gt_2d", "lifter on ground-truth 2D"), ("pretrained", "pre-trained detector"),
                           ("2d_only", "2D-only fine-tuning"), ("3d_guided", "3D-guided fine-tuning")):
            r = report[key]
            lines.append(f"| {label} | {r['mpjpe']:.2f} | {r['p_mpjpe']:.2f} | {r['pdj']:.2f} |")
    exports = {k: v for k, v in (report.get("exports") or {}).items() if v.get("path")}
    if exports:
        lines += ["", "## 2D of the report split in VideoPose3D's format", ""]
        lines += [f"- {name}: `{os.path.relpath(v['path'], report.get('out', '.'))}`"
                  f"{'' if v.get('every_frame') else ' (kept frames only)'}" for name, v in exports.items()]
    secs = report.get("seconds") or {}
    if secs:
        lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()), ""]
    lines += ["", "![results](report.png)", ""]
    for name, rel in curves.items():
        lines += [f"## {name}: training curves", "", f"![{name} curves]({rel})", ""]
    return lines


def _interval(s: Dict) -> str:
    if s is None:
        return "-"
    if s["ci95"] is None:
        return f"{s['mean']:+.1f} % (one seed)"
    return (f"{s['mean']:+.1f} % (95 % interval {s['ci95'][0]:+.1f} to {s['ci95'][1]:+.1f}, sd {s['sd']:.1f}, "
            f"n {s['n']}, p {s['p_value']:.3g})")


def _verdict_lines(report: Dict) -> List[str]:
    verdict = report.get("verdict")
    if not verdict:
        return []
    lines = ["", "## Verdict over the seeds", "",
             f"- single-lifter guidance, {verdict['single_lifter']}'s MPJPE vs 2D-only: {_interval(verdict['single'])}",
             f"- held-out lifter vs 2D-only, mean of the leave-one-out runs: {_interval(verdict['held_out_mean'])}",
             "", "| seed | single-lifter (%) | held-out mean (%) | held-out per lifter (%) |", "|---|---:|---:|---|"]
    one = verdict["single_lifter"]
    for seed, r in report["per_seed"].items():
        single = (r["single_improvement_pct"] or {}).get(one)
        per = r["held_out_improvement_pct"] or {}
        lines.append(f"| {seed} | {_fmt_pct(single)} | {_fmt_pct(r['held_out_mean_improvement_pct'])} | "
                     + ", ".join(f"{n} {v:+.1f}" for n, v in per.items()) + " |")
    return lines


def _fmt_pct(v) -> str:
    return "-" if v is None else f"{v:+.1f}"


def _taxonomy_lines(report: Dict) -> List[str]:
    taxonomy = report.get("error_taxonomy")
    if not taxonomy:
        return []
    lines = ["", "## Error diagnosis of the detectors (% of joints)", "",
             "| model | " + " | ".join(TAXONOMY_KEYS) + " |", "|---|" + "---:|" * len(TAXONOMY_KEYS)]
    for name, t in taxonomy.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * t[k]:.1f}" for k in TAXONOMY_KEYS) + " |")
    return lines


def write_report(out: Path, report: Dict, run_folders: Dict[str, Path]) -> None:
    """report.json, report.md and report.png (MPJPE per lifter and PDJ for every model) into ``out``."""
    lifters = report["lifters"]
    rows = {"GT 2D": {**{f"mpjpe/{n}": report["lifters_gt2d"][n]["mpjpe"] for n in lifters}, "pdj": 100.0},
            "pre-trained": {**{f"mpjpe/{n}": report["pretrained_detector"]["mpjpe"][n] for n in lifters},
                            "pdj": report["pretrained_detector"]["pdj"]}}
    for r in report["runs"]:
        rows[r["name"]] = {**{f"mpjpe/{n}": r["mpjpe"][n] for n in lifters}, "pdj": r["pdj"]}
    titles = {f"mpjpe/{n}": f"MPJPE {n} (mm)" for n in lifters}
    plot_metric_table(rows, out / "report.png", titles=titles)
    curves = {}
    for name, folder in run_folders.items():
        hits = sorted(Path(folder).rglob("curves.png"))
        if hits:
            curves[name] = Path(os.path.relpath(hits[-1], out)).as_posix()
    write_json(out / "report.json", report)
    write_text_atomic(out / "report.md", "\n".join(report_markdown(report, curves)).rstrip() + "\n")
