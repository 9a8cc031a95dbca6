"""2D detector registry: ``cfg.MODEL.NAME`` -> factory ``f(cfg) -> nn.Module``.

Shapes: a registered network maps images ``(N, 3, H, W)`` to heatmaps
``(N, cfg.MODEL.NUM_JOINTS, H/4, W/4)`` (no final activation).

A user's own detector in a few lines::

    from model_2d import register_pose_net, build_pose_net

    @register_pose_net("my_net")
    def make_my_net(cfg):
        return MyNet(num_joints=cfg.MODEL.NUM_JOINTS)

    cfg.MODEL.NAME = "my_net"
    net = build_pose_net(cfg)

Building never reads files: weights are loaded afterwards with
:func:`model_2d.load_pose_checkpoint` (whole detector) or :func:`model_2d.init_pretrained`
(``MODEL.EXTRA.PRETRAINED_LAYERS`` subset), so every load is explicit and reported.
"""
from typing import Callable, Dict

import torch.nn as nn

PoseNetFactory = Callable[..., nn.Module]

POSE_NETS: Dict[str, PoseNetFactory] = {}
# Extra spellings accepted for MODEL.NAME; the L2D experiment files say ``hrnet``.
POSE_NET_ALIASES: Dict[str, str] = {}


def register_pose_net(name: str, *, aliases=(), override: bool = False):
    """Decorator adding ``factory(cfg) -> nn.Module`` to :data:`POSE_NETS` under ``name``.

    ``aliases`` are other MODEL.NAME spellings resolving to ``name``. Re-registering an
    existing name raises ``KeyError`` unless ``override=True`` (catches copy-paste clashes).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_pose_net: name must be a non-empty string, got {name!r}")

    def decorator(factory: PoseNetFactory) -> PoseNetFactory:
        for key in (name, *aliases):
            if (key in POSE_NETS or key in POSE_NET_ALIASES) and not override:
                raise KeyError(f"2D detector name {key!r} is already registered; pass "
                               f"override=True to register_pose_net to replace it")
        POSE_NETS[name] = factory
        POSE_NET_ALIASES.pop(name, None)
        for alias in aliases:
            POSE_NETS.pop(alias, None)
            POSE_NET_ALIASES[alias] = name
        return factory

    return decorator


def registered_names():
    """Every accepted MODEL.NAME (canonical names, then aliases as ``alias->name``)."""
    return sorted(POSE_NETS) + [f"{a}->{n}" for a, n in sorted(POSE_NET_ALIASES.items())]


def resolve_name(name: str) -> str:
    """Canonical registry name for ``name`` (an alias is followed), or ``KeyError`` listing all."""
    key = str(name).strip()
    key = POSE_NET_ALIASES.get(key, key)
    if key not in POSE_NETS:
        raise KeyError(f"unknown 2D detector MODEL.NAME={name!r}; registered: "
                       f"{', '.join(registered_names())}. Fix MODEL.NAME in the experiment YAML "
                       f"or register your network with model_2d.register_pose_net")
    return key


def build_pose_net(cfg) -> nn.Module:
    """The heatmap network named by ``cfg.MODEL.NAME``, freshly initialised (no file is read).

    Input ``(N, 3, H, W)`` -> output ``(N, cfg.MODEL.NUM_JOINTS, H/4, W/4)``.
    """
    factory = POSE_NETS[resolve_name(cfg.MODEL.NAME)]
    net = factory(cfg)
    if not isinstance(net, nn.Module):
        raise TypeError(f"2D detector factory for MODEL.NAME={cfg.MODEL.NAME!r} returned "
                        f"{type(net).__name__}, expected a torch.nn.Module")
    return net
