"""ViTPose (model_2d/vitpose.py) and its recipe (lib/engine/optim.py).

Shapes: images (N, 3, 256, 192) -> heatmaps (N, 17, 64, 48); tiny preset (N, 3, 128, 96) ->
(N, 17, 32, 24). The official layout is enumerated here from the official definitions
(ViTAE-Transformer/ViTPose mmpose/models/backbones/vit.py + TopdownHeatmapSimpleHead, configs
ViTPose_{small,base,large,huge}_coco_256x192), and the official forward is re-computed in float64
from a state dict with explicit per-head softmax attention; S/B/L/H are checked on the meta
device (no memory), only the tiny preset runs.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, make_tiny_h36m
from lib.config import get_cfg, load_cfg
from lib.engine import optim
from lib.engine.builders import lr_factor, make_optimizer, make_scheduler
from lib.engine.train_epoch import backward_and_step
from lib.utils.errors import UserError
import model_2d
from model_2d import CheckpointMismatchError, build_pose_net, load_pose_checkpoint

TINY = str(ROOT / "experiments/demo/vitpose_tiny.yaml")
H36M = str(ROOT / "experiments/h36m/vitpose_b_256x192.yaml")
PANOPTIC = str(ROOT / "experiments/panoptic/vitpose_b_256x192.yaml")

# Official configs as they are now: embed_dim, depth, num_heads, mlp hidden (mlp_ratio 4),
# drop_path_rate, layer_decay_rate (small: 0.1 / 0.8 since January 2023); published backbone
# sizes in millions (DeiT-S 22M, ViT-B/L/H 86M / 307M / 632M, counted at 224 px with a class
# token, hence the 2 % tolerance below).
OFFICIAL = {
    "small": dict(dim=384, depth=12, heads=12, mlp=1536, drop=0.1, decay=0.8, backbone_m=22),
    "base": dict(dim=768, depth=12, heads=12, mlp=3072, drop=0.3, decay=0.75, backbone_m=86),
    "large": dict(dim=1024, depth=24, heads=16, mlp=4096, drop=0.5, decay=0.8, backbone_m=307),
    "huge": dict(dim=1280, depth=32, heads=16, mlp=5120, drop=0.55, decay=0.85, backbone_m=632),
}


def parameter_count(dim, depth, mlp, joints=17, deconv=256, patches=192, patch=16):
    """(backbone, whole detector) trainable parameters, by hand."""
    block = 2 * dim + (3 * dim * dim + 3 * dim) + (dim * dim + dim) + 2 * dim \
        + (dim * mlp + mlp) + (mlp * dim + dim)
    backbone = (3 * patch * patch * dim + dim) + (patches + 1) * dim + depth * block + 2 * dim
    head = dim * deconv * 16 + 2 * deconv + deconv * deconv * 16 + 2 * deconv + deconv * joints + joints
    return backbone, backbone + head


def official_layout(dim, depth, mlp, joints=17, deconv=256, grid=(16, 12), patch=16):
    """[(key, shape)] of an official ViTPose state dict (classic decoder), in file order."""
    out = [("backbone.pos_embed", (1, 1 + grid[0] * grid[1], dim)),
           ("backbone.patch_embed.proj.weight", (dim, 3, patch, patch)),
           ("backbone.patch_embed.proj.bias", (dim,))]
    for i in range(depth):
        p = f"backbone.blocks.{i}."
        out += [(p + "norm1.weight", (dim,)), (p + "norm1.bias", (dim,)),
                (p + "attn.qkv.weight", (3 * dim, dim)), (p + "attn.qkv.bias", (3 * dim,)),
                (p + "attn.proj.weight", (dim, dim)), (p + "attn.proj.bias", (dim,)),
                (p + "norm2.weight", (dim,)), (p + "norm2.bias", (dim,)),
                (p + "mlp.fc1.weight", (mlp, dim)), (p + "mlp.fc1.bias", (mlp,)),
                (p + "mlp.fc2.weight", (dim, mlp)), (p + "mlp.fc2.bias", (dim,))]
    out += [("backbone.last_norm.weight", (dim,)), ("backbone.last_norm.bias", (dim,))]
    in_ch = dim
    for idx in (0, 3):
        h = f"keypoint_head.deconv_layers.{idx}."
        bn = f"keypoint_head.deconv_layers.{idx + 1}."
        out += [(h + "weight", (in_ch, deconv, 4, 4))]
        out += [(bn + k, (deconv,)) for k in ("weight", "bias", "running_mean", "running_var")]
        out += [(bn + "num_batches_tracked", ())]
        in_ch = deconv
    out += [("keypoint_head.final_layer.weight", (joints, deconv, 1, 1)),
            ("keypoint_head.final_layer.bias", (joints,))]
    return out


def _cfg_for(size, *opts):
    return load_cfg(H36M, ["MODEL.VIT.SIZE", size, "MODEL.PRETRAINED", ""] + list(opts))


def _meta_net(size):
    with torch.device("meta"):
        return build_pose_net(_cfg_for(size))


def _tiny(seed=0, *opts):
    torch.manual_seed(seed)
    return build_pose_net(load_cfg(TINY, list(opts)))


def _random_official(layout, seed):
    """An 'official file' state dict of random values (BatchNorm variances positive)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = 0.2 * torch.randn(shape, generator=g)
    return sd


