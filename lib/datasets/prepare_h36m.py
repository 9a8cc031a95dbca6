"""Human3.6M -> the prepared index of :mod:`lib.datasets.index` (docs/original.md#human36m-data, docs/differences.md).

Shapes: ``N`` annotation rows, ``32`` annotated joints, ``J`` = 17 kept joints.

Accepted inputs (``src``):

* anibali/h36m-fetch: ``[src/]processed/S*/<Action>-<n>/annot.h5`` with
  ``imageSequence/<camera>/img_%06d.jpg`` (``frame`` is 1-based and names the image);
* the original L2D layout: ``src/S*/<action>/annot.pkl`` (same keys) with ``img_%08d.jpg``;
* the extracted official archives: ``src/S*/MyPoseFeatures/{D2_Positions,D3_Positions[_mono]}/*.cdf``
  with ``src/S*/Videos/*.mp4`` (:mod:`lib.datasets.h36m_official`): the same rows as h36m-fetch would
  give, the kept frames decoded into ``dst/images``.

Rows are grouped by their ``camera`` column and sampled every ``interval``-th row of each camera,
which equals the original's ``int(N/4)`` camera-major blocks whenever those are well formed
(docs/original.md#quirks, quirk 38) and stays right when they are not.

Calibration: ``--cameras FILE`` if given, else a ``camera_parameters.json`` found in ``src`` (or
beside its ``processed/``), else the shipped ``lib/datasets/h36m_cameras.json``; the image size of
every sample comes from it.

Skips (docs/original.md#human36m-data): pelvis outside the image; image missing or unreadable; image whose first
(blue) channel is all zero ("black"; checked when ``check_images``, the default, as the original
does -- it reads every kept image once, in a thread pool). The same check also skips a JPEG cut
short (no end-of-image marker), which OpenCV would decode silently with a grey lower part; each
reason has its own count in the report.
"""
import hashlib
import json
import os
import re
import time
from collections import Counter, OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lib.core.skeleton import H36M32_TO_17, H36M_ACTIONS
from lib.datasets import h36m_official as official
from lib.datasets import index as idx
from lib.datasets.stats import write_train_stats
from lib.utils.errors import BadValueError, CorruptFileError, MissingKeyError
from lib.utils.safe_io import load_pickle, read_image

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
VALID_SUBJECTS = ("S9", "S11")
SPLITS = {"train": TRAIN_SUBJECTS, "valid": VALID_SUBJECTS}
DEFAULT_INTERVALS = {"train": 40, "valid": 100, "test": 100}
# A dataset may name its own splits in a splits.json beside its cameras: {"subjects": {split:
# [subject]}, "pose_only": {split: npz}} (the synthetic demo's valid/test plan and its image-free
# lifter split); Human3.6M itself has none and keeps SPLITS.
SPLIT_PLAN_FILE = "splits.json"
NUM_JOINTS = 17
ROOT_JOINT = 0

# h36m-fetch metadata.xml action ids (1 = "_ALL" excluded)
ACTION_IDS = {2: "Directions", 3: "Discussion", 4: "Eating", 5: "Greeting", 6: "Phoning", 7: "Posing",
              8: "Purchases", 9: "Sitting", 10: "SittingDown", 11: "Smoking", 12: "TakingPhoto",
              13: "Waiting", 14: "Walking", 15: "WalkingDog", 16: "WalkingTogether"}
# Naming variants of the raw videos / VideoPose3D / h36m-fetch -> the canonical names of H36M_ACTIONS.
ACTION_ALIASES = {"photo": "TakingPhoto", "takingphoto": "TakingPhoto", "walkdog": "WalkingDog",
                  "walkingdog": "WalkingDog", "walktogether": "WalkingTogether",
                  "walkingtogether": "WalkingTogether", "phone": "Phoning", "phoning": "Phoning",
                  "discuss": "Discussion", "sittingdown": "SittingDown", "sitdown": "SittingDown",
                  "purchase": "Purchases", "purchases": "Purchases", "eat": "Eating", "greet": "Greeting",
                  "smoke": "Smoking", "wait": "Waiting", "walk": "Walking", "sit": "Sitting",
                  "pose": "Posing", "direction": "Directions"}
