"""Multi-model 3D guidance on synthetic data, on a CPU (``make demo-multi``).

1. generate + prepare the synthetic Human3.6M-layout set (shared with ``make demo``);
2. train all four lifters (sb, videopose, iganet, mixste) briefly on ground-truth 2D -> 3D;
3. reuse the 2D-only pre-trained tiny detector of ``make demo`` (``output/demo/pretrain``) when
   present, else pre-train one;
4. from that same checkpoint fine-tune (a) 2D-only and (b) guided by three lifters at once
   (``--loss_3d --loss_3d_z --ohklm --model_3d sb,videopose,iganet``, DWA) for the same steps;
   the fourth lifter (mixste) is held out;
5. validate both: per-lifter MPJPE, cross (held-out lifter) MPJPE, median ensemble over all four,
   PDJ@0.2 -> ``<out>/report.json`` (``{"2d_only": {...}, "multi_guided": {...}}``) and ``report.md``.

MixSTE is the held-out lifter because it is the costliest to back-propagate through on a CPU
(about 3x IGANet per step); held out, it only runs forward during validation.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python run/demo_multi.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.utils.stages import find_run, mark_stage, reuse_stage, stage_inputs
from run import make_demo_data, prepare_h36m, train_hrnet, train_lifter

ALL_LIFTERS = ("sb", "videopose", "iganet", "mixste")
# GT-2D lifter training epochs on the demo set (cost per epoch grows left to right)
LIFTER_EPOCHS = {"sb": 30, "videopose": 8, "iganet": 3, "mixste": 2}
RUNS = (("2d_only", "2D-only fine-tuning"), ("multi_guided", "multi-model guided fine-tuning"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="experiments/demo/tiny_96x128.yaml", help="tiny detector config")
    p.add_argument("--data", default="data/demo_h36m", help="synthetic dataset folder (made if absent)")
    p.add_argument("--out", default="output/demo_multi", help="where runs and the report go")
    p.add_argument("--pretrain-dir", default="output/demo/pretrain",
                   help="reuse a 2D-only pre-training found here (run/demo.py's); else pre-train into <out>/pretrain")
    p.add_argument("--guide", default="sb,videopose,iganet", help="lifters that guide the fine-tuning")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--frames-per-seq", type=int, default=None, help="synthetic frames per sequence")
    p.add_argument("--pretrain-epochs", type=int, default=5, help="2D-only pre-training epochs (0..N)")
    p.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning epochs (0..N), both runs")
    p.add_argument("--steps", type=int, default=0, help=">0: cap steps per epoch (detector runs)")
    p.add_argument("--lifter-scale", type=float, default=1.0, help="multiplies every lifter's epoch count")
    p.add_argument("--lifter-steps", type=int, default=0, help=">0: cap steps per lifter epoch")
    p.add_argument("--max-samples", type=int, default=0, help=">0: first N samples of each split (quick runs)")
    p.add_argument("--gpu_id", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete <out> first")
    return p.parse_args(argv)


class Evaluator:
    """Validation split, lifters (guide = main, the rest held out) built once; ``__call__`` scores a detector."""

    def __init__(self, cfg_path, opts, guide, gpu_id=0):
        from lib.config import load_cfg
        from lib.datasets import build_dataset, index as idx
        from lib.datasets.base import dataset_root
        from lib.engine.trainer import ShardSampler, build_lifter_sets, make_loader
        from lib.utils.device import select_device

        cfg = load_cfg(cfg_path, list(opts) + ["MODEL_3D.NAMES", list(guide)])
        cfg.freeze()
        self.cfg, self.device = cfg, select_device(gpu_id, bool(cfg.USE_CUDA))
        valid_set = build_dataset(cfg, cfg.DATASET.TEST_SET, False)
        self.loader = make_loader(valid_set, cfg.TEST.BATCH_SIZE_PER_GPU, ShardSampler(len(valid_set), 0, 1), cfg,
                                  self.device)
        self.main, self.held_out, skipped = build_lifter_sets(cfg, idx.load_stats(dataset_root(cfg)), cross=True)
        if skipped:
            raise FileNotFoundError(f"held-out lifters without weights: {skipped}")
        for lifter in list(self.main.values()) + list(self.held_out.values()):
            lifter.to(self.device)

    def __call__(self, checkpoint=None):
        """Detector ``checkpoint`` (None = GT 2D) -> per_lifter / main / cross / ensemble (mm), pdj (%)."""
        import model_2d
        from lib.engine.evaluator import results_for_json, validate
        model = None
        if checkpoint is not None:
            model = model_2d.build_pose_net(self.cfg)
            model_2d.load_pose_checkpoint(model, str(checkpoint), strict=True)
            model.to(self.device)
        res = results_for_json(validate(self.cfg, self.loader, model, self.device, self.main, self.held_out,
                                        gt_2d=checkpoint is None, ensemble=True))
        return {"per_lifter": res["per_lifter"], "main": res["main"], "cross": res["cross"],
                "ensemble": res["ensemble"], "pdj": res["pdj"], "num_samples": res["num_samples"]}


def format_table(rows: dict, lifters) -> list:
    """Markdown table: one row per evaluated model, MPJPE (mm) per lifter, cross, ensemble, PDJ (%)."""
    head = "| model | " + " | ".join(lifters) + " | cross (held out) | ensemble (median) | PDJ@0.2 (%) |"
    lines = [head, "|---|" + "---:|" * (len(lifters) + 3)]
    for label, r in rows.items():
        cells = [f"{r['per_lifter'][n]['mpjpe']:.1f}" + ("*" if r["per_lifter"][n]["held_out"] else "")
                 for n in lifters]
        cross = r["cross"]["mpjpe"] if r["cross"] else float("nan")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {cross:.1f} | {r['ensemble']['mpjpe']:.1f} | "
                     f"{r['pdj']:.2f} |")
    return lines


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    out, data = Path(args.out), Path(args.data)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    guide = [n.strip() for n in args.guide.split(",") if n.strip()]
    unknown = [n for n in guide if n not in ALL_LIFTERS]
    if unknown or not 1 <= len(guide) < len(ALL_LIFTERS):
        raise SystemExit(f"error: --guide {args.guide!r}: name 1-3 of {ALL_LIFTERS} (at least one is held out)")
    held_out = [n for n in ALL_LIFTERS if n not in guide]
    weights = {n: out / "lifters" / f"{n}_h36m.pth" for n in ALL_LIFTERS}
    common = ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(out)]
    for n, w in weights.items():
        common += [f"MODEL_3D.WEIGHTS.{n.upper()}", str(w)]
    if args.max_samples:
        common += ["DATASET.MAX_SAMPLES", str(args.max_samples)]
    detector_opts = ["TRAIN.MAX_STEPS_PER_EPOCH", str(args.steps)] if args.steps else []
    timings = {}

    print("== 1/5 synthetic data")
    if not (data / "index.json").is_file():
        gen = ["--dst", str(data), "--seed", str(args.seed)]
        if args.frames_per_seq:
            gen += ["--frames-per-seq", str(args.frames_per_seq)]
        make_demo_data.main(gen)
        prepare_h36m.main(["--src", str(data), "--dst", str(data), "--train-interval", "1", "--valid-interval", "1"])
    timings["data_s"] = time.time() - t0

    print("== 2/5 the four lifters on ground-truth 2D")
    t = time.time()
    for name in ALL_LIFTERS:
        if weights[name].is_file():
            continue
        epochs = max(1, round(LIFTER_EPOCHS[name] * args.lifter_scale))
        train_lifter.main(["--cfg", args.cfg, "--model_3d", name, "--gpu_id", str(args.gpu_id), "--epochs",
                           str(epochs), "LIFTER_TRAIN.MAX_STEPS_PER_EPOCH", str(args.lifter_steps)] + common)
    timings["lifters_s"] = time.time() - t

    print("== 3/5 2D-only pre-trained detector")
    t = time.time()
    pre_src = Path(args.pretrain_dir) if args.pretrain_dir else None
    if pre_src is not None and list(pre_src.rglob("final_state.pth")) and list(pre_src.rglob("model_best.pth")):
        pre_dir = find_run(pre_src)
        print(f"reusing {pre_dir / 'model_best.pth'}")
    else:
        pre_out = out / "pretrain"
        pre_args = (["--cfg", args.cfg, "--gpu_id", str(args.gpu_id), "--epochs", str(args.pretrain_epochs)]
                    + common + detector_opts + ["OUTPUT_DIR", str(pre_out)])
        pre_inputs = stage_inputs(options=pre_args)
        if not reuse_stage(pre_out, pre_inputs):
            train_hrnet.main(pre_args)
            mark_stage(pre_out, pre_inputs)
        pre_dir = find_run(pre_out)
    timings["pretrain_s"] = time.time() - t

    print(f"== 4/5 fine-tuning from the same checkpoint: 2D-only and guided by {'+'.join(guide)}")
    t = time.time()
    ft = ["--cfg", args.cfg, "--gpu_id", str(args.gpu_id), "--epochs", str(args.finetune_epochs),
          "TRAIN.FINETUNE", str(pre_dir / "model_best.pth")] + detector_opts
    runs = {"2d_only": (out / "finetune_2d", []),
            "multi_guided": (out / "finetune_multi", ["--loss_3d", "--loss_3d_z", "--ohklm",
                                                      "--model_3d", ",".join(guide)])}
    for key, (run_out, flags) in runs.items():
        run_args = ft + flags + common + ["OUTPUT_DIR", str(run_out)]
        inputs = stage_inputs([pre_dir / "model_best.pth"] + [weights[n] for n in ALL_LIFTERS], run_args)
        if not reuse_stage(run_out, inputs):
            train_hrnet.main(run_args)
            mark_stage(run_out, inputs)
    timings["finetune_s"] = time.time() - t

    print("== 5/5 validation: per lifter, held-out lifter, median ensemble")
    t = time.time()
    report, extra = {}, {}
    evaluate = Evaluator(args.cfg, common, guide, args.gpu_id)
    extra["lifters on ground-truth 2D"] = evaluate(None)
    extra["pre-trained detector"] = evaluate(pre_dir / "model_best.pth")
    for key, (run_out, _) in runs.items():
        run_dir = find_run(run_out, "final_state.pth")
        report[key] = {**evaluate(run_dir / "final_state.pth"), "run_dir": str(run_dir)}
    timings["validation_s"] = time.time() - t
    seconds = time.time() - t0
    timings["total_s"] = seconds

    (out / "report.json").write_text(json.dumps(report, indent=2))
    rows = dict(extra)
    rows.update({label: report[key] for key, label in RUNS})
    table = format_table(rows, list(ALL_LIFTERS))
    md = ["# L2D-Pose multi-model demo (synthetic Human3.6M layout, tiny HRNet, CPU)", "",
          f"Guiding lifters: {', '.join(guide)}; held out (cross-validation): {', '.join(held_out)}. "
          f"Both fine-tunings start from {pre_dir / 'model_best.pth'} and run the same steps; the final "
          f"weights of each are evaluated. MPJPE in mm on the validation split; * = held-out lifter; "
          f"the ensemble is the per-joint median over all four lifters.", ""] + table + [
          "", "Timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
          f"Whole demo: {seconds / 60:.1f} min.", ""]
    (out / "report.md").write_text("\n".join(md))
    (out / "timings.json").write_text(json.dumps(timings, indent=1))
    print("\n".join(table))
    print(f"report: {out / 'report.md'}  ({seconds / 60:.1f} min)")
    return report


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
