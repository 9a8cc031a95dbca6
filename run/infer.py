"""2D + 3D poses for a folder of images or a video, with overlays, 3D plots and an MP4.

    python run/infer.py --run_dir output/demo/h36m/pose_hrnet/tiny_96x128 --input frames/ --out out/
    python run/infer.py --weights model_best.pth --cfg experiments/demo/tiny_96x128.yaml \\
        --model_3d sb --lifter_weights model_3d/simple_baseline/weights/model_best_h36m.pth \\
        --input clip.mp4 --boxes boxes.json --out out/

One person per frame. Its box comes from ``--boxes`` when given, else the whole frame is the box.
Either way the box goes through the dataset pipeline (aspect-ratio fix to MODEL.IMAGE_SIZE, x1.25
context, affine crop), so a box that fits the person tightly works best; with the whole frame the
person should fill most of it.

``--boxes`` file (pixels of the original frames, ``--box_format xyxy`` (default) or ``xywh``):
  * JSON list, one box per frame in input order: ``[[x1, y1, x2, y2], ...]``;
  * JSON object keyed by image file name or frame index: ``{"img_000001.jpg": [x1, y1, x2, y2]}``
    or ``{"0": [...]}``; values may also be ``{"box": [...]}``;
  * JSON list of objects ``[{"frame": 0, "box": [...]}, {"image": "a.jpg", "box": [...]}]``;
  * CSV rows ``key,x1,y1,x2,y2`` (an optional header row is skipped), key = file name or frame index.
  Frames without an entry use the whole frame (reported once at the end).

Faults (each reported as a warning with a count at the end, and in the returned summary):
  * an unreadable image is skipped (``skipped_frames``); the other frames are still processed;
  * a box with NaN/inf numbers is rejected when the file is read and its frame uses the whole
    frame (``rejected_boxes``);
  * a box reaching outside the image (or absurdly large) is clipped to the image (``clipped_boxes``);
    one wholly outside it is replaced by the whole frame (``outside_boxes``);
  * more boxes than frames (or keys that match no frame) are reported (``unused_boxes``);
  * a non-finite prediction (a diverged detector) is written as ``null`` (``predictions.jsonl`` is
    always valid JSON) and counted (``non_finite_frames``).

Outputs under ``--out``:
  ``predictions.jsonl``  one object per frame: frame, image, box, joints_2d_px (Jx2), confidence (J),
                         joints_3d_m (Jx3, root-relative metres in the camera frame; absent with
                         ``--model_3d none``);
  ``predictions.npz``    the same stacked: frame (N,), image (N,), box (N,4), joints_2d_px (N,J,2),
                         confidence (N,J), joints_3d_m (N,J,3), image_size (N,2), joint_names (J,);
  ``overlay/<name>.png`` the frame with the 2D skeleton (same size as the frame);
  ``combined/<name>.png`` the overlay beside the 3D skeleton plot;
  ``<video name>_pose.mp4`` for a video input: the combined frames (OpenCV ``mp4v``).

Confidence: the maximum of the joint's heatmap (with ``--argmax``: HRNet's ``maxvals``).
"""
import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/infer.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch
from tqdm import tqdm

from lib.config import load_cfg
from lib.core.heatmap import decode_argmax, decode_soft, prepare_heatmaps
from lib.core.skeleton import get_skeleton
from lib.core.transforms import box_to_center_scale, get_affine_transform
from lib.utils.errors import BadValueError
from lib.utils.vis import IMAGENET_MEAN, IMAGENET_STD, overlay_and_3d

