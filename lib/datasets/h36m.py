"""Human3.6M (17 joints, docs/original.md#human36m-data) over the index written by ``run/prepare_h36m.py``."""
from lib.core.skeleton import H36M
from lib.datasets import register_dataset
from lib.datasets.base import JointsDataset3D


@register_dataset("h36m")
class H36MDataset(JointsDataset3D):
    """See :class:`JointsDataset3D`; J = 17, root 0 (pelvis)."""

    name = "h36m"
    skeleton = H36M
    upper_body = (7, 8, 9, 10, 11, 12, 13, 14, 15, 16)
    lower_body = (0, 1, 2, 3, 4, 5, 6)
