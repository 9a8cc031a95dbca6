"""Loading 2D detector weights: whole checkpoints strictly, pretrained subsets with a report.

Accepted layouts (docs/weights.md#official-checkpoint-layouts), tried in this order unless ``key=`` names one:

* a plain state dict ``{param_name: tensor}`` (``model_best.pth``, ``final_state.pth``,
  released ``pose_hrnet_w32_*.pth``);
* a dict holding one under ``'state_dict'`` (HRNet ``checkpoint.pth``; preferred because it is
  what the reference resumes from), else ``'best_state_dict'``, else ``'model'`` when that is a
  dict of tensors (the reference stores the model *name* there, so a string is ignored);
* any of the above with every key prefixed ``module.`` (``nn.DataParallel``) or ``_orig_mod.``
  (``torch.compile``); the prefix is stripped.

Files are read with ``torch.load(path, map_location='cpu', weights_only=True)``: no code from a
checkpoint is ever executed. Numpy arrays and scalars (HRNet's ``perf``) are allowed through
``torch.serialization.safe_globals``; anything else that is not plain data is refused with an error
naming the file, as is a truncated file or one that is not a checkpoint at all.

``*.num_batches_tracked`` buffers missing from an old (pre-1.0) file are not an error: BatchNorm
fills them with 0, exactly as ``nn.Module.load_state_dict`` does for such files. This is said in
the report.
"""
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from lib.utils.errors import UserError

logger = logging.getLogger(__name__)

STATE_DICT_KEYS = ("state_dict", "best_state_dict", "model")
PREFIXES = ("module.", "_orig_mod.")
_SHOW = 8   # how many key names an error message lists per category


class CheckpointMismatchError(UserError, RuntimeError):
    """A checkpoint's keys or shapes do not match the network (message lists them)."""


@dataclass
class LoadReport:
    """What a load did. ``loaded``: keys copied into the model; the other lists were skipped."""

    source: str
    layout: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)          # in the model, not in the file
    unexpected: List[str] = field(default_factory=list)       # in the file, not in the model
    shape_mismatch: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # key, file, model
    not_selected: List[str] = field(default_factory=list)     # filtered out by PRETRAINED_LAYERS
    filled_num_batches_tracked: List[str] = field(default_factory=list)

    @property
    def skipped(self) -> List[str]:
        return (self.unexpected + [k for k, _, _ in self.shape_mismatch] + self.not_selected)

    def summary(self) -> str:
        lines = [f"{self.source} [{self.layout}]: loaded {len(self.loaded)} tensors"]
        for label, keys in (("not in PRETRAINED_LAYERS (skipped)", self.not_selected),
                            ("not in the model (skipped)", self.unexpected),
                            ("left at their initial values (absent from the file)", self.missing),
                            ("num_batches_tracked absent, set to 0",
                             self.filled_num_batches_tracked)):
            if keys:
                lines.append(f"  {len(keys)} {label}: {_head(keys)}")
        if self.shape_mismatch:
            items = [f"{k} file{tuple(a)} vs model{tuple(b)}" for k, a, b in self.shape_mismatch]
            lines.append(f"  {len(items)} with a different shape (skipped): {_head(items)}")
        return "\n".join(lines)

    __str__ = summary


def _head(items: Sequence[str], n: int = _SHOW) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def read_checkpoint(path: Union[str, os.PathLike]) -> object:
    """``torch.load(path, map_location='cpu', weights_only=True)`` with numpy data allowed.

    Errors name the file: a truncated file or random bytes, or one that holds Python objects
    (refused, never executed; :func:`lib.utils.safe_io.torch_load`).
    """
    from lib.utils.safe_io import torch_load
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r} (paths are relative to the "
                                f"current directory, normally the repository root)")
    return torch_load(path, what="detector checkpoint")


