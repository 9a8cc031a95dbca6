"""The L2D training loop (SPEC §2): one plain loop, top to bottom, in :func:`train`.

Shapes: N batch, J dataset joints, heatmaps (N, 17, Hm, Wm) from the detector.

Per epoch (``epoch`` = 0 .. TRAIN.EPOCHS inclusive, SPEC §9 #2)::

    for each batch: heatmaps = detector(images); loss, terms = objective(...); backward; optimizer step
        (TRAIN.OPTIMIZER; optional per-step warm-up TRAIN.WARMUP_ITERS and clipping TRAIN.CLIP_GRAD_NORM)
    scheduler.step()   (MultiStepLR numbers; x LR_BUMP_FACTOR after epoch LR_BUMP_EPOCH's step)
    validate -> best (training lifters' MPJPE, or highest PDJ in 2D-only mode) / best cross
    write checkpoint.pth (everything to resume), model_best*.pth, history.json, curves.png

Host synchronisation happens only every PRINT_FREQ steps (log line, progress bar, non-finite
check; on the CPU the non-finite check runs every step since it costs nothing there). Loss terms
are accumulated on the device in between.

Multi-GPU (``torchrun``, ``WORLD_SIZE`` > 1; helpers in :mod:`lib.engine.distributed`): the detector
is wrapped in DistributedDataParallel (optionally with synchronised BatchNorm, TRAIN.SYNC_BN, which
also works on the CPU with gloo), the training split is sharded by a ``DistributedSampler``
re-shuffled every epoch, seeds are ``SEED + rank``, the DWA history takes the per-lifter 3D losses
averaged over the ranks, the non-finite check is collective, logged means cover all ranks,
validation is sharded by :class:`ShardSampler` and gathered in dataset order (every metric equals
the single-process value), and only rank 0 logs and writes. With the same global batch, seed and
SYNC_BN a run on N processes follows the single-process run to float round-off. ``TRAIN.AMP``
(``fp16`` with a gradient scaler, or ``bf16``) autocasts the detector only: decoding, lifters and
the 3D losses run in float32.
"""
import json
import math
import os
import pprint
import signal
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from lib.core.heatmap import maps_finite, prepare_heatmaps
from lib.core.objective import L2DObjective
from lib.engine import checkpoint as ckpt_io
from lib.engine import optim
from lib.engine import distributed as ddp
from lib.engine.distributed import ShardSampler  # noqa: F401 - re-exported (run/valid_hrnet.py)
from lib.engine.evaluator import results_for_json, validate
from lib.engine.resume import (LR_KEYS, apply_lr_schedule, check_resume_options, describe, missing_checkpoint,
                               resume_command)
from lib.engine.run_dir import lifter_names, run_dir as make_run_dir
from lib.utils.atomic_io import write_text_atomic
from lib.utils.errors import UserError
from lib.utils.logger import close_logger, setup_logger

# SPEC §2.1 step 10: lifter dict order (dropout index and DWA entries follow it).
LIFTER_ORDER = ("sb", "videopose", "iganet", "mixste")
META_TO_DEVICE = ("center", "scale", "joints_3d", "image_size", "joints_3d_valid")


class RunExistsError(UserError, ValueError):
    """The run folder already holds a finished run (model_best.pth) and --resume was not given."""


class NonFiniteLossError(UserError, RuntimeError):
    """A loss or the detector's heatmaps became NaN/inf; the message names epoch, step and terms.

    A :class:`UserError` (the fix is the user's: a lower TRAIN.LR, other data), so the CLIs print
    it as one line; ``.epoch`` and ``.step`` say where it happened.
    """

    def __init__(self, message: str, epoch: Optional[int] = None, step: Optional[int] = None):
        super().__init__(message)
        self.epoch, self.step = epoch, step


# ----------------------------------------------------------------------------- LR schedule
def lr_factor(cfg, epoch: int) -> float:
    """LR multiplier during ``epoch`` (after ``epoch`` scheduler steps), SPEC §2.9.

    MultiStepLR: x LR_FACTOR for every milestone m <= epoch (counted with multiplicity); then
    x LR_BUMP_FACTOR for every epoch after LR_BUMP_EPOCH (the bump happens after that epoch's
    step and persists through later milestones). LR_BUMP_EPOCH < 0 disables the bump.
    """
    steps = sum(1 for m in cfg.TRAIN.LR_STEP if int(m) <= epoch)
    factor = float(cfg.TRAIN.LR_FACTOR) ** steps
    bump_epoch = int(cfg.TRAIN.LR_BUMP_EPOCH)
    if bump_epoch >= 0 and epoch > bump_epoch:
        factor *= float(cfg.TRAIN.LR_BUMP_FACTOR)
    return factor


