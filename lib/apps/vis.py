"""Pictures of poses: 2D skeletons drawn on images, 3D skeletons in a camera-like view, validation sheets.

Shapes: ``J`` joints, ``N`` samples, ``L`` lifters. Images are ``(H, W, 3)`` uint8 **BGR** (OpenCV);
2D joints ``(J, 2)`` are ``(x, y)`` pixels of that image; 3D poses ``(J, 3)`` are metres in the camera
frame (x right, y down, z forward), usually root-relative.

Colours follow the skeleton's sides (``Skeleton.left_joints`` / ``right_joints``; every other joint is
the centre line). A bone takes the side of its child joint. Two schemes: ``'pred'`` (blue left, orange
right, yellow centre) and ``'gt'`` (greens), or pass your own ``{'left', 'right', 'centre'}`` BGR dict.

Everything renders through matplotlib's Agg canvas directly (no pyplot, no global backend switch), so
it works headless and from worker threads.
"""
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from torch.utils.data import DataLoader, Subset

from lib.core.skeleton import get_skeleton
from lib.core.transforms import affine_points, get_affine_transform
from lib.engine.evaluator import predict_2d

ColorScheme = Union[str, Mapping[str, Tuple[int, int, int]]]

COLOR_SCHEMES: Dict[str, Dict[str, Tuple[int, int, int]]] = {
    # BGR
    # Cyan / magenta / yellow: rarely the colours of clothing or of the synthetic demo's red/blue limbs.
    "pred": {"left": (255, 200, 0), "right": (200, 0, 255), "centre": (0, 225, 255)},
    "gt": {"left": (90, 220, 0), "right": (0, 140, 0), "centre": (60, 190, 60)},
}
OUTLINE_BGR = (25, 25, 25)    # a dark rim under every bone keeps it readable on any background

_SHIFT = 4                    # cv2 fractional bits: joints are drawn at sub-pixel positions
_ONE = 1 << _SHIFT
_MAX_COORD = 1e5              # far-off (diverged) joints are clipped so cv2's int math cannot overflow

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# ---------------------------------------------------------------------------------------------- colours
def get_color_scheme(color_scheme: ColorScheme) -> Dict[str, Tuple[int, int, int]]:
    """'pred' | 'gt' | a dict with BGR 'left', 'right', 'centre' -> that dict."""
    if isinstance(color_scheme, str):
        try:
            return COLOR_SCHEMES[color_scheme]
        except KeyError:
            raise KeyError(f"unknown colour scheme {color_scheme!r}; known: {sorted(COLOR_SCHEMES)} "
                           f"or pass a dict with BGR 'left', 'right', 'centre'") from None
    missing = [k for k in ("left", "right", "centre") if k not in color_scheme]
    if missing:
        raise KeyError(f"colour scheme dict lacks {missing}; it needs BGR 'left', 'right', 'centre'")
    return {k: tuple(int(c) for c in color_scheme[k]) for k in ("left", "right", "centre")}


def joint_sides(skeleton) -> List[str]:
    """(J,) 'left' | 'right' | 'centre' for each joint."""
    left, right = set(skeleton.left_joints), set(skeleton.right_joints)
    return ["left" if j in left else "right" if j in right else "centre"
            for j in range(skeleton.num_joints)]


def bone_sides(skeleton) -> List[str]:
    """One side per bone ``(child, parent)``: the child's (so hip-pelvis bones carry their hip's side)."""
    sides = joint_sides(skeleton)
    return [sides[child] for child, _ in skeleton.bones]


def _rgb01(bgr: Sequence[int]) -> Tuple[float, float, float]:
    return (bgr[2] / 255.0, bgr[1] / 255.0, bgr[0] / 255.0)


# ---------------------------------------------------------------------------------------------- 2D
def default_thickness(height: int, width: int) -> int:
    """Bone line thickness in pixels for an image of this size (1 px up to 300 px, then grows)."""
    return max(1, int(round(max(height, width) / 300.0)))


def drawn_extent_px(thickness: int, radius: int, outline: bool = True) -> float:
    """How far from a bone segment or joint centre :func:`draw_skeleton_2d` can change a pixel."""
    return max((thickness + (2 if outline else 0)) / 2.0, radius + (1 if outline else 0)) + 1.0


