"""Human3.6M from the extracted official archives (docs/data.md#from-the-official-archives).

Shapes: ``T`` frames of a recording, ``32`` annotated joints.

Layout read (one folder holding the subject folders, or h36m-fetch's ``extracted/``)::

    S1/MyPoseFeatures/D2_Positions/<name>.<camera>.cdf       2D, px           (h36m-fetch: S1/Poses_D2_Positions/)
    S1/MyPoseFeatures/D3_Positions_mono/<name>.<camera>.cdf  3D, camera mm    (optional; S1/Poses_D3_Positions_mono/)
    S1/MyPoseFeatures/D3_Positions/<name>.cdf                3D, world mm     (optional; S1/Poses_D3_Positions/)
    S1/Videos/<name>.<camera>.mp4                            the frames       (S1/Videos/)

``<name>`` is the recording as the archives spell it ("Directions 1", "Photo", "WalkDog 1", "TakingPhoto"...).
Every CDF holds a variable ``Pose`` with ``T * 32 * 2`` (2D) or ``T * 32 * 3`` (3D) values, frame-major.

A view (recording x camera) becomes rows shaped like an h36m-fetch ``annot.h5``: ``pose/2d`` from
D2_Positions; ``pose/3d`` in camera-frame mm from D3_Positions_mono where present (what h36m-fetch
stores), else D3_Positions moved into the camera with the calibration's extrinsics
(``X_cam = R X_world + t``); ``frame`` counted from 1 (frame ``i`` is the video's ``i``-th decoded
frame). Only the frames the index keeps are decoded into JPEGs, under
``<dst>/images/<S>/<folder>/imageSequence/<camera>/img_%06d.jpg`` with ``<folder>`` the recording's
name with ``_`` for spaces.

Views that cannot be used are skipped and reported, never silently: the S11 "Directions" video of
camera 54138969 (corrupt in the official release; h36m-fetch, VideoPose3D and 3d-pose-baseline leave
it out too), a missing or undecodable video, a video whose size is not the calibration's, missing
poses. When the video and the poses have different lengths the common frames (the first ones) are
kept and the difference is reported.

``cdflib`` (pure Python, on PyPI) reads the CDF files; it is imported only when these archives are
prepared, and its absence is one line saying what to install.
"""
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lib.utils.errors import BadValueError, CorruptFileError, MissingKeyError, UserError

CAMERA_RE = r"\d{8}"
# (kind, folder names tried in order): the official archives', then h36m-fetch's extract_all.py ones.
POSE_DIRS = {
    "d2": ("MyPoseFeatures/D2_Positions", "Poses_D2_Positions"),
    "d3_mono": ("MyPoseFeatures/D3_Positions_mono", "Poses_D3_Positions_mono"),
    "d3_world": ("MyPoseFeatures/D3_Positions", "Poses_D3_Positions"),
}
VIDEO_DIRS = ("Videos",)
ARCHIVES = {"d2": "Poses_D2_Positions_{s}.tgz", "d3_mono": "Poses_D3_Positions_mono_{s}.tgz",
            "d3_world": "Poses_D3_Positions_{s}.tgz", "video": "Videos_{s}.tgz"}
# (subject, recording name, camera) -> why the view is left out whatever the files look like.
KNOWN_FAULTY = {
    ("S11", "Directions", "54138969"): "video corrupt in the official release (left out by h36m-fetch, "
                                       "VideoPose3D and 3d-pose-baseline too)",
}
JPEG_QUALITY = 95
# Video size vs the calibration's: a real S7 frame of camera 55011271 is 1000 x 1002 where the
# calibration says 1000 x 1000, so a few pixels are tolerated. A larger difference means the
# calibration's image size (and likely its intrinsics) is not the videos'.
SIZE_SLACK_PX = 2
# D3_Positions_mono and D3_Positions moved through the calibration should agree closely; beyond this
# the report asks whether the calibration is the one the archives were made with.
MONO_WORLD_TOLERANCE_MM = 1.0


class MissingPackageError(UserError, ImportError):
    """A Python package needed for this input is not installed; the message says how to install it."""


