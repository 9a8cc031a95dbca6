"""Reading and writing lifter weights.

Layouts recognised by :func:`load_lifter_checkpoint` (tried in this order):

* ``l2d-lifter``: our self-contained file ``{'format': 'l2d-lifter', 'version': 1, 'name',
  'num_joints', 'dataset', 'state_dict', 'stats' (dict of tensors or None), 'epoch', 'metrics',
  'config', 'arch'}`` written by :func:`save_lifter_checkpoint` (run/train_lifter.py); ``arch`` (the
  factory's size keywords, e.g. ``{'dim': 64, 'depth': 4, 'heads': 8}``; absent or ``{}`` = published
  sizes) lets the file rebuild its network without the config;
* ``model_pos``: VideoPose3D / MixSTE ``.bin`` dicts (``{'epoch', 'lr', 'optimizer', 'model_pos', ...}``);
* ``state_dict``: ``{'state_dict': ...}`` wrappers;
* ``plain``: a bare state dict (SimpleBaseline ``model_best.pth``, IGANet ``.pth``).

A ``module.`` prefix (``nn.DataParallel``, e.g. MixSTE) is stripped. Files are read with
``torch.load(weights_only=True)`` with numpy arrays, scalars and RNG states allowed (official
``.bin`` files pickle numpy RNG states); any other Python object is refused with an error naming
the file. ``weights_only=False`` (code from the file may run) is used only for a file the user
named in ``TRUSTED_FILES`` / ``--trust``.
"""
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn as nn

from lib.utils.atomic_io import atomic_save
from lib.utils.errors import BadValueError, UserError

FORMAT = "l2d-lifter"
VERSION = 1


class LifterWeightsMismatchError(UserError, RuntimeError):
    """A lifter file's keys or shapes do not match the network (the message lists them)."""


@dataclass
class LifterCheckpoint:
    state_dict: Dict[str, torch.Tensor]
    layout: str                                   # e.g. 'plain', 'model_pos+module.', 'l2d-lifter'
    stats: Optional[Dict[str, torch.Tensor]] = None
    meta: Dict = field(default_factory=dict)      # name, num_joints, dataset, epoch, metrics, config
    source: str = "<in-memory>"


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_module(state_dict):
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}, True
    return dict(state_dict), False


def load_lifter_checkpoint(source, *, weights_only: bool = True, map_location="cpu") -> LifterCheckpoint:
    """Read a lifter checkpoint (path or already-loaded object) into a :class:`LifterCheckpoint`."""
    name = "<in-memory>"
    if isinstance(source, (str, Path)):
        name = str(source)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"lifter checkpoint not found: {source}")
        from lib.utils.safe_io import torch_load
        # weights_only=False only for a caller that decided to trust this file (TRUSTED_FILES / --trust)
        obj = torch_load(source, what="lifter checkpoint", map_location=map_location,
                         trusted=None if weights_only else [source])
    else:
        obj = source

    meta, stats = {}, None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if int(obj.get("version", 0)) > VERSION:
            raise BadValueError(f"{name}: l2d-lifter version {obj.get('version')} is newer than this code "
                             f"(reads up to {VERSION})")
        layout, state_dict = FORMAT, obj["state_dict"]
        stats = obj.get("stats")
        meta = {k: obj.get(k) for k in ("name", "num_joints", "dataset", "epoch", "metrics", "config", "arch")}
    elif isinstance(obj, dict) and "model_pos" in obj:
        layout, state_dict = "model_pos", obj["model_pos"]
        meta = {"epoch": obj.get("epoch")}
    elif isinstance(obj, dict) and "state_dict" in obj and _is_state_dict(obj["state_dict"]):
        layout, state_dict = "state_dict", obj["state_dict"]
    elif _is_state_dict(obj):
        layout, state_dict = "plain", obj
    else:
        keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise BadValueError(f"{name}: not a lifter checkpoint (top-level keys {keys}); expected a state dict, "
                         f"{{'model_pos': ...}}, {{'state_dict': ...}} or an l2d-lifter file")
    if not _is_state_dict(state_dict):
        raise BadValueError(f"{name}: layout {layout!r} holds no tensor state dict")
    state_dict, stripped = _strip_module(state_dict)
    if stripped:
        layout += "+module."
    return LifterCheckpoint(state_dict=state_dict, layout=layout, stats=stats, meta=meta, source=name)


def load_net_weights(net: nn.Module, ckpt: LifterCheckpoint) -> Dict[str, list]:
    """Load ``ckpt`` into ``net`` strictly (keys and shapes); returns ``{'ignored': [...]}``.

    Keys matching ``net.checkpoint_ignored_keys`` (a regex; e.g. IGANet's adjacency written by a
    CPU-trained variant) are dropped and reported. Anything else missing, unexpected or of the
    wrong shape raises an error listing the first offenders and the layout tried.
    """
    pattern = getattr(net, "checkpoint_ignored_keys", None)
    own = net.state_dict()
    state = dict(ckpt.state_dict)
    ignored = []
    if pattern:
        ignored = sorted(k for k in state if re.search(pattern, k) and k not in own)
        for k in ignored:
            del state[k]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise LifterWeightsMismatchError(
            f"{ckpt.source}: weights do not match {type(net).__name__} (layout tried: {ckpt.layout}; "
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} wrong shape). "
            f"First missing: {missing[:5]}; first unexpected: {unexpected[:5]}; wrong shapes: {wrong[:3]}. "
            f"Check that the file belongs to this lifter and joint count.")
    net.load_state_dict(state, strict=True)
    return {"ignored": ignored}


def save_lifter_checkpoint(path, net, *, name: str, num_joints: int, dataset: str, stats=None,
                           epoch: Optional[int] = None, metrics: Optional[Dict[str, float]] = None,
                           config: Optional[Dict] = None, arch: Optional[Dict] = None) -> Path:
    """Write the self-contained ``l2d-lifter`` file atomically (tmp + ``os.replace``).

    ``net`` is the bare network or a :class:`model_3d.Lifter` (its ``.net`` and stats are used).
    ``config`` must hold plain Python values (it is read back with ``weights_only=True``). ``arch``:
    the network's size keywords (default: the ``Lifter``'s ``arch``), so the file loads without a config.
    """
    from .lifter import coerce_stats   # local: lifter imports nothing from here

    if hasattr(net, "net") and hasattr(net, "stats"):
        stats = net.stats if stats is None else stats
        arch = getattr(net, "arch", None) if arch is None else arch
        net = net.net
    stats_t = coerce_stats(stats, num_joints)
    payload = {
        "format": FORMAT, "version": VERSION, "name": name, "num_joints": int(num_joints),
        "dataset": dataset,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "stats": None if stats_t is None else {k: v.cpu() for k, v in stats_t.items()},
        "epoch": None if epoch is None else int(epoch),
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
        "config": config or {},
        "arch": {str(k): (v if isinstance(v, (bool, str)) else int(v) if float(v).is_integer() else float(v))
                 for k, v in (arch or {}).items()},
    }
    return atomic_save(payload, path)
