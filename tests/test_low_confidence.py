"""DATASET.MASK_LOW_CONFIDENCE: Panoptic joints with confidence <= 0.1 sit at the
world origin in the toolbox's files; with the switch they leave the 3D losses, the metrics, the
normalisation stats and lifter training, and the numbers with them are reported beside."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ref_p_mpjpe_one
from lib.core.losses import average_prediction_loss, mse_3d_terms
from lib.datasets.stats import compute_stats
from lib.eval.metrics import mpjpe_masked_torch, p_mpjpe_masked_torch

CFG = "experiments/demo/tiny_panoptic.yaml"
LOW_JOINT = 7            # left knee in the toolbox's joints19 order (the prepared 15 keep that order)


def test_masked_losses_and_metrics_against_float64_references():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 4, 3, generator=g, dtype=torch.float64)     # K=2 lifters, N=3, J=4
    gt = torch.randn(3, 4, 3, generator=g, dtype=torch.float64)
    valid = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 1], [0, 1, 1, 1]], dtype=torch.float64)
    terms = mse_3d_terms(pred, gt.unsqueeze(0), valid)
    p, t, v = pred.numpy(), gt.numpy(), valid.numpy().astype(bool)
    for k in range(2):
        rows = (p[k] - t)[v]                                       # (10, 3): the valid joints only
        assert terms["xyz"][k].item() == pytest.approx((rows ** 2).mean(), rel=1e-12)
        assert terms["xy"][k].item() == pytest.approx((rows[:, :2] ** 2).mean(), rel=1e-12)
        assert terms["z"][k].item() == pytest.approx((rows[:, 2] ** 2).mean(), rel=1e-12)
    assert (terms["per_joint"][:, ~valid.bool()] == 0).all()
    avg = ((p.mean(axis=0) - t)[v] ** 2).mean()
    assert average_prediction_loss(pred, gt, valid).item() == pytest.approx(avg, rel=1e-12)

    # metrics: each sample over its valid joints; P-MPJPE = Procrustes fitted on those joints alone
    pred_mm, gt_mm = pred[0] * 100, gt * 100
    got = mpjpe_masked_torch(pred_mm, gt_mm, valid).numpy()
    got_p = p_mpjpe_masked_torch(pred_mm, gt_mm, valid).numpy()
    for i in range(3):
        a, b = pred_mm[i].numpy()[v[i]], gt_mm[i].numpy()[v[i]]
        assert got[i] == pytest.approx(np.linalg.norm(a - b, axis=-1).mean(), rel=1e-12)
        assert got_p[i] == pytest.approx(ref_p_mpjpe_one(a, b), rel=1e-9)


def test_masked_stats_leave_invalid_joints_out():
    rng = np.random.default_rng(1)
    j3d = rng.normal(0, 30, (6, 3, 3))
    valid = np.ones((6, 3), bool)
    valid[[1, 4], 2] = False
    j3d[[1, 4], 2] = -500.0                     # where the toolbox's origin lands, far from the body
    stats, _ = compute_stats(rng.uniform(10, 90, (6, 3, 2)), j3d, 100, 100, valid_3d=valid)
    for j in range(3):
        keep = j3d[valid[:, j], j]
        np.testing.assert_allclose(stats["mean_3d"][j], keep.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(stats["std_3d"][j], keep.std(axis=0), rtol=1e-6)
    plain, _ = compute_stats(rng.uniform(10, 90, (6, 3, 2)), j3d, 100, 100)
    assert plain["mean_3d"][2, 0] < -100 < stats["mean_3d"][2, 0]      # the default keeps the original's numbers


@pytest.fixture(scope="module")
def panoptic(tmp_path_factory):
    from run import make_demo_data, prepare_panoptic
    base = tmp_path_factory.mktemp("lowconf")
    data = base / "data"
    make_demo_data.main(["--dst", str(data), "--panoptic", "--frames-per-seq", "2"])
    lowered = set()
    for n, f in enumerate(sorted(data.rglob("body3DScene_*.json"))):
        if n % 2:
            continue
        doc = json.loads(f.read_text())
        joints = doc["bodies"][0]["joints19"]
        joints[4 * LOW_JOINT: 4 * LOW_JOINT + 4] = [0.0, 0.0, 0.0, 0.05]     # what the toolbox writes
        f.write_text(json.dumps(doc))
        lowered.add((f.parent.parent.name, int(f.stem.split("_")[-1])))
    prepare_panoptic.main(["--src", str(data), "--dst", str(data), "--no-check-images"])
    common = ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(base / "out"), "USE_CUDA", "False",
              "MODEL_3D.WEIGHTS.SB", str(base / "sb.pth"), "TRAIN.BATCH_SIZE_PER_GPU", "4",
              "TEST.BATCH_SIZE_PER_GPU", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "1", "LIFTER_TRAIN.MAX_STEPS_PER_EPOCH", "2",
              "DATASET.MASK_LOW_CONFIDENCE", "True"]
    return {"data": data, "lowered": lowered, "common": common}


def test_panoptic_low_confidence_joints_masked_end_to_end(panoptic):
    from lib.config import load_cfg
    from lib.datasets import build_dataset, index as idx
    from lib.datasets.stats import train_stats
    from run import train_hrnet, train_lifter

    data = panoptic["data"]
    _, arrays = idx.load_split(data, "train", "panoptic")
    low = np.array([(s, int(f)) in panoptic["lowered"] for s, f in zip(arrays["subject"], arrays["frame"])])
    assert low.any() and (~low).any()
    assert (arrays["joints_3d_valid"][:, LOW_JOINT] == ~low).all()
    assert arrays["joints_3d_valid"][:, np.arange(15) != LOW_JOINT].all()
    assert (arrays["joints_vis"][low, LOW_JOINT] == 0).all()

    on = load_cfg(CFG, panoptic["common"])
    off = load_cfg(CFG, panoptic["common"] + ["DATASET.MASK_LOW_CONFIDENCE", "False"])
    i = int(np.flatnonzero(low)[0])
    assert build_dataset(on, "train", False)[i][3]["joints_3d_valid"][LOW_JOINT] == 0
    assert build_dataset(off, "train", False)[i][3]["joints_3d_valid"].min() == 1      # default: the original
    masked = train_stats(on, data)["mean_3d"][LOW_JOINT]
    np.testing.assert_allclose(masked, arrays["joints_3d"][~low, LOW_JOINT].astype(np.float64).mean(axis=0), rtol=1e-5)
    assert not np.allclose(masked, idx.load_stats(data)["mean_3d"][LOW_JOINT])

    res = train_lifter.main(["--cfg", CFG, "--model_3d", "sb", "--epochs", "1"] + panoptic["common"])
    best = res["sb"]["best"] if "sb" in res else res["best"]
    assert set(best) >= {"mpjpe", "p_mpjpe", "mpjpe_unmasked", "p_mpjpe_unmasked"}
    assert best["mpjpe"] != best["mpjpe_unmasked"]

    run = train_hrnet.main(["--cfg", CFG, "--epochs", "0", "--loss_3d", "--model_3d", "sb"] + panoptic["common"])
    valid = run["history"]["epochs"][0]["valid"]
    assert valid["mpjpe_unmasked"] is not None and valid["mpjpe_unmasked"] != valid["mpjpe"]
    assert "with them: MPJPE" in Path(run["log_file"]).read_text()