def import_cdflib(needed_for):
    """-> the ``cdflib`` module, or a one-line :class:`MissingPackageError` naming ``needed_for``."""
    try:
        import cdflib
    except ImportError as err:
        raise MissingPackageError(
            f"reading {needed_for} needs the Python package cdflib (a pure-Python CDF reader), which is not "
            f"installed: run `pip install cdflib` (or `pip install -r requirements.txt`), then re-run") from err
    return cdflib


def _first_dir(subject_dir, names):
    for name in names:
        if (subject_dir / name).is_dir():
            return subject_dir / name
    return None


def _subject_dirs(root):
    return sorted((p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"S\d+", p.name)),
                  key=lambda p: int(p.name[1:]))


def find_official_dir(src):
    """The folder holding ``S*/MyPoseFeatures`` (or h36m-fetch's ``extracted/S*/Poses_*``), else None."""
    src = Path(src)
    for cand in (src, src / "extracted"):
        if not cand.is_dir():
            continue
        for subject_dir in _subject_dirs(cand):
            if any(_first_dir(subject_dir, names) for names in POSE_DIRS.values()):
                return cand
    return None


def folder_name(name):
    """The index's folder for a recording: 'Directions 1' -> 'Directions_1'."""
    return "_".join(name.split())


class View:
    """One recording seen by one camera: its files (a Path, or None when absent)."""

    def __init__(self, subject, name, camera, d2, d3_mono, d3_world, video):
        self.subject, self.name, self.camera = subject, name, camera
        self.d2, self.d3_mono, self.d3_world, self.video = d2, d3_mono, d3_world, video

    @property
    def label(self):
        return f"{self.subject}/{self.name}.{self.camera}"


class Recording:
    """One recording of one subject (e.g. S1 "Directions 1") with its views, cameras in id order."""

    def __init__(self, subject, name, views):
        self.subject, self.name, self.views = subject, name, views
        self.folder = folder_name(name)

    def files(self):
        out = []
        for v in self.views:
            out += [p for p in (v.d2, v.d3_mono, v.d3_world, v.video) if p is not None]
        return sorted(set(out))


def _listing(folder, pattern):
    """{groups: path} for the files of ``folder`` whose name fully matches ``pattern``."""
    out = {}
    if folder is None:
        return out
    for entry in sorted(os.listdir(folder)):
        m = re.fullmatch(pattern, entry)
        if m:
            out[m.groups()] = folder / entry
    return out


def find_recordings(root, subjects=None, notes=None):
    """-> [Recording] under ``root`` (the folder of find_official_dir), subjects in number order.

    Names starting with '_' (the archives' "_ALL" videos) are not recordings and are ignored;
    ``notes`` (a list) gets one line for each ignored pose file.
    """
    root = Path(root)
    found = []
    for subject_dir in _subject_dirs(root):
        subject = subject_dir.name
        if subjects is not None and subject not in subjects:
            continue
        dirs = {kind: _first_dir(subject_dir, names) for kind, names in POSE_DIRS.items()}
        d2 = _listing(dirs["d2"], rf"(.+)\.({CAMERA_RE})\.cdf")
        mono = _listing(dirs["d3_mono"], rf"(.+)\.({CAMERA_RE})\.cdf")
        world = {k[0]: v for k, v in _listing(dirs["d3_world"], r"(.+)\.cdf").items()}
        videos = _listing(_first_dir(subject_dir, VIDEO_DIRS), rf"(.+)\.({CAMERA_RE})\.mp4")
        names = sorted({n for n, _ in d2} | {n for n, _ in mono} | set(world))
        for name in names:
            if name.startswith("_"):
                if notes is not None:
                    notes.append(f"{subject}/{name}: not a recording (ignored)")
                continue
            cameras = sorted({c for n, c in list(d2) + list(mono) + list(videos) if n == name})
            views = [View(subject, name, c, d2.get((name, c)), mono.get((name, c)), world.get(name),
                          videos.get((name, c))) for c in cameras]
            found.append(Recording(subject, name, views))
    return found


