"""Public HRNet-family checkpoints -> starting checkpoints of our 17-joint detector.

The "official" files are built here from key names and shapes enumerated from the official
network definitions (leoxiaobin/deep-high-resolution-net.pytorch pose_hrnet.py for the COCO / MPII
keypoint models, HRNet/HRNet-Image-Classification cls_hrnet.py for hrnet_w32-36af842e.pth), written
independently of model_2d. Expected channel maps are written out by hand as index tables.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import ROOT, make_tiny_h36m
from lib.config import load_cfg
from lib.utils.errors import UserError, run_cli
from model_2d import build_pose_net, load_pose_checkpoint
from model_2d import convert as cv
from model_2d.registry import POSE_NETS

TINY = str(ROOT / "experiments/demo/tiny_96x128.yaml")
W32 = str(ROOT / "experiments/h36m/w32_384x288_adam_lr1e-3.yaml")
PRETRAIN = {"h36m": ROOT / "experiments/h36m/w32_384x288_pretrain2d.yaml",
            "panoptic": ROOT / "experiments/panoptic/w32_384x288_pretrain2d.yaml"}

# Human3.6M channel -> COCO channel (COCO: 0 nose, 1/2 l/r eye, 3/4 l/r ear, 5/6 l/r shoulder,
# 7/8 elbow, 9/10 wrist, 11/12 hip, 13/14 knee, 15/16 ankle; H36M order in lib/core/skeleton.py).
COCO_SHARED = {1: 12, 2: 14, 3: 16, 4: 11, 5: 13, 6: 15, 11: 5, 12: 7, 13: 9, 14: 6, 15: 8, 16: 10}
COCO_RULE = {**{h: (c,) for h, c in COCO_SHARED.items()}, 9: (0,),
             0: (11, 12), 7: (5, 6, 11, 12), 8: (5, 6), 10: (1, 2, 3, 4)}
# MPII: 0 r_ankle 1 r_knee 2 r_hip 3 l_hip 4 l_knee 5 l_ankle 6 pelvis 7 thorax 8 upper_neck
# 9 head_top 10 r_wrist 11 r_elbow 12 r_shoulder 13 l_shoulder 14 l_elbow 15 l_wrist.
MPII_SHARED = {1: 2, 2: 1, 3: 0, 4: 3, 5: 4, 6: 5, 11: 13, 12: 14, 13: 15, 14: 12, 15: 11, 16: 10}
MPII_RULE = {**{h: (m,) for h, m in MPII_SHARED.items()}, 0: (6,), 8: (7,), 9: (8,), 10: (9,),
             7: (6, 7)}
RULES = {"coco": (17, COCO_RULE), "mpii": (16, MPII_RULE)}

TINY_NET = {"stage1": (1, 16), "stages": [(1, [1, 1], [16, 32]), (1, [1, 1, 1], [16, 32, 64]),
                                          (1, [1, 1, 1, 1], [16, 32, 64, 128])]}


def _width(c, modules=(1, 4, 3)):
    chans = [c, 2 * c, 4 * c, 8 * c]
    return {"stage1": (4, 64), "stages": [(modules[0], [4] * 2, chans[:2]), (modules[1], [4] * 3, chans[:3]),
                                          (modules[2], [4] * 4, chans)]}


def hrnet_shapes(net, num_joints=17, classification=False):
    """{key: shape} of the official pose HRNet (or, with classification, the ImageNet HRNet)."""
    s = {}

    def conv(name, cout, cin, k, bias=False):
        s[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            s[f"{name}.bias"] = (cout,)

    def bn(name, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            s[f"{name}.{p}"] = (c,)
        s[f"{name}.num_batches_tracked"] = ()

    def bottleneck(name, cin, planes):
        conv(f"{name}.conv1", planes, cin, 1), bn(f"{name}.bn1", planes)
        conv(f"{name}.conv2", planes, planes, 3), bn(f"{name}.bn2", planes)
        conv(f"{name}.conv3", 4 * planes, planes, 1), bn(f"{name}.bn3", 4 * planes)
        if cin != 4 * planes:
            conv(f"{name}.downsample.0", 4 * planes, cin, 1), bn(f"{name}.downsample.1", 4 * planes)
        return 4 * planes

    def basic(name, cin, planes):
        conv(f"{name}.conv1", planes, cin, 3), bn(f"{name}.bn1", planes)
        conv(f"{name}.conv2", planes, planes, 3), bn(f"{name}.bn2", planes)
        return planes

    conv("conv1", 64, 3, 3), bn("bn1", 64), conv("conv2", 64, 64, 3), bn("bn2", 64)
    c = 64
    for b in range(net["stage1"][0]):
        c = bottleneck(f"layer1.{b}", c, net["stage1"][1])
    pre = [c]
    for si, (n_mod, blocks, chans) in enumerate(net["stages"], start=2):
        t = f"transition{si - 1}"
        for i, ch in enumerate(chans):
            if i < len(pre):
                if ch != pre[i]:
                    conv(f"{t}.{i}.0", ch, pre[i], 3), bn(f"{t}.{i}.1", ch)
            else:
                for k in range(i + 1 - len(pre)):
                    cout = ch if k == i - len(pre) else pre[-1]
                    conv(f"{t}.{i}.{k}.0", cout, pre[-1], 3), bn(f"{t}.{i}.{k}.1", cout)
        for m in range(n_mod):
            p = f"stage{si}.{m}"
            for b, ch in enumerate(chans):
                for k in range(blocks[b]):
                    basic(f"{p}.branches.{b}.{k}", ch, ch)
            last = si == 4 and m == n_mod - 1
            for i in range(len(chans) if (classification or not last) else 1):
                for j in range(len(chans)):
                    if j > i:
                        conv(f"{p}.fuse_layers.{i}.{j}.0", chans[i], chans[j], 1)
                        bn(f"{p}.fuse_layers.{i}.{j}.1", chans[i])
                    for k in range(i - j):
                        cout = chans[i] if k == i - j - 1 else chans[j]
                        conv(f"{p}.fuse_layers.{i}.{j}.{k}.0", cout, chans[j], 3)
                        bn(f"{p}.fuse_layers.{i}.{j}.{k}.1", cout)
        pre = chans
    if classification:
        head = [32, 64, 128, 256]
        for i, ch in enumerate(pre):
            bottleneck(f"incre_modules.{i}.0", ch, head[i])
        for i in range(3):
            conv(f"downsamp_modules.{i}.0", 4 * head[i + 1], 4 * head[i], 3, bias=True)
            bn(f"downsamp_modules.{i}.1", 4 * head[i + 1])
        conv("final_layer.0", 2048, 4 * head[3], 1, bias=True), bn("final_layer.1", 2048)
        s["classifier.weight"], s["classifier.bias"] = (1000, 2048), (1000,)
    else:
        conv("final_layer", num_joints, pre[0], 1, bias=True)
    return s


def random_state(shapes, seed):
    """Values that make a network's outputs O(1) and every tensor distinct."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var") or (k.endswith(".weight") and len(shape) == 1):
            out[k] = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            out[k] = torch.randn(shape, generator=g) * (0.7 / math.sqrt(fan_in))
        else:
            out[k] = 0.1 * torch.randn(shape, generator=g)
    return out


