"""CMU Panoptic (panoptic-toolbox layout) -> the prepared index of :mod:`lib.datasets.index`
(docs/original.md#cmu-panoptic-data).

Shapes: ``C`` = 5 HD cameras, ``J`` = 15 kept joints of coco19. Units: world cm.

Input per sequence ``src/<seq>/``: ``calibration_<seq>.json``, ``hdPose3d_stage1_coco19/body3DScene_<frame>.json``
and ``hdImgs/<PP>_<NN>/<PP>_<NN>_<frame>.jpg``. Annotation files are sorted by name and every
``interval``-th (file index, 15) is kept; frames without exactly one body are skipped. For each HD camera
(0,3), (0,6), (0,12), (0,13), (0,23): world joints ``p' = p M`` and ``R' = R M`` (axis change M),
projection with the original's distortion order (``lib.datasets.cameras.project_panoptic``), 2D visible
= 3D confidence > 0.1 and inside ``[0, W-1] x [0, H-1]``; a camera-sample whose root (2) is not 2D
visible is skipped, as are missing, unreadable and (with ``check_images``) black images.
3D: ``R'(p' - t)`` minus the root (root-relative camera frame, cm); ``hip_camera = R'(p'_root - t)``
as the original (docs/original.md#quirks, quirk 29). ``cam_R`` = R', ``cam_T`` = t (cm).
"""
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np

from lib.datasets import index as idx
from lib.datasets.prepare_h36m import _drop_black
from lib.datasets.stats import write_train_stats
from lib.utils.errors import BadValueError, MissingKeyError
from lib.utils.safe_io import load_json

TRAIN_SEQUENCES = ("171204_pose1", "171204_pose2", "171204_pose3", "171026_pose1", "171026_pose2",
                   "171026_cello3", "161029_piano3", "161029_piano4", "170407_office2")
VALID_SEQUENCES = ("171026_pose3", "161029_piano2", "170915_office1")
HD_CAMERAS = ((0, 3), (0, 6), (0, 12), (0, 13), (0, 23))      # sorted (panel, node)
NUM_JOINTS = 15
ROOT_JOINT = 2
CONF_THRESHOLD = 0.1
AXIS_M = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def load_calibration(seq_dir):
    """-> {(panel, node): dict(R' (3,3), t (3,) cm, K (3,3), dist (5,), width, height)} of the HD cameras."""
    seq_dir = Path(seq_dir)
    path = seq_dir / f"calibration_{seq_dir.name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; fetch it with panoptic-toolbox "
                                f"./scripts/getData.sh {seq_dir.name}")
    calib = load_json(path)
    cams = {}
    for cam in calib.get("cameras", []):
        key = (int(cam["panel"]), int(cam["node"]))
        if key in HD_CAMERAS and cam.get("type", "hd") == "hd":
            res = cam.get("resolution", [1920, 1080])
            cams[key] = {"R": np.asarray(cam["R"], np.float64).reshape(3, 3) @ AXIS_M,
                         "t": np.asarray(cam["t"], np.float64).reshape(3),
                         "K": np.asarray(cam["K"], np.float64).reshape(3, 3),
                         "dist": np.asarray(cam["distCoef"], np.float64).reshape(-1)[:5],
                         "width": int(res[0]), "height": int(res[1])}
    missing = [k for k in HD_CAMERAS if k not in cams]
    if missing:
        raise MissingKeyError(f"{path}: no HD camera entries for (panel, node) {missing}")
    return cams


