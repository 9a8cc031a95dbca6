"""One reproduction, raw data to the paper-style tables, as named resumable stages (run/reproduce.py).

    data       generate the embedded synthetic set (PIPELINE.SYNTHETIC) or prepare PIPELINE.SOURCE
    lifters    train every lifter of PIPELINE.LIFTERS on ground-truth 2D -> 3D
    pretrain   2D-only pre-training of the detector (skipped when PIPELINE.PRETRAINED names one)
    finetune   from that one checkpoint, the same epochs each: 2D-only (the baseline), one run guided
               by each lifter of PIPELINE.SINGLE, and with PIPELINE.LEAVE_ONE_OUT one multi-model run
               per lifter, guided by all the others (the one left out is the held-out lifter)
    validate   every detector (and ground-truth 2D) with every lifter
    report     <out>/report.json, report.md, report.png

A preset is an experiment file (the PIPELINE node of lib/config/default.py plus DATASET.ROOT,
DATASET.DATASET, OUTPUT_DIR, SEED, CUSTOM_IMPORTS). Stages call the library (the data commands'
functions, ``train_lifter``, ``train``, ``evaluate_checkpoint``) with the overrides the matching
command's flags would give (one flag table, lib/config/flags.py), so a stage runs what the command
would. Each stage folder records the inputs it was made from (lib/apps/stages.py:
start checkpoint, lifter weights, the prepared index, options); a finished stage made from the same
inputs is reused, one whose inputs changed is made again, and so is everything downstream of it (their
inputs include its files' modification times).

Under torchrun every rank runs the pipeline: the process group is set up once here and kept by the
trainers; rank 0 decides reuse (and clears stale folders), prepares the data, writes records and
reports; all ranks meet at a barrier after every stage and validate their shard of the validation
split. While rank 0 works alone the others wait in short polls, so that hours of data preparation
never count against the collective timeout (DIST_TIMEOUT_MINUTES).
"""
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import model_3d
from lib.apps.report import write_run_report
from lib.apps.stages import find_run, mark_stage, reuse_stage, stage_done, stage_inputs
from lib.config import load_cfg
from lib.config.flags import lifter_flag_opts, parse_lifter_list, train_flags_to_opts
from lib.datasets.commands import run_make_demo_data, run_prepare
from lib.engine import distributed as ddp
from lib.engine.evaluator import evaluate_checkpoint, evaluation_context
from lib.engine.lifter_trainer import train_lifter
from lib.engine.trainer import train
from lib.utils.atomic_io import write_text_atomic
from lib.utils.errors import UserError
from lib.utils.plots import plot_metric_table

STAGES = ("data", "lifters", "pretrain", "finetune", "validate", "report")


@dataclass
class GuidedRun:
    """One fine-tuning: ``guided_by`` empty = the 2D-only baseline."""
    name: str
    guided_by: List[str]
    held_out: List[str]
    flags: List[str] = field(default_factory=list)


