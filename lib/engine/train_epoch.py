"""One training epoch of the detector: the step, its device-side bookkeeping and its log lines.

Shapes: N batch, J dataset joints, heatmaps (N, 17, Hm, Wm) from the detector.

Host synchronisation happens only every PRINT_FREQ steps (log line, progress bar, non-finite
check; on the CPU the non-finite check runs every step since it costs nothing there). A step makes
no blocking host-to-device copy either (constants are cached per device, ``device_constant``);
the tests count those on the CPU, and only a GPU run (``torch.cuda.set_sync_debug_mode``) can show
that no other synchronisation is left (docs/scaling.md#gpu-notes). Loss terms
are accumulated on the device in between (:class:`EpochMeter`). Under DDP the logged and returned
means cover all ranks (the global batch); the non-finite check is collective, so every rank raises
:class:`NonFiniteLossError` at the same step. ``TRAIN.AMP`` autocasts the detector only: decoding,
lifters and the 3D losses run in float32.
"""
import time
from typing import Dict, Optional

import torch

from lib.core.heatmap import device_constant, maps_finite, prepare_heatmaps
from lib.engine import distributed as ddp
from lib.engine import optim
from lib.engine.builders import lr_factor
from lib.utils.device import autocast
from lib.utils.errors import UserError

META_TO_DEVICE = ("center", "scale", "joints_3d", "image_size", "joints_3d_valid")


class NonFiniteLossError(UserError, RuntimeError):
    """A loss or the detector's heatmaps became NaN/inf; the message names epoch, step and terms.

    A :class:`UserError` (the fix is the user's: a lower TRAIN.LR, other data), so the CLIs print
    it as one line; ``.epoch`` and ``.step`` say where it happened.
    """

    def __init__(self, message: str, epoch: Optional[int] = None, step: Optional[int] = None):
        super().__init__(message)
        self.epoch, self.step = epoch, step


def heatmap_accuracy(output: torch.Tensor, target: torch.Tensor, thr: float = 0.5):
    """HRNet's training ``accuracy`` on device: (N, J, H, W) x2 -> (sum of per-joint acc, joint count).

    Argmax coords (zeroed where the max <= 0); distances with x / (H/10) and y / (W/10) (the
    reference's swap, docs/original.md#quirks, quirk 31); joints whose target x <= 1 or y <= 1
    ignored; per-joint fraction below ``thr``; the running mean is sum/count over joints with a
    valid sample.
    """
    n, j, h, w = output.shape

    def coords(maps):
        flat = maps.reshape(n, j, h * w)
        val, idx = flat.max(dim=-1)
        xy = torch.stack((idx % w, torch.div(idx, w, rounding_mode="floor")), dim=-1).float()
        return xy * (val > 0).unsqueeze(-1).float()

    pred, tgt = coords(output.float()), coords(target.float())
    norm = device_constant((h / 10.0, w / 10.0), torch.float32, str(output.device))   # made once: no copy per step
    valid = (tgt[..., 0] > 1) & (tgt[..., 1] > 1)
    dist = torch.linalg.vector_norm(pred / norm - tgt / norm, dim=-1)
    hits = ((dist < thr) & valid).sum(0).float()
    counts = valid.sum(0).float()
    has = counts > 0
    per_joint = torch.where(has, hits / counts.clamp(min=1), torch.zeros_like(hits))
    return per_joint.sum(), has.sum().float()


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


