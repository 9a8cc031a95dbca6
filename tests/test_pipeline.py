"""The reproduction pipeline (lib/apps/pipeline.py, run/reproduce.py) end to end on a tiny synthetic
set: every stage, the report's keys and arithmetic, reuse of finished stages, re-running only what a
changed input touches, --only, bad presets, and the whole pipeline under torchrun (2 gloo processes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, free_port
from lib.datasets import vp3d
from lib.utils.errors import UserError

LIFTERS = ["sb", "videopose", "iganet"]


def _preset(path: Path, base: Path, **pipeline) -> Path:
    """A tiny preset: 2 frames per sequence, one step per epoch, 16 samples per split."""
    node = {"SYNTHETIC": "h36m",
            "SYNTH_ARGS": ["--frames-per-seq", "2", "--image-size", "128", "--actions-per-subject", "1"],
            "PREPARE_ARGS": ["--no-check-images"],
            "LIFTERS": list(LIFTERS), "LIFTER_EPOCHS": [1, 1, 1],
            "LIFTER_OPTS": ["LIFTER_TRAIN.MAX_STEPS_PER_EPOCH", "1", "LIFTER_TRAIN.BATCH_SIZE", "16"],
            "PRETRAIN_EPOCHS": 0, "FINETUNE_EPOCHS": 0, "SINGLE": ["sb"], "LEAVE_ONE_OUT": True,
            "OPTS": ["USE_CUDA", "False", "WORKERS", "0", "PRINT_FREQ", "1", "TRAIN.BATCH_SIZE_PER_GPU", "4",
                     "TEST.BATCH_SIZE_PER_GPU", "16", "TRAIN.MAX_STEPS_PER_EPOCH", "1", "DATASET.MAX_SAMPLES", "16"]}
    node.update(pipeline)
    doc = {"OUTPUT_DIR": str(base / "out"), "SEED": 1,
           "DATASET": {"DATASET": "h36m", "ROOT": str(base / "data")}, "PIPELINE": node}
    path.write_text(yaml.safe_dump(doc))
    return path


def _made(out: Path) -> dict:
    """Modification time of every stage's finished output (lifter weights, detector final states)."""
    files = list((out / "lifters").rglob("*_h36m.pth")) + list(out.rglob("final_state.pth"))
    return {str(f.relative_to(out)): f.stat().st_mtime_ns for f in files}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from threads, and on a loaded machine OpenMP's spinning workers make a
    run of tiny steps many times slower; one thread, as the torchrun test's OMP_NUM_THREADS=1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def first(tmp_path_factory, one_thread):
    from run import reproduce
    base = tmp_path_factory.mktemp("pipeline")
    preset = _preset(base / "tiny.yaml", base)
    report = reproduce.main(["--preset", str(preset), "--gpu_id", "-1"])
    return {"base": base, "preset": preset, "out": base / "out", "report": report, "made": _made(base / "out")}