def reference_forward(sd, x, heads, depth, eps=1e-6):
    """The official ViTPose forward (eval mode), float64, written out from the state dict."""
    f = F.conv2d(x, sd["backbone.patch_embed.proj.weight"], sd["backbone.patch_embed.proj.bias"],
                 stride=16, padding=2)
    n, c, gh, gw = f.shape
    t = f.reshape(n, c, gh * gw).transpose(1, 2)
    pos = sd["backbone.pos_embed"][0]
    t = t + pos[1:] + pos[0]                          # slot 0 (the old class token) added to all
    d = c // heads
    for i in range(depth):
        p = f"backbone.blocks.{i}."
        y = F.layer_norm(t, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        qkv = y @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = qkv[..., :c], qkv[..., c:2 * c], qkv[..., 2 * c:]
        heads_out = []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            att = torch.softmax((q[..., sl] * d ** -0.5) @ k[..., sl].transpose(1, 2), dim=-1)
            heads_out.append(att @ v[..., sl])
        t = t + torch.cat(heads_out, -1) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        y = F.layer_norm(t, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        hid = y @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]
        hid = 0.5 * hid * (1 + torch.erf(hid / math.sqrt(2)))          # exact GELU
        t = t + hid @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    t = F.layer_norm(t, (c,), sd["backbone.last_norm.weight"], sd["backbone.last_norm.bias"], eps)
    fmap = t.transpose(1, 2).reshape(n, c, gh, gw)
    for idx in (0, 3):
        fmap = F.conv_transpose2d(fmap, sd[f"keypoint_head.deconv_layers.{idx}.weight"], stride=2,
                                  padding=1)
        bn = f"keypoint_head.deconv_layers.{idx + 1}."
        mean, var = sd[bn + "running_mean"][:, None, None], sd[bn + "running_var"][:, None, None]
        fmap = (fmap - mean) / torch.sqrt(var + 1e-5) * sd[bn + "weight"][:, None, None] \
            + sd[bn + "bias"][:, None, None]
        fmap = fmap.clamp(min=0)
    return F.conv2d(fmap, sd["keypoint_head.final_layer.weight"], sd["keypoint_head.final_layer.bias"])


# ----------------------------------------------------------------------------- structure

def test_registry_lists_vitpose_and_sizes_resolve():
    assert "vitpose" in model_2d.registered_names() and model_2d.resolve_name("vitpose") == "vitpose"
    assert isinstance(_tiny(), model_2d.ViTPose)
    for alias, name in (("B", "base"), ("l", "large"), ("Huge", "huge"), ("s", "small")):
        assert model_2d.vitpose.resolve_size(alias)[0] == name
    with pytest.raises(UserError, match="MODEL.VIT.SIZE='giant'"):
        build_pose_net(_cfg_for("giant"))


@pytest.mark.parametrize("size", sorted(OFFICIAL))
def test_official_sizes_layout_count_and_forward_shape(size):
    o = OFFICIAL[size]
    preset = model_2d.VIT_SIZES[size]
    assert (preset.embed_dim, preset.depth, preset.num_heads, preset.drop_path_rate,
            preset.layer_decay, preset.deconv_channels) == (o["dim"], o["depth"], o["heads"],
                                                            o["drop"], o["decay"], 256)
    net = _meta_net(size)
    got = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
    assert sorted(got) == sorted(official_layout(o["dim"], o["depth"], o["mlp"]))
    backbone, total = parameter_count(o["dim"], o["depth"], o["mlp"])
    assert sum(p.numel() for p in net.backbone.parameters()) == backbone
    assert sum(p.numel() for p in net.parameters()) == total
    assert abs(backbone / 1e6 - o["backbone_m"]) <= 0.02 * o["backbone_m"]
    # stochastic depth grows linearly from 0 to the official rate
    rates = [blk.drop_path.p for blk in net.backbone.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(o["drop"])
    assert np.allclose(np.diff(rates), o["drop"] / (o["depth"] - 1))
    out = net(torch.empty(2, 3, 256, 192, device="meta"))
    assert out.shape == (2, 17, 64, 48)


def test_tiny_forward_every_parameter_gets_a_gradient():
    net = _tiny(1).train()
    x = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(0))
    out = net(x)
    assert out.shape == (2, 17, 32, 24) and torch.isfinite(out).all()
    out.square().mean().backward()
    bad = [n for n, p in net.named_parameters()
           if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert bad == []


def test_matches_the_official_forward_on_an_official_layout_file(tmp_path):
    size = model_2d.VIT_SIZES["tiny"]
    layout = official_layout(size.embed_dim, size.depth, int(size.embed_dim * size.mlp_ratio),
                             deconv=size.deconv_channels, grid=(8, 6))
    sd = _random_official(layout, seed=3)
    # as released: mmcv wraps the weights with run metadata (numpy scalars included)
    path = tmp_path / "vitpose_tiny_coco.pth"
    torch.save({"meta": {"mmpose_version": "0.24.0", "epoch": 210, "time": "Tue Apr 26 2022",
                         "hook_msgs": {"best_score": np.float64(0.758)}},
                "state_dict": sd}, path)
    net = _tiny(7)
    report = load_pose_checkpoint(net, str(path), strict=True)
    assert report.layout == "dict['state_dict']" and len(report.loaded) == len(layout)
    assert all(torch.equal(net.state_dict()[k], sd[k]) for k in sd)
    net = net.double().eval()
    x = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = reference_forward({k: v.double() if v.is_floating_point() else v for k, v in sd.items()},
                            x, heads=size.num_heads, depth=size.depth)
    with torch.no_grad():
        got = net(x)
    assert got.shape == ref.shape == (2, 17, 32, 24)
    assert torch.allclose(got, ref, rtol=1e-9, atol=1e-9)


def test_round_trip_and_strict_refusal_of_another_size(tmp_path):
    src = _tiny(2)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = _tiny(5)
    load_pose_checkpoint(dst, str(path), strict=True)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in src.state_dict().items())
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        assert torch.equal(src.eval()(x), dst.eval()(x))
    # a ViT-B file does not load into the tiny network: keys and shapes are named
    base = {k: torch.zeros(s) for k, s in official_layout(768, 12, 3072)}
    with pytest.raises(CheckpointMismatchError, match="backbone.blocks.2.norm1.weight"):
        load_pose_checkpoint(_tiny(), base, strict=True)


def test_backbone_only_from_an_official_file_leaves_the_head_fresh():
    # the README's way to use an unconverted COCO file: PRETRAINED_LAYERS ['backbone']
    size = model_2d.VIT_SIZES["tiny"]
    sd = _random_official(official_layout(size.embed_dim, size.depth, 64, deconv=16, grid=(8, 6)), 11)
    net = _tiny(3)
    head0 = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("keypoint_head.")}
    report = model_2d.init_pretrained(net, {"state_dict": sd}, ["backbone"])
    own = net.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in sd if k.startswith("backbone."))
    assert all(torch.equal(own[k], v) for k, v in head0.items())
    assert sorted(report.not_selected) == sorted(head0)