class EpochMeter:
    """Device-side running sums of one epoch (loss terms, 2D accuracy, the first non-finite step).

    :meth:`add` never synchronises with the host; :meth:`check_finite` and :meth:`means` do (and
    under DDP are collectives), so they are called only at log points, on every rank.
    """

    def __init__(self, device, dataset: str):
        self.dataset = dataset
        self.sums: Dict[str, torch.Tensor] = {}
        zero = lambda dtype=torch.float64: torch.zeros((), dtype=dtype, device=device)   # noqa: E731
        self.n_seen, self.acc_sum, self.acc_cnt = zero(), zero(), zero()
        self.bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self.bad_maps = zero(torch.bool)
        self.bad_terms = None
        self.names = None

    @torch.no_grad()
    def add(self, step: int, terms: Dict[str, torch.Tensor], loss, heatmaps, target, batch: int) -> None:
        if self.names is None:
            self.names = list(terms)
        vec = torch.stack([terms[k].double() for k in self.names])
        for k in self.names:
            self.sums[k] = self.sums.get(k, 0.0) + terms[k].double() * batch
        self.n_seen += batch
        a, c = heatmap_accuracy(prepare_heatmaps(heatmaps.detach(), self.dataset), target)
        self.acc_sum += a.double()
        self.acc_cnt += c.double()
        # Heatmaps are checked apart from the loss: a NaN map masked out by a zero target weight
        # would leave the 2D loss finite while its decoded joint is NaN.
        maps_bad = ~maps_finite(heatmaps.detach()).all()
        first_bad = (~torch.isfinite(loss.detach()) | maps_bad) & (self.bad_step < 0)
        self.bad_step = torch.where(first_bad, torch.full_like(self.bad_step, step), self.bad_step)
        self.bad_maps = first_bad & maps_bad | self.bad_maps
        self.bad_terms = vec if self.bad_terms is None else torch.where(first_bad, vec, self.bad_terms)

    def check_finite(self, epoch: int) -> None:
        """Raise :class:`NonFiniteLossError` on every rank when any rank saw a non-finite step (host sync)."""
        any_bad = int(ddp.first_bad_step(self.bad_step))
        if any_bad < 0:
            return
        if int(self.bad_step) >= 0:
            values = ", ".join(f"{k}={v:.6g}" for k, v in zip(self.names, self.bad_terms.tolist()))
            maps = "non-finite heatmaps; " if bool(self.bad_maps) else ""
            where = f"step {int(self.bad_step)}: {maps}{values}"
        else:
            where = f"step {any_bad} on another rank (this rank's losses were finite)"
        rank_note = f" (rank {ddp.rank()} of {ddp.world_size()})" if ddp.is_dist() else ""
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, {where}{rank_note}. Training stopped; "
            f"the last good checkpoint (end of the previous epoch) is kept. Lower TRAIN.LR or "
            f"check the data/lifter weights, then --resume.", epoch=epoch, step=any_bad)

    def means(self):
        """-> (term means, accuracy, samples) over all ranks: one all-reduce and one host sync (marked)."""
        names = list(self.sums)
        packed = torch.stack([self.sums[k] for k in names] + [self.n_seen, self.acc_sum, self.acc_cnt])
        packed = ddp.all_reduce_sum(packed).tolist()                                  # host sync
        n, a, c = packed[-3:]
        means = {k: v / n for k, v in zip(names, packed[:-3])} if n else {}
        return means, (a / c if c > 0 else 0.0), n


def _log_line(cfg, epoch, step, total_steps, means, acc, speed, lr, terms, use_3d) -> str:
    """The original's per-step log line (docs/original.md#run-folders-and-names), plus DWA weights."""
    L = cfg.LOSS
    w_log = (L.LOSS_2D_W, L.LOSS_3D_XY_W, L.LOSS_3D_Z_W) if use_3d else (1.0, 0.0, 0.0)
    avg_cur = float(terms["loss_3d_avg"]) * float(L.LOSS_3D_AVG_W) if (use_3d and L.LOSS_3D_AVG) else -1.0
    cons_cur = float(terms["loss_3d_cons"]) * float(L.LOSS_3D_CONS_W) if (use_3d and L.LOSS_3D_CONS) else -1.0
    loss_3d_log = means.get("weighted_3d", -1.0) if use_3d else -1.0
    line = (f"Epoch: [{epoch}][{step}/{total_steps}]\tSpeed {speed:.1f} samples/s\t"
            f"Loss_2d {means['weighted_2d']:.5f}\tLoss_3d {loss_3d_log:.5f}\tLoss {means['total']:.5f}\t"
            f"Accuracy_2d {acc:.3f}\tLR {lr:.5f}\tloss2d_w {w_log[0]:.3f}\tloss3d_xy_w {w_log[1]:.3f}\t"
            f"loss3d_z_w {w_log[2]:.3f}\tloss3d_avg {avg_cur:.6f}\tloss3d_cons {cons_cur:.6f}")
    dwa = {k.split("/", 1)[1]: float(v) for k, v in terms.items() if k.startswith("dwa_w/")}
    if len(dwa) > 1:
        line += "\tdwa_w " + " ".join(f"{k}:{v:.3f}" for k, v in dwa.items())
    return line