def test_every_stage_runs_and_the_report_has_every_key(first):
    out, report = first["out"], first["report"]
    assert set(report["status"].values()) == {"made", "trained"}
    assert len(first["made"]) == 3 + 1 + 5                 # lifters, pre-training, five fine-tunings
    on_disk = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file() and (out / "report.png").stat().st_size > 1000
    assert set(on_disk) >= {"lifters_gt2d", "runs", "summary", "gt_2d", "pretrained", "2d_only", "3d_guided"}
    assert set(on_disk["lifters_gt2d"]) == set(LIFTERS)
    assert all(set(v) == {"mpjpe", "p_mpjpe"} for v in on_disk["lifters_gt2d"].values())
    runs = {r["name"]: r for r in on_disk["runs"]}
    assert list(runs) == ["2d_only", "single_sb", "without_sb", "without_videopose", "without_iganet"]
    assert runs["2d_only"]["guided_by"] == [] and runs["2d_only"]["held_out"] == []
    assert runs["single_sb"]["guided_by"] == ["sb"] and runs["single_sb"]["held_out"] == ["videopose", "iganet"]
    assert runs["without_videopose"]["guided_by"] == ["sb", "iganet"]
    assert runs["without_videopose"]["held_out"] == ["videopose"]
    for r in runs.values():
        assert set(r) == {"name", "guided_by", "held_out", "mpjpe", "p_mpjpe", "pdj"}
        assert set(r["mpjpe"]) == set(r["p_mpjpe"]) == set(LIFTERS) and 0.0 <= r["pdj"] <= 100.0
    # the summary: 100 * (2D-only - run) / 2D-only per lifter, held-out lifters marked
    base = runs["2d_only"]
    assert set(on_disk["summary"]) == set(runs) - {"2d_only"}
    for name, per in on_disk["summary"].items():
        for lifter in LIFTERS:
            b, v = float(base["mpjpe"][lifter]), float(runs[name]["mpjpe"][lifter])
            assert per[lifter]["mpjpe_improvement_pct"] == pytest.approx(100.0 * (b - v) / b, rel=1e-12)
            assert per[lifter]["held_out"] == (lifter in runs[name]["held_out"])
    claims = on_disk["claims"]
    loo = [n for n in runs if n.startswith("without_")]
    mean = sum(on_disk["summary"][n][n[len("without_"):]]["mpjpe_improvement_pct"] for n in loo) / len(loo)
    assert claims["held_out_mean_improvement_pct"] == pytest.approx(mean, rel=1e-12)
    assert claims["single_improvement_pct"]["sb"] == on_disk["summary"]["single_sb"]["sb"]["mpjpe_improvement_pct"]
    gt = on_disk["lifters_gt2d"]
    assert claims["gt2d_ratio_vs_sb"]["videopose"] == pytest.approx(gt["videopose"]["mpjpe"] / gt["sb"]["mpjpe"])
    # make demo's rows: sb's numbers of the GT / pre-trained / 2D-only / single-sb models
    assert on_disk["2d_only"] == {"mpjpe": base["mpjpe"]["sb"], "p_mpjpe": base["p_mpjpe"]["sb"], "pdj": base["pdj"]}
    assert on_disk["3d_guided"]["mpjpe"] == runs["single_sb"]["mpjpe"]["sb"]
    assert on_disk["gt_2d"]["pdj"] == 100.0
    # each detector's validation 2D in VideoPose3D's format, and the protocol of the numbers
    assert set(on_disk["exports"]) == {"pretrained"} | set(runs)
    for export in on_disk["exports"].values():
        det = vp3d.read_detections(export["path"])
        assert export["every_frame"] and det.layout == "h36m" and det.subjects() == export["subjects"]
    assert on_disk["protocol"]["average"] == "frame" and on_disk["protocol"]["samples_left_out"] == 0
    # the GT-2D row is the lifter's own validation: the lifter trainer's best-epoch MPJPE
    sb_ckpt = torch.load(out / "lifters" / "sb" / "sb_h36m.pth", weights_only=True)
    assert on_disk["gt_2d"]["mpjpe"] == pytest.approx(sb_ckpt["metrics"]["mpjpe"], rel=1e-4)


def test_second_run_reuses_every_stage_and_a_change_remakes_only_what_depends_on_it(first):
    from run import reproduce
    args = ["--preset", str(first["preset"]), "--gpu_id", "-1"]
    again = reproduce.main(args)
    assert set(again["status"].values()) == {"reused"}
    assert _made(first["out"]) == first["made"]
    assert again["runs"] == first["report"]["runs"]

    # other flags for the single-lifter run: that run and the validation are made again, nothing else
    changed = reproduce.main(args + ["PIPELINE.SINGLE_FLAGS", "['--ohklm']"])
    status = changed["status"]
    assert {k for k, v in status.items() if v != "reused"} == {"single_sb", "validate"}
    after = _made(first["out"])
    remade = {k for k in after if after[k] != first["made"].get(k)}
    assert remade and remade == {k for k in after if k.startswith("finetune/single_sb")}
    assert all(after[k] == v for k, v in first["made"].items() if not k.startswith("finetune/single_sb"))
    runs = {r["name"]: r for r in changed["runs"]}
    assert runs["without_sb"] == {r["name"]: r for r in first["report"]["runs"]}["without_sb"]