ACTION_ALIASES.update({a.lower(): a for a in H36M_ACTIONS})

COMMAND = "python run/prepare_h36m.py --src DIR --dst {dst}"


def normalise_action(folder_name):
    """'TakingPhoto-1', 'Photo 1', 'WalkDog_2', 'Walking' -> canonical H36M action name, or '' if unknown."""
    base = re.sub(r"[\s_\-\.]*\d+$", "", folder_name.strip())
    key = re.sub(r"[\s_\-\.]", "", base).lower()
    return ACTION_ALIASES.get(key, "")


def find_data_dir(src):
    """The folder holding S*/ subject folders: ``src/processed`` if present, else ``src``."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} does not exist; pass the h36m-fetch folder (holding processed/) "
                                f"or the L2D data_3d/h36m folder")
    if (src / "processed").is_dir():
        return src / "processed"
    return src


def find_camera_file(src, data_dir, cameras=None):
    """--cameras FILE, else camera_parameters.json in src / beside processed/, else None (shipped)."""
    if cameras is not None:
        path = Path(cameras)
        if not path.is_file():
            raise FileNotFoundError(f"--cameras {path} not found (accepted: the shipped "
                                    f"lib/datasets/h36m_cameras.json, karfly camera-parameters.json, "
                                    f"L2D camera_parameters.json)")
        return path
    places = [Path(src), data_dir]
    if data_dir.name == "processed":
        places.append(data_dir.parent)
    for place in places:
        for name in ("camera_parameters.json", "camera-parameters.json"):
            if (place / name).is_file():
                return place / name
    return None


def find_split_plan(src, data_dir):
    """splits.json in src / data_dir / beside processed/ -> (path, dict), or (None, None)."""
    places = [Path(src), data_dir] + ([data_dir.parent] if data_dir.name == "processed" else [])
    for place in places:
        if (place / SPLIT_PLAN_FILE).is_file():
            path = place / SPLIT_PLAN_FILE
            return path, json.loads(path.read_text())
    return None, None


def _carry_pose_only(plan_path, plan, dst):
    """Copy the plan's pose-only splits (already index-format arrays) into dst -> {split: index entry}."""
    from lib.utils.safe_io import load_npz
    entries = {}
    for split, file in (plan or {}).get("pose_only", {}).items():
        source = plan_path.parent / file
        arrays = load_npz(source, f"re-create {file} (run/make_demo_data.py --lifter-poses N)")
        if (Path(dst) / f"{split}.npz").resolve() == source.resolve():
            # prepared in place: rewriting would change the file the fingerprint was taken of
            n = len(idx.check_split_arrays(arrays, NUM_JOINTS, where=str(source))["image"])
        else:
            n = idx.write_split(dst, split, arrays, NUM_JOINTS)
        subjects = sorted(set(arrays["subject"].tolist()), key=lambda s: int(s[1:]))
        entries[split] = {"file": f"{split}.npz", "count": n, "pose_only": True, "subjects": subjects}
    return entries


def _annot_files(data_dir):
    """-> sorted list of (subject, folder_name, annot_path, layout) for every S*/<action>/annot.*"""
    found = []
    for subj_dir in sorted(p for p in data_dir.iterdir() if p.is_dir() and re.fullmatch(r"S\d+", p.name)):
        for act_dir in sorted(p for p in subj_dir.iterdir() if p.is_dir()):
            if (act_dir / "annot.h5").is_file():
                found.append((subj_dir.name, act_dir.name, act_dir / "annot.h5", "h36m-fetch"))
            elif (act_dir / "annot.pkl").is_file():
                found.append((subj_dir.name, act_dir.name, act_dir / "annot.pkl", "l2d"))
    return found


def _read_h5(path, keys):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in keys if k not in f]
            if missing:
                raise MissingKeyError(f"{path}: missing datasets {missing}; expected {list(keys)} (h36m-fetch annot.h5)")
            out = {k: f[k][()] for k in keys}
            if "action" in f:
                out["action"] = f["action"][()]
        return out
    except OSError as err:          # h5py reports a truncated or non-HDF5 file as OSError
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise CorruptFileError(f"{path}: truncated or not an HDF5 file ({str(err).splitlines()[0][:160]}); "
                               f"re-download or re-extract this sequence (h36m-fetch), then re-run "
                               f"run/prepare_h36m.py --force") from err


