"""Starting checkpoints for our 17-joint Human3.6M detector from public checkpoints.

Shapes: J_src source heatmap channels (COCO 17, MPII 16), C head input channels, k head kernel;
the detector's 1x1 head maps C features to J = 17 Human3.6M heatmaps (also for Panoptic, which
keeps 17 maps and remaps them to 15 later).

Formats (``--format`` / ``MODEL.PRETRAINED_FORMAT``):

* ``coco``: an official COCO keypoint model (``pose_hrnet_w32_256x192.pth``, ``..._384x288.pth``,
  ``pose_hrnet_w48_*.pth``, SimpleBaseline ``pose_resnet_*``; a ViTPose file once that detector is
  registered). Every backbone tensor is copied; the head rows (weight and bias) of the 12 joints
  both skeletons share are mapped to their Human3.6M channels; the 5 others are derived.
* ``mpii``: an official MPII model (16 channels); 16 Human3.6M channels have an MPII joint (pelvis,
  thorax, upper neck -> neck, head top -> head), the spine is derived.
* ``imagenet``: the ImageNet classification HRNet (``hrnet_w32-36af842e.pth``): the backbone layers
  of ``MODEL.EXTRA.PRETRAINED_LAYERS`` are copied, the pose head stays freshly initialised, and
  the classification head (``incre_modules``, ``downsamp_modules``, ``final_layer.*``,
  ``classifier``) and stage 4's extra fusion layers are dropped.
* ``h36m``: already our layout; nothing to convert (today's loading).

Rule for derived channels (``H36M_FROM``): a Human3.6M channel with several source joints gets the
MEAN of their head rows and biases, so its heatmap is the mean of theirs. Soft-argmax of such a
map lands between the source joints, which is where the derived joint is (pelvis between the hips,
thorax between the shoulders, spine between hips and shoulders, head among eyes and ears); the
2D pre-training then sharpens it. One source joint = a plain row copy (exact).

The head is found through ``HEAD_PREFIXES`` (MODEL.NAME -> the prefix of the final 1x1 conv), so a
new detector family needs one row there, nothing else. The file may be a plain state dict, hold one
under ``'state_dict'`` (mmpose / ViTPose) and carry ``module.`` prefixes (see
:mod:`model_2d.checkpoint`). It is read with ``weights_only=True``.
"""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from lib.core.skeleton import H36M
from lib.utils.atomic_io import atomic_save
from lib.utils.errors import UserError

from .checkpoint import extract_state_dict, read_checkpoint
from .registry import build_pose_net, resolve_name

FORMATS = ("h36m", "coco", "mpii", "imagenet")

# MODEL.NAME -> prefix of the detector's final 1x1 heatmap conv (keys <prefix>.weight / .bias).
HEAD_PREFIXES: Dict[str, str] = {
    "pose_hrnet": "final_layer",
    "pose_resnet": "final_layer",
    "vitpose": "keypoint_head.final_layer",
}

# Channel order of the public models' heatmaps (COCO keypoints; MPII as in the HRNet MPII models).
SOURCE_JOINTS: Dict[str, Tuple[str, ...]] = {
    "coco": ("nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow",
             "r_elbow", "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle",
             "r_ankle"),
    "mpii": ("r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
             "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow",
             "l_wrist"),
}

_LIMBS = ("r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "l_shoulder", "l_elbow",
          "l_wrist", "r_shoulder", "r_elbow", "r_wrist")

# Human3.6M joint -> the source joints whose head rows are averaged into it (one = a copy).
H36M_FROM: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "coco": {**{j: (j,) for j in _LIMBS},
             "pelvis": ("l_hip", "r_hip"),
             "spine": ("l_hip", "r_hip", "l_shoulder", "r_shoulder"),
             "thorax": ("l_shoulder", "r_shoulder"),
             "neck": ("nose",),                 # Human3.6M's neck/nose point; COCO's nearest
             "head": ("l_eye", "r_eye", "l_ear", "r_ear")},
    "mpii": {**{j: (j,) for j in _LIMBS},
             "pelvis": ("pelvis",),
             "spine": ("pelvis", "thorax"),
             "thorax": ("thorax",),
             "neck": ("upper_neck",),
             "head": ("head_top",)},
}

# The 12 joints whose channel is the same joint in every source set (what the PDJ test checks).
SHARED_JOINTS = _LIMBS


def _head(items: Sequence[str], n: int = 6) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


