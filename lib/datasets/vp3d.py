"""VideoPose3D's npz files, read and written (docs/detections.md).

Shapes: ``T`` frames of one recording and camera, ``J`` joints, ``C`` 2 (x, y pixels of the full
frame) or 3 (plus a confidence), ``N`` rows of a prepared split.

* ``data_2d_h36m_<name>.npz``: ``positions_2d[subject][action]`` = a list over the four cameras in
  :data:`VP3D_CAMERAS` order of (T, J, C) float32, frame ``t`` (counted from 1) at row ``t - 1``;
  ``metadata`` = {``layout_name``, ``num_joints``, ``keypoints_symmetry``}. Action keys are the
  original CDF file names (``Directions 1``, ``Photo``, ``WalkDog 1``, ...).
* ``data_2d_custom_<name>.npz``: ``positions_2d[video]['custom']`` = [(T, J, C)], ``metadata`` with
  ``video_metadata`` {video: {w, h}}.
* ``data_2d_panoptic_<name>.npz`` (this project's sibling): ``positions_2d[sequence]['panoptic']`` = a
  list over ``metadata['l2d']['cameras']`` of (T, 15, C) over the kept frames, whose numbers are
  ``metadata['l2d']['frames'][sequence]['panoptic'][camera index]``.
* ``data_3d_h36m.npz``: ``positions_3d[subject][action]`` = (T, 32, 3) float32 world metres.

The dictionaries are pickled inside the npz; they are read with the plain-data unpickler
(:func:`lib.utils.safe_io.load_npz_plain`), so a file carrying code is refused.
Files this code writes carry ``metadata['l2d']``: the dataset, camera order, image size per camera,
whether every frame is present and, when not, the frame numbers of the rows.
"""
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from lib.core.skeleton import H36M, H36M32_TO_17, PANOPTIC
from lib.datasets.cameras import (H36M_CAMERA_IDS, H36M_IMAGE_SIZE, H36M_UNRELEASED_SUBJECTS, load_h36m_cameras,
                                  project_h36m, world_to_camera)
from lib.utils.errors import UserError
from lib.utils.safe_io import load_npz_plain

VP3D_CAMERAS = H36M_CAMERA_IDS          # 54138969, 55011271, 58860488, 60457274: VideoPose3D's list order
L2D_FORMAT_VERSION = 1
PANOPTIC_ACTION = "panoptic"            # the one action key of a Panoptic sequence
CUSTOM_ACTION = "custom"                # VideoPose3D's key of a user's video

# layout name -> (joint count, keypoints_symmetry = [left joints, right joints]) as VideoPose3D's
# data/data_utils.py names them; 'panoptic15' is this project's CMU Panoptic order.
LAYOUTS = {
    "h36m": (17, ([4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16])),
    "coco": (17, ([1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16])),
    "panoptic15": (15, (list(PANOPTIC.left_joints), list(PANOPTIC.right_joints))),
}
DATASET_LAYOUT = {"h36m": "h36m", "panoptic": "panoptic15"}

# COCO-17 -> Human3.6M-17 (docs/detections.md#joint-layouts): each Human3.6M joint is the mean of
# these COCO joints (0 nose, 1/2 l/r eye, 5/6 l/r shoulder, 7/8 elbows, 9/10 wrists, 11/12 hips,
# 13/14 knees, 15/16 ankles); the pelvis is the mid-hip, the thorax the mid-shoulder, the spine their
# midpoint, neck/nose the nose and the head the mid-eye. MotionBERT converts the same way.
COCO_TO_H36M = ((11, 12), (12,), (14,), (16,), (11,), (13,), (15,), (5, 6, 11, 12), (5, 6), (0,), (1, 2),
                (5,), (7,), (9,), (6,), (8,), (10,))