def zero_views(shapes):
    """Shape-only stand-ins that take no memory (for W32 / W48 layouts)."""
    return {k: torch.zeros((), dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
            .expand(shape) for k, shape in shapes.items()}


def _shapes(net):
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _cfg(path=TINY, *opts):
    cfg = load_cfg(path, list(opts))
    cfg.CFG_FILE = path
    return cfg


def _save(obj, path):
    torch.save(obj, path)
    return str(path)


# ----------------------------------------------------------------------------- layouts
def test_enumerated_official_pose_layout_is_our_network():
    assert hrnet_shapes(TINY_NET, 17) == _shapes(build_pose_net(_cfg()))


@pytest.mark.parametrize("fmt", ["coco", "mpii"])
def test_keypoint_file_converts_and_loads_strictly(tmp_path, fmt):
    n_src, rule = RULES[fmt]
    state = random_state(hrnet_shapes(TINY_NET, n_src), seed=1)
    out, report = cv.convert_checkpoint(_save(state, tmp_path / "pose.pth"), fmt, _cfg())
    net = build_pose_net(_cfg())
    load_pose_checkpoint(net, out, strict=True)
    got = net.state_dict()
    backbone = [k for k in state if not k.startswith("final_layer.")]
    assert sorted(report.copied) == sorted(backbone)
    assert all(torch.equal(got[k], state[k]) for k in backbone)
    w, b = state["final_layer.weight"].double(), state["final_layer.bias"].double()
    for h, src in rule.items():
        want_w = sum(w[s] for s in src) / len(src)
        want_b = sum(b[s] for s in src) / len(src)
        assert torch.allclose(got["final_layer.weight"][h].double(), want_w, rtol=0, atol=1e-7), h
        assert torch.allclose(got["final_layer.bias"][h].double(), want_b, rtol=0, atol=1e-7), h
        if len(src) == 1:                                       # one-to-one rows are exact copies
            assert torch.equal(got["final_layer.weight"][h], state["final_layer.weight"][src[0]])
    assert len(report.mapped) == sum(len(s) == 1 for s in rule.values())
    assert len(report.derived) == sum(len(s) > 1 for s in rule.values())
    assert report.fresh == [] and report.dropped == []
    text = report.summary()
    assert "r_hip<-r_hip" in text and ("pelvis<-mean(l_hip+r_hip)" in text if fmt == "coco"
                                       else "spine<-mean(pelvis+thorax)" in text)


@pytest.mark.parametrize("fmt", ["coco", "mpii"])
def test_heatmaps_of_shared_joints_equal_the_source_channels(fmt):
    n_src, rule = RULES[fmt]
    state = random_state(hrnet_shapes(TINY_NET, n_src), seed=2)
    src_net = build_pose_net(_cfg(TINY, "MODEL.NUM_JOINTS", n_src))
    load_pose_checkpoint(src_net, state, strict=True)
    out, _ = cv.convert_state_dict(state, fmt, _cfg())
    dst_net = build_pose_net(_cfg())
    load_pose_checkpoint(dst_net, out, strict=True)
    x = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        src = src_net.eval()(x).double()
        dst = dst_net.eval()(x).double()
    scale = src.abs().max().item()
    assert 0.05 < scale < 1e3                                  # non-trivial maps
    for h, s in rule.items():
        want = src[:, list(s)].mean(dim=1)                     # derived: mean of the source maps
        assert torch.allclose(dst[:, h], want, rtol=0, atol=1e-5 * scale), (fmt, h, s)


def test_imagenet_w32_file_gives_the_backbone_and_a_fresh_head(tmp_path):
    shapes = hrnet_shapes(_width(32), classification=True)
    assert shapes["incre_modules.0.0.downsample.0.weight"] == (128, 32, 1, 1)
    assert shapes["stage4.2.fuse_layers.3.0.2.0.weight"] == (256, 32, 3, 3)   # multi-scale stage 4
    cfg = _cfg(W32)
    net = build_pose_net(cfg)
    out, report = cv.convert_checkpoint(_save(zero_views(shapes), tmp_path / "hrnet_w32-36af842e.pth"),
                                        "imagenet", cfg, model=net)
    load_pose_checkpoint(net, out, strict=True)
    pose = hrnet_shapes(_width(32), 17)
    assert sorted(report.copied) == sorted(k for k in pose if not k.startswith("final_layer"))
    assert report.fresh == ["final_layer.weight", "final_layer.bias"]
    assert sorted(report.dropped) == sorted(k for k in shapes if k not in pose or k.startswith("final_layer"))
    assert {"classifier.weight", "final_layer.0.weight", "downsamp_modules.2.1.running_var",
            "stage4.2.fuse_layers.1.0.0.0.weight"} <= set(report.dropped)


def test_imagenet_values_are_copied_head_fresh_and_old_files_accepted():
    shapes = hrnet_shapes(TINY_NET, classification=True)
    state = random_state(shapes, seed=4)
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}   # pre-1.0 file
    cfg = _cfg()
    out, report = cv.convert_state_dict(old, "imagenet", cfg)
    again, _ = cv.convert_state_dict(old, "imagenet", cfg)
    fresh = build_pose_net(cfg).state_dict()
    for k, v in out.items():
        if k.startswith("final_layer"):
            assert torch.equal(v, again[k]) and v.shape == fresh[k].shape    # same bytes every time
            assert v.abs().max() < 0.01                                      # the N(0, 0.001) init
        elif k.endswith("num_batches_tracked"):
            assert v.item() == 0
        else:
            assert torch.equal(v, state[k]), k
    assert len(report.filled_num_batches_tracked) == sum(k.endswith("num_batches_tracked") for k in fresh)


