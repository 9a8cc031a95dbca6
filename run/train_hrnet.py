"""Train the 2D detector with the L2D objective (docs/original.md#command-lines): 2D-only or 3D-guided.

    # the paper's single-lifter command (README)
    python run/train_hrnet.py --cfg experiments/h36m/w32_384x288_adam_lr1e-3.yaml \\
        --loss_single_w 0.8 --gpu_id 0 --loss_3d --loss_3d_z --model_3d sb --ohklm
    # multi-model guidance, held-out lifters evaluated every epoch
    python run/train_hrnet.py --cfg ... --loss_3d --model_3d iganet,sb,videopose --dropout --loss_3d_avg
    # any config key after the flags:  ... TRAIN.MAX_STEPS_PER_EPOCH 10 DATASET.MAX_SAMPLES 64
    # a lifter of your own:  ... --model_3d sb,my_lifter CUSTOM_IMPORTS "['my_lifters']"

Every flag maps onto a config key (shown in --help); flags override the YAML, trailing KEY VALUE
pairs override both. Outputs go to <OUTPUT_DIR>/<dataset>/<MODEL.NAME>/<loss_type>[/<lifters>]
(lib/engine/run_dir.py documents the name): checkpoint.pth, model_best.pth, final_state.pth,
model_best_cross.pth (multi-model), history.json, config.yaml, metrics.json, curves.png, report.md
and the log. Multi-GPU: torchrun --nproc_per_node=N run/train_hrnet.py ... (one process per GPU).
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/train_hrnet.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_cfg
from lib.config.flags import TRAIN_BOOL_FLAGS, TRAIN_VALUE_FLAGS, parse_lifter_list
from lib.utils.errors import BadValueError


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="experiment YAML (e.g. experiments/h36m/w32_384x288_adam_lr1e-3.yaml)")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (CPU fallback with a warning; -1 = CPU)")
    p.add_argument("--model_3d", default=None,
                   help="comma-separated registered lifters (sb, videopose, iganet, mixste, or yours; sorted) -> "
                        "MODEL_3D.NAMES (default from the config: sb). Two or more = multi-model guidance")
    for flag, (key, help_) in TRAIN_BOOL_FLAGS.items():
        p.add_argument(f"--{flag}", action="store_true", help=f"{help_} [{key}]")
    p.add_argument("--finetune", action="store_true",
                   help="start the detector from the checkpoint in TRAIN.FINETUNE (required with this flag; "
                        "setting TRAIN.FINETUNE alone does the same) instead of MODEL.PRETRAINED")
    for flag, (key, typ, help_) in TRAIN_VALUE_FLAGS.items():
        p.add_argument(f"--{flag}", type=typ, default=None, help=f"{help_} [{key}]")
    p.add_argument("--version", type=int, default=0, help="accepted for compatibility; unused (as in the original)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE",
                   help="config overrides as KEY VALUE pairs, e.g. TRAIN.LR 0.0005 DATASET.ROOT data/h36m")
    return p


def args_to_opts(args):
    """The flags given on the command line as ["KEY", value, ...] config overrides."""
    opts = []
    for flag, (key, _) in TRAIN_BOOL_FLAGS.items():
        if getattr(args, flag):
            opts += [key, True]
    for flag, (key, _, _) in TRAIN_VALUE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            opts += [key, value]
    if args.model_3d is not None:
        opts += ["MODEL_3D.NAMES", parse_lifter_list(args.model_3d)]
    return opts


def setup(args):
    """Config: defaults <- YAML <- flags <- trailing KEY VALUE pairs (CUSTOM_IMPORTS imported); lifters checked."""
    import model_3d

    cfg = load_cfg(args.cfg, args_to_opts(args) + list(args.opts or []))
    cfg.CFG_FILE = args.cfg
    cfg.MODEL_3D.NAMES = parse_lifter_list(",".join(cfg.MODEL_3D.NAMES))
    model_3d.check_lifter_config(cfg)
    if args.finetune and not cfg.TRAIN.FINETUNE:
        raise BadValueError("--finetune needs the detector checkpoint in TRAIN.FINETUNE, e.g. "
                            "`... --finetune TRAIN.FINETUNE output/h36m/hrnet/only_loss_2d/model_best.pth`")
    cfg.freeze()
    return cfg


def main(argv=None):
    args = build_parser().parse_intermixed_args(argv)
    cfg = setup(args)
    from lib.apps.report import report_after_training
    from lib.engine.trainer import train
    result = train(cfg, gpu_id=args.gpu_id, resume=bool(cfg.TRAIN.RESUME), args=vars(args), argv=argv)
    report_after_training(result["run_dir"], argv)
    return result


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