@dataclass
class ConversionReport:
    """What a conversion did, for printing (``str(report)``) and for tests."""

    source: str
    fmt: str
    model_name: str
    layout: str = ""
    copied: List[str] = field(default_factory=list)           # backbone tensors taken unchanged
    mapped: Dict[str, str] = field(default_factory=dict)      # h36m joint -> its one source joint
    derived: Dict[str, Tuple[str, ...]] = field(default_factory=dict)   # h36m joint -> averaged
    fresh: List[str] = field(default_factory=list)            # left at their initialisation
    dropped: List[str] = field(default_factory=list)          # file tensors not used
    unused_channels: List[str] = field(default_factory=list)  # source joints no channel uses
    filled_num_batches_tracked: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.source} [{self.layout}] as {self.fmt} -> {self.model_name} "
                 f"with {H36M.num_joints} Human3.6M heatmaps",
                 f"  copied (backbone): {len(self.copied)} tensors"]
        if self.mapped:
            lines.append(f"  mapped head channels ({len(self.mapped)}): " + ", ".join(
                f"{h}<-{s}" for h, s in self.mapped.items()))
        if self.derived:
            lines.append(f"  derived head channels ({len(self.derived)}, mean of rows): " + ", ".join(
                f"{h}<-mean({'+'.join(s)})" for h, s in self.derived.items()))
        if self.unused_channels:
            lines.append(f"  source channels not used: {', '.join(self.unused_channels)}")
        if self.fresh:
            lines.append(f"  left fresh ({len(self.fresh)}): {_head(self.fresh)}")
        if self.dropped:
            lines.append(f"  dropped from the file ({len(self.dropped)}): {_head(self.dropped)}")
        if self.filled_num_batches_tracked:
            lines.append(f"  num_batches_tracked absent, set to 0: "
                         f"{len(self.filled_num_batches_tracked)}")
        return "\n".join(lines)

    __str__ = summary


def check_format(fmt: str) -> str:
    fmt = str(fmt).strip().lower()
    if fmt not in FORMATS:
        raise UserError(f"MODEL.PRETRAINED_FORMAT / --format {fmt!r} is not known; use one of "
                        f"{', '.join(FORMATS)} (h36m = already our 17-joint layout)")
    return fmt


def head_prefix(model_name: str) -> str:
    """Prefix of the final heatmap conv for ``MODEL.NAME`` (aliases followed)."""
    try:
        name = resolve_name(model_name)
    except KeyError:
        name = str(model_name)
    if name not in HEAD_PREFIXES:
        raise UserError(f"MODEL.NAME {model_name!r} has no entry in model_2d.convert.HEAD_PREFIXES "
                        f"(known: {', '.join(sorted(HEAD_PREFIXES))}); add the prefix of its final "
                        f"1x1 heatmap conv there to convert public checkpoints for it")
    return HEAD_PREFIXES[name]


def mixing_matrix(fmt: str) -> torch.Tensor:
    """(17, J_src) float64: row h holds 1/n at the n source joints of Human3.6M joint h."""
    names = SOURCE_JOINTS[fmt]
    table = H36M_FROM[fmt]
    mix = torch.zeros(H36M.num_joints, len(names), dtype=torch.float64)
    for h, joint in enumerate(H36M.joint_names):
        sources = table[joint]
        for s in sources:
            mix[h, names.index(s)] = 1.0 / len(sources)
    return mix


def _fresh_model(cfg, seed: int):
    # A fixed seed: converting the same file twice gives the same bytes (fresh parts included).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_pose_net(cfg)


def _mismatch(source: str, cfg, key: str, got, want) -> UserError:
    cfg_file = getattr(cfg, "CFG_FILE", "") or "the config"
    return UserError(
        f"{source} does not fit the detector of {cfg_file}: first mismatching key {key!r} has shape "
        f"{tuple(got)} in the file and {tuple(want)} in the network. Use the experiment file of the "
        f"same network (e.g. a W48 file needs experiments/h36m/w48_384x288_adam_lr1e-3.yaml, a W32 "
        f"file a W32 one)")


