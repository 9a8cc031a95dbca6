"""benchmarks/gpu_check.sh: its dry mode runs every row on the CPU at tiny sizes and writes the JSON
(no timing is asserted); step times are read from the training log as documented."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from benchmarks import gpu_check
from conftest import ROOT

TRAIN_ROWS = {f"train_{g}_{p}" for g in ("2d", "sb", "multi") for p in ("fp32", "bf16", "bf16_cl")}


def test_step_times_come_from_the_log_windows_after_the_first_line(tmp_path):
    run = tmp_path / "h36m" / "pose_hrnet" / "only_loss_2d"
    run.mkdir(parents=True)
    lines = [(0, 16.0), (10, 320.0), (20, 160.0), (30, 0.0)]       # 0.0: too slow for the log's precision
    (run / "w32_2026-01-01-00-00_train.log").write_text("".join(
        f"2026-01-01 00:00:0{i},000 Epoch: [0][{step}/31]\tSpeed {speed:.1f} samples/s\tLoss_2d 0.00100\n"
        for i, (step, speed) in enumerate(lines)) + "epoch 0 summary: ...\n")
    (run / "history.json").write_text(json.dumps({"epochs": [{"epoch": 0, "train": {
        "steps": 31, "samples_per_s": 150.0, "seconds": 6.6, "total": 0.5}, "valid": {"pdj": 12.5, "mpjpe": None}}]}))
    fig = gpu_check.run_figures(tmp_path, batch=32)
    # windows of 32 samples per step at 320 and 160 samples/s: 100 and 200 ms per step
    assert fig["step_ms"] == pytest.approx(150.0)
    assert fig["samples_per_s"] == pytest.approx(32 / 0.150)
    assert fig["first_step_s"] == pytest.approx(2.0)                # 32 samples at 16 samples/s
    assert fig["window_samples_per_s"] == [320.0, 160.0, 0.0]
    assert (fig["steps"], fig["epoch_samples_per_s"], fig["epoch_seconds"], fig["valid_pdj"]) == (31, 150.0, 6.6, 12.5)
    assert fig["run_dir"] == str(run)


def test_a_run_without_a_log_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="no history.json"):
        gpu_check.run_figures(tmp_path, batch=4)


def test_dry_run_runs_every_row(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["benchmark"] == "gpu_check" and res["dry"] is True and res["device"] == "cpu"
    assert res["gpu"] is None and res["machine"]["cpu"] and res["machine"]["gpu"] is None
    assert res["settings"]["cfg"] == "experiments/demo/tiny_96x128.yaml" and res["settings"]["steps"] == 2
    assert set(res["rows"]) == TRAIN_ROWS | {"lifters", "torchrun_sb_fp32", "validation", "loader"}
    failed = {k: r["status"] for k, r in res["rows"].items() if r["status"] != "ok"}
    assert not failed
    for name in TRAIN_ROWS | {"torchrun_sb_fp32"}:
        row = res["rows"][name]
        assert row["steps"] == 2 and row["batch"] == 2 and row["epoch_samples_per_s"] > 0, name
        assert row["valid_pdj"] is not None and row["wall_s"] > 0, name
        cfg = yaml.safe_load(open(os.path.join(row["run_dir"], "config.yaml")))
        guidance, precision = name.split("_", 2)[1:]
        assert cfg["TRAIN"]["AMP"] == ("none" if precision == "fp32" else "bf16"), name
        assert cfg["TRAIN"]["CHANNELS_LAST"] is (precision == "bf16_cl"), name
        assert cfg["TRAIN"]["MAX_STEPS_PER_EPOCH"] == 2 and cfg["USE_CUDA"] is False, name
        assert cfg["LOSS"]["LOSS_3D"] is (guidance != "2d"), name
        lifters = {"2d": "only_loss_2d", "sb": "sb", "multi": "iganet_mixste_sb_videopose"}[guidance]
        assert os.path.basename(row["run_dir"]) == lifters, name
    assert set(res["rows"]["lifters"]["valid_mpjpe"]) == {"sb", "videopose", "iganet", "mixste"}
    assert all((tmp_path / "lifters" / f"{n}.pth").is_file() for n in ("sb", "videopose", "iganet", "mixste"))
    assert res["rows"]["validation"]["numbers_equal"] is True
    loader = res["rows"]["loader"]
    assert loader["samples_per_s"] > 0 and loader["workers"] == 0       # the tiny config's WORKERS
    assert "train_multi_bf16_cl" in done.stdout and f"JSON: {tmp_path / 'gpu_check.json'}" in done.stdout