def load_preset(path, opts: Sequence = ()):
    """The preset YAML merged over the defaults, then ``opts`` (KEY VALUE); checked; frozen."""
    if not path or not os.path.isfile(path):
        raise UserError(f"preset {path!r} not found: pass --preset experiments/pipeline/<name>.yaml")
    try:
        cfg = load_cfg(path, list(opts))
    except (KeyError, ValueError) as err:
        raise UserError(str(err).strip("'\"")) from None
    p = cfg.PIPELINE
    bad = [n for n in list(p.LIFTERS) + list(p.SINGLE) if n not in model_3d.LIFTERS]
    if bad or not p.LIFTERS or len(set(p.LIFTERS)) != len(p.LIFTERS):
        raise UserError(f"{path}: PIPELINE.LIFTERS {list(p.LIFTERS)} / SINGLE {list(p.SINGLE)}: name distinct "
                        f"registered lifters (at least one); registered: {list(model_3d.LIFTERS)} (a lifter of "
                        f"your own: its module in CUSTOM_IMPORTS)")
    missing = [n for n in p.SINGLE if n not in p.LIFTERS]
    if missing:
        raise UserError(f"{path}: PIPELINE.SINGLE names {missing}, which are not in PIPELINE.LIFTERS {list(p.LIFTERS)}")
    if p.LIFTER_EPOCHS and len(p.LIFTER_EPOCHS) != len(p.LIFTERS):
        raise UserError(f"{path}: PIPELINE.LIFTER_EPOCHS {list(p.LIFTER_EPOCHS)} needs one entry per lifter of "
                        f"PIPELINE.LIFTERS {list(p.LIFTERS)} (or [] for each recipe's)")
    if p.LEAVE_ONE_OUT and len(p.LIFTERS) < 3:
        raise UserError(f"{path}: PIPELINE.LEAVE_ONE_OUT needs at least 3 lifters in PIPELINE.LIFTERS "
                        f"(has {list(p.LIFTERS)}); with two, the single-lifter runs are the leave-one-out runs")
    for key in ("OPTS", "LIFTER_OPTS", "PRETRAIN_OPTS", "FINETUNE_OPTS"):
        if len(p[key]) % 2:
            raise UserError(f"{path}: PIPELINE.{key} {list(p[key])} must hold KEY VALUE pairs")
    if p.SYNTHETIC not in ("", "h36m", "panoptic"):
        raise UserError(f"{path}: PIPELINE.SYNTHETIC {p.SYNTHETIC!r}: use '' (prepared data), h36m or panoptic")
    if not cfg.DATASET.ROOT:
        raise UserError(f"{path}: DATASET.ROOT is empty: name the prepared dataset folder (or --data-root DIR)")
    for key in ("DETECTOR_CFG", "PRETRAIN_CFG", "LIFTER_CFG"):
        if p[key] and not os.path.isfile(p[key]):
            raise UserError(f"{path}: PIPELINE.{key} {p[key]!r} not found (paths are relative to the working folder)")
    cfg.freeze()
    return cfg


def plan_runs(cfg) -> List[GuidedRun]:
    """The fine-tunings of a preset, in order: baseline, single-lifter runs, leave-one-out runs."""
    p = cfg.PIPELINE
    lifters = list(p.LIFTERS)
    runs = [GuidedRun("2d_only", [], [])]
    for name in p.SINGLE:
        runs.append(GuidedRun(f"single_{name}", [name], [n for n in lifters if n != name],
                              ["--loss_3d"] + [str(f) for f in p.SINGLE_FLAGS]))
    if p.LEAVE_ONE_OUT:
        for out in lifters:
            guide = [n for n in lifters if n != out]
            runs.append(GuidedRun(f"without_{out}", guide, [out], ["--loss_3d"] + [str(f) for f in p.MULTI_FLAGS]))
    return runs


def _on_main(fn: Callable):
    """``fn()`` on rank 0 only; its (picklable) result on every rank. The others wait in short polls,
    not in one collective (preparing a real dataset outlasts any collective timeout), and stop with
    an error when rank 0's ``fn`` raises (:func:`lib.engine.distributed.run_on_main`)."""
    return ddp.run_on_main(fn)


def _epochs(n: int) -> List[str]:
    """``TRAIN.EPOCHS N`` (``--epochs N``), or nothing for N < 0 (the experiment file's TRAIN.EPOCHS)."""
    return ["TRAIN.EPOCHS", str(int(n))] if int(n) >= 0 else []


def _strs(values) -> List[str]:
    return [str(v) for v in values]


def _lifter_list(names) -> List[str]:
    """``MODEL_3D.NAMES`` as ``--model_3d`` sets it (sorted), as an override."""
    return ["MODEL_3D.NAMES", str(parse_lifter_list(",".join(names)))]


def _stage_cfg(cfg_file: str, opts: Sequence[str]):
    """An experiment file and overrides -> the frozen config a command would build from them."""
    cfg = load_cfg(cfg_file, list(opts))
    cfg.CFG_FILE = cfg_file
    model_3d.check_lifter_config(cfg)
    cfg.freeze()
    return cfg