def train_one_epoch(epoch, model, objective, loader, optimizer, scaler, device, cfg, log,
                    is_main=True, writer=None, global_step=0):
    """Train one epoch; -> dict of epoch means (loss terms, accuracy_2d, samples_per_s, steps, seconds)."""
    from tqdm import tqdm

    model.train()
    amp = str(cfg.TRAIN.AMP)
    print_freq = max(int(cfg.PRINT_FREQ), 1)
    check_every = 1 if device.type == "cpu" else print_freq   # a sync is free on the CPU
    max_steps = int(cfg.TRAIN.MAX_STEPS_PER_EPOCH)
    clip = float(cfg.TRAIN.CLIP_GRAD_NORM)
    channels_last = bool(cfg.TRAIN.CHANNELS_LAST)
    total_steps = len(loader) if not max_steps else min(max_steps, len(loader))
    meter = EpochMeter(device, cfg.DATASET.DATASET)
    t_epoch = t_last = time.time()
    samples_since, steps = 0, 0
    bar = tqdm(total=total_steps, desc=f"epoch {epoch}", disable=not is_main, dynamic_ncols=True, leave=False)
    for step, (images, target, target_weight, meta) in enumerate(loader):
        if max_steps and step >= max_steps:
            break
        batch = images.shape[0]
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        target_weight = target_weight.to(device, non_blocking=True)
        meta_dev = {k: meta[k].to(device, non_blocking=True).float() for k in META_TO_DEVICE if k in meta}

        optim.apply_warmup(optimizer, cfg, epoch, global_step + step, lr_factor)
        with autocast(device, amp):
            heatmaps = model(images)
        # decoding, lifters and 3D losses in float32 (guidance accuracy), outside autocast
        loss, terms = objective(heatmaps.float(), target, target_weight, meta_dev)
        backward_and_step(loss, optimizer, scaler, clip)
        meter.add(step, terms, loss, heatmaps, target, batch)
        samples_since += batch
        steps = step + 1

        last = steps == total_steps
        if step % check_every == 0 or step % print_freq == 0 or last:
            meter.check_finite(epoch)                                  # host sync (+ all-reduce under DDP)
        if step % print_freq == 0 or last:
            now = time.time()
            means, acc, _ = meter.means()                              # host sync (marked)
            speed = samples_since * ddp.world_size() / max(now - t_last, 1e-9)
            t_last, samples_since = now, 0
            lr = optimizer.param_groups[0]["lr"]
            if is_main:
                log.info(_log_line(cfg, epoch, step, total_steps, means, acc, speed, lr, terms, objective.use_3d))
                post = {"loss": f"{means['total']:.4g}", "2d": f"{means['weighted_2d']:.3g}"}
                if objective.use_3d:
                    post["3d"] = f"{means['weighted_3d']:.3g}"
                post.update(acc=f"{acc:.3f}", sps=f"{speed:.1f}")
                bar.set_postfix(post, refresh=False)
                if writer is not None:
                    for k, v in means.items():
                        writer.add_scalar(f"train_running/{k}", v, global_step + step)
        bar.update(1)
    bar.close()
    out, acc, n = meter.means()
    elapsed = time.time() - t_epoch
    out.update(accuracy_2d=acc, samples_per_s=n / max(elapsed, 1e-9), steps=int(steps), seconds=elapsed)
    return out