def test_bad_sizes_raise_user_errors():
    with pytest.raises(UserError, match="divisible by MODEL.VIT.PATCH_SIZE=16"):
        build_pose_net(load_cfg(TINY, ["MODEL.IMAGE_SIZE", [100, 128], "MODEL.HEATMAP_SIZE", [25, 32]]))
    with pytest.raises(UserError, match="HEATMAP_SIZE"):
        build_pose_net(load_cfg(TINY, ["MODEL.HEATMAP_SIZE", [48, 64]]))
    with pytest.raises(UserError, match="pos_embed"):
        _tiny()(torch.zeros(1, 3, 256, 192))


def test_drop_path_keeps_or_drops_whole_samples_and_rescales():
    drop = model_2d.vitpose.DropPath(0.25).train()
    torch.manual_seed(0)
    x = torch.ones(4000, 3, 5)
    y = drop(x)
    per_sample = y.reshape(4000, -1)
    kept = per_sample[:, 0] > 0
    assert torch.all(per_sample[kept] == 1 / 0.75) and torch.all(per_sample[~kept] == 0)
    assert abs(kept.float().mean().item() - 0.75) < 0.03
    assert torch.equal(drop.eval()(x), x)


def test_bf16_autocast_forward_and_backward():
    net = _tiny(4).train()
    x = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(2))
    ref = net(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert out.dtype == torch.float32            # the heatmap layer computes in float32 (model_2d/heads.py)
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max()
    out.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


# ----------------------------------------------------------------------------- recipe

def test_layer_decay_groups_by_hand():
    cfg = load_cfg(TINY, ["TRAIN.LR", "0.001", "TRAIN.WD", "0.1", "TRAIN.LAYER_DECAY", "0.5"])
    net = build_pose_net(cfg)
    opt = make_optimizer(net, cfg)
    assert isinstance(opt, torch.optim.AdamW)
    got = {}
    for group in opt.param_groups:
        for p in group["params"]:
            got[id(p)] = (group["lr"], group["weight_decay"])
    assert opt.param_groups[0]["lr"] == 0.001                      # the configured LR is shown first
    # depth 2: embeddings layer 0 -> 0.5**3, block i -> 0.5**(2 - i), last norm and head -> 1
    expected = {
        "backbone.pos_embed": (0.001 * 0.125, 0.0),
        "backbone.patch_embed.proj.weight": (0.001 * 0.125, 0.1),
        "backbone.patch_embed.proj.bias": (0.001 * 0.125, 0.0),
        "backbone.blocks.0.norm1.weight": (0.001 * 0.25, 0.0),
        "backbone.blocks.0.attn.qkv.weight": (0.001 * 0.25, 0.1),
        "backbone.blocks.0.attn.qkv.bias": (0.001 * 0.25, 0.0),
        "backbone.blocks.0.mlp.fc2.weight": (0.001 * 0.25, 0.1),
        "backbone.blocks.1.attn.proj.weight": (0.001 * 0.5, 0.1),
        "backbone.blocks.1.norm2.bias": (0.001 * 0.5, 0.0),
        "backbone.last_norm.weight": (0.001, 0.0),
        "keypoint_head.deconv_layers.0.weight": (0.001, 0.1),
        "keypoint_head.deconv_layers.1.weight": (0.001, 0.0),
        "keypoint_head.final_layer.weight": (0.001, 0.1),
        "keypoint_head.final_layer.bias": (0.001, 0.0),
    }
    params = dict(net.named_parameters())
    for name, (lr, wd) in expected.items():
        assert got[id(params[name])] == pytest.approx((lr, wd)), name
    assert len(got) == len(params)                                  # every parameter, once
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)
    # one AdamW step with zero gradients: only weight decay moves a weight, by lr * wd * w
    w0 = params["backbone.blocks.0.attn.qkv.weight"].detach().clone()
    b0 = params["backbone.blocks.0.attn.qkv.bias"].detach().clone()
    for p in params.values():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(params["backbone.blocks.0.attn.qkv.weight"], w0 * (1 - 0.00025 * 0.1))
    assert torch.equal(params["backbone.blocks.0.attn.qkv.bias"], b0)


