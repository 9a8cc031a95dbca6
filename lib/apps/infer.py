"""Inference on a user's images or video: the detector's 2D joints, a lifter's 3D, overlays, an MP4.

What ``run/infer.py`` does (its --help says it for users): one person per frame, its box from a
boxes file or the whole frame, through the dataset's crop pipeline; predictions written as
``predictions.jsonl`` and ``predictions.npz``, pictures under ``overlay/`` and ``combined/``, and
for a video the combined frames as ``<video>_pose.mp4``. Faults (unreadable images, bad boxes,
non-finite predictions) are counted and reported, never fatal for the other frames.
"""
import csv
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from lib.apps.vis import IMAGENET_MEAN, IMAGENET_STD, overlay_and_3d
from lib.config import load_cfg
from lib.core.heatmap import decode_argmax, decode_soft, prepare_heatmaps
from lib.core.skeleton import get_skeleton
from lib.core.transforms import box_to_center_scale, get_affine_transform
from lib.utils.errors import BadValueError, UserError

logger = logging.getLogger("infer")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg"}
RECORD_KEYS = ("frame", "image", "box", "joints_2d_px", "confidence", "joints_3d_m", "image_size")


# ---------------------------------------------------------------------------------------------- models
def detector_from_args(args, device):
    """-> (cfg, detector in eval mode on device)."""
    import model_2d

    if args.run_dir:
        run_dir = Path(args.run_dir)
        cfg_path, weights = run_dir / "config.yaml", run_dir / "model_best.pth"
        for path in (cfg_path, weights):
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found: --run_dir must be a training run folder with "
                                        f"config.yaml and model_best.pth (or use --weights with --cfg)")
    else:
        cfg_path, weights = Path(args.cfg), Path(args.weights)
        if not weights.is_file():
            raise FileNotFoundError(f"detector weights not found: {weights}")
    cfg = load_cfg(str(cfg_path), args.opts or None)
    net = model_2d.build_pose_net(cfg)
    model_2d.load_pose_checkpoint(net, str(weights), strict=True)
    return cfg, net.to(device).eval()


def load_lifter(args, cfg, num_joints, device):
    """-> frozen lifter on device, or None for --model_3d none."""
    if str(args.model_3d).lower() in ("none", ""):
        return None
    import model_3d

    from lib.utils.safe_io import is_trusted

    name = args.model_3d
    trusted = list(cfg.TRUSTED_FILES) + list(args.trust or [])
    cfg.TRUSTED_FILES = trusted
    if args.lifter_weights:
        stats = args.stats or (cfg.MODEL_3D.STATS or None)
        if stats:                      # read here so that only a file named in --trust may run code
            stats = model_3d.load_stats(stats, trusted=trusted)
        lifter = model_3d.build_lifter(name, num_joints, weights=args.lifter_weights, stats=stats,
                                       weights_only=not is_trusted(args.lifter_weights, trusted))
    else:
        if args.stats:
            cfg.MODEL_3D.STATS = args.stats
        lifter = model_3d.resolve_lifter(cfg, name)
    return lifter.to(device).eval()


# ---------------------------------------------------------------------------------------------- inputs
def _frame_key(name):
    return Path(name).name


