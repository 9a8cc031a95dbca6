"""Evaluate a trained detector + lifters (docs/original.md#validation-metrics): MPJPE, P-MPJPE, PDJ@0.2,
per lifter / action.

    python run/valid_hrnet.py --cfg experiments/h36m/w32_384x288_adam_lr1e-3.yaml \\
        --model_dir output/h36m/hrnet/<loss_type>/sb --model_3d sb [--action_valid] [--ensemble]
    python run/valid_hrnet.py --cfg ... --gt --model_3d sb,videopose,iganet,mixste   # lifters on GT 2D
    python run/valid_hrnet.py --cfg ... --model_dir <run> --cross_valid            # model_best_cross.pth
    python run/valid_hrnet.py --cfg ... --detections data_2d_h36m_x.npz --model_3d sb [--data_3d data_3d_h36m.npz]

Prints the lines of the original script and writes metrics.json (metrics_cross.json with
--cross_valid) into --model_dir: mpjpe, p_mpjpe (mm), pdj (%), per_lifter, cross, ensemble and,
with --action_valid, per_action (and a bar chart per lifter, per_action_<lifter>.png). All
--model_3d lifters are evaluated (no held-out set here). --vis [--vis_num K] writes K sheets
vis/vis_0000.png ... (samples spread over the validation set). report.md in --model_dir is then
(re)written from everything the folder holds (lib.apps.report.write_run_report). --detections scores
the lifters on a VideoPose3D-format 2D file instead of a detector, with the 3D of the prepared split
or of --data_3d (docs/detections.md); its metrics.json goes to --model_dir (default
<OUTPUT_DIR>/<dataset>/detections/<file name>). TEST.PROTOCOL.* choose the protocol, recorded in
metrics.json.
Checkpoints are read with torch.load(weights_only=True) and loaded strictly.
"""
import argparse
import json
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/valid_hrnet.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_cfg
from lib.config.flags import parse_lifter_list
from lib.utils.atomic_io import write_text_atomic

def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="experiment YAML")
    p.add_argument("--model_dir", default="", help="folder holding model_best.pth (the training run folder)")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (CPU fallback with a warning; -1 = CPU)")
    p.add_argument("--model_3d", default=None,
                   help="comma-separated registered lifters, all evaluated [MODEL_3D.NAMES]")
    p.add_argument("--gt", action="store_true", help="feed ground-truth 2D to the lifters (no detector)")
    p.add_argument("--soft_argmax", action="store_true", help="accepted; soft-argmax is the default decoding")
    p.add_argument("--argmax", action="store_true", help="classic hard-argmax decoding [TEST.SOFT_ARGMAX False]")
    p.add_argument("--vis", action="store_true", help="render sample visualisations into <model_dir>/vis")
    p.add_argument("--vis_num", type=int, default=None, help="how many samples --vis renders [TEST.VIS_NUM]")
    p.add_argument("--ensemble", action="store_true", help="median over lifters replaces the main metric [TEST.ENSEMBLE]")
    p.add_argument("--beta", type=float, default=None, help="soft-argmax temperature (default 100) [TEST.BETA]")
    p.add_argument("--cross_valid", action="store_true", help="evaluate <model_dir>/model_best_cross.pth")
    p.add_argument("--action_valid", action="store_true", help="per-action MPJPE (Human3.6M) [TEST.ACTION_VALID]")
    p.add_argument("--detections", default=None, help="VideoPose3D-format 2D file scored instead of a detector "
                                                       "[TEST.DETECTIONS]")
    p.add_argument("--data_3d", default=None, help="with --detections: VideoPose3D's data_3d_h36m.npz [TEST.DATA_3D]")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides as KEY VALUE pairs")
    return p


