"""CMU Panoptic end to end on the synthetic panoptic-toolbox set (CPU): prepare -> 15-joint sb lifter ->
3D-guided tiny HRNet (17 heatmaps remapped to 15) -> valid_hrnet -> metrics.json."""
import json
from pathlib import Path

import pytest
import torch

from run import prepare_panoptic, train_hrnet, train_lifter, valid_hrnet

CFG = "experiments/demo/tiny_panoptic.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from run import make_demo_data
    base = tmp_path_factory.mktemp("panoptic_e2e")
    data = base / "data"
    make_demo_data.main(["--dst", str(data), "--panoptic", "--frames-per-seq", "2"])
    prepare_panoptic.main(["--src", str(data), "--dst", str(data), "--no-check-images"])
    sb = base / "sb_panoptic.pth"
    common = ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(base / "out"), "USE_CUDA", "False",
              "MODEL_3D.WEIGHTS.SB", str(sb), "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "8",
              "TRAIN.MAX_STEPS_PER_EPOCH", "2", "PRINT_FREQ", "1"]
    train_lifter.main(["--cfg", CFG, "--model_3d", "sb", "--epochs", "3"] + common)
    return {"base": base, "data": data, "common": common, "sb": sb}


def test_prepared_panoptic_and_lifter(env):
    info = json.loads((env["data"] / "index.json").read_text())
    assert info["dataset"] == "panoptic" and info["num_joints"] == 15
    ckpt = torch.load(env["sb"], weights_only=True)
    assert ckpt["num_joints"] == 15 and ckpt["dataset"] == "panoptic"
    assert ckpt["stats"]["mean_2d"].shape == (15, 2) and ckpt["stats"]["mean_3d"].shape == (15, 3)


def test_guided_training_remaps_17_to_15_then_validates(env, monkeypatch):
    from lib.core import objective as objective_mod
    from lib.core.heatmap import remap_h36m_to_panoptic
    seen = []
    real_forward = objective_mod.L2DObjective.forward

    def spy(self, heatmaps, target, target_weight, meta):
        seen.append((tuple(heatmaps.shape), tuple(target.shape), tuple(target_weight.shape),
                     tuple(meta["joints_3d"].shape)))
        return real_forward(self, heatmaps, target, target_weight, meta)

    monkeypatch.setattr(objective_mod.L2DObjective, "forward", spy)
    res = train_hrnet.main(["--cfg", CFG, "--epochs", "0", "--loss_3d", "--loss_3d_z", "--ohklm", "--model_3d", "sb"]
                           + env["common"])
    run = Path(res["run_dir"])
    assert len(seen) == 2
    for hm, tgt, tw, j3d in seen:
        assert hm[1] == 17                      # the detector emits the 17 Human3.6M heatmaps
        assert tgt[1] == 15 and tw[1:] == (15, 1) and j3d[1:] == (15, 3)   # targets are Panoptic-15
    hist = json.loads((run / "history.json").read_text())
    e0 = hist["epochs"][0]
    assert e0["train"]["steps"] == 2 and e0["train"]["loss_3d"] > 0 and e0["valid"]["mpjpe"] > 0

    # the objective's 2D loss equals the loss computed on the remapped (15-channel) heatmaps
    from lib.core.losses import JointsMSELoss
    g = torch.Generator().manual_seed(0)
    hm17 = torch.rand(2, 17, 32, 24, generator=g)
    target = torch.rand(2, 15, 32, 24, generator=g)
    weight = torch.ones(2, 15, 1)
    from lib.config import load_cfg
    cfg = load_cfg(CFG, ["LOSS.LOSS_3D", False])
    obj = objective_mod.L2DObjective(cfg, {})
    loss, _ = real_forward(obj, hm17, target, weight, {})
    expected = JointsMSELoss(use_target_weight=True)(remap_h36m_to_panoptic(hm17), target, weight)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)

    out = valid_hrnet.main(["--cfg", CFG, "--model_dir", str(run), "--model_3d", "sb"] + env["common"])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "panoptic" and metrics["lifters"] == ["sb"]
    assert metrics["mpjpe"] == pytest.approx(out["mpjpe"]) and metrics["mpjpe"] > 0
    assert 0.0 <= metrics["pdj"] <= 100.0
    assert metrics["mpjpe"] == pytest.approx(e0["valid"]["mpjpe"], rel=1e-5)   # same weights, same numbers
