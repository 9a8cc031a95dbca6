"""Train a 3D lifter on ground-truth 2D -> 3D pairs of the prepared dataset (docs/weights.md#training-the-lifters).

    python run/train_lifter.py --cfg experiments/h36m/w32_384x288_adam_lr1e-3.yaml --model_3d sb
    python run/train_lifter.py --cfg experiments/demo/tiny_96x128.yaml --model_3d sb,videopose \\
        LIFTER_TRAIN.EPOCHS 30
    python run/train_lifter.py --cfg ... --model_3d videopose --detections data_2d_h36m_l2d.npz \\
        [--data_3d data_3d_h36m.npz]        # on a detector's 2D (docs/detections.md)

The loss, schedule, optimizer and augmentation of each lifter come from model_3d.LIFTER_RECIPES;
LIFTER_TRAIN.* keys override epochs / batch size / lr, LIFTER_TRAIN.<NAME>.* (e.g. the CPU presets
of experiments/demo/lifters_cpu.yaml) override them for one lifter, and the flags below override
both. MODEL_3D.IGANET.* / MODEL_3D.MIXSTE.* set network sizes. The best epoch (lowest
GT-2D validation MPJPE) is saved as a self-contained checkpoint (weights + normalisation stats +
joint count + dataset) at MODEL_3D.WEIGHTS.<NAME>, or by default where train_hrnet.py looks:
model_3d/<net>/weights/... (model_3d.default_weight_path). Existing weights are never replaced
silently: without --overwrite the run stops before training; with it the old file is kept as
<file>.bak. Log, history.json and curves.png go to
<OUTPUT_DIR>/<dataset>/lifters/<name>/.

Multi-process (one process per GPU, or gloo on CPUs); LIFTER_TRAIN.BATCH_SIZE stays the GLOBAL batch,
so the recipe is unchanged; TRAIN.SYNC_BN True synchronises the lifter's BatchNorm over it:

    torchrun --standalone --nproc_per_node=4 run/train_lifter.py \\
        --cfg experiments/h36m/w32_384x288_adam_lr1e-3.yaml --model_3d sb,videopose TRAIN.SYNC_BN True
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/train_lifter.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_cfg
from lib.config.flags import lifter_flag_opts


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="experiment YAML (its DATASET.* chooses the prepared data)")
    p.add_argument("--model_3d", required=True,
                   help="registered lifter name(s), comma-separated: sb, videopose, iganet, mixste, or yours "
                        "(its module in CUSTOM_IMPORTS)")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (CPU fallback with a warning; -1 = CPU)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the recipe's) [LIFTER_TRAIN.EPOCHS]")
    p.add_argument("--batch_size", type=int, default=None, help="batch size [LIFTER_TRAIN.BATCH_SIZE]")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate [LIFTER_TRAIN.LR]")
    p.add_argument("--weights", default=None,
                   help="output checkpoint (one lifter only) [MODEL_3D.WEIGHTS.<NAME>]; default: the lifter's "
                        "default path")
    p.add_argument("--detections", default=None,
                   help="train on the 2D of this VideoPose3D-format file [LIFTER_TRAIN.DETECTIONS]")
    p.add_argument("--data_3d", default=None,
                   help="with --detections: the 3D of VideoPose3D's data_3d_h36m.npz [LIFTER_TRAIN.DATA_3D]")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing weights at the output path (the old file is kept as <file>.bak); "
                        "without it an existing file is refused before training")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides as KEY VALUE pairs")
    return p


def main(argv=None):
    import model_3d
    from lib.engine import distributed as ddp
    from lib.engine.lifter_trainer import train_lifter

    args = build_parser().parse_intermixed_args(argv)
    names = [n.strip() for n in args.model_3d.split(",") if n.strip()]
    if not names:
        raise SystemExit(f"error: --model_3d {args.model_3d!r}: name at least one lifter")
    if args.weights and len(names) != 1:
        raise SystemExit("error: --weights names one file; train one lifter per call or use "
                         "MODEL_3D.WEIGHTS.<NAME> overrides")
    opts = lifter_flag_opts(names, args.epochs, args.batch_size, args.lr)
    if args.weights:
        opts += [f"MODEL_3D.WEIGHTS.{names[0].upper()}", args.weights]
    for flag, key in ((args.detections, "LIFTER_TRAIN.DETECTIONS"), (args.data_3d, "LIFTER_TRAIN.DATA_3D")):
        opts += [key, flag] if flag is not None else []
    cfg = load_cfg(args.cfg, opts + list(args.opts or []))      # imports CUSTOM_IMPORTS
    cfg.CFG_FILE = args.cfg
    model_3d.check_lifter_names(names, "--model_3d")
    model_3d.check_lifter_config(cfg)
    cfg.freeze()
    if not args.overwrite:             # refuse before any lifter of this call trains, not after the first
        from lib.engine.lifter_trainer import guard_existing_weights
        for name in names:
            guard_existing_weights(model_3d.lifter_weight_path(cfg, name), False)
    # one process group for all the lifters of this call (torchrun); a no-op in a single process.
    # A group the caller set up (the pipeline runs several stages in one torchrun) is left to it.
    owns_group = not ddp.is_dist()
    ddp.init_distributed(bool(cfg.USE_CUDA), args.gpu_id, timeout_minutes=float(cfg.DIST_TIMEOUT_MINUTES))
    results = {}
    try:
        for name in names:
            results[name] = train_lifter(cfg, name, gpu_id=args.gpu_id, overwrite=args.overwrite)
    finally:
        if owns_group:
            ddp.cleanup()
    return results if len(names) > 1 else results[names[0]]


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
