"""Configuration: ``get_cfg()`` for defaults, ``load_cfg(path, opts)`` for an experiment."""
import os

import yacs.config as _yacs
from yacs.config import CfgNode

from .default import _C

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
        raise KeyError(f"{source}: {msg}. Check the spelling against lib/config/default.py "
                       f"(README 'Config reference').") from None
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def load_cfg(path=None, opts=None, freeze=False) -> CfgNode:
    """Defaults merged with the YAML at ``path`` and then with ``opts`` (["KEY", value, ...]).

    An unknown key raises ``KeyError`` naming the key and where it came from.
    """
    cfg = get_cfg()
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        _merge(cfg, path, cfg.merge_from_file, path)
        cfg.CFG_NAME = os.path.basename(path).split(".")[0]
    if opts:
        if len(opts) % 2:
            raise ValueError(f"config overrides must come in KEY VALUE pairs, got {list(opts)}")
        _merge(cfg, "command-line overrides", cfg.merge_from_list, list(opts))
    if freeze:
        cfg.freeze()
    return cfg


__all__ = ["get_cfg", "load_cfg"]