def draw_skeleton_2d(image_bgr: np.ndarray, joints_2d_px, skeleton, color_scheme: ColorScheme = "pred",
                     conf=None, conf_thresh: float = 0.0, thickness: Optional[int] = None,
                     radius: Optional[int] = None, outline: bool = True, copy: bool = True) -> np.ndarray:
    """Bones as anti-aliased lines and joints as filled dots on a copy of ``image_bgr``.

    image_bgr (H, W, 3) uint8; joints_2d_px (J, 2) px of that image; conf (J,) or (J, 1) optional:
    joints below ``conf_thresh`` (and their bones) are not drawn, nor are non-finite joints.
    ``outline`` puts a 1-px dark rim around bones and dots. Pixels change only within
    :func:`drawn_extent_px` of a bone or joint (it includes the 1-px anti-aliasing fringe).
    Returns the drawn image (the input itself when copy=False).
    """
    image = np.array(image_bgr, copy=True) if copy else image_bgr
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"draw_skeleton_2d needs an (H, W, 3) BGR image, got shape {image.shape}")
    joints = np.asarray(joints_2d_px, dtype=np.float64).reshape(-1, 2)
    if joints.shape[0] != skeleton.num_joints:
        raise ValueError(f"{joints.shape[0]} joints given for the {skeleton.name} skeleton "
                         f"({skeleton.num_joints} joints)")
    scheme = get_color_scheme(color_scheme)
    valid = np.isfinite(joints).all(axis=1)
    if conf is not None:
        valid &= np.asarray(conf, dtype=np.float64).reshape(-1) >= conf_thresh
    if thickness is None:
        thickness = default_thickness(image.shape[0], image.shape[1])
    if radius is None:
        radius = thickness + 1
    fixed = np.round(np.clip(np.nan_to_num(joints), -_MAX_COORD, _MAX_COORD) * _ONE).astype(np.int64)
    pts = [tuple(int(v) for v in p) for p in fixed]
    bones = [(c, p, side) for (c, p), side in zip(skeleton.bones, bone_sides(skeleton)) if valid[c] and valid[p]]
    dots = [(j, side) for j, side in enumerate(joint_sides(skeleton)) if valid[j]]
    if outline:   # every rim first, so a rim never cuts across a bone drawn earlier
        for c, p, _ in bones:
            cv2.line(image, pts[c], pts[p], OUTLINE_BGR, int(thickness) + 2, cv2.LINE_AA, _SHIFT)
        for j, _ in dots:
            cv2.circle(image, pts[j], (int(radius) + 1) * _ONE, OUTLINE_BGR, -1, cv2.LINE_AA, _SHIFT)
    for c, p, side in bones:
        cv2.line(image, pts[c], pts[p], scheme[side], int(thickness), cv2.LINE_AA, _SHIFT)
    for j, side in dots:
        cv2.circle(image, pts[j], int(radius) * _ONE, scheme[side], -1, cv2.LINE_AA, _SHIFT)
    return image


def draw_box(image_bgr: np.ndarray, box, color=(200, 200, 200), thickness: int = 1) -> np.ndarray:
    """A copy of the image with the (x1, y1, x2, y2) box outlined."""
    image = np.array(image_bgr, copy=True)
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness, cv2.LINE_AA)
    return image


def denormalize_image(image_chw, color_rgb: bool = True) -> np.ndarray:
    """Network input (3, H, W) float (ImageNet mean/std normalised) -> (H, W, 3) uint8 BGR for drawing."""
    arr = image_chw.detach().cpu().numpy() if hasattr(image_chw, "detach") else np.asarray(image_chw)
    arr = arr.astype(np.float32).transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    arr = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., ::-1] if color_rgb else arr)


