"""Configuration: ``get_cfg()`` for defaults, ``load_cfg(path, opts)`` for an experiment.

Two kinds of key are open, because the lifters they name may be registered by a user's module:
``MODEL_3D.WEIGHTS.<NAME>`` (a path) and ``LIFTER_TRAIN.<NAME>.{EPOCHS, BATCH_SIZE, LR}``. Any name
merges; ``model_3d.check_lifter_config`` checks the names against the registry before anything is
built. ``CUSTOM_IMPORTS`` (a list of module names, found on the Python path or in the working
folder) is imported by :func:`load_cfg` before it returns, so those modules' registrations exist
by then. A config itself never holds code: a module is Python you wrote or installed, named by it.
"""
import importlib
import os
import re
import sys

import yacs.config as _yacs
import yaml
from yacs.config import CfgNode

from lib.utils.errors import BadValueError, ConfigError

from .default import _C

CONFIG_SUFFIXES = (".yaml", ".yml")
AMP_MODES = ("none", "fp16", "bf16")

_yacs_coerce = _yacs._check_and_coerce_cfg_value_type


def _coerce(replacement, original, key, full_key):
    # An integer where a float is expected (``SIGMA: 3``, ``LOSS_2D_W: 1``) is what people write.
    if isinstance(original, float) and isinstance(replacement, int) and not isinstance(replacement, bool):
        return float(replacement)
    return _yacs_coerce(replacement, original, key, full_key)


_yacs._check_and_coerce_cfg_value_type = _coerce


def get_cfg() -> CfgNode:
    """A fresh, mutable copy of every project default."""
    return _C.clone()


def _merge(cfg: CfgNode, source: str, merge_fn, arg):
    try:
        merge_fn(arg)
    except (KeyError, AssertionError) as err:
        msg = err.args[0] if err.args else str(err)
        raise ConfigError(f"{source}: {msg}. Check the spelling against lib/config/default.py "
                          f"(docs/config.md).") from None
    except ValueError as err:
        raise BadValueError(f"{source}: {err}") from None


def read_yaml(path: str) -> CfgNode:
    """A ``.yaml``/``.yml`` file as a CfgNode, read with ``yaml.safe_load`` (plain data only).

    yacs itself would also accept a ``.py`` file and execute it; only YAML is accepted here.
    Syntax errors name the file and the line.
    """
    if os.path.splitext(str(path))[1].lower() not in CONFIG_SUFFIXES:
        raise ConfigError(f"config file {path}: only .yaml / .yml files are accepted (a Python config would "
                          f"run code); write the settings as YAML")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: YAML syntax error ({problem}); fix that line") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of KEY: value at the top, "
                          f"got a {type(data).__name__}")
    return CfgNode(data)


BASE_KEY = "_BASE_"
LIFTER_TRAIN_KEYS = {"EPOCHS": 0, "BATCH_SIZE": 0, "LR": 0.0}
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _open_lifter_key(cfg: CfgNode, name: str) -> None:
    """Make room for lifter ``name`` (upper case) under MODEL_3D.WEIGHTS and LIFTER_TRAIN."""
    if name not in cfg.MODEL_3D.WEIGHTS:
        cfg.MODEL_3D.WEIGHTS[name] = ""
    if name not in cfg.LIFTER_TRAIN:
        cfg.LIFTER_TRAIN[name] = CfgNode(dict(LIFTER_TRAIN_KEYS))


def _open_keys_of_node(cfg: CfgNode, node) -> None:
    weights = ((node.get("MODEL_3D") or {}).get("WEIGHTS") or {}) if isinstance(node, dict) else {}
    for name in weights if isinstance(weights, dict) else ():
        _open_lifter_key(cfg, str(name))
    lifter_train = node.get("LIFTER_TRAIN") if isinstance(node, dict) else None
    for name, value in (lifter_train.items() if isinstance(lifter_train, dict) else ()):
        if isinstance(value, dict) and name not in cfg.LIFTER_TRAIN:
            _open_lifter_key(cfg, str(name))


def _open_keys_of_opts(cfg: CfgNode, opts) -> None:
    for full_key in list(opts)[0::2]:
        parts = str(full_key).split(".")
        if len(parts) == 3 and parts[:2] == ["MODEL_3D", "WEIGHTS"]:
            _open_lifter_key(cfg, parts[2])
        elif len(parts) == 3 and parts[0] == "LIFTER_TRAIN" and parts[2] in LIFTER_TRAIN_KEYS:
            _open_lifter_key(cfg, parts[1])