def train_detector(cfg_file: str, opts: Sequence[str], gpu_id: int) -> Dict:
    """``run/train_hrnet.py --cfg cfg_file`` with ``opts``; rank 0 then writes the run's report."""
    result = train(_stage_cfg(cfg_file, opts), gpu_id=gpu_id)
    if ddp.is_main_process():
        write_run_report(result["run_dir"], command=["python", "run/train_hrnet.py", "--cfg", cfg_file] + _strs(opts))
    return result


class Pipeline:
    """``Pipeline(cfg, out).run()`` -> the report dict (see module docstring for the stages)."""

    def __init__(self, cfg, out: Optional[Path] = None, gpu_id: int = 0, only: Optional[str] = None,
                 preset: str = ""):
        if only is not None and only not in STAGES:
            raise UserError(f"--only {only!r}: choose one of {', '.join(STAGES)}")
        self.cfg, self.gpu_id, self.only, self.preset = cfg, int(gpu_id), only, preset
        p = cfg.PIPELINE
        self.out = Path(out or cfg.OUTPUT_DIR)
        self.root = Path(cfg.DATASET.ROOT)
        self.lifters = list(p.LIFTERS)
        self.detector_cfg = p.DETECTOR_CFG
        self.weights = {n: self._weight_path(n) for n in self.lifters}
        self.common = ["DATASET.ROOT", str(self.root), "DATASET.DATASET", cfg.DATASET.DATASET, "SEED", str(cfg.SEED)]
        for n, w in self.weights.items():
            self.common += [f"MODEL_3D.WEIGHTS.{n.upper()}", str(w)]
        if cfg.CUSTOM_IMPORTS:          # the stages' configs name the preset's modules too (recorded in config.yaml)
            self.common += ["CUSTOM_IMPORTS", str(list(cfg.CUSTOM_IMPORTS))]
        self.common += _strs(p.OPTS)
        self.runs = plan_runs(cfg)
        self.status: Dict[str, str] = {}        # stage name -> trained | reused | skipped
        self.seconds: Dict[str, float] = {}

    # ------------------------------------------------------------------ helpers
    def _weight_path(self, name: str) -> Path:
        if self.cfg.PIPELINE.TRAIN_LIFTERS:
            return self.out / "lifters" / name / f"{name}_{self.cfg.DATASET.DATASET}.pth"
        return Path(model_3d.lifter_weight_path(self.cfg, name))

    @property
    def index_file(self) -> Path:
        return self.root / "index.json"

    def _wants(self, stage: str) -> bool:
        """Whether ``stage`` may make (train) its outputs in this call."""
        return self.only is None or self.only == stage

    def _stage(self, key: str, stage: str, folder: Path, inputs: Dict, make: Callable, marker: str) -> None:
        """Reuse ``folder`` if made from ``inputs``, else (rank 0 clears it) every rank runs ``make``."""
        if not self._wants(stage):
            if not _on_main(lambda: stage_done(folder, inputs, marker)):
                raise UserError(f"--only {self.only}: stage {key} ({folder}) is not finished or was made from other "
                                f"inputs; run the pipeline without --only first")
            self.status[key] = "reused"
            return
        reused = _on_main(lambda: reuse_stage(folder, inputs, marker))
        ddp.barrier()
        if reused:
            print(f"[pipeline] {key}: reusing {folder}")
            self.status[key] = "reused"
            return
        print(f"[pipeline] {key}: making {folder}")
        make()
        if ddp.is_main_process():
            mark_stage(folder, inputs)
        ddp.barrier()
        self.status[key] = "trained"

    # ------------------------------------------------------------------ stages
    def stage_data(self) -> None:
        p, root = self.cfg.PIPELINE, self.root
        if not self._wants("data"):
            if not self.index_file.is_file():
                raise UserError(f"{self.index_file} not found: run the pipeline's data stage first (without --only)")
            return

        def make():
            kind = self.cfg.DATASET.DATASET
            if p.SYNTHETIC and not self.index_file.is_file():
                run_make_demo_data(["--dst", str(root)] + (["--panoptic"] if p.SYNTHETIC == "panoptic" else [])
                                   + _strs(p.SYNTH_ARGS))
                every = ["--interval", "1"] if kind == "panoptic" else ["--train-interval", "1", "--valid-interval", "1"]
                run_prepare(kind, ["--src", str(root), "--dst", str(root)] + every + _strs(p.PREPARE_ARGS))
                return "made"
            if p.SOURCE:        # the preparation skips itself when its index is up to date
                run_prepare(kind, ["--src", str(p.SOURCE), "--dst", str(root)] + _strs(p.PREPARE_ARGS))
                return "prepared"
            return "reused"

        # checked on every rank, so that no rank waits for a rank 0 that stopped
        if not (p.SYNTHETIC or p.SOURCE or self.index_file.is_file()):
            raise UserError(f"{self.index_file} not found: DATASET.ROOT must be a prepared dataset "
                            f"(run/prepare_h36m.py / prepare_panoptic.py), or set PIPELINE.SOURCE to the raw "
                            f"data or PIPELINE.SYNTHETIC to h36m for the embedded synthetic set")
        self.status["data"] = _on_main(make)
        ddp.barrier()

    def stage_lifters(self) -> None:
        p = self.cfg.PIPELINE
        if not p.TRAIN_LIFTERS:
            missing = [f"{n}: {w}" for n, w in self.weights.items() if not w.is_file()]
            if missing:
                raise UserError(f"PIPELINE.TRAIN_LIFTERS is False but lifter weights are missing ({'; '.join(missing)}): "
                                f"set MODEL_3D.WEIGHTS.<NAME> or PIPELINE.TRAIN_LIFTERS True")
            return
        epochs = dict(zip(self.lifters, p.LIFTER_EPOCHS)) if p.LIFTER_EPOCHS else {}
        cfg_file = p.LIFTER_CFG or self.detector_cfg
        for name in self.lifters:
            folder = self.weights[name].parent
            opts = (_strs(lifter_flag_opts([name], epochs.get(name) or None)) + self.common + _strs(p.LIFTER_OPTS)
                    + ["OUTPUT_DIR", str(folder)])

            def make(name=name, opts=opts):
                train_lifter(_stage_cfg(cfg_file, opts), name, gpu_id=self.gpu_id)

            self._stage(f"lifter_{name}", "lifters", folder,
                        stage_inputs([self.index_file], ["--cfg", cfg_file, "--model_3d", name] + opts),
                        make, self.weights[name].name)

    def stage_pretrain(self) -> Path:
        """-> the detector checkpoint every fine-tuning starts from."""
        p = self.cfg.PIPELINE
        if p.PRETRAINED:
            if not Path(p.PRETRAINED).is_file():
                raise UserError(f"PIPELINE.PRETRAINED {p.PRETRAINED!r} not found: name a detector checkpoint, "
                                f"or '' to pre-train one")
            return Path(p.PRETRAINED)
        folder = self.out / "pretrain"
        first = self.lifters[0]
        cfg_file = p.PRETRAIN_CFG or self.detector_cfg
        opts = (_lifter_list([first]) + _epochs(p.PRETRAIN_EPOCHS) + self.common + _strs(p.PRETRAIN_OPTS)
                + ["OUTPUT_DIR", str(folder)])
        self._stage("pretrain", "pretrain", folder,
                    stage_inputs([self.index_file, self.weights[first]], ["--cfg", cfg_file] + opts),
                    lambda: train_detector(cfg_file, opts, self.gpu_id), "final_state.pth")
        return find_run(folder) / "model_best.pth"

    def run_folder(self, run: GuidedRun) -> Path:
        return self.out / "finetune" / run.name

    def stage_finetune(self, start: Path) -> None:
        p = self.cfg.PIPELINE
        for run in self.runs:
            folder = self.run_folder(run)
            lifters = run.guided_by or self.lifters[:1]     # the baseline validates with the first lifter
            opts = (_lifter_list(lifters) + _epochs(p.FINETUNE_EPOCHS) + _strs(train_flags_to_opts(run.flags))
                    + self.common + _strs(p.FINETUNE_OPTS) + ["TRAIN.FINETUNE", str(start), "OUTPUT_DIR", str(folder)])
            # held-out lifters are validated during training too: all weights are inputs
            inputs = stage_inputs([start, self.index_file] + [self.weights[n] for n in self.lifters],
                                  ["--cfg", self.detector_cfg] + opts)
            self._stage(run.name, "finetune", folder, inputs,
                        lambda o=opts: train_detector(self.detector_cfg, o, self.gpu_id), "final_state.pth")

    def detectors(self, start: Path) -> Dict[str, Optional[Path]]:
        """Validated models: ground-truth 2D (None), the start checkpoint, each fine-tuning's checkpoint."""
        marker = str(self.cfg.PIPELINE.VALID_CHECKPOINT)
        models: Dict[str, Optional[Path]] = {"gt_2d": None, "pretrained": start}
        for run in self.runs:
            models[run.name] = find_run(self.run_folder(run), marker) / marker
        return models

    def stage_validate(self, start: Path) -> Dict[str, Dict]:
        """-> {model name: {'per_lifter': {lifter: {mpjpe, p_mpjpe}}, 'pdj', 'mpjpe', 'p_mpjpe'}}."""
        folder = self.out / "validation"
        models = self.detectors(start)
        weights = [self.weights[n] for n in self.lifters]
        options = ["--cfg", self.detector_cfg] + _lifter_list(self.lifters) + self.common
        inputs = {name: stage_inputs(([ckpt] if ckpt else []) + weights + [self.index_file], options)
                  for name, ckpt in models.items()}

        def cached():
            out = {}
            for name in models:
                path = folder / f"{name}.json"
                try:
                    rec = json.loads(path.read_text()) if path.is_file() else None
                except ValueError:
                    rec = None
                if rec and rec.get("inputs") == inputs[name]:
                    out[name] = rec["metrics"]
            return out

        results = _on_main(cached)
        todo = [n for n in models if n not in results]
        if todo and not self._wants("validate"):
            raise UserError(f"--only {self.only}: validation of {todo} is not up to date; run without --only first")
        if todo:
            cfg = _stage_cfg(self.detector_cfg, self.common + _lifter_list(self.lifters))
            context = evaluation_context(cfg, gpu_id=self.gpu_id)
            for name in todo:
                results[name] = _scores(evaluate_checkpoint(cfg, models[name], context=context))
                if ddp.is_main_process():
                    folder.mkdir(parents=True, exist_ok=True)
                    _write_json(folder / f"{name}.json", {"inputs": inputs[name], "metrics": results[name]})
            ddp.barrier()
        self.status["validate"] = "trained" if todo else "reused"
        return results

    # ------------------------------------------------------------------ the whole
    def run(self) -> Dict:
        t_all = time.time()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:      # torchrun: one group for every stage
            ddp.init_distributed(bool(self.cfg.USE_CUDA), self.gpu_id,
                                 timeout_minutes=float(self.cfg.DIST_TIMEOUT_MINUTES))
        if ddp.is_main_process():
            self.out.mkdir(parents=True, exist_ok=True)
        ddp.barrier()
        report = None
        try:
            steps = (("data", self.stage_data), ("lifters", self.stage_lifters), ("pretrain", self.stage_pretrain))
            start = None
            for stage, fn in steps:
                t = time.time()
                value = fn()
                if stage == "pretrain":
                    start = value
                self.seconds[stage] = time.time() - t
                if self.only == stage:
                    return {"status": dict(self.status)}
            for stage in ("finetune", "validate"):
                t = time.time()
                value = self.stage_finetune(start) if stage == "finetune" else self.stage_validate(start)
                self.seconds[stage] = time.time() - t
                if self.only == stage:
                    return {"status": dict(self.status)}
            results = value
            report = build_report(self.cfg, self.runs, results, self.lifters)
            report["status"] = dict(self.status)
            report["seconds"] = {k: round(v, 1) for k, v in self.seconds.items()}
            report["seconds"]["total"] = round(time.time() - t_all, 1)
            report["preset"] = self.preset
            if ddp.is_main_process():
                write_report(self.out, report, {r.name: self.run_folder(r) for r in self.runs})
                print(f"[pipeline] report: {self.out / 'report.md'} ({report['seconds']['total'] / 60:.1f} min)")
            ddp.barrier()
            return report
        finally:
            ddp.cleanup()


