"""MixSTE lifter ``mixste``: MixSTE2 with one frame, 512 channels, depth 8 (SPEC §6.5)."""
from ..registry import register_lifter
from .model import MixSTE2


@register_lifter("mixste", normalization="screen", layout="frames", weight_file="model_best_{dataset}_t1.bin",
                 description="MixSTE2, 1 frame, dim 512, depth 8, 8 heads, mlp ratio 2")
def build_mixste(num_joints: int) -> MixSTE2:
    return MixSTE2(num_frame=1, num_joints=num_joints, in_chans=2, embed_dim_ratio=512, depth=8,
                   num_heads=8, mlp_ratio=2.0, qkv_bias=True, qk_scale=None, drop_path_rate=0.0)


__all__ = ["MixSTE2", "build_mixste"]
