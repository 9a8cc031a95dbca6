"""Plug-and-play from the commands: a detector and a lifter registered by a module outside the
repository (CUSTOM_IMPORTS) are used by name in run/train_lifter.py, run/train_hrnet.py,
run/valid_hrnet.py and a tiny reproduction pipeline, each run as a separate process from the
command line, as a user would (docs/api.md#from-the-command-line-custom_imports)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, make_tiny_h36m

PLUGIN = '''
"""A user's own networks: registered here, named in CUSTOM_IMPORTS."""
import torch
import torch.nn as nn
from model_2d import register_pose_net
from model_3d import register_lifter


class ToyDetector(nn.Module):
    def __init__(self, num_joints):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.Conv2d(16, num_joints, 3, 2, 1))

    def forward(self, x):               # (N, 3, H, W) -> (N, J, H/4, W/4)
        return self.net(x)


@register_pose_net("toy_det")
def build_toy_detector(cfg):
    return ToyDetector(cfg.MODEL.NUM_JOINTS)


class ToyLifter(nn.Module):
    """No output_layer attribute, and a frozen parameter of its own, which training must leave alone."""

    def __init__(self, num_joints):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(1), nn.Linear(2 * num_joints, 64), nn.ReLU(),
                                  nn.Linear(64, 3 * num_joints))
        self.gain = nn.Parameter(torch.tensor(0.75), requires_grad=False)
        self.num_joints = num_joints

    def forward(self, x):               # (N, J, 2) screen coordinates -> (N, J, 3) metres
        return (self.gain * self.body(x)).reshape(x.shape[0], self.num_joints, 3)


@register_lifter("toy_mlp", normalization="screen", layout="joints")
def build_toy_lifter(num_joints):
    return ToyLifter(num_joints)
'''


def _run(args, cwd, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    proc = subprocess.run([sys.executable] + [str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A user's folder (outside the repository) with the plug-in module, a detector config and data."""
    home = tmp_path_factory.mktemp("user")
    (home / "toy_plugins.py").write_text(PLUGIN)
    data = make_tiny_h36m(home / "data", seed=3, frames_per_seq=2)
    det_cfg = home / "toy_det.yaml"
    det_cfg.write_text(yaml.safe_dump({"_BASE_": str(ROOT / "experiments/demo/tiny_96x128.yaml"),
                                       "MODEL": {"NAME": "toy_det"}, "CUSTOM_IMPORTS": ["toy_plugins"]}))
    common = ["DATASET.ROOT", str(data), "USE_CUDA", "False", "WORKERS", "0", "PRINT_FREQ", "1",
              "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "2"]
    return {"home": home, "data": data, "cfg": det_cfg, "common": common}


def test_plugins_train_validate_and_run_the_pipeline_from_the_commands(user):
    home, cfg, common = user["home"], user["cfg"], user["common"]
    weights = home / "toy_mlp.pth"
    # 1. the lifter trains with the default recipe (it has none) and keeps its frozen parameter
    _run([ROOT / "run/train_lifter.py", "--cfg", cfg, "--model_3d", "toy_mlp", "--epochs", "2", "--batch_size", "8",
          "MODEL_3D.WEIGHTS.TOY_MLP", weights, "OUTPUT_DIR", home / "out"] + common, home)
    saved = torch.load(weights, weights_only=True)
    assert saved["name"] == "toy_mlp" and saved["state_dict"]["gain"].item() == 0.75
    assert "the default recipe" in saved["config"]["recipe"]["source"]
    # 2. the detector trains guided by it together with a built-in lifter, by name
    sb = home / "sb.pth"
    _run([ROOT / "run/train_lifter.py", "--cfg", cfg, "--model_3d", "sb", "--epochs", "1", "--batch_size", "8",
          "MODEL_3D.WEIGHTS.SB", sb, "OUTPUT_DIR", home / "out"] + common, home)
    lifters = ["MODEL_3D.WEIGHTS.TOY_MLP", weights, "MODEL_3D.WEIGHTS.SB", sb]
    _run([ROOT / "run/train_hrnet.py", "--cfg", cfg, "--epochs", "0", "--loss_3d", "--model_3d", "toy_mlp,sb",
          "OUTPUT_DIR", home / "runs"] + common + lifters, home)
    (run,) = [p.parent for p in (home / "runs").rglob("model_best.pth")]
    history = json.loads((run / "history.json").read_text())
    assert history["lifters"] == ["sb", "toy_mlp"]          # the registry's order: built-ins first
    assert set(history["epochs"][0]["valid"]["per_lifter"]) == {"sb", "toy_mlp"}
    assert (run / "config.yaml").read_text().count("toy_plugins") == 1
    # 3. validation with the user's lifter alone
    _run([ROOT / "run/valid_hrnet.py", "--cfg", cfg, "--model_dir", run, "--model_3d", "toy_mlp"] + common + lifters,
         home)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["lifters"] == ["toy_mlp"] and metrics["mpjpe"] > 0
    # 4. a tiny pipeline whose preset names the module and the lifter (trained, guiding, reported)
    preset = home / "preset.yaml"
    preset.write_text(yaml.safe_dump({
        "OUTPUT_DIR": str(home / "pipe"), "SEED": 1, "CUSTOM_IMPORTS": ["toy_plugins"],
        "DATASET": {"DATASET": "h36m", "ROOT": str(user["data"])},
        "PIPELINE": {"DETECTOR_CFG": str(cfg), "LIFTERS": ["toy_mlp"], "LIFTER_EPOCHS": [1], "SINGLE": ["toy_mlp"],
                     "LIFTER_OPTS": ["LIFTER_TRAIN.BATCH_SIZE", "8"], "PRETRAIN_EPOCHS": 0, "FINETUNE_EPOCHS": 0,
                     "OPTS": common[2:]}}))
    _run([ROOT / "run/reproduce.py", "--preset", preset, "--gpu_id", "-1"], home, timeout=400)
    report = json.loads((home / "pipe" / "report.json").read_text())
    assert report["lifters"] == ["toy_mlp"] and [r["name"] for r in report["runs"]] == ["2d_only", "single_toy_mlp"]
    assert report["runs"][1]["guided_by"] == ["toy_mlp"] and report["runs"][1]["mpjpe"]["toy_mlp"] > 0


def test_a_misspelt_plugin_lifter_is_one_line(user):
    """Without its module, or misspelt, the lifter's name is refused with one line that says where
    lifters come from; a module that cannot be imported is named."""
    base = [ROOT / "run/train_hrnet.py", "--cfg", ROOT / "experiments/demo/tiny_96x128.yaml", "--loss_3d"]
    for extra, expect in ((["--model_3d", "toy_mlp"], "CUSTOM_IMPORTS"),
                          (["--model_3d", "sb", "MODEL_3D.WEIGHTS.TOY_MPL", "x.pth", "CUSTOM_IMPORTS", "['toy_plugins']"],
                           "MODEL_3D.WEIGHTS.TOY_MPL"),
                          (["--model_3d", "sb", "CUSTOM_IMPORTS", "['no_such_module']"], "no_such_module")):
        env = dict(os.environ, PYTHONPATH="")
        proc = subprocess.run([sys.executable] + [str(a) for a in base + extra], cwd=user["home"], env=env,
                              capture_output=True, text=True, timeout=120)
        lines = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
        assert proc.returncode == 2 and len(lines) == 1 and expect in lines[0], proc.stderr[-2000:]