def test_only_and_bad_presets_fail_with_a_user_error(first, tmp_path):
    from lib.apps.pipeline import load_preset, reproduce
    with pytest.raises(UserError, match="not in PIPELINE.LIFTERS"):
        load_preset(str(first["preset"]), ["PIPELINE.SINGLE", "['mixste']"])
    with pytest.raises(UserError, match="LEAVE_ONE_OUT needs at least 3"):
        load_preset(str(first["preset"]), ["PIPELINE.LIFTERS", "['sb', 'iganet']", "PIPELINE.LIFTER_EPOCHS", "[]"])
    with pytest.raises(UserError, match="LIFTER_EPOCHS"):
        load_preset(str(first["preset"]), ["PIPELINE.LIFTER_EPOCHS", "[1]"])
    with pytest.raises(UserError, match="PIPELINE.NOPE"):
        load_preset(str(first["preset"]), ["PIPELINE.NOPE", "1"])
    with pytest.raises(UserError, match="not found"):
        load_preset(str(tmp_path / "missing.yaml"))
    # --only validate in a fresh output folder: the fine-tunings it needs are not there
    with pytest.raises(UserError, match="without --only"):
        reproduce(str(first["preset"]), out=tmp_path / "empty", only="validate", gpu_id=-1)
    with pytest.raises(UserError, match="index.json not found"):
        reproduce(str(first["preset"]), out=tmp_path / "o", data_root=tmp_path / "nodata", gpu_id=-1,
                  opts=["PIPELINE.SYNTHETIC", ""])
    # the command: one line on stderr, exit 2
    from lib.utils.errors import run_cli
    from run import reproduce as cli
    assert run_cli(cli.main, ["--preset", str(tmp_path / "missing.yaml")]) == 2


def test_synthetic_data_made_with_other_generator_arguments_is_not_reused(first, tmp_path):
    """A preset whose PIPELINE.SYNTH_ARGS differ from those the data folder was generated with stops with
    one line naming both, instead of running on the other design's data."""
    from lib.apps.pipeline import SYNTH_RECORD, reproduce
    data = first["base"] / "data"
    preset_args = yaml.safe_load(first["preset"].read_text())["PIPELINE"]["SYNTH_ARGS"]
    assert json.loads((data / SYNTH_RECORD).read_text())["arguments"] == preset_args
    index_before = (data / "index.json").stat().st_mtime_ns
    with pytest.raises(UserError, match=r"generated with .*--actions-per-subject.*delete"):
        reproduce(str(first["preset"]), out=tmp_path / "o", gpu_id=-1,
                  opts=["PIPELINE.SYNTH_ARGS", str(preset_args[:-1] + ["2"])])
    assert (data / "index.json").stat().st_mtime_ns == index_before      # nothing was regenerated


def test_presets_load_and_plan_their_runs():
    from lib.config import load_cfg
    from lib.apps.pipeline import load_preset, plan_runs
    demo = load_preset(str(ROOT / "experiments/pipeline/demo.yaml"))
    assert [r.name for r in plan_runs(demo)] == ["2d_only", "single_sb"] and list(demo.PIPELINE.LIFTERS) == ["sb"]
    multi = plan_runs(load_preset(str(ROOT / "experiments/pipeline/demo_multi.yaml")))
    assert [(r.guided_by, r.held_out) for r in multi[2:]] == [
        (["videopose", "iganet", "mixste"], ["sb"]), (["sb", "iganet", "mixste"], ["videopose"]),
        (["sb", "videopose", "mixste"], ["iganet"]), (["sb", "videopose", "iganet"], ["mixste"])]
    for name in ("h36m", "panoptic"):          # GPU scale: every key exists (their config files may not yet)
        cfg = load_cfg(str(ROOT / f"experiments/pipeline/{name}.yaml"))
        assert cfg.DATASET.DATASET == name and cfg.PIPELINE.LEAVE_ONE_OUT