# ---------------------------------------------------------------------------------------------- 3D
def plot_skeleton_3d(ax, pose_3d, skeleton, color_scheme: ColorScheme = "pred", label: Optional[str] = None,
                     linestyle: str = "-", linewidth: float = 2.0, marker_size: float = 10.0,
                     elev: float = 12.0, azim: float = -70.0, min_radius_m: float = 0.2):
    """Draw one 3D skeleton on a matplotlib 3D ``ax`` in a camera-like view; returns ``ax``.

    pose_3d (J, 3) metres in the camera frame (x right, y down, z forward). Plotted as
    matplotlib (X, Y, Z) = (x, z, -y): the person stands upright, depth runs into the picture, and
    ``azim=-90, elev=0`` would be exactly the camera's view (the default turns it a little so depth
    shows). Axes are equal and cover every pose drawn on this ``ax`` so far (call it once for the
    ground truth and once per prediction to overlay them in one view).
    """
    pose = np.asarray(pose_3d, dtype=np.float64).reshape(-1, 3)
    if pose.shape[0] != skeleton.num_joints:
        raise ValueError(f"{pose.shape[0]} joints given for the {skeleton.name} skeleton "
                         f"({skeleton.num_joints} joints)")
    scheme = get_color_scheme(color_scheme)
    xyz = np.stack([pose[:, 0], pose[:, 2], -pose[:, 1]], axis=1)
    valid = np.isfinite(xyz).all(axis=1)
    for i, ((child, parent), side) in enumerate(zip(skeleton.bones, bone_sides(skeleton))):
        if valid[child] and valid[parent]:
            seg = xyz[[child, parent]]
            ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color=_rgb01(scheme[side]), linestyle=linestyle,
                    linewidth=linewidth, label=label if i == 0 else None)
    sides = joint_sides(skeleton)
    ax.scatter(xyz[valid, 0], xyz[valid, 1], xyz[valid, 2], s=marker_size, depthshade=False,
               c=[_rgb01(scheme[sides[j]]) for j in np.flatnonzero(valid)])

    seen = getattr(ax, "_l2d_points", np.zeros((0, 3)))
    seen = np.concatenate([seen, xyz[valid]], axis=0)
    ax._l2d_points = seen
    if len(seen):
        lo, hi = seen.min(axis=0), seen.max(axis=0)
        centre = (lo + hi) / 2.0
        half = max(float((hi - lo).max()) / 2.0 * 1.1, min_radius_m)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1.0, 1.0, 1.0))
    ax.set_xlabel("x (m)", labelpad=-8)
    ax.set_ylabel("z depth (m)", labelpad=-8)
    ax.set_zlabel("-y up (m)", labelpad=-8)
    ax.tick_params(labelsize=6, pad=-2)
    for axis in (ax.xaxis, ax.yaxis, ax.zaxis):
        axis.set_major_locator(MaxNLocator(4))
    ax.view_init(elev=elev, azim=azim)
    return ax


def _figure_to_bgr(fig: Figure, canvas: FigureCanvasAgg, size_wh: Tuple[int, int]) -> np.ndarray:
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    bgr = np.ascontiguousarray(rgba[..., 2::-1])
    if (bgr.shape[1], bgr.shape[0]) != tuple(size_wh):    # inch rounding can lose a pixel
        bgr = cv2.resize(bgr, tuple(size_wh), interpolation=cv2.INTER_AREA)
    return bgr


def render_3d_panel(poses: Sequence[Tuple[np.ndarray, ColorScheme, Optional[str]]], skeleton,
                    size_px: Tuple[int, int] = (360, 360), title: Optional[str] = None,
                    elev: float = 12.0, azim: float = -70.0, dpi: int = 100) -> np.ndarray:
    """3D skeletons overlaid in one view -> (h, w, 3) uint8 BGR image with ``size_px = (w, h)``.

    poses: sequence of ``(pose_3d_m (J, 3), color_scheme, label or None)``; a pose whose scheme is
    'gt' is drawn dashed so ground truth and prediction stay apart where they overlap.
    """
    w, h = int(size_px[0]), int(size_px[1])
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.9 if title else 1.0), projection="3d")
    labelled = False
    for pose, scheme, label in poses:
        plot_skeleton_3d(ax, pose, skeleton, scheme, label=label,
                         linestyle="--" if scheme == "gt" else "-", elev=elev, azim=azim)
        labelled |= bool(label)
    if labelled:
        ax.legend(loc="upper left", fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9, y=0.98)
    return _figure_to_bgr(fig, canvas, (w, h))


