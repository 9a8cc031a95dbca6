"""HRNet pose network (``pose_hrnet``), checkpoint-compatible with the official repository.

Shapes: N batch, J = ``cfg.MODEL.NUM_JOINTS``; input ``(N, 3, H, W)`` image, output
``(N, J, ceil(H/4), ceil(W/4))`` heatmaps, no final activation.

The module tree reproduces leoxiaobin/deep-high-resolution-net.pytorch
``lib/models/pose_hrnet.py`` name for name and shape for shape (docs/weights.md#official-checkpoint-layouts), so its
``state_dict`` files load with ``strict=True``:

* stem ``conv1, bn1, conv2, bn2`` (two 3x3 stride-2 convs, 64 channels), ``layer1`` (Bottlenecks);
* ``transition1/2/3``: index i is empty (no keys) when branch i keeps its channels,
  ``Sequential(conv3x3, BN, ReLU)`` when they change, and for a new, lower-resolution branch a
  ``Sequential`` of ``Sequential(conv3x3 s2, BN, ReLU)`` fed by the previous stage's LAST branch;
* ``stage2/3/4``: ``Sequential`` of :class:`HighResolutionModule` with ``branches`` and
  ``fuse_layers``; the last module of stage4 outputs only the highest-resolution branch;
* ``final_layer``: ``Conv2d(C0 -> J, FINAL_CONV_KERNEL)`` with bias.

Differences from the reference, none visible in the state dict:

* Lower-to-higher resolution fusion upsamples with nearest interpolation to the exact size of
  the target branch instead of ``nn.Upsample(scale_factor=2**k)``. For even sizes both are the
  same nearest lookup; for odd sizes the reference crashes on a size mismatch and this works.
* ``final_layer`` computes in float32 also under autocast (:mod:`model_2d.heads`).
* ``EXTRA.STAGE1`` (optional: ``BLOCK``, ``NUM_BLOCKS [n]``, ``NUM_CHANNELS [c]``) replaces the
  hard-coded ``layer1`` of 4 Bottlenecks of 64 planes, for tiny CPU models. Without it the
  structure is the official one.
* An existing branch whose channels change in a transition is fed by its own branch (the
  reference feeds the last branch, which only works when the two coincide).

Initialisation follows the reference ``init_weights``: every conv weight ~ N(0, 0.001), conv
biases 0, BatchNorm weight 1 / bias 0. BatchNorm momentum is 0.1 everywhere.
"""
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .heads import Float32Conv2d
from .registry import register_pose_net

BN_MOMENTUM = 0.1


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; ``(N, C_in, H, W) -> (N, planes, H/stride, W/stride)``."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module = None):
        super().__init__()
        self.conv1 = conv3x3(in_ch, planes, stride)
        self.bn1 = _bn(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 channels) with a residual;
    ``(N, C_in, H, W) -> (N, 4*planes, H/stride, W/stride)``."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, downsample: nn.Module = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, kernel_size=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


BLOCKS = {"BASIC": BasicBlock, "BOTTLENECK": Bottleneck}


def make_res_layer(block, in_ch: int, planes: int, num_blocks: int,
                   stride: int = 1) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first gets a 1x1 conv + BN projection (key
    ``<layer>.0.downsample.{0,1}``) when stride or channel count changes."""
    out_ch = planes * block.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False), _bn(out_ch))
    layers = [block(in_ch, planes, stride, downsample)]
    layers += [block(out_ch, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*layers)


def init_pose_weights(module: nn.Module) -> None:
    """Reference initialisation: conv / deconv weights ~ N(0, 0.001), biases 0, BN 1 / 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0.0)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1.0)
            nn.init.constant_(m.bias, 0.0)