def make_scheduler(optimizer, cfg):
    """LambdaLR with :func:`lr_factor`: stateless in the epoch, so resuming is exact."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(cfg, e))


def make_optimizer(params, cfg):
    """The optimizer of TRAIN.OPTIMIZER over ``params`` (parameters, or the detector module).

    ``adamw`` needs the module: its groups come from parameter names (layer-wise decay,
    :mod:`lib.engine.optim`).
    """
    name = str(cfg.TRAIN.OPTIMIZER).lower()
    if name == "adamw":
        if not isinstance(params, torch.nn.Module):
            raise TypeError("make_optimizer: TRAIN.OPTIMIZER adamw needs the detector module "
                            "(parameter names decide the groups), not a parameter list")
        return optim.make_adamw(params, cfg)
    if isinstance(params, torch.nn.Module):
        params = params.parameters()
    if name == "adam":   # the original: default betas/eps, no weight decay (TRAIN.WD ignored)
        return torch.optim.Adam(params, lr=float(cfg.TRAIN.LR))
    if name == "sgd":
        return torch.optim.SGD(params, lr=float(cfg.TRAIN.LR), momentum=float(cfg.TRAIN.MOMENTUM),
                               weight_decay=float(cfg.TRAIN.WD), nesterov=bool(cfg.TRAIN.NESTEROV))
    raise ValueError(f"TRAIN.OPTIMIZER={cfg.TRAIN.OPTIMIZER!r}: use 'adam' (the original), 'sgd' or "
                     f"'adamw' (ViTPose's recipe)")


# ----------------------------------------------------------------------------- distributed
def init_distributed(cfg, gpu_id: int):
    """-> (device, rank, world_size). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; else one process."""
    info = ddp.init_distributed(bool(cfg.USE_CUDA), gpu_id)
    return info.device, info.rank, info.world_size


class EpochRandomSampler(Sampler):
    """A permutation drawn from ``seed + epoch``: the order depends on the epoch only (exact resume)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, int(seed), bool(shuffle), 0

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


def make_loader(dataset, batch_size, sampler, cfg, device):
    workers = int(cfg.WORKERS)
    kwargs = dict(batch_size=int(batch_size), sampler=sampler, num_workers=workers, drop_last=False,
                  pin_memory=bool(cfg.PIN_MEMORY) and device.type == "cuda")
    if workers > 0:
        kwargs.update(persistent_workers=True, prefetch_factor=int(cfg.TRAIN.PREFETCH_FACTOR))
    return DataLoader(dataset, **kwargs)


# ----------------------------------------------------------------------------- lifters
def ordered_lifter_names(names):
    """SPEC §2.1 step 10 order: sb, videopose, iganet, mixste, then other registered ones sorted."""
    import model_3d
    known = list(LIFTER_ORDER) + sorted(n for n in model_3d.LIFTERS if n not in LIFTER_ORDER)
    unknown = [n for n in names if n not in model_3d.LIFTERS]
    if unknown:
        raise KeyError(f"unknown lifter(s) {unknown} in --model_3d / MODEL_3D.NAMES; valid names: "
                       f"{sorted(model_3d.LIFTERS)}")
    return [n for n in known if n in names]


def build_lifter_sets(cfg, stats=None, log=None, cross: Optional[bool] = None):
    """-> (training dict, held-out dict, skipped names).

    Training lifters (MODEL_3D.NAMES) must have weights (the error names the file and the
    ``run/train_lifter.py`` command). In multi-model mode with MODEL_3D.CROSS_VALID, every other
    registered lifter whose weight file exists is loaded as a held-out (cross) lifter; the others
    are listed as skipped (SPEC §0, §9 #9).
    """
    import model_3d
    names = ordered_lifter_names(lifter_names(cfg))
    train = {n: model_3d.resolve_lifter(cfg, n, stats_fallback=stats) for n in names}
    held_out, skipped = {}, []
    if cross is None:
        cross = len(names) > 1 and bool(cfg.MODEL_3D.CROSS_VALID)
    if cross:
        for n in ordered_lifter_names(list(model_3d.LIFTERS)):
            if n in train:
                continue
            path = model_3d.lifter_weight_path(cfg, n)
            if path.is_file():
                held_out[n] = model_3d.resolve_lifter(cfg, n, stats_fallback=stats)
            else:
                skipped.append(f"{n} ({path} not found)")
    if log is not None:
        log.info("training lifters: %s", ", ".join(f"{n} <- {v.weights_source}" for n, v in train.items()) or "none")
        if cross:
            log.info("held-out (cross) lifters: %s", ", ".join(held_out) or "none")
            if skipped:
                log.info("held-out lifters skipped (no weights): %s", "; ".join(skipped))
    return train, held_out, skipped