def test_adamw_on_a_network_without_layers_is_one_layer():
    cfg = load_cfg(str(ROOT / "experiments/demo/tiny_96x128.yaml"), ["TRAIN.OPTIMIZER", "adamw",
                                                                      "TRAIN.LAYER_DECAY", "0.5"])
    net = build_pose_net(cfg)
    opt = make_optimizer(net, cfg)
    assert {g["lr"] for g in opt.param_groups} == {float(cfg.TRAIN.LR)}
    # the default (follow the ViT size) leaves a network without layers at one LR too
    cfg = load_cfg(str(ROOT / "experiments/demo/tiny_96x128.yaml"), ["TRAIN.OPTIMIZER", "adamw"])
    assert cfg.TRAIN.LAYER_DECAY < 0
    assert {g["lr"] for g in make_optimizer(net, cfg).param_groups} == {float(cfg.TRAIN.LR)}
    with pytest.raises(TypeError, match="adamw needs the detector module"):
        make_optimizer(net.parameters(), cfg)
    with pytest.raises(UserError, match="TRAIN.LAYER_DECAY"):
        make_optimizer(net, load_cfg(TINY, ["TRAIN.LAYER_DECAY", "0"]))


def _expected_scales(net, depth, decay):
    """{parameter name: LR scale} by the rule lib/engine/optim.py documents, written out here:
    embeddings at layer 0, block i at layer i + 1, last norm and head at depth + 1; a parameter
    of layer l scales by decay ** (depth + 1 - l)."""
    out = {}
    for name, _ in net.named_parameters():
        if name == "backbone.pos_embed" or name.startswith("backbone.patch_embed."):
            layer = 0
        elif name.startswith("backbone.blocks."):
            layer = int(name.split(".")[2]) + 1
        else:
            layer = depth + 1
        out[name] = decay ** (depth + 1 - layer)
    return out


