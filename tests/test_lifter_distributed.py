"""run/train_lifter.py under torchrun (2 CPU processes, gloo): one checkpoint, one history, rank-0 logging,
and a logged validation MPJPE equal to the saved checkpoint re-evaluated in one process.

The re-evaluation is independent of the trainer: the checkpoint is loaded with weights_only, the lifter
rebuilt, and MPJPE / P-MPJPE computed here in float64 with a per-sample loop (Procrustes by SVD). Equality
shows that the sharded validation gathers every valid sample exactly once and that the checkpoint holds
the weights and BatchNorm statistics that were validated (broadcast from rank 0 without SYNC_BN).
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import model_3d
from conftest import free_port, make_tiny_h36m, ref_p_mpjpe_one

REPO = Path(__file__).resolve().parents[1]
CFG = "experiments/demo/tiny_96x128.yaml"
EPOCHS = 3

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lifter_ddp_data") / "data"
    return make_tiny_h36m(root, seed=3, frames_per_seq=4, image_size=64)   # 16 train / 16 valid samples


def _reference_errors_mm(pred_mm, gt_mm):
    """float64 per-sample loop: (MPJPE, P-MPJPE) means over samples."""
    err = [np.mean(np.sqrt(((p - g) ** 2).sum(-1))) for p, g in zip(pred_mm, gt_mm)]
    return float(np.mean(err)), float(np.mean([ref_p_mpjpe_one(p, g) for p, g in zip(pred_mm, gt_mm)]))


@pytest.mark.parametrize("name,sync_bn,batch", [("sb", True, 8), ("videopose", False, 7)])
def test_torchrun_lifter_training(data, tmp_path, name, sync_bn, batch):
    out = tmp_path / "ckpt" / f"{name}.pth"
    run_dir = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "--monitor-interval=0.1", "run/train_lifter.py", "--cfg", CFG,
           "--model_3d", name, "--epochs", str(EPOCHS), "--batch_size", str(batch), "--weights", str(out),
           "DATASET.ROOT", str(data), "OUTPUT_DIR", str(run_dir), "USE_CUDA", "False", "SEED", "0",
           "TRAIN.SYNC_BN", str(sync_bn)]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{log[-4000:]}"

    # rank 0 alone logs: every epoch line once; one log file; one checkpoint, no leftovers
    for epoch in range(EPOCHS):
        assert len(re.findall(rf"lifter {name} epoch {epoch}/{EPOCHS - 1}:", log)) == 1, log[-3000:]
    folder = run_dir / "h36m" / "lifters" / name
    assert len(list(folder.glob("*.log"))) == 1
    assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".log")) == ["curves.png", "history.json"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]

    history = json.loads((folder / "history.json").read_text())
    assert history["world_size"] == 2 and history["sync_bn"] is sync_bn
    assert [e["epoch"] for e in history["epochs"]] == list(range(EPOCHS))
    final = history["epochs"][-1]["valid"]["mpjpe"]
    assert np.isfinite(final)

    ckpt = model_3d.load_lifter_checkpoint(out, weights_only=True)
    raw = torch.load(out, weights_only=True)
    assert raw["format"] == "l2d-lifter" and raw["name"] == name and raw["config"]["world_size"] == 2
    best = min(history["epochs"], key=lambda e: e["valid"]["mpjpe"])
    assert raw["epoch"] == best["epoch"] and best["best"]
    lifter = model_3d.build_lifter(name, 17, weights=ckpt)

    arrays = np.load(data / "valid.npz")
    x = torch.from_numpy(arrays["joints_2d"]).float()
    size = torch.from_numpy(np.stack([arrays["width"], arrays["height"]], 1)).float()
    with torch.no_grad():
        pred_mm = (lifter(x, size) * 1000.0).double().numpy()
    gt_mm = arrays["joints_3d"].astype(np.float64) * 10.0
    mpjpe, p_mpjpe = _reference_errors_mm(pred_mm, gt_mm)
    assert best["valid"]["mpjpe"] == pytest.approx(mpjpe, rel=1e-4)
    assert best["valid"]["p_mpjpe"] == pytest.approx(p_mpjpe, rel=1e-4)
    if best is history["epochs"][-1]:
        assert final == pytest.approx(mpjpe, rel=1e-4)
