"""3D lifters for L2D: registry, frozen ``Lifter`` wrapper, checkpoints and training recipes.

Shapes: N batch, J joints (17 Human3.6M, 15 CMU Panoptic).

    from model_3d import build_lifter
    lifter = build_lifter("iganet", 17, weights="model_3d/iganet/weights/model_best_h36m.pth")
    pose_3d_m = lifter(pose_2d_px, image_size)     # (N, 17, 2) px, (N, 2) (w, h) -> (N, 17, 3) metres

Registered: ``sb`` (SimpleBaseline, z-scored with stats), ``videopose`` (VideoPose3D, receptive
field 1), ``iganet``, ``mixste`` (MixSTE2, one frame). Each bare network (``build_lifter_net``)
has the official repository's state-dict keys, so official files load strictly.

Bring your own lifter: register a factory ``f(num_joints) -> nn.Module`` and say how it is fed::

    @model_3d.register_lifter("mine", normalization="screen", layout="joints")
    def make_mine(num_joints):
        return MyNet(num_joints)        # (N, J, 2) screen coords -> (N, J, 3) metres

``normalization``: 'zscore' | 'screen' | 'none'; ``layout``: 'flat' (N, 2J)->(N, 3J) |
'frames' (N, 1, J, 2)->(N, 1, J, 3) | 'joints' (N, J, 2)->(N, J, 3); ``weight_file`` names the
default file in ``<factory's folder>/weights/``; ``recipe`` (optional) how run/train_lifter.py
trains it (else :data:`DEFAULT_RECIPE`). Name the module in the config key ``CUSTOM_IMPORTS`` and
the lifter is usable by name from every command (``--model_3d sb,mine``, ``MODEL_3D.WEIGHTS.MINE``,
``LIFTER_TRAIN.MINE.EPOCHS``).
"""
import logging
from pathlib import Path

from lib.utils.errors import BadValueError

from .checkpoint import (LifterCheckpoint, load_lifter_checkpoint, load_net_weights,
                         save_lifter_checkpoint)
from .lifter import STATS_KEYS, Lifter, coerce_stats, load_stats, screen_normalize, zscore
from .init import init_output_at_mean_pose, output_layer_name
from .recipes import (DEFAULT_RECIPE, H36M_REF_STEPS_PER_EPOCH, LIFTER_RECIPES, bn_momentum, get_recipe,
                      lr_factor, set_recipe)
from .registry import (LIFTERS, LifterSpec, UnknownLifterError, build_lifter_net, check_lifter_names,
                       default_weight_path, get_spec, register_lifter)
from . import simple_baseline, videopose, iganet, mixste  # noqa: E402,F401  (register built-ins)

logger = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[1]


def build_lifter(name: str, num_joints: int, weights=None, stats=None, *,
                 weights_only: bool = True, arch=None) -> Lifter:
    """Frozen :class:`Lifter` ``name`` for ``num_joints`` joints.

    ``weights``: path, loaded checkpoint object or :class:`LifterCheckpoint` (None = random init).
    ``stats``: dict (numpy/tensors, (J,2)/(J,3) or flat) or a stats file path; when None the
    stats inside a self-contained checkpoint are used. Required for z-scored lifters (``sb``).
    ``arch``: the network's size keywords (:func:`lifter_arch`); a checkpoint that records its own
    ``arch`` (``l2d-lifter`` files) is built with that one instead, files without one (official
    weights) with ``arch`` or, when None, the published sizes.
    """
    spec = get_spec(name)
    ckpt = None
    if weights is not None:
        ckpt = weights if isinstance(weights, LifterCheckpoint) else load_lifter_checkpoint(
            weights, weights_only=weights_only)
        for key, want in (("name", name), ("num_joints", int(num_joints))):
            have = ckpt.meta.get(key)
            if have is not None and have != want:
                raise BadValueError(f"{ckpt.source}: checkpoint is for {key}={have!r}, asked for {want!r}")
        recorded = ckpt.meta.get("arch")
        if recorded is not None:
            if arch and dict(arch) != dict(recorded):
                logger.info("lifter %s: building the sizes recorded in %s (%s), not %s", name, ckpt.source,
                            recorded, dict(arch))
            arch = recorded
    arch = dict(arch or {})
    net = build_lifter_net(name, num_joints, arch)
    if ckpt is not None:
        report = load_net_weights(net, ckpt)
        if report["ignored"]:
            logger.info("lifter %s: ignored checkpoint keys %s", name, report["ignored"])
        if stats is None:
            stats = ckpt.stats
    lifter = Lifter(net, num_joints, spec.normalization, spec.layout, stats=stats, name=name)
    lifter.arch = arch
    lifter.checkpoint = ckpt.meta if ckpt is not None else None
    lifter.weights_source = ckpt.source if ckpt is not None else None
    return lifter