def _read_annot(path, layout, trusted=None):
    keys = ("pose/2d", "pose/3d", "camera", "frame")
    if layout == "h36m-fetch":
        out = _read_h5(path, keys)
    else:
        # the original L2D layout ships its annotations pickled: plain data only unless the user trusts it
        data = load_pickle(path, trusted)
        if not isinstance(data, dict):
            raise CorruptFileError(f"{path}: expected a dict with keys {list(keys)} (L2D annot.pkl), "
                                   f"got {type(data).__name__}")
        missing = [k for k in keys if k not in data]
        if missing:
            raise MissingKeyError(f"{path}: missing keys {missing}; expected {list(keys)} (L2D annot.pkl)")
        out = {k: np.asarray(data[k]) for k in keys}
    n = len(out["camera"])
    if out["pose/2d"].shape != (n, 32, 2) or out["pose/3d"].shape != (n, 32, 3) or len(out["frame"]) != n:
        raise BadValueError(f"{path}: expected pose/2d (N,32,2), pose/3d (N,32,3), frame (N,) with N = "
                         f"len(camera) = {n}; got {out['pose/2d'].shape}, {out['pose/3d'].shape}, "
                         f"{np.shape(out['frame'])}")
    return out


def _fingerprint(files, camera_file, intervals, check_images, splits, plan_path=None):
    h = hashlib.sha1()
    h.update(json.dumps({"version": idx.FORMAT_VERSION, "intervals": intervals, "check": check_images,
                         "splits": list(splits)}, sort_keys=True).encode())
    if plan_path is not None:
        plan = json.loads(plan_path.read_text())
        files = list(files) + [plan_path] + [plan_path.parent / f for f in plan.get("pose_only", {}).values()]
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    if camera_file is not None:
        h.update(Path(camera_file).read_bytes())
    return h.hexdigest()


def check_image(path):
    """-> 'ok', 'black' (blue channel all zero, docs/original.md#human36m-data), 'unreadable', or
    'truncated' (a JPEG cut short: OpenCV would decode it with its missing part grey and no error)."""
    image, why = read_image(path)
    if image is None:
        return "truncated" if why.startswith("truncated") else "unreadable"
    return "ok" if image[..., 0].any() else "black"


def _camera_arrays(cam):
    # cam_T: translation in cm with X_cam_cm = R X_world_cm + T (the original's t/10).
    return (np.asarray(cam["R"], np.float32), (np.asarray(cam["t_mm"]) / 10.0).astype(np.float32),
            np.asarray(cam["K"], np.float32), np.asarray(cam["dist"], np.float32))


