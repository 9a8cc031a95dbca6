"""Lifters trained as their own code trains them (docs/weights.md#training-the-lifters).

* frozen parameters stay frozen: IGANet's mixing scalars (0.5, 0.8; ``requires_grad=False`` in its
  model) and the frozen parts of a user's registered lifter are unchanged by training, while the
  trainable parameters move;
* MixSTE's training network has drop-path 0.1 (rates ``linspace(0, 0.1, depth)``, as its run.py
  builds ``model_pos_train``); the evaluation network built from the saved checkpoint has none;
* MixSTE's loss is the joint-weighted MPJPE, and one training step back-propagates it scaled by its
  own value (run.py's ``loss.backward(loss.clone().detach())``): checked against float64 values
  computed here, in one process and as the two ranks of a torchrun split.
"""
import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn as nn

import model_3d
from lib.config import get_cfg
from lib.core.skeleton import H36M
from lib.engine import distributed as ddp
from lib.engine import lifter_trainer as lt
from model_3d.iganet.model import DropPath
from run import train_lifter
from conftest import make_tiny_h36m

CFG = "experiments/demo/tiny_96x128.yaml"
# MixSTE run.py's w_mpjpe for Human3.6M, typed from its source
H36M_WEIGHTS = (1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4)
MIX_SIZES = ["MODEL_3D.MIXSTE.DIM", "16", "MODEL_3D.MIXSTE.DEPTH", "4", "MODEL_3D.MIXSTE.HEADS", "4"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("fidelity")
    root = make_tiny_h36m(base / "data", seed=5, frames_per_seq=4, image_size=64)
    return base, root


def _train(base, root, name, out, *opts):
    return train_lifter.main(["--cfg", CFG, "--model_3d", name, "--weights", str(out), "DATASET.ROOT", str(root),
                              "OUTPUT_DIR", str(base / "out"), "USE_CUDA", "False", "SEED", "0",
                              "LIFTER_TRAIN.EPOCHS", "2", "LIFTER_TRAIN.BATCH_SIZE", "8",
                              "LIFTER_TRAIN.MAX_STEPS_PER_EPOCH", "2", *opts])


def _initial_net(name, arch=None, seed=0):
    """The network the trainer starts from: it seeds torch with SEED before building it."""
    torch.manual_seed(seed)
    return model_3d.build_lifter_net(name, 17, arch)


# ----------------------------------------------------------------------------------------------
# frozen parameters

def test_iganet_mixing_scalars_are_not_trained(tiny):
    base, root = tiny
    out = base / "iganet.pth"
    _train(base, root, "iganet", out, "MODEL_3D.IGANET.LAYERS", "2", "MODEL_3D.IGANET.CHANNEL", "32")
    state = torch.load(out, weights_only=True)["state_dict"]
    start = _initial_net("iganet", {"layers": 2, "channel": 32}).state_dict()
    for i in range(2):
        # float32 0.5 and 0.8, bit for bit, as IGANet's model sets them
        assert state[f"IGANet.blocks.{i}.s_gcn2attn"].tolist() == [np.float32(0.5)]
        assert state[f"IGANet.blocks.{i}.s_attn2gcn"].tolist() == [np.float32(0.8)]
        assert not start[f"IGANet.blocks.{i}.s_gcn2attn"].requires_grad
    # the trainable ones did train (the encoder is not touched by the mean-pose initialisation)
    assert not torch.equal(state["encoder.fc1.weight"], start["encoder.fc1.weight"])
    assert not torch.equal(state["IGANet.blocks.0.GCN_Block1.conv1d.weight"],
                           start["IGANet.blocks.0.GCN_Block1.conv1d.weight"])
    # and the network loads with its scalars frozen again
    lifter = model_3d.build_lifter("iganet", 17, weights=out)
    assert lifter.trainable_names and not any("s_gcn2attn" in n or "s_attn2gcn" in n for n in lifter.trainable_names)


class _PartlyFrozen(nn.Module):
    """(N, J, 2) -> (N, J, 3): a frozen embedding weight and gain, trainable bias and output layer."""

    def __init__(self, num_joints, freeze_output=False):
        super().__init__()
        self.embed = nn.Linear(2 * num_joints, 24)
        self.embed.weight.requires_grad_(False)
        self.gain = nn.Parameter(torch.tensor(0.7), requires_grad=False)
        self.hidden = nn.Linear(24, 24)
        self.out = nn.Linear(24, 3 * num_joints)
        if freeze_output:
            self.out.requires_grad_(False)

    def forward(self, x):
        n, j, _ = x.shape
        h = torch.relu(self.embed(x.reshape(n, -1))) * self.gain
        return self.out(torch.relu(self.hidden(h))).reshape(n, j, 3)


@pytest.fixture
def partly_frozen():
    names = ("partly_frozen_test", "frozen_output_test")
    model_3d.register_lifter(names[0], normalization="screen", layout="joints", override=True)(
        lambda num_joints: _PartlyFrozen(num_joints))
    model_3d.register_lifter(names[1], normalization="screen", layout="joints", override=True)(
        lambda num_joints: _PartlyFrozen(num_joints, freeze_output=True))
    try:
        yield names
    finally:
        for name in names:
            model_3d.LIFTERS.pop(name, None)
            model_3d.LIFTER_RECIPES.pop(name, None)


def test_registered_lifter_keeps_its_frozen_parameters(tiny, partly_frozen):
    base, root = tiny
    for name in partly_frozen:
        out = base / f"{name}.pth"
        res = _train(base, root, name, out)
        assert model_3d.get_recipe(name)["loss"] == "mpjpe" and len(res["history"]["epochs"]) == 2
        start = _initial_net(name).state_dict()
        trained = model_3d.build_lifter(name, 17, weights=out).net.state_dict()
        for key in ("embed.weight", "gain"):
            assert torch.equal(trained[key], start[key]), key
        for key in ("embed.bias", "hidden.weight", "hidden.bias"):
            assert not torch.equal(trained[key], start[key]), key
        if name == "frozen_output_test":
            # a frozen output layer gets no mean-pose initialisation either
            assert res["random_init_mm"] == res["untrained_mm"]
            for key in ("out.weight", "out.bias"):
                assert torch.equal(trained[key], start[key]), key
        else:
            assert res["untrained_mm"] < res["random_init_mm"]
            assert not torch.equal(trained["out.weight"], start["out.weight"])


# ----------------------------------------------------------------------------------------------
# MixSTE's drop-path

def _random_data(n, seed, num_joints=17):
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([[64.0, 48.0]]).repeat(n, 1)
    x = 8 + torch.rand(n, num_joints, 2, generator=g) * torch.tensor([48.0, 32.0])
    y = (torch.rand(n, num_joints, 3, generator=g) - 0.5) * 80.0          # cm
    y[:, 0] = 0.0
    return x, size, y


def _drop_paths(net):
    return [blk.drop_path for blk in list(net.STEblocks) + list(net.TTEblocks)]


def test_mixste_trains_with_drop_path_and_is_evaluated_without(tiny):
    base, root = tiny
    cfg = get_cfg()
    cfg.merge_from_list(["DATASET.ROOT", str(root), "USE_CUDA", "False", "SEED", "0"] + MIX_SIZES)
    x, size, y = _random_data(64, seed=1)
    data = lt.LifterData(x, size, y, None, x, size, y, None, None, root)
    spec, recipe = model_3d.get_spec("mixste"), model_3d.get_recipe("mixste")
    lifter, _, _, _ = lt._build_trainable(cfg, "mixste", spec, recipe, data, True, 8, torch.device("cpu"),
                                          logging.getLogger("test"))
    net = lifter.net
    # MixSTE2(..., drop_path_rate=0.1): block i of each kind drops with rate 0.1 * i / (depth - 1)
    want = [0.1 * i / 3 for i in range(4)] * 2
    paths = _drop_paths(net)
    assert isinstance(paths[0], nn.Identity) and isinstance(paths[4], nn.Identity)
    for p, rate in zip(paths, want):
        if rate:
            assert isinstance(p, DropPath) and p.p == pytest.approx(rate, rel=1e-6)
    assert lifter.arch == {"dim": 16, "depth": 4, "heads": 4}      # what the checkpoint will record

    inp = lifter.normalize_input(x, size).unsqueeze(1)
    with torch.no_grad():
        net.eval()
        ref = net(inp)
        net.train()                      # no dropout in MixSTE2: drop-path is the only random layer
        torch.manual_seed(11)
        a = net(inp)
        torch.manual_seed(12)
        b = net(inp)
        torch.manual_seed(11)
        a_again = net(inp)
    assert torch.equal(a, a_again) and not torch.equal(a, b) and not torch.allclose(a, ref)

    # the saved checkpoint -> the evaluation network: no drop-path, train mode = eval mode
    out = base / "mixste.pth"
    _train(base, root, "mixste", out, *MIX_SIZES)
    assert torch.load(out, weights_only=True)["arch"] == {"dim": 16, "depth": 4, "heads": 4}
    ev = model_3d.build_lifter("mixste", 17, weights=out).net
    assert all(isinstance(p, nn.Identity) for p in _drop_paths(ev))
    assert not any(isinstance(m, DropPath) for m in ev.modules())
    with torch.no_grad():
        ev.eval()
        e1 = ev(inp)
        ev.train()
        torch.manual_seed(11)
        e2 = ev(inp)
    assert torch.equal(e1, e2)


# ----------------------------------------------------------------------------------------------
# MixSTE's loss and its loss-scaled backward, against float64 values computed here

def test_mixste_joint_weights_are_run_py_s():
    weights = model_3d.get_recipe("mixste")["joint_weights"]
    assert tuple(weights["h36m"]) == H36M_WEIGHTS
    # Panoptic: the weight of the same body joint in Human3.6M's list, by name
    h36m_of = {"neck": "thorax", "nose": "neck_nose", "mid_hip": "pelvis", "l_shoulder": "l_shoulder",
               "l_elbow": "l_elbow", "l_wrist": "l_wrist", "l_hip": "l_hip", "l_knee": "l_knee",
               "l_ankle": "l_ankle", "r_shoulder": "r_shoulder", "r_elbow": "r_elbow", "r_wrist": "r_wrist",
               "r_hip": "r_hip", "r_knee": "r_knee", "r_ankle": "r_ankle"}
    h36m_names = ("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax",
                  "neck_nose", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist")
    from lib.core.skeleton import PANOPTIC
    by_name = dict(zip(h36m_names, H36M_WEIGHTS))
    assert tuple(weights["panoptic"]) == tuple(by_name[h36m_of[j]] for j in PANOPTIC.joint_names)
    assert tuple(weights["panoptic"]) == (1, 1, 1, 1.5, 4, 4, 1, 2.5, 2.5, 1.5, 4, 4, 1, 2.5, 2.5)


def _tiny_mixste(seed=0):
    """A small MixSTE lifter without drop-path: its train-mode forward is deterministic."""
    torch.manual_seed(seed)
    lifter = model_3d.build_lifter("mixste", 17, arch={"dim": 16, "depth": 2, "heads": 4})
    return lifter, lifter.unfreeze()


def _screen64(x, size):
    x, size = x.double(), size.double()
    w, h = size[:, :1, None], size[:, 1:, None]
    return torch.cat([x[..., :1] / w * 2 - 1, x[..., 1:] / w * 2 - h / w], dim=-1)


def _weighted_mpjpe64(net64, x, size, y_cm, weights, valid=None):
    """sum_{n,j} w_j |pred_nj - y_nj| / (N J) in float64 (over the valid joints only, with ``valid``)."""
    pred = net64(_screen64(x, size).unsqueeze(1))[:, 0]
    err = torch.sqrt(((pred - y_cm.double() / 100.0) ** 2).sum(-1)) * torch.tensor(weights, dtype=torch.float64)
    if valid is None:
        return err.sum() / err.numel()
    return (err * valid.double()).sum() / valid.double().sum()


def test_weighted_mpjpe_by_hand():
    lifter, _ = _tiny_mixste()
    x, size, y = _random_data(2, seed=2)
    loss = lt._TrainLoss(lifter, "weighted_mpjpe", 17, H36M_WEIGHTS)
    lifter.net.train()
    net64 = copy.deepcopy(lifter.net).double()
    with torch.no_grad():
        got = loss(x, size, y)
        want = _weighted_mpjpe64(net64, x, size, y, H36M_WEIGHTS)
        # one sample's weighted sum written out joint by joint
        pred = net64(_screen64(x[:1], size[:1]).unsqueeze(1))[0, 0]
        one = sum(w * float(torch.linalg.norm(pred[j] - y[0, j].double() / 100.0)) for j, w in enumerate(H36M_WEIGHTS))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert one / 17 == pytest.approx(_weighted_mpjpe64(net64, x[:1], size[:1], y[:1], H36M_WEIGHTS).item(), rel=1e-12)
    # the plain MPJPE differs: the weights are applied
    assert lt._TrainLoss(lifter, "mpjpe", 17)(x, size, y).item() != pytest.approx(got.item(), rel=1e-3)
    valid = torch.ones(2, 17)
    valid[0, [3, 12]] = 0.0
    valid[1, 16] = 0.0
    with torch.no_grad():
        assert loss(x, size, y, valid).item() == pytest.approx(
            _weighted_mpjpe64(net64, x, size, y, H36M_WEIGHTS, valid).item(), rel=1e-5)


class _RecordingOptimizer:
    """Stands in for the optimizer of one epoch: keeps each step's gradients, changes nothing."""

    def __init__(self, params):
        self.params = list(params)
        self.param_groups = [{"params": self.params, "lr": 0.0}]
        self.grads = []

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self):
        self.grads.append([p.grad.detach().clone() for p in self.params])


def _one_step_grads(lifter, params, recipe, x, size, y, world=1, rank=0):
    data = lt.LifterData(x, size, y, None, x, size, y, None, None, None)
    sched = lt._Schedule(recipe, 1e-3, x.shape[0], 1, 1, 1, False)
    opt = _RecordingOptimizer(params)
    step_loss = lt._TrainLoss(lifter, recipe["loss"], 17, recipe["joint_weights"]["h36m"])
    gen = torch.Generator().manual_seed(0)
    lt._train_epoch(step_loss, lifter, opt, data, sched, gen, lt._flip_perm(H36M), 0, world, rank,
                    torch.device("cpu"))
    assert len(opt.grads) == 1
    return opt.grads[0]


def _reference_grads(lifter, params, x, size, y, scaled):
    """(L, dL/dθ x (L if scaled else 1)) in float64 with torch.autograd on a float64 copy."""
    net64 = copy.deepcopy(lifter.net).double().train()
    index = {id(p): n for n, p in lifter.net.named_parameters()}
    named64 = dict(net64.named_parameters())
    p64 = [named64[index[id(p)]] for p in params]
    loss = _weighted_mpjpe64(net64, x, size, y, H36M_WEIGHTS)
    grads = torch.autograd.grad(loss, p64)
    return loss.detach(), [g * (loss.detach() if scaled else 1.0) for g in grads]


def _assert_grads_close(got, want):
    for g, w in zip(got, want):
        scale = float(w.abs().max())
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-5 * scale + 1e-12)


