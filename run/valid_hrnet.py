"""Evaluate a trained detector + lifters (SPEC §1.2, §4): MPJPE, P-MPJPE, PDJ@0.2, per lifter / action.

    python run/valid_hrnet.py --cfg experiments/h36m/w32_384x288_adam_lr1e-3.yaml \\
        --model_dir output/h36m/hrnet/<loss_type>/sb --model_3d sb [--action_valid] [--ensemble]
    python run/valid_hrnet.py --cfg ... --gt --model_3d sb,videopose,iganet,mixste   # lifters on GT 2D
    python run/valid_hrnet.py --cfg ... --model_dir <run> --cross_valid            # model_best_cross.pth

Prints the lines of the original script and writes metrics.json (metrics_cross.json with
--cross_valid) into --model_dir: mpjpe, p_mpjpe (mm), pdj (%), per_lifter, cross, ensemble and,
with --action_valid, per_action (and a bar chart per lifter, per_action_<lifter>.png). All
--model_3d lifters are evaluated (no held-out set here). --vis [--vis_num K] writes K sheets
vis/vis_0000.png ... (samples spread over the validation set). report.md in --model_dir is then
(re)written from everything the folder holds (lib.utils.report.write_run_report).
Checkpoints are read with torch.load(weights_only=True) and loaded strictly.
"""
import argparse
import json
import math
import os
import shlex
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python run/valid_hrnet.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config import load_cfg
from lib.utils.atomic_io import write_text_atomic
from lib.utils.errors import BadValueError

ACTION_ABBREV = ("Dir.", "Disc.", "Eat.", "Greet.", "Phone.", "Photo.", "Pose.", "Purch.", "Sit.", "SitD.",
                 "Smoke.", "Wait.", "WalkD.", "Walk.", "WalkT.")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", required=True, help="experiment YAML")
    p.add_argument("--model_dir", default="", help="folder holding model_best.pth (the training run folder)")
    p.add_argument("--gpu_id", type=int, default=0, help="CUDA device index (CPU fallback with a warning; -1 = CPU)")
    p.add_argument("--model_3d", default=None, help="comma-separated lifters, all evaluated [MODEL_3D.NAMES]")
    p.add_argument("--gt", action="store_true", help="feed ground-truth 2D to the lifters (no detector)")
    p.add_argument("--soft_argmax", action="store_true", help="accepted; soft-argmax is the default decoding")
    p.add_argument("--argmax", action="store_true", help="classic hard-argmax decoding [TEST.SOFT_ARGMAX False]")
    p.add_argument("--vis", action="store_true", help="render sample visualisations into <model_dir>/vis")
    p.add_argument("--vis_num", type=int, default=None, help="how many samples --vis renders [TEST.VIS_NUM]")
    p.add_argument("--ensemble", action="store_true", help="median over lifters replaces the main metric [TEST.ENSEMBLE]")
    p.add_argument("--beta", type=float, default=None, help="soft-argmax temperature (default 100) [TEST.BETA]")
    p.add_argument("--cross_valid", action="store_true", help="evaluate <model_dir>/model_best_cross.pth")
    p.add_argument("--action_valid", action="store_true", help="per-action MPJPE (Human3.6M) [TEST.ACTION_VALID]")
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="config overrides as KEY VALUE pairs")
    return p


def setup(args):
    import model_3d
    opts = []
    if args.model_3d is not None:
        names = sorted({n.strip() for n in args.model_3d.split(",") if n.strip()})
        opts += ["MODEL_3D.NAMES", names]
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
    cfg = load_cfg(args.cfg, opts + list(args.opts or []))
    cfg.CFG_FILE = args.cfg
    unknown = [n for n in cfg.MODEL_3D.NAMES if n not in model_3d.LIFTERS]
    if unknown:
        raise SystemExit(f"error: unknown lifter(s) {unknown} in --model_3d; valid names: {sorted(model_3d.LIFTERS)}")
    cfg.freeze()
    return cfg


def _explain_missing_cross(model_dir):
    """--cross_valid needs model_best_cross.pth, which only a multi-model run with a held-out lifter writes."""
    from lib.config import read_yaml
    path = model_dir / "model_best_cross.pth"
    need = ("a multi-model training run (two or more lifters in --model_3d, MODEL_3D.CROSS_VALID True) with a "
            "held-out lifter (a registered lifter outside --model_3d whose weights were on disk) writes")
    run_cfg = model_dir / "config.yaml"
    names = []
    if run_cfg.is_file():
        names = list(read_yaml(str(run_cfg)).get("MODEL_3D", {}).get("NAMES", []))
    if run_cfg.is_file() and len(names) < 2:
        raise BadValueError(f"--cross_valid evaluates {path}, which only {need}; the run in {model_dir} is a "
                            f"single-lifter run (MODEL_3D.NAMES {names}), so it has none: drop --cross_valid "
                            f"(model_best.pth is then evaluated)")
    raise FileNotFoundError(f"{path} not found: --cross_valid needs the file that {need}; check --model_dir "
                            f"and the run log's line 'held-out (cross) lifters'")


