"""Reliability: resume after a kill equals an uninterrupted run, refusal to overwrite,
non-finite loss stop, weights_only loading of every checkpoint, and the error messages."""
from pathlib import Path

import pytest
import torch

import model_3d
from lib.engine import trainer
from lib.utils.errors import BadValueError
from run import train_hrnet, train_lifter, valid_hrnet
from conftest import make_tiny_h36m

CFG = "experiments/demo/tiny_96x128.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("rel")
    data = base / "data"
    make_tiny_h36m(data, seed=1, frames_per_seq=3, image_size=128)
    common = ["DATASET.ROOT", str(data), "USE_CUDA", "False", "TRAIN.BATCH_SIZE_PER_GPU", "4",
              "TEST.BATCH_SIZE_PER_GPU", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "2", "PRINT_FREQ", "5",
              "LIFTER_TRAIN.BATCH_SIZE", "16", "MODEL_3D.WEIGHTS.SB", str(base / "sb.pth"),
              "MODEL_3D.WEIGHTS.VIDEOPOSE", str(base / "vp.bin")]
    train_lifter.main(["--cfg", CFG, "--model_3d", "sb,videopose", "--epochs", "1", "OUTPUT_DIR", str(base)] + common)
    return {"base": base, "common": common}


def _guided(env, out, *extra):
    # multi-model with dropout + DWA: resume must restore the DWA history and the dropout RNG too
    return ["--cfg", CFG, "--epochs", "2", "--loss_3d", "--ohklm", "--model_3d", "sb,videopose", "--dropout",
            "OUTPUT_DIR", str(env["base"] / out)] + env["common"] + list(extra)