logger = logging.getLogger("infer")

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("detector (either --run_dir, or --weights with --cfg)")
    src.add_argument("--run_dir", help="training run folder holding config.yaml and model_best.pth")
    src.add_argument("--weights", help="detector checkpoint (model_best.pth or any HRNet layout)")
    src.add_argument("--cfg", help="experiment YAML of the detector (with --weights)")
    p.add_argument("--model_3d", default="sb",
                   help="lifter name (sb, videopose, iganet, mixste, or a registered one); 'none' = 2D only")
    p.add_argument("--lifter_weights", help="lifter checkpoint; default: MODEL_3D.WEIGHTS / the default path")
    p.add_argument("--stats", help="stats.npz (or original pkl) for 'sb' when its checkpoint carries none")
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="a pickle / checkpoint you trust to be read with full pickle, which can run code "
                        "(adds to TRUSTED_FILES; repeatable). Without it only plain data is read")
    p.add_argument("--input", required=True, help="folder of images or a video file")
    p.add_argument("--boxes", help="JSON or CSV of person boxes (see above); default: the whole frame")
    p.add_argument("--box_format", choices=("xyxy", "xywh"), default="xyxy")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index; -1 or no CUDA = CPU")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--argmax", action="store_true", help="hard-argmax decoding instead of soft-argmax")
    p.add_argument("--conf_thresh", type=float, default=0.0, help="joints below this confidence are not drawn")
    p.add_argument("--no_images", action="store_true", help="write only predictions (no overlays/plots/MP4)")
    p.add_argument("--fps", type=float, default=0.0, help="MP4 frame rate (default: the input video's, else 25)")
    p.add_argument("--max_frames", type=int, default=0, help=">0: stop after this many frames")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if bool(args.run_dir) == bool(args.weights):
        p.error("give either --run_dir DIR or --weights FILE (with --cfg FILE)")
    if args.weights and not args.cfg:
        p.error("--weights needs --cfg (the experiment YAML the detector was trained with)")
    return args


