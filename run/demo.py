"""The whole L2D story on synthetic data, on a CPU, in minutes (``make demo``).

1. generate the synthetic Human3.6M-layout dataset and prepare it;
2. train the SimpleBaseline lifter on ground-truth 2D -> 3D;
3. pre-train a tiny HRNet with the 2D heatmap loss only;
4. from that same checkpoint fine-tune (a) 2D-only and (b) 3D-guided
   (``--loss_3d --loss_3d_z --ohklm``) for the same number of steps;
5. validate all of them and write ``<out>/report.json`` and ``<out>/report.md``.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python run/demo.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.utils.stages import find_run, mark_stage, reuse_stage, stage_inputs
from run import make_demo_data, prepare_h36m, train_hrnet, train_lifter, valid_hrnet

ROWS = (("gt_2d", "SimpleBaseline on ground-truth 2D"),
        ("pretrained", "pre-trained detector"),
        ("2d_only", "2D-only fine-tuning"),
        ("3d_guided", "3D-guided fine-tuning"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="experiments/demo/tiny_96x128.yaml", help="tiny detector config")
    p.add_argument("--data", default="data/demo_h36m", help="where the synthetic dataset is written")
    p.add_argument("--out", default="output/demo", help="where runs and the report go")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--pretrain-epochs", type=int, default=9, help="2D-only pre-training epochs (0..N)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="fine-tuning epochs (0..N)")
    p.add_argument("--steps", type=int, default=0, help=">0: cap steps per epoch (quick runs)")
    p.add_argument("--lifter-epochs", type=int, default=30, help="SimpleBaseline training epochs")
    p.add_argument("--frames-per-seq", type=int, default=80, help="synthetic frames per sequence")
    p.add_argument("--gpu_id", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="delete previous demo runs first")
    return p.parse_args(argv)


def _metrics(run_dir: Path) -> dict:
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"mpjpe": m["mpjpe"], "p_mpjpe": m["p_mpjpe"], "pdj": m["pdj"]}


def _write_report(out: Path, report: dict, curves: dict, seconds: float):
    (out / "report.json").write_text(json.dumps(report, indent=2))
    lines = ["# L2D-Pose demo (synthetic Human3.6M layout, tiny HRNet, CPU)", "",
             "| model | MPJPE (mm) | P-MPJPE (mm) | PDJ@0.2 (%) |", "|---|---:|---:|---:|"]
    for key, label in ROWS:
        r = report[key]
        lines.append(f"| {label} | {r['mpjpe']:.2f} | {r['p_mpjpe']:.2f} | {r['pdj']:.2f} |")
    lines += ["", f"Whole demo: {seconds / 60:.1f} min.", ""]
    try:
        from lib.utils.report import plot_demo_table
        plot_demo_table(report, out / "demo_table.png")
        lines += ["![demo table](demo_table.png)", ""]
    except ImportError:
        pass
    for name, path in curves.items():
        if path.is_file():
            lines += [f"## {name}", "", f"![{name} curves]({path.relative_to(out).as_posix()})", ""]
    (out / "report.md").write_text("\n".join(lines))
    return "\n".join(lines[:8])


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    out, data = Path(args.out), Path(args.data)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    sb_weights = str(out / "lifters" / "sb_h36m.pth")
    common = ["DATASET.ROOT", str(data), "MODEL_3D.WEIGHTS.SB", sb_weights]
    if args.steps:
        common += ["TRAIN.MAX_STEPS_PER_EPOCH", str(args.steps)]

    print("== 1/5 synthetic data")
    if not (data / "index.json").is_file():
        gen = ["--dst", str(data), "--seed", str(args.seed)]
        if args.frames_per_seq:
            gen += ["--frames-per-seq", str(args.frames_per_seq)]
        make_demo_data.main(gen)
        prepare_h36m.main(["--src", str(data), "--dst", str(data),
                           "--train-interval", "1", "--valid-interval", "1"])

    print("== 2/5 SimpleBaseline lifter on ground-truth 2D")
    if not Path(sb_weights).is_file():
        train_lifter.main(["--cfg", args.cfg, "--model_3d", "sb", "--gpu_id", str(args.gpu_id),
                           "LIFTER_TRAIN.EPOCHS", str(args.lifter_epochs)] + common)

    print("== 3/5 2D-only pre-training of the detector")
    pre_out = out / "pretrain"
    pre_args = ["--cfg", args.cfg, "--gpu_id", str(args.gpu_id), "--epochs", str(args.pretrain_epochs),
                "OUTPUT_DIR", str(pre_out)] + common
    pre_inputs = stage_inputs(options=pre_args)
    if not reuse_stage(pre_out, pre_inputs):
        train_hrnet.main(pre_args)
        mark_stage(pre_out, pre_inputs)
    pre_dir = find_run(pre_out)

    print("== 4/5 fine-tuning from the same checkpoint: 2D-only and 3D-guided")
    ft = ["--cfg", args.cfg, "--gpu_id", str(args.gpu_id), "--epochs", str(args.finetune_epochs),
          "TRAIN.FINETUNE", str(pre_dir / "model_best.pth")]
    runs = {"2d_only": (out / "finetune_2d", []),
            "3d_guided": (out / "finetune_3d", ["--loss_3d", "--loss_3d_z", "--ohklm", "--model_3d", "sb"])}
    for key, (run_out, flags) in runs.items():
        run_args = ft + flags + ["OUTPUT_DIR", str(run_out)] + common
        inputs = stage_inputs([pre_dir / "model_best.pth", sb_weights], run_args)
        if not reuse_stage(run_out, inputs):
            train_hrnet.main(run_args)
            mark_stage(run_out, inputs)

    print("== 5/5 validation")
    valid = ["--cfg", args.cfg, "--gpu_id", str(args.gpu_id), "--model_3d", "sb"]
    report, curves = {}, {}
    gt_out = out / "gt_2d"
    valid_hrnet.main(valid + ["--gt", "--model_dir", str(gt_out), "OUTPUT_DIR", str(out)] + common)
    report["gt_2d"] = _metrics(gt_out)
    for key, run_dir in (("pretrained", pre_dir), ("2d_only", find_run(runs["2d_only"][0])),
                         ("3d_guided", find_run(runs["3d_guided"][0]))):
        valid_hrnet.main(valid + ["--model_dir", str(run_dir)] + common)
        report[key] = _metrics(run_dir)
        curves[key] = run_dir / "curves.png"
    table = _write_report(out, report, curves, time.time() - t0)
    print(table)
    print(f"report: {out / 'report.md'}  ({(time.time() - t0) / 60:.1f} min)")
    return report


if __name__ == "__main__":
    from lib.utils.errors import run_cli
    sys.exit(run_cli(main))
