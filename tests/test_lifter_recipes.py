"""Lifter recipes at every scale: step-based schedules, mean-pose initialisation, BN re-estimation,
network sizes as config keys recorded in the checkpoint."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import model_3d
from lib.config import get_cfg
from lib.engine.lifter_trainer import recalibrate_bn, steps_per_epoch
from model_3d.videopose.model import TemporalModel
from run import train_lifter
from conftest import make_tiny_h36m

SPE = 1524   # ceil(1559752 / 1024): VideoPose3D's Human3.6M training frames at batch 1024


def _vp_official_momentum(epoch, epochs=60, start=0.1, end=0.001):
    # VideoPose3D run.py, set at the start of every epoch
    return start * math.exp(-epoch / epochs * math.log(start / end))


def test_reference_steps_per_epoch():
    assert model_3d.H36M_REF_STEPS_PER_EPOCH == SPE


@pytest.mark.parametrize("name,gamma,epochs", [("videopose", 0.95, 60), ("iganet", 0.95, 20), ("mixste", 0.99, 120)])
def test_official_scale_lr_lands_on_the_per_epoch_values(name, gamma, epochs):
    recipe = model_3d.get_recipe(name)
    total = epochs * SPE
    for e in (0, 1, 7, epochs - 1):
        assert model_3d.lr_factor(recipe, e * SPE, total) == pytest.approx(gamma ** e, rel=1e-12)
    # between epoch starts the decay is continuous, not a staircase: half an epoch -> gamma ** 0.5
    assert model_3d.lr_factor(recipe, SPE // 2, total) == pytest.approx(gamma ** ((SPE // 2) / SPE), rel=1e-12)


def test_official_scale_sb_lr_is_the_per_iteration_rule():
    sb = model_3d.get_recipe("sb")
    total = 200 * SPE
    for it in (0, 1, 100000, 250000, total):
        assert model_3d.lr_factor(sb, it, total) == pytest.approx(0.96 ** (it / 100000), rel=1e-12)


def test_official_scale_bn_momentum_lands_on_the_per_epoch_values():
    vp = model_3d.get_recipe("videopose")
    total = 60 * SPE
    for e in (0, 1, 30, 59):
        assert model_3d.bn_momentum(vp, e * SPE, total, SPE) == pytest.approx(_vp_official_momentum(e), rel=1e-12)
    assert model_3d.bn_momentum(model_3d.get_recipe("iganet"), 5, 10, 2) is None


def test_short_run_schedules():
    vp = model_3d.get_recipe("videopose")
    # 8 epochs x 13 steps: the whole x0.95**60 decay happens within the 104 steps
    total, spe = 8 * 13, 13
    assert model_3d.lr_factor(vp, 52, total) == pytest.approx(0.95 ** 30)
    assert model_3d.lr_factor(vp, 104, total) == pytest.approx(0.95 ** 60)
    # momentum: 0.1 at the start; 0.1 * 0.01 ** 0.25 = 0.0316 at step 26 is below the floor 1/13
    assert model_3d.bn_momentum(vp, 0, total, spe) == pytest.approx(0.1)
    assert model_3d.bn_momentum(vp, 26, total, spe) == pytest.approx(1 / 13)
    assert model_3d.bn_momentum(vp, 103, total, spe) == pytest.approx(1 / 13)
    # a short run with long epochs: the anneal binds, e.g. 2 epochs x 1000 steps, step 1000 -> 0.1 * 0.01 ** 0.5
    assert model_3d.bn_momentum(vp, 1000, 2000, 1000) == pytest.approx(0.01)
    assert model_3d.bn_momentum(vp, 1999, 2000, 1000) == pytest.approx(0.1 * 0.01 ** (1999 / 2000))
    # fewer than 10 steps per epoch: the floor is capped at the start value
    assert model_3d.bn_momentum(vp, 40, 50, 5) == pytest.approx(0.1)


def test_steps_per_epoch():
    assert steps_per_epoch(1200, 256) == 5
    assert steps_per_epoch(1200, 256, max_steps=3) == 3
    assert steps_per_epoch(1025, 256, world=2) == 4        # trailing global batch of 1 < 2 x 2: skipped
    assert steps_per_epoch(1028, 256, world=2) == 5


def _data(n=64, j=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, j, 2, generator=g) * 0.3
    y = torch.randn(n, j, 3, generator=g) * 0.05 + torch.linspace(-0.5, 0.5, j * 3).reshape(1, j, 3)
    return x, y


def test_mean_pose_init_per_coordinate_head():
    torch.manual_seed(0)
    net = TemporalModel(17, 2, 17, [1, 1, 1], channels=32, dropout=0.25)
    x, y = _data()
    keys = {k: v.shape for k, v in net.state_dict().items()}
    w_before = net.shrink.weight.detach().double().clone()
    model_3d.init_output_at_mean_pose(net, "frames", x, y)
    assert {k: v.shape for k, v in net.state_dict().items()} == keys
    net.eval()
    with torch.no_grad():
        pred = net(x.mean(0).reshape(1, 1, 17, 2)).double().reshape(17, 3)
    mean = y.double().mean(0)
    np.testing.assert_allclose(pred.numpy(), mean.numpy(), atol=1e-5)
    std = y.double().std(0).reshape(-1)                      # unbiased, per joint coordinate
    np.testing.assert_allclose(net.shrink.weight.detach().double()[:, :, 0].numpy(),
                               (w_before[:, :, 0] * std[:, None]).numpy(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name,arch", [("iganet", {"layers": 1, "channel": 32}),
                                       ("mixste", {"dim": 16, "depth": 1, "heads": 4})])
def test_mean_pose_init_shared_head_is_the_ridge_fit(name, arch):
    torch.manual_seed(0)
    net = model_3d.build_lifter_net(name, 17, arch)
    x, y = _data(n=96)
    layer = net.get_submodule(net.output_layer)
    feats = []
    hook = layer.register_forward_pre_hook(lambda _m, a: feats.append(a[0].detach().double()))
    net.eval()
    with torch.no_grad():
        before = net(x.unsqueeze(1)).reshape(-1, 17, 3).double()
    hook.remove()
    w0 = layer.weight.detach().double().clone()
    model_3d.init_output_at_mean_pose(net, "frames", x, y)
    with torch.no_grad():
        after = net(x.unsqueeze(1)).reshape(-1, 17, 3).double()
    # independent solve: [Fc; sqrt(l) I] dW^T = [Yc - Fc Ws^T; 0] by numpy least squares, bias from the means
    f = feats[0].reshape(-1, w0.shape[1]).numpy()
    t = y.double().reshape(-1, 3).numpy()
    ws = w0.numpy() * y.double().std(0).mean(0).numpy()[:, None]
    fc, tc = f - f.mean(0), t - t.mean(0)
    lam = model_3d.init.RIDGE * np.trace(fc.T @ fc) / f.shape[1] + 1e-12
    a = np.vstack([fc, math.sqrt(lam) * np.eye(f.shape[1])])
    b = np.vstack([tc - fc @ ws.T, np.zeros((f.shape[1], 3))])
    dw = np.linalg.lstsq(a, b, rcond=None)[0].T
    w_ref = ws + dw
    b_ref = t.mean(0) - f.mean(0) @ w_ref.T
    np.testing.assert_allclose(layer.weight.detach().double().numpy(), w_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(layer.bias.detach().double().numpy(), b_ref, rtol=1e-4, atol=1e-6)
    # a free bias: the prediction averaged over samples and joints is the targets' average
    np.testing.assert_allclose(after.reshape(-1, 3).mean(0).numpy(), t.mean(0), atol=1e-5)
    err = lambda p: float(torch.linalg.vector_norm(p - y.double(), dim=-1).mean())   # noqa: E731
    assert err(after) < err(before)


def test_recalibrate_bn_averages_batch_statistics():
    torch.manual_seed(0)
    net = TemporalModel(17, 2, 17, [1, 1, 1], channels=16, dropout=0.5)
    lifter = model_3d.Lifter(net, 17, "screen", "frames", name="videopose")
    g = torch.Generator().manual_seed(1)
    px = torch.rand(48, 17, 2, generator=g) * 100
    size = torch.tensor([[100.0, 100.0]]).expand(48, 2)
    assert recalibrate_bn(lifter, px, size, batch_size=16) == 3
    # expand_bn's input, by hand in float64: screen normalisation, then the first (width-1) convolution
    xn = (px.double() / 100 * 2 - 1).reshape(48, -1)
    h = xn @ net.expand_conv.weight.detach().double()[:, :, 0].T            # (48, 16)
    batches = h.reshape(3, 16, -1)
    np.testing.assert_allclose(net.expand_bn.running_mean.double().numpy(), batches.mean(1).mean(0).numpy(),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.expand_bn.running_var.double().numpy(),
                               batches.var(1, unbiased=True).mean(0).numpy(), rtol=1e-4, atol=1e-6)
    assert net.expand_bn.momentum == 0.1 and not net.training and not net.drop.training


def test_default_sizes_are_the_published_ones():
    ig = model_3d.build_lifter_net("iganet", 17).state_dict()
    assert tuple(ig["encoder.fc1.weight"].shape) == (64, 2) and tuple(ig["encoder.fc5.weight"].shape) == (512, 256)
    assert tuple(ig["IGANet.blocks.0.uMLP.linear512_256.linear.0.weight"].shape) == (256, 512)
    assert "IGANet.blocks.2.norm1.weight" in ig and "IGANet.blocks.3.norm1.weight" not in ig
    mx = model_3d.build_lifter_net("mixste", 17).state_dict()
    assert tuple(mx["Spatial_pos_embed"].shape) == (1, 17, 512) and "STEblocks.7.attn.qkv.weight" in mx
    assert "STEblocks.8.attn.qkv.weight" not in mx
    assert model_3d.lifter_arch(get_cfg(), "iganet") == {} and model_3d.lifter_arch(get_cfg(), "mixste") == {}


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of heads"):
        model_3d.build_lifter_net("mixste", 17, {"dim": 30, "heads": 8})
    with pytest.raises(ValueError, match="multiple of 16"):
        model_3d.build_lifter_net("iganet", 17, {"channel": 40})
    with pytest.raises(ValueError, match="unknown size key"):
        model_3d.build_lifter_net("iganet", 17, {"width": 64})


def test_sizes_from_config_are_recorded_and_loaded_without_it(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL_3D.MIXSTE.DIM", 32, "MODEL_3D.MIXSTE.DEPTH", 2, "MODEL_3D.MIXSTE.HEADS", 4,
                         "MODEL_3D.IGANET.CHANNEL", 64])
    assert model_3d.lifter_arch(cfg, "mixste") == {"dim": 32, "depth": 2, "heads": 4}
    assert model_3d.lifter_arch(cfg, "iganet") == {"channel": 64}
    for name in ("mixste", "iganet"):
        torch.manual_seed(0)
        lifter = model_3d.build_lifter(name, 17, arch=model_3d.lifter_arch(cfg, name))
        path = model_3d.save_lifter_checkpoint(tmp_path / f"{name}.pth", lifter, name=name, num_joints=17,
                                               dataset="h36m")
        assert torch.load(path, weights_only=True)["arch"] == model_3d.lifter_arch(cfg, name)
        again = model_3d.build_lifter(name, 17, weights=path)          # no config, no arch argument
        x = torch.rand(3, 17, 2) * 100
        size = torch.tensor([[100.0, 100.0]] * 3)
        assert torch.equal(again(x, size), lifter(x, size))
    # a file without 'arch' (an official one) is built at the published sizes and loads strictly
    plain = tmp_path / "official.pth"
    torch.save(model_3d.build_lifter_net("iganet", 17).state_dict(), plain)
    assert model_3d.build_lifter("iganet", 17, weights=plain).arch == {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    base = tmp_path_factory.mktemp("recipes")
    root = base / "data"
    make_tiny_h36m(root, seed=3, frames_per_seq=4, image_size=64)
    return base, root


def test_training_uses_per_lifter_keys_step_schedule_and_sizes(tiny):
    base, root = tiny
    out = base / "mixste_small.pth"
    # LIFTER_TRAIN.MIXSTE.EPOCHS beats LIFTER_TRAIN.EPOCHS; one step per epoch -> total 2 steps
    res = train_lifter.main(["--cfg", "experiments/demo/tiny_96x128.yaml", "--model_3d", "mixste",
                             "--weights", str(out), "DATASET.ROOT", str(root), "OUTPUT_DIR", str(base / "out"),
                             "USE_CUDA", "False", "SEED", "0", "LIFTER_TRAIN.EPOCHS", "5",
                             "LIFTER_TRAIN.MIXSTE.EPOCHS", "2", "LIFTER_TRAIN.MIXSTE.LR", "0.002",
                             "LIFTER_TRAIN.MAX_STEPS_PER_EPOCH", "1", "LIFTER_TRAIN.BATCH_SIZE", "8",
                             "MODEL_3D.MIXSTE.DIM", "16", "MODEL_3D.MIXSTE.DEPTH", "1", "MODEL_3D.MIXSTE.HEADS", "4"])
    lrs = [e["lr"] for e in res["history"]["epochs"]]
    # the lr of each epoch's (only) step: 0.002 * 0.99 ** (120 * step / 2)
    assert lrs == pytest.approx([0.002, 0.002 * 0.99 ** 60])
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["arch"] == {"dim": 16, "depth": 1, "heads": 4} and ckpt["config"]["total_steps"] == 2
    assert ckpt["config"]["init_mean_pose"] is True
    lifter = model_3d.build_lifter("mixste", 17, weights=out)
    assert lifter.net.Spatial_pos_embed.shape == (1, 17, 16)


def test_flags_beat_per_lifter_presets_which_beat_the_common_keys(tmp_path):
    from lib.config import load_cfg
    from lib.engine.lifter_trainer import lifter_settings
    yaml = tmp_path / "preset.yaml"
    yaml.write_text("LIFTER_TRAIN:\n  EPOCHS: 7\n  LR: 0.01\n  MIXSTE:\n    EPOCHS: 3\n    BATCH_SIZE: 32\n")
    recipe = model_3d.get_recipe("mixste")
    assert lifter_settings(load_cfg(str(yaml)), "mixste", recipe) == (3, 32, 0.01)
    assert lifter_settings(load_cfg(str(yaml)), "iganet", model_3d.get_recipe("iganet")) == (7, 1024, 0.01)
    assert lifter_settings(get_cfg(), "mixste", recipe) == (120, 1024, 4e-5)
    args = train_lifter.build_parser().parse_args(["--cfg", str(yaml), "--model_3d", "mixste,sb", "--epochs", "1"])
    from lib.config.flags import lifter_flag_opts
    cfg = load_cfg(str(yaml), lifter_flag_opts(["mixste", "sb"], args.epochs, args.batch_size, args.lr))
    assert lifter_settings(cfg, "mixste", recipe) == (1, 32, 0.01)
    assert lifter_settings(cfg, "sb", model_3d.get_recipe("sb"))[0] == 1


def test_cpu_preset_yaml_merges_onto_the_demo_config():
    from lib.config import load_cfg
    demo = load_cfg("experiments/demo/tiny_96x128.yaml")
    cfg = load_cfg("experiments/demo/lifters_cpu.yaml")       # _BASE_: tiny_96x128.yaml
    assert model_3d.lifter_arch(cfg, "mixste") and model_3d.lifter_arch(cfg, "iganet")
    assert cfg.LIFTER_TRAIN.MIXSTE.LR > 0
    assert cfg.DATASET.ROOT == demo.DATASET.ROOT and list(cfg.MODEL.IMAGE_SIZE) == list(demo.MODEL.IMAGE_SIZE)
