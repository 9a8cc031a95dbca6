"""The L2D training run (docs/original.md#training-setup): :func:`train`, one plain loop of epochs.

Per epoch (``epoch`` = 0 .. TRAIN.EPOCHS inclusive, docs/original.md#quirks, quirk 2)::

    train_one_epoch (lib/engine/train_epoch.py): heatmaps = detector(images);
        loss, terms = objective(...); backward; optimizer step
    scheduler.step()   (MultiStepLR numbers; x LR_BUMP_FACTOR after epoch LR_BUMP_EPOCH's step)
    validate -> best (training lifters' MPJPE, or highest PDJ in 2D-only mode) / best cross
    write checkpoint.pth (everything to resume), model_best*.pth, history.json, curves.png
        (and epoch_<k>.pth, the detector's weights, with TRAIN.KEEP_EPOCH_WEIGHTS)

Multi-GPU (``torchrun``, ``WORLD_SIZE`` > 1; helpers in :mod:`lib.engine.distributed`): the detector
is wrapped in DistributedDataParallel (optionally with synchronised BatchNorm, TRAIN.SYNC_BN, which
also works on the CPU with gloo), the training split is sharded by a ``DistributedSampler``
re-shuffled every epoch, seeds are ``SEED + rank``, the DWA history takes the per-lifter 3D losses
averaged over the ranks, the non-finite check is collective, logged means cover all ranks,
validation is sharded and gathered in dataset order (every metric equals the single-process
value), and only rank 0 logs and writes. With the same global batch, seed and SYNC_BN a run on N
processes follows the single-process run to float round-off.
"""
import json
import math
import os
import pprint
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from lib.core.objective import L2DObjective
from lib.engine import checkpoint as ckpt_io
from lib.engine import distributed as ddp
from lib.engine.builders import (build_detector, build_lifter_sets, lr_factor, make_loader, make_optimizer,
                                 make_scheduler, place_detector, train_dataset_view, train_sampler,
                                 valid_loader)
from lib.engine.evaluator import results_for_json, validate
from lib.engine.resume import (LR_KEYS, apply_lr_schedule, check_resume_options, describe, missing_checkpoint,
                               resume_command)
from lib.engine.run_dir import run_dir as make_run_dir
from lib.engine.train_epoch import NonFiniteLossError, train_one_epoch
from lib.utils.atomic_io import atomic_save, write_text_atomic
from lib.utils.device import apply_tf32
from lib.utils.errors import UserError
from lib.utils.logger import close_logger, setup_logger
from lib.utils.plots import plot_curves

__all__ = ["train", "RunExistsError", "NonFiniteLossError", "Terminated", "is_new_best"]


class RunExistsError(UserError, ValueError):
    """The run folder already holds a finished run (model_best.pth) and --resume was not given."""


# ----------------------------------------------------------------------------- bookkeeping
def is_new_best(perf: float, best: float, higher_is_better: bool, non_finite: int = 0) -> bool:
    """Does a validation with metric ``perf`` replace ``best``?

    Never when any prediction was non-finite (``non_finite`` samples) or ``perf`` is NaN/inf. PDJ
    (higher is better) must also exceed 0: nothing detected means a diverged detector, and the
    original's initial best of -1 let such a model become model_best.pth (older checkpoints still
    carry that -1, hence the max). MPJPE must be below ``best``.
    """
    if non_finite or not math.isfinite(perf):
        return False
    return perf > max(best, 0.0) if higher_is_better else perf < best


def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(json_safe(obj), indent=1, allow_nan=False, default=float))