def _sequence_rows(subject, folder, annot, cams, interval, image_dir, layout, counts, listing_cache,
                   write_frames=None):
    """Sampled rows of one sequence -> dict of split arrays; updates ``counts`` (Counter).

    ``write_frames(cameras, frames, rel_paths)``, if given, writes the images of the sampled rows
    whose pelvis is in the image before their presence is checked (the official archives' videos).
    """
    j2d_all = annot["pose/2d"][:, list(H36M32_TO_17)].astype(np.float64)
    j3d_all = annot["pose/3d"][:, list(H36M32_TO_17)].astype(np.float64) / 10.0   # mm -> cm
    cam_col = np.asarray(annot["camera"]).astype(np.int64).astype(str)
    frames = np.asarray(annot["frame"]).astype(np.int64)
    counts["rows"] += len(cam_col)
    rows = []
    for cam_id in OrderedDict.fromkeys(cam_col):           # cameras in order of appearance
        cam_rows = np.flatnonzero(cam_col == cam_id)
        rows.append(cam_rows[::interval])
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    counts["sampled"] += len(rows)
    if cams is not None:
        unknown = sorted(set(cam_col[rows]) - set(cams))
        if unknown:
            raise MissingKeyError(f"calibration has no camera {unknown} for subject {subject} "
                           f"(sequence {folder}); pass --cameras FILE with that subject's cameras")
    width = np.array([cams[c]["width"] for c in cam_col[rows]], np.int32)
    height = np.array([cams[c]["height"] for c in cam_col[rows]], np.int32)
    j2d, j3d = j2d_all[rows], j3d_all[rows]
    x, y = j2d[..., 0], j2d[..., 1]
    vis = ((x >= 0) & (x < width[:, None]) & (y >= 0) & (y < height[:, None])).astype(np.uint8)
    root_ok = vis[:, ROOT_JOINT] > 0
    counts["skipped_root_not_visible"] += int((~root_ok).sum())

    pattern = "img_{:08d}.jpg" if layout == "l2d" else "img_{:06d}.jpg"
    rel = np.array([f"{subject}/{folder}/imageSequence/{c}/{pattern.format(fr)}"
                    for c, fr in zip(cam_col[rows], frames[rows])], dtype=str)
    if write_frames is not None and root_ok.any():
        write_frames(cam_col[rows][root_ok], frames[rows][root_ok], rel[root_ok])
        for r in rel[root_ok]:
            listing_cache.pop(r.rsplit("/", 1)[0], None)
    present = np.zeros(len(rows), bool)
    for i, r in enumerate(rel):
        folder_path, name = r.rsplit("/", 1)
        if folder_path not in listing_cache:
            d = image_dir / folder_path
            listing_cache[folder_path] = set(os.listdir(d)) if d.is_dir() else set()
        present[i] = name in listing_cache[folder_path]
    missing = root_ok & ~present
    counts["skipped_missing_image"] += int(missing.sum())
    keep = root_ok & present
    action = normalise_action(folder)
    if not action and "action" in annot and len(annot["action"]):
        action = ACTION_IDS.get(int(np.asarray(annot["action"])[0]), "")
    if not action:
        counts[f"unknown_action:{folder}"] += int(keep.sum())
    cam_arrays = {c: _camera_arrays(cams[c]) for c in set(cam_col[rows])}
    cam_of = cam_col[rows][keep]
    hip = j3d[keep, ROOT_JOINT]
    n = int(keep.sum())
    return {
        "image": rel[keep], "joints_2d": j2d[keep], "joints_vis": vis[keep],
        "joints_3d": j3d[keep] - hip[:, None], "hip_camera": hip, "width": width[keep], "height": height[keep],
        "action": np.full(n, action, dtype=object).astype(str) if n else np.zeros(0, str),
        "subject": np.full(n, subject).astype(str), "camera": cam_of.astype(str), "frame": frames[rows][keep],
        "cam_R": np.array([cam_arrays[c][0] for c in cam_of]).reshape(n, 3, 3),
        "cam_T": np.array([cam_arrays[c][1] for c in cam_of]).reshape(n, 3),
        "cam_K": np.array([cam_arrays[c][2] for c in cam_of]).reshape(n, 3, 3),
        "cam_dist": np.array([cam_arrays[c][3] for c in cam_of]).reshape(n, 5),
    }


def _concat(parts, num_joints):
    if not parts:
        return idx.empty_split(num_joints)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _drop_black(arrays, image_dir, counts, workers, progress):
    paths = [image_dir / p for p in arrays["image"]]
    if not paths:
        return arrays
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(check_image, paths, chunksize=16)
        if progress:
            from tqdm import tqdm
            it = tqdm(it, total=len(paths), desc="checking images", unit="img", leave=False)
        result = np.array(list(it))
    for status in ("unreadable", "truncated", "black"):
        counts[f"skipped_{status}_image"] += int((result == status).sum())
    keep = result == "ok"
    return {k: v[keep] for k, v in arrays.items()}