def read_pose_cdf(path, dims, subject=""):
    """The ``Pose`` variable of a Human3.6M CDF -> (T, 32, dims) float64."""
    kind = "d2" if dims == 2 else ("d3_mono" if re.search(rf"\.{CAMERA_RE}\.cdf$", path.name) else "d3_world")
    archive = ARCHIVES[kind].format(s=subject or "S*")
    cdflib = import_cdflib(f"the official Human3.6M archives ({path})")
    try:
        cdf = cdflib.CDF(str(path))
        info = cdf.cdf_info()
        variables = list(info.zVariables) + list(info.rVariables)
    except Exception as err:          # cdflib raises OSError, ValueError, struct errors... on a bad file
        raise CorruptFileError(f"{path}: not a readable CDF file ({' '.join(str(err).split())[:160]}); "
                               f"extract it again from {archive}") from err
    if "Pose" not in variables:
        raise MissingKeyError(f"{path}: no variable 'Pose' (found {variables}); expected a Human3.6M pose "
                              f"file from {archive}")
    try:
        pose = np.asarray(cdf.varget("Pose"), dtype=np.float64)
    except Exception as err:
        raise CorruptFileError(f"{path}: the variable 'Pose' cannot be read ({' '.join(str(err).split())[:160]}); "
                               f"extract it again from {archive}") from err
    per_frame = 32 * dims
    if pose.size == 0 or pose.size % per_frame:
        raise BadValueError(f"{path}: 'Pose' holds {pose.size} values (shape {pose.shape}), not a whole number "
                            f"of frames of 32 joints x {dims}; extract it again from {archive}")
    return pose.reshape(-1, 32, dims)


