"""IGANet lifter ``iganet`` (3 blocks, 512 channels by default; docs/original.md#iganet-network)."""
from ..registry import register_lifter
from .graph import spatial_adjacency
from .model import IGANet


@register_lifter("iganet", normalization="screen", layout="frames", weight_file="model_best_{dataset}.pth",
                 description="IGANet, 3 GCN/attention blocks, 512 channels, H36M-17 / Panoptic-15 graph")
def build_iganet(num_joints: int, layers: int = 3, channel: int = 512) -> IGANet:
    # sizes: MODEL_3D.IGANET.{LAYERS,CHANNEL}, recorded in l2d-lifter checkpoints as 'arch'
    return IGANet(num_joints, layers=layers, channel=channel)


__all__ = ["IGANet", "build_iganet", "spatial_adjacency"]
