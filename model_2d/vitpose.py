"""ViTPose (``vitpose``): a plain ViT backbone + the "classic" two-deconvolution heatmap decoder.

Shapes: N batch, J = ``cfg.MODEL.NUM_JOINTS``, C = embedding width, input ``(N, 3, H, W)`` with
H and W multiples of the patch size (16); tokens ``(N, H/16 * W/16, C)``; output heatmaps
``(N, J, H/4, W/4)`` (no final activation). The reference input is 192x256 (w x h) -> 48x64.

Names and shapes are those of the official ViTPose checkpoints (ViTAE-Transformer/ViTPose, an
mmpose fork) so their files load strictly:

* ``backbone.patch_embed.proj`` Conv2d(3, C, 16, stride 16, padding 2) -- the official padding
  of 2 (``4 + 2 * (ratio // 2 - 1)`` with ratio 1) still yields H/16 x W/16 patches;
* ``backbone.pos_embed`` ``(1, 1 + H/16 * W/16, C)``: one slot more than there are patches
  because the MAE pre-training had a class token; the official forward adds slot 0 to every
  patch's own embedding, and so does this one (not adding it would change every output of an
  official file);
* ``backbone.blocks.<i>.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`` pre-norm
  blocks, LayerNorm eps 1e-6, qkv with bias, GELU;
* ``backbone.last_norm``;
* ``keypoint_head.deconv_layers.{0, 3}`` ConvTranspose2d(4x4, stride 2, no bias),
  ``keypoint_head.deconv_layers.{1, 4}`` BatchNorm2d (ReLUs at 2 and 5 have no keys),
  ``keypoint_head.final_layer`` Conv2d 1x1 with bias -- the head the COCO -> Human3.6M
  conversion remaps (prefix ``keypoint_head.final_layer``).

Sizes live in :data:`VIT_SIZES` (``cfg.MODEL.VIT.SIZE``); ``tiny`` is ours, for CPU tests and
demos, everything else is the official configs' values.

Initialisation (the official no-pretrained branch): Linear weights truncated-normal std 0.02
with zero bias, LayerNorm 1/0, ``pos_embed`` truncated-normal std 0.02, the patch convolution
PyTorch's default; decoder (de)convolutions normal std 0.001, BatchNorm 1/0, zero biases.
"""
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.utils.errors import UserError

from .heads import Float32Conv2d
from .registry import register_pose_net

PATCH_PADDING = 2          # the official PatchEmbed's padding for ratio 1
LN_EPS = 1e-6
HEAD_STRIDE = 4            # two stride-2 deconvolutions after the 1/16 backbone