# The original CDF file name of each recording, by subject and (action, subaction) as h36m-fetch
# names its folders ("Eating-1" = subaction 1): h36m-fetch's metadata.xml mapping (docs/detections.md#action-names).
# Each pair is (subaction 1, subaction 2).
_CDF = {
    "S1": {"Directions": ("Directions 1", "Directions"), "Discussion": ("Discussion 1", "Discussion"),
           "Eating": ("Eating 2", "Eating"), "Greeting": ("Greeting 1", "Greeting"),
           "Phoning": ("Phoning 1", "Phoning"), "Posing": ("Posing 1", "Posing"),
           "Purchases": ("Purchases 1", "Purchases"), "Sitting": ("Sitting 1", "Sitting 2"),
           "SittingDown": ("SittingDown 2", "SittingDown"), "Smoking": ("Smoking 1", "Smoking"),
           "TakingPhoto": ("Photo 1", "Photo"), "Waiting": ("Waiting 1", "Waiting"),
           "Walking": ("Walking 1", "Walking"), "WalkingDog": ("WalkDog 1", "WalkDog"),
           "WalkingTogether": ("WalkTogether 1", "WalkTogether")},
    "S5": {"Directions": ("Directions 1", "Directions 2"), "Discussion": ("Discussion 2", "Discussion 3"),
           "Eating": ("Eating 1", "Eating"), "Greeting": ("Greeting 1", "Greeting 2"),
           "Phoning": ("Phoning 1", "Phoning"), "Posing": ("Posing 1", "Posing"),
           "Purchases": ("Purchases 1", "Purchases"), "Sitting": ("Sitting 1", "Sitting"),
           "SittingDown": ("SittingDown", "SittingDown 1"), "Smoking": ("Smoking 1", "Smoking"),
           "TakingPhoto": ("Photo", "Photo 2"), "Waiting": ("Waiting 1", "Waiting 2"),
           "Walking": ("Walking 1", "Walking"), "WalkingDog": ("WalkDog 1", "WalkDog"),
           "WalkingTogether": ("WalkTogether 1", "WalkTogether")},
    "S6": {"Directions": ("Directions 1", "Directions"), "Discussion": ("Discussion 1", "Discussion"),
           "Eating": ("Eating 1", "Eating 2"), "Greeting": ("Greeting 1", "Greeting"),
           "Phoning": ("Phoning 1", "Phoning"), "Posing": ("Posing 2", "Posing"),
           "Purchases": ("Purchases 1", "Purchases"), "Sitting": ("Sitting 1", "Sitting 2"),
           "SittingDown": ("SittingDown 1", "SittingDown"), "Smoking": ("Smoking 1", "Smoking"),
           "TakingPhoto": ("Photo", "Photo 1"), "Waiting": ("Waiting 3", "Waiting"),
           "Walking": ("Walking 1", "Walking"), "WalkingDog": ("WalkDog 1", "WalkDog"),
           "WalkingTogether": ("WalkTogether 1", "WalkTogether")},
    "S7": {"Directions": ("Directions 1", "Directions"), "Discussion": ("Discussion 1", "Discussion"),
           "Eating": ("Eating 1", "Eating"), "Greeting": ("Greeting 1", "Greeting"),
           "Phoning": ("Phoning 2", "Phoning"), "Posing": ("Posing 1", "Posing"),
           "Purchases": ("Purchases 1", "Purchases"), "Sitting": ("Sitting 1", "Sitting"),
           "SittingDown": ("SittingDown", "SittingDown 1"), "Smoking": ("Smoking 1", "Smoking"),
           "TakingPhoto": ("Photo", "Photo 1"), "Waiting": ("Waiting 1", "Waiting 2"),
           "Walking": ("Walking 1", "Walking 2"), "WalkingDog": ("WalkDog 1", "WalkDog"),
           "WalkingTogether": ("WalkTogether 1", "WalkTogether")},
    "S8": {"Directions": ("Directions 1", "Directions"), "Discussion": ("Discussion 1", "Discussion"),
           "Eating": ("Eating 1", "Eating"), "Greeting": ("Greeting 1", "Greeting"),
           "Phoning": ("Phoning 1", "Phoning"), "Posing": ("Posing 1", "Posing"),
           "Purchases": ("Purchases 1", "Purchases"), "Sitting": ("Sitting 1", "Sitting"),
           "SittingDown": ("SittingDown", "SittingDown 1"), "Smoking": ("Smoking 1", "Smoking"),
           "TakingPhoto": ("Photo 1", "Photo"), "Waiting": ("Waiting 1", "Waiting"),
           "Walking": ("Walking 1", "Walking"), "WalkingDog": ("WalkDog 1", "WalkDog"),
           "WalkingTogether": ("WalkTogether 1", "WalkTogether 2")},
    "S9": {"Directions": ("Directions 1", "Directions"), "Discussion": ("Discussion 1", "Discussion 2"),
           "Eating": ("Eating 1", "Eating"), "Greeting": ("Greeting 1", "Greeting"),
           "Phoning": ("Phoning 1", "Phoning"), "Posing": ("Posing 1", "Posing"),
           "Purchases": ("Purchases 1", "Purchases"), "Sitting": ("Sitting 1", "Sitting"),
           "SittingDown": ("SittingDown", "SittingDown 1"), "Smoking": ("Smoking 1", "Smoking"),
           "TakingPhoto": ("Photo 1", "Photo"), "Waiting": ("Waiting 1", "Waiting"),
           "Walking": ("Walking 1", "Walking"), "WalkingDog": ("WalkDog 1", "WalkDog"),
           "WalkingTogether": ("WalkTogether 1", "WalkTogether")},
    "S11": {"Directions": ("Directions 1", "Directions"), "Discussion": ("Discussion 1", "Discussion 2"),
            "Eating": ("Eating 1", "Eating"), "Greeting": ("Greeting 2", "Greeting"),
            "Phoning": ("Phoning 3", "Phoning 2"), "Posing": ("Posing 1", "Posing"),
            "Purchases": ("Purchases 1", "Purchases"), "Sitting": ("Sitting 1", "Sitting"),
            "SittingDown": ("SittingDown", "SittingDown 1"), "Smoking": ("Smoking 2", "Smoking"),
            "TakingPhoto": ("Photo 1", "Photo"), "Waiting": ("Waiting 1", "Waiting"),
            "Walking": ("Walking 1", "Walking"), "WalkingDog": ("WalkDog 1", "WalkDog"),
            "WalkingTogether": ("WalkTogether 1", "WalkTogether")},
}
# this project's action names -> VideoPose3D's spelling of the CDF base names
_VP3D_SPELLING = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog", "WalkingTogether": "WalkTogether"}


