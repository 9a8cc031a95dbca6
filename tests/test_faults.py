"""Faults during a run: the non-finite guard before any index arithmetic, a
validation that is never "best" when it should not be, --resume with changed options, and the
run log's last line saying why the run stopped."""
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from lib.core.heatmap import decode_argmax, decode_soft
from lib.engine import trainer
from lib.engine.resume import ResumeError
from lib.utils.errors import UserError
from run import train_hrnet, valid_hrnet
from conftest import make_tiny_h36m

CFG = "experiments/demo/tiny_96x128.yaml"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    data = make_tiny_h36m(base / "data", seed=3, frames_per_seq=2, image_size=128)
    common = ["DATASET.ROOT", str(data), "USE_CUDA", "False", "TRAIN.BATCH_SIZE_PER_GPU", "4",
              "TEST.BATCH_SIZE_PER_GPU", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "2", "PRINT_FREQ", "5",
              "TRAIN.LR_BUMP_EPOCH", "-1", "MODEL_3D.WEIGHTS.SB", str(base / "sb.pth")]
    # an untrained sb lifter is enough here (its numbers are not checked); saves training one
    import model_3d
    from lib.datasets import index as idx
    model_3d.save_lifter_checkpoint(base / "sb.pth", model_3d.build_lifter("sb", 17, stats=idx.load_stats(data)),
                                    name="sb", num_joints=17, dataset="h36m")
    return {"base": base, "common": common}


def _args(env, out, *extra):
    return ["--cfg", CFG, "OUTPUT_DIR", str(env["base"] / out)] + env["common"] + list(extra)


def _log(run_dir) -> str:
    logs = sorted(Path(run_dir).glob("*_train.log"), key=os.path.getmtime)
    return logs[-1].read_text()


def _last_line(run_dir) -> str:
    return _log(run_dir).strip().splitlines()[-1]


def _hook_detector(monkeypatch, poison):
    """Make build_detector's model pass its output through ``poison(output, training, calls)``."""
    real = trainer.build_detector
    calls = {"train": 0, "eval": 0}

    def build(cfg, log=None):
        model = real(cfg, log)

        def hook(module, inputs, output):
            mode = "train" if module.training else "eval"
            calls[mode] += 1
            return poison(output, module.training, dict(calls))
        model.register_forward_hook(hook)
        return model
    monkeypatch.setattr(trainer, "build_detector", build)


# ----------------------------------------------------------------------------- decoding
def test_decoding_nan_heatmaps_gives_nan_joints_not_an_index_error():
    # The quarter-pixel shift once did NaN.long() = INT64_MIN and crashed gather().
    heat = torch.zeros(2, 3, 8, 10)
    heat[0, :, 4, 5] = 1.0
    heat[0, :, 4, 6] = 0.5                       # right neighbour higher -> x + 0.25
    heat[0, :, 3, 5] = 0.2                       # upper neighbour higher -> y - 0.25
    heat[1] = float("nan")
    heat[0, 2, 0, 0] = float("inf")
    center, scale = torch.tensor([[5.0, 4.0]] * 2), torch.tensor([[0.05, 0.05]] * 2)  # 200*0.05/10 = 1 px/hm px
    for coords in (decode_argmax(heat, center, scale, post_process=True)[0],
                   decode_soft(heat, center, scale, beta=100.0, post_process=True)):
        assert torch.isnan(coords[1]).all()
        assert torch.isnan(coords[0, 2]).all()         # a map holding inf has no meaningful peak
    coords, _ = decode_argmax(heat, center, scale, post_process=True)
    # argmax (5, 4) + shift (0.25, -0.25), then x = 5 + 1 * (x_hm - 5), y = 4 + 1 * (y_hm - 4)
    assert coords[0, :2].tolist() == [[5.25, 3.75], [5.25, 3.75]]

    # finite but diverged maps (peak 1e9): beta * (h - peak) rounded to about +1e4 at the peak, so
    # exp() overflowed and the soft-argmax gave NaN; the peak pixel (0, 0) is the answer
    big = torch.zeros(1, 1, 8, 10)
    big[0, 0, 0, 0] = 1e9
    assert decode_soft(big, center[:1], scale[:1], 100.0, post_process=False)[0, 0].tolist() == [0.0, 0.0]


