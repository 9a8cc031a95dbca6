"""CMU Panoptic (15 joints, docs/original.md#cmu-panoptic-data) over the index written by
``run/prepare_panoptic.py``."""
from lib.core.skeleton import PANOPTIC
from lib.datasets import register_dataset
from lib.datasets.base import JointsDataset3D


@register_dataset("panoptic")
class PanopticDataset(JointsDataset3D):
    """See :class:`JointsDataset3D`; J = 15, root 2 (body centre); ``action`` is '' (index -1)."""

    name = "panoptic"
    skeleton = PANOPTIC
    upper_body = (0, 1, 3, 4, 5, 9, 10, 11)
    lower_body = (2, 6, 7, 8, 12, 13, 14)
