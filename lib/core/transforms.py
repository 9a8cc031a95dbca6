"""Person box, centre/scale and the crop affine of the HRNet pipeline, vectorised (docs/original.md#sample-pipeline,
docs/original.md#heatmap-to-image-coordinates).

Shapes: ``...`` any leading batch dims, ``J`` joints. Coordinates are ``(x, y)`` = (column, row) in
pixels; ``scale`` is the box size divided by ``pixel_std`` (200), HRNet's convention.

The original solves a 3-point affine with OpenCV for every sample; the three points (centre, centre
moved up by half the box width rotated by ``rot``, and a third point at 90°) always describe a
similarity transform, so :func:`get_affine_transform` writes it in closed form for a whole batch.
"""
import numpy as np

PIXEL_STD = 200.0


def box_from_joints(joints_2d_px, width, height, pad=0.075):
    """Padded GT box of all joints (visible or not), clipped to the image, truncated to int.

    joints_2d_px (...,J,2); width, height scalars or (...) -> box (...,4) int64 (x1, y1, x2, y2).
    """
    joints = np.asarray(joints_2d_px, dtype=np.float64)
    lo, hi = joints.min(axis=-2), joints.max(axis=-2)
    size = hi - lo
    width = np.asarray(width, dtype=np.float64)
    height = np.asarray(height, dtype=np.float64)
    x1 = np.maximum(0.0, lo[..., 0] - pad * size[..., 0])
    y1 = np.maximum(0.0, lo[..., 1] - pad * size[..., 1])
    x2 = np.minimum(width, hi[..., 0] + pad * size[..., 0])
    y2 = np.minimum(height, hi[..., 1] + pad * size[..., 1])
    # int() in the original truncates toward zero; the values are >= 0 here except for boxes
    # entirely left/above the image, where trunc keeps the original's behaviour too.
    return np.trunc(np.stack([x1, y1, x2, y2], axis=-1)).astype(np.int64)


def box_to_center_scale(box, aspect_ratio, pixel_std=PIXEL_STD, scale_mult=1.25):
    """Box (...,4) (x1, y1, x2, y2) -> (center (...,2) float32 px, scale (...,2) float32 box/pixel_std).

    The box is widened or heightened to ``aspect_ratio`` = width / height of the network input,
    then scaled by ``scale_mult`` (HRNet's x1.25 context margin).
    """
    box = np.asarray(box, dtype=np.float64)
    x1, y1, x2, y2 = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    w, h = x2 - x1, y2 - y1
    center = np.stack([x1 + w * 0.5, y1 + h * 0.5], axis=-1)
    too_wide = w > aspect_ratio * h
    too_tall = w < aspect_ratio * h
    h = np.where(too_wide, w / aspect_ratio, h)
    w = np.where(too_tall, h * aspect_ratio, w)
    scale = np.stack([w, h], axis=-1) / pixel_std * scale_mult
    return center.astype(np.float32), scale.astype(np.float32)


def get_affine_transform(center, scale, rot, output_size, shift=(0.0, 0.0), inv=False,
                         pixel_std=PIXEL_STD):
    """Crop affine (image px -> crop px), or its inverse with ``inv=True``; closed form of HRNet's
    ``get_affine_transform`` (3-point solve) for a batch.

    center (...,2) px, scale (...,2) (only scale[...,0], the box width, is used, as in the original),
    rot (...) degrees (positive = counter-clockwise on screen), output_size (width, height) px,
    shift (2,) fraction of the box -> M (...,2,3) float64 with [x', y'] = M[:, :2] @ [x, y] + M[:, 2].
    """
    center = np.asarray(center, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    rot_rad = np.deg2rad(np.asarray(rot, dtype=np.float64))
    batch = np.broadcast_shapes(center.shape[:-1], scale.shape[:-1], rot_rad.shape)
    center = np.broadcast_to(center, batch + (2,))
    scale = np.broadcast_to(scale, batch + (2,))
    rot_rad = np.broadcast_to(rot_rad, batch)
    src_w = scale[..., 0] * pixel_std
    dst_w, dst_h = float(output_size[0]), float(output_size[1])
    src_center = center + scale * pixel_std * np.asarray(shift, dtype=np.float64)
    dst_center = np.array([dst_w * 0.5, dst_h * 0.5])

    k = dst_w / src_w                                   # crop px per image px
    cs, sn = np.cos(rot_rad), np.sin(rot_rad)
    # image -> crop maps the source direction rotate(v, rot) onto v, i.e. A = k * rotate(-rot).
    A = np.empty(batch + (2, 2))
    if inv:
        ki = 1.0 / k
        A[..., 0, 0], A[..., 0, 1] = ki * cs, -ki * sn
        A[..., 1, 0], A[..., 1, 1] = ki * sn, ki * cs
        t = src_center - np.einsum("...ij,j->...i", A, dst_center)
    else:
        A[..., 0, 0], A[..., 0, 1] = k * cs, k * sn
        A[..., 1, 0], A[..., 1, 1] = -k * sn, k * cs
        t = dst_center - np.einsum("...ij,...j->...i", A, src_center)
    return np.concatenate([A, t[..., None]], axis=-1)


def affine_points(points, M):
    """points (...,J,2), M (...,2,3) (or (2,3)) -> (...,J,2) float64: [x, y, 1] @ M^T."""
    points = np.asarray(points, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    return np.einsum("...jk,...ik->...ji", points, M[..., :2]) + M[..., None, :, 2]


def flip_joints(joints, joints_vis, width, flip_pairs):
    """Horizontal image flip of 2D joints: x -> width - 1 - x and left/right pairs swapped.

    joints (...,J,2+) px, joints_vis (...,J[,k]), width scalar -> (joints, joints_vis) copies.
    """
    joints = np.array(joints, copy=True)
    joints_vis = np.array(joints_vis, copy=True)
    joints[..., 0] = width - 1 - joints[..., 0]
    perm = np.arange(joints.shape[-2])
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    vis_axis = joints_vis.ndim - 1 if joints_vis.ndim == joints.ndim - 1 else joints_vis.ndim - 2
    return joints[..., perm, :], np.take(joints_vis, perm, axis=vis_axis)