def test_is_new_best_rules():
    assert not trainer.is_new_best(0.0, -1.0, True)          # PDJ 0 beat the original's initial -1
    assert not trainer.is_new_best(0.0, 0.0, True)
    assert trainer.is_new_best(12.5, -1.0, True) and trainer.is_new_best(12.5, 10.0, True)
    assert not trainer.is_new_best(90.0, 10.0, True, non_finite=1)
    assert trainer.is_new_best(80.0, math.inf, False)
    assert not trainer.is_new_best(80.0, math.inf, False, non_finite=3)
    assert not trainer.is_new_best(float("nan"), math.inf, False)


# ----------------------------------------------------------------------------- items 3 + 5: training
def test_nan_heatmaps_in_guided_training_raise_typed_error_and_log_it(env, monkeypatch):
    def poison(output, training, calls):
        # epoch 0, step 1; POST_PROCESS is on in the tiny config, so the decode does index arithmetic
        return output * float("nan") if training and calls["train"] == 2 else output
    _hook_detector(monkeypatch, poison)
    args = _args(env, "nanmaps", "--epochs", "1", "--loss_3d", "--model_3d", "sb", "TEST.POST_PROCESS", "True")
    with pytest.raises(trainer.NonFiniteLossError) as err:
        train_hrnet.main(args)
    assert isinstance(err.value, UserError)              # run_cli prints it as one line
    assert (err.value.epoch, err.value.step) == (0, 1)
    msg = str(err.value)
    assert "epoch 0, step 1" in msg and "non-finite heatmaps" in msg and "total=nan" in msg
    run = next((env["base"] / "nanmaps").rglob("config.yaml")).parent
    last = _last_line(run)
    assert "run stopped: non-finite loss during epoch 0" in last and "total=nan" in last


def test_validation_pdj0_or_non_finite_is_never_best(env, monkeypatch):
    def poison(output, training, calls):
        if training:
            return output
        if calls["eval"] == 1:                   # epoch 0: finite but diverged -> all joints in a corner, PDJ 0
            out = torch.zeros_like(output)
            out[..., 0, 0] = 1e9
            return out
        return output * float("nan")             # epoch 1: NaN predictions (crashed on .long() before)
    _hook_detector(monkeypatch, poison)
    res = train_hrnet.main(_args(env, "diverged", "--epochs", "1"))
    run = Path(res["run_dir"])
    epochs = res["history"]["epochs"]
    assert [e["valid"]["pdj"] for e in epochs] == [0.0, 0.0]
    assert epochs[0]["valid"]["non_finite_samples"] == 0 and epochs[1]["valid"]["non_finite_samples"] > 0
    assert [e["best"] for e in epochs] == [False, False]
    assert not (run / "model_best.pth").exists() and (run / "checkpoint.pth").is_file()
    log = _log(run)
    assert "non-finite heatmaps or joints" in log and "no model_best.pth written" in log
    assert "run stopped: finished after epoch 1" in _last_line(run)


def test_valid_hrnet_on_nan_weights_reports_instead_of_crashing(env, tmp_path, capsys):
    import model_2d
    from lib.config import load_cfg
    net = model_2d.build_pose_net(load_cfg(CFG, []))
    state = net.state_dict()
    for k, v in state.items():
        if v.is_floating_point():
            v.fill_(float("nan"))
    torch.save(state, tmp_path / "model_best.pth")
    payload = valid_hrnet.main(["--cfg", CFG, "--model_dir", str(tmp_path)] + env["common"])
    assert payload["non_finite_samples"] == payload["num_samples"] > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["pdj"] == 0.0 and metrics["mpjpe"] is None and metrics["p_mpjpe"] is None   # NaN -> null
    assert metrics["non_finite_samples"] == payload["num_samples"]
    assert "non-finite heatmaps or joints" in capsys.readouterr().err