def _empty_split_error(split, subjects, found_subjects, counts, data_dir, interval, skipped_views=()):
    present = [s for s in subjects if s in found_subjects]
    if not present:
        why = f"no subject folder {list(subjects)} under {data_dir} (found {sorted(found_subjects)})"
    elif counts["rows"] == 0 and skipped_views:
        why = (f"every view of subjects {present} was skipped ({len(skipped_views)}: {skipped_views[0]}"
               f"{'; ...' if len(skipped_views) > 1 else ''})")
    elif counts["rows"] == 0:
        why = f"subjects {present} hold no annotation rows"
    elif counts["skipped_root_not_visible"] >= counts["sampled"]:
        why = f"all {counts['sampled']} sampled rows have the pelvis outside the image (root-visibility filter)"
    elif counts["skipped_missing_image"] + counts["skipped_root_not_visible"] >= counts["sampled"]:
        why = (f"the images of all {counts['sampled']} sampled rows are missing (missing-image filter; "
               f"expected imageSequence/<camera>/img_%06d.jpg beside each annot.h5)")
    else:
        why = "every remaining image is unreadable or black (black-image filter; try --no-check-images)"
    raise BadValueError(f"split {split!r} is empty: {why}. Counts: rows {counts['rows']}, every {interval}th "
                     f"row per camera -> {counts['sampled']}, {dict(counts)}")