def convert_state_dict(state: Mapping[str, torch.Tensor], fmt: str, cfg, source: str = "<state>",
                       layout: str = "plain state dict", model=None
                       ) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """A public state dict -> a full state dict of ``build_pose_net(cfg)`` and its report.

    Parts left fresh come from ``model`` (a just-built network of ``cfg``, not modified) when given,
    else from a network built with seed ``cfg.SEED``. Raises :class:`UserError` naming the first
    key that is missing, unexpected or of another shape.
    """
    fmt = check_format(fmt)
    if fmt == "h36m":
        raise UserError("format h36m needs no conversion: the file already is our layout; load it "
                        "with MODEL.PRETRAINED (or --finetune)")
    if int(cfg.MODEL.NUM_JOINTS) != H36M.num_joints:
        raise UserError(f"conversion targets the {H36M.num_joints}-joint Human3.6M head, but "
                        f"MODEL.NUM_JOINTS is {cfg.MODEL.NUM_JOINTS}; use an experiment file with "
                        f"MODEL.NUM_JOINTS {H36M.num_joints}")
    prefix = head_prefix(cfg.MODEL.NAME)
    if model is None:
        model = _fresh_model(cfg, int(getattr(cfg, "SEED", 0)))
    target = model.state_dict()
    report = ConversionReport(source=source, fmt=fmt, model_name=type(model).__name__,
                              layout=layout)
    is_head = lambda k: k.startswith(prefix + ".")  # noqa: E731
    if fmt == "imagenet":
        layers = [str(x) for x in cfg.MODEL.EXTRA.get("PRETRAINED_LAYERS", ["*"])]
        take_all = not layers or layers[0] == "*"
        wanted = lambda k: not is_head(k) and (take_all or k.split(".", 1)[0] in layers)  # noqa: E731
    else:
        wanted = lambda k: not is_head(k)  # noqa: E731

    out: Dict[str, torch.Tensor] = {}
    for key, value in target.items():
        if not wanted(key):
            out[key] = value.detach().clone()
            if not key.endswith("num_batches_tracked"):
                report.fresh.append(key)
            continue
        if key not in state:
            if key.endswith("num_batches_tracked"):
                out[key] = torch.zeros((), dtype=torch.long)
                report.filled_num_batches_tracked.append(key)
                continue
            hint = ""
            if fmt != "imagenet" and any(k.startswith("classifier.") for k in state):
                hint = " It has a classifier: for the ImageNet HRNet use --format imagenet."
            raise UserError(f"{source} lacks {key!r}, which the detector of "
                            f"{getattr(cfg, 'CFG_FILE', '') or 'the config'} needs (MODEL.NAME "
                            f"{cfg.MODEL.NAME}); is it a checkpoint of this network?{hint}")
        got = state[key]
        if tuple(got.shape) != tuple(value.shape):
            raise _mismatch(source, cfg, key, got.shape, value.shape)
        out[key] = got.detach().to(value.dtype).clone()
        report.copied.append(key)

    if fmt == "imagenet":
        report.dropped = [k for k in state if k not in report.copied]
    else:
        _convert_head(state, fmt, prefix, target, out, report, source, cfg)
        extra = [k for k in state if k not in target]
        if extra:
            raise UserError(f"{source} has {len(extra)} tensors the detector lacks (first: "
                            f"{extra[0]!r}); is it a {fmt} checkpoint of MODEL.NAME "
                            f"{cfg.MODEL.NAME}? An ImageNet classification file needs "
                            f"--format imagenet")
    return out, report


def _convert_head(state, fmt, prefix, target, out, report, source, cfg) -> None:
    names = SOURCE_JOINTS[fmt]
    w_key, b_key = f"{prefix}.weight", f"{prefix}.bias"
    if w_key not in state:
        hint = (" It has a classifier: use --format imagenet." if any(
            k.startswith("classifier.") for k in state) else "")
        raise UserError(f"{source} has no heatmap head {w_key!r} (MODEL.NAME {cfg.MODEL.NAME}); its "
                        f"keys start with {_head(sorted({k.split('.', 1)[0] for k in state}))}.{hint}")
    weight = state[w_key]
    if weight.shape[0] != len(names):
        other = [f for f, n in SOURCE_JOINTS.items() if len(n) == weight.shape[0]]
        hint = f" (that is --format {other[0]})" if other else ""
        raise UserError(f"{source}: head {w_key!r} has {weight.shape[0]} channels, but --format "
                        f"{fmt} means {len(names)}{hint}")
    want = target[w_key].shape
    if tuple(weight.shape[1:]) != tuple(want[1:]):
        raise _mismatch(source, cfg, w_key, weight.shape, (len(names),) + tuple(want[1:]))
    mix = mixing_matrix(fmt)
    # float64 mixing: a one-hot row reproduces its source row bit for bit after the cast back.
    out[w_key] = torch.einsum("hs,s...->h...", mix, weight.detach().double()).to(target[w_key].dtype)
    if b_key in target:
        bias = state.get(b_key)
        if bias is None:
            raise UserError(f"{source} has {w_key!r} but no {b_key!r}; the network's head has a bias")
        out[b_key] = (mix @ bias.detach().double()).to(target[b_key].dtype)
    used = set()
    for joint in H36M.joint_names:
        sources = H36M_FROM[fmt][joint]
        used.update(sources)
        if len(sources) == 1:
            report.mapped[joint] = sources[0]
        else:
            report.derived[joint] = sources
    report.unused_channels = [n for n in names if n not in used]
    report.fresh = [k for k in report.fresh if k not in (w_key, b_key)]