def format_report(cfg, results, model_path, lifters, gt_2d, soft_argmax, beta):
    """The printed lines of the original (SPEC §4.8)."""
    ds = cfg.DATASET.DATASET
    lines = [f"model dir: {os.path.dirname(str(model_path))}",
             f"[{ds}] HRNet + {'+'.join(lifters)} (GT 2D: {gt_2d}, soft argmax: {soft_argmax}, beta:{beta:g})",
             f"[{ds}] Test MPJPE: {results['mpjpe']:.2f}mm, Test P-MPJPE: {results['p_mpjpe']:.2f}mm, "
             f"Test PDJ@0.2: {results['pdj']:.2f}%"]
    if results.get("unmasked"):
        u = results["unmasked"]
        lines.append(f"[{ds}] (DATASET.MASK_LOW_CONFIDENCE: low-confidence joints left out above) with them: "
                     f"Test MPJPE: {u['mpjpe']:.2f}mm, Test P-MPJPE: {u['p_mpjpe']:.2f}mm")
    for name, v in results["per_lifter"].items():
        lines.append(f"[{ds}] {name} Test MPJPE: {v['mpjpe']:.2f}mm")
    lines.append("")
    if results.get("per_action"):
        for name, actions in results["per_action"].items():
            vals = [math.nan if v is None else v for v in actions.values()]
            lines.append(f"[{ds}] {name} " + " | ".join(f"{a}{v:.1f}" for a, v in zip(ACTION_ABBREV, vals)))
            lines.append("")
    lines.append("")
    return lines


def vis_indices(n: int, k: int):
    """``k`` sample indices spread evenly over ``n`` (first and last included), sorted, unique."""
    import numpy as np
    k = max(0, min(int(k), n))
    if k == 0:
        return []
    return sorted({int(i) for i in np.round(np.linspace(0, n - 1, k)).astype(int)})


def _render_vis(cfg, dataset, model, device, lifters, gt_2d, soft, beta, out_dir, num):
    """``num`` validation samples spread over the set, drawn by lib.utils.vis as one sheet each.

    Sheets show the network's input crop (GT green, prediction cyan/magenta/yellow) and, per lifter,
    the 3D ground truth (dashed) with that lifter's prediction, titled with the sample's MPJPE.
    """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset
    from lib.core.heatmap import decode_argmax, decode_soft, prepare_heatmaps
    from lib.core.skeleton import get_skeleton
    from lib.utils.vis import render_validation_samples

    picked = vis_indices(len(dataset), num)
    loader = DataLoader(Subset(dataset, picked), batch_size=max(1, min(len(picked), int(cfg.TEST.BATCH_SIZE_PER_GPU))),
                        shuffle=False, num_workers=0)
    crops, gt2d, pred2d, gt3d, centers, scales, captions = [], [], [], [], [], [], []
    pred3d = {n: [] for n in lifters}
    if model is not None:
        model.eval()
    with torch.no_grad():
        for images, _t, _w, meta in loader:
            joints_2d = meta["joints_2d"].to(device).float()
            if gt_2d:
                p2d = joints_2d
            else:
                hm = prepare_heatmaps(model(images.to(device)).float(), cfg.DATASET.DATASET)
                c, s = meta["center"].to(device).float(), meta["scale"].to(device).float()
                p2d = (decode_soft(hm, c, s, beta, bool(cfg.TEST.POST_PROCESS)) if soft
                       else decode_argmax(hm, c, s, bool(cfg.TEST.POST_PROCESS))[0])
            size = meta["image_size"].to(device).float()
            for n, lifter in lifters.items():
                pred3d[n].append(lifter(p2d, size).cpu().numpy())
            crops += list(images)                       # the network input: (3, H, W) normalised
            gt2d.append(joints_2d.cpu().numpy())
            pred2d.append(p2d.cpu().numpy())
            gt3d.append(meta["joints_3d"].numpy() / 100.0)          # cm -> m
            centers.append(meta["center"].numpy())
            scales.append(meta["scale"].numpy())
            captions += [f"{sub} {act or '-'} cam {cam} #{int(i)}" for sub, act, cam, i in
                         zip(meta["subject"], meta["action"], meta["camera"], meta["index"])]
    if not crops:
        return []
    from lib.core.transforms import affine_points, get_affine_transform
    cat = np.concatenate
    # joints into the crop's pixels (the same affine the dataset used to cut the crop)
    M = get_affine_transform(cat(centers), cat(scales), 0.0, tuple(int(v) for v in cfg.MODEL.IMAGE_SIZE))
    gt_crop, pred_crop = affine_points(cat(gt2d), M), affine_points(cat(pred2d), M)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("vis_*.png"):            # a rerun with a smaller K leaves no stale sheets
        old.unlink()
    return render_validation_samples(crops, gt_crop, pred_crop, cat(gt3d), {n: cat(v) for n, v in pred3d.items()},
                                     get_skeleton(cfg.DATASET.DATASET), out_dir, captions=captions)