def prepare_h36m(src, dst, cameras=None, train_interval=40, valid_interval=100, splits=("train", "valid"),
                 check_images=True, force=False, workers=None, progress=True, log=print, trusted=None,
                 test_interval=100):
    """Build ``dst/index.json``, ``dst/<split>.npz`` and ``dst/stats.npz`` -> the index info dict.

    A no-op (returns the existing info) when the inputs and options are unchanged, unless ``force``.
    ``trusted``: paths (files or folders) whose ``annot.pkl`` may hold pickled code (``--trust``);
    any other ``annot.pkl`` is read as plain data only. A ``splits.json`` found beside the cameras
    (:data:`SPLIT_PLAN_FILE`) replaces SPLITS' subject lists (it may add ``test``), and its pose-only
    splits are copied into ``dst`` and indexed with ``pose_only: true``.
    """
    from lib.datasets.cameras import load_h36m_cameras
    t0 = time.time()
    src, dst = Path(src), Path(dst)
    data_dir = find_data_dir(src)
    annots = _annot_files(data_dir)
    image_dir, source_files = data_dir, [a[2] for a in annots]
    if not annots:
        official_dir = official.find_official_dir(src)
        if official_dir is None:
            raise FileNotFoundError(f"no S*/<action>/annot.h5 (h36m-fetch), annot.pkl (L2D) or "
                                    f"S*/MyPoseFeatures/D2_Positions/*.cdf (official archives) under {data_dir}; "
                                    f"pass --src the h36m-fetch folder (with processed/), the L2D data folder or "
                                    f"the folder where the official archives were extracted")
        # the extracted official archives: rows from the CDF files, kept frames decoded into dst/images
        data_dir, image_dir = official_dir, dst / "images"
        ignored = []
        recordings = official.find_recordings(official_dir, notes=ignored)
        annots = [(r.subject, r.folder, r, "official") for r in recordings]
        source_files = [f for r in recordings for f in r.files()]
        if not annots:
            raise FileNotFoundError(f"no pose files (S*/MyPoseFeatures/D2_Positions/<name>.<camera>.cdf) under "
                                    f"{official_dir}; extract the Poses_D2_Positions_S*.tgz, "
                                    f"Poses_D3_Positions_S*.tgz and Videos_S*.tgz archives there")
        # before any work: without the CDF reader nothing can be read (one line, what to install)
        official.import_cdflib(f"the official Human3.6M archives (e.g. "
                               f"{next(f for f in source_files if f.suffix == '.cdf')})")
    camera_file = find_camera_file(src, data_dir, cameras)
    plan_path, plan = find_split_plan(src, data_dir)
    split_subjects = {k: tuple(v) for k, v in plan["subjects"].items()} if plan else SPLITS
    given = {"train": int(train_interval), "valid": int(valid_interval), "test": int(test_interval)}
    # a plan's other splits (the demo's pretrain) are training images: --train-interval sets theirs
    flags = {k: k if k in given else "train" for k in split_subjects}
    intervals = {**given, **{k: given[flag] for k, flag in flags.items()}}
    for split in splits:
        if split not in split_subjects:
            raise BadValueError(f"unknown split {split!r}; known: {sorted(split_subjects)}"
                                f"{'' if plan else ' (a splits.json beside the cameras may name others)'}")
        if intervals[split] < 1:
            raise BadValueError(f"--{flags[split]}-interval must be >= 1, got {intervals[split]}")
    fingerprint = _fingerprint(source_files, camera_file, intervals, check_images, splits, plan_path)
    old = None if force else idx.up_to_date_index(dst, "h36m", fingerprint, log)
    if old is not None:
        return old

    all_cams = load_h36m_cameras(camera_file)
    cam_desc = str(camera_file) if camera_file is not None else "shipped lib/datasets/h36m_cameras.json"
    found_subjects = {a[0] for a in annots}
    layouts = sorted({a[3] for a in annots})
    workers = workers or min(16, (os.cpu_count() or 2) * 2)
    try:
        image_rel = os.path.relpath(image_dir.resolve(), dst.resolve())
    except ValueError:                                     # other drive (Windows)
        image_rel = str(image_dir.resolve())
    report = {"src": str(src), "data_dir": str(data_dir), "layouts": layouts, "cameras": cam_desc,
              "subjects_found": sorted(found_subjects, key=lambda s: int(s[1:])), "check_images": check_images,
              "splits": {}}
    if "official" in layouts:
        report["ignored"] = ignored
    info_splits = {}
    train_arrays = None
    listing = {}
    for split in splits:
        subjects = split_subjects[split]
        counts = Counter(rows=0, sampled=0, skipped_root_not_visible=0, skipped_missing_image=0,
                         skipped_unreadable_image=0, skipped_black_image=0)
        parts, seqs = [], []
        notes = {"skipped": [], "lengths": [], "mono_vs_world": []}        # official archives only
        frames_written = 0
        todo = [a for a in annots if a[0] in subjects]
        if progress:
            from tqdm import tqdm
            todo = tqdm(todo, desc=f"h36m {split}", unit="seq", leave=False)
        for subject, folder, path, layout in todo:
            if subject not in all_cams:
                raise MissingKeyError(f"{cam_desc} has no cameras for subject {subject} (needed by {path}); "
                               f"pass --cameras FILE with that subject")
            writer = None
            if layout == "official":
                annot, views = official.load_recording(path, all_cams[subject], notes)
                if annot is None:
                    continue
                writer = official.FrameWriter(image_dir, views, workers, notes)
            else:
                annot = _read_annot(path, layout, trusted)
            parts.append(_sequence_rows(subject, folder, annot, all_cams[subject], intervals[split], image_dir,
                                        layout, counts, listing, write_frames=writer))
            frames_written += writer.written if writer is not None else 0
            seqs.append(f"{subject}/{folder}")
        arrays = _concat(parts, NUM_JOINTS)
        if check_images:
            arrays = _drop_black(arrays, image_dir, counts, workers, progress)
        if len(arrays["image"]) == 0:
            _empty_split_error(split, subjects, found_subjects, counts, data_dir, intervals[split], notes["skipped"])
        n = idx.write_split(dst, split, arrays, NUM_JOINTS)
        if split == "train":
            train_arrays = arrays
        actions = Counter(arrays["action"].tolist())
        report["splits"][split] = {
            "subjects": sorted(set(arrays["subject"].tolist()), key=lambda s: int(s[1:])),
            "subjects_missing": [s for s in subjects if s not in found_subjects],
            "sequences": len(seqs), "interval": intervals[split], "kept": n,
            "actions": {a or "<unknown>": c for a, c in sorted(actions.items())},
            **{k: v for k, v in counts.items()}}
        if "official" in layouts:
            diffs = notes["mono_vs_world"]
            worst = max(diffs) if diffs else None
            report["splits"][split]["official"] = {
                "frames_written": frames_written, "views_skipped": notes["skipped"],
                "length_differences": notes["lengths"],
                "mono_vs_world_max_mm": None if worst is None else round(worst[0], 4),
                "mono_vs_world_worst_view": None if worst is None else worst[1]}
        info_splits[split] = {"file": f"{split}.npz", "count": n, "interval": intervals[split],
                              "subjects": list(subjects)}
    info_splits.update(_carry_pose_only(plan_path, plan, dst))
    stats_info = write_train_stats(dst, train_arrays)
    info = {"dataset": "h36m", "num_joints": NUM_JOINTS, "image_root": image_rel, "splits": info_splits,
            "counts": {s: v["count"] for s, v in info_splits.items()},
            "stats": stats_info,
            "report": report, "fingerprint": fingerprint, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": round(time.time() - t0, 2),
            "conventions": {"joints_2d": "px in the original image", "joints_3d": "cm, camera frame, root-relative",
                            "hip_camera": "cm, camera frame", "cam_T": "cm, X_cam = cam_R X_world + cam_T",
                            "cam_dist": "k1, k2, p1, p2, k3 (Human3.6M model)",
                            "joints_vis": "1 if 0 <= x < width and 0 <= y < height"}}
    idx.write_index(dst, info)
    log(format_report(info))
    return info


