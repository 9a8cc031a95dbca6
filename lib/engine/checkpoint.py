"""Checkpoints that load with ``torch.load(weights_only=True)``: tensors and plain Python types only.

* checkpoints are written with :func:`lib.utils.atomic_io.atomic_save` (a kill or a full disk
  never leaves a truncated file);
* :func:`load_checkpoint` is ``torch.load(path, map_location, weights_only=True)`` with an error
  that names the file and what to do.
* RNG states (torch CPU/CUDA, numpy, Python ``random``) are stored as tensors and lists
  (:func:`rng_state` / :func:`set_rng_state`) so resuming restores every random stream.
* :func:`plain` turns config nodes, tuples, numpy scalars and ``Counter``-like dicts into plain
  dicts / lists / numbers (``weights_only`` refuses other classes).

Training checkpoint layout (``checkpoint.pth``, written by :mod:`lib.engine.trainer`)::

    {'format': 'l2d-train-state', 'version': 1, 'epoch': next epoch to run (int),
     'model': '<MODEL.NAME>_<dataset>', 'state_dict': detector weights, 'optimizer': Adam state,
     'scheduler': LR scheduler state, 'scaler': AMP GradScaler state or None,
     'best_perf': float, 'best_cross_perf': float, 'perf': this epoch's selection metric,
     'objective': loss state (DWA history, dropout RNG), 'rng': rng_state(),
     'history': history.json content, 'config': resolved config (plain dict), 'config_yaml': str}

``model_best.pth``, ``model_best_cross.pth`` and ``final_state.pth`` are bare detector state dicts
(loadable by ``model_2d.load_pose_checkpoint`` and by the original code).
"""
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from lib.utils.safe_io import torch_load

TRAIN_FORMAT = "l2d-train-state"
TRAIN_VERSION = 1


def plain(obj):
    """Recursively convert ``obj`` to types ``torch.load(weights_only=True)`` accepts."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {(k if isinstance(k, (str, int, float, bool)) or k is None else str(k)): plain(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a weights_only checkpoint; convert it to "
                    f"tensors / lists / dicts / numbers first")


def load_checkpoint(path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; errors name the file and what to do."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch_load(path, what="training checkpoint", map_location=map_location)


# ----------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """Every random stream as tensors / lists / numbers."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "python": {"version": int(py_version), "state": [int(v) for v in py_state],
                   "gauss": None if py_gauss is None else float(py_gauss)},
    }
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state` (CUDA states restored only where devices exist)."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        n = min(len(cuda), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([c.cpu().to(torch.uint8) for c in cuda[:n]])
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), int(npst["pos"]),
                         int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss"]))