@pytest.mark.parametrize("scaled", [True, False])
def test_one_step_gradient_is_loss_times_dloss(scaled):
    lifter, params = _tiny_mixste()
    x, size, y = _random_data(2, seed=3)
    recipe = model_3d.get_recipe("mixste")
    recipe["loss_scaled_backward"] = scaled
    got = _one_step_grads(lifter, params, recipe, x, size, y)
    loss, want = _reference_grads(lifter, params, x, size, y, scaled)
    assert 0.05 < loss.item() < 5.0                 # a factor far from 1: the two cases differ
    _assert_grads_close(got, want)


def test_loss_scaled_gradient_under_torchrun_is_the_global_batch_one(monkeypatch):
    # The two ranks of a 2-process run, one after the other: rank r takes its part of the global batch
    # of 5 (3 and 2 samples), weights its loss by world x share and scales by the global-batch loss,
    # which all_reduce_sum makes from the ranks' share-weighted losses. DDP then averages the
    # gradients: that mean must be L x dL/dθ of the whole batch.
    lifter, params = _tiny_mixste()
    x, size, y = _random_data(5, seed=4)
    recipe = model_3d.get_recipe("mixste")
    loss, want = _reference_grads(lifter, params, x, size, y, scaled=True)
    sent = []

    def all_reduce_sum(t):
        sent.append(float(t))
        return torch.as_tensor(loss.item(), dtype=t.dtype)

    monkeypatch.setattr(ddp, "all_reduce_sum", all_reduce_sum)
    per_rank = [_one_step_grads(lifter, params, recipe, x, size, y, world=2, rank=r) for r in range(2)]
    assert sum(sent) == pytest.approx(loss.item(), rel=1e-5)      # the ranks' parts add up to L
    _assert_grads_close([(a + b) / 2 for a, b in zip(*per_rank)], want)
