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
  ``<video name>_pose.mp4`` for a video input: the combined frames (OpenCV ``mp4v``);
  ``data_2d_custom_<NAME>.npz`` with ``--export_custom NAME``: VideoPose3D's custom format,
                         positions_2d[<input name>]['custom'] = [(T, J, 2)], metadata video_metadata {w, h}.

Confidence: the maximum of the joint's heatmap (with ``--argmax``: HRNet's ``maxvals``).
"""
import argparse
import logging
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/infer.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.apps.infer import load_lifter, read_boxes, run_inference  # noqa: F401 - the names tests and users call


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
    p.add_argument("--export_custom", metavar="NAME", help="also write VideoPose3D's data_2d_custom_NAME.npz "
                                                          "(docs/detections.md#your-own-video)")
    p.add_argument("--export_confidence", action="store_true", help="with --export_custom: (T, J, 3) with confidence")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    args = p.parse_args(argv)
    if bool(args.run_dir) == bool(args.weights):
        p.error("give either --run_dir DIR or --weights FILE (with --cfg FILE)")
    if args.weights and not args.cfg:
        p.error("--weights needs --cfg (the experiment YAML the detector was trained with)")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run_inference(args)


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
