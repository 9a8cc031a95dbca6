"""Multi-model guidance end to end on tiny synthetic data (CPU): run/demo_multi.py with tiny settings,
and a dropout + avg + consistency multi-model training through run/train_hrnet.main."""
import json
from pathlib import Path

import numpy as np
import pytest

from run import demo_multi, train_hrnet
from conftest import make_tiny_h36m

CFG = "experiments/demo/tiny_96x128.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("multi")
    root = base / "data"
    make_tiny_h36m(root, seed=3, frames_per_seq=3, image_size=128)
    return base, root


def test_demo_multi_tiny_report_shape(data):
    base, root = data
    out = base / "demo_multi"
    report = demo_multi.main(["--data", str(root), "--out", str(out), "--pretrain-dir", "",
                              "--pretrain-epochs", "0", "--finetune-epochs", "0", "--steps", "2",
                              "--lifter-scale", "0.01", "--lifter-steps", "1", "--gpu_id", "-1"])
    on_disk = json.loads((out / "report.json").read_text())
    assert set(on_disk) == {"2d_only", "multi_guided"}
    for key in ("2d_only", "multi_guided"):
        r = on_disk[key]
        assert set(r) >= {"per_lifter", "cross", "ensemble", "pdj"}
        assert set(r["per_lifter"]) == {"sb", "videopose", "iganet", "mixste"}
        assert [n for n, v in r["per_lifter"].items() if v["held_out"]] == ["mixste"]
        # one held-out lifter: the pooled cross value is its own
        assert r["cross"]["lifters"] == ["mixste"]
        assert r["cross"]["mpjpe"] == pytest.approx(r["per_lifter"]["mixste"]["mpjpe"])
        assert r["ensemble"]["lifters"] == ["sb", "videopose", "iganet", "mixste"]
        assert all(np.isfinite(v["mpjpe"]) and v["mpjpe"] > 0 for v in r["per_lifter"].values())
        assert 0.0 <= r["pdj"] <= 100.0
        assert report[key]["ensemble"]["mpjpe"] == pytest.approx(r["ensemble"]["mpjpe"])
    md = (out / "report.md").read_text()
    assert "multi-model guided fine-tuning" in md and "| cross (held out) |" in md
    # both fine-tunings started from the same checkpoint and ran the same number of steps
    hist = {k: json.loads((Path(on_disk[k]["run_dir"]) / "history.json").read_text()) for k in on_disk}
    steps = [[e["train"]["steps"] for e in hist[k]["epochs"]] for k in ("2d_only", "multi_guided")]
    assert steps[0] == steps[1] == [1]           # 12 training samples at batch 32: one step per epoch
    assert hist["multi_guided"]["lifters"] == ["sb", "videopose", "iganet"]
    assert hist["multi_guided"]["cross_lifters"] == ["mixste"]


def test_dropout_avg_cons_multi_model_training(data):
    """Two tiny lifters, --dropout --loss_3d_avg --loss_3d_cons: every term finite and logged."""
    base, root = data
    weights = {n: base / "demo_multi" / "lifters" / f"{n}_h36m.pth" for n in ("sb", "videopose")}
    if not all(w.is_file() for w in weights.values()):
        from run import train_lifter
        for n, w in weights.items():
            train_lifter.main(["--cfg", CFG, "--model_3d", n, "--epochs", "1", "--weights", str(w),
                               "LIFTER_TRAIN.MAX_STEPS_PER_EPOCH", "1", "DATASET.ROOT", str(root),
                               "OUTPUT_DIR", str(base / "lift"), "USE_CUDA", "False"])
    opts = ["DATASET.ROOT", str(root), "OUTPUT_DIR", str(base / "dropout"), "USE_CUDA", "False",
            "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "3",
            "PRINT_FREQ", "1", "MODEL_3D.CROSS_VALID", "False"]
    for n, w in weights.items():
        opts += [f"MODEL_3D.WEIGHTS.{n.upper()}", str(w)]
    res = train_hrnet.main(["--cfg", CFG, "--epochs", "0", "--loss_3d", "--model_3d", "videopose,sb", "--dropout",
                            "--loss_3d_avg", "--loss_3d_cons", "--ohklm"] + opts)
    run = Path(res["run_dir"])
    assert res["lifters"] == ["sb", "videopose"] and res["cross_lifters"] == []
    hist = json.loads((run / "history.json").read_text())
    train = hist["epochs"][0]["train"]
    for k in ("loss_2d", "loss_ohklm", "loss_3d", "loss_3d_avg", "loss_3d_cons", "total",
              "loss_3d/sb", "loss_3d/videopose", "dwa_w/sb", "dwa_w/videopose"):
        assert np.isfinite(train[k]), k
    # two different lifters disagree: the consistency and average terms are active
    assert train["loss_3d_cons"] > 0 and train["loss_3d_avg"] > 0
    assert train["steps"] == 3
    assert set(hist["epochs"][0]["valid"]["per_lifter"]) == {"sb", "videopose"}
    log = next(run.glob("*_train.log")).read_text()
    assert "loss3d_avg" in log and "dwa_w sb:" in log