def setup(args):
    import model_3d
    opts = []
    if args.model_3d is not None:
        opts += ["MODEL_3D.NAMES", parse_lifter_list(args.model_3d)]
    if args.ensemble:
        opts += ["TEST.ENSEMBLE", True]
    if args.action_valid:
        opts += ["TEST.ACTION_VALID", True]
    if args.beta is not None:
        opts += ["TEST.BETA", float(args.beta)]
    if args.argmax:
        opts += ["TEST.SOFT_ARGMAX", False]
    if args.vis_num is not None:
        opts += ["TEST.VIS_NUM", int(args.vis_num)]
    for flag, key in ((args.detections, "TEST.DETECTIONS"), (args.data_3d, "TEST.DATA_3D")):
        opts += [key, flag] if flag is not None else []
    cfg = load_cfg(args.cfg, opts + list(args.opts or []))
    cfg.CFG_FILE = args.cfg
    model_3d.check_lifter_config(cfg)
    cfg.freeze()
    return cfg


def main(argv=None):
    import torch
    from lib.apps.report import explain_missing_cross, validation_lines, write_validation_extras
    from lib.engine.evaluator import evaluate_checkpoint, evaluation_context, results_for_json
    from lib.engine.trainer import json_safe

    args = build_parser().parse_intermixed_args(argv)
    cfg = setup(args)
    torch.manual_seed(int(cfg.SEED))
    detections = str(cfg.TEST.DETECTIONS)
    if args.model_dir:
        model_dir = Path(args.model_dir)
    elif args.gt or detections:    # the original's fixed folder for --gt; one per 2D file
        model_dir = Path(cfg.OUTPUT_DIR) / cfg.DATASET.DATASET / ("detections/" + Path(detections).stem if detections
                                                                  else "hrnet/gt_2d")
    else:
        model_dir = Path(".")
    model_path = model_dir / ("model_best_cross.pth" if args.cross_valid else "model_best.pth")
    if args.cross_valid and not args.gt and not detections and not model_path.is_file():
        explain_missing_cross(model_dir)
    if not args.gt and not detections and not model_path.is_file():
        raise FileNotFoundError(f"{model_path} not found: pass --model_dir <run folder> holding "
                                f"{model_path.name} (written by run/train_hrnet.py), --gt or --detections FILE")
    soft, beta, context, model = bool(cfg.TEST.SOFT_ARGMAX), float(cfg.TEST.BETA), None, None
    if detections:
        from lib.apps.detections import evaluate_detections
        results, lifters = evaluate_detections(cfg, detections, data_3d=str(cfg.TEST.DATA_3D), gpu_id=args.gpu_id)
        model_path = Path(detections)
    else:
        context = evaluation_context(cfg, gpu_id=args.gpu_id)
        lifters = context.lifters
        if not args.gt:
            from lib.engine.builders import load_detector
            model = load_detector(cfg, model_path, context.device)
        results = evaluate_checkpoint(cfg, context=context, model_2d=model)
    print("\n".join(validation_lines(cfg, results, model_path, list(lifters), args.gt, soft, beta)))
    if results["non_finite_samples"]:
        print(f"warning: {results['non_finite_samples']} of {results['num_samples']} samples have non-finite "
              f"heatmaps or joints ({model_path} diverged?): they count as PDJ misses and their MPJPE is "
              f"undefined (null in the metrics file)", file=sys.stderr)

    model_dir.mkdir(parents=True, exist_ok=True)
    command = "python run/valid_hrnet.py " + shlex.join(str(a) for a in (sys.argv[1:] if argv is None else argv))
    payload = {**results_for_json(results), "model_path": str(model_path), "lifters": list(lifters),
               "command": command, "gt_2d": bool(args.gt), "soft_argmax": soft, "beta": beta,
               "lifter_weights": {n: l.weights_source for n, l in lifters.items()}}
    if not cfg.TEST.ACTION_VALID:
        payload.pop("per_action", None)
    out = model_dir / ("metrics_cross.json" if args.cross_valid else "metrics.json")
    write_text_atomic(out, json.dumps(json_safe(payload), indent=1))
    write_validation_extras(cfg, results, model_dir, cross_valid=args.cross_valid, vis=args.vis, gt_2d=args.gt,
                            context=context, model=model, soft_argmax=soft, beta=beta)
    return payload


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
