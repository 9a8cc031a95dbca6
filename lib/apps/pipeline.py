"""One reproduction, raw data to the paper-style tables, as named resumable stages (run/reproduce.py).

    data       generate the embedded synthetic set (PIPELINE.SYNTHETIC) or prepare PIPELINE.SOURCE
    lifters    train every lifter of PIPELINE.LIFTERS on ground-truth 2D -> 3D
    pretrain   2D-only pre-training of the detector (skipped when PIPELINE.PRETRAINED names one)
    finetune   from that one checkpoint, the same epochs each: 2D-only (the baseline), one run guided
               by each lifter of PIPELINE.SINGLE, and with PIPELINE.LEAVE_ONE_OUT one multi-model run
               per lifter, guided by all the others (the one left out is the held-out lifter)
    validate   every detector (and ground-truth 2D) with every lifter; each detector's validation 2D
               is also written as VideoPose3D's file, <out>/exports/data_2d_<dataset>_<model>.npz
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
from lib.apps.detections import export_from_results
from lib.apps.pipeline_report import TAXONOMY_KEYS, build_report, combine_seeds, write_json, write_report
from lib.apps.report import write_run_report
from lib.apps.stages import find_run, mark_stage, reuse_stage, stage_done, stage_inputs
from lib.config import load_cfg
from lib.config.flags import lifter_flag_opts, parse_lifter_list, train_flags_to_opts
from lib.core.skeleton import get_skeleton
from lib.datasets.commands import run_make_demo_data, run_prepare
from lib.engine import distributed as ddp
from lib.engine.evaluator import evaluate_checkpoint, evaluation_context
from lib.engine.lifter_trainer import train_lifter
from lib.engine.trainer import train
from lib.eval.error_taxonomy import error_taxonomy
from lib.utils.errors import UserError
from lib.utils.machine import machine_info, machine_text

STAGES = ("data", "lifters", "pretrain", "finetune", "validate", "report")


@dataclass
class GuidedRun:
    """One fine-tuning: ``guided_by`` empty = the 2D-only baseline."""
    name: str
    guided_by: List[str]
    held_out: List[str]
    flags: List[str] = field(default_factory=list)


# written next to a generated synthetic set: the generator's arguments it was made with
SYNTH_RECORD = "synthetic_args.json"


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
        # PIPELINE.SEEDS: one pre-training, fine-tunings and validation per seed (seed_<s>/...); [] = SEED alone
        self.seeds = [int(x) for x in p.SEEDS] or [int(cfg.SEED)]
        self.multi_seed = bool(p.SEEDS)
        self.seed = self.seeds[0]
        self.status: Dict[str, str] = {}        # stage name -> trained | reused | skipped
        self.seconds: Dict[str, float] = {}
        self._context = None                    # the evaluation set, built at the first validation

    # ------------------------------------------------------------------ helpers
    def _weight_path(self, name: str) -> Path:
        if self.cfg.PIPELINE.TRAIN_LIFTERS:
            return self.out / "lifters" / name / f"{name}_{self.cfg.DATASET.DATASET}.pth"
        return Path(model_3d.lifter_weight_path(self.cfg, name))

    @property
    def index_file(self) -> Path:
        return self.root / "index.json"

    @property
    def seed_dir(self) -> Path:
        """Where the current seed's detectors go: ``<out>/seed_<s>`` with PIPELINE.SEEDS, else ``<out>``."""
        return self.out / f"seed_{self.seed}" if self.multi_seed else self.out

    def _key(self, name: str) -> str:
        return f"seed_{self.seed}/{name}" if self.multi_seed else name

    def _seed_opts(self) -> List[str]:
        return ["SEED", str(self.seed)]

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

        synth_args = (["--panoptic"] if p.SYNTHETIC == "panoptic" else []) + _strs(p.SYNTH_ARGS)
        record = root / SYNTH_RECORD

        def make():
            kind = self.cfg.DATASET.DATASET
            if p.SYNTHETIC and not self.index_file.is_file():
                run_make_demo_data(["--dst", str(root)] + synth_args)
                every = ["--interval", "1"] if kind == "panoptic" else ["--train-interval", "1", "--valid-interval", "1",
                                                                          "--test-interval", "1"]
                plan = root / "splits.json"           # the generator's split plan: prepare all its splits
                if plan.is_file():
                    every += ["--splits", ",".join(json.loads(plan.read_text()).get("subjects", {}))]
                run_prepare(kind, ["--src", str(root), "--dst", str(root)] + every + _strs(p.PREPARE_ARGS))
                write_json(record, {"arguments": synth_args})
                return "made"
            if p.SOURCE:        # the preparation skips itself when its index is up to date
                run_prepare(kind, ["--src", str(p.SOURCE), "--dst", str(root)] + _strs(p.PREPARE_ARGS))
                return "prepared"
            return "reused"

        # checked on every rank, so that no rank waits for a rank 0 that stopped
        if p.SYNTHETIC and self.index_file.is_file() and record.is_file():
            try:
                made_with = json.loads(record.read_text()).get("arguments")
            except (ValueError, AttributeError):
                made_with = f"unreadable {record}"
            if made_with != synth_args:
                # reusing it would run a preset on another design's data without a word
                raise UserError(f"{root} was generated with {made_with}, not with this preset's PIPELINE.SYNTH_ARGS "
                                f"{synth_args}: delete {root} to have it made again, or set DATASET.ROOT "
                                f"to another folder")
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
        folder = self.seed_dir / "pretrain"
        first = self.lifters[0]
        cfg_file = p.PRETRAIN_CFG or self.detector_cfg
        opts = (_lifter_list([first]) + _epochs(p.PRETRAIN_EPOCHS) + self.common + self._seed_opts()
                + _strs(p.PRETRAIN_OPTS) + ["OUTPUT_DIR", str(folder)])
        self._stage(self._key("pretrain"), "pretrain", folder,
                    stage_inputs([self.index_file, self.weights[first]], ["--cfg", cfg_file] + opts),
                    lambda: train_detector(cfg_file, opts, self.gpu_id), "final_state.pth")
        return find_run(folder) / "model_best.pth"

    def run_folder(self, run: GuidedRun) -> Path:
        return self.seed_dir / "finetune" / run.name

    def stage_finetune(self, start: Path) -> None:
        p = self.cfg.PIPELINE
        for run in self.runs:
            folder = self.run_folder(run)
            lifters = run.guided_by or self.lifters[:1]     # the baseline validates with the first lifter
            opts = (_lifter_list(lifters) + _epochs(p.FINETUNE_EPOCHS) + _strs(train_flags_to_opts(run.flags))
                    + self.common + self._seed_opts() + _strs(p.FINETUNE_OPTS)
                    + ["TRAIN.FINETUNE", str(start), "OUTPUT_DIR", str(folder)])
            # held-out lifters are validated during training too: all weights are inputs
            inputs = stage_inputs([start, self.index_file] + [self.weights[n] for n in self.lifters],
                                  ["--cfg", self.detector_cfg] + opts)
            self._stage(self._key(run.name), "finetune", folder, inputs,
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
        folder = self.seed_dir / "validation"
        models = self.detectors(start)
        weights = [self.weights[n] for n in self.lifters]
        options = (["--cfg", self.detector_cfg] + _lifter_list(self.lifters) + self.common
                   + ["--split", self.report_split, "--taxonomy"])
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
                export = (rec or {}).get("metrics", {}).get("export")
                if rec and rec.get("inputs") == inputs[name] and (not (export or {}).get("path")
                                                                  or Path(export["path"]).is_file()):
                    out[name] = rec["metrics"]
            return out

        results = _on_main(cached)
        todo = [n for n in models if n not in results]
        if todo and not self._wants("validate"):
            raise UserError(f"--only {self.only}: validation of {todo} is not up to date; run without --only first")
        if todo:
            context = self.evaluation_set()
            for name in todo:
                # each detector's 2D of the report split is also written as VideoPose3D's file (exports/)
                detector, cfg = models[name], context.cfg
                res = evaluate_checkpoint(cfg, detector, context=context, return_predictions=detector is not None)
                results[name] = _scores(res)
                if detector is not None and ddp.is_main_process():
                    export = self.seed_dir / "exports" / f"data_2d_{cfg.DATASET.DATASET}_{name}.npz"
                    results[name]["export"] = export_from_results(cfg, export, res, context.loader.dataset,
                                                                  source=str(detector))
                if ddp.is_main_process():
                    folder.mkdir(parents=True, exist_ok=True)
                    write_json(folder / f"{name}.json", {"inputs": inputs[name], "metrics": results[name]})
            ddp.barrier()
        self.status[self._key("validate")] = "trained" if todo else "reused"
        return results

    @property
    def report_split(self) -> str:
        """The split the report's figures come from: PIPELINE.REPORT_SET, else DATASET.TEST_SET (on which the
        fine-tunings also choose their checkpoint, as the original does)."""
        return str(self.cfg.PIPELINE.REPORT_SET or self.cfg.DATASET.TEST_SET)

    def evaluation_set(self):
        """The report split and every lifter, built once for all the validations of this call."""
        if self._context is None:
            cfg = _stage_cfg(self.detector_cfg, self.common + _lifter_list(self.lifters))
            self._context = evaluation_context(cfg, gpu_id=self.gpu_id, split=self.report_split)
        return self._context

    # ------------------------------------------------------------------ the whole
    def _timed(self, stage: str, fn: Callable):
        t = time.time()
        value = fn()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.time() - t
        return value

    def _one_seed(self) -> Optional[Dict]:
        """Pre-training, fine-tunings and validation of the current seed -> its report (None with --only)."""
        start = self._timed("pretrain", self.stage_pretrain)
        if self.only == "pretrain":
            return None
        self._timed("finetune", lambda: self.stage_finetune(start))
        if self.only == "finetune":
            return None
        results = self._timed("validate", lambda: self.stage_validate(start))
        if self.only == "validate":
            return None
        return build_report(self.cfg, self.runs, results, self.lifters)

    def run(self) -> Dict:
        t_all = time.time()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:      # torchrun: one group for every stage
            ddp.init_distributed(bool(self.cfg.USE_CUDA), self.gpu_id,
                                 timeout_minutes=float(self.cfg.DIST_TIMEOUT_MINUTES))
        if ddp.is_main_process():
            self.out.mkdir(parents=True, exist_ok=True)
        ddp.barrier()
        try:
            for stage, fn in (("data", self.stage_data), ("lifters", self.stage_lifters)):
                self._timed(stage, fn)
                if self.only == stage:
                    return {"status": dict(self.status)}
            per_seed = {}
            for seed in self.seeds:
                self.seed = seed
                per_seed[seed] = self._one_seed()
            if self.only is not None:
                return {"status": dict(self.status)}
            p = self.cfg.PIPELINE
            report = (combine_seeds(per_seed, p.SINGLE[0] if p.SINGLE else None) if self.multi_seed
                      else per_seed[self.seeds[0]])
            report.update(status=dict(self.status), preset=self.preset, seed=self.seeds[0], out=str(self.out),
                          report_split=self.report_split, machine=machine_text(machine_info(self.evaluation_set().device)))
            report["seconds"] = {k: round(v, 1) for k, v in self.seconds.items()}
            report["seconds"]["total"] = round(time.time() - t_all, 1)
            self.seed = self.seeds[0]
            if ddp.is_main_process():
                write_report(self.out, report, {r.name: self.run_folder(r) for r in self.runs})
                print(f"[pipeline] report: {self.out / 'report.md'} ({report['seconds']['total'] / 60:.1f} min)")
            ddp.barrier()
            return report
        finally:
            ddp.cleanup()


def _scores(res: Dict) -> Dict:
    """What the report keeps of an evaluation: per-lifter MPJPE / P-MPJPE, the pooled ones, PDJ, samples,
    and for a detector the error diagnosis of its 2D joints (good / jitter / inversion / miss)."""
    per = {n: {"mpjpe": float(v["mpjpe"]), "p_mpjpe": float(v["p_mpjpe"])} for n, v in res["per_lifter"].items()}
    out = {"per_lifter": per, "mpjpe": float(res["mpjpe"]), "p_mpjpe": float(res["p_mpjpe"]),
           "pdj": float(res["pdj"]), "num_samples": int(res["num_samples"]), "protocol": res.get("protocol")}
    if "pred_2d" in res:
        shares = error_taxonomy(res["pred_2d"], res["gt_2d"], get_skeleton(res["dataset"]).flip_pairs)
        out["taxonomy"] = {k: shares[k] for k in TAXONOMY_KEYS}
    return out


def reproduce(preset: str, out=None, data_root=None, fresh: bool = False, only=None, gpu_id: int = 0,
              opts: Sequence = ()) -> Dict:
    """Load ``preset`` (+ ``opts``; ``data_root`` overrides DATASET.ROOT) and run the pipeline."""
    extra = list(opts) + (["DATASET.ROOT", str(data_root)] if data_root else [])
    cfg = load_preset(preset, extra)
    pipe = Pipeline(cfg, Path(out) if out else None, gpu_id=gpu_id, only=only, preset=preset)
    if fresh and ddp.is_main_process() and pipe.out.exists():
        shutil.rmtree(pipe.out)
    return pipe.run()