def _listed(title, items, limit=8):
    """'title (n):' then up to ``limit`` indented items and how many more the index report holds."""
    lines = [f"{title} ({len(items)}):"] + [f"      {x}" for x in items[:limit]]
    if len(items) > limit:
        lines.append(f"      ... {len(items) - limit} more in index.json (report)")
    return lines


def _names(subjects, limit=12):
    """'S1, S5, ...' -- a long list (the demo's 200 pre-training people) as its ends and its count."""
    if len(subjects) <= limit:
        return ", ".join(subjects)
    return f"{', '.join(subjects[:limit - 2])}, ..., {subjects[-1]} ({len(subjects)} subjects)"


def _official_lines(o):
    lines = [f"    official archives: {o['frames_written']} frames decoded from the videos"]
    if o["views_skipped"]:
        lines += _listed("    views skipped", o["views_skipped"])
    if o["length_differences"]:
        lines += _listed("    video and poses of different lengths, common frames kept", o["length_differences"])
    worst = o.get("mono_vs_world_max_mm")
    if worst is not None:
        verdict = ("agree" if worst <= official.MONO_WORLD_TOLERANCE_MM else
                   f"DIFFER by more than {official.MONO_WORLD_TOLERANCE_MM:g} mm (the index takes the mono files; "
                   f"check that the calibration, --cameras, is the one of these archives)")
        lines.append(f"    3D check: D3_Positions_mono and D3_Positions through the calibration {verdict} "
                     f"(largest difference {worst:g} mm, {o['mono_vs_world_worst_view']})")
    return lines


def format_report(info):
    """Human-readable summary of what a preparation found, kept and skipped."""
    rep = info["report"]
    lines = [f"prepared {info['dataset']} -> index format v{idx.FORMAT_VERSION}",
             f"  source: {rep['data_dir']} ({', '.join(rep['layouts'])}); cameras: {rep['cameras']}",
             f"  subjects found: {_names(rep['subjects_found'])}"]
    for split, r in rep["splits"].items():
        skipped = {k[len('skipped_'):]: v for k, v in r.items() if k.startswith("skipped_") and v}
        lines.append(f"  {split}: {r['kept']} samples kept from {r['sequences']} sequences of "
                     f"{_names(r['subjects'])} (interval {r['interval']}: {r['rows']} rows -> {r['sampled']} sampled); "
                     f"skipped {skipped or 'none'}")
        if r.get("subjects_missing"):
            lines.append(f"    subjects absent: {', '.join(r['subjects_missing'])}")
        lines.append("    actions: " + ", ".join(f"{a} {c}" for a, c in r["actions"].items()))
        unknown = [k for k in r if k.startswith("unknown_action:")]
        if unknown:
            lines.append(f"    unrecognised action folders (action ''): {[u.split(':', 1)[1] for u in unknown]}")
        if "official" in r:
            lines += _official_lines(r["official"])
    if rep.get("ignored"):
        lines += _listed("  ignored", rep["ignored"])
    if not rep.get("check_images", True):
        lines.append("  black-image check skipped (--no-check-images)")
    if info.get("stats"):
        lines.append(f"  stats.npz from train: 2D over {info['stats']['n_2d']} samples, 3D over {info['stats']['n_3d']}")
    return "\n".join(lines)
