"""End to end, in process, on the tiny config and synthetic data (CPU, seconds): lifter training,
2D-only and 3D-guided detector training, multi-model with a held-out lifter, validation."""
import json
from pathlib import Path

import pytest
import torch

from run import train_hrnet, train_lifter, valid_hrnet
from conftest import make_tiny_h36m

CFG = "experiments/demo/tiny_96x128.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    data = base / "data"
    make_tiny_h36m(data, seed=0, frames_per_seq=4, image_size=128)
    weights = {n: base / "lifters" / f"{n}.pth" for n in ("sb", "videopose", "iganet")}
    common = ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(base / "out"), "USE_CUDA", "False",
              "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "2",
              "PRINT_FREQ", "1", "LIFTER_TRAIN.BATCH_SIZE", "16"]
    for n, w in weights.items():
        common += [f"MODEL_3D.WEIGHTS.{n.upper()}", str(w)]
    res = train_lifter.main(["--cfg", CFG, "--model_3d", "sb,videopose,iganet", "--epochs", "2"] + common)
    return {"base": base, "data": data, "common": common, "weights": weights, "lifters": res}


def test_lifter_checkpoints(env):
    for name, path in env["weights"].items():
        obj = torch.load(path, weights_only=True)
        assert obj["format"] == "l2d-lifter" and obj["name"] == name and obj["num_joints"] == 17
        assert set(obj["metrics"]) == {"mpjpe", "p_mpjpe"}
    assert torch.load(env["weights"]["sb"], weights_only=True)["stats"]["mean_2d"].shape == (17, 2)


def test_2d_only_then_3d_guided_then_validation(env, capsys):
    c = env["common"]
    two_d = train_hrnet.main(["--cfg", CFG, "--epochs", "1", "TRAIN.LR_BUMP_EPOCH", "0"] + c)
    run2d = Path(two_d["run_dir"])
    assert run2d.name == "only_loss_2d"
    for f in ("checkpoint.pth", "model_best.pth", "final_state.pth", "history.json", "config.yaml",
              "curves.png", "metrics.json"):
        assert (run2d / f).is_file(), f
    assert len(list(run2d.glob("tiny_96x128_*_train.log"))) == 1
    log = next(run2d.glob("*_train.log")).read_text()
    assert "learning rate multiplied by 5" in log and "Epoch: [1][1/2]" in log
    hist = json.loads((run2d / "history.json").read_text())
    assert [e["epoch"] for e in hist["epochs"]] == [0, 1]
    assert hist["epochs"][1]["lr"] == pytest.approx(5e-3)                   # x5 after epoch 0's step
    assert set(hist["epochs"][0]["train"]) >= {"loss_2d", "total", "accuracy_2d", "samples_per_s"}
    best_pdj = max(e["valid"]["pdj"] for e in hist["epochs"])
    assert json.loads((run2d / "metrics.json").read_text())["pdj"] == pytest.approx(best_pdj)

    guided = train_hrnet.main(["--cfg", CFG, "--epochs", "0", "--loss_3d", "--loss_3d_z", "--ohklm",
                               "--model_3d", "sb", "TRAIN.FINETUNE", str(run2d / "model_best.pth")] + c)
    run3d = Path(guided["run_dir"])
    assert run3d.name == "sb" and run3d.parent.name.startswith("loss3dz1_dwa1_3xyw0.02_3zw0.04_ohklmw0.3_ohklm1")
    h3 = json.loads((run3d / "history.json").read_text())
    assert h3["epochs"][0]["train"]["loss_3d"] > 0 and h3["epochs"][0]["valid"]["mpjpe"] > 0

    capsys.readouterr()
    out = valid_hrnet.main(["--cfg", CFG, "--model_dir", str(run3d), "--model_3d", "sb", "--action_valid"] + c)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"model dir: {run3d}"
    assert printed[1] == "[h36m] HRNet + sb (GT 2D: False, soft argmax: True, beta:100)"
    assert printed[2].startswith("[h36m] Test MPJPE: ") and printed[2].endswith("%")
    assert printed[3].startswith("[h36m] sb Test MPJPE: ") and printed[4] == ""
    assert printed[5].startswith("[h36m] sb Dir.") and "| WalkT." in printed[5]
    metrics = json.loads((run3d / "metrics.json").read_text())
    assert metrics["mpjpe"] == pytest.approx(out["mpjpe"]) and metrics["per_action"]["sb"]
    # validating the run's best weights reproduces the trainer's own validation
    assert metrics["mpjpe"] == pytest.approx(h3["epochs"][0]["valid"]["mpjpe"], rel=1e-5)

    gt = valid_hrnet.main(["--cfg", CFG, "--gt", "--model_dir", str(env["base"] / "gt"), "--model_3d", "sb"] + c)
    assert gt["pdj"] == 100.0
    assert gt["mpjpe"] == pytest.approx(env["lifters"]["sb"]["best"]["mpjpe"], rel=1e-4)
    argmax = valid_hrnet.main(["--cfg", CFG, "--model_dir", str(run2d), "--model_3d", "sb", "--argmax",
                               "--ensemble"] + c)
    assert argmax["soft_argmax"] is False and argmax["ensemble"]["lifters"] == ["sb"]


