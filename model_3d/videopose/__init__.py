"""VideoPose3D lifter ``videopose`` with receptive field 1 (arc 1,1,1; docs/original.md#videopose3d-network)."""
from ..registry import register_lifter
from .model import TemporalModel


@register_lifter("videopose", normalization="screen", layout="frames",
                 weight_file="model_best_{dataset}_t1.bin",
                 description="VideoPose3D TemporalModel, filter widths [1,1,1], 1024 channels")
def build_videopose(num_joints: int) -> TemporalModel:
    return TemporalModel(num_joints, 2, num_joints, filter_widths=[1, 1, 1], causal=False,
                         dropout=0.25, channels=1024, dense=False)


__all__ = ["TemporalModel", "build_videopose"]
