"""The README's config reference lists every key of the config tree (so it cannot go stale)."""
from yacs.config import CfgNode

from conftest import ROOT
from lib.config import get_cfg


def _keys(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, CfgNode):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield prefix + k


def test_readme_config_reference_lists_every_key():
    keys = list(_keys(get_cfg()))
    assert "LOSS.OHKLM_TOP_K" in keys and "MODEL_3D.WEIGHTS.SB" in keys
    readme = (ROOT / "README.md").read_text()
    missing = [k for k in keys if f"| `{k}` |" not in readme]
    assert not missing, f"README 'Config reference' lacks: {missing}"