# ----------------------------------------------------------------------------- --resume
def test_resume_applies_safe_changes_and_refuses_the_others(env):
    first = train_hrnet.main(_args(env, "res", "--epochs", "0"))
    run = Path(first["run_dir"])
    config_before = (run / "config.yaml").read_text()
    ckpt_before = (run / "checkpoint.pth").read_bytes()

    # an option that changes the run: refused with the difference, nothing written
    with pytest.raises(ResumeError) as err:
        train_hrnet.main(_args(env, "res", "--epochs", "1", "--resume", "SEED", "7", "TRAIN.LR", "0.5"))
    assert "SEED: 42 -> 7" in str(err.value) and "TRAIN.LR" not in str(err.value).split("Options that")[0]
    assert (run / "config.yaml").read_text() == config_before
    assert (run / "checkpoint.pth").read_bytes() == ckpt_before

    # an option that renames the run folder: refused, naming the folder expected and the one that exists
    with pytest.raises(ResumeError) as err:
        train_hrnet.main(_args(env, "res", "--epochs", "1", "--resume", "LOSS.USE_TARGET_WEIGHT", "False"))
    msg = str(err.value)
    assert str(run.parent / "only_loss_2d_notw" / "checkpoint.pth") in msg and str(run) in msg
    assert not (run.parent / "only_loss_2d_notw").exists()

    # safe: a new LR and more epochs; the LR must reach the restored optimizer
    res = train_hrnet.main(_args(env, "res", "--epochs", "1", "--resume", "TRAIN.LR", "0.5"))
    assert [e["lr"] for e in res["history"]["epochs"]] == [pytest.approx(1e-3), 0.5]   # param_groups[0]["lr"]
    state = torch.load(run / "checkpoint.pth", weights_only=True)
    assert [g["lr"] for g in state["optimizer"]["param_groups"]] == [0.5]
    assert state["scheduler"]["base_lrs"] == [0.5]
    assert res["history"]["resumes"] == [{"epoch": 1, "changed": {"TRAIN.EPOCHS": [0, 1], "TRAIN.LR": [0.001, 0.5],
                                                                   "TRAIN.RESUME": [False, True]}}]
    text = (run / "config.yaml").read_text()
    assert "LR: 0.5" in text and "# --resume at epoch 1 changed: TRAIN.EPOCHS: 0 -> 1, TRAIN.LR: 0.001 -> 0.5" in text
    assert "--resume with changed options (applied)" in _log(run)


# ----------------------------------------------------------------------------- the log's last line
@pytest.mark.parametrize("how", ["sigint", "sigterm", "error"])
def test_log_names_why_the_run_stopped(env, monkeypatch, how):
    real_epoch = trainer.train_one_epoch

    def stop_in_epoch_0(epoch, *a, **k):
        if epoch == 0:
            if how == "sigint":
                raise KeyboardInterrupt
            if how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)      # a real signal, through the trainer's handler
            raise OSError(28, "No space left on device")
        return real_epoch(epoch, *a, **k)

    monkeypatch.setattr(trainer, "train_one_epoch", stop_in_epoch_0)
    handler_before = signal.getsignal(signal.SIGTERM)
    args = _args(env, f"stop_{how}", "--epochs", "1")
    with pytest.raises(KeyboardInterrupt if how != "error" else OSError):
        train_hrnet.main(args)
    run = next((env["base"] / f"stop_{how}").rglob("config.yaml")).parent
    last = _last_line(run)
    if how == "error":
        assert "run stopped: error during epoch 0: OSError: [Errno 28] No space left on device" in last
        return
    assert ("SIGTERM" if how == "sigterm" else "SIGINT") in last and "during epoch 0" in last
    command = last.split("Resume with: ", 1)[1]
    assert command.startswith("python run/train_hrnet.py --cfg " + CFG) and command.endswith(" --resume")
    assert signal.getsignal(signal.SIGTERM) == handler_before       # the trainer's handler is gone again