def _scores(res: Dict) -> Dict:
    """What the report keeps of an evaluation: per-lifter MPJPE / P-MPJPE, the pooled ones, PDJ, samples."""
    per = {n: {"mpjpe": float(v["mpjpe"]), "p_mpjpe": float(v["p_mpjpe"])} for n, v in res["per_lifter"].items()}
    return {"per_lifter": per, "mpjpe": float(res["mpjpe"]), "p_mpjpe": float(res["p_mpjpe"]),
            "pdj": float(res["pdj"]), "num_samples": int(res["num_samples"])}


# ---------------------------------------------------------------------------------------------- report
def improvement_pct(base: float, value: float) -> float:
    """How much lower ``value`` is than ``base``, in percent of ``base`` (positive = better)."""
    return 100.0 * (base - value) / base


def build_report(cfg, runs: Sequence[GuidedRun], results: Dict[str, Dict], lifters: Sequence[str]) -> Dict:
    """The report.json content from the validation results (module docstring; README 'Reproduction')."""
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
    return report


def claims(report: Dict) -> Dict:
    """The issue's three figures: each lifter's GT-2D MPJPE over SimpleBaseline's; each single-lifter
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


def _write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def report_markdown(report: Dict, curves: Dict[str, str]) -> List[str]:
    lifters = report["lifters"]
    lines = [f"# L2D-Pose reproduction ({report['dataset']})", ""]
    if report.get("preset"):
        lines += [f"Preset: `{report['preset']}`. MPJPE in mm on the validation split; `*` = held-out lifter "
                  f"(evaluated, never guided the run); improvements are over 2D-only fine-tuning.", ""]
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
    if "3d_guided" in report:
        lines += ["", "## make demo table", "", "| model | MPJPE (mm) | P-MPJPE (mm) | PDJ@0.2 (%) |", "|---|---:|---:|---:|"]
        for key, label in (("gt_2d", "lifter on ground-truth 2D"), ("pretrained", "pre-trained detector"),
                           ("2d_only", "2D-only fine-tuning"), ("3d_guided", "3D-guided fine-tuning")):
            r = report[key]
            lines.append(f"| {label} | {r['mpjpe']:.2f} | {r['p_mpjpe']:.2f} | {r['pdj']:.2f} |")
    secs = report.get("seconds") or {}
    if secs:
        lines += ["", "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()), ""]
    lines += ["", "![results](report.png)", ""]
    for name, rel in curves.items():
        lines += [f"## {name}: training curves", "", f"![{name} curves]({rel})", ""]
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
    _write_json(out / "report.json", report)
    write_text_atomic(out / "report.md", "\n".join(report_markdown(report, curves)).rstrip() + "\n")


def reproduce(preset: str, out=None, data_root=None, fresh: bool = False, only=None, gpu_id: int = 0,
              opts: Sequence = ()) -> Dict:
    """Load ``preset`` (+ ``opts``; ``data_root`` overrides DATASET.ROOT) and run the pipeline."""
    extra = list(opts) + (["DATASET.ROOT", str(data_root)] if data_root else [])
    cfg = load_preset(preset, extra)
    pipe = Pipeline(cfg, Path(out) if out else None, gpu_id=gpu_id, only=only, preset=preset)
    if fresh and ddp.is_main_process() and pipe.out.exists():
        shutil.rmtree(pipe.out)
    return pipe.run()
