"""2D heatmap detectors: registry, HRNet / SimpleBaseline / ViTPose networks, checkpoint loading.

Shapes: images ``(N, 3, H, W)`` -> heatmaps ``(N, cfg.MODEL.NUM_JOINTS, H/4, W/4)``.

    # MODEL.NAME: pose_hrnet | hrnet | pose_resnet | vitpose | anything added with register_pose_net
    net = build_pose_net(cfg)
    load_pose_checkpoint(net, "model_best.pth")                 # whole detector, strict
    # a subset (MODEL.EXTRA.PRETRAINED_LAYERS), every skipped key reported
    init_pretrained(net, cfg.MODEL.PRETRAINED, cfg.MODEL.EXTRA.PRETRAINED_LAYERS)
"""
from .registry import (POSE_NET_ALIASES, POSE_NETS, build_pose_net, register_pose_net,
                       registered_names, resolve_name)
from . import hrnet as _hrnet            # noqa: F401  (registers pose_hrnet / hrnet)
from . import pose_resnet as _pose_resnet  # noqa: F401  (registers pose_resnet)
from . import vitpose as _vitpose          # noqa: F401  (registers vitpose)
from .checkpoint import (CheckpointMismatchError, LoadReport, extract_state_dict,
                         init_pretrained, load_pose_checkpoint, read_checkpoint)
from .heads import Float32Conv2d
from .hrnet import PoseHighResolutionNet
from .pose_resnet import PoseResNet
from .vitpose import VIT_SIZES, ViTPose

__all__ = [
    "POSE_NETS", "POSE_NET_ALIASES", "build_pose_net", "register_pose_net", "registered_names",
    "resolve_name", "load_pose_checkpoint", "init_pretrained", "read_checkpoint",
    "extract_state_dict", "LoadReport", "CheckpointMismatchError", "PoseHighResolutionNet",
    "PoseResNet", "ViTPose", "VIT_SIZES", "Float32Conv2d",
]