def import_custom_modules(modules, source: str = "CUSTOM_IMPORTS") -> None:
    """Import each module of ``modules`` (names as in ``import x.y``) from the Python path or the
    working folder. A name that is not a module name, or a module that fails to import, is one
    :class:`ConfigError` naming it."""
    if not isinstance(modules, (list, tuple)):
        raise ConfigError(f"{source}: expected a list of module names, got {modules!r}")
    for name in modules:
        if not isinstance(name, str) or not _MODULE_NAME.match(name):
            raise ConfigError(f"{source}: {name!r} is not a module name (e.g. my_lifters or pkg.my_lifters)")
        cwd = os.getcwd()
        added = cwd not in sys.path
        if added:                        # `python run/x.py` puts run/ on the path, not the working folder
            sys.path.insert(0, cwd)
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"{source}: cannot import {name!r} ({err}); put {name.replace('.', '/')}.py in "
                              f"the working folder or on PYTHONPATH") from None
        finally:
            if added and cwd in sys.path:
                sys.path.remove(cwd)


def read_yaml_chain(path: str, _seen=()) -> list:
    """[(file, CfgNode), ...] in merge order: the files named by ``_BASE_`` (a path relative to the
    file that names it) first, then the file itself, so that a preset states only what it changes."""
    node = read_yaml(path)
    base = node.pop(BASE_KEY, None)
    if base is None:
        return [(str(path), node)]
    base_path = os.path.normpath(os.path.join(os.path.dirname(str(path)), str(base)))
    if base_path in _seen or os.path.normpath(str(path)) == base_path:
        raise ConfigError(f"config file {path}: {BASE_KEY} {base!r} leads back to itself")
    if not os.path.isfile(base_path):
        raise ConfigError(f"config file {path}: {BASE_KEY} {base!r} not found (looked for {base_path}; the path "
                          f"is relative to the file that names it)")
    return read_yaml_chain(base_path, _seen + (os.path.normpath(str(path)),)) + [(str(path), node)]


def _check(ok: bool, key: str, value, need: str):
    if not ok:
        raise BadValueError(f"config {key} = {value!r}: {need}; set it in the YAML or as "
                            f"`{key} VALUE` on the command line")


def validate_cfg(cfg: CfgNode) -> CfgNode:
    """Values that would otherwise fail only at the first training step (or never), checked at load."""
    _check(str(cfg.TRAIN.AMP) in AMP_MODES, "TRAIN.AMP", cfg.TRAIN.AMP, f"use one of {list(AMP_MODES)}")
    for key in ("TRAIN.BATCH_SIZE_PER_GPU", "TEST.BATCH_SIZE_PER_GPU"):
        group, name = key.split(".")
        value = cfg[group][name]
        _check(int(value) >= 1, key, value, "must be a whole number >= 1")
    _check(int(cfg.LIFTER_TRAIN.BATCH_SIZE) >= 0, "LIFTER_TRAIN.BATCH_SIZE", cfg.LIFTER_TRAIN.BATCH_SIZE,
           "must be >= 1 (or 0 for the lifter's recipe)")
    _check(int(cfg.LIFTER_TRAIN.EPOCHS) >= 0, "LIFTER_TRAIN.EPOCHS", cfg.LIFTER_TRAIN.EPOCHS,
           "must be >= 1 (or 0 for the lifter's recipe)")
    _check(int(cfg.TRAIN.EPOCHS) >= 0, "TRAIN.EPOCHS", cfg.TRAIN.EPOCHS,
           "must be >= 0 (--epochs N trains epochs 0..N, so 0 is one epoch)")
    _check(int(cfg.WORKERS) >= 0, "WORKERS", cfg.WORKERS, "must be >= 0 (0 = load in the main process)")
    _check(isinstance(cfg.TRUSTED_FILES, (list, tuple)), "TRUSTED_FILES", cfg.TRUSTED_FILES,
           "must be a list of paths")
    return cfg


def load_cfg(path=None, opts=None, freeze=False) -> CfgNode:
    """Defaults merged with the YAML at ``path`` and then with ``opts`` (["KEY", value, ...]).

    An unknown key raises :class:`ConfigError` (a ``KeyError``) naming the key and where it came
    from; a value out of range (:func:`validate_cfg`) a :class:`BadValueError` (a ``ValueError``).
    """
    cfg = get_cfg()
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        for source, node in read_yaml_chain(path):
            _open_keys_of_node(cfg, node)
            _merge(cfg, source, cfg.merge_from_other_cfg, node)
        cfg.CFG_NAME = os.path.basename(path).split(".")[0]
    if opts:
        if len(opts) % 2:
            raise BadValueError(f"config overrides must come in KEY VALUE pairs, got {list(opts)}")
        _open_keys_of_opts(cfg, opts)
        _merge(cfg, "command-line overrides", cfg.merge_from_list, list(opts))
    validate_cfg(cfg)
    import_custom_modules(list(cfg.CUSTOM_IMPORTS))
    if freeze:
        cfg.freeze()
    return cfg


__all__ = ["get_cfg", "load_cfg", "read_yaml", "read_yaml_chain", "validate_cfg", "import_custom_modules",
           "LIFTER_TRAIN_KEYS"]
