"""MixSTE2 (Zhang et al. 2022), key-compatible with JinluZhang1126/MixSTE ``common/model_cross.py``.

Shapes: N batch, F frames, J joints, C = ``embed_dim_ratio`` channels.
``forward``: ``(N, F, J, 2)`` screen-normalised -> ``(N, F, J, 3)`` metres (seq2seq).
Keys: ``Spatial_patch_to_embedding, Spatial_pos_embed, Temporal_pos_embed, STEblocks.{i},
TTEblocks.{i}, Spatial_norm, Temporal_norm, head.{0,1}``. ``Temporal_pos_embed`` is
``(1, F, C)``, so a checkpoint only loads into a model with the same ``num_frame``.
"""
from functools import partial

import torch
import torch.nn as nn

from ..iganet.model import DropPath


class Mlp(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Standard multi-head self-attention over the token axis: ``(B, T, C) -> (B, T, C)``."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        b, t, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        x = (attn @ v).transpose(1, 2).reshape(b, t, c)
        return self.proj_drop(self.proj(x))


class Block(nn.Module):
    """Pre-norm transformer block (attention + MLP, both residual)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MixSTE2(nn.Module):
    """Alternating spatial (over joints) and temporal (over frames) transformer blocks."""

    output_layer = "head.1"   # the last Linear, shared by all joints (model_3d.init)

    def __init__(self, num_frame=9, num_joints=17, in_chans=2, embed_dim_ratio=32, depth=4, num_heads=8,
                 mlp_ratio=2.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.2, norm_layer=None):
        super().__init__()
        norm_layer = norm_layer or partial(nn.LayerNorm, eps=1e-6)
        dim = embed_dim_ratio
        self.num_frame = num_frame
        self.num_joints = num_joints
        self.block_depth = depth
        self.Spatial_patch_to_embedding = nn.Linear(in_chans, dim)
        self.Spatial_pos_embed = nn.Parameter(torch.zeros(1, num_joints, dim))
        self.Temporal_pos_embed = nn.Parameter(torch.zeros(1, num_frame, dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()

        def blocks():
            return nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                                       attn_drop_rate, rates[i], norm_layer) for i in range(depth))

        self.STEblocks = blocks()
        self.TTEblocks = blocks()
        self.Spatial_norm = norm_layer(dim)        # shared by every spatial block
        self.Temporal_norm = norm_layer(dim)       # shared by every temporal block
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 3))   # default eps here

    def forward(self, x):
        b, f, j, _ = x.shape
        x = self.Spatial_patch_to_embedding(x.reshape(b * f, j, -1)) + self.Spatial_pos_embed
        x = self.pos_drop(x)
        for i in range(self.block_depth):
            if i > 0:
                x = x.reshape(b, j, f, -1).transpose(1, 2).reshape(b * f, j, -1)
            x = self.Spatial_norm(self.STEblocks[i](x))                       # (B*F, J, C)
            x = x.reshape(b, f, j, -1).transpose(1, 2).reshape(b * j, f, -1)   # (B*J, F, C)
            if i == 0:
                x = self.pos_drop(x + self.Temporal_pos_embed)
            x = self.Temporal_norm(self.TTEblocks[i](x))
        x = x.reshape(b, j, f, -1).transpose(1, 2)                            # (B, F, J, C)
        return self.head(x)
