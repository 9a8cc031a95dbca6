"""Camera calibration loading and the two projection models L2D relies on.

Shapes: ``...`` any leading batch dims, ``J`` joints. Units are in the names:
``_m`` metres, ``_mm`` millimetres, ``_cm`` centimetres, ``_px`` pixels.

Conventions
-----------
Human3.6M: ``X_cam = R (X_world - T)`` with ``T`` the camera centre in world metres;
equivalently ``X_cam_mm = R X_world_mm + t_mm`` with ``t_mm = -1000 R T``.
Image points follow the Human3.6M distortion model (see :func:`project_h36m`),
which is *not* OpenCV's Brown model: the tangential terms differ by factors of 2.

CMU Panoptic: world in cm, ``x = R' p' + t`` with the axis change ``M``
(:data:`PANOPTIC_AXIS_M`) and the original L2D distortion order (docs/original.md#cmu-panoptic-data).
"""
from pathlib import Path

import numpy as np

from lib.utils.errors import BadValueError, MissingKeyError
from lib.utils.safe_io import load_json

# Human3.6M filmed eleven subjects and released the recordings of seven; the calibration of all
# eleven is public (metadata.xml), so these four exist only as cameras (the synthetic miniature
# renders unseen people with them, docs/benchmark.md).
H36M_UNRELEASED_SUBJECTS = ("S2", "S3", "S4", "S10")

SHIPPED_CAMERAS = Path(__file__).resolve().parent / "h36m_cameras.json"

H36M_CAMERA_IDS = ("54138969", "55011271", "58860488", "60457274")
# Image sizes (width, height) of the Human3.6M videos; karfly's file has none.
H36M_IMAGE_SIZE = {"54138969": (1000, 1002), "55011271": (1000, 1000),
                   "58860488": (1000, 1000), "60457274": (1000, 1002)}

# L2D's Panoptic axis change: world joints are right-multiplied, p' = p @ M = (x, z, -y).
PANOPTIC_AXIS_M = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

_LAYOUTS = (
    "shipped: {'cameras': {subject: {cam_id: {R, T (m), f, c, k, p, width, height}}}}",
    "karfly camera-parameters.json: {'intrinsics': {cam_id: {calibration_matrix, distortion}}, "
    "'extrinsics': {subject: {cam_id: {R, t (mm)}}}}",
    "L2D camera_parameters.json: {'intrinsics': {cam_id: {width, height, K, distCoef}}, "
    "'extrinsics': {subject: {cam_id: {R, t (mm)}}}}",
)


def _camera_record(R, T_m, f, c, k, p, width, height):
    """Build the full per-camera dict from the Human3.6M parameters (all float64 numpy)."""
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    T_m = np.asarray(T_m, dtype=np.float64).reshape(3)
    f = np.asarray(f, dtype=np.float64).reshape(2)
    c = np.asarray(c, dtype=np.float64).reshape(2)
    k = np.asarray(k, dtype=np.float64).reshape(3)
    p = np.asarray(p, dtype=np.float64).reshape(2)
    K = np.array([[f[0], 0.0, c[0]], [0.0, f[1], c[1]], [0.0, 0.0, 1.0]])
    dist = np.array([k[0], k[1], p[0], p[1], k[2]])
    return dict(R=R, T=T_m, f=f, c=c, k=k, p=p, width=int(width), height=int(height), K=K,
                dist=dist, t_mm=-1000.0 * R @ T_m)


def _from_intrinsics_extrinsics(data, path, K_key, dist_key):
    out = {}
    for subject, cams in data["extrinsics"].items():
        out[subject] = {}
        for cam_id, ext in cams.items():
            if cam_id not in data["intrinsics"]:
                raise MissingKeyError(f"{path}: extrinsics[{subject!r}][{cam_id!r}] has no intrinsics[{cam_id!r}]; "
                               f"add the camera's intrinsics")
            intr = data["intrinsics"][cam_id]
            K = np.asarray(intr[K_key], dtype=np.float64).reshape(3, 3)
            dist = np.asarray(intr[dist_key], dtype=np.float64).reshape(-1)
            if dist.size != 5:
                raise BadValueError(f"{path}: intrinsics[{cam_id!r}][{dist_key!r}] has {dist.size} values; "
                                 f"expected 5 (k1, k2, p1, p2, k3)")
            R = np.asarray(ext["R"], dtype=np.float64).reshape(3, 3)
            t_mm = np.asarray(ext["t"], dtype=np.float64).reshape(3)
            default_w, default_h = H36M_IMAGE_SIZE.get(cam_id, (1000, 1000))
            out[subject][cam_id] = _camera_record(
                R, -R.T @ t_mm / 1000.0, (K[0, 0], K[1, 1]), (K[0, 2], K[1, 2]),
                (dist[0], dist[1], dist[4]), (dist[2], dist[3]),
                intr.get("width", default_w), intr.get("height", default_h))
    return out