def _sequence_rows(seq_dir, interval, counts, project_panoptic):
    seq = seq_dir.name
    ann_dir = seq_dir / "hdPose3d_stage1_coco19"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"{ann_dir} not found; extract hdPose3d_stage1_coco19.tar of {seq} "
                                f"(panoptic-toolbox ./scripts/extractAll.sh {seq})")
    cams = load_calibration(seq_dir)
    files = sorted(ann_dir.glob("body3DScene_*.json"))
    counts["annotation_files"] += len(files)
    files = files[::interval]
    counts["sampled_frames"] += len(files)
    poses, frame_strs = [], []
    for f in files:
        bodies = load_json(f).get("bodies", [])
        if len(bodies) != 1:
            counts["skipped_not_one_body"] += 1
            continue
        joints = np.asarray(bodies[0]["joints19"], np.float64).reshape(-1, 4)[:NUM_JOINTS]
        if joints[ROOT_JOINT, 3] <= CONF_THRESHOLD:
            counts["skipped_root_low_confidence"] += 1
            continue
        poses.append(joints)
        frame_strs.append(f.stem.split("_")[-1])
    out = []
    listing = {}
    for key in HD_CAMERAS:
        cam = cams[key]
        name = f"{key[0]:02d}_{key[1]:02d}"
        img_dir = seq_dir / "hdImgs" / name
        if name not in listing:
            listing[name] = set(os.listdir(img_dir)) if img_dir.is_dir() else set()
        if not poses:
            continue
        P = np.stack(poses)                                   # (F, J, 4)
        p_world = P[..., :3] @ AXIS_M                         # p' = p M
        vis3d = P[..., 3] > CONF_THRESHOLD
        uv = project_panoptic(p_world, cam["K"], cam["dist"], cam["R"], cam["t"])
        W, H = cam["width"], cam["height"]
        vis = vis3d & (uv[..., 0] >= 0) & (uv[..., 0] <= W - 1) & (uv[..., 1] >= 0) & (uv[..., 1] <= H - 1)
        counts["camera_samples"] += len(P)
        root_ok = vis[:, ROOT_JOINT]
        counts["skipped_root_not_visible"] += int((~root_ok).sum())
        rel = np.array([f"{seq}/hdImgs/{name}/{name}_{fs}.jpg" for fs in frame_strs], dtype=str)
        present = np.array([r.rsplit("/", 1)[1] in listing[name] for r in rel])
        counts["skipped_missing_image"] += int((root_ok & ~present).sum())
        keep = root_ok & present
        cam3d = (p_world[keep] - cam["t"]) @ cam["R"].T      # R'(p' - t), the original's convention
        hip = cam3d[:, ROOT_JOINT]
        n = int(keep.sum())
        out.append({
            "image": rel[keep], "joints_2d": uv[keep], "joints_vis": vis[keep].astype(np.uint8),
            "joints_3d_valid": vis3d[keep].astype(np.uint8),       # DATASET.MASK_LOW_CONFIDENCE
            "joints_3d": cam3d - hip[:, None], "hip_camera": hip,
            "width": np.full(n, W), "height": np.full(n, H), "action": np.full(n, "", dtype="<U1"),
            "subject": np.full(n, seq), "camera": np.full(n, name),
            "frame": np.array([int(fs) for fs in frame_strs], np.int64)[keep],
            "cam_R": np.broadcast_to(cam["R"], (n, 3, 3)), "cam_T": np.broadcast_to(cam["t"], (n, 3)),
            "cam_K": np.broadcast_to(cam["K"], (n, 3, 3)), "cam_dist": np.broadcast_to(cam["dist"], (n, 5)),
        })
    return out