# ---------------------------------------------------------------------------------------------- layout
def fit_to_panel(image_bgr: np.ndarray, size_px: Tuple[int, int], fill=(40, 40, 40)):
    """Resize keeping the aspect ratio and centre it on a (w, h) canvas.

    -> (panel (h, w, 3) uint8, scale, (offset_x, offset_y)) with panel px = image px * scale + offset.
    """
    w, h = int(size_px[0]), int(size_px[1])
    ih, iw = image_bgr.shape[:2]
    scale = min(w / iw, h / ih)
    nw, nh = max(1, int(round(iw * scale))), max(1, int(round(ih * scale)))
    interp = cv2.INTER_LINEAR if scale >= 1.0 else cv2.INTER_AREA
    resized = cv2.resize(image_bgr, (nw, nh), interpolation=interp)
    panel = np.empty((h, w, 3), np.uint8)
    panel[:] = fill
    ox, oy = (w - nw) // 2, (h - nh) // 2
    panel[oy:oy + nh, ox:ox + nw] = resized
    # cv2.resize maps pixel centres: x' = (x + 0.5) * s - 0.5 for both axes' scale s ~ nw / iw.
    sx, sy = nw / iw, nh / ih
    return panel, (sx, sy), (ox + 0.5 * sx - 0.5, oy + 0.5 * sy - 0.5)


def compose_side_by_side(left_bgr: np.ndarray, right_bgr: np.ndarray, height: Optional[int] = None,
                         even: bool = True) -> np.ndarray:
    """Both images scaled to one height (default: the left one's) and put side by side.

    ``even=True`` pads to even width/height, which H.264/MPEG-4 video writers need.
    """
    height = int(height or left_bgr.shape[0])
    parts = []
    for img in (left_bgr, right_bgr):
        if img.shape[1] == 0:
            continue
        if img.shape[0] != height:
            new_w = max(1, int(round(img.shape[1] * height / img.shape[0])))
            img = cv2.resize(img, (new_w, height), interpolation=cv2.INTER_AREA
                             if img.shape[0] > height else cv2.INTER_LINEAR)
        parts.append(img)
    out = np.concatenate(parts, axis=1)
    if even and (out.shape[0] % 2 or out.shape[1] % 2):
        out = cv2.copyMakeBorder(out, 0, out.shape[0] % 2, 0, out.shape[1] % 2, cv2.BORDER_CONSTANT,
                                 value=(0, 0, 0))
    return out