class DetectionsFileError(UserError, ValueError):
    """A 2D or 3D file in VideoPose3D's format that this code cannot use (the message says why and what to do)."""


# ----------------------------------------------------------------------------- names
def vp3d_action(subject: str, folder: str) -> str:
    """A prepared sequence folder -> VideoPose3D's action key (the CDF file name).

    ``Directions-1`` / ``TakingPhoto-2`` (h36m-fetch, the original L2D layout): looked up by subject
    and subaction; a folder already named like a CDF file (``Directions 1``, ``Photo``,
    ``WalkDog_1``) keeps its name with VideoPose3D's spelling.
    """
    from lib.datasets.prepare_h36m import normalise_action
    m = re.fullmatch(r"(.+?)-(\d+)", folder.strip())
    if m:
        action, sub = normalise_action(m.group(1)), int(m.group(2))
        names = _CDF.get(subject, {}).get(action)
        if subject in H36M_UNRELEASED_SUBJECTS and action and sub in (1, 2):
            # no recording of theirs was released, so no CDF name exists: spelling + subaction
            return f"{_VP3D_SPELLING.get(action, action)} {sub}"
        if names is None or sub not in (1, 2):
            raise DetectionsFileError(
                f"no CDF name for {subject} {folder!r} (subject, action or subaction unknown); the export names "
                f"Human3.6M recordings of S1, S5-S9 and S11 with subactions 1 and 2 (docs/detections.md#action-names)")
        return names[sub - 1]
    m = re.fullmatch(r"(.+?)(?:[ _](\d+))?", folder.strip())
    action = normalise_action(m.group(1))
    if not action:
        raise DetectionsFileError(f"sequence folder {subject}/{folder}: not a Human3.6M action name")
    name = _VP3D_SPELLING.get(action, action)
    return f"{name} {m.group(2)}" if m.group(2) else name


def canonical_action(vp3d_name: str) -> str:
    """``Photo 1`` -> ``TakingPhoto`` (this project's action names, lib.core.skeleton.H36M_ACTIONS)."""
    from lib.datasets.prepare_h36m import normalise_action
    return normalise_action(vp3d_name.split(" ")[0])


def sequence_folders(images: Sequence[str]) -> np.ndarray:
    """(N,) image paths ``<subject>/<folder>/...`` -> (N,) sequence folder names."""
    images = np.asarray(images).astype(str)
    uniq, inv = np.unique(images, return_inverse=True)
    folders = np.array([p.replace("\\", "/").split("/")[1] if p.count("/") >= 2 else "" for p in uniq.tolist()])
    return folders[inv.reshape(-1)]