def convert_checkpoint(path, fmt: str, cfg, model=None
                       ) -> Tuple[Dict[str, torch.Tensor], ConversionReport]:
    """Read a public checkpoint file and convert it (see :func:`convert_state_dict`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"checkpoint to convert not found: {path!r}")
    obj = read_checkpoint(path)
    try:
        state, layout = extract_state_dict(obj)
    except (KeyError, TypeError) as err:
        raise UserError(f"{path}: {err.args[0] if err.args else err}") from None
    return convert_state_dict(state, fmt, cfg, source=path, layout=layout, model=model)


def check_destination(dst, overwrite: bool = False, src: Optional[str] = None) -> str:
    """``dst`` if it may be written: never the source file, an existing file only with overwrite."""
    dst = os.fspath(dst)
    if src is not None and os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise UserError(f"--dst {dst} is the source file; write the converted checkpoint elsewhere")
    if os.path.exists(dst) and not overwrite:
        raise UserError(f"{dst} already exists; pass --overwrite to replace it or choose another --dst")
    return dst


def save_converted(state: Mapping[str, torch.Tensor], dst, overwrite: bool = False,
                   src: Optional[str] = None) -> str:
    """Write ``state`` as a bare detector state dict (like ``model_best.pth``), atomically."""
    dst = check_destination(dst, overwrite, src)
    parent = os.path.dirname(dst)
    if parent:
        os.makedirs(parent, exist_ok=True)
    atomic_save(dict(state), dst)
    return dst


class MissingWeightsError(UserError, FileNotFoundError):
    """MODEL.PRETRAINED or TRAIN.FINETUNE names a file that is not there (message: how to make it)."""


PRETRAIN_CFG = {"h36m": "experiments/h36m/w32_384x288_pretrain2d.yaml",
                "panoptic": "experiments/panoptic/w32_384x288_pretrain2d.yaml"}
CONVERTED_COCO = "model_2d/weights/pose_hrnet_w32_384x288_coco_as_h36m.pth"


def how_to_make_pretrained(cfg) -> str:
    """The commands that make a starting detector checkpoint (README 'Weights')."""
    pre = PRETRAIN_CFG.get(str(cfg.DATASET.DATASET), PRETRAIN_CFG["h36m"])
    return (f"Make it from the official HRNet COCO model pose_hrnet_w32_384x288.pth (HRNet model zoo): "
            f"`python run/convert_weights.py --src pose_hrnet_w32_384x288.pth --format coco --cfg {pre} "
            f"--dst {CONVERTED_COCO}`, then pre-train in 2D: `python run/train_hrnet.py --cfg {pre} "
            f"--gpu_id 0` and use its model_best.pth (copy it to this path or set MODEL.PRETRAINED). "
            f"Or start from a public file directly: MODEL.PRETRAINED <file> MODEL.PRETRAINED_FORMAT "
            f"coco|mpii|imagenet (README 'Weights')")


def pretrained_path(cfg) -> str:
    """MODEL.PRETRAINED joined with DATA_DIR (the original joins them; '' leaves it as is)."""
    return os.path.join(str(cfg.DATA_DIR), str(cfg.MODEL.PRETRAINED))


def load_pretrained(model, cfg, log=None):
    """Initialise ``model`` from MODEL.PRETRAINED in MODEL.PRETRAINED_FORMAT -> LoadReport.

    ``h36m`` loads the file as it is; other formats are converted in memory first
    (:func:`convert_checkpoint`). Either way only MODEL.EXTRA.PRETRAINED_LAYERS are taken
    (:func:`model_2d.init_pretrained`).
    """
    from .checkpoint import init_pretrained

    path = pretrained_path(cfg)
    if not os.path.isfile(path):
        raise MissingWeightsError(f"MODEL.PRETRAINED {path!r} (from "
                                  f"{getattr(cfg, 'CFG_FILE', '') or 'the config'}) does not exist. "
                                  + how_to_make_pretrained(cfg))
    fmt = check_format(cfg.MODEL.PRETRAINED_FORMAT)
    source = path
    if fmt != "h36m":
        source, report = convert_checkpoint(path, fmt, cfg, model=model)
        if log is not None:
            log.info("=> converted at load time: %s", report.summary())
    layers = list(cfg.MODEL.EXTRA.get("PRETRAINED_LAYERS", ["*"]))
    load = init_pretrained(model, source, layers)
    if fmt != "h36m":
        load.source = f"{path} (converted from {fmt})"
    return load
