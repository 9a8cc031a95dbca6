"""IGANet (Xia et al. 2023), key-compatible with xiu-cs/IGANet ``model/model_IGANet.py``.

Shapes: N batch, F frames (1), J joints, C = 512 channels, K = 4 graph kernels.
``Model.forward``: ``(N, F, J, 2)`` screen-normalised -> ``(N*F, 1, J, 3)`` metres.
Keys: ``encoder.{fc1,fc3,fc4,fc5}``, ``IGANet.blocks.{i}.*``, ``IGANet.norm``, ``fcn``.
The adjacency is a non-persistent buffer (not in the state dict), like the official CUDA model,
so official files load strictly; ``s_gcn2attn``/``s_attn2gcn`` are frozen parameters that are.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from .graph import LAYOUT_BY_JOINTS, spatial_adjacency


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Encoder(nn.Module):
    """Four stacked Linear layers 2 -> C/8 -> C/4 -> C/2 -> C, no activation (published: C = 512)."""

    def __init__(self, channel: int = 512):
        super().__init__()
        self.fc1 = nn.Linear(2, channel // 8)
        self.fc3 = nn.Linear(channel // 8, channel // 4)
        self.fc4 = nn.Linear(channel // 4, channel // 2)
        self.fc5 = nn.Linear(channel // 2, channel)

    def forward(self, x):
        return self.fc5(self.fc4(self.fc3(self.fc1(x))))


class LinearBlock(nn.Module):
    def __init__(self, ch_in, ch_out, drop):
        super().__init__()
        self.linear = nn.Sequential(nn.Linear(ch_in, ch_out), nn.GELU(), nn.Dropout(drop))

    def forward(self, x):
        return self.linear(x)


class UMLP(nn.Module):
    """C -> C/2 -> C/2 (+skip) -> C (published: 512 -> 256; the key names keep those numbers)."""

    def __init__(self, drop: float, channel: int = 512):
        super().__init__()
        self.linear512_256 = LinearBlock(channel, channel // 2, drop)
        self.linear256_256 = LinearBlock(channel // 2, channel // 2, drop)
        self.linear256_512 = LinearBlock(channel // 2, channel, drop)

    def forward(self, x):
        x = self.linear512_256(x)
        x = x + self.linear256_256(x)
        return self.linear256_512(x)


class GCN(nn.Module):
    """1x1 conv C -> K*C then ``sum_k sum_v x[k, c, v] A[k, v, w]``: ``(N, J, C) -> (N, J, C)``."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor):
        super().__init__()
        self.register_buffer("adj", adjacency.clone(), persistent=False)
        self.kernel_size = adjacency.shape[0]
        self.conv1d = nn.Conv1d(in_channels, out_channels * self.kernel_size, kernel_size=1)

    def forward(self, x):
        n, j, _ = x.shape
        # The width-1 convolution and the graph sum as matrix products in the (N, J, C) layout:
        # same math, faster on CPUs, no transposes. contiguous() because on a transposed view
        # (Block's joint-axis LayerNorm) linear() falls back to one small GEMM per sample.
        x = F.linear(x.contiguous(), self.conv1d.weight[..., 0], self.conv1d.bias)   # (N, J, K*C)
        x = x.reshape(n, j * self.kernel_size, -1)                       # (N, J*K, C)
        adj = self.adj.to(x.dtype).permute(2, 1, 0).reshape(j, -1)       # (W, V*K)
        return torch.matmul(adj, x)