def test_resume_after_kill_equals_uninterrupted(env, monkeypatch):
    full = train_hrnet.main(_guided(env, "full"))
    real_epoch = trainer.train_one_epoch

    def killed_in_epoch_2(epoch, *a, **k):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill during epoch 2")
        return real_epoch(epoch, *a, **k)

    monkeypatch.setattr(trainer, "train_one_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train_hrnet.main(_guided(env, "killed"))
    monkeypatch.setattr(trainer, "train_one_epoch", real_epoch)
    run = Path(full["run_dir"].as_posix().replace("/full/", "/killed/"))
    assert torch.load(run / "checkpoint.pth", weights_only=True)["epoch"] == 2
    assert not (run / "final_state.pth").exists()
    resumed = train_hrnet.main(_guided(env, "killed", "--resume"))
    a = torch.load(Path(full["run_dir"]) / "final_state.pth", weights_only=True)
    b = torch.load(Path(resumed["run_dir"]) / "final_state.pth", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [e["epoch"] for e in resumed["history"]["epochs"]] == [0, 1, 2]
    assert resumed["history"]["epochs"] == full["history"]["epochs"] or all(
        x["valid"] == y["valid"] for x, y in zip(resumed["history"]["epochs"], full["history"]["epochs"]))
    sa = torch.load(Path(full["run_dir"]) / "checkpoint.pth", weights_only=True)
    sb = torch.load(Path(resumed["run_dir"]) / "checkpoint.pth", weights_only=True)
    assert sa["objective"] == sb["objective"] and sa["best_perf"] == sb["best_perf"]

    # a finished run is not overwritten without --resume
    with pytest.raises(trainer.RunExistsError, match="Final output directory exists"):
        train_hrnet.main(_guided(env, "full"))

    # every checkpoint the project writes loads with weights_only=True
    files = list(Path(env["base"]).rglob("*.pth")) + list(Path(env["base"]).rglob("*.bin"))
    names = {f.name for f in files}
    assert {"checkpoint.pth", "model_best.pth", "final_state.pth", "sb.pth", "vp.bin"} <= names
    for f in files:
        torch.load(f, weights_only=True)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(env, monkeypatch):
    from lib.core.objective import L2DObjective
    real_forward = L2DObjective.forward
    calls = {"n": 0}

    def poisoned(self, *a, **k):
        loss, terms = real_forward(self, *a, **k)
        calls["n"] += 1
        if calls["n"] == 4:                    # epoch 1, step 1 (2 steps per epoch)
            nan = torch.tensor(float("nan"))
            return loss * nan, {**terms, "total": terms["total"] * nan}
        return loss, terms

    monkeypatch.setattr(L2DObjective, "forward", poisoned)
    args = ["--cfg", CFG, "--epochs", "3", "OUTPUT_DIR", str(env["base"] / "nan")] + env["common"]
    with pytest.raises(trainer.NonFiniteLossError) as err:
        train_hrnet.main(args)
    msg = str(err.value)
    assert "epoch 1, step 1" in msg and "total=nan" in msg and "loss_2d=" in msg
    run = env["base"] / "nan" / "h36m" / "pose_hrnet" / "only_loss_2d"
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    assert state["epoch"] == 1                 # the last good epoch (0) is what stays
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_missing_lifter_weights_names_path_and_command(env, tmp_path):
    missing = tmp_path / "nowhere" / "iganet.pth"
    args = ["--cfg", CFG, "--loss_3d", "--model_3d", "iganet", "OUTPUT_DIR", str(tmp_path)] + env["common"] + \
        ["MODEL_3D.WEIGHTS.IGANET", str(missing)]
    with pytest.raises(FileNotFoundError) as err:
        train_hrnet.main(args)
    assert str(missing) in str(err.value)
    assert f"python run/train_lifter.py --cfg {CFG} --model_3d iganet" in str(err.value)


def test_unknown_lifter_lists_valid_names(env, capsys):
    from lib.utils.errors import run_cli
    for main in (train_hrnet.main, valid_hrnet.main, train_lifter.main):
        with pytest.raises(model_3d.UnknownLifterError) as err:
            main(["--cfg", CFG, "--model_3d", "sb,nosuch"])
        assert "nosuch" in str(err.value) and "videopose" in str(err.value) and "mixste" in str(err.value)
        assert "CUSTOM_IMPORTS" in str(err.value)           # where a lifter of one's own comes from
        capsys.readouterr()
        assert run_cli(main, ["--cfg", CFG, "--model_3d", "sb,nosuch"]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_bad_config_key_is_named(env):
    with pytest.raises(KeyError, match="TRAIN.NO_SUCH_KEY"):
        train_hrnet.main(["--cfg", CFG, "TRAIN.NO_SUCH_KEY", "1"])
    with pytest.raises(BadValueError, match="TRAIN.FINETUNE"):
        train_hrnet.main(["--cfg", CFG, "--finetune"])          # --finetune needs TRAIN.FINETUNE


def test_train_lifter_refuses_to_overwrite_weights(env, capsys):
    """Re-running train_lifter used to replace trained weights silently."""
    from lib.engine.lifter_trainer import WeightsExistError
    from lib.utils.errors import run_cli
    sb = env["base"] / "sb.pth"
    before = sb.read_bytes()
    args = ["--cfg", CFG, "--model_3d", "sb", "--epochs", "1", "OUTPUT_DIR", str(env["base"] / "again"),
            "LIFTER_TRAIN.MAX_STEPS_PER_EPOCH", "1"] + env["common"]
    with pytest.raises(WeightsExistError, match="--overwrite"):
        train_lifter.main(args)
    assert sb.read_bytes() == before and not (env["base"] / "again").exists()   # refused before training
    capsys.readouterr()
    assert run_cli(train_lifter.main, args) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and str(sb) in lines[0] and f"{sb}.bak" in lines[0]
    # the explicit flag replaces it and keeps the previous file as <name>.bak
    res = train_lifter.main(args + ["--overwrite"])
    assert res["path"] == sb and (env["base"] / "sb.pth.bak").read_bytes() == before
    assert sb.read_bytes() != before
    torch.load(sb, weights_only=True)
    (env["base"] / "sb.pth.bak").replace(sb)   # leave the module's lifter as the other tests expect it
