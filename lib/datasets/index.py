"""The prepared-dataset index: a versioned ``index.json`` plus one ``<split>.npz`` per split and
``stats.npz``, all plain arrays (loadable with ``allow_pickle=False``).

Layout under the prepared root::

    index.json   {format, version, dataset, num_joints, image_root, splits: {name: {file, count, ...}},
                  counts, report, fingerprint, conventions}
    train.npz    image (N,) str, joints_2d (N,J,2) f32 px, joints_vis (N,J) u8, joints_3d (N,J,3) f32 cm
                 root-relative camera frame, hip_camera (N,3) f32 cm, width/height (N,) i32, action (N,) str,
                 subject (N,) str, camera (N,) str, frame (N,) i32, cam_R (N,3,3), cam_T (N,3) cm,
                 cam_K (N,3,3), cam_dist (N,5)
    stats.npz    mean_2d (J,2) px, std_2d (J,2), mean_3d (J,3) cm, std_3d (J,3)

``image`` paths are relative to ``image_root``, itself relative to the prepared root unless absolute.
An index of another format version is rejected with the command that rebuilds it.
"""
import errno
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from lib.utils.errors import DiskFullError, UserError
from lib.utils.safe_io import load_npz

FORMAT = "l2d-dataset-index"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
STATS_FILE = "stats.npz"

SPLIT_KEYS = ("image", "joints_2d", "joints_vis", "joints_3d", "hip_camera", "width", "height",
              "action", "subject", "camera", "frame", "cam_R", "cam_T", "cam_K", "cam_dist")
# Optional per-joint arrays (older preparations lack them): joints_3d_valid = the 3D annotation is
# real (Panoptic: confidence > 0.1; the toolbox puts the others at the world origin).
OPTIONAL_KEYS = ("joints_3d_valid",)
STATS_KEYS = ("mean_2d", "std_2d", "mean_3d", "std_3d")
_DTYPES = {"joints_2d": np.float32, "joints_vis": np.uint8, "joints_3d": np.float32,
           "hip_camera": np.float32, "width": np.int32, "height": np.int32, "frame": np.int32,
           "cam_R": np.float32, "cam_T": np.float32, "cam_K": np.float32, "cam_dist": np.float32,
           "joints_3d_valid": np.uint8}
_STRINGS = ("image", "action", "subject", "camera")

PREPARE_COMMANDS = {
    "h36m": "python run/prepare_h36m.py --src <h36m-fetch processed/, L2D layout or official archives> --dst {root}",
    "panoptic": "python run/prepare_panoptic.py --src <panoptic-toolbox folder> --dst {root}",
}


class DatasetIndexError(UserError, RuntimeError):
    """A prepared dataset is missing, incomplete, or of another format version."""


def prepare_hint(dataset, root):
    cmd = PREPARE_COMMANDS.get(dataset, "python run/prepare_<dataset>.py --src DIR --dst {root}")
    return cmd.format(root=root)


def _atomic_write(path: Path, write):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)       # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, path)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        kept = "the previous file is intact" if path.exists() else "nothing was written"
        raise DiskFullError(err.errno, f"no space left on the device while writing {path}; {kept}. Free space, "
                                       f"then re-run the preparation", str(path)) from err
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def empty_split(num_joints):
    """A zero-length split with the right dtypes and shapes (for concatenation)."""
    J = num_joints
    shapes = {"joints_2d": (0, J, 2), "joints_vis": (0, J), "joints_3d": (0, J, 3), "hip_camera": (0, 3),
              "width": (0,), "height": (0,), "frame": (0,), "cam_R": (0, 3, 3), "cam_T": (0, 3),
              "cam_K": (0, 3, 3), "cam_dist": (0, 5)}
    out = {k: np.zeros(s, dtype=_DTYPES[k]) for k, s in shapes.items()}
    out.update({k: np.zeros((0,), dtype=str) for k in _STRINGS})
    return out


def check_split_arrays(arrays, num_joints, where="split"):
    """Cast to the index dtypes and check every key and shape; returns a new dict."""
    missing = [k for k in SPLIT_KEYS if k not in arrays]
    if missing:
        raise KeyError(f"{where}: missing arrays {missing}; expected {list(SPLIT_KEYS)}")
    n = len(arrays["image"])
    J = num_joints
    want = {"joints_2d": (n, J, 2), "joints_vis": (n, J), "joints_3d": (n, J, 3), "hip_camera": (n, 3),
            "joints_3d_valid": (n, J),
            "cam_R": (n, 3, 3), "cam_T": (n, 3), "cam_K": (n, 3, 3), "cam_dist": (n, 5)}
    out = {}
    for k in SPLIT_KEYS + tuple(k for k in OPTIONAL_KEYS if k in arrays):
        a = np.asarray(arrays[k])
        a = a.astype(str) if k in _STRINGS else a.astype(_DTYPES[k])
        shape = want.get(k, (n,))
        if a.shape != shape:
            raise ValueError(f"{where}: array {k!r} has shape {a.shape}, expected {shape}")
        out[k] = a
    return out


