"""AdamW with layer-wise LR decay and a per-step linear warm-up (the ViTPose recipe).

Parameter groups follow the official ViTPose ``LayerDecayOptimizerConstructor``: with ``depth``
transformer blocks there are ``depth + 2`` layers; a parameter in layer ``i`` gets
``LR * decay ** (depth + 1 - i)`` (embeddings at layer 0 learn slowest, the decoder at
``depth + 1`` at the full LR), and no weight decay when it is one-dimensional (norms, BatchNorm,
biases), a ``.bias`` or a ``pos_embed``. A model says where its parameters sit through
``layer_id(name)`` and ``depth``; one without them (HRNet, PoseResNet) is a single layer, so
``adamw`` is then plain AdamW with weight decay off on norms and biases. ``TRAIN.LAYER_DECAY``
< 0 (the default) takes the model's own ``layer_decay`` (ViTPose: the official value of its
``MODEL.VIT.SIZE``, S / B / L / H 0.8 / 0.75 / 0.8 / 0.85; 1 for a model without one); an
explicit value in (0, 1] wins.

The warm-up is mmcv's "linear" policy: during the first ``WARMUP_ITERS`` steps of the run the
LR of every group is its scheduled value times ``1 - (1 - step / iters) * (1 - ratio)``.
"""
from typing import Dict, List

import torch
import torch.nn as nn

from lib.utils.errors import UserError


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or name.endswith(".bias") or "pos_embed" in name


def layer_decay_groups(model: nn.Module, lr: float, weight_decay: float,
                       layer_decay: float) -> List[Dict]:
    """Parameter groups of ``model`` (trainable parameters only), largest LR first.

    Each group: ``params``, ``lr``, ``weight_decay``, ``lr_scale`` and ``group_name``
    (``layer_<i>_decay`` / ``layer_<i>_no_decay``). The largest-LR group comes first so that
    ``param_groups[0]['lr']``, which the logs print, is the configured LR.
    """
    depth = getattr(model, "depth", None)
    layer_id = getattr(model, "layer_id", None)
    top = int(depth) + 1 if (depth is not None and callable(layer_id)) else 0
    groups: Dict[str, Dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name) if top else 0
        decay = not _no_decay(name, param)
        key = f"layer_{layer}_{'decay' if decay else 'no_decay'}"
        if key not in groups:
            scale = float(layer_decay) ** (top - layer)
            groups[key] = {"params": [], "lr": float(lr) * scale,
                           "weight_decay": float(weight_decay) if decay else 0.0,
                           "lr_scale": scale, "group_name": key}
        groups[key]["params"].append(param)
    # stable sort: equal scales keep the order of first appearance (decay before no_decay per layer)
    return sorted(groups.values(), key=lambda g: -g["lr_scale"])


def make_adamw(model: nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW (betas 0.9 / 0.999 as ViTPose) over :func:`layer_decay_groups` of ``model``."""
    decay = float(cfg.TRAIN.LAYER_DECAY)
    if decay < 0:
        decay = float(getattr(model, "layer_decay", 1.0))
    if not 0.0 < decay <= 1.0:
        raise UserError(f"TRAIN.LAYER_DECAY={decay}: use a value in (0, 1] (1 = no layer-wise decay; "
                        f"< 0 = the ViTPose size's official value, 0.8 / 0.75 / 0.8 / 0.85 for "
                        f"S / B / L / H)")
    groups = layer_decay_groups(model, float(cfg.TRAIN.LR), float(cfg.TRAIN.WD), decay)
    return torch.optim.AdamW(groups, lr=float(cfg.TRAIN.LR), betas=(0.9, 0.999),
                             weight_decay=float(cfg.TRAIN.WD))


def warmup_factor(step: int, iters: int, ratio: float) -> float:
    """mmcv's linear warm-up multiplier at global ``step`` (1 from ``iters`` on)."""
    if iters <= 0 or step >= iters:
        return 1.0
    return 1.0 - (1.0 - step / iters) * (1.0 - ratio)


def apply_warmup(optimizer, cfg, epoch: int, step: int, lr_factor) -> None:
    """Set every group's LR for global ``step`` of ``epoch`` while the warm-up lasts.

    The scheduled LR is ``initial_lr * lr_factor(cfg, epoch)`` (the LambdaLR value); the last
    call, at ``step == WARMUP_ITERS``, puts it back exactly. Pure host arithmetic, no sync.
    """
    iters = int(cfg.TRAIN.WARMUP_ITERS)
    if iters <= 0 or step > iters:
        return
    k = warmup_factor(step, iters, float(cfg.TRAIN.WARMUP_RATIO)) * lr_factor(cfg, epoch)
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("initial_lr", group["lr"]) * k