def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def extract_state_dict(obj, key: Optional[str] = None) -> Tuple[Dict[str, torch.Tensor], str]:
    """Find the state dict inside a loaded checkpoint -> ``(state_dict, layout description)``.

    ``key`` forces one entry (e.g. ``'best_state_dict'``); otherwise see the module docstring.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"a checkpoint must be a dict, got {type(obj).__name__}")
    if key is not None:
        if key not in obj or not _is_tensor_dict(obj[key]):
            raise KeyError(f"checkpoint has no state dict under {key!r}; its top-level keys are "
                           f"{_head(sorted(map(str, obj)))}")
        state, layout = obj[key], f"dict[{key!r}]"
    elif _is_tensor_dict(obj):
        state, layout = obj, "plain state dict"
    else:
        for candidate in STATE_DICT_KEYS:
            if candidate in obj and _is_tensor_dict(obj[candidate]):
                state, layout = obj[candidate], f"dict[{candidate!r}]"
                break
        else:
            raise KeyError(f"no state dict found: not a dict of tensors and none of "
                           f"{list(STATE_DICT_KEYS)} holds one; top-level keys: "
                           f"{_head(sorted(map(str, obj)))}")
    state = dict(state)
    for prefix in PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            layout += f", {prefix!r} prefix stripped"
    return state, layout


def _unwrap(model: nn.Module) -> nn.Module:
    # Checkpoints are keyed by the bare network; load through DataParallel/DDP/compile wrappers.
    wrappers = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    while True:
        if isinstance(model, wrappers):
            model = model.module
        elif type(model).__name__ == "OptimizedModule" and isinstance(
                getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _resolve(path_or_state, key) -> Tuple[Dict[str, torch.Tensor], str, str]:
    if isinstance(path_or_state, Mapping):
        source = "<in-memory checkpoint>"
        obj = path_or_state
    else:
        source = os.fspath(path_or_state)
        obj = read_checkpoint(source)
    state, layout = extract_state_dict(obj, key)
    return state, layout, source


def _compare(model: nn.Module, state: Dict[str, torch.Tensor],
             report: LoadReport) -> Dict[str, torch.Tensor]:
    """Fill the report; return the subset of ``state`` that can be copied."""
    own = model.state_dict()
    usable = {}
    for k, v in state.items():
        if k not in own:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            report.shape_mismatch.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            usable[k] = v
    for k in own:
        if k not in state:
            if k.endswith("num_batches_tracked"):
                report.filled_num_batches_tracked.append(k)
            else:
                report.missing.append(k)
    report.loaded = list(usable)
    return usable


def _copy(model: nn.Module, usable: Dict[str, torch.Tensor], report: LoadReport) -> None:
    with torch.no_grad():
        for k in report.filled_num_batches_tracked:
            usable = {**usable, k: torch.zeros((), dtype=torch.long)}
        result = model.load_state_dict(usable, strict=False)
    # Anything torch reports beyond our own comparison would mean a bookkeeping bug here.
    allowed_missing = set(report.missing) | {k for k, _, _ in report.shape_mismatch}
    surprise = set(result.unexpected_keys) | (set(result.missing_keys) - allowed_missing)
    if surprise:
        raise RuntimeError(f"internal error loading {report.source}: "
                           f"unaccounted keys {sorted(surprise)}")


def load_pose_checkpoint(model: nn.Module, path_or_state, strict: bool = True,
                         key: Optional[str] = None) -> LoadReport:
    """Load a whole-detector checkpoint into ``model``.

    ``path_or_state``: a file path or an already loaded checkpoint object (any layout of the
    module docstring). ``strict=True``: every key and shape must match, otherwise
    :class:`CheckpointMismatchError` lists the first missing, unexpected and mis-shaped keys and
    the layout that was tried, and nothing is copied. ``strict=False``: copies what matches
    and logs a warning listing everything skipped. Returns a :class:`LoadReport`.
    """
    state, layout, source = _resolve(path_or_state, key)
    target = _unwrap(model)
    report = LoadReport(source=source, layout=layout)
    usable = _compare(target, state, report)
    problems = report.missing or report.unexpected or report.shape_mismatch
    if strict and problems:
        parts = [f"checkpoint {source} does not match {type(target).__name__} "
                 f"(layout tried: {layout})"]
        if report.missing:
            parts.append(f"{len(report.missing)} missing keys: {_head(report.missing)}")
        if report.unexpected:
            parts.append(f"{len(report.unexpected)} unexpected keys: {_head(report.unexpected)}")
        if report.shape_mismatch:
            items = [f"{k} file{a} vs model{b}" for k, a, b in report.shape_mismatch]
            parts.append(f"{len(items)} shape mismatches: {_head(items)}")
        parts.append("Check that MODEL.NAME, MODEL.NUM_JOINTS and MODEL.EXTRA describe the network "
                     "that wrote this file; to load only the backbone use init_pretrained with "
                     "MODEL.EXTRA.PRETRAINED_LAYERS")
        raise CheckpointMismatchError("\n  ".join(parts))
    if not usable:
        raise CheckpointMismatchError(f"checkpoint {source} ({layout}) shares no key of matching "
                                      f"shape with {type(target).__name__}; nothing to load")
    _copy(target, usable, report)
    if problems or report.filled_num_batches_tracked:
        logger.warning("loaded with skips: %s", report.summary())
    else:
        logger.info("loaded %s", report.summary())
    return report


def init_pretrained(model: nn.Module, path_or_state, pretrained_layers: Sequence[str] = ("*",),
                    key: Optional[str] = None) -> LoadReport:
    """Initialise the parts of ``model`` named in ``pretrained_layers`` from a checkpoint.

    Like the reference ``init_weights``: a file key is used when its first dotted component is
    in ``pretrained_layers`` (all keys when the list starts with ``'*'``). Unlike it, shapes are
    checked and nothing is silent: keys filtered out, keys the model lacks, shape mismatches and
    model parameters left at their initial values are all in the returned :class:`LoadReport`
    and logged as a warning. Raises :class:`CheckpointMismatchError` when nothing could be loaded.
    """
    layers = [str(x) for x in pretrained_layers]
    if not layers:
        raise ValueError("init_pretrained: pretrained_layers is empty; list module names such as "
                         "['conv1', 'layer1', 'stage2'] or ['*'] for all")
    state, layout, source = _resolve(path_or_state, key)
    take_all = layers[0] == "*"
    wanted = set(layers)
    selected = {k: v for k, v in state.items() if take_all or k.split(".", 1)[0] in wanted}
    target = _unwrap(model)
    report = LoadReport(source=source, layout=layout)
    report.not_selected = [k for k in state if k not in selected]
    usable = _compare(target, selected, report)
    if not usable:
        raise CheckpointMismatchError(
            f"init_pretrained: no tensor of {source} ({layout}) matches {type(target).__name__} "
            f"within PRETRAINED_LAYERS={layers}; file keys start with "
            f"{_head(sorted({k.split('.', 1)[0] for k in state}))}")
    _copy(target, usable, report)
    if report.skipped or report.missing:
        logger.warning("init_pretrained: %s", report.summary())
    else:
        logger.info("init_pretrained: %s", report.summary())
    return report
