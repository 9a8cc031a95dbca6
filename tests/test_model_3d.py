"""model_3d: registry, frozen Lifter wrapper, normalisation numbers, checkpoint layouts.

Shapes: N batch, J joints (17 H36M, 15 Panoptic). Hand numbers from docs/original.md#lifter-inputs-and-units /
docs/original.md#iganet-network / docs/original.md#example-5-screen-normalisation.
"""
import io
import pickle

import numpy as np
import pytest
import torch
import torch.nn as nn

import model_3d
from model_3d import (LIFTERS, Lifter, build_lifter, build_lifter_net, load_lifter_checkpoint,
                      load_stats, register_lifter, save_lifter_checkpoint, screen_normalize)
from model_3d.iganet.graph import spatial_adjacency

BUILTIN = ("sb", "videopose", "iganet", "mixste")
CASES = [(n, j) for n in BUILTIN for j in (17, 15)]


def make_stats(num_joints, seed=0, flat=False):
    g = np.random.default_rng(seed)
    stats = {"mean_2d": g.uniform(300, 700, (num_joints, 2)), "std_2d": g.uniform(20, 80, (num_joints, 2)),
             "mean_3d": g.uniform(-30, 30, (num_joints, 3)), "std_3d": g.uniform(5, 40, (num_joints, 3))}
    if flat:
        stats = {k: v.reshape(-1) for k, v in stats.items()}
    return stats


def make_input(n, num_joints, seed=1):
    g = torch.Generator().manual_seed(seed)
    pose = torch.rand(n, num_joints, 2, generator=g) * torch.tensor([1000.0, 1000.0])
    size = torch.tensor([[1000.0, 1002.0]]).expand(n, 2).clone()
    return pose, size