def _resolve_path(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return REPO_ROOT / p   # relative paths work from the repo root regardless of the CWD


def lifter_arch(cfg, name: str) -> dict:
    """Size keywords of lifter ``name`` from ``cfg.MODEL_3D.<NAME>`` (e.g. IGANET.LAYERS -> {'layers': ...}).

    Only the keys that differ from the factory's defaults are returned, so published sizes give
    ``{}`` and checkpoints of default-size networks record no sizes.
    """
    import inspect

    node = cfg.MODEL_3D.get(name.upper()) if name.upper() != "WEIGHTS" else None
    if not isinstance(node, dict):
        return {}
    defaults = {k: p.default for k, p in inspect.signature(get_spec(name).factory).parameters.items()}
    return {k.lower(): v for k, v in node.items() if defaults.get(k.lower(), object()) != v}


def lifter_weight_path(cfg, name: str) -> Path:
    """cfg.MODEL_3D.WEIGHTS.<NAME> when set, else :func:`default_weight_path` for cfg's dataset."""
    configured = cfg.MODEL_3D.WEIGHTS.get(name.upper(), "") if "WEIGHTS" in cfg.MODEL_3D else ""
    if configured:
        return _resolve_path(configured)
    return default_weight_path(name, cfg.DATASET.DATASET)


def check_lifter_config(cfg) -> None:
    """Every lifter the config names is registered: MODEL_3D.NAMES, the keys of MODEL_3D.WEIGHTS and
    the per-lifter nodes of LIFTER_TRAIN (one :class:`UnknownLifterError` naming the key otherwise).

    Those config keys are open (any name merges), since a user's lifter registers only when its
    module (CUSTOM_IMPORTS) is imported; this is where a misspelt name is caught.
    """
    check_lifter_names(list(cfg.MODEL_3D.NAMES), "MODEL_3D.NAMES (--model_3d)")
    by_key = {n.upper(): n for n in LIFTERS}
    for key in cfg.MODEL_3D.WEIGHTS:
        if key not in by_key:
            check_lifter_names([key.lower()], f"config key MODEL_3D.WEIGHTS.{key}")
    for key, value in cfg.LIFTER_TRAIN.items():
        if isinstance(value, dict) and key not in by_key:
            check_lifter_names([key.lower()], f"config key LIFTER_TRAIN.{key}")


def resolve_lifter(cfg, name: str, stats_fallback=None, *, weights_only: bool = True) -> Lifter:
    """The lifter ``name`` as configured by ``cfg`` (weights file must exist).

    Stats for z-scored lifters, first found: ``cfg.MODEL_3D.STATS`` file, the checkpoint's own
    stats, ``stats_fallback`` (e.g. the training dataset's ``stats``). Files named in
    ``cfg.TRUSTED_FILES`` may hold pickled Python objects (read with code execution); others may not.
    """
    from lib.core.skeleton import get_skeleton
    from lib.utils.safe_io import is_trusted

    dataset = cfg.DATASET.DATASET
    num_joints = get_skeleton(dataset).num_joints
    path = lifter_weight_path(cfg, name)
    if not path.is_file():
        cfg_file = cfg.get("CFG_FILE", "") or (f"experiments/{dataset}/{cfg.CFG_NAME}.yaml"
                                               if cfg.get("CFG_NAME") else "<cfg>")
        raise FileNotFoundError(
            f"weights of lifter '{name}' for {dataset} not found: {path}. Make them with "
            f"`python run/train_lifter.py --cfg {cfg_file} --model_3d {name}` or point "
            f"MODEL_3D.WEIGHTS.{name.upper()} at an existing file.")
    trusted = list(cfg.get("TRUSTED_FILES", []))
    ckpt = load_lifter_checkpoint(path, weights_only=weights_only and not is_trusted(path, trusted))
    stats = None
    if get_spec(name).normalization == "zscore":
        if cfg.MODEL_3D.get("STATS", ""):
            stats = load_stats(_resolve_path(cfg.MODEL_3D.STATS), trusted=trusted)
        elif ckpt.stats is None:
            stats = stats_fallback
    return build_lifter(name, num_joints, weights=ckpt, stats=stats, arch=lifter_arch(cfg, name))


__all__ = [
    "LIFTERS", "LifterSpec", "register_lifter", "get_spec", "build_lifter_net", "build_lifter",
    "check_lifter_names", "check_lifter_config", "UnknownLifterError", "output_layer_name", "DEFAULT_RECIPE",
    "set_recipe",
    "default_weight_path", "lifter_weight_path", "lifter_arch", "resolve_lifter", "Lifter", "STATS_KEYS",
    "load_stats", "coerce_stats", "screen_normalize", "zscore", "LifterCheckpoint",
    "load_lifter_checkpoint", "load_net_weights", "save_lifter_checkpoint", "LIFTER_RECIPES",
    "get_recipe", "lr_factor", "bn_momentum", "H36M_REF_STEPS_PER_EPOCH", "init_output_at_mean_pose",
]