# ----------------------------------------------------------------------------- detector
def build_detector(cfg, log=None):
    """The detector of cfg.MODEL, initialised from TRAIN.FINETUNE (whole net, strict) or MODEL.PRETRAINED."""
    import model_2d
    model = model_2d.build_pose_net(cfg)
    from model_2d.convert import MissingWeightsError, how_to_make_pretrained, load_pretrained
    if cfg.TRAIN.FINETUNE:
        if not os.path.isfile(cfg.TRAIN.FINETUNE):
            raise MissingWeightsError(
                f"TRAIN.FINETUNE {cfg.TRAIN.FINETUNE!r} does not exist: it names a detector checkpoint in our "
                f"layout, e.g. <run dir>/model_best.pth of an earlier run. " + how_to_make_pretrained(cfg))
        report = model_2d.load_pose_checkpoint(model, cfg.TRAIN.FINETUNE, strict=True)
        if log:
            log.info("=> fine-tuning from %s", report.summary())
    elif cfg.MODEL.PRETRAINED:
        report = load_pretrained(model, cfg, log)
        if log:
            log.info("=> pretrained: %s", report.summary())
    elif log:
        log.info("=> no MODEL.PRETRAINED / TRAIN.FINETUNE: detector starts from its initialisation")
    return model


def heatmap_accuracy(output: torch.Tensor, target: torch.Tensor, thr: float = 0.5):
    """HRNet's training ``accuracy`` on device: (N, J, H, W) x2 -> (sum of per-joint acc, joint count).

    Argmax coords (zeroed where the max <= 0); distances with x / (H/10) and y / (W/10) (the
    reference's swap, SPEC §9 #31); joints whose target x <= 1 or y <= 1 ignored; per-joint
    fraction below ``thr``; the running mean is sum/count over joints with a valid sample.
    """
    n, j, h, w = output.shape

    def coords(maps):
        flat = maps.reshape(n, j, h * w)
        val, idx = flat.max(dim=-1)
        xy = torch.stack((idx % w, torch.div(idx, w, rounding_mode="floor")), dim=-1).float()
        return xy * (val > 0).unsqueeze(-1).float()

    pred, tgt = coords(output.float()), coords(target.float())
    norm = torch.tensor([h / 10.0, w / 10.0], device=output.device)
    valid = (tgt[..., 0] > 1) & (tgt[..., 1] > 1)
    dist = torch.linalg.vector_norm(pred / norm - tgt / norm, dim=-1)
    hits = ((dist < thr) & valid).sum(0).float()
    counts = valid.sum(0).float()
    has = counts > 0
    per_joint = torch.where(has, hits / counts.clamp(min=1), torch.zeros_like(hits))
    return per_joint.sum(), has.sum().float()


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