def overlay_and_3d(image_bgr: np.ndarray, joints_2d_px, pose_3d_m, skeleton, conf=None,
                   conf_thresh: float = 0.0, box=None, height: Optional[int] = None,
                   title: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The two pictures infer writes for a frame.

    -> (overlay (H, W, 3): the frame with only the 2D skeleton drawn, same size as the input;
    combined (h, w', 3): the overlay (plus the person box when given) scaled to ``height`` (default
    the frame height clamped to [360, 720]) beside a square 3D plot of ``pose_3d_m``, or beside
    nothing when ``pose_3d_m`` is None).
    """
    overlay = draw_skeleton_2d(image_bgr, joints_2d_px, skeleton, "pred", conf=conf,
                               conf_thresh=conf_thresh)
    if height is None:
        height = int(min(max(image_bgr.shape[0], 360), 720))
    shown = draw_box(overlay, box) if box is not None else overlay
    if pose_3d_m is None:
        scaled = cv2.resize(shown, (max(1, int(round(shown.shape[1] * height / shown.shape[0]))), height))
        return overlay, compose_side_by_side(scaled, scaled[:, :0], height=height)
    panel = render_3d_panel([(pose_3d_m, "pred", None)], skeleton, size_px=(height, height), title=title)
    return overlay, compose_side_by_side(shown, panel, height=height)


def _as_image(item) -> np.ndarray:
    if isinstance(item, (str, Path)):
        image = cv2.imread(str(item), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"cannot read image {item}")
        return image
    if hasattr(item, "detach"):   # a normalised network input tensor (3, H, W)
        return denormalize_image(item)
    image = np.asarray(item)
    if image.ndim == 3 and image.shape[0] == 3 and image.shape[2] != 3:
        return denormalize_image(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (H, W, 3) BGR, paths or (3, H, W) normalised tensors; "
                         f"got {image.dtype} {image.shape}")
    return image


def sample_mpjpe_mm(pred_m, gt_m) -> np.ndarray:
    """(N,) mean per-joint Euclidean distance in mm of (N, J, 3) metre arrays (NaN-free inputs)."""
    diff = np.asarray(pred_m, np.float64) - np.asarray(gt_m, np.float64)
    return np.linalg.norm(diff, axis=-1).mean(axis=-1) * 1000.0


def render_validation_samples(images, joints_2d_gt_px, joints_2d_pred_px, pose_3d_gt_m,
                              pose_3d_pred_m: Mapping[str, np.ndarray], skeleton, out_dir,
                              k: Optional[int] = None, *, centers=None, scales=None,
                              crop_size: Optional[Tuple[int, int]] = None,
                              mpjpe_mm: Optional[Mapping[str, np.ndarray]] = None,
                              captions: Optional[Sequence[str]] = None, panel_px: int = 320,
                              start: int = 0) -> List[Path]:
    """Write ``k`` validation sheets ``vis_0000.png``, ``vis_0001.png``, ... into ``out_dir``.

    images: N items, each (H, W, 3) uint8 BGR, an image path, or a (3, H, W) normalised network input;
    joints_2d_gt_px / joints_2d_pred_px (N, J, 2) px of those images; pose_3d_gt_m (N, J, 3) metres;
    pose_3d_pred_m {lifter name: (N, J, 3) metres}. With ``centers (N, 2)``, ``scales (N, 2)`` and
    ``crop_size (w, h)`` the images are full frames and are cropped here like the dataset does
    (joints mapped along); without them the images are shown as they are (e.g. the crops).
    mpjpe_mm {name: (N,)} overrides the per-sample MPJPE shown in titles (default: computed here).

    Each sheet is ``panel_px * (1 + L)`` wide and ``panel_px`` high: the image with the GT (green,
    thinner) and predicted 2D skeletons, then one 3D panel per lifter with the GT (dashed) and that
    lifter's prediction in one view, titled with the sample's MPJPE. Returns the written paths.
    """

    n = len(images)
    k = n if k is None else min(int(k), n)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    gt2 = np.asarray(joints_2d_gt_px, np.float64)
    pr2 = np.asarray(joints_2d_pred_px, np.float64)
    gt3 = np.asarray(pose_3d_gt_m, np.float64)
    preds = {name: np.asarray(v, np.float64) for name, v in pose_3d_pred_m.items()}
    errors = {name: (np.asarray(mpjpe_mm[name], np.float64) if mpjpe_mm and name in mpjpe_mm
                     else sample_mpjpe_mm(v, gt3)) for name, v in preds.items()}
    crop = centers is not None and scales is not None
    if crop and crop_size is None:
        raise ValueError("render_validation_samples: centers/scales given without crop_size (w, h)")
    if crop:
        M = get_affine_transform(np.asarray(centers)[:k], np.asarray(scales)[:k], 0.0, crop_size)
        gt2 = affine_points(gt2[:k], M)
        pr2 = affine_points(pr2[:k], M)

    paths = []
    for i in range(k):
        image = _as_image(images[i])
        if crop:
            image = cv2.warpAffine(image, M[i], (int(crop_size[0]), int(crop_size[1])),
                                   flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        panel, (sx, sy), (ox, oy) = fit_to_panel(image, (panel_px, panel_px))
        to_panel = np.array([sx, sy]), np.array([ox, oy])
        thick = max(1, panel_px // 160)
        panel = draw_skeleton_2d(panel, gt2[i] * to_panel[0] + to_panel[1], skeleton, "gt", thickness=thick,
                                 radius=thick + 1)
        panel = draw_skeleton_2d(panel, pr2[i] * to_panel[0] + to_panel[1], skeleton, "pred",
                                 thickness=thick, radius=thick)
        _label(panel, "GT", (6, 16), COLOR_SCHEMES["gt"]["centre"])
        _label(panel, "pred", (34, 16), COLOR_SCHEMES["pred"]["left"])
        if captions is not None:
            _label(panel, str(captions[i]), (6, panel_px - 8), (230, 230, 230))
        row = [panel]
        for name, pred in preds.items():
            title = f"{name}: MPJPE {errors[name][i]:.1f} mm"
            row.append(render_3d_panel([(gt3[i], "gt", "GT"), (pred[i], "pred", name)], skeleton,
                                       size_px=(panel_px, panel_px), title=title))
        sheet = np.concatenate(row, axis=1)
        path = out_dir / f"vis_{start + i:04d}.png"
        if not cv2.imwrite(str(path), sheet):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def _label(image: np.ndarray, text: str, org: Tuple[int, int], color, scale: float = 0.45) -> None:
    """Text at ``org`` (baseline left) on a darkened box, shrunk until it fits the image width.

    A box rather than a thick dark copy of the text: OpenCV advances glyphs by the stroke
    thickness, so a thick outline does not line up with the thin text drawn over it.
    """
    font = cv2.FONT_HERSHEY_SIMPLEX
    room = image.shape[1] - org[0] - 4
    (width, _), _ = cv2.getTextSize(text, font, scale, 1)
    if width > room > 0:
        scale *= room / width
    (width, height), base = cv2.getTextSize(text, font, scale, 1)
    x0, y0 = max(org[0] - 2, 0), max(org[1] - height - 2, 0)
    x1, y1 = min(org[0] + width + 2, image.shape[1]), min(org[1] + base + 1, image.shape[0])
    image[y0:y1, x0:x1] = (image[y0:y1, x0:x1].astype(np.uint16) * 2 // 5).astype(np.uint8)
    cv2.putText(image, text, org, font, scale, color, 1, cv2.LINE_AA)


def vis_indices(n: int, k: int):
    """``k`` sample indices spread evenly over ``n`` (first and last included), sorted, unique."""
    k = max(0, min(int(k), n))
    if k == 0:
        return []
    return sorted({int(i) for i in np.round(np.linspace(0, n - 1, k)).astype(int)})


def render_validation_sheets(cfg, dataset, model, device, lifters, gt_2d, soft, beta, out_dir, num):
    """``num`` validation samples spread over the set (``run/valid_hrnet.py --vis``), one sheet each.

    Sheets show the network's input crop (GT green, prediction cyan/magenta/yellow) and, per lifter,
    the 3D ground truth (dashed) with that lifter's prediction, titled with the sample's MPJPE.
    """
    picked = vis_indices(len(dataset), num)
    loader = DataLoader(Subset(dataset, picked), batch_size=max(1, min(len(picked), int(cfg.TEST.BATCH_SIZE_PER_GPU))),
                        shuffle=False, num_workers=0)
    crops, gt2d, pred2d, gt3d, centers, scales, captions = [], [], [], [], [], [], []
    pred3d = {n: [] for n in lifters}
    if model is not None:
        model.eval()
    with torch.no_grad():
        for images, _t, _w, meta in loader:
            joints_2d = meta["joints_2d"].to(device).float()
            p2d = joints_2d if gt_2d else predict_2d(cfg, model, images, meta, device, soft_argmax=soft, beta=beta)
            size = meta["image_size"].to(device).float()
            for n, lifter in lifters.items():
                pred3d[n].append(lifter(p2d, size).cpu().numpy())
            crops += list(images)                       # the network input: (3, H, W) normalised
            gt2d.append(joints_2d.cpu().numpy())
            pred2d.append(p2d.cpu().numpy())
            gt3d.append(meta["joints_3d"].numpy() / 100.0)          # cm -> m
            centers.append(meta["center"].numpy())
            scales.append(meta["scale"].numpy())
            captions += [f"{sub} {act or '-'} cam {cam} #{int(i)}" for sub, act, cam, i in
                         zip(meta["subject"], meta["action"], meta["camera"], meta["index"])]
    if not crops:
        return []
    cat = np.concatenate
    # joints into the crop's pixels (the same affine the dataset used to cut the crop)
    M = get_affine_transform(cat(centers), cat(scales), 0.0, tuple(int(v) for v in cfg.MODEL.IMAGE_SIZE))
    gt_crop, pred_crop = affine_points(cat(gt2d), M), affine_points(cat(pred2d), M)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("vis_*.png"):            # a rerun with a smaller K leaves no stale sheets
        old.unlink()
    return render_validation_samples(crops, gt_crop, pred_crop, cat(gt3d), {n: cat(v) for n, v in pred3d.items()},
                                     get_skeleton(cfg.DATASET.DATASET), out_dir, captions=captions)

__all__ = [
    "COLOR_SCHEMES", "get_color_scheme", "joint_sides", "bone_sides", "default_thickness",
    "drawn_extent_px", "draw_skeleton_2d", "draw_box", "denormalize_image", "plot_skeleton_3d", "render_3d_panel",
    "fit_to_panel", "compose_side_by_side", "overlay_and_3d", "sample_mpjpe_mm",
    "render_validation_samples", "vis_indices", "render_validation_sheets",
]