def randomize_(net, seed):
    """Non-trivial values everywhere (incl. BN running stats) so round trips are meaningful."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, t in net.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) * 0.1 + (0.5 if t.dim() == 1 else 0.0))
    return net


_CACHE = {}


def cached_lifter(name, num_joints):
    key = (name, num_joints)
    if key not in _CACHE:
        torch.manual_seed(0)
        _CACHE[key] = build_lifter(name, num_joints, stats=make_stats(num_joints))
    return _CACHE[key]


def test_registry_lists_builtins_and_unknown_name_error():
    assert set(BUILTIN) <= set(LIFTERS)
    with pytest.raises(KeyError) as err:
        build_lifter_net("nope", 17)
    for name in BUILTIN:
        assert name in str(err.value)


@pytest.mark.parametrize("name,num_joints", CASES)
def test_forward_frozen_eval_gradient(name, num_joints):
    lifter = cached_lifter(name, num_joints)
    bn_before = {k: v.clone() for k, v in lifter.state_dict().items() if "running" in k}
    lifter.train()                                   # must stay in eval mode
    assert not any(m.training for m in lifter.modules())
    pose, size = make_input(4, num_joints)
    pose.requires_grad_(True)
    out = lifter(pose, size)
    assert out.shape == (4, num_joints, 3)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert pose.grad is not None and pose.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in lifter.parameters())
    for k, v in lifter.state_dict().items():
        if "running" in k:
            assert torch.equal(v, bn_before[k]), k
    one = lifter(pose[:1].detach(), size[:1])        # batch of one: same numbers as in the batch
    assert one.shape == (1, num_joints, 3)
    torch.testing.assert_close(one, out[:1].detach(), rtol=1e-4, atol=1e-5)
    n_params = sum(p.numel() for p in lifter.net.parameters())
    print(f"{name} J={num_joints}: {n_params:,} parameters")


@pytest.mark.parametrize("name,num_joints", CASES)
def test_checkpoint_layouts_round_trip(name, num_joints, tmp_path):
    stats = make_stats(num_joints, seed=3)
    src = build_lifter(name, num_joints, stats=stats)
    randomize_(src.net, seed=5)
    pose, size = make_input(3, num_joints, seed=7)
    ref = src(pose, size)
    sd = src.net.state_dict()
    layouts = {
        "plain": sd,
        "model_pos": {"epoch": 3, "lr": 1e-3, "model_pos": sd},
        "plain+module.": {"module." + k: v for k, v in sd.items()},
    }
    on_disk = num_joints == 17 or name != "mixste"   # keep the 130 MB MixSTE writes to one joint count
    for layout, obj in layouts.items():
        if on_disk:
            path = tmp_path / f"{layout}.pth"
            torch.save(obj, path)
            source = path
        else:
            source = obj
        ckpt = load_lifter_checkpoint(source, weights_only=True)
        assert ckpt.layout == layout
        out = build_lifter(name, num_joints, weights=ckpt, stats=stats)(pose, size)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    path = save_lifter_checkpoint(tmp_path / "self.pth", src, name=name, num_joints=num_joints, dataset="h36m",
                                  epoch=7, metrics={"mpjpe_mm": 42.5}, config={"lr": 1e-3, "arc": [1, 1, 1]})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "l2d-lifter" and raw["version"] == 1 and raw["name"] == name
    loaded = build_lifter(name, num_joints, weights=path)          # stats come from the file
    torch.testing.assert_close(loaded(pose, size), ref, rtol=0, atol=0)
    assert loaded.checkpoint["metrics"] == {"mpjpe_mm": 42.5}


def test_strict_mismatch_lists_keys_and_layout():
    net = build_lifter_net("videopose", 17)
    sd = net.state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["shrink.bias"]
    with pytest.raises(RuntimeError) as err:
        build_lifter("videopose", 17, weights={"model_pos": sd})
    msg = str(err.value)
    assert "shrink.bias" in msg and "extra.weight" in msg and "model_pos" in msg
    with pytest.raises(RuntimeError, match="wrong shape"):
        build_lifter("videopose", 15, weights=build_lifter_net("videopose", 17).state_dict())
    with pytest.raises(ValueError, match="num_joints"):
        ckpt = {"format": "l2d-lifter", "version": 1, "name": "videopose", "num_joints": 15,
                "dataset": "panoptic", "state_dict": build_lifter_net("videopose", 15).state_dict(),
                "stats": None, "epoch": 0, "metrics": {}, "config": {}}
        build_lifter("videopose", 17, weights=ckpt)


def test_iganet_adjacency_not_in_state_dict_and_cpu_keys_ignored():
    net = build_lifter_net("iganet", 17)
    sd = net.state_dict()
    assert not any(k == "A" or k.endswith(".adj") for k in sd)
    assert "IGANet.blocks.0.s_gcn2attn" in sd and "IGANet.blocks.2.s_attn2gcn" in sd
    assert not net.IGANet.blocks[0].s_gcn2attn.requires_grad
    assert float(sd["IGANet.blocks.1.s_gcn2attn"]) == 0.5 and float(sd["IGANet.blocks.1.s_attn2gcn"]) == pytest.approx(0.8)
    for key in ("encoder.fc1.weight", "encoder.fc3.weight", "encoder.fc4.weight", "encoder.fc5.weight",
                "IGANet.norm.weight", "fcn.weight", "IGANet.blocks.0.GCN_Block1.conv1d.weight"):
        assert key in sd
    # L2D's CPU variant also wrote the adjacency; those keys are dropped on purpose.
    cpu_sd = dict(sd, A=net.A.clone(), **{"IGANet.blocks.0.GCN_Block1.adj": net.A.clone()})
    build_lifter("iganet", 17, weights=cpu_sd)


def test_iganet_adjacency_hand_values():
    a = spatial_adjacency("h36m")
    assert a.shape == (4, 17, 17)
    np.testing.assert_allclose(a.sum(axis=(0, 1)), np.ones(17), atol=1e-6)   # columns sum to 1
    # column 0 (pelvis, dist 1): self, 1, 4 (dist 2), 7 (dist 0) -> 1/4 each
    assert a[0, 0, 0] == pytest.approx(0.25)
    assert a[1, 1, 0] == pytest.approx(0.25) and a[1, 4, 0] == pytest.approx(0.25)
    assert a[2, 7, 0] == pytest.approx(0.25)
    # column 1 (r_hip): self, 0, 2, symmetric partner 4 -> 1/4, partner in the 4th matrix
    assert a[3, 4, 1] == pytest.approx(0.25) and a[2, 0, 1] == pytest.approx(0.25) and a[1, 2, 1] == pytest.approx(0.25)
    # column 8 (thorax, dist 1): self, 7, 9, 11, 14 -> 1/5
    assert a[0, 8, 8] == pytest.approx(0.2) and a[2, 7, 8] == pytest.approx(0.2) and a[1, 11, 8] == pytest.approx(0.2)
    assert a[0].sum() == pytest.approx(np.trace(a[0]))                        # root part is diagonal
    p = spatial_adjacency("panoptic")
    assert p.shape == (4, 15, 15)
    np.testing.assert_allclose(p.sum(axis=(0, 1)), np.ones(15), atol=1e-6)
    # column 2 (mid-hip = centre, dist 0): self, 12, 6, 0 -> 1/4, all farther from the centre
    assert p[0, 2, 2] == pytest.approx(0.25)
    assert p[1, 12, 2] == pytest.approx(0.25) and p[1, 6, 2] == pytest.approx(0.25) and p[1, 0, 2] == pytest.approx(0.25)
    # column 14 (r_ankle): self, 13, symmetric 8 -> 1/3
    assert p[3, 8, 14] == pytest.approx(1 / 3) and p[2, 13, 14] == pytest.approx(1 / 3)


def test_iganet_gcn_matches_loop_reference():
    gcn = build_lifter_net("iganet", 15).IGANet.blocks[0].GCN_Block1.double()
    x = torch.randn(2, 15, 512, dtype=torch.float64)
    out = gcn(x)
    a = gcn.adj.double()
    w, b = gcn.conv1d.weight[:, :, 0], gcn.conv1d.bias
    ref = torch.zeros(2, 15, 512, dtype=torch.float64)
    for k in range(4):
        feats = x @ w[k * 512:(k + 1) * 512].T + b[k * 512:(k + 1) * 512]       # (2, J, C)
        for wj in range(15):
            for v in range(15):
                ref[:, wj] += a[k, v, wj] * feats[:, v]
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("name", ["videopose", "iganet"])
def test_batch_as_one_sequence_equals_per_sample_frames(name):
    """The original fed [1, N, J, 2]; for receptive field 1 in eval mode that equals (N, 1, J, 2)."""
    lifter = cached_lifter(name, 17)
    pose, size = make_input(5, 17)
    x = screen_normalize(pose, size)
    with torch.no_grad():
        original = lifter.net(x.unsqueeze(0))              # [1, N, J, 3] or [N, 1, J, 3]
        original = original[0] if name == "videopose" else original[:, 0]
        torch.testing.assert_close(lifter(pose, size), original, rtol=1e-5, atol=1e-6)


def test_screen_normalisation_hand_numbers():
    pose = torch.tensor([[[500.0, 501.0], [0.0, 0.0]]], dtype=torch.float64)
    out = screen_normalize(pose, torch.tensor([[1000.0, 1002.0]], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 0.0], [-1.0, -1.002]]], dtype=torch.float64))
    pan = screen_normalize(torch.tensor([[[960.0, 540.0], [1920.0, 1080.0]]]), torch.tensor([1920.0, 1080.0]))
    torch.testing.assert_close(pan, torch.tensor([[[0.0, 0.0], [1.0, 0.5625]]]))


class _Probe(nn.Module):
    """Records its input; returns a fixed z-scored 3D output (N, 3J)."""

    def __init__(self, num_joints):
        super().__init__()
        self.num_joints = num_joints
        self.bias = nn.Parameter(torch.zeros(1))
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        n = x.shape[0]
        z = torch.arange(self.num_joints * 3, dtype=x.dtype).repeat(n, 1) * 0.1 - 1.0
        return z + self.bias + 0 * x.sum(dim=1, keepdim=True)


def test_zscore_lifter_hand_numbers_and_custom_registration():
    @register_lifter("probe_zscore", normalization="zscore", layout="flat", override=True)
    def make_probe(num_joints):
        return _Probe(num_joints)

    try:
        j = 3
        stats = make_stats(j, seed=11)
        lifter = build_lifter("probe_zscore", j, stats=stats)
        pose = torch.tensor([[[510.0, 420.0], [333.0, 444.0], [640.0, 480.0]]])
        out = lifter(pose, None)
        # input: (p - mean) / (std + 1e-8), flattened [x0, y0, x1, y1, ...]
        expect_in = [(float(pose[0, jj, c]) - stats["mean_2d"][jj, c]) / (stats["std_2d"][jj, c] + 1e-8)
                     for jj in range(j) for c in range(2)]
        np.testing.assert_allclose(lifter.net.seen[0].numpy(), expect_in, rtol=1e-5, atol=1e-5)
        # output: z * std_3d + mean_3d (cm, no eps), / 100 -> metres
        z = np.arange(9) * 0.1 - 1.0
        expect_out = [[(z[jj * 3 + c] * stats["std_3d"][jj, c] + stats["mean_3d"][jj, c]) / 100 for c in range(3)]
                      for jj in range(j)]
        np.testing.assert_allclose(out[0].detach().numpy(), expect_out, rtol=1e-5, atol=1e-6)
        # flat (2J,)/(3J,) stats give identical outputs
        flat = build_lifter("probe_zscore", j, stats=make_stats(j, seed=11, flat=True))
        torch.testing.assert_close(flat(pose), out)
    finally:
        LIFTERS.pop("probe_zscore", None)


def test_custom_joints_lifter_with_build_lifter_and_weights():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 3)

        def forward(self, x):            # (N, J, 2) -> (N, J, 3)
            return self.lin(x)

    @register_lifter("tiny_user", normalization="screen", layout="joints", override=True)
    def make_tiny(num_joints):
        return Tiny()

    try:
        with pytest.raises(KeyError, match="already registered"):
            register_lifter("tiny_user")(make_tiny)
        weights = randomize_(Tiny(), 3).state_dict()
        lifter = build_lifter("tiny_user", 15, weights=weights)
        pose, _ = make_input(2, 15)
        size = torch.tensor([[1920.0, 1080.0]] * 2)
        x = screen_normalize(pose, size)
        torch.testing.assert_close(lifter(pose, size), x @ weights["lin.weight"].T + weights["lin.bias"])
    finally:
        LIFTERS.pop("tiny_user", None)


def test_sb_flat_and_structured_stats_identical():
    lifter_s = build_lifter("sb", 15, stats=make_stats(15, seed=2))
    lifter_f = build_lifter("sb", 15, stats=make_stats(15, seed=2, flat=True))
    lifter_f.net.load_state_dict(lifter_s.net.state_dict())
    pose, size = make_input(4, 15)
    torch.testing.assert_close(lifter_f(pose, size), lifter_s(pose, size), rtol=0, atol=0)


def test_wrong_stats_shape_and_missing_stats_errors():
    bad = make_stats(17)
    bad["std_3d"] = np.ones((17, 2))
    with pytest.raises(ValueError) as err:
        build_lifter("sb", 17, stats=bad)
    assert "std_3d" in str(err.value) and "(17, 3)" in str(err.value) and "(51,)" in str(err.value)
    with pytest.raises(ValueError, match="needs stats"):
        build_lifter("sb", 17)
    with pytest.raises(ValueError, match=r"\(N, 17, 2\)"):
        cached_lifter("videopose", 17)(torch.zeros(2, 15, 2), torch.ones(2, 2))


def test_load_stats_npz_and_pkl(tmp_path):
    stats = make_stats(15, seed=4, flat=True)
    np.savez(tmp_path / "stats.npz", **stats)
    with open(tmp_path / "panoptic_stats.pkl", "wb") as fh:
        pickle.dump(stats, fh)
    for fname in ("stats.npz", "panoptic_stats.pkl"):
        loaded = load_stats(tmp_path / fname)
        np.testing.assert_array_equal(loaded["mean_3d"], stats["mean_3d"])
        lifter = build_lifter("sb", 15, stats=tmp_path / fname)
        assert lifter.mean_3d.shape == (15, 3)
    with pytest.raises(FileNotFoundError):
        load_stats(tmp_path / "missing.npz")


def test_resolve_lifter_paths_and_missing_file(tmp_path):
    from lib.config import get_cfg

    cfg = get_cfg()
    cfg.DATASET.DATASET = "panoptic"
    cfg.MODEL_3D.WEIGHTS.SB = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError) as err:
        model_3d.resolve_lifter(cfg, "sb")
    msg = str(err.value)
    assert "nope.pth" in msg and "python run/train_lifter.py --cfg" in msg and "--model_3d sb" in msg
    assert model_3d.default_weight_path("videopose", "h36m").as_posix().endswith(
        "model_3d/videopose/weights/model_best_h36m_t1.bin")
    assert model_3d.default_weight_path("sb", "panoptic").as_posix().endswith(
        "model_3d/simple_baseline/weights/model_best_panoptic.pth")
    # a plain SB file + stats from the fallback (dataset stats)
    net = randomize_(build_lifter_net("sb", 15), 9)
    torch.save(net.state_dict(), tmp_path / "sb.pth")
    cfg.MODEL_3D.WEIGHTS.SB = str(tmp_path / "sb.pth")
    lifter = model_3d.resolve_lifter(cfg, "sb", stats_fallback=make_stats(15, flat=True))
    assert lifter.num_joints == 15 and lifter.mean_2d.shape == (15, 2)
    with pytest.raises(ValueError, match="needs stats"):
        model_3d.resolve_lifter(cfg, "sb")


class _NotWeights:
    pass


def test_official_bin_loads_and_python_objects_are_refused(tmp_path):
    """Official .bin files pickle numpy RNG states: plain data, read with weights_only=True. Any other
    object is refused with the file named and no advice to switch weights_only off."""
    from lib.utils.errors import UntrustedFileError
    path = tmp_path / "official.bin"
    torch.save({"model_pos": build_lifter_net("videopose", 17).state_dict(),
                "random_state": np.random.RandomState(0), "lr": np.float64(1e-3)}, path)
    assert load_lifter_checkpoint(path).layout == "model_pos"
    evil = tmp_path / "objects.bin"
    torch.save({"model_pos": build_lifter_net("videopose", 17).state_dict(), "obj": _NotWeights()}, evil)
    with pytest.raises(UntrustedFileError) as err:
        load_lifter_checkpoint(evil)
    assert str(evil) in str(err.value) and "weights_only=False" not in str(err.value)
    assert "--trust" in str(err.value)
    ckpt = load_lifter_checkpoint(evil, weights_only=False)     # the Python API's explicit opt-in
    assert ckpt.layout == "model_pos"


def test_recipes_table():
    rec = model_3d.LIFTER_RECIPES
    assert set(BUILTIN) <= set(rec)
    assert rec["sb"]["loss"] == "mse_zscore" and rec["videopose"]["loss"] == rec["iganet"]["loss"] == "mpjpe"
    # MixSTE's run.py at one frame: its weighted MPJPE, the loss-scaled backward, drop-path 0.1 in training
    mix = model_3d.get_recipe("mixste")
    assert mix["loss"] == "weighted_mpjpe" and mix["loss_scaled_backward"] and mix["train_kwargs"] == {"drop_path_rate": 0.1}
    assert mix["joint_weights"]["h36m"] == (1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4)
    sb = model_3d.get_recipe("sb")
    # official length (200 epochs x 1524 steps): iteration 200000 -> 0.96 ** 2 (schedule values: test_lifter_recipes)
    assert model_3d.lr_factor(sb, step=200000, total_steps=200 * 1524) == pytest.approx(0.96 ** 2)
    vp = model_3d.get_recipe("videopose")
    assert vp["amsgrad"] and vp["flip_augment"] and model_3d.lr_factor(vp, 3 * 1524, 60 * 1524) == pytest.approx(0.95 ** 3)
    assert model_3d.get_recipe("iganet", "panoptic")["batch_size"] == 128
    assert model_3d.get_recipe("iganet", "h36m")["batch_size"] == 1024


def test_videopose_single_frame_path_matches_the_convolutions():
    # With every filter 1 wide, TemporalModel runs its layers as matrix products over frames; the
    # outputs, the gradients and (in training) BatchNorm's running statistics must be those of the
    # plain nn.Conv1d modules (float64); a dilated model keeps the convolutions.
    import copy

    import torch.nn.functional as F
    from model_3d.videopose.model import TemporalModel

    def plain_forward(net, x):
        n, t = x.shape[:2]
        x = x.reshape(n, t, -1).permute(0, 2, 1)
        x = F.relu(net.expand_bn(net.expand_conv(x)))
        for i in range(len(net.pad) - 1):
            res = x[:, :, net.pad[i + 1]: x.shape[2] - net.pad[i + 1]]
            x = F.relu(net.layers_bn[2 * i](net.layers_conv[2 * i](x)))
            x = res + F.relu(net.layers_bn[2 * i + 1](net.layers_conv[2 * i + 1](x)))
        return net.shrink(x).permute(0, 2, 1).reshape(n, -1, net.num_joints_out, 3)

    torch.manual_seed(0)
    for widths, frames in (([1, 1, 1], 5), ([3, 3], 11)):
        for training in (False, True):
            net = TemporalModel(17, 2, 17, widths, channels=32, dropout=0.0).double()
            for bn in [net.expand_bn, *net.layers_bn]:
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
            net.train(training)
            ref_net = copy.deepcopy(net)
            x = torch.randn(2, frames, 17, 2, dtype=torch.float64, requires_grad=True)
            out, ref = net(x), plain_forward(ref_net, x)
            assert out.shape == (2, frames - net.receptive_field() + 1, 17, 3)
            torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
            probe = torch.arange(out.numel(), dtype=torch.float64).reshape(out.shape)
            g, = torch.autograd.grad((out * probe).sum(), x)
            g_ref, = torch.autograd.grad((ref * probe).sum(), x)
            torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-10)
            for key, value in net.state_dict().items():
                torch.testing.assert_close(value, ref_net.state_dict()[key], rtol=1e-12, atol=1e-12)
