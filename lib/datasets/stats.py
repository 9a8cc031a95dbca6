"""Normalisation statistics of a prepared training split (docs/differences.md; the original's own path,
docs/original.md#normalisation-statistics, cannot run).

Shapes: ``N`` samples, ``J`` joints.
2D: pixels, over the samples whose joints ALL lie strictly within ±``margin_px`` of the image
(``-margin < x < width + margin`` and the same for y). 3D: cm, camera frame, root-relative, every
sample. Mean and population std (ddof 0) per joint and coordinate.
"""
import numpy as np

from lib.utils.errors import BadValueError


def compute_stats(joints_2d_px, joints_3d_cm, width, height, margin_px=200.0, valid_3d=None):
    """joints_2d_px (N,J,2), joints_3d_cm (N,J,3), width/height (N,) or scalars ->
    (stats dict mean_2d/std_2d (J,2), mean_3d/std_3d (J,3) float32, counts dict n_2d/n_3d).

    ``valid_3d`` (N,J) (``DATASET.MASK_LOW_CONFIDENCE``): each joint's 3D mean/std over the samples
    where it is valid (a joint never valid keeps the unmasked values)."""
    j2d = np.asarray(joints_2d_px, dtype=np.float64)
    j3d = np.asarray(joints_3d_cm, dtype=np.float64)
    if len(j2d) == 0:
        raise BadValueError("cannot compute normalisation stats from an empty training split")
    w = np.broadcast_to(np.asarray(width, dtype=np.float64), j2d.shape[:1])[:, None]
    h = np.broadcast_to(np.asarray(height, dtype=np.float64), j2d.shape[:1])[:, None]
    x, y = j2d[..., 0], j2d[..., 1]
    inside = ((x > -margin_px) & (x < w + margin_px) & (y > -margin_px) & (y < h + margin_px)).all(axis=1)
    if not inside.any():
        raise BadValueError(f"no training sample has all joints within ±{margin_px} px of the image; "
                         f"cannot compute 2D normalisation stats")
    kept = j2d[inside]
    mean_3d, std_3d = j3d.mean(axis=0), j3d.std(axis=0)
    if valid_3d is not None:
        w = np.asarray(valid_3d, dtype=np.float64)[..., None]              # (N, J, 1)
        count = w.sum(axis=0)                                              # (J, 1)
        seen = count > 0
        m = (j3d * w).sum(axis=0) / np.maximum(count, 1)
        s = np.sqrt((((j3d - m) ** 2) * w).sum(axis=0) / np.maximum(count, 1))
        mean_3d, std_3d = np.where(seen, m, mean_3d), np.where(seen, s, std_3d)
    stats = {"mean_2d": kept.mean(axis=0), "std_2d": kept.std(axis=0), "mean_3d": mean_3d, "std_3d": std_3d}
    stats = {k: v.astype(np.float32) for k, v in stats.items()}
    return stats, {"n_2d": int(inside.sum()), "n_3d": int(len(j3d))}


def train_stats(cfg, root):
    """The normalisation stats a run uses: ``<root>/stats.npz``, or with ``DATASET.MASK_LOW_CONFIDENCE``
    on a split that flags invalid 3D joints, the training split's stats with those joints left out
    (computed here from the split, so the prepared folder keeps the original's numbers)."""
    from lib.datasets import index as idx
    if not bool(cfg.DATASET.MASK_LOW_CONFIDENCE):
        return idx.load_stats(root)
    _info, arrays = idx.load_split(root, cfg.DATASET.TRAIN_SET, cfg.DATASET.DATASET)
    if "joints_3d_valid" not in arrays:
        return idx.load_stats(root)            # Human3.6M: every joint is annotated
    stats, _ = compute_stats(arrays["joints_2d"], arrays["joints_3d"], arrays["width"], arrays["height"],
                             valid_3d=arrays["joints_3d_valid"])
    return stats


def write_train_stats(dst, train_arrays):
    """Compute the statistics of a prepared training split and write them to ``dst`` (both
    preparations). -> the ``stats`` entry of ``info.json``, or None without a training split."""
    if train_arrays is None:
        return None
    from lib.datasets import index as idx
    stats, counts = compute_stats(train_arrays["joints_2d"], train_arrays["joints_3d"],
                                  train_arrays["width"], train_arrays["height"])
    idx.write_stats(dst, stats)
    return {"file": idx.STATS_FILE, "split": "train", **counts} if counts else None
