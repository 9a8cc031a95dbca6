"""model_2d: registry, HRNet / PoseResNet structure (official key layout), checkpoint loading.

Shapes: images (N, 3, H, W) -> heatmaps (N, J, H/4, W/4). Expected key names and shapes of the
official HRNet are generated here by an independent enumerator written from docs/weights.md#official-checkpoint-layouts.
"""
import logging

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import ROOT
from lib.config import load_cfg
from lib.utils.errors import UntrustedFileError
import model_2d
from model_2d import (POSE_NETS, CheckpointMismatchError, build_pose_net, init_pretrained,
                      load_pose_checkpoint, register_pose_net)
from model_2d.hrnet import HighResolutionModule, PoseHighResolutionNet, BasicBlock
from model_2d.pose_resnet import PoseResNet

TINY_YAML = ROOT / "experiments/demo/tiny_96x128.yaml"
W32_YAML = ROOT / "experiments/h36m/w32_384x288_adam_lr1e-3.yaml"
W48_YAML = ROOT / "experiments/h36m/w48_384x288_adam_lr1e-3.yaml"
W32_LAYERS = ["conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2", "transition2",
              "stage3", "transition3", "stage4"]


def _small_cfg(name):
    """A CPU-cheap config per registered detector (add one when registering a new network)."""
    if name == "pose_hrnet":
        return load_cfg(str(TINY_YAML))
    if name == "pose_resnet":
        cfg = load_cfg(None, ["MODEL.NAME", "pose_resnet", "MODEL.IMAGE_SIZE", [64, 96],
                              "MODEL.HEATMAP_SIZE", [16, 24]])
        cfg.MODEL.EXTRA.NUM_LAYERS = 50
        return cfg
    if name == "vitpose":
        return load_cfg(str(ROOT / "experiments/demo/vitpose_tiny.yaml"))
    raise AssertionError(f"no small test config for registered detector {name!r}; add one "
                         f"to tests/test_model_2d.py::_small_cfg")


def _light_cfg(name):
    """Like _small_cfg but lighter where that matters for file round trips (ResNet-18 head)."""
    cfg = _small_cfg(name)
    if name == "pose_resnet":
        cfg.MODEL.EXTRA.NUM_LAYERS = 18
        cfg.MODEL.EXTRA.NUM_DECONV_FILTERS = [32, 32, 32]
    return cfg


def _small_net(name, seed=0, light=False):
    torch.manual_seed(seed)
    return build_pose_net(_light_cfg(name) if light else _small_cfg(name))


_CACHE = {}


def _net_cached(name):
    if name not in _CACHE:
        _CACHE[name] = _small_net(name, seed=1)
    return _CACHE[name]


NAMES = sorted(POSE_NETS)


# ----------------------------------------------------------------------------- registry + forward