def _write_json(path: Path, obj):
    write_text_atomic(path, json.dumps(obj, indent=1, allow_nan=False, default=float))


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _autocast(device, amp: str):
    if amp == "none":
        return nullcontext()
    if amp not in ("fp16", "bf16"):
        raise ValueError(f"TRAIN.AMP={amp!r}: use none, fp16 or bf16")
    return torch.autocast(device_type=device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _state_dict_cpu(model):
    return {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}


def _write_report(out_dir: Path, args: Optional[dict], log):
    """Rank 0, end of training: the teammate-provided run report, optional (never stops training)."""
    try:
        from lib.utils.report import write_run_report
    except (ImportError, AttributeError):
        return
    import sys
    command = " ".join([Path(sys.executable).name] + sys.argv) if args is not None else None
    try:
        write_run_report(out_dir, command=command)
    except (ImportError, AttributeError) as err:
        log.warning("run report skipped: %s", err)
    except Exception as err:   # noqa: BLE001 - a report must never fail a finished training
        log.warning("could not write the run report: %s", err)


# ----------------------------------------------------------------------------- one epoch
def _global_means(sums: Dict[str, torch.Tensor], n_seen, acc_sum, acc_cnt):
    """Running sums of this rank -> (term means, accuracy, samples) over all ranks: one all-reduce.

    A host sync (marked): call only at log intervals and at the end of the epoch, on every rank.
    """
    names = list(sums)
    packed = torch.stack([sums[k] for k in names] + [n_seen, acc_sum, acc_cnt])
    packed = ddp.all_reduce_sum(packed).tolist()                                  # host sync
    n, a, c = packed[-3:]
    means = {k: v / n for k, v in zip(names, packed[:-3])} if n else {}
    return means, (a / c if c > 0 else 0.0), n


def backward_and_step(loss, optimizer, scaler=None, clip: float = 0.0) -> None:
    """Zero the gradients, back-propagate ``loss`` and step (through the fp16 gradient scaler if any).

    ``clip`` > 0: the gradients of every optimised parameter are scaled to an L2 norm of at most
    ``clip`` first (unscaled from fp16 before); the norm stays on the device (no host sync).
    """
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip > 0:
            scaler.unscale_(optimizer)
            _clip(optimizer, clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip > 0:
            _clip(optimizer, clip)
        optimizer.step()


def _clip(optimizer, clip: float) -> None:
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, clip)


def train_one_epoch(epoch, model, objective, loader, optimizer, scaler, device, cfg, log,
                    is_main=True, writer=None, global_step=0):
    """Train one epoch; -> dict of epoch means (loss terms, accuracy_2d, samples_per_s, steps).

    Under DDP the logged and returned means cover all ranks (the global batch); the non-finite
    check is collective, so every rank raises :class:`NonFiniteLossError` at the same step.
    """
    from tqdm import tqdm

    model.train()
    amp = str(cfg.TRAIN.AMP)
    print_freq = max(int(cfg.PRINT_FREQ), 1)
    check_every = 1 if device.type == "cpu" else print_freq   # a sync is free on the CPU
    max_steps = int(cfg.TRAIN.MAX_STEPS_PER_EPOCH)
    clip = float(cfg.TRAIN.CLIP_GRAD_NORM)
    total_steps = len(loader) if not max_steps else min(max_steps, len(loader))
    L = cfg.LOSS
    use_3d = objective.use_3d
    w_log = ((L.LOSS_2D_W, L.LOSS_3D_XY_W, L.LOSS_3D_Z_W) if use_3d else (1.0, 0.0, 0.0))
    dataset = cfg.DATASET.DATASET

    sums: Dict[str, torch.Tensor] = {}
    n_seen = torch.zeros((), dtype=torch.float64, device=device)
    acc_sum = torch.zeros((), dtype=torch.float64, device=device)
    acc_cnt = torch.zeros((), dtype=torch.float64, device=device)
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    bad_maps = torch.zeros((), dtype=torch.bool, device=device)
    bad_terms = None
    term_names = None
    t_epoch = t_last = time.time()
    samples_since = 0
    bar = tqdm(total=total_steps, desc=f"epoch {epoch}", disable=not is_main, dynamic_ncols=True, leave=False)
    step = -1
    for step, (images, target, target_weight, meta) in enumerate(loader):
        if max_steps and step >= max_steps:
            break
        batch = images.shape[0]
        images = images.to(device, non_blocking=True)
        if bool(cfg.TRAIN.CHANNELS_LAST):
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        target_weight = target_weight.to(device, non_blocking=True)
        meta_dev = {k: meta[k].to(device, non_blocking=True).float() for k in META_TO_DEVICE if k in meta}

        optim.apply_warmup(optimizer, cfg, epoch, global_step + step, lr_factor)
        with _autocast(device, amp):
            heatmaps = model(images)
        # decoding, lifters and 3D losses in float32 (guidance accuracy), outside autocast
        loss, terms = objective(heatmaps.float(), target, target_weight, meta_dev)
        backward_and_step(loss, optimizer, scaler, clip)

        # ---- device-side bookkeeping (no host sync)
        with torch.no_grad():
            if term_names is None:
                term_names = list(terms)
            vec = torch.stack([terms[k].double() for k in term_names])
            for k in term_names:
                sums[k] = sums.get(k, 0.0) + terms[k].double() * batch
            n_seen += batch
            a, c = heatmap_accuracy(prepare_heatmaps(heatmaps.detach(), dataset), target)
            acc_sum += a.double()
            acc_cnt += c.double()
            # Heatmaps are checked apart from the loss: a NaN map masked out by a zero target
            # weight would leave the 2D loss finite while its decoded joint is NaN.
            maps_bad = ~maps_finite(heatmaps.detach()).all()
            first_bad = (~torch.isfinite(loss.detach()) | maps_bad) & (bad_step < 0)
            bad_step = torch.where(first_bad, torch.full_like(bad_step, step), bad_step)
            bad_maps = first_bad & maps_bad | bad_maps
            bad_terms = vec if bad_terms is None else torch.where(first_bad, vec, bad_terms)
        samples_since += batch

        last = step + 1 == total_steps
        if step % check_every == 0 or step % print_freq == 0 or last:
            any_bad = int(ddp.first_bad_step(bad_step))               # host sync (+ all-reduce under DDP)
            if any_bad >= 0:
                if int(bad_step) >= 0:
                    values = ", ".join(f"{k}={v:.6g}" for k, v in zip(term_names, bad_terms.tolist()))
                    maps = "non-finite heatmaps; " if bool(bad_maps) else ""
                    where = f"step {int(bad_step)}: {maps}{values}"
                else:
                    where = f"step {any_bad} on another rank (this rank's losses were finite)"
                rank_note = f" (rank {ddp.rank()} of {ddp.world_size()})" if ddp.is_dist() else ""
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, {where}{rank_note}. Training stopped; "
                    f"the last good checkpoint (end of the previous epoch) is kept. Lower TRAIN.LR or "
                    f"check the data/lifter weights, then --resume.", epoch=epoch, step=any_bad)
        if step % print_freq == 0 or last:
            now = time.time()
            means, acc, _ = _global_means(sums, n_seen, acc_sum, acc_cnt)       # host sync (marked)
            speed = samples_since * ddp.world_size() / max(now - t_last, 1e-9)
            t_last, samples_since = now, 0
            lr = optimizer.param_groups[0]["lr"]
            avg_cur = float(terms["loss_3d_avg"]) * float(L.LOSS_3D_AVG_W) if (use_3d and L.LOSS_3D_AVG) else -1.0
            cons_cur = float(terms["loss_3d_cons"]) * float(L.LOSS_3D_CONS_W) if (use_3d and L.LOSS_3D_CONS) else -1.0
            loss_3d_log = means.get("weighted_3d", -1.0) if use_3d else -1.0
            line = (f"Epoch: [{epoch}][{step}/{total_steps}]\tSpeed {speed:.1f} samples/s\t"
                    f"Loss_2d {means['weighted_2d']:.5f}\tLoss_3d {loss_3d_log:.5f}\tLoss {means['total']:.5f}\t"
                    f"Accuracy_2d {acc:.3f}\tLR {lr:.5f}\tloss2d_w {w_log[0]:.3f}\tloss3d_xy_w {w_log[1]:.3f}\t"
                    f"loss3d_z_w {w_log[2]:.3f}\tloss3d_avg {avg_cur:.6f}\tloss3d_cons {cons_cur:.6f}")
            dwa = {k.split("/", 1)[1]: float(terms[k]) for k in term_names if k.startswith("dwa_w/")}
            if len(dwa) > 1:
                line += "\tdwa_w " + " ".join(f"{k}:{v:.3f}" for k, v in dwa.items())
            if is_main:
                log.info(line)
                post = {"loss": f"{means['total']:.4g}", "2d": f"{means['weighted_2d']:.3g}"}
                if use_3d:
                    post["3d"] = f"{means['weighted_3d']:.3g}"
                post["acc"] = f"{acc:.3f}"
                post["sps"] = f"{speed:.1f}"
                bar.set_postfix(post, refresh=False)
                if writer is not None:
                    for k, v in means.items():
                        writer.add_scalar(f"train_running/{k}", v, global_step + step)
        bar.update(1)
    bar.close()
    steps = step + 1 if not (max_steps and step >= max_steps) else max_steps
    out, acc, n = _global_means(sums, n_seen, acc_sum, acc_cnt)
    elapsed = time.time() - t_epoch
    out["accuracy_2d"] = acc
    out["samples_per_s"] = n / max(elapsed, 1e-9)
    out["steps"] = int(steps)
    out["seconds"] = elapsed
    return out


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
    device, rank, world = init_distributed(cfg, gpu_id)
    is_main = rank == 0
    out_dir = make_run_dir(cfg)
    if not resume and (out_dir / "model_best.pth").exists():
        raise RunExistsError(f"Final output directory exists: {out_dir} (it holds model_best.pth). Pass --resume "
                             f"to continue it, or change OUTPUT_DIR / the loss options to start a new run.")
    if resume and not (out_dir / "checkpoint.pth").is_file():
        # before the logger creates the folder: a refused resume leaves nothing behind
        raise missing_checkpoint(out_dir, Path(cfg.OUTPUT_DIR))
    log, log_path = setup_logger(out_dir, cfg.CFG_NAME, "train", enabled=is_main)
    progress = {"epoch": None}
    try:
        with _sigterm_as_interrupt():
            result = _train(cfg, device, rank, world, is_main, out_dir, log, log_path, resume, args,
                            build_dataset, progress)
        _log_stop(log, None, "", f" after epoch {progress['epoch']}" if progress["epoch"] is not None else "")
        return result
    except BaseException as err:
        if is_main:
            note = f" during epoch {progress['epoch']}" if progress["epoch"] is not None else ""
            _log_stop(log, err, resume_command(argv, world), note)
        raise
    finally:
        close_logger()
        if world > 1 and owns_group:
            ddp.cleanup()