@dataclass(frozen=True)
class ViTSize:
    """One row of the size table; ``layer_decay`` is the official recipe's LR decay per block."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    drop_path_rate: float
    layer_decay: float
    deconv_channels: int = 256


# Official ViTPose_{small,base,large,huge}_coco_256x192 configs as they are now (small: drop-path
# 0.1 and layer decay 0.8 since January 2023, 0.3 / 0.9 before); ``tiny`` is a CPU-sized stand-in
# with a narrower decoder (the only place where a preset leaves the classic 256 channels).
VIT_SIZES: Dict[str, ViTSize] = {
    "tiny": ViTSize(embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, drop_path_rate=0.0,
                    layer_decay=0.75, deconv_channels=16),
    "small": ViTSize(embed_dim=384, depth=12, num_heads=12, mlp_ratio=4.0, drop_path_rate=0.1,
                     layer_decay=0.8),
    "base": ViTSize(embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0, drop_path_rate=0.3,
                    layer_decay=0.75),
    "large": ViTSize(embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4.0, drop_path_rate=0.5,
                     layer_decay=0.8),
    "huge": ViTSize(embed_dim=1280, depth=32, num_heads=16, mlp_ratio=4.0, drop_path_rate=0.55,
                    layer_decay=0.85),
}
SIZE_ALIASES = {"s": "small", "b": "base", "l": "large", "h": "huge", "t": "tiny"}


def resolve_size(name: str) -> Tuple[str, ViTSize]:
    """``'B'`` / ``'base'`` / ... -> (canonical name, :class:`ViTSize`); UserError lists the sizes."""
    key = str(name).strip().lower()
    key = SIZE_ALIASES.get(key, key)
    if key not in VIT_SIZES:
        raise UserError(f"MODEL.VIT.SIZE={name!r} is not a ViTPose size; use one of "
                        f"{', '.join(VIT_SIZES)} (or S/B/L/H)")
    return key, VIT_SIZES[key]


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample, rescaling the kept ones."""

    def __init__(self, p: float):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class PatchEmbed(nn.Module):
    """``(N, 3, H, W)`` -> tokens ``(N, H/P * W/P, C)`` and the grid ``(H/P, W/P)``."""

    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, padding=PATCH_PADDING)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (official layout)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # the fused kernel scales by head_dim ** -0.5 like the official explicit softmax(q k^T)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + drop(attn(norm1 x))``, then ``+ drop(mlp(norm2 x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ViTBackbone(nn.Module):
    """``(N, 3, H, W)`` -> feature map ``(N, C, H/16, W/16)`` (tokens back on their grid)."""

    def __init__(self, size: ViTSize, image_size: Tuple[int, int], patch: int,
                 drop_path_rate: float):
        super().__init__()
        width, height = image_size
        self.patch = patch
        self.grid = (height // patch, width // patch)
        self.patch_embed = PatchEmbed(patch, size.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid[0] * self.grid[1], size.embed_dim))
        # stochastic depth grows linearly from 0 at the first block to the rate at the last
        # (plain floats: the model can be built on the meta device)
        last = max(size.depth - 1, 1)
        rates = [drop_path_rate * i / last for i in range(size.depth)]
        self.blocks = nn.ModuleList(Block(size.embed_dim, size.num_heads, size.mlp_ratio, r)
                                    for r in rates)
        self.last_norm = nn.LayerNorm(size.embed_dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        tokens, grid = self.patch_embed(x)
        if grid != self.grid:
            raise UserError(f"vitpose: an input of {x.shape[-1]}x{x.shape[-2]} (w x h) gives a "
                            f"{grid[1]}x{grid[0]} patch grid but pos_embed was built for "
                            f"{self.grid[1]}x{self.grid[0]}; feed images of MODEL.IMAGE_SIZE")
        tokens = tokens + self.pos_embed[:, 1:] + self.pos_embed[:, :1]
        for blk in self.blocks:
            tokens = blk(tokens)
        tokens = self.last_norm(tokens)
        return tokens.transpose(1, 2).reshape(n, -1, *grid)


class ClassicHead(nn.Module):
    """Two (ConvTranspose 4x4 s2, BN, ReLU) then a 1x1 conv: ``(N, C, h, w)`` -> ``(N, J, 4h, 4w)``."""

    def __init__(self, in_ch: int, channels: int, num_joints: int):
        super().__init__()
        layers = []
        for _ in range(2):
            layers += [nn.ConvTranspose2d(in_ch, channels, kernel_size=4, stride=2, padding=1,
                                          output_padding=0, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            in_ch = channels
        self.deconv_layers = nn.Sequential(*layers)
        self.final_layer = Float32Conv2d(channels, num_joints, kernel_size=1)   # float32 heatmaps (model_2d/heads.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_layer(self.deconv_layers(x))


class ViTPose(nn.Module):
    """ViTPose-{size}: images ``(N, 3, H, W)`` -> heatmaps ``(N, J, H/4, W/4)``."""

    def __init__(self, cfg):
        super().__init__()
        vit = cfg.MODEL.VIT
        self.size_name, size = resolve_size(vit.SIZE)
        patch = int(vit.PATCH_SIZE)
        width, height = (int(v) for v in cfg.MODEL.IMAGE_SIZE)
        if patch <= 0 or width % patch or height % patch:
            raise UserError(f"vitpose needs MODEL.IMAGE_SIZE divisible by MODEL.VIT.PATCH_SIZE="
                            f"{patch}, got {width}x{height} (w x h); use e.g. [192, 256]")
        hm = [int(v) for v in cfg.MODEL.HEATMAP_SIZE]
        if hm != [width // HEAD_STRIDE, height // HEAD_STRIDE]:
            raise UserError(f"vitpose: MODEL.HEATMAP_SIZE={hm} but the decoder outputs "
                            f"[{width // HEAD_STRIDE}, {height // HEAD_STRIDE}] (MODEL.IMAGE_SIZE / 4)")
        rate = float(vit.DROP_PATH_RATE)
        rate = size.drop_path_rate if rate < 0 else rate
        self.depth = size.depth
        self.layer_decay = size.layer_decay   # TRAIN.LAYER_DECAY < 0 (default) takes this one
        self.backbone = ViTBackbone(size, (width, height), patch, rate)
        self.keypoint_head = ClassicHead(size.embed_dim, size.deconv_channels,
                                         int(cfg.MODEL.NUM_JOINTS))
        self._init_weights()

    def _init_weights(self):
        for m in self.backbone.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.backbone.pos_embed, std=0.02)
        for m in self.keypoint_head.modules():
            if isinstance(m, (nn.ConvTranspose2d, nn.Conv2d)):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def layer_id(self, name: str) -> int:
        """Layer-wise LR decay depth of parameter ``name`` (the official rule).

        0 for the embeddings, ``i + 1`` for ``backbone.blocks.<i>``, ``depth + 1`` for the rest
        (last norm and decoder). The group's LR is ``LR * decay ** (depth + 1 - layer_id)``.
        """
        if name == "backbone.pos_embed" or name.startswith("backbone.patch_embed."):
            return 0
        if name.startswith("backbone.blocks."):
            return int(name.split(".")[2]) + 1
        return self.depth + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (N, 3, H, W)`` normalised image of MODEL.IMAGE_SIZE -> ``(N, J, H/4, W/4)``."""
        return self.keypoint_head(self.backbone(x))


@register_pose_net("vitpose")
def build_vitpose(cfg) -> ViTPose:
    """ViTPose of size ``cfg.MODEL.VIT.SIZE`` with the classic decoder."""
    return ViTPose(cfg)