def sequence_names(dataset: str, subjects: Sequence[str], images: Sequence[str]) -> np.ndarray:
    """(N,) VideoPose3D action key of every prepared row (``panoptic`` for CMU Panoptic)."""
    subjects = np.asarray(subjects).astype(str)
    if dataset == "panoptic":
        return np.full(subjects.shape, PANOPTIC_ACTION)
    folders = sequence_folders(images)
    pairs, inv = np.unique(np.stack([subjects, folders], axis=1), axis=0, return_inverse=True)
    names = np.array([vp3d_action(s, f) for s, f in pairs.tolist()])
    return names[inv.reshape(-1)]


# ----------------------------------------------------------------------------- reading 2D
@dataclass
class Detections:
    """A parsed 2D file: ``positions[subject][action]`` = list over ``cameras`` of (T, J, C) float32 in
    the file's own ``layout``; ``frames`` (same nesting) = the frame numbers of the rows, or None when
    row ``t - 1`` holds frame ``t``."""
    path: Path
    positions: Dict
    layout: str
    cameras: Tuple[str, ...]
    metadata: Dict = field(default_factory=dict)
    frames: Optional[Dict] = None

    @property
    def channels(self) -> int:
        for acts in self.positions.values():
            for cams in acts.values():
                for a in cams:
                    return int(a.shape[-1])
        return 2

    def subjects(self) -> List[str]:
        return sorted(self.positions)


def _layout_of(path, metadata) -> str:
    name = metadata.get("layout_name")
    num = metadata.get("num_joints")
    sym = metadata.get("keypoints_symmetry")
    if name is None:                  # VideoPose3D's Human3.6M files name no layout: tell it by the symmetry
        sym = [list(map(int, s)) for s in sym] if sym is not None else None
        name = next((n for n, (j, s) in LAYOUTS.items() if j == num and [list(x) for x in s] == sym), None)
        if name is None:
            raise DetectionsFileError(f"{path}: metadata names no layout_name and its joints ({num}, symmetry {sym}) "
                                      f"are none of {sorted(LAYOUTS)}; add metadata['layout_name']")
    if name not in LAYOUTS:
        raise DetectionsFileError(f"{path}: joint layout {name!r} is not read here; the layouts read are "
                                  f"{sorted(LAYOUTS)} ('coco' is converted to Human3.6M's 17 joints, "
                                  f"docs/detections.md#joint-layouts); convert the file to one of them first")
    return name