def main(argv=None):
    import torch
    import model_2d
    from lib.datasets import build_dataset
    from lib.datasets.base import dataset_root
    from lib.datasets.stats import train_stats
    from lib.engine.evaluator import results_for_json, validate
    from lib.engine.trainer import ShardSampler, _json_safe, build_lifter_sets, make_loader
    from lib.utils.device import select_device

    args = build_parser().parse_intermixed_args(argv)
    cfg = setup(args)
    device = select_device(args.gpu_id, bool(cfg.USE_CUDA))
    torch.manual_seed(int(cfg.SEED))
    dataset = cfg.DATASET.DATASET
    if args.model_dir:
        model_dir = Path(args.model_dir)
    elif args.gt:
        model_dir = Path(cfg.OUTPUT_DIR) / dataset / "hrnet" / "gt_2d"    # the original's fixed folder
    else:
        model_dir = Path(".")
    model_path = model_dir / ("model_best_cross.pth" if args.cross_valid else "model_best.pth")
    if args.cross_valid and not args.gt and not model_path.is_file():
        _explain_missing_cross(model_dir)

    valid_set = build_dataset(cfg, cfg.DATASET.TEST_SET, False)
    loader = make_loader(valid_set, cfg.TEST.BATCH_SIZE_PER_GPU, ShardSampler(len(valid_set), 0, 1), cfg, device)
    # stats for z-scored lifters without their own: the training split's, read directly (SPEC §9 #21)
    stats = train_stats(cfg, dataset_root(cfg))
    lifters, _, _ = build_lifter_sets(cfg, stats, cross=False)
    for lifter in lifters.values():
        lifter.to(device)

    model = None
    if not args.gt:
        if not model_path.is_file():
            raise FileNotFoundError(f"{model_path} not found: pass --model_dir <run folder> holding "
                                    f"{model_path.name} (written by run/train_hrnet.py), or --gt")
        model = model_2d.build_pose_net(cfg)
        model_2d.load_pose_checkpoint(model, str(model_path), strict=True)
        model.to(device)
    soft = bool(cfg.TEST.SOFT_ARGMAX)
    beta = float(cfg.TEST.BETA)
    results = validate(cfg, loader, model, device, lifters, None, gt_2d=args.gt, soft_argmax=soft, beta=beta,
                       ensemble=bool(cfg.TEST.ENSEMBLE), action_valid=bool(cfg.TEST.ACTION_VALID))
    print("\n".join(format_report(cfg, results, model_path, list(lifters), args.gt, soft, beta)))
    if results["non_finite_samples"]:
        print(f"warning: {results['non_finite_samples']} of {results['num_samples']} samples have non-finite "
              f"heatmaps or joints ({model_path} diverged?): they count as PDJ misses and their MPJPE is "
              f"undefined (null in the metrics file)", file=sys.stderr)

    model_dir.mkdir(parents=True, exist_ok=True)
    command = "python run/valid_hrnet.py " + shlex.join(str(a) for a in (sys.argv[1:] if argv is None else argv))
    payload = {**results_for_json(results), "model_path": str(model_path), "lifters": list(lifters),
               "command": command,
               "gt_2d": bool(args.gt), "soft_argmax": soft, "beta": beta,
               "lifter_weights": {n: l.weights_source for n, l in lifters.items()}}
    if not cfg.TEST.ACTION_VALID:
        payload.pop("per_action", None)
    out = model_dir / ("metrics_cross.json" if args.cross_valid else "metrics.json")
    write_text_atomic(out, json.dumps(_json_safe(payload), indent=1))

    if cfg.TEST.ACTION_VALID and results.get("per_action"):
        from lib.utils.report import plot_per_action
        prefix = "per_action_cross" if args.cross_valid else "per_action"
        charts = plot_per_action(results["per_action"], model_dir, prefix=prefix)
        print(f"per-action charts: {', '.join(str(c) for c in charts)}")
    if args.vis:
        num = int(cfg.TEST.VIS_NUM) or 8
        paths = _render_vis(cfg, valid_set, model, device, lifters, args.gt, soft, beta, model_dir / "vis", num)
        print(f"--vis: {len(paths)} sheets in {model_dir / 'vis'}")
    try:
        from lib.utils.report import write_run_report
        print(f"report: {write_run_report(model_dir, config=cfg)}")
    except Exception as err:   # noqa: BLE001 - the metrics are written; a report problem must not hide them
        print(f"warning: could not write {model_dir / 'report.md'}: {err}")
    return payload


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
