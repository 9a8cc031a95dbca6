"""Evaluation: the metric protocols of docs/original.md#validation-metrics (see :mod:`lib.eval.metrics`)."""
from lib.eval.metrics import (mpjpe, mpjpe_torch, n_mpjpe, p_mpjpe, p_mpjpe_torch, pdj,  # noqa: F401
                              per_action_mean, procrustes_align)
