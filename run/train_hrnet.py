"""Train the 2D detector with the L2D objective (SPEC §1.1, §2): 2D-only or 3D-guided by lifters.

    # the paper's single-lifter command (README)
    python run/train_hrnet.py --cfg experiments/h36m/w32_384x288_adam_lr1e-3.yaml \\
        --loss_single_w 0.8 --gpu_id 0 --loss_3d --loss_3d_z --model_3d sb --ohklm
    # multi-model guidance, held-out lifters evaluated every epoch
    python run/train_hrnet.py --cfg ... --loss_3d --model_3d iganet,sb,videopose --dropout --loss_3d_avg
    # any config key after the flags:  ... TRAIN.MAX_STEPS_PER_EPOCH 10 DATASET.MAX_SAMPLES 64

Every flag maps onto a config key (shown in --help); flags override the YAML, trailing KEY VALUE
pairs override both. Outputs go to <OUTPUT_DIR>/<dataset>/<MODEL.NAME>/<loss_type>[/<lifters>]
(lib/engine/run_dir.py documents the name): checkpoint.pth, model_best.pth, final_state.pth,
model_best_cross.pth (multi-model), history.json, config.yaml, metrics.json, curves.png and the log.
Multi-GPU: torchrun --nproc_per_node=N run/train_hrnet.py ... (one process per GPU).
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/train_hrnet.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_cfg

# flag -> (config key, help); store_true flags set the key to True when given.
BOOL_FLAGS = {
    "loss_3d": ("LOSS.LOSS_3D", "enable 3D guidance through the lifters (without it: 2D-only training)"),
    "loss_3d_z": ("LOSS.LOSS_3D_Z", "separate xy and z 3D losses instead of one xyz loss"),
    "resume": ("TRAIN.RESUME", "continue the run from <run folder>/checkpoint.pth"),
    "ensemble": ("TEST.ENSEMBLE", "validate on the per-sample median of the lifters' predictions"),
    "dropout": ("LOSS.DROPOUT", "lifter dropout in multi-model mode (SPEC §2.7)"),
    "ohklm": ("LOSS.OHKLM", "add the OHKLM 2D loss (online hard keypoint lifting mining)"),
    "dwa": ("LOSS.DWA", "dynamic weight average (always on in the original; LOSS.DWA False turns it off)"),
    "loss_3d_cons": ("LOSS.LOSS_3D_CONS", "add the pairwise lifter-consistency loss"),
    "loss_3d_avg": ("LOSS.LOSS_3D_AVG", "add the loss on the mean of the lifters' predictions"),
}
VALUE_FLAGS = {
    "loss_2d_w": ("LOSS.LOSS_2D_W", float, "weight of the heatmap MSE loss (3D mode; default 0.5)"),
    "ohklm_w": ("LOSS.OHKLM_W", float, "weight of the OHKLM loss (default 0.3)"),
    "loss_3d_xy_w": ("LOSS.LOSS_3D_XY_W", float, "weight of the xy 3D loss with --loss_3d_z (default 0.02)"),
    "loss_3d_z_w": ("LOSS.LOSS_3D_Z_W", float, "weight of the z 3D loss with --loss_3d_z (default 0.04)"),
    "loss_3d_w": ("LOSS.LOSS_3D_W", float, "weight of the xyz 3D loss without --loss_3d_z (default 0.06)"),
    "loss_3d_cons_w": ("LOSS.LOSS_3D_CONS_W", float, "weight of the consistency loss (default 0.1)"),
    "loss_3d_avg_w": ("LOSS.LOSS_3D_AVG_W", float, "weight of the average-prediction loss (default 0.05)"),
    "loss_single_w": ("LOSS.LOSS_SINGLE_W", float, "multiplies (weighted 2D + weighted 3D) (default 1.0)"),
    "epochs": ("TRAIN.EPOCHS", int, "train epochs 0..N inclusive (N+1 epochs; default 40)"),
    "top_k": ("LOSS.OHKLM_TOP_K", int, "OHKLM top-k joints (default 10)"),
}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="experiment YAML (e.g. experiments/h36m/w32_384x288_adam_lr1e-3.yaml)")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (CPU fallback with a warning; -1 = CPU)")
    p.add_argument("--model_3d", default=None,
                   help="comma-separated lifters (sb, videopose, iganet, mixste; sorted) -> MODEL_3D.NAMES "
                        "(default from the config: sb). Two or more = multi-model guidance")
    for flag, (key, help_) in BOOL_FLAGS.items():
        p.add_argument(f"--{flag}", action="store_true", help=f"{help_} [{key}]")
    p.add_argument("--finetune", action="store_true",
                   help="start the detector from the checkpoint in TRAIN.FINETUNE (required with this flag; "
                        "setting TRAIN.FINETUNE alone does the same) instead of MODEL.PRETRAINED")
    for flag, (key, typ, help_) in VALUE_FLAGS.items():
        p.add_argument(f"--{flag}", type=typ, default=None, help=f"{help_} [{key}]")
    p.add_argument("--version", type=int, default=0, help="accepted for compatibility; unused (as in the original)")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE",
                   help="config overrides as KEY VALUE pairs, e.g. TRAIN.LR 0.0005 DATASET.ROOT data/h36m")
    return p


def parse_model_3d(text):
    """'sb,iganet' -> ['iganet', 'sb'] (sorted, as the original)."""
    names = sorted({n.strip() for n in str(text).split(",") if n.strip()})
    if not names:
        raise ValueError(f"--model_3d {text!r}: give at least one lifter name")
    return names


def args_to_opts(args):
    """The flags given on the command line as ["KEY", value, ...] config overrides."""
    opts = []
    for flag, (key, _) in BOOL_FLAGS.items():
        if getattr(args, flag):
            opts += [key, True]
    for flag, (key, _, _) in VALUE_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            opts += [key, value]
    if args.model_3d is not None:
        opts += ["MODEL_3D.NAMES", parse_model_3d(args.model_3d)]
    return opts


def setup(args):
    """Config: defaults <- YAML <- flags <- trailing KEY VALUE pairs; validated lifter names."""
    import model_3d

    cfg = load_cfg(args.cfg, args_to_opts(args) + list(args.opts or []))
    cfg.CFG_FILE = args.cfg
    cfg.MODEL_3D.NAMES = parse_model_3d(",".join(cfg.MODEL_3D.NAMES))
    unknown = [n for n in cfg.MODEL_3D.NAMES if n not in model_3d.LIFTERS]
    if unknown:
        raise SystemExit(f"error: unknown lifter(s) {unknown} in --model_3d; valid names: {sorted(model_3d.LIFTERS)}")
    if args.finetune and not cfg.TRAIN.FINETUNE:
        raise SystemExit("error: --finetune needs the detector checkpoint in TRAIN.FINETUNE, e.g. "
                         "`... --finetune TRAIN.FINETUNE output/h36m/hrnet/only_loss_2d/model_best.pth`")
    cfg.freeze()
    return cfg


def main(argv=None):
    args = build_parser().parse_intermixed_args(argv)
    cfg = setup(args)
    from lib.engine.trainer import train
    return train(cfg, gpu_id=args.gpu_id, resume=bool(cfg.TRAIN.RESUME), args=vars(args), argv=argv)


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