def test_keep_epoch_weights_writes_each_epochs_detector(env):
    c = env["common"] + ["OUTPUT_DIR", str(env["base"] / "keep"), "TRAIN.KEEP_EPOCH_WEIGHTS", "True"]
    run = Path(train_hrnet.main(["--cfg", CFG, "--epochs", "1", "TRAIN.LR_BUMP_EPOCH", "0"] + c)["run_dir"])
    assert sorted(p.name for p in run.glob("epoch_*.pth")) == ["epoch_0.pth", "epoch_1.pth"]
    epochs = [torch.load(run / f"epoch_{k}.pth", weights_only=True) for k in (0, 1)]
    assert any(not torch.equal(epochs[0][k], epochs[1][k]) for k in epochs[0])      # training moved the weights
    last = torch.load(run / "checkpoint.pth", weights_only=True)["state_dict"]
    assert all(torch.equal(epochs[1][k], last[k]) for k in last)                    # the last epoch = the resume state
    pdj = [e["valid"]["pdj"] for e in json.loads((run / "history.json").read_text())["epochs"]]
    chosen = epochs[max(range(2), key=lambda k: pdj[k])]                             # first best on a tie, as the trainer
    best = torch.load(run / "model_best.pth", weights_only=True)
    assert all(torch.equal(chosen[k], best[k]) for k in best)


def test_train_cache_changes_no_number(env, monkeypatch):
    """TRAIN.CACHE_MB: two passes over the training split, guided by sb, with and without the cache:
    each training image is cropped twice without it and once with it, and the weights, losses and
    validation figures are the same bit for bit."""
    from lib.datasets.base import JointsDataset3D
    reads = []
    make_sample = JointsDataset3D.make_sample

    def counting(self, i, image):
        if self.is_train:
            reads.append(i)
        return make_sample(self, i, image)

    monkeypatch.setattr(JointsDataset3D, "make_sample", counting)
    runs = {}
    for mb in ("0", "64"):
        reads.clear()
        c = env["common"] + ["OUTPUT_DIR", str(env["base"] / f"cache_{mb}"), "TRAIN.MAX_STEPS_PER_EPOCH", "4",
                             "TRAIN.CACHE_MB", mb]
        out = train_hrnet.main(["--cfg", CFG, "--epochs", "1", "--loss_3d", "--loss_3d_z", "--ohklm", "--model_3d", "sb",
                                "TRAIN.LR_BUMP_EPOCH", "0"] + c)
        runs[mb] = (Path(out["run_dir"]), sorted(reads))
    split = sorted(set(runs["0"][1]))
    assert len(split) == 16 and runs["0"][1] == sorted(split * 2) and runs["64"][1] == split
    states = [torch.load(run / "checkpoint.pth", weights_only=True)["state_dict"] for run, _ in runs.values()]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    hists = [json.loads((run / "history.json").read_text())["epochs"] for run, _ in runs.values()]
    for a, b in zip(*hists):
        assert a["valid"]["mpjpe"] == b["valid"]["mpjpe"] and a["train"]["loss_3d"] == b["train"]["loss_3d"]


def test_multi_model_cross_validation(env):
    out = train_hrnet.main(["--cfg", CFG, "--epochs", "1", "--loss_3d", "--model_3d", "videopose,sb",
                            "--dropout", "--loss_3d_avg", "--loss_3d_cons"] + env["common"])
    run = Path(out["run_dir"])
    assert run.name == "sb_videopose" and run.parent.name.endswith("_multi")
    assert out["lifters"] == ["sb", "videopose"] and out["cross_lifters"] == ["iganet"]
    assert any(s.startswith("mixste") for s in out["skipped_lifters"])
    hist = json.loads((run / "history.json").read_text())
    cross = [e["valid"]["cross_mpjpe"] for e in hist["epochs"]]
    main = [e["valid"]["mpjpe"] for e in hist["epochs"]]
    assert (run / "model_best_cross.pth").is_file() and (run / "model_best.pth").is_file()
    best_cross_epoch = min(range(len(cross)), key=cross.__getitem__)
    best_epoch = min(range(len(main)), key=main.__getitem__)
    assert json.loads((run / "metrics_cross.json").read_text())["epoch"] == best_cross_epoch
    assert json.loads((run / "metrics.json").read_text())["epoch"] == best_epoch
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    assert state["best_cross_perf"] == pytest.approx(min(cross)) and state["best_perf"] == pytest.approx(min(main))
    assert set(hist["epochs"][0]["valid"]["per_lifter"]) == {"sb", "videopose", "iganet"}
    assert set(hist["epochs"][0]["train"]) >= {"loss_3d/sb", "loss_3d/videopose", "dwa_w/sb", "loss_3d_cons"}