def write_split(root, split, arrays, num_joints):
    root = Path(root)
    arrays = check_split_arrays(arrays, num_joints, where=f"{root}/{split}.npz")
    _atomic_write(root / f"{split}.npz", lambda tmp: _save_npz(tmp, arrays))
    return len(arrays["image"])


def _save_npz(tmp, arrays):
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def write_stats(root, stats):
    missing = [k for k in STATS_KEYS if k not in stats]
    if missing:
        raise KeyError(f"stats: missing {missing}; expected {list(STATS_KEYS)}")
    arrays = {k: np.asarray(stats[k], dtype=np.float32) for k in STATS_KEYS}
    _atomic_write(Path(root) / STATS_FILE, lambda tmp: _save_npz(tmp, arrays))


def write_index(root, info):
    """Write ``index.json`` last (after the npz files): its presence marks a complete preparation."""
    info = dict(info)
    info["format"] = FORMAT
    info["version"] = FORMAT_VERSION
    text = json.dumps(info, indent=2, sort_keys=False)
    _atomic_write(Path(root) / INDEX_FILE, lambda tmp: Path(tmp).write_text(text))


def read_index(root, dataset=None):
    """Read and validate ``<root>/index.json`` -> dict. Errors name the path and the prepare command."""
    root = Path(root)
    path = root / INDEX_FILE
    hint = prepare_hint(dataset or "h36m", root)
    if not root.is_dir():
        raise DatasetIndexError(f"dataset root {root} does not exist; prepare it with: {hint}")
    if not path.is_file():
        old = sorted(p.name for p in root.glob("*_train.pkl")) + sorted(p.name for p in root.glob("*_valid.pkl"))
        extra = f" (found the original's pickle caches {old}, which are not read)" if old else ""
        raise DatasetIndexError(f"{path} not found{extra}; prepare the dataset with: {hint}")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetIndexError(f"{path} is unreadable ({exc}); rebuild it with: {hint} --force") from exc
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DatasetIndexError(f"{path} is not an L2D dataset index (format {info.get('format') if isinstance(info, dict) else None!r}); "
                                f"rebuild it with: {hint} --force")
    if info.get("version") != FORMAT_VERSION:
        raise DatasetIndexError(f"{path} was written by index format version {info.get('version')!r}, this code "
                                f"reads version {FORMAT_VERSION}; rebuild it with: {prepare_hint(info.get('dataset', dataset), root)} --force")
    if dataset is not None and info.get("dataset") != dataset:
        raise DatasetIndexError(f"{path} holds dataset {info.get('dataset')!r}, not {dataset!r}; "
                                f"check DATASET.ROOT / DATASET.DATASET")
    return info


def load_split(root, split, dataset=None):
    """-> (info, arrays) of one split, every key and shape checked."""
    root = Path(root)
    info = read_index(root, dataset)
    splits = info.get("splits", {})
    if split not in splits:
        raise DatasetIndexError(f"{root / INDEX_FILE} has no split {split!r} (has {sorted(splits)}); "
                                f"prepare it with: {prepare_hint(info['dataset'], root)} --force")
    path = root / splits[split].get("file", f"{split}.npz")
    if not path.is_file():
        raise DatasetIndexError(f"{path} (split {split!r}) not found; rebuild with: "
                                f"{prepare_hint(info['dataset'], root)} --force")
    arrays = load_npz(path, f"rebuild it with: {prepare_hint(info['dataset'], root)} --force")
    arrays = check_split_arrays(arrays, int(info["num_joints"]), where=str(path))
    if len(arrays["image"]) != int(splits[split].get("count", len(arrays["image"]))):
        raise DatasetIndexError(f"{path} holds {len(arrays['image'])} samples but {root / INDEX_FILE} says "
                                f"{splits[split]['count']}; rebuild with: {prepare_hint(info['dataset'], root)} --force")
    return info, arrays


def load_stats(root_or_file):
    """``stats.npz`` (a prepared root or the file) -> dict of float32 arrays, or None if absent."""
    path = Path(root_or_file)
    if path.is_dir():
        path = path / STATS_FILE
    if not path.is_file():
        return None
    data = load_npz(path, "rebuild the dataset with run/prepare_h36m.py / run/prepare_panoptic.py --force")
    missing = [k for k in STATS_KEYS if k not in data]
    if missing:
        raise DatasetIndexError(f"{path} lacks {missing}; rebuild the dataset with --force")
    return {k: data[k].astype(np.float32) for k in STATS_KEYS}


def image_root(root, info):
    """Absolute folder that the split's ``image`` paths are relative to."""
    path = Path(info.get("image_root", "."))
    return path if path.is_absolute() else Path(os.path.normpath(Path(root) / path))


def up_to_date_index(dst, dataset: str, fingerprint, log=print):
    """The existing index at ``dst`` when it was built from the same inputs and options, else None."""
    dst = Path(dst)
    if not (dst / INDEX_FILE).is_file():
        return None
    try:
        old = read_index(dst, dataset)
    except DatasetIndexError as exc:
        log(f"rebuilding: {exc}")
        return None
    if old.get("fingerprint") == fingerprint and all((dst / s["file"]).is_file() for s in old["splits"].values()):
        log(f"{dst / INDEX_FILE} is up to date (same inputs and options); nothing to do (--force rebuilds)")
        return old
    return None
