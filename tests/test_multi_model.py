"""Multi-model guidance on tiny synthetic data (CPU): a dropout + avg + consistency multi-model training
through run/train_hrnet.main (the leave-one-out pipeline of make demo-multi: test_pipeline.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from run import train_hrnet
from conftest import make_tiny_h36m

CFG = "experiments/demo/tiny_96x128.yaml"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("multi")
    root = base / "data"
    make_tiny_h36m(root, seed=3, frames_per_seq=3, image_size=128)
    return base, root


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