def test_imagenet_takes_only_pretrained_layers():
    state = random_state(hrnet_shapes(TINY_NET, classification=True), seed=5)
    cfg = _cfg(TINY, "MODEL.EXTRA.PRETRAINED_LAYERS", ["conv1", "bn1", "layer1"])
    out, report = cv.convert_state_dict(state, "imagenet", cfg)
    assert report.copied and all(k.split(".")[0] in ("conv1", "bn1", "layer1") for k in report.copied)
    assert "stage2.0.branches.0.0.conv1.weight" in report.fresh
    assert torch.equal(out["layer1.0.conv3.weight"], state["layer1.0.conv3.weight"])
    assert not torch.equal(out["conv2.weight"], state["conv2.weight"])


def test_w48_file_into_w32_config_is_refused_naming_key_and_shapes(tmp_path, capsys):
    from run import convert_weights
    src = _save(zero_views(hrnet_shapes(_width(48, (1, 4, 3)), 17)), tmp_path / "pose_hrnet_w48_384x288.pth")
    dst = tmp_path / "out.pth"
    code = run_cli(convert_weights.main, ["--src", src, "--format", "coco", "--cfg", W32, "--dst", str(dst)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not dst.exists()
    assert "'transition1.0.0.weight'" in err[0] and "(48, 256, 3, 3)" in err[0] and "(32, 256, 3, 3)" in err[0]


def test_wrong_format_and_wrong_file_kind_are_named():
    coco = random_state(hrnet_shapes(TINY_NET, 17), seed=6)
    with pytest.raises(UserError, match="17 channels.*mpii means 16.*--format coco"):
        cv.convert_state_dict(coco, "mpii", _cfg())
    imagenet = random_state(hrnet_shapes(TINY_NET, classification=True), seed=6)
    with pytest.raises(UserError, match="--format imagenet"):
        cv.convert_state_dict(imagenet, "coco", _cfg())
    with pytest.raises(UserError, match="h36m, coco, mpii, imagenet"):
        cv.convert_state_dict(coco, "posetrack", _cfg())
    with pytest.raises(UserError, match="NUM_JOINTS"):
        cv.convert_state_dict(coco, "coco", _cfg(TINY, "MODEL.NUM_JOINTS", 15))


class _ToyViTPose(nn.Module):
    """The layout of a ViTPose-style file: backbone.* and keypoint_head.final_layer (1x1 conv)."""

    def __init__(self, cfg):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.keypoint_head = nn.Module()
        self.keypoint_head.final_layer = nn.Conv2d(8, int(cfg.MODEL.NUM_JOINTS), 1)

    def forward(self, x):
        return self.keypoint_head.final_layer(self.backbone(x))


def test_a_new_family_needs_only_its_head_row(monkeypatch, tmp_path):
    monkeypatch.setitem(POSE_NETS, "toy_vitpose", _ToyViTPose)
    cfg = _cfg(TINY, "MODEL.NAME", "toy_vitpose")
    with pytest.raises(UserError, match="HEAD_PREFIXES"):
        cv.convert_state_dict({}, "coco", cfg)
    monkeypatch.setitem(cv.HEAD_PREFIXES, "toy_vitpose", "keypoint_head.final_layer")
    src = _ToyViTPose(_cfg(TINY, "MODEL.NUM_JOINTS", 17))
    state = random_state(_shapes(src), seed=7)
    # mmpose stores {"state_dict": ..., "meta": ...}; DataParallel adds "module."
    wrapped = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "meta": {"epoch": 210}}
    out, report = cv.convert_checkpoint(_save(wrapped, tmp_path / "vitpose.pth"), "coco", cfg)
    net = build_pose_net(cfg)
    load_pose_checkpoint(net, out, strict=True)
    assert torch.equal(out["backbone.0.weight"], state["backbone.0.weight"])
    w = state["keypoint_head.final_layer.weight"]
    assert torch.equal(out["keypoint_head.final_layer.weight"][2], w[14])          # r_knee
    assert torch.allclose(out["keypoint_head.final_layer.weight"][0], (w[11] + w[12]) / 2, atol=1e-7)
    assert "'module.' prefix stripped" in report.layout


# ----------------------------------------------------------------------------- the command line
def test_cli_writes_atomically_and_never_overwrites_silently(tmp_path, capsys):
    from run import convert_weights
    src = _save(random_state(hrnet_shapes(TINY_NET, 17), seed=8), tmp_path / "pose_hrnet_coco.pth")
    dst = tmp_path / "weights" / "converted.pth"
    args = ["--src", src, "--format", "coco", "--cfg", TINY, "--dst", str(dst)]
    res = convert_weights.main(args)
    printed = capsys.readouterr().out
    assert "mapped head channels (13)" in printed and "derived head channels (4" in printed
    assert "copied (backbone)" in printed and str(dst) in printed
    state = torch.load(dst, weights_only=True)
    assert set(state) == set(_shapes(build_pose_net(_cfg())))      # a bare state dict, like model_best.pth
    assert sorted(p.name for p in dst.parent.iterdir()) == ["converted.pth"]     # no temporary left
    assert res["report"].mapped["l_wrist"] == "l_wrist"
    before = dst.read_bytes()
    assert run_cli(convert_weights.main, args) == 2
    assert "--overwrite" in capsys.readouterr().err and dst.read_bytes() == before
    assert run_cli(convert_weights.main, args + ["--overwrite"]) == 0
    assert run_cli(convert_weights.main, ["--src", src, "--format", "coco", "--cfg", TINY, "--dst", src,
                                          "--overwrite"]) == 2
    assert "source file" in capsys.readouterr().err


# ----------------------------------------------------------------------------- loading from the config
def test_pretrained_file_converted_at_load_time(tmp_path):
    from lib.engine.builders import build_detector
    state = random_state(hrnet_shapes(TINY_NET, 17), seed=9)
    path = _save(state, tmp_path / "pose_hrnet_coco.pth")
    offline, _ = cv.convert_state_dict(state, "coco", _cfg())
    model = build_detector(_cfg(TINY, "MODEL.PRETRAINED", path, "MODEL.PRETRAINED_FORMAT", "coco"))
    assert all(torch.equal(v, offline[k]) for k, v in model.state_dict().items())
    with pytest.raises(UserError, match="coco, mpii, imagenet"):
        build_detector(_cfg(TINY, "MODEL.PRETRAINED", path, "MODEL.PRETRAINED_FORMAT", "cocoa"))


def test_missing_start_checkpoint_says_how_to_make_it(tmp_path):
    from lib.engine.builders import build_detector
    gone = str(tmp_path / "hrnet_coco_h36m.pth")
    for opts in (["MODEL.PRETRAINED", gone], ["TRAIN.FINETUNE", gone]):
        with pytest.raises(FileNotFoundError) as err:           # MissingWeightsError: also a UserError
            build_detector(_cfg(TINY, *opts))
        msg = str(err.value)
        assert isinstance(err.value, UserError) and gone in msg
        for needle in ("pose_hrnet_w32_384x288.pth", "python run/convert_weights.py", "--format coco",
                       "experiments/h36m/w32_384x288_pretrain2d.yaml", "python run/train_hrnet.py",
                       "MODEL.PRETRAINED_FORMAT"):
            assert needle in msg, needle
    panoptic = _cfg(TINY, "MODEL.PRETRAINED", gone, "DATASET.DATASET", "panoptic")
    with pytest.raises(FileNotFoundError, match="experiments/panoptic/w32_384x288_pretrain2d.yaml"):
        build_detector(panoptic)


def test_pretrain_recipes_and_paper_files_fit_one_converted_checkpoint():
    paper = {"h36m": _cfg(W32), "panoptic": _cfg(str(ROOT / "experiments/panoptic/w32_384x288_adam_lr1e-3.yaml"))}
    for dataset, path in PRETRAIN.items():
        cfg = _cfg(str(path))
        assert cfg.DATASET.DATASET == dataset and cfg.DATASET.AUGMENT and cfg.DATASET.FLIP
        assert (cfg.DATASET.ROT_FACTOR, cfg.DATASET.SCALE_FACTOR, cfg.DATASET.PROB_HALF_BODY) == (45, 0.35, 0.3)
        assert (cfg.MODEL.SIGMA, cfg.TRAIN.LR, cfg.TRAIN.LR_FACTOR, list(cfg.TRAIN.LR_STEP)) == (3.0, 1e-3, 0.1, [16, 19])
        assert cfg.TRAIN.EPOCHS == 19 and cfg.TRAIN.LR_BUMP_FACTOR == 1.0 and not cfg.LOSS.LOSS_3D
        assert list(cfg.MODEL.EXTRA.PRETRAINED_LAYERS) == ["*"] and cfg.MODEL.PRETRAINED_FORMAT == "h36m"
        assert cfg.MODEL.PRETRAINED == cv.CONVERTED_COCO
        for key in ("STAGE2", "STAGE3", "STAGE4"):
            assert cfg.MODEL.EXTRA[key] == paper[dataset].MODEL.EXTRA[key]
        assert list(cfg.MODEL.IMAGE_SIZE) == list(paper[dataset].MODEL.IMAGE_SIZE)
        # the paper's files keep the pre-trained head, as the original's whole-file load does
        assert "final_layer" in paper[dataset].MODEL.EXTRA.PRETRAINED_LAYERS


# ----------------------------------------------------------------------------- semantics on real training
# COCO channel c is trained on Human3.6M target COCO_TARGET[c]: the 12 shared joints at their
# COCO indices; nose, eyes and ears on the neck / head targets (not evaluated).
COCO_TARGET = [9, 10, 10, 10, 10, 11, 14, 12, 15, 13, 16, 4, 1, 5, 2, 6, 3]
STEPS = 40


@pytest.fixture(scope="module")
def coco_detector(tmp_path_factory):
    """A tiny detector trained briefly with COCO-ordered channels, saved as an official file is."""
    from lib.core.losses import JointsMSELoss
    from lib.datasets import build_dataset
    base = tmp_path_factory.mktemp("convert")
    data = make_tiny_h36m(base / "data", seed=0, frames_per_seq=4, image_size=128)
    cfg = _cfg(TINY, "DATASET.ROOT", str(data))
    dataset = build_dataset(cfg, "train", False)
    items = [dataset[i] for i in range(len(dataset))]
    batch = {"img": torch.stack([s[0] for s in items]), "target": torch.stack([s[1] for s in items]),
             "weight": torch.stack([s[2] for s in items]),
             "center": torch.stack([torch.as_tensor(s[3]["center"]) for s in items]),
             "scale": torch.stack([torch.as_tensor(s[3]["scale"]) for s in items]),
             "gt": np.stack([s[3]["joints_2d"] for s in items])}
    torch.manual_seed(0)
    net = build_pose_net(cfg)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = JointsMSELoss(True)
    for _ in range(STEPS):              # the same few images every step: only channel meaning matters
        loss = loss_fn(net(batch["img"]), batch["target"][:, COCO_TARGET], batch["weight"][:, COCO_TARGET])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = _save(net.state_dict(), base / "pose_hrnet_tiny_coco.pth")
    return {"base": base, "data": data, "path": path, "batch": batch}


def _pdj_shared(net, batch, channel_of):
    """Per-sample, per-joint PDJ@0.2 hits (N, 12) of the shared joints; channel_of[h] = net channel."""
    from lib.core.heatmap import decode_argmax
    # BatchNorm on batch statistics (40 steps leave the running ones far behind) and the hard
    # argmax (a briefly trained map peaks at the joint before its mass concentrates there).
    with torch.no_grad():
        pred = decode_argmax(net.train()(batch["img"]), batch["center"], batch["scale"], True)[0].numpy()
    gt = batch["gt"].astype(np.float64)
    torso = np.linalg.norm(gt[:, 11] - gt[:, 1], axis=-1)               # l_shoulder - r_hip
    joints = sorted(COCO_SHARED)
    err = np.linalg.norm(pred[:, [channel_of[h] for h in joints]] - gt[:, joints], axis=-1)
    return err < 0.2 * torso[:, None]


def _converted(path):
    out, _ = cv.convert_checkpoint(path, "coco", _cfg())
    net = build_pose_net(_cfg())
    load_pose_checkpoint(net, out, strict=True)
    return net


def test_pdj_of_the_12_joints_survives_conversion(coco_detector, monkeypatch):
    batch = coco_detector["batch"]
    src = build_pose_net(_cfg())
    load_pose_checkpoint(src, coco_detector["path"], strict=True)
    source_hits = _pdj_shared(src, batch, COCO_SHARED)
    assert source_hits.mean() > 0.3, source_hits.mean()           # it did learn where the joints are
    converted_hits = _pdj_shared(_converted(coco_detector["path"]), batch, {h: h for h in COCO_SHARED})
    assert np.array_equal(converted_hits, source_hits)
    # A wrong channel map (left and right limbs swapped) does not survive: the test can fail.
    swapped = dict(cv.H36M_FROM["coco"])
    for side, other in (("l_", "r_"), ("r_", "l_")):
        for j in cv.SHARED_JOINTS:
            if j.startswith(side):
                swapped[j] = (other + j[2:],)
    monkeypatch.setitem(cv.H36M_FROM, "coco", swapped)
    wrong_hits = _pdj_shared(_converted(coco_detector["path"]), batch, {h: h for h in COCO_SHARED})
    assert wrong_hits.mean() < source_hits.mean() - 0.2


def test_path_from_an_official_coco_file_to_the_papers_first_command(coco_detector):
    """README 'Weights': convert -> 2D pre-training -> lifter -> the paper's first command."""
    from run import convert_weights, train_hrnet, train_lifter
    base, out = coco_detector["base"], coco_detector["base"] / "out"
    converted = base / "weights" / "pose_hrnet_coco_as_h36m.pth"
    common = ["DATASET.ROOT", str(coco_detector["data"]), "USE_CUDA", "False", "TRAIN.BATCH_SIZE_PER_GPU", "4",
              "TEST.BATCH_SIZE_PER_GPU", "16", "TRAIN.MAX_STEPS_PER_EPOCH", "2", "PRINT_FREQ", "1",
              "MODEL_3D.WEIGHTS.SB", str(base / "sb.pth"), "LIFTER_TRAIN.BATCH_SIZE", "16"]
    convert_weights.main(["--src", coco_detector["path"], "--format", "coco", "--cfg", TINY, "--dst", str(converted)])
    # 2D pre-training with the recipe's augmentation (experiments/*/w32_384x288_pretrain2d.yaml)
    pre = train_hrnet.main(["--cfg", TINY, "--epochs", "0", "MODEL.PRETRAINED", str(converted),
                            "DATASET.AUGMENT", "True", "DATASET.ROT_FACTOR", "45", "DATASET.SCALE_FACTOR", "0.35",
                            "DATASET.PROB_HALF_BODY", "0.3", "TRAIN.LR_BUMP_FACTOR", "1.0",
                            "OUTPUT_DIR", str(out / "pretrain2d")] + common)
    start = Path(pre["run_dir"]) / "model_best.pth"
    log = next(Path(pre["run_dir"]).glob("*_train.log")).read_text()
    n = len(build_pose_net(_cfg()).state_dict())
    assert f"pretrained: {converted} [plain state dict]: loaded {n} tensors" in log
    train_lifter.main(["--cfg", TINY, "--model_3d", "sb", "--epochs", "0"] + common)
    # the paper's first command, with MODEL.PRETRAINED = the pre-trained detector
    res = train_hrnet.main(["--cfg", TINY, "--loss_single_w", "0.8", "--gpu_id", "0", "--loss_3d", "--loss_3d_z",
                            "--model_3d", "sb", "--ohklm", "--epochs", "0", "MODEL.PRETRAINED", str(start),
                            "OUTPUT_DIR", str(out / "l2d")] + common)
    hist = json.loads((Path(res["run_dir"]) / "history.json").read_text())
    assert hist["mode"] == "3d" and hist["epochs"][0]["train"]["loss_3d"] > 0
    assert math.isfinite(hist["epochs"][0]["valid"]["mpjpe"])
    log = next(Path(res["run_dir"]).glob("*_train.log")).read_text()
    assert f"pretrained: {start} [plain state dict]: loaded {n} tensors" in log
