"""Turn a public HRNet-family checkpoint into a starting checkpoint of our 17-joint detector.

    # official COCO keypoint HRNet -> Human3.6M heatmaps (12 joints mapped, 5 derived)
    python run/convert_weights.py --src pose_hrnet_w32_384x288.pth --format coco \\
        --cfg experiments/h36m/w32_384x288_pretrain2d.yaml \\
        --dst model_2d/weights/pose_hrnet_w32_384x288_coco_as_h36m.pth
    # official MPII model (16 joints) / ImageNet classification HRNet (backbone only)
    python run/convert_weights.py --src pose_hrnet_w32_256x256.pth --format mpii --cfg ... --dst ...
    python run/convert_weights.py --src hrnet_w32-36af842e.pth --format imagenet --cfg ... --dst ...

--cfg says which network the file must fit (MODEL.NAME, MODEL.EXTRA); a file of another width is
refused with the first mismatching key and both shapes. The result is a bare state dict, like a
run's model_best.pth (MODEL.PRETRAINED or TRAIN.FINETUNE take it), written atomically; an existing
--dst is kept unless --overwrite is given. The rules are in model_2d/convert.py and the README
('Weights').
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/convert_weights.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_cfg


def build_parser():
    from model_2d.convert import FORMATS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="the public checkpoint (.pth)")
    p.add_argument("--format", required=True, choices=[f for f in FORMATS if f != "h36m"],
                   help="its joint set: coco (17 COCO keypoints), mpii (16), imagenet (classification HRNet)")
    p.add_argument("--cfg", required=True, help="experiment YAML of the detector to start (its MODEL section)")
    p.add_argument("--dst", required=True, help="where to write the converted checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace --dst if it exists")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides, e.g. MODEL.NAME pose_resnet")
    return p


def main(argv=None):
    """-> {'dst': path, 'report': ConversionReport}."""
    from model_2d.convert import check_destination, convert_checkpoint, save_converted

    args = build_parser().parse_intermixed_args(argv)
    cfg = load_cfg(args.cfg, list(args.opts or []))
    cfg.CFG_FILE = args.cfg
    check_destination(args.dst, args.overwrite, args.src)      # before the (slow) read of --src
    state, report = convert_checkpoint(args.src, args.format, cfg)
    dst = save_converted(state, args.dst, overwrite=args.overwrite, src=args.src)
    print(report.summary())
    print(f"=> wrote {dst} ({len(state)} tensors); use it as MODEL.PRETRAINED (MODEL.PRETRAINED_FORMAT h36m) "
          f"or TRAIN.FINETUNE")
    return {"dst": dst, "report": report}


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
