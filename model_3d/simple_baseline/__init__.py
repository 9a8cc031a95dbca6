"""SimpleBaseline lifter ``sb``: z-scored (N, 2J) -> z-scored (N, 3J) (docs/original.md#simplebaseline-network)."""
from ..registry import register_lifter
from .model import SimpleBaseline


@register_lifter("sb", normalization="zscore", layout="flat", weight_file="model_best_{dataset}.pth",
                 description="SimpleBaseline MLP (1024, 2 stages, dropout 0.5)")
def build_simple_baseline(num_joints: int) -> SimpleBaseline:
    return SimpleBaseline(num_joints, linear_size=1024, num_stages=2, p_dropout=0.5)


__all__ = ["SimpleBaseline", "build_simple_baseline"]