def json_safe(obj):
    """``obj`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _state_dict_cpu(model):
    return {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}


@dataclass
class Run:
    """What one training run is made of, and where it stands (the part that a checkpoint restores)."""
    cfg: object
    device: torch.device
    rank: int
    world: int
    out_dir: Path
    log: object
    model: torch.nn.Module = None
    objective: L2DObjective = None
    optimizer: object = None
    scheduler: object = None
    scaler: object = None
    sampler: object = None
    train_loader: object = None
    valid_loader: object = None
    lifters: Dict = field(default_factory=dict)
    cross_lifters: Dict = field(default_factory=dict)
    skipped: list = field(default_factory=list)
    writer: object = None
    begin_epoch: int = 0
    best_perf: float = math.inf
    best_cross: float = math.inf
    history: Dict = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def use_3d(self) -> bool:
        return bool(self.cfg.LOSS.LOSS_3D)


# ----------------------------------------------------------------------------- setting up
def _open_run(cfg, out_dir: Path, resume: bool, is_main: bool, log):
    """Load and compare the checkpoint before anything is written (a refusal leaves the run as it
    was), then write config.yaml. -> (checkpoint state or None, safe resume changes)."""
    ckpt_path = out_dir / "checkpoint.pth"
    state, changes = None, {}
    if resume:
        state = ckpt_io.load_checkpoint(ckpt_path, map_location="cpu")
        changes = check_resume_options(state.get("config"), cfg, ckpt_path)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = cfg.dump()
        resumes = list((state or {}).get("history", {}).get("resumes", []))
        if changes:
            resumes.append({"epoch": int(state["epoch"]), "changed": {k: list(v) for k, v in changes.items()}})
        if resumes:         # the YAML stays loadable; the comments say which values came later
            text += "".join(f"# --resume at epoch {r['epoch']} changed: {describe(r['changed'])}\n" for r in resumes)
        (out_dir / "config.yaml").write_text(text)
    log.info("config:\n%s", cfg.dump())
    return state, changes


def _build(run: Run, build_dataset) -> None:
    """Data, detector (DDP-wrapped under torchrun), lifters, objective, optimizer and scheduler."""
    cfg, device, log = run.cfg, run.device, run.log
    torch.backends.cudnn.benchmark = bool(cfg.CUDNN.BENCHMARK)
    torch.backends.cudnn.deterministic = bool(cfg.CUDNN.DETERMINISTIC)
    torch.backends.cudnn.enabled = bool(cfg.CUDNN.ENABLED)
    ddp.seed_per_rank(int(cfg.SEED), run.rank)   # rank 0 = the single-process stream; DDP broadcasts its init

    train_set = build_dataset(cfg, cfg.DATASET.TRAIN_SET, True)
    valid_set = build_dataset(cfg, cfg.DATASET.TEST_SET, False)
    run.sampler = train_sampler(train_set, cfg, run.rank, run.world)
    run.train_loader = make_loader(train_dataset_view(train_set, cfg, log), cfg.TRAIN.BATCH_SIZE_PER_GPU,
                                   run.sampler, cfg, device)
    run.valid_loader = valid_loader(cfg, valid_set, device, run.rank, run.world)
    log.info("data: %d training / %d validation samples (%s); loader workers %d training, %d validation "
             "(WORKERS %d, capped by this process's share of the CPUs)", len(train_set), len(valid_set),
             cfg.DATASET.ROOT, run.train_loader.num_workers, run.valid_loader.num_workers, int(cfg.WORKERS))

    model = place_detector(build_detector(cfg, log), cfg, device)
    if run.world > 1:
        if bool(cfg.TRAIN.SYNC_BN):       # BatchNorm over the global batch (GPU: torch's; CPU: gloo)
            model = ddp.convert_sync_batchnorm(model, device)
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    run.model = model
    if run.use_3d:
        run.lifters, run.cross_lifters, run.skipped = build_lifter_sets(cfg, train_set.stats, log, device=device)
    run.objective = L2DObjective(cfg, run.lifters).to(device)
    ddp.make_dwa_global(run.objective)    # DWA from the global-batch 3D losses: same weights on every rank
    run.optimizer = make_optimizer(_unwrap(model), cfg)
    run.scheduler = make_scheduler(run.optimizer, cfg)
    run.scaler = torch.amp.GradScaler(device.type) if str(cfg.TRAIN.AMP) == "fp16" else None
    if run.is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
            run.writer = SummaryWriter(log_dir=str(run.out_dir / "tensorboard"))
        except Exception:   # noqa: BLE001 - tensorboard is optional
            run.writer = None
    run.begin_epoch = int(cfg.TRAIN.BEGIN_EPOCH)
    run.best_perf = 0.0 if not run.use_3d else math.inf     # 2D-only: highest PDJ, which must beat 0
    run.history = {"run_dir": str(run.out_dir), "mode": "3d" if run.use_3d else "2d_only",
                   "lifters": list(run.lifters), "cross_lifters": list(run.cross_lifters), "epochs": []}


def _restore(run: Run, state: dict, changes: dict) -> None:
    """Everything of ``checkpoint.pth`` back into ``run``: weights, optimizer, scheduler, scaler,
    objective (DWA history, dropout RNG), best values, history and every RNG stream."""
    cfg, log = run.cfg, run.log
    _unwrap(run.model).load_state_dict(state["state_dict"], strict=True)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.scaler is not None and state.get("scaler"):
        run.scaler.load_state_dict(state["scaler"])
    run.objective.load_state_dict(state["objective"])
    run.begin_epoch = int(state["epoch"])
    run.best_perf, run.best_cross = float(state["best_perf"]), float(state["best_cross_perf"])
    run.history = state["history"]
    per_rank = state.get("rng_per_rank") or []
    if len(per_rank) == run.world:
        ckpt_io.set_rng_state(per_rank[run.rank])
    else:                          # saved by another world size: rank 0's stream, offset per rank
        ckpt_io.set_rng_state(state["rng"])
        if run.rank > 0:
            ddp.seed_per_rank(int(cfg.SEED) + 1000 * run.begin_epoch, run.rank)
    if any(k in changes for k in LR_KEYS):
        apply_lr_schedule(run.optimizer, run.scheduler, cfg, lr_factor)
    if changes:
        run.history.setdefault("resumes", []).append(
            {"epoch": run.begin_epoch, "changed": {k: list(v) for k, v in changes.items()}})
        log.info("=> --resume with changed options (applied): %s; learning rate now %.4e",
                 describe(changes), run.optimizer.param_groups[0]["lr"])
    log.info("=> resumed from %s: continuing at epoch %d (best %.4f, best cross %.4f)",
             run.out_dir / "checkpoint.pth", run.begin_epoch, run.best_perf, run.best_cross)


# ----------------------------------------------------------------------------- one epoch's end
def _validate(run: Run, epoch: int):
    """Validate (sharded, gathered), update the best values. -> (results, perf, history entry)."""
    results = validate(run.cfg, run.valid_loader, _unwrap(run.model), run.device, run.lifters, run.cross_lifters,
                       beta=float(run.cfg.LOSS.BETA), ensemble=bool(run.cfg.TEST.ENSEMBLE))
    non_finite = int(results.get("non_finite_samples", 0))
    if run.use_3d:
        perf = results["mpjpe"]                      # training lifters (or their median ensemble)
        cross_perf = results["cross"]["mpjpe"] if results["cross"] else None
    else:
        perf, cross_perf = results["pdj"], None
    is_best = is_new_best(perf, run.best_perf, not run.use_3d, non_finite)
    is_best_cross = cross_perf is not None and is_new_best(cross_perf, run.best_cross, False, non_finite)
    if non_finite:
        run.log.warning("epoch %d: %d of %d validation samples have non-finite heatmaps or joints (the detector "
                        "diverged?): not a candidate for model_best", epoch, non_finite, results["num_samples"])
    if is_best:
        run.best_perf = perf
    if is_best_cross:
        run.best_cross = cross_perf
    unmasked = results.get("unmasked") or {}
    valid = {"pdj": results["pdj"], "mpjpe": results["mpjpe"], "p_mpjpe": results["p_mpjpe"],
             "non_finite_samples": non_finite, "mpjpe_unmasked": unmasked.get("mpjpe"),
             "p_mpjpe_unmasked": unmasked.get("p_mpjpe"),
             "per_lifter": {n: v["mpjpe"] for n, v in results["per_lifter"].items()},
             "cross_mpjpe": cross_perf, "cross_p_mpjpe": results["cross"]["p_mpjpe"] if results["cross"] else None,
             "ensemble_mpjpe": results["ensemble"]["mpjpe"] if results["ensemble"] else None,
             "protocol": results.get("protocol")}
    entry = {"epoch": epoch, "valid": valid, "best": bool(is_best), "best_cross": bool(is_best_cross)}
    return results, perf, entry


def _log_epoch(run: Run, epoch: int, results: dict, entry: dict, stats: dict, lr_now: float) -> None:
    log = run.log
    if run.use_3d:
        log.info("=> saving checkpoint to %s --> best: %s (PDJ@0.2: %.2f, MPJPE: %.2fmm, P-MPJPE: %.2fmm)",
                 run.out_dir, entry["best"], results["pdj"], results["mpjpe"], results["p_mpjpe"])
        if results.get("unmasked"):
            log.info("(DATASET.MASK_LOW_CONFIDENCE: low-confidence joints left out above; with them: "
                     "MPJPE %.2fmm, P-MPJPE %.2fmm)", results["unmasked"]["mpjpe"], results["unmasked"]["p_mpjpe"])
        if len(results["per_lifter"]) > 1:
            for n, v in results["per_lifter"].items():
                log.info("%s\t Test MPJPE: %.2fmm%s", n, v["mpjpe"], " (held out)" if v["held_out"] else "")
        if results["cross"]:
            log.info("held-out lifters (%s): MPJPE %.2fmm, P-MPJPE %.2fmm --> best cross: %s",
                     "+".join(results["cross"]["lifters"]), results["cross"]["mpjpe"],
                     results["cross"]["p_mpjpe"], entry["best_cross"])
    else:
        log.info("=> saving checkpoint to %s --> best: %s (PDJ@0.2: %.2f)", run.out_dir, entry["best"], results["pdj"])
    log.info("epoch %d summary: loss %.5f (2d %.5f, 3d %.5f), accuracy_2d %.3f, %.1f samples/s, %.1fs, lr %.4e",
             epoch, stats.get("total", float("nan")), stats.get("weighted_2d", float("nan")),
             stats.get("weighted_3d", float("nan")), stats["accuracy_2d"], stats["samples_per_s"],
             stats["seconds"], lr_now)


def _save_epoch(run: Run, epoch: int, results: dict, perf: float, entry: dict, rng_per_rank) -> None:
    """Rank 0: model_best*.pth with their metrics, checkpoint.pth, history.json, curves, tensorboard."""
    cfg, out_dir = run.cfg, run.out_dir
    weights = _state_dict_cpu(run.model)
    if cfg.TRAIN.KEEP_EPOCH_WEIGHTS:      # every epoch's detector, to score the whole trajectory afterwards
        atomic_save(weights, out_dir / f"epoch_{epoch}.pth")
    if entry["best"]:
        atomic_save(weights, out_dir / "model_best.pth")
        write_json(out_dir / "metrics.json", {**results_for_json(results), "epoch": epoch,
                                              "source": "train_hrnet (model_best.pth)"})
        if len(results["per_sample_mpjpe"]) > 1:
            np.savez(out_dir / "test_mpjpe_per_sample.npz", **results["per_sample_mpjpe"])
    if entry["best_cross"]:
        atomic_save(weights, out_dir / "model_best_cross.pth")
        write_json(out_dir / "metrics_cross.json", {**results_for_json(results), "epoch": epoch,
                                                    "source": "train_hrnet (model_best_cross.pth)"})
    write_json(out_dir / "valid_last.json", {**results_for_json(results), "epoch": epoch})
    state = {"format": ckpt_io.TRAIN_FORMAT, "version": ckpt_io.TRAIN_VERSION, "epoch": epoch + 1,
             "model": f"{cfg.MODEL.NAME}_{cfg.DATASET.DATASET}", "state_dict": weights,
             "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
             "scaler": run.scaler.state_dict() if run.scaler is not None else None,
             "best_perf": float(run.best_perf), "best_cross_perf": float(run.best_cross), "perf": float(perf),
             "objective": run.objective.state_dict(), "rng": ckpt_io.rng_state(), "rng_per_rank": rng_per_rank,
             "history": run.history, "config": ckpt_io.plain(cfg), "config_yaml": cfg.dump()}
    atomic_save(ckpt_io.plain(state), out_dir / "checkpoint.pth")
    write_json(out_dir / "history.json", run.history)
    try:
        plot_curves(run.history, out_dir / "curves.png")
    except Exception as err:   # noqa: BLE001 - a plot must never stop training
        run.log.warning("could not draw curves.png: %s", err)
    if run.writer is not None:
        for k, v in entry["train"].items():
            run.writer.add_scalar(f"train/{k}", v, epoch)
        for k, v in entry["valid"].items():
            if isinstance(v, (int, float)) and v is not None:
                run.writer.add_scalar(f"valid/{k}", v, epoch)
        run.writer.add_scalar("train/lr", entry["lr"], epoch)
        run.writer.flush()


def _epoch(run: Run, epoch: int, global_step: int) -> int:
    """Train, step the schedule, validate, log and save one epoch; -> the optimizer steps it made."""
    cfg, log = run.cfg, run.log
    if hasattr(run.sampler, "set_epoch"):
        run.sampler.set_epoch(epoch)
    lr_now = run.optimizer.param_groups[0]["lr"]
    stats = train_one_epoch(epoch, run.model, run.objective, run.train_loader, run.optimizer, run.scaler,
                            run.device, cfg, log, run.is_main, run.writer, global_step)
    run.scheduler.step()
    if epoch == int(cfg.TRAIN.LR_BUMP_EPOCH):
        lr = run.optimizer.param_groups[0]["lr"]
        log.info("=> end of epoch %d: learning rate multiplied by %g (TRAIN.LR_BUMP_FACTOR): %.4e -> %.4e",
                 epoch, float(cfg.TRAIN.LR_BUMP_FACTOR), lr / float(cfg.TRAIN.LR_BUMP_FACTOR), lr)
    # replicas: rank 0's BatchNorm statistics everywhere, then check nothing drifted apart
    ddp.broadcast_buffers(_unwrap(run.model))
    replica_diff = ddp.max_replica_difference(_unwrap(run.model)) if run.world > 1 else None
    if replica_diff:
        log.warning("replicas differ after epoch %d: max |w - w_rank0| = %.3g", epoch, replica_diff)

    results, perf, entry = _validate(run, epoch)
    entry = {"epoch": epoch, "lr": lr_now, "train": stats, **entry}
    if run.world > 1:
        entry["world_size"] = run.world
        entry["replica_max_abs_diff"] = replica_diff
    run.history["epochs"].append(json_safe(entry))
    run.history["best_perf"] = run.best_perf if math.isfinite(run.best_perf) else None
    run.history["best_cross_perf"] = run.best_cross if math.isfinite(run.best_cross) else None
    _log_epoch(run, epoch, results, entry, stats, lr_now)
    rng_per_rank = ddp.all_gather_object(ckpt_io.rng_state()) if run.world > 1 else None   # collective
    if run.is_main:
        _save_epoch(run, epoch, results, perf, entry, rng_per_rank)
    if run.device.type == "cuda":
        torch.cuda.empty_cache()
    return stats["steps"]


def _train(run: Run, resume: bool, args, build_dataset, progress) -> Dict:
    cfg, log = run.cfg, run.log
    if args:
        log.info("args:\n%s", pprint.pformat(args))
    log.info("run folder: %s (device %s, world size %d)", run.out_dir, run.device, run.world)
    state, changes = _open_run(cfg, run.out_dir, resume, run.is_main, log)
    _build(run, build_dataset)
    if state is not None:
        _restore(run, state, changes)
    global_step = sum(e.get("train", {}).get("steps", 0) for e in run.history["epochs"])
    for epoch in range(run.begin_epoch, int(cfg.TRAIN.EPOCHS) + 1):
        progress["epoch"] = epoch
        global_step += _epoch(run, epoch, global_step)
    if run.is_main:
        atomic_save(_state_dict_cpu(run.model), run.out_dir / "final_state.pth")
    if run.writer is not None:
        run.writer.close()
    ddp.barrier()                          # no rank leaves before rank 0 has written everything
    if run.is_main and not (run.out_dir / "model_best.pth").exists():
        log.warning("no epoch qualified as best (PDJ 0, or non-finite validation): no model_best.pth written")
    log.info("=> done: %s (best %s %.4f)", run.out_dir, "MPJPE" if run.use_3d else "PDJ", run.best_perf)
    return {"run_dir": run.out_dir, "best_perf": run.best_perf, "best_cross_perf": run.best_cross,
            "history": run.history, "lifters": list(run.lifters), "cross_lifters": list(run.cross_lifters),
            "skipped_lifters": run.skipped}


# ----------------------------------------------------------------------------- the run
class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or torchrun's stop) turned into an interrupt, so the run ends as on Ctrl-C."""


@contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; restored after)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:     # a forked DataLoader worker inherited this: end as it would without it
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _log_stop(log, err: Optional[BaseException], command: str, epoch_note: str) -> None:
    """The run log's last line: why the run stopped (finished, non-finite loss, interrupted, error)."""
    if err is None:
        log.info("=> run stopped: finished%s", epoch_note)
    elif isinstance(err, NonFiniteLossError):
        log.error("=> run stopped: non-finite loss%s: %s", epoch_note, err)
    elif isinstance(err, KeyboardInterrupt):
        what = "SIGTERM" if isinstance(err, Terminated) else "SIGINT (Ctrl-C)"
        log.error("=> run stopped: interrupted by %s%s; the last checkpoint is kept. Resume with: %s",
                  what, epoch_note, command)
    else:
        message = " ".join(str(err).split()) or "(no message)"
        log.error("=> run stopped: error%s: %s: %s", epoch_note, type(err).__name__, message)


def train(cfg, *, gpu_id: int = 0, resume: Optional[bool] = None, args: Optional[dict] = None,
          argv: Optional[Sequence[str]] = None) -> Dict:
    """Run a whole L2D training as configured by ``cfg``; returns a summary dict.

    Raises :class:`RunExistsError` when the run folder already holds ``model_best.pth`` and
    ``resume`` is off, :class:`NonFiniteLossError` when a loss turns non-finite, and
    :class:`lib.engine.resume.ResumeError` when ``resume`` cannot continue the run as configured.
    ``argv``: the command-line arguments (for the resume command the log names when interrupted;
    default ``sys.argv[1:]``). The log's last line says why the run stopped; SIGTERM ends the run
    like Ctrl-C (as :class:`Terminated`, a ``KeyboardInterrupt``).
    """
    from lib.datasets import build_dataset

    resume = bool(cfg.TRAIN.RESUME) if resume is None else bool(resume)
    # a caller that set up the process group (the pipeline: several stages in one torchrun) keeps it
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    apply_tf32(bool(cfg.TRAIN.TF32))
    info = ddp.init_distributed(bool(cfg.USE_CUDA), gpu_id, timeout_minutes=float(cfg.DIST_TIMEOUT_MINUTES))
    out_dir = make_run_dir(cfg)
    if not resume and (out_dir / "model_best.pth").exists():
        raise RunExistsError(f"Final output directory exists: {out_dir} (it holds model_best.pth). Pass --resume "
                             f"to continue it, or change OUTPUT_DIR / the loss options to start a new run.")
    if resume and not (out_dir / "checkpoint.pth").is_file():
        # before the logger creates the folder: a refused resume leaves nothing behind
        raise missing_checkpoint(out_dir, Path(cfg.OUTPUT_DIR))
    log, log_path = setup_logger(out_dir, cfg.CFG_NAME, "train", enabled=info.is_main)
    run = Run(cfg, info.device, info.rank, info.world_size, out_dir, log)
    progress = {"epoch": None}
    try:
        with _sigterm_as_interrupt():
            result = _train(run, resume, args, build_dataset, progress)
        _log_stop(log, None, "", f" after epoch {progress['epoch']}" if progress["epoch"] is not None else "")
        return {**result, "log_file": log_path}
    except BaseException as err:
        if info.is_main:
            note = f" during epoch {progress['epoch']}" if progress["epoch"] is not None else ""
            _log_stop(log, err, resume_command(argv, info.world_size), note)
        raise
    finally:
        close_logger()
        if info.world_size > 1 and owns_group:
            ddp.cleanup()
