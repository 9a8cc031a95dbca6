"""Normalisation statistics of a prepared training split (SPEC §0, replacing §5.5's broken path).

Shapes: ``N`` samples, ``J`` joints.
2D: pixels, over the samples whose joints ALL lie strictly within ±``margin_px`` of the image
(``-margin < x < width + margin`` and the same for y). 3D: cm, camera frame, root-relative, every
sample. Mean and population std (ddof 0) per joint and coordinate.
"""
import numpy as np

from lib.utils.errors import BadValueError


def compute_stats(joints_2d_px, joints_3d_cm, width, height, margin_px=200.0):
    """joints_2d_px (N,J,2), joints_3d_cm (N,J,3), width/height (N,) or scalars ->
    (stats dict mean_2d/std_2d (J,2), mean_3d/std_3d (J,3) float32, counts dict n_2d/n_3d)."""
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
    stats = {"mean_2d": kept.mean(axis=0), "std_2d": kept.std(axis=0),
             "mean_3d": j3d.mean(axis=0), "std_3d": j3d.std(axis=0)}
    stats = {k: v.astype(np.float32) for k, v in stats.items()}
    return stats, {"n_2d": int(inside.sum()), "n_3d": int(len(j3d))}


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