def _train(cfg, device, rank, world, is_main, out_dir, log, log_path, resume, args, build_dataset, progress):
    if args:
        log.info("args:\n%s", pprint.pformat(args))
    log.info("run folder: %s (device %s, world size %d)", out_dir, device, world)
    # ---- resume: load and compare before anything is written, so that a refusal leaves the run as it was
    ckpt_path = out_dir / "checkpoint.pth"
    state, resume_changes = None, {}
    if resume:
        state = ckpt_io.load_checkpoint(ckpt_path, map_location="cpu")
        resume_changes = check_resume_options(state.get("config"), cfg, ckpt_path)
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        text = cfg.dump()
        resumes = list((state or {}).get("history", {}).get("resumes", []))
        if resume_changes:
            resumes.append({"epoch": int(state["epoch"]), "changed": {k: list(v) for k, v in resume_changes.items()}})
        if resumes:         # the YAML stays loadable; the comments say which values came later
            text += "".join(f"# --resume at epoch {r['epoch']} changed: {describe(r['changed'])}\n" for r in resumes)
        (out_dir / "config.yaml").write_text(text)
    log.info("config:\n%s", cfg.dump())

    torch.backends.cudnn.benchmark = bool(cfg.CUDNN.BENCHMARK)
    torch.backends.cudnn.deterministic = bool(cfg.CUDNN.DETERMINISTIC)
    torch.backends.cudnn.enabled = bool(cfg.CUDNN.ENABLED)
    seed = int(cfg.SEED)
    ddp.seed_per_rank(seed, rank)          # rank 0 = the single-process stream; DDP broadcasts rank 0's init

    # ---- data
    train_set = build_dataset(cfg, cfg.DATASET.TRAIN_SET, True)
    valid_set = build_dataset(cfg, cfg.DATASET.TEST_SET, False)
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler
        train_sampler = DistributedSampler(train_set, num_replicas=world, rank=rank,
                                           shuffle=bool(cfg.TRAIN.SHUFFLE), seed=seed)
    else:
        train_sampler = EpochRandomSampler(len(train_set), seed, bool(cfg.TRAIN.SHUFFLE))
    train_loader = make_loader(train_set, cfg.TRAIN.BATCH_SIZE_PER_GPU, train_sampler, cfg, device)
    valid_loader = make_loader(valid_set, cfg.TEST.BATCH_SIZE_PER_GPU, ShardSampler(len(valid_set), rank, world),
                               cfg, device)
    log.info("data: %d training / %d validation samples (%s)", len(train_set), len(valid_set), cfg.DATASET.ROOT)

    # ---- models
    model = build_detector(cfg, log).to(device)
    if bool(cfg.TRAIN.CHANNELS_LAST):
        model = model.to(memory_format=torch.channels_last)
    if world > 1:
        if bool(cfg.TRAIN.SYNC_BN):       # BatchNorm over the global batch (GPU: torch's; CPU: gloo)
            model = ddp.convert_sync_batchnorm(model, device)
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    use_3d = bool(cfg.LOSS.LOSS_3D)
    train_lifters, cross_lifters, skipped = ({}, {}, [])
    if use_3d:
        train_lifters, cross_lifters, skipped = build_lifter_sets(cfg, train_set.stats, log)
        for lifter in list(train_lifters.values()) + list(cross_lifters.values()):
            lifter.to(device)
    objective = L2DObjective(cfg, train_lifters).to(device)
    ddp.make_dwa_global(objective)        # DWA from the global-batch 3D losses: same weights on every rank
    optimizer = make_optimizer(_unwrap(model), cfg)
    scheduler = make_scheduler(optimizer, cfg)
    amp = str(cfg.TRAIN.AMP)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    writer = None
    if is_main:
        try:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(log_dir=str(out_dir / "tensorboard"))
        except Exception:   # noqa: BLE001 - tensorboard is optional
            writer = None

    # ---- resume
    begin_epoch = int(cfg.TRAIN.BEGIN_EPOCH)
    higher_is_better = not use_3d                    # 2D-only: best = highest PDJ (SPEC §2.10)
    best_perf = 0.0 if higher_is_better else math.inf     # PDJ must beat 0 (is_new_best)
    best_cross = math.inf
    history = {"run_dir": str(out_dir), "mode": "3d" if use_3d else "2d_only",
               "lifters": list(train_lifters), "cross_lifters": list(cross_lifters), "epochs": []}
    if state is not None:
        _unwrap(model).load_state_dict(state["state_dict"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        objective.load_state_dict(state["objective"])
        begin_epoch = int(state["epoch"])
        best_perf = float(state["best_perf"])
        best_cross = float(state["best_cross_perf"])
        history = state["history"]
        per_rank = state.get("rng_per_rank") or []
        if len(per_rank) == world:
            ckpt_io.set_rng_state(per_rank[rank])
        else:                          # saved by another world size: rank 0's stream, offset per rank
            ckpt_io.set_rng_state(state["rng"])
            if rank > 0:
                ddp.seed_per_rank(seed + 1000 * begin_epoch, rank)
        if any(k in resume_changes for k in LR_KEYS):
            apply_lr_schedule(optimizer, scheduler, cfg, lr_factor)
        if resume_changes:
            history.setdefault("resumes", []).append(
                {"epoch": begin_epoch, "changed": {k: list(v) for k, v in resume_changes.items()}})
            log.info("=> --resume with changed options (applied): %s; learning rate now %.4e",
                     describe(resume_changes), optimizer.param_groups[0]["lr"])
        log.info("=> resumed from %s: continuing at epoch %d (best %.4f, best cross %.4f)",
                 ckpt_path, begin_epoch, best_perf, best_cross)

    end_epoch = int(cfg.TRAIN.EPOCHS)
    ensemble = bool(cfg.TEST.ENSEMBLE)
    global_step = sum(e.get("train", {}).get("steps", 0) for e in history["epochs"])
    for epoch in range(begin_epoch, end_epoch + 1):
        progress["epoch"] = epoch
        if hasattr(train_sampler, "set_epoch"):
            train_sampler.set_epoch(epoch)
        lr_now = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(epoch, model, objective, train_loader, optimizer, scaler, device, cfg, log,
                                is_main, writer, global_step)
        global_step += stats["steps"]

        scheduler.step()
        if epoch == int(cfg.TRAIN.LR_BUMP_EPOCH):
            log.info("=> end of epoch %d: learning rate multiplied by %g (TRAIN.LR_BUMP_FACTOR): %.4e -> %.4e",
                     epoch, float(cfg.TRAIN.LR_BUMP_FACTOR),
                     optimizer.param_groups[0]["lr"] / float(cfg.TRAIN.LR_BUMP_FACTOR),
                     optimizer.param_groups[0]["lr"])

        # ---- replicas: rank 0's BatchNorm statistics everywhere, then check nothing drifted apart
        ddp.broadcast_buffers(_unwrap(model))
        replica_diff = ddp.max_replica_difference(_unwrap(model)) if world > 1 else None
        if replica_diff:
            log.warning("replicas differ after epoch %d: max |w - w_rank0| = %.3g", epoch, replica_diff)

        # ---- validation (every epoch; sharded over the ranks, gathered)
        results = validate(cfg, valid_loader, _unwrap(model), device, train_lifters, cross_lifters,
                           beta=float(cfg.LOSS.BETA), ensemble=ensemble)
        non_finite = int(results.get("non_finite_samples", 0))
        if use_3d:
            perf = results["mpjpe"]                      # training lifters (or their median ensemble)
            cross_perf = results["cross"]["mpjpe"] if results["cross"] else None
        else:
            perf, cross_perf = results["pdj"], None
        is_best = is_new_best(perf, best_perf, higher_is_better, non_finite)
        is_best_cross = cross_perf is not None and is_new_best(cross_perf, best_cross, False, non_finite)
        if non_finite:
            log.warning("epoch %d: %d of %d validation samples have non-finite heatmaps or joints "
                        "(the detector diverged?): not a candidate for model_best", epoch, non_finite,
                        results["num_samples"])
        if is_best:
            best_perf = perf
        if is_best_cross:
            best_cross = cross_perf

        entry = {"epoch": epoch, "lr": lr_now, "train": stats,
                 "valid": {"pdj": results["pdj"], "mpjpe": results["mpjpe"], "p_mpjpe": results["p_mpjpe"],
                           "non_finite_samples": non_finite,
                           "mpjpe_unmasked": (results.get("unmasked") or {}).get("mpjpe"),
                           "p_mpjpe_unmasked": (results.get("unmasked") or {}).get("p_mpjpe"),
                           "per_lifter": {n: v["mpjpe"] for n, v in results["per_lifter"].items()},
                           "cross_mpjpe": cross_perf,
                           "cross_p_mpjpe": results["cross"]["p_mpjpe"] if results["cross"] else None,
                           "ensemble_mpjpe": results["ensemble"]["mpjpe"] if results["ensemble"] else None},
                 "best": bool(is_best), "best_cross": bool(is_best_cross)}
        if world > 1:
            entry["world_size"] = world
            entry["replica_max_abs_diff"] = replica_diff
        history["epochs"].append(_json_safe(entry))
        history["best_perf"] = best_perf if math.isfinite(best_perf) else None
        history["best_cross_perf"] = best_cross if math.isfinite(best_cross) else None

        if use_3d:
            log.info("=> saving checkpoint to %s --> best: %s (PDJ@0.2: %.2f, MPJPE: %.2fmm, P-MPJPE: %.2fmm)",
                     out_dir, is_best, results["pdj"], results["mpjpe"], results["p_mpjpe"])
            if results.get("unmasked"):
                log.info("(DATASET.MASK_LOW_CONFIDENCE: low-confidence joints left out above; with them: "
                         "MPJPE %.2fmm, P-MPJPE %.2fmm)", results["unmasked"]["mpjpe"], results["unmasked"]["p_mpjpe"])
            if len(results["per_lifter"]) > 1:
                for n, v in results["per_lifter"].items():
                    log.info("%s\t Test MPJPE: %.2fmm%s", n, v["mpjpe"], " (held out)" if v["held_out"] else "")
            if results["cross"]:
                log.info("held-out lifters (%s): MPJPE %.2fmm, P-MPJPE %.2fmm --> best cross: %s",
                         "+".join(results["cross"]["lifters"]), results["cross"]["mpjpe"],
                         results["cross"]["p_mpjpe"], is_best_cross)
        else:
            log.info("=> saving checkpoint to %s --> best: %s (PDJ@0.2: %.2f)", out_dir, is_best, results["pdj"])
        log.info("epoch %d summary: loss %.5f (2d %.5f, 3d %.5f), accuracy_2d %.3f, %.1f samples/s, %.1fs, lr %.4e",
                 epoch, stats.get("total", float("nan")), stats.get("weighted_2d", float("nan")),
                 stats.get("weighted_3d", float("nan")), stats["accuracy_2d"], stats["samples_per_s"],
                 stats["seconds"], lr_now)

        rng_per_rank = ddp.all_gather_object(ckpt_io.rng_state()) if world > 1 else None   # collective
        if is_main:
            weights = _state_dict_cpu(model)
            if is_best:
                ckpt_io.atomic_save(weights, out_dir / "model_best.pth")
                _write_json(out_dir / "metrics.json", _json_safe(
                    {**results_for_json(results), "epoch": epoch, "source": "train_hrnet (model_best.pth)"}))
                if len(results["per_sample_mpjpe"]) > 1:
                    np.savez(out_dir / "test_mpjpe_per_sample.npz", **results["per_sample_mpjpe"])
            if is_best_cross:
                ckpt_io.atomic_save(weights, out_dir / "model_best_cross.pth")
                _write_json(out_dir / "metrics_cross.json", _json_safe(
                    {**results_for_json(results), "epoch": epoch, "source": "train_hrnet (model_best_cross.pth)"}))
            _write_json(out_dir / "valid_last.json", _json_safe({**results_for_json(results), "epoch": epoch}))
            state = {"format": ckpt_io.TRAIN_FORMAT, "version": ckpt_io.TRAIN_VERSION, "epoch": epoch + 1,
                     "model": f"{cfg.MODEL.NAME}_{cfg.DATASET.DATASET}", "state_dict": weights,
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "best_perf": float(best_perf), "best_cross_perf": float(best_cross), "perf": float(perf),
                     "objective": objective.state_dict(), "rng": ckpt_io.rng_state(),
                     "rng_per_rank": rng_per_rank,
                     "history": history, "config": ckpt_io.plain(cfg), "config_yaml": cfg.dump()}
            ckpt_io.atomic_save(ckpt_io.plain(state), ckpt_path)
            _write_json(out_dir / "history.json", history)
            try:
                from lib.utils.plots import plot_curves
                plot_curves(history, out_dir / "curves.png")
            except Exception as err:   # noqa: BLE001 - a plot must never stop training
                log.warning("could not draw curves.png: %s", err)
            if writer is not None:
                for k, v in stats.items():
                    writer.add_scalar(f"train/{k}", v, epoch)
                for k, v in entry["valid"].items():
                    if isinstance(v, (int, float)) and v is not None:
                        writer.add_scalar(f"valid/{k}", v, epoch)
                writer.add_scalar("train/lr", lr_now, epoch)
                writer.flush()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    if is_main:
        ckpt_io.atomic_save(_state_dict_cpu(model), out_dir / "final_state.pth")
        _write_report(out_dir, args, log)
    if writer is not None:
        writer.close()
    ddp.barrier()                          # no rank leaves before rank 0 has written everything
    if is_main and not (out_dir / "model_best.pth").exists():
        log.warning("no epoch qualified as best (PDJ 0, or non-finite validation): no model_best.pth written")
    log.info("=> done: %s (best %s %.4f)", out_dir, "PDJ" if not use_3d else "MPJPE", best_perf)
    return {"run_dir": out_dir, "log_file": log_path, "best_perf": best_perf, "best_cross_perf": best_cross,
            "history": history, "lifters": list(train_lifters), "cross_lifters": list(cross_lifters),
            "skipped_lifters": skipped}