# ---------------------------------------------------------------------------------------------- models
def load_detector(args, device):
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


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    use_cuda = args.gpu_id >= 0 and torch.cuda.is_available()
    device = torch.device(f"cuda:{args.gpu_id}" if use_cuda else "cpu")
    cfg, net = load_detector(args, device)
    skeleton = get_skeleton(cfg.DATASET.DATASET)
    lifter = load_lifter(args, cfg, skeleton.num_joints, device)
    ordered, keyed = read_boxes(args.boxes, args.box_format) if args.boxes else (None, {})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_images:
        (out / "overlay").mkdir(exist_ok=True)
        (out / "combined").mkdir(exist_ok=True)
    kind, total, src_fps, frames = iter_frames(args.input)
    if args.max_frames > 0:
        total = min(total, args.max_frames) if total else args.max_frames
    video_path = out / f"{Path(args.input).stem}_pose.mp4" if kind == "video" and not args.no_images else None
    writer = None
    records = {k: [] for k in ("frame", "image", "box", "joints_2d_px", "confidence", "joints_3d_m",
                               "image_size")}
    whole_frame, skipped, rejected, clipped, outside, non_finite = [], [], [], [], [], []
    used_keys, seen = set(), {"frames": 0}
    jsonl_path = out / "predictions.jsonl"
    bar = tqdm(total=total, desc="infer", unit="frame", disable=None)

    def readable(source):
        for item in source:
            seen["frames"] += 1
            if item[2] is None:
                logger.warning("cannot read image %s: skipped", Path(args.input) / item[1])
                skipped.append(item[1])
                bar.update(1)
                continue
            yield item
    frames = readable(frames)
    try:
        with open(jsonl_path, "w") as jsonl:
            done = 0
            for batch in _batches(frames, max(1, args.batch_size)):
                if args.max_frames > 0:
                    batch = batch[:max(0, args.max_frames - done)]
                    if not batch:
                        break
                names = [b[1] for b in batch]
                images = [b[2] for b in batch]
                boxes = []
                for i, name, image in batch:
                    h, w = image.shape[:2]
                    box, has_entry = None, False
                    if ordered is not None and i < len(ordered):
                        box, has_entry = ordered[i], True
                    elif keyed:
                        for key in (_frame_key(name), str(i)):
                            if key in keyed:
                                box, has_entry = keyed[key], True
                                used_keys.add(key)
                                break
                    if box is not None:
                        box, changed = clip_box(box, w, h)
                        if box is None:
                            outside.append(name)
                        elif changed:
                            clipped.append(name)
                    elif has_entry:
                        rejected.append(name)
                    elif args.boxes:
                        whole_frame.append(name)
                    boxes.append(box if box is not None else [0.0, 0.0, float(w), float(h)])
                image_size = np.array([[im.shape[1], im.shape[0]] for im in images], np.float32)
                inputs, center, scale = crop_batch(images, boxes, cfg)
                joints_2d, conf, pose_3d = predict(net, lifter, cfg, inputs, center, scale, image_size,
                                                   args.argmax, device)
                for b, (i, name, image) in enumerate(batch):
                    rec = {"frame": int(i), "image": name if kind == "images" else Path(args.input).name,
                           "box": _rounded(boxes[b], 2), "joints_2d_px": _rounded(joints_2d[b]),
                           "confidence": _rounded(conf[b], 5)}
                    if pose_3d is not None:
                        rec["joints_3d_m"] = _rounded(pose_3d[b], 5)
                    if not (np.isfinite(joints_2d[b]).all() and (pose_3d is None or np.isfinite(pose_3d[b]).all())):
                        non_finite.append(name)
                    jsonl.write(json.dumps(rec, allow_nan=False) + "\n")
                    for key in ("frame", "image", "box"):
                        records[key].append(rec[key])
                    records["joints_2d_px"].append(joints_2d[b])
                    records["confidence"].append(conf[b])
                    records["image_size"].append(image_size[b])
                    if pose_3d is not None:
                        records["joints_3d_m"].append(pose_3d[b])
                    if args.no_images:
                        continue
                    stem = Path(name).stem
                    overlay, combined = overlay_and_3d(
                        image, joints_2d[b], None if pose_3d is None else pose_3d[b], skeleton,
                        conf=conf[b], conf_thresh=args.conf_thresh, box=boxes[b],
                        title=f"{args.model_3d} 3D (m)" if pose_3d is not None else None)
                    cv2.imwrite(str(out / "overlay" / f"{stem}.png"), overlay)
                    cv2.imwrite(str(out / "combined" / f"{stem}.png"), combined)
                    if video_path is not None:
                        if writer is None:
                            fps = args.fps or src_fps or 25.0
                            writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                                     (combined.shape[1], combined.shape[0]))
                            if not writer.isOpened():
                                raise OSError(f"OpenCV cannot write {video_path} with the mp4v codec")
                        writer.write(combined)
                done += len(batch)
                bar.update(len(batch))
    finally:
        bar.close()
        if writer is not None:
            writer.release()

    n = len(records["frame"])
    if n == 0:
        from lib.utils.errors import UserError
        raise UserError(f"no frames read from {args.input}" +
                        (f" ({len(skipped)} unreadable image(s), first: {_first(skipped)})" if skipped else ""))
    arrays = {
        "frame": np.asarray(records["frame"], np.int64),
        "image": np.asarray(records["image"], dtype=str),
        "box": np.asarray(records["box"], np.float32).reshape(n, 4),
        "joints_2d_px": np.stack(records["joints_2d_px"]).astype(np.float32),
        "confidence": np.stack(records["confidence"]).astype(np.float32),
        "image_size": np.stack(records["image_size"]).astype(np.float32),
        "joint_names": np.asarray(skeleton.joint_names, dtype=str),
    }
    if records["joints_3d_m"]:
        arrays["joints_3d_m"] = np.stack(records["joints_3d_m"]).astype(np.float32)
    npz_path = out / "predictions.npz"
    np.savez(npz_path, **arrays)
    if whole_frame:
        logger.warning("%d frame(s) had no entry in %s and used the whole frame as the box (first: %s)",
                       len(whole_frame), args.boxes, whole_frame[:3])
    unused = _unused_boxes(ordered, keyed, used_keys, seen["frames"]) if args.max_frames <= 0 else 0
    for names, what in ((skipped, "unreadable image(s) skipped"),
                        (rejected, f"frame(s) whose box in {args.boxes} had NaN/inf numbers used the whole frame"),
                        (clipped, "box(es) reaching outside the image were clipped to it"),
                        (outside, "box(es) wholly outside the image were replaced by the whole frame"),
                        (non_finite, "frame(s) have non-finite predictions (written as null; a diverged "
                                     "detector?)")):
        if names:
            logger.warning("%d %s (first: %s)", len(names), what, _first(names))
    if unused:
        logger.warning("%s holds %d more box(es) than there are frames to match (%d frame(s) read): ignored",
                       args.boxes, unused, seen["frames"])
    summary = {"frames": n, "skipped_frames": skipped, "rejected_boxes": len(rejected),
               "clipped_boxes": len(clipped), "outside_boxes": len(outside), "unused_boxes": unused,
               "non_finite_frames": len(non_finite), "jsonl": str(jsonl_path), "npz": str(npz_path),
               "overlay_dir": None if args.no_images else str(out / "overlay"),
               "combined_dir": None if args.no_images else str(out / "combined"),
               "video": str(video_path) if video_path is not None else None, "device": str(device),
               "lifter": None if lifter is None else args.model_3d}
    logger.info("wrote %d frame(s) to %s", n, out)
    return summary


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
