"""Lifter registry: name -> how to build the bare network and how to feed it.

Shapes: N batch, J joints.  A registered factory is ``f(num_joints) -> nn.Module``; the
``LifterSpec`` stored beside it tells :class:`model_3d.lifter.Lifter` which input
normalisation and tensor layout the network expects:

* ``normalization``: ``"zscore"`` (input ``(p - mean_2d) / (std_2d + 1e-8)`` with stats in
  pixels, output z-scored 3D unnormalised with ``std_3d``/``mean_3d`` in cm, then /100),
  ``"screen"`` (input ``x/w*2-1, y/w*2-h/w``; output already metres) or ``"none"`` (pixels in,
  metres out).
* ``layout``: ``"flat"`` (net maps ``(N, 2J) -> (N, 3J)``, joint-major), ``"frames"``
  (``(N, 1, J, 2) -> (N, 1, J, 3)``, a sequence of one frame) or ``"joints"``
  (``(N, J, 2) -> (N, J, 3)``).
"""
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import torch.nn as nn

from lib.utils.errors import MissingKeyError

NORMALIZATIONS = ("zscore", "screen", "none")
LAYOUTS = ("flat", "frames", "joints")
# A lifter's name is also a config key (MODEL_3D.WEIGHTS.<NAME>, LIFTER_TRAIN.<NAME>) and an entry of
# the comma-separated --model_3d list: letters, digits and underscores only.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class LifterSpec:
    name: str
    factory: Callable[[int], nn.Module]
    normalization: str = "screen"
    layout: str = "frames"
    weight_file: str = "model_best_{dataset}.pth"   # formatted with dataset=
    weights_dir: Optional[Path] = None               # default: <factory's folder>/weights
    description: str = ""
    extra: Dict = field(default_factory=dict)

    def default_weight_path(self, dataset: str) -> Path:
        folder = self.weights_dir
        if folder is None:
            folder = Path(inspect.getfile(self.factory)).resolve().parent / "weights"
        return Path(folder) / self.weight_file.format(dataset=dataset)


LIFTERS: Dict[str, LifterSpec] = {}


def register_lifter(name: str, *, normalization: str = "screen", layout: str = "frames",
                    weight_file: str = "model_best_{dataset}.pth", weights_dir=None,
                    description: str = "", override: bool = False, recipe: Optional[Dict] = None, **extra):
    """Decorator registering ``factory(num_joints) -> nn.Module`` under ``name``.

    ``recipe``: how ``run/train_lifter.py`` trains it (keys of :data:`model_3d.recipes.DEFAULT_RECIPE`,
    which fills in the rest); without one the default recipe is used. The registry's order (the
    built-ins first, then yours as registered) is the lifter order everywhere.

    Example (a user's own lifter in a few lines)::

        from model_3d import register_lifter, build_lifter

        @register_lifter("mlp", normalization="screen", layout="joints")
        def make_mlp(num_joints):
            return MyNet(num_joints)          # (N, J, 2) screen coords -> (N, J, 3) metres

        lifter = build_lifter("mlp", 17, weights="my.pth")
    """
    if not NAME_PATTERN.match(str(name)):
        raise ValueError(f"register_lifter({name!r}): a lifter name is a letter followed by letters, digits "
                         f"or underscores (it becomes the config keys MODEL_3D.WEIGHTS.<NAME> and "
                         f"LIFTER_TRAIN.<NAME>)")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"register_lifter({name!r}): normalization={normalization!r}; "
                         f"choose one of {NORMALIZATIONS}")
    if layout not in LAYOUTS:
        raise ValueError(f"register_lifter({name!r}): layout={layout!r}; choose one of {LAYOUTS}")

    def decorator(factory):
        if name in LIFTERS and not override:
            raise KeyError(f"lifter {name!r} is already registered (by "
                           f"{LIFTERS[name].factory.__module__}); pass override=True to replace it")
        if recipe is not None:
            from .recipes import set_recipe
            set_recipe(name, recipe)
        LIFTERS[name] = LifterSpec(name=name, factory=factory, normalization=normalization,
                                   layout=layout, weight_file=weight_file,
                                   weights_dir=Path(weights_dir) if weights_dir else None,
                                   description=description, extra=dict(extra))
        return factory

    return decorator


class UnknownLifterError(MissingKeyError):
    """A lifter name that is not registered (a ``KeyError``); the message lists the registered ones."""


def _unknown_hint() -> str:
    return (f"registered lifters: {list(LIFTERS)}. A lifter of your own is registered with "
            f"@model_3d.register_lifter(name) in a module named in the config key CUSTOM_IMPORTS")


def get_spec(name: str) -> LifterSpec:
    try:
        return LIFTERS[name]
    except KeyError:
        raise UnknownLifterError(f"unknown lifter {name!r}; {_unknown_hint()}") from None


def check_lifter_names(names, where: str) -> None:
    """Every name in ``names`` is registered, else one ``KeyError`` that says where the names came from."""
    unknown = [n for n in names if n not in LIFTERS]
    if unknown:
        raise UnknownLifterError(f"unknown lifter(s) {unknown} in {where}; {_unknown_hint()}")


def build_lifter_net(name: str, num_joints: int, arch: Optional[Dict] = None) -> nn.Module:
    """The bare network ``name`` for ``num_joints`` joints.

    ``arch``: size keywords of the factory (e.g. ``{'layers': 1, 'channel': 128}`` for ``iganet``,
    ``{'dim': 64, 'depth': 4, 'heads': 8}`` for ``mixste``); empty or None = L2D's published sizes.
    """
    spec = get_spec(name)
    arch = dict(arch or {})
    if arch:
        params = inspect.signature(spec.factory).parameters
        known = [k for k in params if k != next(iter(params))]
        unknown = sorted(k for k in arch if k not in known)
        if unknown:
            raise ValueError(f"lifter {name!r}: unknown size key(s) {unknown}; its factory accepts {known} "
                             f"(config MODEL_3D.{name.upper()}.*, or 'arch' in the checkpoint)")
    net = spec.factory(int(num_joints), **arch)
    if not isinstance(net, nn.Module):
        raise TypeError(f"lifter factory for {name!r} returned {type(net).__name__}, expected nn.Module")
    return net


def default_weight_path(name: str, dataset: str) -> Path:
    """Absolute default weight file of lifter ``name`` for ``dataset`` (docs/original.md#networks)."""
    return get_spec(name).default_weight_path(dataset)