def video_info(path):
    """-> (frames, width, height) from the container, frames by decoding when it does not say;
    None when OpenCV cannot open the file."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return None
        frames = int(round(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        width = int(round(cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
        height = int(round(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        if frames <= 0:
            frames = 0
            while cap.grab():
                frames += 1
        return frames, width, height
    finally:
        cap.release()


def world_to_camera_mm(world_mm, cam):
    """(T, 32, 3) world mm -> camera-frame mm with the calibration record ``cam`` (R, t_mm)."""
    return world_mm @ np.asarray(cam["R"], np.float64).T + np.asarray(cam["t_mm"], np.float64).reshape(1, 1, 3)


class ViewData:
    """A usable view: its poses cut to the frames common to the video and the pose files."""

    def __init__(self, view, pose_2d, pose_3d, frames):
        self.view, self.pose_2d, self.pose_3d, self.frames = view, pose_2d, pose_3d, frames


def load_recording(rec, cams, notes):
    """The usable views of ``rec`` -> (annot dict like an h36m-fetch annot.h5, or None; {camera: View}).

    ``cams``: the subject's calibration ({camera: record}); ``notes``: dict of lists the report
    shows: ``skipped`` (views left out and why), ``lengths`` (video and poses of different lengths),
    ``mono_vs_world`` ((max difference mm, view label) where both 3D files exist).
    """
    world_mm = None
    used = []
    if not rec.views:
        notes["skipped"].append(f"{rec.subject}/{rec.name}: world 3D poses only, no camera's 2D poses or video")
    for view in rec.views:
        label = view.label
        why = KNOWN_FAULTY.get((view.subject, view.name, view.camera))
        if why:
            notes["skipped"].append(f"{label}: {why}")
            continue
        if view.camera not in cams:
            raise MissingKeyError(f"calibration has no camera {view.camera} for subject {view.subject} (needed by "
                                  f"{view.d2 or view.video}); pass --cameras FILE with that subject's cameras")
        if view.d2 is None:
            notes["skipped"].append(f"{label}: no 2D poses (D2_Positions/{view.name}.{view.camera}.cdf)")
            continue
        if view.d3_mono is None and view.d3_world is None:
            notes["skipped"].append(f"{label}: no 3D poses (D3_Positions_mono/{view.name}.{view.camera}.cdf or "
                                    f"D3_Positions/{view.name}.cdf)")
            continue
        if view.video is None:
            notes["skipped"].append(f"{label}: no video (Videos/{view.name}.{view.camera}.mp4; extract "
                                    f"{ARCHIVES['video'].format(s=view.subject)})")
            continue
        info = video_info(view.video)
        if info is None or info[0] == 0:
            notes["skipped"].append(f"{label}: the video cannot be decoded ({view.video}); extract it again from "
                                    f"{ARCHIVES['video'].format(s=view.subject)}")
            continue
        n_video, width, height = info
        cam = cams[view.camera]
        if abs(width - int(cam["width"])) > SIZE_SLACK_PX or abs(height - int(cam["height"])) > SIZE_SLACK_PX:
            notes["skipped"].append(f"{label}: the video is {width}x{height} but the calibration says "
                                    f"{cam['width']}x{cam['height']}; pass --cameras FILE that fits the videos")
            continue
        pose_2d = read_pose_cdf(view.d2, 2, view.subject)
        if view.d3_world is not None and world_mm is None:
            world_mm = read_pose_cdf(view.d3_world, 3, view.subject)
        moved = world_to_camera_mm(world_mm, cam) if view.d3_world is not None else None
        if view.d3_mono is not None:
            pose_3d = read_pose_cdf(view.d3_mono, 3, view.subject)
            if moved is not None:
                m = min(len(moved), len(pose_3d))
                diff = float(np.abs(moved[:m] - pose_3d[:m]).max()) if m else 0.0
                notes["mono_vs_world"].append((diff, label))
        else:
            pose_3d = moved
        n = min(len(pose_2d), len(pose_3d), n_video)
        if not len(pose_2d) == len(pose_3d) == n_video:
            notes["lengths"].append(f"{label}: video {n_video} frames, 2D poses {len(pose_2d)}, 3D poses "
                                    f"{len(pose_3d)}: kept the first {n}")
        used.append(ViewData(view, pose_2d[:n], pose_3d[:n], n))
    if not used:
        return None, {}
    annot = {"pose/2d": np.concatenate([u.pose_2d for u in used]),
             "pose/3d": np.concatenate([u.pose_3d for u in used]),
             "camera": np.concatenate([np.full(u.frames, int(u.view.camera), np.int64) for u in used]),
             "frame": np.concatenate([np.arange(1, u.frames + 1, dtype=np.int64) for u in used])}
    return annot, {u.view.camera: u.view for u in used}


def _write_jpeg(path, image):
    import cv2
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise CorruptFileError(f"could not encode a frame for {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")   # the usual file mode
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.tobytes())
        os.replace(tmp, path)               # a frame is either whole or absent, also after Ctrl-C
    finally:
        if tmp.exists():
            tmp.unlink()


def extract_frames(video, frames, paths):
    """Decode ``video`` in order and write frame ``frames[i]`` (1-based) to ``paths[i]``.

    Frames whose file exists are not decoded again; nothing is decoded when all exist.
    -> (written, last frame the video gave: None when it was not read, else the count decoded).
    """
    import cv2
    todo = {}
    for fr, p in zip(frames, paths):
        if not p.is_file():
            todo[int(fr) - 1] = p
    if not todo:
        return 0, None
    cap = cv2.VideoCapture(str(video))
    written, decoded = 0, 0
    try:
        last = max(todo)
        while decoded <= last:
            if decoded in todo:
                ok, image = cap.read()
                if not ok or image is None:
                    break
                _write_jpeg(todo[decoded], image)
                written += 1
            elif not cap.grab():
                break
            decoded += 1
    finally:
        cap.release()
    return written, decoded


class FrameWriter:
    """Writes the kept frames of one recording's views into the image folder (the cameras in parallel)."""

    def __init__(self, image_dir, views, workers, notes):
        self.image_dir, self.views, self.workers, self.notes = Path(image_dir), views, workers, notes
        self.written = 0

    def __call__(self, cameras, frames, rel_paths):
        jobs = []
        for cam in sorted(set(cameras.tolist())):
            sel = cameras == cam
            jobs.append((self.views[cam], frames[sel], [self.image_dir / r for r in rel_paths[sel]]))
        if not jobs:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers, len(jobs)))) as pool:
            results = list(pool.map(lambda j: extract_frames(j[0].video, j[1], j[2]), jobs))
        for (view, frames_cam, _), (written, decoded) in zip(jobs, results):
            self.written += written
            if decoded is not None and decoded < int(max(frames_cam)):
                self.notes["skipped"].append(f"{view.label}: the video stopped after {decoded} decoded frames "
                                             f"(frames up to {int(max(frames_cam))} were needed); extract it again "
                                             f"from {ARCHIVES['video'].format(s=view.subject)}")