# ----------------------------------------------------------------------------- infer.py
def test_infer_skips_bad_frames_clips_boxes_and_writes_valid_json(tmp_path, caplog):
    import cv2
    import numpy as np
    import model_2d
    import model_3d
    from lib.config import load_cfg
    from run import infer

    cfg = load_cfg(CFG, [])
    torch.manual_seed(0)
    net = model_2d.build_pose_net(cfg)
    run = tmp_path / "run"
    run.mkdir()
    state = net.state_dict()
    state["final_layer.weight"].fill_(float("nan"))      # a diverged detector: NaN heatmaps
    torch.save(state, run / "model_best.pth")
    (run / "config.yaml").write_text(cfg.dump())
    rng = np.random.default_rng(0)
    stats = {"mean_2d": rng.uniform(80, 160, (17, 2)), "std_2d": rng.uniform(10, 30, (17, 2)),
             "mean_3d": rng.normal(0, 20, (17, 3)), "std_3d": rng.uniform(5, 30, (17, 3))}
    lifter = tmp_path / "sb.pth"
    model_3d.save_lifter_checkpoint(lifter, model_3d.build_lifter("sb", 17, stats=stats), name="sb",
                                    num_joints=17, dataset="h36m")

    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("a.png", "c.png", "d.png"):
        cv2.imwrite(str(frames / name), np.full((120, 90, 3), 100, np.uint8))
    (frames / "b.jpg").write_bytes(b"not a jpeg")          # unreadable: aborted the whole run before
    boxes = tmp_path / "boxes.json"
    # a: NaN (rejected -> whole frame), b: its frame is unreadable, c: huge (crashed OpenCV; clipped),
    # d: wholly outside (-> whole frame), then one box too many
    boxes.write_text("[[NaN, 0, 50, 50], [0, 0, 10, 10], [-1e12, -1e12, 1e12, 1e12], [500, 500, 600, 700],"
                     " [1, 1, 5, 5]]")
    out = tmp_path / "out"
    with caplog.at_level("WARNING"):
        summary = infer.main(["--run_dir", str(run), "--model_3d", "sb", "--lifter_weights", str(lifter),
                              "--input", str(frames), "--boxes", str(boxes), "--out", str(out), "--gpu_id", "-1"])
    assert summary["frames"] == 3 and summary["skipped_frames"] == ["b.jpg"]
    assert (summary["rejected_boxes"], summary["clipped_boxes"], summary["outside_boxes"]) == (1, 1, 1)
    assert summary["unused_boxes"] == 1 and summary["non_finite_frames"] == 3

    def no_nan(token):
        raise AssertionError(f"invalid JSON token {token}")
    recs = [json.loads(line, parse_constant=no_nan) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["image"] for r in recs] == ["a.png", "c.png", "d.png"]
    assert [r["box"] for r in recs] == [[0.0, 0.0, 90.0, 120.0]] * 3     # whole frame / clipped to the image
    assert all(v is None for r in recs for xy in r["joints_2d_px"] + r["joints_3d_m"] for v in xy)
    assert (out / "combined" / "c.png").is_file()                         # drawing survives NaN joints
    text = caplog.text
    for expected in ("cannot read image", "1 unreadable image(s) skipped", "NaN/inf numbers rejected",
                     "1 box(es) reaching outside the image were clipped", "wholly outside",
                     "1 more box(es) than there are frames", "3 frame(s) have non-finite predictions"):
        assert expected in text, expected


def test_config_differences_tolerate_keys_added_since_the_checkpoint():
    from lib.config import get_cfg
    from lib.engine.checkpoint import plain
    from lib.engine.resume import SAFE_RESUME_KEYS, config_differences
    cfg = get_cfg()
    saved = plain(cfg)
    del saved["DATASET"]["MASK_LOW_CONFIDENCE"]           # a checkpoint older than the key
    saved["REMOVED_KEY"] = 1
    assert config_differences(saved, cfg) == {}            # the default value: nothing changed
    cfg.DATASET.MASK_LOW_CONFIDENCE = True
    cfg.TRAIN.LR = 0.5
    assert config_differences(saved, cfg) == {"DATASET.MASK_LOW_CONFIDENCE": (None, True), "TRAIN.LR": (0.001, 0.5)}
    assert "TRAIN.LR" in SAFE_RESUME_KEYS and "DATASET.MASK_LOW_CONFIDENCE" not in SAFE_RESUME_KEYS
