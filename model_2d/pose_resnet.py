"""SimpleBaseline pose network (``pose_resnet``): ResNet backbone + deconvolution head.

Shapes: N batch, J = ``cfg.MODEL.NUM_JOINTS``; input ``(N, 3, H, W)`` with H and W multiples of
32, output ``(N, J, H/4, W/4)`` heatmaps (the backbone divides by 32, the default three stride-2
deconvolutions multiply by 8), no final activation.

Module names and shapes follow leoxiaobin/deep-high-resolution-net.pytorch
``lib/models/pose_resnet.py``: ``conv1`` (7x7 s2), ``bn1``, ``layer1..4`` (torchvision-style
residual stages, ``<layer>.0.downsample.{0,1}`` projections), ``deconv_layers.{3k, 3k+1}``
(ConvTranspose2d, BN; ReLU at 3k+2 has no keys), ``final_layer`` (Conv2d with bias).

``cfg.MODEL.EXTRA`` keys (defaults = the reference experiment files):
``NUM_LAYERS`` 50 (18/34/50/101/152), ``NUM_DECONV_LAYERS`` 3, ``NUM_DECONV_FILTERS``
[256, 256, 256], ``NUM_DECONV_KERNELS`` [4, 4, 4] (4, 3 or 2), ``FINAL_CONV_KERNEL`` 1 (odd),
``DECONV_WITH_BIAS`` False.

Initialisation: the reference's no-pretrained branch (conv/deconv ~ N(0, 0.001), BN 1/0), with
every bias, including ``final_layer``'s, set to 0.
"""
import torch
import torch.nn as nn

from .heads import Float32Conv2d
from .hrnet import BN_MOMENTUM, BasicBlock, Bottleneck, init_pose_weights, make_res_layer
from .registry import register_pose_net

RESNET_SPEC = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}

# ConvTranspose2d stride 2: kernel -> (padding, output_padding) giving exactly 2x the input size.
DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}


class PoseResNet(nn.Module):
    """ResNet + deconv heatmap regressor: ``(N, 3, H, W)`` -> ``(N, J, H/4, W/4)``."""

    BACKBONE_STRIDE = 32

    def __init__(self, cfg):
        super().__init__()
        extra = cfg.MODEL.EXTRA
        depth = int(extra.get("NUM_LAYERS", 50))
        if depth not in RESNET_SPEC:
            raise ValueError(f"cfg.MODEL.EXTRA.NUM_LAYERS={depth}; "
                             f"choose one of {sorted(RESNET_SPEC)}")
        num_deconv = int(extra.get("NUM_DECONV_LAYERS", 3))
        filters = [int(f) for f in extra.get("NUM_DECONV_FILTERS", [256] * num_deconv)]
        kernels = [int(k) for k in extra.get("NUM_DECONV_KERNELS", [4] * num_deconv)]
        if not (num_deconv == len(filters) == len(kernels)) or num_deconv < 1:
            raise ValueError(f"cfg.MODEL.EXTRA: NUM_DECONV_LAYERS={num_deconv} but "
                             f"NUM_DECONV_FILTERS={filters} and NUM_DECONV_KERNELS={kernels}; "
                             f"give one filter count and one kernel per deconv layer")
        bad = [k for k in kernels if k not in DECONV_PADDING]
        if bad:
            raise ValueError(f"cfg.MODEL.EXTRA.NUM_DECONV_KERNELS={kernels}: kernel(s) {bad} not "
                             f"supported; use 4, 3 or 2")
        final_kernel = int(extra.get("FINAL_CONV_KERNEL", 1))
        if final_kernel % 2 != 1:
            raise ValueError(f"cfg.MODEL.EXTRA.FINAL_CONV_KERNEL={final_kernel}: use 1 or 3")
        with_bias = bool(extra.get("DECONV_WITH_BIAS", False))
        self.pretrained_layers = list(extra.get("PRETRAINED_LAYERS", ["*"]))
        self.output_stride = self.BACKBONE_STRIDE // 2 ** num_deconv

        block, counts = RESNET_SPEC[depth]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = 64
        for idx, (planes, n_blocks) in enumerate(zip((64, 128, 256, 512), counts)):
            layer = make_res_layer(block, in_ch, planes, n_blocks, stride=1 if idx == 0 else 2)
            setattr(self, f"layer{idx + 1}", layer)
            in_ch = planes * block.expansion

        deconvs = []
        for out_ch, kernel in zip(filters, kernels):
            padding, out_padding = DECONV_PADDING[kernel]
            deconvs += [nn.ConvTranspose2d(in_ch, out_ch, kernel_size=kernel, stride=2,
                                           padding=padding, output_padding=out_padding,
                                           bias=with_bias),
                        nn.BatchNorm2d(out_ch, momentum=BN_MOMENTUM),
                        nn.ReLU(inplace=True)]
            in_ch = out_ch
        self.deconv_layers = nn.Sequential(*deconvs)
        # heatmaps in float32 also under autocast (model_2d/heads.py)
        self.final_layer = Float32Conv2d(in_ch, int(cfg.MODEL.NUM_JOINTS), kernel_size=final_kernel,
                                         stride=1, padding=final_kernel // 2)
        init_pose_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, 3, H, W)`` normalised image, H and W multiples of 32 -> ``(N, J, H/4, W/4)``."""
        height, width = x.shape[-2:]
        if height % self.BACKBONE_STRIDE or width % self.BACKBONE_STRIDE:
            # The stride-32 backbone rounds up odd sizes and the deconvs cannot undo it, so the
            # heatmap would silently stop matching MODEL.HEATMAP_SIZE.
            raise ValueError(f"pose_resnet needs input height and width divisible by "
                             f"{self.BACKBONE_STRIDE}, got {height}x{width}; set MODEL.IMAGE_SIZE "
                             f"to multiples of {self.BACKBONE_STRIDE} (e.g. [192, 256])")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.final_layer(self.deconv_layers(x))


@register_pose_net("pose_resnet")
def build_pose_resnet(cfg) -> PoseResNet:
    """SimpleBaseline ResNet-``EXTRA.NUM_LAYERS`` with the deconv head of ``cfg.MODEL.EXTRA``."""
    return PoseResNet(cfg)