def _fingerprint(seq_dirs, intervals, check_images, splits, seqs):
    h = hashlib.sha1()
    h.update(json.dumps({"version": idx.FORMAT_VERSION, "intervals": intervals, "check": check_images,
                         "splits": list(splits), "seqs": seqs}, sort_keys=True).encode())
    for d in seq_dirs:
        for f in [d / f"calibration_{d.name}.json", d / "hdPose3d_stage1_coco19"]:
            if f.exists():
                st = f.stat()
                h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def prepare_panoptic(src, dst, train_seqs=TRAIN_SEQUENCES, valid_seqs=VALID_SEQUENCES, interval=15,
                     splits=("train", "valid"), check_images=True, force=False, workers=None, progress=True,
                     log=print):
    """Build ``dst/index.json``, ``dst/<split>.npz``, ``dst/stats.npz`` from a panoptic-toolbox folder."""
    from lib.datasets.cameras import project_panoptic
    from lib.datasets.prepare_h36m import format_report
    t0 = time.time()
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"--src {src} does not exist; pass the folder holding the panoptic-toolbox "
                                f"sequences (<seq>/calibration_<seq>.json, hdImgs/, hdPose3d_stage1_coco19/)")
    if int(interval) < 1:
        raise BadValueError(f"--interval must be >= 1, got {interval}")
    seq_of = {"train": tuple(train_seqs), "valid": tuple(valid_seqs)}
    found = sorted(p.name for p in src.iterdir() if p.is_dir() and (p / "hdPose3d_stage1_coco19").is_dir())
    for split in splits:
        if split not in seq_of:
            raise BadValueError(f"unknown split {split!r}; known: train, valid")
    wanted = [src / s for split in splits for s in seq_of[split] if (src / s).is_dir()]
    intervals = {s: int(interval) for s in splits}
    fingerprint = _fingerprint(wanted, intervals, check_images, splits, {k: list(v) for k, v in seq_of.items()})
    old = None if force else idx.up_to_date_index(dst, "panoptic", fingerprint, log)
    if old is not None:
        return old
    workers = workers or min(16, (os.cpu_count() or 2) * 2)
    try:
        image_rel = os.path.relpath(src.resolve(), dst.resolve())
    except ValueError:
        image_rel = str(src.resolve())
    report = {"src": str(src), "data_dir": str(src), "layouts": ["panoptic-toolbox"], "cameras": "per-sequence calibration",
              "subjects_found": found, "check_images": check_images, "splits": {}}
    info_splits, train_arrays = {}, None
    for split in splits:
        counts = Counter(annotation_files=0, sampled_frames=0, skipped_not_one_body=0,
                         skipped_root_low_confidence=0, camera_samples=0, skipped_root_not_visible=0,
                         skipped_missing_image=0, skipped_unreadable_image=0, skipped_black_image=0)
        present = [s for s in seq_of[split] if (src / s / "hdPose3d_stage1_coco19").is_dir()]
        parts = []
        todo = present
        if progress:
            from tqdm import tqdm
            todo = tqdm(present, desc=f"panoptic {split}", unit="seq", leave=False)
        for seq in todo:
            parts += _sequence_rows(src / seq, int(interval), counts, project_panoptic)
        arrays = ({k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts
                  else idx.empty_split(NUM_JOINTS))
        if check_images:
            arrays = _drop_black(arrays, src, counts, workers, progress)
        if len(arrays["image"]) == 0:
            if not present:
                why = (f"none of the {split} sequences {list(seq_of[split])} is under {src} (found {found}); "
                       f"pass --{split}-seqs with the sequences you have")
            elif counts["sampled_frames"] == 0:
                why = f"sequences {present} hold no body3DScene_*.json annotation files"
            elif counts["camera_samples"] == 0:
                why = (f"all {counts['sampled_frames']} sampled frames were skipped (not exactly one body: "
                       f"{counts['skipped_not_one_body']}, root confidence <= 0.1: {counts['skipped_root_low_confidence']})")
            elif counts["skipped_root_not_visible"] >= counts["camera_samples"]:
                why = "the root joint projects outside every camera image (root-visibility filter)"
            elif counts["skipped_missing_image"] + counts["skipped_root_not_visible"] >= counts["camera_samples"]:
                why = "the images of every sample are missing (expected hdImgs/<PP>_<NN>/<PP>_<NN>_<frame>.jpg)"
            else:
                why = "every remaining image is unreadable or black (black-image filter; try --no-check-images)"
            raise BadValueError(f"split {split!r} is empty: {why}. Counts: {dict(counts)}")
        n = idx.write_split(dst, split, arrays, NUM_JOINTS)
        if split == "train":
            train_arrays = arrays
        kept = {k: v for k, v in counts.items()}
        report["splits"][split] = {
            "subjects": sorted(set(arrays["subject"].tolist())),
            "subjects_missing": [s for s in seq_of[split] if s not in present],
            "sequences": len(present), "interval": int(interval), "kept": n,
            "rows": counts["annotation_files"], "sampled": counts["sampled_frames"],
            "actions": {"<none>": n}, **kept}
        info_splits[split] = {"file": f"{split}.npz", "count": n, "interval": int(interval),
                              "subjects": list(seq_of[split])}
    stats_info = write_train_stats(dst, train_arrays)
    info = {"dataset": "panoptic", "num_joints": NUM_JOINTS, "image_root": image_rel, "splits": info_splits,
            "counts": {s: v["count"] for s, v in info_splits.items()},
            "stats": stats_info,
            "report": report, "fingerprint": fingerprint, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": round(time.time() - t0, 2),
            "conventions": {"joints_2d": "px (L2D distortion order)", "joints_3d": "cm, camera frame, root-relative",
                            "hip_camera": "cm, R'(p' - t) as the original", "cam_R": "R' = R M",
                            "cam_T": "t (cm) of the calibration", "cam_dist": "k1, k2, p1, p2, k3",
                            "joints_vis": "confidence > 0.1 and 0 <= u <= W-1, 0 <= v <= H-1",
                            "joints_3d_valid": "confidence > 0.1 (else the toolbox's world origin)"}}
    idx.write_index(dst, info)
    log(format_report(info))
    return info