def test_long_benchmark_is_the_benchmark_with_the_experiment_files_schedule():
    """benchmark_long.yaml changes only the fine-tuning: the experiment file's learning rate in every
    epoch, its number of epochs, and an epoch that is one pass over the training images."""
    from lib.config import load_cfg
    from lib.apps.pipeline import load_preset
    from lib.apps.report import flatten
    from lib.datasets.cameras import H36M_CAMERA_IDS
    from lib.datasets.commands import demo_parser
    from lib.datasets.synthetic import TRAIN_SUBJECTS
    from lib.engine.builders import lr_factor
    short = load_preset(str(ROOT / "experiments/pipeline/benchmark.yaml"))
    long = load_preset(str(ROOT / "experiments/pipeline/benchmark_long.yaml"))
    a, b = flatten(short), flatten(long)
    assert {k for k in set(a) | set(b) if a.get(k) != b.get(k)} == {
        "CFG_NAME", "OUTPUT_DIR", "PIPELINE.FINETUNE_EPOCHS", "PIPELINE.FINETUNE_OPTS"}
    paper = load_cfg(str(ROOT / "experiments/h36m/w32_384x288_adam_lr1e-3.yaml"))
    tuned = load_cfg(str(ROOT / long.PIPELINE.DETECTOR_CFG), list(long.PIPELINE.FINETUNE_OPTS))
    assert long.PIPELINE.FINETUNE_EPOCHS == paper.TRAIN.EPOCHS == 40
    # LR_STEP every 5, x0.67, x5 after epoch 30: epoch 33 = 0.67^6 * 5, epoch 40 = 0.67^8 * 5
    assert lr_factor(tuned, 33) == pytest.approx(0.67 ** 6 * 5) and lr_factor(tuned, 40) == pytest.approx(0.67 ** 8 * 5)
    assert [lr_factor(tuned, e) for e in range(45)] == [lr_factor(paper, e) for e in range(45)]
    synth = demo_parser().parse_args(["--dst", "x"] + list(long.PIPELINE.SYNTH_ARGS))
    train_images = len(TRAIN_SUBJECTS) * len(H36M_CAMERA_IDS) * synth.actions_per_subject * synth.frames_per_seq
    assert tuned.TRAIN.MAX_STEPS_PER_EPOCH * tuned.TRAIN.BATCH_SIZE_PER_GPU == train_images == 3200


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_pipeline_under_torchrun_matches_a_single_process_validation(tmp_path):
    """Two gloo processes run every stage; rank 0 writes the report; the sharded validation equals
    re-scoring the same checkpoints in this one process."""
    from lib.apps.pipeline import Pipeline, _lifter_list, _stage_cfg, load_preset
    from lib.engine.evaluator import evaluate_checkpoint, evaluation_context
    preset = _preset(tmp_path / "ddp.yaml", tmp_path, LIFTERS=["sb", "videopose"], LIFTER_EPOCHS=[1, 1],
                     LEAVE_ONE_OUT=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "--monitor-interval=0.1", "run/reproduce.py", "--preset", str(preset)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert set(report["status"].values()) == {"made", "trained"}
    assert [r["name"] for r in report["runs"]] == ["2d_only", "single_sb"]
    hist = json.loads(next((tmp_path / "out" / "finetune" / "single_sb").rglob("history.json")).read_text())
    assert hist["epochs"][0]["train"]["steps"] == 1

    pipe = Pipeline(load_preset(str(preset)), gpu_id=-1)
    cfg = _stage_cfg(pipe.detector_cfg, pipe.common + _lifter_list(pipe.lifters))
    context = evaluation_context(cfg, gpu_id=-1)
    start = next((tmp_path / "out" / "pretrain").rglob("model_best.pth"))
    models = pipe.detectors(start)
    for name, row in (("gt_2d", report["lifters_gt2d"]), ("single_sb", report["runs"][1]["mpjpe"])):
        got = evaluate_checkpoint(cfg, models[name], context=context)["per_lifter"]
        for lifter in ("sb", "videopose"):
            value = row[lifter]["mpjpe"] if name == "gt_2d" else row[lifter]
            assert got[lifter]["mpjpe"] == pytest.approx(value, rel=1e-5)


def test_pipeline_takes_the_detector_as_a_parameter_vitpose(tmp_path, one_thread):
    """The detector x lifter table can include ViTPose: PIPELINE.DETECTOR_CFG names its experiment."""
    from run import reproduce
    preset = _preset(tmp_path / "vit.yaml", tmp_path, DETECTOR_CFG="experiments/demo/vitpose_tiny.yaml",
                     LIFTERS=["sb"], LIFTER_EPOCHS=[1], LEAVE_ONE_OUT=False)
    report = reproduce.main(["--preset", str(preset), "--gpu_id", "-1"])
    assert [r["name"] for r in report["runs"]] == ["2d_only", "single_sb"]
    for name in ("2d_only", "single_sb"):
        (state,) = (tmp_path / "out" / "finetune" / name).rglob("final_state.pth")
        keys = torch.load(state, weights_only=True)
        assert "backbone.blocks.0.attn.qkv.weight" in keys and "keypoint_head.final_layer.weight" in keys


def test_several_seeds_give_means_per_seed_figures_and_the_verdict(tmp_path):
    """PIPELINE.SEEDS: lifters trained once, one pre-training and its fine-tunings per seed; the tables
    are the means over the seeds, per_seed keeps each seed's claims, the verdict summarises them
    (recomputed here with numpy and scipy), and every detector has its error diagnosis."""
    import numpy as np
    from run import reproduce
    scipy_stats = pytest.importorskip("scipy.stats")
    preset = _preset(tmp_path / "seeds.yaml", tmp_path, SEEDS=[3, 4])
    report = reproduce.main(["--preset", str(preset), "--gpu_id", "-1"])
    out = tmp_path / "out"
    assert report["seeds"] == [3, 4] and set(report["per_seed"]) == {"3", "4"}
    assert sorted(p.name for p in out.glob("seed_*")) == ["seed_3", "seed_4"]
    assert len(list((out / "lifters").glob("*/*_h36m.pth"))) == len(LIFTERS)        # trained once
    for seed in (3, 4):
        (cfg_file,) = (out / f"seed_{seed}" / "pretrain").rglob("config.yaml")
        assert yaml.safe_load(cfg_file.read_text())["SEED"] == seed
    singles = [report["per_seed"][s]["single_improvement_pct"]["sb"] for s in ("3", "4")]
    held = [report["per_seed"][s]["held_out_mean_improvement_pct"] for s in ("3", "4")]
    v = report["verdict"]
    assert v["single_lifter"] == "sb" and v["single"]["n"] == 2
    assert v["single"]["mean"] == pytest.approx(np.mean(singles)) and v["single"]["sd"] == pytest.approx(np.std(singles, ddof=1))
    assert v["held_out_mean"]["mean"] == pytest.approx(np.mean(held))
    if np.std(singles) > 0:
        assert v["single"]["p_value"] == pytest.approx(scipy_stats.ttest_1samp(singles, 0.0).pvalue, rel=1e-8)
    means = np.mean([[r["mpjpe"]["sb"] for r in report["per_seed"][s]["runs"]] for s in ("3", "4")], axis=0)
    assert [r["mpjpe"]["sb"] for r in report["runs"]] == pytest.approx(list(means))
    for model, shares in report["error_taxonomy"].items():
        assert sum(shares.values()) == pytest.approx(1.0) and set(shares) == {"good", "jitter", "inversion", "miss"}
    assert set(report["error_taxonomy"]) == {"pretrained", "2d_only", "single_sb", "without_sb", "without_videopose",
                                             "without_iganet"}
    text = (out / "report.md").read_text()
    assert "## Verdict over the seeds" in text and "mean over 2 seeds" in text and "Machine:" in text