@pytest.mark.parametrize("size, decay", [("small", 0.8), ("base", 0.75), ("large", 0.8),
                                         ("huge", 0.85), ("S", 0.8), ("L", 0.8)])
def test_default_layer_decay_follows_the_size(size, decay):
    assert load_cfg(H36M).TRAIN.LAYER_DECAY == get_cfg().TRAIN.LAYER_DECAY == -1.0
    depth = {"small": 12, "base": 12, "large": 24, "huge": 32, "S": 12, "L": 24}[size]
    cfg = _cfg_for(size)                        # TRAIN.LAYER_DECAY left at the default
    with torch.device("meta"):
        net = build_pose_net(cfg)
    opt = make_optimizer(net, cfg)
    want = _expected_scales(net, depth, decay)
    lr = float(cfg.TRAIN.LR)
    seen = {}
    for group in opt.param_groups:
        for p in group["params"]:
            seen[id(p)] = group
    for name, p in net.named_parameters():
        group = seen[id(p)]
        assert group["lr_scale"] == pytest.approx(want[name], rel=1e-12), name
        assert group["lr"] == pytest.approx(lr * want[name], rel=1e-12), name
    # the embeddings learn slowest: decay ** (depth + 1); the head at the full LR
    assert min(g["lr_scale"] for g in opt.param_groups) == pytest.approx(decay ** (depth + 1))
    assert opt.param_groups[0]["lr"] == lr


