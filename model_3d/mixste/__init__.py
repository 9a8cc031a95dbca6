"""MixSTE lifter ``mixste``: MixSTE2 with one frame, 512 channels, depth 8 by default (docs/original.md#networks)."""
from ..registry import register_lifter
from .model import MixSTE2


@register_lifter("mixste", normalization="screen", layout="frames", weight_file="model_best_{dataset}_t1.bin",
                 description="MixSTE2, 1 frame, dim 512, depth 8, 8 heads, mlp ratio 2")
def build_mixste(num_joints: int, dim: int = 512, depth: int = 8, heads: int = 8,
                 drop_path_rate: float = 0.0) -> MixSTE2:
    # sizes: MODEL_3D.MIXSTE.{DIM,DEPTH,HEADS}, recorded in l2d-lifter checkpoints as 'arch';
    # drop_path_rate: 0 for evaluation, as MixSTE's run.py builds it (its training network: 0.1, the recipe's)
    dim, depth, heads = int(dim), int(depth), int(heads)
    if depth < 1 or heads < 1 or dim < heads or dim % heads:
        raise ValueError(f"MixSTE: dim {dim} must be a multiple of heads {heads}, depth {depth} >= 1 "
                         f"(published: dim 512, depth 8, heads 8)")
    return MixSTE2(num_frame=1, num_joints=num_joints, in_chans=2, embed_dim_ratio=dim, depth=depth,
                   num_heads=heads, mlp_ratio=2.0, qkv_bias=True, qk_scale=None,
                   drop_path_rate=float(drop_path_rate))


__all__ = ["MixSTE2", "build_mixste"]