@pytest.mark.parametrize("name", NAMES)
def test_forward_shape_finite_and_every_parameter_gets_gradient(name):
    cfg = _small_cfg(name)
    net = _net_cached(name).train()
    width, height = cfg.MODEL.IMAGE_SIZE
    x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))
    out = net(x)
    hm_w, hm_h = cfg.MODEL.HEATMAP_SIZE
    assert out.shape == (2, cfg.MODEL.NUM_JOINTS, hm_h, hm_w) == (2, cfg.MODEL.NUM_JOINTS,
                                                                  height // 4, width // 4)
    assert torch.isfinite(out).all()
    net.zero_grad(set_to_none=True)
    out.square().mean().backward()
    no_grad = [n for n, p in net.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert no_grad == []


def test_registry_names_and_alias():
    assert {"pose_hrnet", "pose_resnet"} <= set(POSE_NETS)
    cfg = load_cfg(str(W32_YAML))
    assert cfg.MODEL.NAME == "hrnet"
    assert model_2d.resolve_name("hrnet") == "pose_hrnet"
    cfg = load_cfg(str(TINY_YAML), ["MODEL.NAME", "hrnet"])
    assert isinstance(build_pose_net(cfg), PoseHighResolutionNet)
    assert isinstance(_net_cached("pose_resnet"), PoseResNet)


def test_unknown_name_lists_registered_names():
    cfg = load_cfg(str(TINY_YAML), ["MODEL.NAME", "pose_hrnett"])
    with pytest.raises(KeyError) as err:
        build_pose_net(cfg)
    msg = str(err.value)
    assert "pose_hrnett" in msg and "pose_hrnet" in msg and "pose_resnet" in msg and "hrnet" in msg


def test_register_user_detector_is_built():
    class ToyNet(nn.Module):
        def __init__(self, joints):
            super().__init__()
            self.head = nn.Conv2d(3, joints, 4, stride=4)

        def forward(self, x):
            return self.head(x)

    try:
        @register_pose_net("toy_net_for_test")
        def make_toy(cfg):
            return ToyNet(cfg.MODEL.NUM_JOINTS)

        cfg = load_cfg(str(TINY_YAML), ["MODEL.NAME", "toy_net_for_test"])
        net = build_pose_net(cfg)
        assert isinstance(net, ToyNet)
        assert net(torch.zeros(1, 3, 128, 96)).shape == (1, 17, 32, 24)
        with pytest.raises(KeyError, match="already registered"):
            register_pose_net("toy_net_for_test")(make_toy)
        register_pose_net("toy_net_for_test", override=True)(make_toy)   # explicit replace is fine
    finally:
        POSE_NETS.pop("toy_net_for_test", None)


def test_factory_must_return_module():
    try:
        register_pose_net("not_a_module_for_test")(lambda cfg: "oops")
        cfg = load_cfg(str(TINY_YAML), ["MODEL.NAME", "not_a_module_for_test"])
        with pytest.raises(TypeError, match="not_a_module_for_test"):
            build_pose_net(cfg)
    finally:
        POSE_NETS.pop("not_a_module_for_test", None)


# ----------------------------------------------------------------------------- HRNet structure

def reference_hrnet_shapes(extra, num_joints):
    """Official pose_hrnet state_dict {key: shape}, enumerated from the docs/weights.md#official-checkpoint-layouts
    rules."""
    shapes = {}

    def conv(name, cout, cin, k, bias=False):
        shapes[name + ".weight"] = (cout, cin, k, k)
        if bias:
            shapes[name + ".bias"] = (cout,)

    def bn(name, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{name}.{p}"] = (c,)
        shapes[name + ".num_batches_tracked"] = ()

    def block(prefix, kind, cin, planes):
        if kind == "BASIC":
            conv(prefix + ".conv1", planes, cin, 3)
            bn(prefix + ".bn1", planes)
            conv(prefix + ".conv2", planes, planes, 3)
            bn(prefix + ".bn2", planes)
            out = planes
        else:
            conv(prefix + ".conv1", planes, cin, 1)
            bn(prefix + ".bn1", planes)
            conv(prefix + ".conv2", planes, planes, 3)
            bn(prefix + ".bn2", planes)
            conv(prefix + ".conv3", 4 * planes, planes, 1)
            bn(prefix + ".bn3", 4 * planes)
            out = 4 * planes
        if cin != out:
            conv(prefix + ".downsample.0", out, cin, 1)
            bn(prefix + ".downsample.1", out)
        return out

    conv("conv1", 64, 3, 3)
    bn("bn1", 64)
    conv("conv2", 64, 64, 3)
    bn("bn2", 64)
    if "STAGE1" in extra:
        kind, n1, c1 = extra.STAGE1.BLOCK, extra.STAGE1.NUM_BLOCKS[0], extra.STAGE1.NUM_CHANNELS[0]
    else:
        kind, n1, c1 = "BOTTLENECK", 4, 64
    cin = 64
    for b in range(n1):
        cin = block(f"layer1.{b}", kind, cin, c1)
    pre = [cin]
    for s in (2, 3, 4):
        table = extra[f"STAGE{s}"]
        mult = 4 if table.BLOCK == "BOTTLENECK" else 1
        cur = [c * mult for c in table.NUM_CHANNELS]
        t = f"transition{s - 1}"
        for i, c in enumerate(cur):
            if i < len(pre):
                if c != pre[i]:
                    conv(f"{t}.{i}.0", c, pre[i], 3)
                    bn(f"{t}.{i}.1", c)
            else:
                for k in range(i + 1 - len(pre)):
                    cout = c if k == i - len(pre) else pre[-1]
                    conv(f"{t}.{i}.{k}.0", cout, pre[-1], 3)
                    bn(f"{t}.{i}.{k}.1", cout)
        chans = cur
        for m in range(table.NUM_MODULES):
            p = f"stage{s}.{m}"
            for b in range(table.NUM_BRANCHES):
                cb = chans[b]
                for blk in range(table.NUM_BLOCKS[b]):
                    cb = block(f"{p}.branches.{b}.{blk}", table.BLOCK, cb, table.NUM_CHANNELS[b])
            chans = [c * mult for c in table.NUM_CHANNELS]
            n_out = 1 if (s == 4 and m == table.NUM_MODULES - 1) else table.NUM_BRANCHES
            if table.NUM_BRANCHES > 1:
                for i in range(n_out):
                    for j in range(table.NUM_BRANCHES):
                        if j > i:
                            conv(f"{p}.fuse_layers.{i}.{j}.0", chans[i], chans[j], 1)
                            bn(f"{p}.fuse_layers.{i}.{j}.1", chans[i])
                        elif j < i:
                            for k in range(i - j):
                                cout = chans[i] if k == i - j - 1 else chans[j]
                                conv(f"{p}.fuse_layers.{i}.{j}.{k}.0", cout, chans[j], 3)
                                bn(f"{p}.fuse_layers.{i}.{j}.{k}.1", cout)
        pre = chans
    k = extra.FINAL_CONV_KERNEL
    conv("final_layer", num_joints, pre[0], k, bias=True)
    return shapes


@pytest.fixture(scope="module")
def w32():
    torch.manual_seed(0)
    cfg = load_cfg(str(W32_YAML))
    return cfg, build_pose_net(cfg)


def _shapes(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_hrnet_w32_state_dict_is_the_official_layout(w32):
    cfg, net = w32
    assert _shapes(net) == reference_hrnet_shapes(cfg.MODEL.EXTRA, 17)
    sd = net.state_dict()
    hand = {   # a few names and shapes written out by hand from the official module tree
        "conv1.weight": (64, 3, 3, 3),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.3.conv3.weight": (256, 64, 1, 1),
        "transition1.0.0.weight": (32, 256, 3, 3),
        "transition1.1.0.0.weight": (64, 256, 3, 3),
        "transition2.2.0.0.weight": (128, 64, 3, 3),
        "transition3.3.0.0.weight": (256, 128, 3, 3),
        "stage2.0.fuse_layers.0.1.0.weight": (32, 64, 1, 1),
        "stage3.3.branches.2.3.conv2.weight": (128, 128, 3, 3),
        "stage4.1.fuse_layers.3.0.0.0.weight": (32, 32, 3, 3),
        "stage4.1.fuse_layers.3.0.2.0.weight": (256, 32, 3, 3),
        "stage4.1.fuse_layers.3.0.2.1.running_var": (256,),
        "stage4.2.fuse_layers.0.3.0.weight": (32, 256, 1, 1),
        "stage4.2.fuse_layers.0.3.1.weight": (32,),
        "final_layer.weight": (17, 32, 1, 1),
        "final_layer.bias": (17,),
    }
    for key, shape in hand.items():
        assert tuple(sd[key].shape) == shape, key
    for absent in ("layer1.4.conv1.weight", "transition2.0.0.weight", "transition3.1.0.weight",
                   "stage4.2.fuse_layers.1.0.0.0.weight", "stage4.2.branches.0.4.conv1.weight",
                   "final_layer.0.weight"):
        assert absent not in sd, absent


def test_hrnet_w32_parameter_count_is_published_28_5M(w32):
    n = sum(p.numel() for p in w32[1].parameters())
    assert abs(n - 28.5e6) < 0.05e6, n          # HRNet-W32 pose: 28.5M (paper, model zoo)


def test_hrnet_w48_parameter_count_is_published_63_6M():
    net = build_pose_net(load_cfg(str(W48_YAML)))
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 63.6e6) < 0.05e6, n          # HRNet-W48 pose: 63.6M
    assert _shapes(net) == reference_hrnet_shapes(load_cfg(str(W48_YAML)).MODEL.EXTRA, 17)


def test_hrnet_init_and_bn_momentum(w32):
    net = w32[1]
    convs = torch.cat([m.weight.detach().flatten() for m in net.modules()
                       if isinstance(m, nn.Conv2d)])
    assert abs(convs.std().item() - 0.001) < 2e-5 and abs(convs.mean().item()) < 1e-5
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.momentum == 0.1 for m in bns)
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in bns)
    assert (net.final_layer.bias == 0).all()


def test_tiny_stage1_overrides_layer1():
    cfg = load_cfg(str(TINY_YAML))
    net = build_pose_net(cfg)
    sd = _shapes(net)
    assert sd == reference_hrnet_shapes(cfg.MODEL.EXTRA, 17)
    assert sd["layer1.0.conv3.weight"] == (64, 16, 1, 1)
    # 64 stem channels in, 4*16 out: no projection shortcut, as the reference rule gives.
    assert "layer1.0.downsample.0.weight" not in sd and "layer1.1.conv1.weight" not in sd
    assert sd["transition1.0.0.weight"] == (16, 64, 3, 3)


def test_hrnet_batch_of_one_and_odd_sizes():
    net = build_pose_net(load_cfg(str(TINY_YAML))).train()
    for h, w in ((127, 95), (65, 33)):
        out = net(torch.randn(1, 3, h, w))
        assert out.shape == (1, 17, -(-h // 4), -(-w // 4))
        assert torch.isfinite(out).all()
    net.eval()
    assert net(torch.randn(1, 3, 128, 96)).shape == (1, 17, 32, 24)


def test_fusion_matches_hand_computation_with_nearest_upsampling():
    torch.manual_seed(3)
    mod = HighResolutionModule(BasicBlock, [1, 1], [4, 6], [4, 6]).double().eval()
    mod.branches = nn.ModuleList([nn.Identity(), nn.Identity()])   # isolate the fusion
    for m in mod.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
        if isinstance(m, nn.Conv2d):
            m.weight.data.normal_()
    x0 = torch.randn(2, 4, 6, 8, dtype=torch.float64)
    x1 = torch.randn(2, 6, 3, 4, dtype=torch.float64)

    def bn_eval(t, m):
        std = torch.sqrt(m.running_var[:, None, None] + m.eps)
        return ((t - m.running_mean[:, None, None]) / std
                * m.weight[:, None, None] + m.bias[:, None, None])

    up_conv, up_bn = mod.fuse_layers[0][1][0], mod.fuse_layers[0][1][1]
    low = bn_eval(F.conv2d(x1, up_conv.weight), up_bn)
    nearest = low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)   # official Upsample x2
    expect0 = torch.relu(x0 + nearest)
    down_conv, down_bn = mod.fuse_layers[1][0][0][0], mod.fuse_layers[1][0][0][1]
    expect1 = torch.relu(bn_eval(F.conv2d(x0, down_conv.weight, stride=2, padding=1), down_bn) + x1)
    out0, out1 = mod([x0, x1])
    torch.testing.assert_close(out0, expect0)
    torch.testing.assert_close(out1, expect1)


def test_stage_table_errors_name_the_key():
    cfg = load_cfg(str(TINY_YAML))
    cfg.MODEL.EXTRA.STAGE3.NUM_CHANNELS = [16, 32]
    with pytest.raises(ValueError, match="STAGE3"):
        build_pose_net(cfg)
    cfg = load_cfg(str(TINY_YAML))
    cfg.MODEL.EXTRA.STAGE2.BLOCK = "FANCY"
    with pytest.raises(ValueError, match="STAGE2.BLOCK"):
        build_pose_net(cfg)


# ----------------------------------------------------------------------------- PoseResNet

def test_pose_resnet_official_keys_and_parameter_count():
    net = _net_cached("pose_resnet")
    sd = _shapes(net)
    hand = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer3.5.conv2.weight": (256, 256, 3, 3),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "deconv_layers.0.weight": (2048, 256, 4, 4),   # ConvTranspose2d: (in, out, k, k)
        "deconv_layers.1.running_var": (256,),
        "deconv_layers.3.weight": (256, 256, 4, 4),
        "deconv_layers.7.weight": (256,),
        "final_layer.weight": (17, 256, 1, 1),
        "final_layer.bias": (17,),
    }
    for key, shape in hand.items():
        assert sd[key] == shape, key
    assert "deconv_layers.0.bias" not in sd and "layer3.6.conv1.weight" not in sd
    assert "fc.weight" not in sd and "deconv_layers.9.weight" not in sd
    n = sum(p.numel() for p in net.parameters())
    assert abs(n - 34.0e6) < 0.05e6, n          # SimpleBaseline ResNet-50: 34.0M


def test_pose_resnet_rejects_sizes_not_multiple_of_32():
    with pytest.raises(ValueError, match="divisible by 32"):
        _net_cached("pose_resnet")(torch.zeros(1, 3, 64, 48))


# ----------------------------------------------------------------------------- checkpoints

def _randomise(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            else:
                v.fill_(seed)
    return net


def _layouts(sd):
    prefixed = {"module." + k: v for k, v in sd.items()}
    return {
        "plain": sd,
        "state_dict": {"epoch": 3, "model": "pose_hrnet", "state_dict": prefixed,
                       "best_state_dict": sd, "perf": np.float64(0.5),
                       "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]}},
        "best_state_dict": {"best_state_dict": sd, "epoch": 7},
        "module_prefix": prefixed,
    }


@pytest.mark.parametrize("name", NAMES)
def test_strict_round_trip_through_every_layout(name, tmp_path):
    src = _randomise(_small_net(name, seed=5, light=True), seed=7)
    ref = src.state_dict()
    for layout, obj in _layouts(ref).items():
        path = tmp_path / f"{layout}.pth"
        torch.save(obj, path)
        dst = _small_net(name, seed=9, light=True)
        report = load_pose_checkpoint(dst, str(path), strict=True)
        assert report.missing == [] and report.unexpected == [] and report.shape_mismatch == []
        got = dst.state_dict()
        assert got.keys() == ref.keys()
        assert all(torch.equal(got[k], ref[k]) for k in ref), layout
        if layout in ("state_dict", "module_prefix"):
            assert "module." in report.layout


def test_state_dict_preferred_over_best_state_dict_unless_told(tmp_path):
    a = _randomise(_small_net("pose_hrnet"), seed=1).state_dict()
    b = _randomise(_small_net("pose_hrnet"), seed=2).state_dict()
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": a, "best_state_dict": b}, path)
    net = _small_net("pose_hrnet")
    load_pose_checkpoint(net, path)
    assert torch.equal(net.state_dict()["final_layer.weight"], a["final_layer.weight"])
    load_pose_checkpoint(net, path, key="best_state_dict")
    assert torch.equal(net.state_dict()["final_layer.weight"], b["final_layer.weight"])


def test_loads_into_data_parallel_wrapper_and_from_memory():
    sd = _randomise(_small_net("pose_hrnet"), seed=4).state_dict()
    wrapped = nn.DataParallel(_small_net("pose_hrnet"))
    load_pose_checkpoint(wrapped, {"state_dict": {"module." + k: v for k, v in sd.items()}})
    assert torch.equal(wrapped.module.state_dict()["conv1.weight"], sd["conv1.weight"])


def test_mismatch_raises_naming_keys_and_layout(tmp_path):
    net = _small_net("pose_hrnet")
    sd = dict(net.state_dict())
    del sd["stage3.0.fuse_layers.2.0.1.0.weight"]
    sd["classifier.weight"] = torch.zeros(3)
    sd["final_layer.weight"] = torch.zeros(15, 16, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    before = net.state_dict()["conv1.weight"].clone()
    with pytest.raises(CheckpointMismatchError) as err:
        load_pose_checkpoint(net, path)
    msg = str(err.value)
    for needle in ("stage3.0.fuse_layers.2.0.1.0.weight", "classifier.weight", "final_layer.weight",
                   "(15, 16, 1, 1)", "(17, 16, 1, 1)", "dict['state_dict']", "'module.' prefix",
                   str(path)):
        assert needle in msg, needle
    assert torch.equal(net.state_dict()["conv1.weight"], before)   # nothing copied on failure


def test_non_strict_loads_matching_part_and_warns(tmp_path, caplog):
    net = _small_net("pose_hrnet")
    sd = _randomise(_small_net("pose_hrnet"), seed=3).state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("stage4")}
    with caplog.at_level(logging.WARNING, logger="model_2d.checkpoint"):
        report = load_pose_checkpoint(net, sd, strict=False)
    assert report.missing and all(k.startswith("stage4") for k in report.missing)
    assert torch.equal(net.state_dict()["conv1.weight"], sd["conv1.weight"])
    assert "stage4" in caplog.text


def test_old_checkpoint_without_num_batches_tracked_loads_strictly():
    src = _randomise(_small_net("pose_hrnet"), seed=6)
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    net = _small_net("pose_hrnet")
    report = load_pose_checkpoint(net, sd)
    assert report.filled_num_batches_tracked and report.missing == []
    assert int(net.bn1.num_batches_tracked) == 0
    assert torch.equal(net.bn1.running_var, sd["bn1.running_var"])


class _NotWeights:
    pass


def test_refuses_pickled_objects_and_missing_file(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "obj": _NotWeights()}, path)
    with pytest.raises(UntrustedFileError, match="stores Python objects") as err:
        load_pose_checkpoint(_small_net("pose_hrnet"), path)
    assert str(path) in str(err.value) and "weights_only=False" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pose_checkpoint(_small_net("pose_hrnet"), tmp_path / "nope.pth")


def test_init_pretrained_skips_final_layer_and_reports(tmp_path, caplog):
    pre = _randomise(_small_net("pose_hrnet"), seed=8)
    sd = dict(pre.state_dict())
    sd["final_layer.weight"] = torch.ones(1000, 16, 1, 1)     # a classifier head of another size
    sd["final_layer.bias"] = torch.ones(1000)
    sd["incre_modules.0.weight"] = torch.ones(3)
    path = tmp_path / "imagenet.pth"
    torch.save(sd, path)
    net = _small_net("pose_hrnet", seed=2)
    final_before = net.final_layer.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="model_2d.checkpoint"):
        report = init_pretrained(net, str(path), W32_LAYERS)
    assert set(report.not_selected) == {"final_layer.weight", "final_layer.bias",
                                        "incre_modules.0.weight"}
    assert set(report.missing) == {"final_layer.weight", "final_layer.bias"}
    assert report.shape_mismatch == [] and report.unexpected == []
    assert torch.equal(net.final_layer.weight, final_before)
    got = net.state_dict()
    assert all(torch.equal(got[k], sd[k]) for k in got if not k.startswith("final_layer"))
    assert "final_layer.weight" in caplog.text and "PRETRAINED_LAYERS" in caplog.text

    # '*' takes every key: the mis-shaped head and the foreign key are reported, not fatal.
    report = init_pretrained(_small_net("pose_hrnet"), path, ["*"])
    assert [k for k, _, _ in report.shape_mismatch] == ["final_layer.weight", "final_layer.bias"]
    assert report.unexpected == ["incre_modules.0.weight"]
    assert "final_layer.weight" in report.summary()

    with pytest.raises(CheckpointMismatchError, match="PRETRAINED_LAYERS"):
        init_pretrained(_small_net("pose_hrnet"), path, ["nothing_here"])