@pytest.mark.parametrize("size", ["small", "large", "huge"])
def test_an_explicit_layer_decay_wins_over_the_size(size):
    depth = OFFICIAL[size]["depth"]
    cfg = _cfg_for(size, "TRAIN.LAYER_DECAY", "0.6")
    with torch.device("meta"):
        net = build_pose_net(cfg)
    opt = make_optimizer(net, cfg)
    want = _expected_scales(net, depth, 0.6)
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    for name, p in net.named_parameters():
        assert groups[id(p)]["lr_scale"] == pytest.approx(want[name], rel=1e-12), name
    # 1 switches it off: one LR for every parameter
    cfg = _cfg_for(size, "TRAIN.LAYER_DECAY", "1")
    with torch.device("meta"):
        net = build_pose_net(cfg)
    assert {g["lr"] for g in make_optimizer(net, cfg).param_groups} == {float(cfg.TRAIN.LR)}


def test_linear_warmup_then_step_schedule_by_hand():
    cfg = load_cfg(TINY, ["TRAIN.WARMUP_ITERS", "4", "TRAIN.WARMUP_RATIO", "0.001",
                          "TRAIN.LR_STEP", [1], "TRAIN.LR_FACTOR", "0.1", "TRAIN.LAYER_DECAY", "0.5"])
    net = build_pose_net(cfg)
    opt = make_optimizer(net, cfg)
    make_scheduler(opt, cfg)
    base = [g["lr"] for g in opt.param_groups]
    seen = []
    for step in range(6):
        optim.apply_warmup(opt, cfg, 0, step, lr_factor)
        seen.append([g["lr"] / b for g, b in zip(opt.param_groups, base)])
    # mmcv linear: 1 - (1 - s/4) * (1 - 0.001) for s < 4, then the scheduled LR again
    for step, ratios in enumerate(seen):
        want = 1 - (1 - step / 4) * 0.999 if step < 4 else 1.0
        assert ratios == pytest.approx([want] * len(base)), step
    # a warm-up reaching into epoch 1 warms up the stepped LR (x0.1)
    optim.apply_warmup(opt, cfg, 1, 2, lr_factor)
    assert opt.param_groups[0]["lr"] == pytest.approx(base[0] * 0.1 * (1 - 0.5 * 0.999))
    assert optim.warmup_factor(10, 0, 0.001) == 1.0


def test_gradient_clipping_scales_to_the_norm():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=1.0)
    loss = (w * torch.tensor([3.0, 4.0, 12.0])).sum()               # gradient norm 13
    backward_and_step(loss, opt, None, clip=1.0)
    assert torch.allclose(w.detach(), -torch.tensor([3.0, 4.0, 12.0]) / 13.0)


def test_experiment_files():
    for path, dataset in ((H36M, "h36m"), (PANOPTIC, "panoptic")):
        cfg = load_cfg(path)
        assert cfg.MODEL.NAME == "vitpose" and cfg.MODEL.VIT.SIZE == "base"
        assert list(cfg.MODEL.IMAGE_SIZE) == [192, 256] and list(cfg.MODEL.HEATMAP_SIZE) == [48, 64]
        assert cfg.DATASET.DATASET == dataset and cfg.TRAIN.AMP == "bf16"
        # the layer decay follows MODEL.VIT.SIZE (base 0.75), so a size override gets its own
        assert (cfg.TRAIN.OPTIMIZER, cfg.TRAIN.LR, cfg.TRAIN.WD, cfg.TRAIN.LAYER_DECAY) == \
            ("adamw", 5e-4, 0.1, -1.0)
        assert (cfg.TRAIN.WARMUP_ITERS, cfg.TRAIN.WARMUP_RATIO, cfg.TRAIN.CLIP_GRAD_NORM) == (500, 0.001, 1.0)
        assert cfg.TRAIN.LR_BUMP_EPOCH < 0