def read_boxes(path, box_format="xyxy"):
    """Box file -> (list of boxes in frame order or None, {key: box}) with boxes as [x1, y1, x2, y2]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--boxes file not found: {path}")

    def to_xyxy(value, where):
        box = value.get("box", value.get("bbox")) if isinstance(value, dict) else value
        try:
            box = [float(v) for v in box]
        except (TypeError, ValueError):
            raise BadValueError(f"{path}: {where}: box {value!r} is not four numbers") from None
        if len(box) != 4:
            raise BadValueError(f"{path}: {where}: box {box} must have 4 numbers ({box_format})")
        if not all(math.isfinite(v) for v in box):
            rejected.append(where)
            return None                 # that frame falls back to the whole frame
        if box_format == "xywh":
            box = [box[0], box[1], box[0] + box[2], box[1] + box[3]]
        if box[2] <= box[0] or box[3] <= box[1]:
            raise BadValueError(f"{path}: {where}: box {box} (x1, y1, x2, y2) is empty; check --box_format")
        return box

    ordered, keyed, rejected = None, {}, []
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as fh:
            for line_no, row in enumerate(csv.reader(fh), 1):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) != 5:
                    raise BadValueError(f"{path} line {line_no}: expected 'key,x1,y1,x2,y2', got {row}")
                try:
                    keyed[row[0].strip()] = to_xyxy(row[1:], f"line {line_no}")
                except ValueError:
                    if line_no == 1:          # header row
                        continue
                    raise
        _warn_rejected(path, rejected)
        return None, keyed
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BadValueError(f"{path} line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); "
                            f"fix the file (format: see python run/infer.py --help)") from None
    except UnicodeDecodeError as err:
        raise BadValueError(f"{path}: not a text file ({err.reason} at byte {err.start}); --boxes takes JSON "
                            f"or CSV") from None
    if isinstance(data, dict):
        keyed = {str(k): to_xyxy(v, f"key {k!r}") for k, v in data.items()}
    elif isinstance(data, list) and data and isinstance(data[0], dict) and (
            "frame" in data[0] or "image" in data[0]):
        for i, item in enumerate(data):
            key = item.get("image", item.get("frame"))
            keyed[str(_frame_key(key) if "image" in item else int(key))] = to_xyxy(item, f"entry {i}")
    elif isinstance(data, list):
        ordered = [to_xyxy(v, f"entry {i}") for i, v in enumerate(data)]
    else:
        raise BadValueError(f"{path}: expected a JSON list or object of boxes, got {type(data).__name__}")
    _warn_rejected(path, rejected)
    return ordered, keyed


def _warn_rejected(path, rejected):
    if rejected:
        logger.warning("%s: %d box(es) with NaN/inf numbers rejected (%s): their frames use the whole frame",
                       path, len(rejected), ", ".join(rejected[:5]) + (" ..." if len(rejected) > 5 else ""))


def clip_box(box, width, height):
    """[x1, y1, x2, y2] -> (box clipped to the image, or None when nothing of it is inside; changed?).

    A box far outside the frame makes the crop's affine transform degenerate (OpenCV fails on a
    huge one) and yields joints that mean nothing for this image.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    clipped = [min(max(x1, 0.0), width), min(max(y1, 0.0), height),
               min(max(x2, 0.0), width), min(max(y2, 0.0), height)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None, True
    return clipped, clipped != [x1, y1, x2, y2]


def iter_frames(source):
    """-> (kind 'images'|'video', total or None, fps or None, generator of (index, name, BGR uint8))."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {source}")

        def images():
            for i, f in enumerate(files):
                # None for an unreadable file: the caller skips it and counts it (training does too)
                yield i, f.name, cv2.imread(str(f), cv2.IMREAD_COLOR)
        return "images", len(files), None, images()
    if not source.is_file():
        raise FileNotFoundError(f"--input {source} is neither a folder of images nor a video file")
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise OSError(f"cannot open video {source} with OpenCV (is it a video? supported: {sorted(VIDEO_EXTS)})")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    fps = cap.get(cv2.CAP_PROP_FPS) or None

    def frames():
        i = 0
        try:
            while True:
                ok, image = cap.read()
                if not ok:
                    break
                yield i, f"{source.stem}_{i:06d}", image
                i += 1
        finally:
            cap.release()
    return "video", total, fps, frames()


def _batches(generator, size):
    batch = []
    for item in generator:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------- model step
def crop_batch(images_bgr, boxes, cfg):
    """Frames + boxes -> (input (N,3,H,W) float32, center (N,2), scale (N,2)) like the dataset pipeline."""
    w_in, h_in = int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1])
    center, scale = box_to_center_scale(np.asarray(boxes, np.float64), w_in / h_in)
    M = get_affine_transform(center, scale, 0.0, (w_in, h_in))
    crops = np.stack([cv2.warpAffine(img, M[i], (w_in, h_in), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                      for i, img in enumerate(images_bgr)])
    if cfg.DATASET.COLOR_RGB:
        crops = crops[..., ::-1]
    x = (crops.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), center, scale


@torch.no_grad()
def predict(net, lifter, cfg, inputs, center, scale, image_size, use_argmax, device):
    """-> numpy (joints_2d_px (N,J,2), confidence (N,J), joints_3d_m (N,J,3) or None)."""
    heatmaps = prepare_heatmaps(net(inputs.to(device)).float(), cfg.DATASET.DATASET)
    c = torch.as_tensor(center, dtype=torch.float32, device=device)
    s = torch.as_tensor(scale, dtype=torch.float32, device=device)
    if use_argmax:
        joints_2d, maxvals = decode_argmax(heatmaps, c, s, post_process=cfg.TEST.POST_PROCESS)
        conf = maxvals[..., 0]
    else:
        joints_2d = decode_soft(heatmaps, c, s, beta=cfg.TEST.BETA, post_process=cfg.TEST.POST_PROCESS)
        conf = heatmaps.flatten(2).amax(dim=-1)
    pose_3d = None
    if lifter is not None:
        size = torch.as_tensor(image_size, dtype=torch.float32, device=device)
        pose_3d = lifter(joints_2d.float(), size).cpu().numpy()
    return joints_2d.cpu().numpy(), conf.cpu().numpy(), pose_3d


# ---------------------------------------------------------------------------------------------- main
def _rounded(array, digits=3):
    """Nested lists for JSON, non-finite values as None (null): the file stays valid JSON."""
    values = np.round(np.asarray(array, np.float64), digits)
    return np.where(np.isfinite(values), values, None).tolist()


def _first(names, k=3):
    return ", ".join(map(str, names[:k])) + (" ..." if len(names) > k else "")


def _unused_boxes(ordered, keyed, used_keys, frames_read) -> int:
    """Boxes that no frame used: list entries past the last frame, keys that matched no frame."""
    if ordered is not None:
        return max(0, len(ordered) - frames_read)
    return len(set(keyed) - used_keys)


class _Faults:
    """What went wrong on which frames (names), reported once at the end."""

    def __init__(self):
        self.whole_frame, self.skipped, self.rejected, self.clipped, self.outside, self.non_finite = \
            [], [], [], [], [], []
        self.used_keys = set()


def frame_box(i, name, image, ordered, keyed, has_boxes: bool, faults: _Faults):
    """The box of frame ``i`` (file ``name``): its entry in the boxes file, clipped to the image, or
    the whole frame (recording why in ``faults``)."""
    h, w = image.shape[:2]
    box, has_entry = None, False
    if ordered is not None and i < len(ordered):
        box, has_entry = ordered[i], True
    elif keyed:
        for key in (_frame_key(name), str(i)):
            if key in keyed:
                box, has_entry = keyed[key], True
                faults.used_keys.add(key)
                break
    if box is not None:
        box, changed = clip_box(box, w, h)
        if box is None:
            faults.outside.append(name)
        elif changed:
            faults.clipped.append(name)
    elif has_entry:
        faults.rejected.append(name)
    elif has_boxes:
        faults.whole_frame.append(name)
    return box if box is not None else [0.0, 0.0, float(w), float(h)]


class _Pictures:
    """Overlay and combined PNGs per frame, and the MP4 of a video input (opened at the first frame)."""

    def __init__(self, out: Path, video_path, fps: float):
        self.out, self.video_path, self.fps, self.writer = out, video_path, fps, None
        (out / "overlay").mkdir(exist_ok=True)
        (out / "combined").mkdir(exist_ok=True)

    def add(self, stem: str, overlay, combined) -> None:
        cv2.imwrite(str(self.out / "overlay" / f"{stem}.png"), overlay)
        cv2.imwrite(str(self.out / "combined" / f"{stem}.png"), combined)
        if self.video_path is None:
            return
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (combined.shape[1], combined.shape[0]))
            if not self.writer.isOpened():
                raise OSError(f"OpenCV cannot write {self.video_path} with the mp4v codec")
        self.writer.write(combined)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _readable(frames, faults: _Faults, bar, input_path, seen):
    for item in frames:
        seen["frames"] += 1
        if item[2] is None:
            logger.warning("cannot read image %s: skipped", Path(input_path) / item[1])
            faults.skipped.append(item[1])
            bar.update(1)
            continue
        yield item


def _record(records, jsonl, kind, input_path, faults, i, name, box, joints_2d, conf, pose_3d, image_size):
    rec = {"frame": int(i), "image": name if kind == "images" else Path(input_path).name,
           "box": _rounded(box, 2), "joints_2d_px": _rounded(joints_2d), "confidence": _rounded(conf, 5)}
    if pose_3d is not None:
        rec["joints_3d_m"] = _rounded(pose_3d, 5)
    if not (np.isfinite(joints_2d).all() and (pose_3d is None or np.isfinite(pose_3d).all())):
        faults.non_finite.append(name)
    jsonl.write(json.dumps(rec, allow_nan=False) + "\n")
    for key in ("frame", "image", "box"):
        records[key].append(rec[key])
    records["joints_2d_px"].append(joints_2d)
    records["confidence"].append(conf)
    records["image_size"].append(image_size)
    if pose_3d is not None:
        records["joints_3d_m"].append(pose_3d)


def _save_arrays(records, skeleton, out: Path, input_path, faults: _Faults) -> Path:
    n = len(records["frame"])
    if n == 0:
        raise UserError(f"no frames read from {input_path}" + (
            f" ({len(faults.skipped)} unreadable image(s), first: {_first(faults.skipped)})" if faults.skipped else ""))
    arrays = {"frame": np.asarray(records["frame"], np.int64), "image": np.asarray(records["image"], dtype=str),
              "box": np.asarray(records["box"], np.float32).reshape(n, 4),
              "joints_2d_px": np.stack(records["joints_2d_px"]).astype(np.float32),
              "confidence": np.stack(records["confidence"]).astype(np.float32),
              "image_size": np.stack(records["image_size"]).astype(np.float32),
              "joint_names": np.asarray(skeleton.joint_names, dtype=str)}
    if records["joints_3d_m"]:
        arrays["joints_3d_m"] = np.stack(records["joints_3d_m"]).astype(np.float32)
    path = out / "predictions.npz"
    np.savez(path, **arrays)
    return path


def write_custom_export(records, skeleton, out: Path, name: str, input_path, confidence: bool = False) -> Path:
    """VideoPose3D's ``data_2d_custom_<name>.npz`` of the frames predicted (docs/detections.md#your-own-video):
    ``positions_2d[video]['custom']`` = [(T, J, 2 or 3)] full-frame pixels in frame order (a confidence
    third with ``confidence``), ``metadata['video_metadata'][video]`` = {w, h}; ``video`` is the input's
    file or folder name. Frames skipped as unreadable are absent (their numbers: ``metadata['l2d']['frames']``)."""
    from lib.datasets import vp3d
    poses = np.stack(records["joints_2d_px"]).astype(np.float32)
    if confidence:
        poses = np.concatenate([poses, np.stack(records["confidence"]).astype(np.float32)[..., None]], axis=-1)
    sizes = np.stack(records["image_size"]).astype(np.int64)
    if (sizes != sizes[0]).any():
        logger.warning("--export_custom: the frames differ in size; the file records the first one's, %s", sizes[0])
    video = Path(input_path).name
    frames = np.asarray(records["frame"], np.int64)
    meta = vp3d.metadata_for(vp3d.DATASET_LAYOUT[skeleton.name], dataset="custom", every_frame=bool(
        np.array_equal(frames, np.arange(len(frames)))), frames={video: {"custom": [frames]}},
        channels="xyc" if confidence else "xy")
    meta["video_metadata"] = {video: {"w": int(sizes[0][0]), "h": int(sizes[0][1])}}
    return vp3d.write_npz(out / f"data_2d_custom_{name}.npz", positions_2d={video: {"custom": [poses]}},
                          metadata=meta)


def _report_faults(faults: _Faults, boxes_file, unused, frames_read) -> None:
    if faults.whole_frame:
        logger.warning("%d frame(s) had no entry in %s and used the whole frame as the box (first: %s)",
                       len(faults.whole_frame), boxes_file, faults.whole_frame[:3])
    for names, what in ((faults.skipped, "unreadable image(s) skipped"),
                        (faults.rejected, f"frame(s) whose box in {boxes_file} had NaN/inf numbers used the whole frame"),
                        (faults.clipped, "box(es) reaching outside the image were clipped to it"),
                        (faults.outside, "box(es) wholly outside the image were replaced by the whole frame"),
                        (faults.non_finite, "frame(s) have non-finite predictions (written as null; a diverged "
                                            "detector?)")):
        if names:
            logger.warning("%d %s (first: %s)", len(names), what, _first(names))
    if unused:
        logger.warning("%s holds %d more box(es) than there are frames to match (%d frame(s) read): ignored",
                       boxes_file, unused, frames_read)


def run_inference(args) -> dict:
    """``run/infer.py`` with its parsed arguments ``args``; -> the summary dict (files written, fault counts)."""
    use_cuda = args.gpu_id >= 0 and torch.cuda.is_available()
    device = torch.device(f"cuda:{args.gpu_id}" if use_cuda else "cpu")
    cfg, net = detector_from_args(args, device)
    skeleton = get_skeleton(cfg.DATASET.DATASET)
    lifter = load_lifter(args, cfg, skeleton.num_joints, device)
    ordered, keyed = read_boxes(args.boxes, args.box_format) if args.boxes else (None, {})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kind, total, src_fps, frames = iter_frames(args.input)
    if args.max_frames > 0:
        total = min(total, args.max_frames) if total else args.max_frames
    video_path = out / f"{Path(args.input).stem}_pose.mp4" if kind == "video" and not args.no_images else None
    pictures = None if args.no_images else _Pictures(out, video_path, args.fps or src_fps or 25.0)
    records = {k: [] for k in RECORD_KEYS}
    faults, seen = _Faults(), {"frames": 0}
    jsonl_path = out / "predictions.jsonl"
    bar = tqdm(total=total, desc="infer", unit="frame", disable=None)
    try:
        with open(jsonl_path, "w") as jsonl:
            done = 0
            for batch in _batches(_readable(frames, faults, bar, args.input, seen), max(1, args.batch_size)):
                if args.max_frames > 0:
                    batch = batch[:max(0, args.max_frames - done)]
                    if not batch:
                        break
                images = [b[2] for b in batch]
                boxes = [frame_box(i, name, image, ordered, keyed, bool(args.boxes), faults) for i, name, image in batch]
                image_size = np.array([[im.shape[1], im.shape[0]] for im in images], np.float32)
                inputs, center, scale = crop_batch(images, boxes, cfg)
                joints_2d, conf, pose_3d = predict(net, lifter, cfg, inputs, center, scale, image_size,
                                                   args.argmax, device)
                for b, (i, name, image) in enumerate(batch):
                    p3d = None if pose_3d is None else pose_3d[b]
                    _record(records, jsonl, kind, args.input, faults, i, name, boxes[b], joints_2d[b], conf[b],
                            p3d, image_size[b])
                    if pictures is not None:
                        pictures.add(Path(name).stem, *overlay_and_3d(
                            image, joints_2d[b], p3d, skeleton, conf=conf[b], conf_thresh=args.conf_thresh,
                            box=boxes[b], title=f"{args.model_3d} 3D (m)" if p3d is not None else None))
                done += len(batch)
                bar.update(len(batch))
    finally:
        bar.close()
        if pictures is not None:
            pictures.close()
    npz_path = _save_arrays(records, skeleton, out, args.input, faults)
    custom = getattr(args, "export_custom", None)
    custom = str(write_custom_export(records, skeleton, out, custom, args.input,
                                     bool(getattr(args, "export_confidence", False)))) if custom else None
    unused = _unused_boxes(ordered, keyed, faults.used_keys, seen["frames"]) if args.max_frames <= 0 else 0
    _report_faults(faults, args.boxes, unused, seen["frames"])
    n = len(records["frame"])
    logger.info("wrote %d frame(s) to %s", n, out)
    return {"frames": n, "skipped_frames": faults.skipped, "rejected_boxes": len(faults.rejected),
            "clipped_boxes": len(faults.clipped), "outside_boxes": len(faults.outside), "unused_boxes": unused,
            "non_finite_frames": len(faults.non_finite), "jsonl": str(jsonl_path), "npz": str(npz_path),
            "overlay_dir": None if args.no_images else str(out / "overlay"),
            "combined_dir": None if args.no_images else str(out / "combined"),
            "video": str(video_path) if video_path is not None else None, "device": str(device), "custom": custom,
            "lifter": None if lifter is None else args.model_3d}