def load_h36m_cameras(path=None):
    """Load Human3.6M calibration -> {subject: {cam_id: dict}}.

    Each camera dict: R (3,3) world->camera, T (3,) camera centre in world metres, f (2,), c (2,),
    k (3,) radial k1..k3, p (2,) tangential p1, p2, width, height (int px), K (3,3),
    dist (5,) in (k1, k2, p1, p2, k3) order, t_mm (3,) with X_cam_mm = R X_world_mm + t_mm.

    ``path`` None reads the shipped ``lib/datasets/h36m_cameras.json`` (its R is read as
    camera->world unless the file says ``"R_convention": "world_to_camera"``); karfly's
    ``camera-parameters.json`` and L2D's ``camera_parameters.json`` are accepted too.
    """
    path = Path(path) if path is not None else SHIPPED_CAMERAS
    if not path.is_file():
        raise FileNotFoundError(f"camera file {path} not found; pass the path of a calibration json "
                                f"(accepted layouts: {'; '.join(_LAYOUTS)})")
    data = load_json(path)
    if isinstance(data, dict) and isinstance(data.get("cameras"), dict):
        convention = data.get("R_convention", "camera_to_world")
        if convention not in ("camera_to_world", "world_to_camera"):
            raise BadValueError(f"{path}: R_convention {convention!r} is neither 'camera_to_world' nor "
                             f"'world_to_camera'")
        # The shipped R values are those of mmpose's cameras.pkl, which that code applies as
        # X_cam = R^T (X - T): they rotate camera -> world. Transposed, they equal the published
        # world->camera rotations (karfly, VideoPose3D) and put the real sample's people upright
        # at the origin with feet on z = 0 (tests/test_cameras.py).
        flip = convention == "camera_to_world"
        return {subject: {cam_id: _camera_record(np.asarray(c["R"], dtype=np.float64).T if flip else c["R"],
                                                 c["T"], c["f"], c["c"], c["k"], c["p"], c["width"], c["height"])
                          for cam_id, c in cams.items()}
                for subject, cams in data["cameras"].items()}
    if isinstance(data, dict) and "intrinsics" in data and "extrinsics" in data:
        any_intr = next(iter(data["intrinsics"].values()), {})
        if "calibration_matrix" in any_intr:
            return _from_intrinsics_extrinsics(data, path, "calibration_matrix", "distortion")
        if "K" in any_intr:
            return _from_intrinsics_extrinsics(data, path, "K", "distCoef")
    raise BadValueError(f"{path}: unknown camera file layout (top-level keys "
                     f"{sorted(data) if isinstance(data, dict) else type(data).__name__}); "
                     f"accepted layouts: {'; '.join(_LAYOUTS)}")


def world_to_camera(X_world, R, T):
    """(...,J,3) world points -> (...,J,3) camera frame: R (X - T), same units as X and T."""
    X_world = np.asarray(X_world, dtype=np.float64)
    return (X_world - np.asarray(T, dtype=np.float64).reshape(3)) @ np.asarray(R, dtype=np.float64).T


def project_h36m(points_cam, f, c, k, p):
    """Human3.6M camera model: (...,J,3) camera-frame points (any unit) -> (...,J,2) pixels.

    With (x, y) = (X/Z, Y/Z), r2 = x² + y², radial = 1 + k1 r2 + k2 r2² + k3 r2³ and
    tan = p1 y + p2 x:  x' = x (radial + tan) + p2 r2,  y' = y (radial + tan) + p1 r2,
    then f * (x', y') + c. Reproduces the dataset's own 2D annotations (to ~1e-4 px).
    """
    points_cam = np.asarray(points_cam, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64).reshape(2)
    c = np.asarray(c, dtype=np.float64).reshape(2)
    k = np.asarray(k, dtype=np.float64).reshape(3)
    p = np.asarray(p, dtype=np.float64).reshape(2)
    xy = points_cam[..., :2] / points_cam[..., 2:3]
    r2 = np.sum(xy * xy, axis=-1, keepdims=True)
    radial = 1.0 + r2 * (k[0] + r2 * (k[1] + r2 * k[2]))
    tan = p[0] * xy[..., 1:2] + p[1] * xy[..., 0:1]
    xy_d = xy * (radial + tan) + r2 * p[::-1]
    return xy_d * f + c


def project_panoptic(points_world_cm, K, dist, R, t):
    """L2D's Panoptic projection (docs/original.md#cmu-panoptic-data): (...,J,3) world cm -> (...,J,2) pixels.

    Pass either the raw calibration ``R`` with raw world points, or L2D's ``R' = R M`` with
    ``p' = p M``: both give the same image points since M is orthogonal. ``t`` in cm. Keeps the original
    in-place quirks: yd uses the already distorted xd, v uses u through K[1,0], and the
    depth gets +1e-5 in the denominator.
    """
    points = np.asarray(points_world_cm, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64).reshape(3, 3)
    dist = np.asarray(dist, dtype=np.float64).reshape(-1)
    R = np.asarray(R, dtype=np.float64).reshape(3, 3)
    t = np.asarray(t, dtype=np.float64).reshape(3)
    k1, k2, p1, p2, k3 = dist[:5]
    x = points @ R.T + t
    xn = x[..., 0] / (x[..., 2] + 1e-5)
    yn = x[..., 1] / (x[..., 2] + 1e-5)
    r = xn * xn + yn * yn
    rad = 1.0 + k1 * r + k2 * r * r + k3 * r * r * r
    xd = xn * rad + 2.0 * p1 * xn * yn + p2 * (r + 2.0 * xn * xn)
    yd = yn * rad + 2.0 * p2 * xd * yn + p1 * (r + 2.0 * yn * yn)
    u = K[0, 0] * xd + K[0, 1] * yd + K[0, 2]
    v = K[1, 0] * u + K[1, 1] * yd + K[1, 2]
    return np.stack([u, v], axis=-1)