# ----------------------------------------------------------------------------- end to end

def test_guided_run_of_the_tiny_preset_lowers_the_training_loss(tmp_path):
    import model_3d
    from run import train_hrnet

    data = make_tiny_h36m(tmp_path / "data", seed=1, frames_per_seq=4, image_size=128)
    # a frozen, randomly initialised sb (plain state dict; stats from the prepared split): the
    # guidance path is complete, and training a lifter would only cost time here
    sb = tmp_path / "sb.pth"
    torch.manual_seed(0)
    torch.save(model_3d.build_lifter_net("sb", 17).state_dict(), sb)
    common = ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(tmp_path / "out"), "USE_CUDA", "False",
              "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "16", "PRINT_FREQ", "1",
              "TRAIN.MAX_STEPS_PER_EPOCH", "6", "MODEL_3D.WEIGHTS.SB", str(sb)]
    out = train_hrnet.main(["--cfg", TINY, "--epochs", "1", "--loss_3d", "--loss_3d_z", "--model_3d", "sb",
                            "--ohklm", "TRAIN.WARMUP_ITERS", "2", "TRAIN.LR", "0.003"] + common)
    hist = json.loads((Path(out["run_dir"]) / "history.json").read_text())
    totals = [e["train"]["total"] for e in hist["epochs"]]
    assert len(totals) == 2 and all(math.isfinite(t) for t in totals)
    assert hist["epochs"][0]["train"]["loss_3d"] > 0
    assert totals[1] < 0.8 * totals[0], totals
    state = torch.load(Path(out["run_dir"]) / "final_state.pth", weights_only=True)
    assert sorted(state) == sorted(k for k, _ in official_layout(
        32, 2, 64, deconv=16, grid=(8, 6)))


def test_official_coco_file_converts_to_the_h36m_head(tmp_path):
    """An official-layout ViTPose COCO file through run/convert_weights.py: the backbone and decoder
    are copied bit for bit, the 12 shared joints take their COCO rows, the pelvis the mean of the two
    hips (README's rule), and the result loads strictly into the tiny preset."""
    from run import convert_weights

    coco = ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
            "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle")
    h36m = ("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine", "thorax", "neck",
            "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist")
    sd = _random_official(official_layout(32, 2, 64, deconv=16, grid=(8, 6)), seed=3)
    src = tmp_path / "vitpose_tiny_coco.pth"
    torch.save({"meta": {"epoch": 210}, "state_dict": sd}, src)
    dst = tmp_path / "converted.pth"
    convert_weights.main(["--src", str(src), "--format", "coco", "--cfg", TINY, "--dst", str(dst)])

    out = torch.load(dst, weights_only=True)
    net = _tiny()
    net.load_state_dict(out, strict=True)
    head = "keypoint_head.final_layer."
    for key, value in sd.items():
        if not key.startswith(head):
            assert torch.equal(out[key], value), key
    w, b = sd[head + "weight"], sd[head + "bias"]
    for h, name in enumerate(h36m):
        if name in coco:
            c = coco.index(name)
            assert torch.equal(out[head + "weight"][h], w[c]) and torch.equal(out[head + "bias"][h], b[c]), name
    hips = [coco.index("l_hip"), coco.index("r_hip")]
    torch.testing.assert_close(out[head + "weight"][0], w[hips].mean(0))
    torch.testing.assert_close(out[head + "bias"][0], b[hips].mean(0))