def read_detections(path, trusted=None) -> Detections:
    """A VideoPose3D-format 2D file -> :class:`Detections` (structure and shapes checked)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"2D detections file not found: {path}")
    data = load_npz_plain(path, trusted, fix="expected VideoPose3D's data_2d_*.npz (docs/detections.md)")
    if "positions_2d" not in data:
        raise DetectionsFileError(f"{path}: no 'positions_2d' array (has {sorted(data)}); expected a VideoPose3D "
                                  f"data_2d_*.npz file")
    positions = data["positions_2d"].item() if data["positions_2d"].dtype == object else None
    metadata = data["metadata"].item() if "metadata" in data and data["metadata"].dtype == object else {}
    if not isinstance(positions, dict) or not isinstance(metadata, dict):
        raise DetectionsFileError(f"{path}: positions_2d and metadata must be dictionaries (VideoPose3D's layout)")
    layout = _layout_of(path, metadata)
    joints = LAYOUTS[layout][0]
    for subject, actions in positions.items():
        if not isinstance(actions, dict):
            raise DetectionsFileError(f"{path}: positions_2d[{subject!r}] is not a dictionary of actions")
        for action, cams in actions.items():
            if not isinstance(cams, (list, tuple)):
                raise DetectionsFileError(f"{path}: positions_2d[{subject!r}][{action!r}] is not a list over cameras")
            for c, a in enumerate(cams):
                if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[1] != joints or a.shape[2] not in (2, 3):
                    raise DetectionsFileError(
                        f"{path}: positions_2d[{subject!r}][{action!r}][{c}] has shape "
                        f"{getattr(a, 'shape', type(a).__name__)}; expected (T, {joints}, 2 or 3) for layout "
                        f"{layout!r}")
    channels = {a.shape[2] for actions in positions.values() for cams in actions.values() for a in cams}
    if len(channels) > 1:
        raise DetectionsFileError(f"{path}: the arrays mix {sorted(channels)} channels; write (x, y) everywhere or "
                                  f"(x, y, confidence) everywhere")
    l2d = metadata.get("l2d") or {}
    cameras = tuple(str(c) for c in l2d.get("cameras", VP3D_CAMERAS))
    return Detections(path, positions, layout, cameras, metadata, l2d.get("frames"))


def to_layout(poses: np.ndarray, src: str, dst: str, path="") -> np.ndarray:
    """(..., J_src, C) in layout ``src`` -> (..., J_dst, C) in ``dst``: unchanged, COCO -> Human3.6M by
    :data:`COCO_TO_H36M` (every channel, confidence included, averaged), or refused."""
    if src == dst:
        return poses
    if (src, dst) == ("coco", "h36m"):
        table = np.zeros((17, 17), np.float32)
        for h, sources in enumerate(COCO_TO_H36M):
            table[h, list(sources)] = 1.0 / len(sources)
        return np.einsum("hc,...cd->...hd", table, poses.astype(np.float32))
    raise DetectionsFileError(f"{path}: joints in layout {src!r} cannot be used for a {dst!r} dataset; "
                              f"only 'coco' -> 'h36m' is converted (docs/detections.md#joint-layouts)")


def rows_2d(det: Detections, dataset: str, subjects, sequences, cameras, frames) -> Tuple[np.ndarray, np.ndarray]:
    """The file's 2D of prepared rows: (N,) subject, VideoPose3D action key, camera id, frame ->
    ((N, J, C) float32 in the dataset's layout, (N,) bool found). Rows not in the file are NaN."""
    layout = DATASET_LAYOUT[dataset]
    subjects, sequences = np.asarray(subjects).astype(str), np.asarray(sequences).astype(str)
    cameras, frames = np.asarray(cameras).astype(str), np.asarray(frames).astype(np.int64)
    n, joints, channels = len(subjects), LAYOUTS[layout][0], det.channels
    out = np.full((n, joints, channels), np.nan, np.float32)
    found = np.zeros(n, bool)
    keys, inv = np.unique(np.stack([subjects, sequences, cameras], axis=1), axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    cam_index = {c: i for i, c in enumerate(det.cameras)}
    for k, (subject, action, camera) in enumerate(keys.tolist()):
        cams = det.positions.get(subject, {}).get(action)
        ci = cam_index.get(camera)
        if cams is None or ci is None or ci >= len(cams):
            continue
        rows = np.flatnonzero(inv == k)
        poses = to_layout(cams[ci], det.layout, layout, det.path)
        if det.frames is not None:
            numbers = np.asarray(det.frames[subject][action][ci], np.int64)
            pos = np.searchsorted(numbers, frames[rows])
            ok = (pos < len(numbers)) & (numbers[np.minimum(pos, len(numbers) - 1)] == frames[rows])
        else:
            pos = frames[rows] - 1
            ok = (pos >= 0) & (pos < len(poses))
        out[rows[ok]] = poses[pos[ok], :, :channels]
        found[rows[ok]] = True
    return out, found


def missing_rows_message(det: Detections, arrays: Dict, found: np.ndarray, where: str) -> str:
    """One line naming how many rows of ``where`` the file lacks and the first recordings concerned."""
    lost = ~found
    seqs = sorted({f"{s} {a!r} camera {c}" for s, a, c in zip(arrays["subject"][lost][:2000].tolist(),
                                                             arrays["sequence"][lost][:2000].tolist(),
                                                             arrays["camera"][lost][:2000].tolist())})
    return (f"{det.path} lacks the 2D of {int(lost.sum())} of the {len(found)} rows of {where} (e.g. "
            f"{'; '.join(seqs[:3])}); export those subjects (run/export_detections.py --subjects ...) or name "
            f"a file that holds them")


def prepared_split_2d(root, split: str, dataset: str, det: Detections, max_samples: int = 0) -> Dict[str, np.ndarray]:
    """A prepared split's arrays (first ``max_samples`` rows when > 0) plus ``sequence`` (VideoPose3D's
    action key), ``pred_2d`` (N, J, C) from ``det`` and ``found`` (N,) bool."""
    from lib.datasets import index as idx
    _info, arrays = idx.load_split(root, split, dataset)
    if max_samples > 0:
        arrays = {k: v[:max_samples] for k, v in arrays.items()}
    arrays["sequence"] = sequence_names(dataset, arrays["subject"], arrays["image"])
    arrays["pred_2d"], arrays["found"] = rows_2d(det, dataset, arrays["subject"], arrays["sequence"],
                                                 arrays["camera"], arrays["frame"])
    return arrays


# ----------------------------------------------------------------------------- writing 2D
def metadata_for(layout: str, **l2d) -> Dict:
    """VideoPose3D's metadata of a layout (``num_joints``, ``keypoints_symmetry``, ``layout_name``) plus ``l2d``."""
    joints, (left, right) = LAYOUTS[layout]
    meta = {"layout_name": layout, "num_joints": joints, "keypoints_symmetry": [list(left), list(right)]}
    if l2d:
        meta["l2d"] = {"format_version": L2D_FORMAT_VERSION, **l2d}
    return meta


def write_npz(path, **arrays) -> Path:
    """``np.savez_compressed`` of dictionaries (pickled by numpy, as VideoPose3D's files), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


@dataclass
class Arranged:
    """Per-row predictions laid out as ``positions_2d``; ``frames`` None when every frame is present."""
    positions: Dict
    frames: Optional[Dict]
    cameras: Tuple[str, ...]
    gaps: List[str]


def arrange(poses: np.ndarray, subjects, sequences, cameras, frames, camera_order: Sequence[str],
            every_frame: bool) -> Arranged:
    """Rows of a split -> ``positions[subject][action]`` = list over ``camera_order`` of (T, J, C) in frame order.

    ``every_frame``: each (recording, camera) must hold frames 1..T without a gap (row ``t - 1`` =
    frame ``t``, as VideoPose3D reads them), else :class:`DetectionsFileError` lists the gaps. Without
    it the kept frames are stacked and their numbers returned in ``frames`` (same nesting).
    """
    subjects, sequences = np.asarray(subjects).astype(str), np.asarray(sequences).astype(str)
    cameras, frames = np.asarray(cameras).astype(str), np.asarray(frames).astype(np.int64)
    order = np.lexsort((frames, cameras, sequences, subjects))
    positions, numbers, gaps = {}, {}, []
    empty = np.zeros((0,) + poses.shape[1:], np.float32)
    for subject, action in np.unique(np.stack([subjects, sequences], axis=1), axis=0).tolist():
        in_seq = order[(subjects[order] == subject) & (sequences[order] == action)]
        per_cam, per_cam_frames = [], []
        for camera in camera_order:
            rows = in_seq[cameras[in_seq] == camera]
            f = frames[rows]
            if every_frame and not (len(f) and np.array_equal(f, np.arange(1, len(f) + 1))):
                have = f"{len(f)} frame(s)" + (f" between {f.min()} and {f.max()}" if len(f) else "")
                gaps.append(f"{subject} {action!r} camera {camera}: {have}, not every frame from 1")
            per_cam.append(poses[rows].astype(np.float32) if len(rows) else empty)
            per_cam_frames.append(f.astype(np.int32))
        positions.setdefault(subject, {})[action] = per_cam
        numbers.setdefault(subject, {})[action] = per_cam_frames
    return Arranged(positions, None if every_frame else numbers, tuple(camera_order), gaps)


# ----------------------------------------------------------------------------- 3D
def read_data_3d(path, trusted=None) -> Dict[str, Dict[str, np.ndarray]]:
    """VideoPose3D's ``data_3d_h36m.npz`` -> {subject: {action: (T, 32, 3) float32 world metres}}."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"3D file not found: {path} (VideoPose3D's data_3d_h36m.npz)")
    data = load_npz_plain(path, trusted, fix="expected VideoPose3D's data_3d_h36m.npz")
    if "positions_3d" not in data or data["positions_3d"].dtype != object:
        raise DetectionsFileError(f"{path}: no 'positions_3d' dictionary (has {sorted(data)}); expected "
                                  f"VideoPose3D's data_3d_h36m.npz")
    positions = data["positions_3d"].item()
    for subject, actions in positions.items():
        for action, a in actions.items():
            if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[1:] != (32, 3):
                raise DetectionsFileError(f"{path}: positions_3d[{subject!r}][{action!r}] has shape "
                                          f"{getattr(a, 'shape', None)}; expected (T, 32, 3) world metres")
    return positions


def vp3d_split(det: Detections, data_3d: Dict, subjects: Sequence[str], cameras_file=None) -> Dict[str, np.ndarray]:
    """Rows of ``subjects`` from a 2D file and ``data_3d_h36m.npz``, with VideoPose3D's checks.

    Every recording of the 3D file must be in the 2D file, with the 3D file's camera count and at
    least as many 2D frames as mocap frames (the extra video frames are trimmed), as VideoPose3D's
    run.py asserts. The 3D goes to each camera's frame with the shipped calibration
    (``X_cam = R (X - T)``), keeps 17 joints and becomes root-relative cm; the ground-truth 2D is its
    projection with the Human3.6M distortion model. -> arrays keyed like a prepared split plus
    ``pred_2d`` (N, 17, C) and ``sequence``.
    """
    cams_all = load_h36m_cameras(cameras_file)
    parts = {k: [] for k in ("pred_2d", "joints_2d", "joints_3d", "width", "height", "action", "subject",
                             "camera", "frame", "sequence")}
    problems = []
    for subject in subjects:
        if subject not in data_3d:
            raise DetectionsFileError(f"the 3D file has no subject {subject} (has {sorted(data_3d)})")
        if subject not in det.positions:
            raise DetectionsFileError(f"{det.path}: subject {subject} is missing (has {det.subjects()})")
        for action, world_m in sorted(data_3d[subject].items()):
            cams = det.positions[subject].get(action)
            if cams is None:
                problems.append(f"{subject} {action!r} missing")
                continue
            if len(cams) != len(VP3D_CAMERAS):
                problems.append(f"{subject} {action!r} has {len(cams)} cameras, not {len(VP3D_CAMERAS)}")
                continue
            t = len(world_m)
            for ci, camera in enumerate(VP3D_CAMERAS):
                if len(cams[ci]) < t:
                    problems.append(f"{subject} {action!r} camera {camera}: {len(cams[ci])} 2D frames < {t} "
                                    f"mocap frames")
                    continue
                cam = cams_all[subject][camera]
                cam_m = world_to_camera(world_m, cam["R"], cam["T"])                 # (T, 32, 3) metres
                w, h = H36M_IMAGE_SIZE[camera]
                parts["pred_2d"].append(to_layout(cams[ci][:t], det.layout, "h36m", det.path))
                parts["joints_2d"].append(project_h36m(cam_m, cam["f"], cam["c"], cam["k"], cam["p"])[:, H36M32_TO_17])
                j17 = cam_m[:, H36M32_TO_17] * 100.0
                parts["joints_3d"].append(j17 - j17[:, H36M.root:H36M.root + 1])
                parts["width"].append(np.full(t, w))
                parts["height"].append(np.full(t, h))
                parts["action"].append(np.full(t, canonical_action(action)))
                parts["subject"].append(np.full(t, subject))
                parts["camera"].append(np.full(t, camera))
                parts["frame"].append(np.arange(1, t + 1))
                parts["sequence"].append(np.full(t, action))
    if problems:
        raise DetectionsFileError(f"{det.path} does not cover the 3D file ({len(problems)} problem(s): "
                                  f"{'; '.join(problems[:4])}{' ...' if len(problems) > 4 else ''}); VideoPose3D's "
                                  f"loader would refuse it too")
    if not parts["pred_2d"]:
        raise DetectionsFileError(f"no recording of subjects {list(subjects)} in the 3D file")
    dtypes = {"pred_2d": np.float32, "joints_2d": np.float32, "joints_3d": np.float32, "width": np.int32,
              "height": np.int32, "frame": np.int32}
    return {k: np.concatenate(v).astype(dtypes.get(k, str)) for k, v in parts.items()}


__all__ = ["VP3D_CAMERAS", "LAYOUTS", "COCO_TO_H36M", "Detections", "DetectionsFileError", "arrange",
           "canonical_action", "metadata_for", "read_data_3d", "read_detections", "rows_2d", "sequence_names",
           "to_layout", "vp3d_action", "vp3d_split", "write_npz"]