class HighResolutionModule(nn.Module):
    """Parallel branches followed by all-to-all fusion.

    Input: list of B tensors ``(N, C_b, H_b, W_b)`` with ``H_{b+1} = ceil(H_b / 2)``.
    Output: the same list (or only branch 0 when ``multi_scale_output`` is False).
    """

    def __init__(self, block, num_blocks: Sequence[int], in_channels: Sequence[int],
                 num_channels: Sequence[int], multi_scale_output: bool = True):
        super().__init__()
        self.num_branches = len(num_channels)
        self.multi_scale_output = multi_scale_output
        self.branches = nn.ModuleList(
            make_res_layer(block, in_channels[b], num_channels[b], num_blocks[b])
            for b in range(self.num_branches))
        self.out_channels: List[int] = [c * block.expansion for c in num_channels]
        if self.num_branches > 1:
            # A single-branch module has no fusion and, as in the reference, no fuse_layers keys.
            self.fuse_layers = self._make_fuse_layers()
        self.relu = nn.ReLU(inplace=False)

    def _make_fuse_layers(self) -> nn.ModuleList:
        ch = self.out_channels
        n_out = self.num_branches if self.multi_scale_output else 1
        rows = []
        for i in range(n_out):
            row = []
            for j in range(self.num_branches):
                if j > i:   # lower resolution -> 1x1 conv + BN, upsampled in forward
                    row.append(nn.Sequential(
                        nn.Conv2d(ch[j], ch[i], 1, 1, 0, bias=False), _bn(ch[i])))
                elif j == i:
                    row.append(nn.Identity())
                else:       # higher resolution -> (i - j) stride-2 3x3 convs
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out_ch = ch[i] if last else ch[j]
                        layers = [nn.Conv2d(ch[j], out_ch, 3, 2, 1, bias=False), _bn(out_ch)]
                        if not last:
                            layers.append(nn.ReLU(inplace=True))
                        steps.append(nn.Sequential(*layers))
                    row.append(nn.Sequential(*steps))
            rows.append(nn.ModuleList(row))
        return nn.ModuleList(rows)

    def forward(self, xs: List[torch.Tensor]) -> List[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.num_branches == 1:
            return xs
        outs = []
        for i, row in enumerate(self.fuse_layers):
            size = xs[i].shape[-2:]
            total = xs[i]
            for j in range(self.num_branches):
                if j == i:
                    continue
                y = row[j](xs[j])
                if j > i:
                    y = F.interpolate(y, size=size, mode="nearest")
                total = total + y
            outs.append(self.relu(total))
        return outs


def _stage_table(extra, key: str, required: bool = True):
    """Validated ``cfg.MODEL.EXTRA.<key>`` as a plain dict (None when optional and absent)."""
    if key not in extra:
        if required:
            raise KeyError(f"cfg.MODEL.EXTRA.{key} is missing: the HRNet needs STAGE2, STAGE3 and "
                           f"STAGE4 tables (see experiments/h36m/w32_384x288_adam_lr1e-3.yaml)")
        return None
    table = extra[key]
    block_name = str(table.get("BLOCK", "BASIC" if key != "STAGE1" else "BOTTLENECK")).upper()
    if block_name not in BLOCKS:
        raise ValueError(f"cfg.MODEL.EXTRA.{key}.BLOCK={block_name!r}; "
                         f"choose one of {sorted(BLOCKS)}")
    num_blocks = [int(n) for n in table["NUM_BLOCKS"]]
    num_channels = [int(c) for c in table["NUM_CHANNELS"]]
    num_branches = int(table.get("NUM_BRANCHES", len(num_channels)))
    if not (num_branches == len(num_blocks) == len(num_channels)) or num_branches < 1:
        raise ValueError(f"cfg.MODEL.EXTRA.{key}: NUM_BRANCHES={num_branches} but NUM_BLOCKS has "
                         f"{len(num_blocks)} and NUM_CHANNELS {len(num_channels)} entries; "
                         f"they must agree")
    fuse = str(table.get("FUSE_METHOD", "SUM")).upper()
    if fuse != "SUM":
        raise ValueError(f"cfg.MODEL.EXTRA.{key}.FUSE_METHOD={fuse!r}: only SUM exists")
    num_modules = int(table.get("NUM_MODULES", 1))
    if num_modules < 1:
        raise ValueError(f"cfg.MODEL.EXTRA.{key}.NUM_MODULES={num_modules}: need at least 1")
    if key == "STAGE1" and num_branches != 1:
        raise ValueError(f"cfg.MODEL.EXTRA.STAGE1 describes layer1, a single branch; got "
                         f"NUM_BRANCHES={num_branches}")
    return {"block": BLOCKS[block_name], "num_blocks": num_blocks, "num_channels": num_channels,
            "num_modules": num_modules}


def _make_transition(pre_channels: Sequence[int], cur_channels: Sequence[int]) -> nn.ModuleList:
    layers = []
    for i, out_ch in enumerate(cur_channels):
        if i < len(pre_channels):
            if out_ch == pre_channels[i]:
                layers.append(nn.Identity())
            else:
                layers.append(nn.Sequential(
                    nn.Conv2d(pre_channels[i], out_ch, 3, 1, 1, bias=False), _bn(out_ch),
                    nn.ReLU(inplace=True)))
        else:
            # New branch i: (i + 1 - len(pre)) stride-2 convs from the last existing branch;
            # only the final one changes the channel count (reference layout).
            n_steps = i + 1 - len(pre_channels)
            src = pre_channels[-1]
            steps = []
            for k in range(n_steps):
                step_out = out_ch if k == n_steps - 1 else src
                steps.append(nn.Sequential(
                    nn.Conv2d(src, step_out, 3, 2, 1, bias=False), _bn(step_out),
                    nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class PoseHighResolutionNet(nn.Module):
    """HRNet heatmap regressor: ``(N, 3, H, W)`` -> ``(N, J, ceil(H/4), ceil(W/4))``."""

    STEM_CHANNELS = 64

    def __init__(self, cfg):
        super().__init__()
        extra = cfg.MODEL.EXTRA
        num_joints = int(cfg.MODEL.NUM_JOINTS)
        final_kernel = int(extra.get("FINAL_CONV_KERNEL", 1))
        if final_kernel % 2 != 1:
            raise ValueError(f"cfg.MODEL.EXTRA.FINAL_CONV_KERNEL={final_kernel}: use an odd size "
                             f"(1 or 3) so the heatmap keeps its size")
        self.pretrained_layers = list(extra.get("PRETRAINED_LAYERS", ["*"]))

        stem = self.STEM_CHANNELS
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(stem)
        self.conv2 = nn.Conv2d(stem, stem, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(stem)
        self.relu = nn.ReLU(inplace=True)

        stage1 = _stage_table(extra, "STAGE1", required=False)
        if stage1 is None:
            stage1 = {"block": Bottleneck, "num_blocks": [4], "num_channels": [64]}
        block1 = stage1["block"]
        self.layer1 = make_res_layer(block1, stem, stage1["num_channels"][0],
                                     stage1["num_blocks"][0])
        channels = [stage1["num_channels"][0] * block1.expansion]

        self.stage_tables = [_stage_table(extra, f"STAGE{s}") for s in (2, 3, 4)]
        for s, table in zip((2, 3, 4), self.stage_tables):
            cur = [c * table["block"].expansion for c in table["num_channels"]]
            setattr(self, f"transition{s - 1}", _make_transition(channels, cur))
            modules = []
            for m in range(table["num_modules"]):
                last = s == 4 and m == table["num_modules"] - 1
                module = HighResolutionModule(table["block"], table["num_blocks"], cur,
                                              table["num_channels"], multi_scale_output=not last)
                modules.append(module)
                cur = module.out_channels
            setattr(self, f"stage{s}", nn.Sequential(*modules))
            channels = cur

        # heatmaps in float32 also under autocast (model_2d/heads.py)
        self.final_layer = Float32Conv2d(channels[0], num_joints, kernel_size=final_kernel, stride=1,
                                         padding=final_kernel // 2)
        init_pose_weights(self)

    @staticmethod
    def _transit(transition: nn.ModuleList, ys: List[torch.Tensor]) -> List[torch.Tensor]:
        return [layer(ys[i] if i < len(ys) else ys[-1]) for i, layer in enumerate(transition)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, 3, H, W)`` normalised image -> heatmaps ``(N, J, ceil(H/4), ceil(W/4))``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        ys = self.stage2(self._transit(self.transition1, ys))
        ys = self.stage3(self._transit(self.transition2, ys))
        ys = self.stage4(self._transit(self.transition3, ys))
        return self.final_layer(ys[0])


@register_pose_net("pose_hrnet", aliases=("hrnet",))
def build_hrnet(cfg) -> PoseHighResolutionNet:
    """HRNet for the stage table in ``cfg.MODEL.EXTRA`` (W32, W48, tiny, ...)."""
    return PoseHighResolutionNet(cfg)
