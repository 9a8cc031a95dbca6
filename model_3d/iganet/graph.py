"""Skeleton graphs for IGANet: 4-way "spatial" partition of a column-normalised adjacency.

Shapes: J joints, K = 4 kernels. ``spatial_adjacency(layout)`` -> float32 numpy ``(4, J, J)`` =
[root, closer, farther, symmetric] (single frame: no temporal links). Entry ``A[k, v, w]`` is
the weight with which joint ``v`` feeds joint ``w`` (aggregation sums over ``v``).
"""
import numpy as np

# (edges, symmetric left/right pairs, hop distance of every joint to the centre joint)
LAYOUTS = {
    "h36m": (
        ((0, 1), (2, 1), (3, 2), (4, 0), (5, 4), (6, 5), (7, 0), (8, 7), (9, 8), (10, 9), (11, 8),
         (12, 11), (13, 12), (14, 8), (15, 14), (16, 15)),
        ((6, 3), (5, 2), (4, 1), (11, 14), (12, 15), (13, 16)),
        (1, 2, 3, 4, 2, 3, 4, 0, 1, 2, 3, 2, 3, 4, 2, 3, 4),
    ),
    "panoptic": (
        ((2, 12), (13, 12), (14, 13), (6, 2), (7, 6), (8, 7), (0, 2), (1, 0), (3, 0), (4, 3),
         (5, 4), (9, 0), (10, 9), (11, 10)),
        ((8, 14), (7, 13), (6, 12), (3, 9), (4, 10), (5, 11)),
        (1, 2, 0, 2, 3, 4, 1, 2, 3, 2, 3, 4, 1, 2, 3),
    ),
}
LAYOUT_BY_JOINTS = {17: "h36m", 15: "panoptic"}


def _pairs_matrix(num_joints, pairs):
    m = np.zeros((num_joints, num_joints), dtype=bool)
    idx = np.asarray(pairs, dtype=int).reshape(-1, 2)
    m[idx[:, 0], idx[:, 1]] = True
    m[idx[:, 1], idx[:, 0]] = True
    return m


def spatial_adjacency(layout: str) -> np.ndarray:
    """(4, J, J) float32: [root, closer, farther, symmetric] parts of ``A D^-1`` (max hop 1)."""
    if layout not in LAYOUTS:
        raise KeyError(f"unknown IGANet graph layout {layout!r}; known: {sorted(LAYOUTS)}")
    edges, sym, dist = LAYOUTS[layout]
    dist = np.asarray(dist)
    num_joints = dist.shape[0]
    eye = np.eye(num_joints, dtype=bool)
    is_sym = _pairs_matrix(num_joints, sym)
    linked = eye | _pairs_matrix(num_joints, edges) | is_sym        # hop distance <= 1
    adjacency = linked.astype(np.float64)
    adjacency = adjacency / adjacency.sum(axis=0, keepdims=True)    # column-normalised: A D^-1
    # Row v, column w: v is "closer" when farther from the centre than w (the original's naming).
    hop1 = linked & ~eye
    row_dist, col_dist = dist[:, None], dist[None, :]
    masks = (
        eye,
        hop1 & ~is_sym & (row_dist > col_dist),
        hop1 & ~is_sym & (row_dist < col_dist),
        hop1 & is_sym,
    )
    # Hop-1 neighbours at equal distance (none in either skeleton) are dropped, as in the original.
    return np.stack([np.where(m, adjacency, 0.0) for m in masks]).astype(np.float32)