class Attention(nn.Module):
    """MHSA whose per-head output gets the GCN features added before the projection.

    Returns ``(out (N, J, C), heads_before_gcn (N, J, C))``; the second feeds GCN 2.
    """

    def __init__(self, dim, num_heads=8, qkv_bias=True, attn_drop=0.2, proj_drop=0.25):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, gcn_feat):
        n, j, c = x.shape
        h = self.num_heads
        q, k, v = self.qkv(x).reshape(n, j, 3, h, c // h).permute(2, 0, 3, 1, 4)   # (N, H, J, d)
        attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
        heads = attn @ v                                                           # (N, H, J, d)
        heads_flat = heads.transpose(1, 2).reshape(n, j, c)
        out = heads + gcn_feat.reshape(n, j, h, c // h).transpose(1, 2)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(n, j, c)))
        return out, heads_flat


class Block(nn.Module):
    def __init__(self, num_joints, dim, adjacency, drop_path=0.0, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(num_joints)                 # LayerNorm over the JOINT axis
        self.GCN_Block1 = GCN(dim, dim, adjacency)
        self.GCN_Block2 = GCN(dim, dim, adjacency)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm_att1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=8, qkv_bias=True, attn_drop=0.2, proj_drop=0.25)
        self.norm2 = norm_layer(dim)
        self.uMLP = UMLP(drop=0.2, channel=dim)
        self.gcn2Attn_drop = nn.Dropout(0.15)
        self.Attn2gcn_drop = nn.Dropout(0.15)
        # Fixed mixing scalars; frozen Parameters so they appear in (and load from) the state dict.
        self.s_gcn2attn = nn.Parameter(torch.tensor([0.5]), requires_grad=False)
        self.s_attn2gcn = nn.Parameter(torch.tensor([0.8]), requires_grad=False)

    def forward(self, x):                                   # (N, J, C)
        gcn1 = self.GCN_Block1(self.norm1(x.transpose(1, 2)).transpose(1, 2))
        att, heads = self.attn(self.norm_att1(x), self.gcn2Attn_drop(gcn1 * self.s_gcn2attn))
        gcn2 = self.GCN_Block2(gcn1 + self.Attn2gcn_drop(heads * self.s_attn2gcn))
        x = x + self.drop_path(gcn2 + att)
        return x + self.drop_path(self.uMLP(self.norm2(x)))


class IGANetBody(nn.Module):
    def __init__(self, depth, embed_dim, adjacency, num_joints, drop_path_rate=0.2):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(Block(num_joints, embed_dim, adjacency, rates[i], norm_layer)
                                    for i in range(depth))
        self.norm = norm_layer(embed_dim)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class IGANet(nn.Module):
    """The official ``Model``: ``(N, F, J, 2) -> (N*F, 1, J, 3)``.

    ``layers`` blocks of ``channel`` features (published: 3 x 512). Other sizes scale the encoder
    (C/8 .. C) and the U-MLP (C/2) with C, for small CPU variants; the key names stay the same.
    """

    output_layer = "fcn"      # the last Linear, shared by all joints (model_3d.init)

    def __init__(self, num_joints: int = 17, layers: int = 3, channel: int = 512, layout: str = None):
        super().__init__()
        if int(channel) < 16 or int(channel) % 16:
            raise ValueError(f"IGANet: channel {channel} must be a positive multiple of 16 (8 attention heads, "
                             f"an encoder from C/8 to C); the published size is 512")
        if int(layers) < 1:
            raise ValueError(f"IGANet: layers {layers} must be >= 1 (published: 3)")
        channel, layers = int(channel), int(layers)
        layout = layout or LAYOUT_BY_JOINTS.get(num_joints)
        if layout is None:
            raise ValueError(f"IGANet has graphs for {sorted(LAYOUT_BY_JOINTS)} joints, got {num_joints}; "
                             f"pass layout= with a graph in model_3d/iganet/graph.py")
        adjacency = torch.from_numpy(spatial_adjacency(layout))
        if adjacency.shape[-1] != num_joints:
            raise ValueError(f"graph {layout!r} has {adjacency.shape[-1]} joints, not {num_joints}")
        self.num_joints = num_joints
        self.layout = layout
        self.register_buffer("A", adjacency, persistent=False)
        self.encoder = Encoder(channel)
        self.IGANet = IGANetBody(layers, channel, adjacency, num_joints)
        self.fcn = nn.Linear(channel, 3)

    # Keys written by L2D's CPU variant (adjacency registered as a Parameter); safe to drop.
    checkpoint_ignored_keys = r"(^A$|\.adj$)"

    def forward(self, x):
        n, f, j, c = x.shape
        x = self.fcn(self.IGANet(self.encoder(x.reshape(n * f, j, c))))
        return x.unsqueeze(1)
