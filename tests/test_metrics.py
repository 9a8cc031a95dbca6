"""Metrics against hand numbers (docs/original.md#worked-examples, example 8) and a per-sample Procrustes written
like the original."""
import math

import numpy as np
import pytest
import torch

from conftest import ref_p_mpjpe_one
from lib.core.skeleton import H36M, H36M_ACTIONS, PANOPTIC
from lib.eval.metrics import (mpjpe, mpjpe_torch, n_mpjpe, p_mpjpe, p_mpjpe_torch, pdj, per_action_mean,
                              procrustes_align)


def random_rotation(rng):
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_mpjpe_hand_value():
    gt = np.zeros((2, 2, 3))
    pred = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    np.testing.assert_allclose(mpjpe(pred, gt), [2.5, 1.5])
    np.testing.assert_allclose(mpjpe_torch(torch.from_numpy(pred), torch.from_numpy(gt)).numpy(), [2.5, 1.5])
    with pytest.raises(ValueError, match="mpjpe"):
        mpjpe(pred[:, :1], gt)


def test_similarity_copy_has_zero_p_mpjpe_but_reflection_does_not():
    rng = np.random.default_rng(0)
    gt = rng.standard_normal((5, 17, 3)) * 300
    pred = np.stack([1.7 * gt[b] @ random_rotation(rng) + rng.uniform(-500, 500, 3) for b in range(5)])
    assert (mpjpe(pred, gt) > 10).all()
    np.testing.assert_allclose(p_mpjpe(pred, gt), 0, atol=1e-9)
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-9)
    mirrored = gt * np.array([-1.0, 1.0, 1.0])
    errors = p_mpjpe(mirrored, gt)
    assert (errors > 1).all()
    np.testing.assert_allclose(errors, [ref_p_mpjpe_one(mirrored[b], gt[b]) for b in range(5)], rtol=1e-10)
    np.testing.assert_allclose(p_mpjpe_torch(torch.from_numpy(pred), torch.from_numpy(gt)).numpy(), 0,
                               atol=1e-8)
    np.testing.assert_allclose(p_mpjpe_torch(torch.from_numpy(mirrored), torch.from_numpy(gt)).numpy(),
                               errors, rtol=1e-10)


def test_p_mpjpe_matches_per_sample_loop():
    rng = np.random.default_rng(1)
    gt = rng.standard_normal((40, 17, 3)) * 200
    pred = gt + rng.standard_normal((40, 17, 3)) * 80
    pred[::3] *= np.array([1.0, -1.0, 1.0])               # some near-reflections trigger the det fix
    ref = np.array([ref_p_mpjpe_one(pred[b], gt[b]) for b in range(40)])
    np.testing.assert_allclose(p_mpjpe(pred, gt), ref, rtol=1e-10)
    assert (p_mpjpe(pred, gt) <= mpjpe(pred, gt) + 1e-9).all()
    torch_vals = p_mpjpe_torch(torch.from_numpy(pred).float(), torch.from_numpy(gt).float())
    assert torch_vals.dtype == torch.float32 and torch_vals.shape == (40,)
    np.testing.assert_allclose(torch_vals.numpy(), ref, rtol=1e-4)
    # Batch of one.
    np.testing.assert_allclose(p_mpjpe(pred[:1], gt[:1]), ref[:1], rtol=1e-10)
    np.testing.assert_allclose(p_mpjpe_torch(torch.from_numpy(pred[:1]), torch.from_numpy(gt[:1])).numpy(),
                               ref[:1], rtol=1e-10)


def test_n_mpjpe_removes_scale_only():
    rng = np.random.default_rng(2)
    gt = rng.standard_normal((4, 17, 3))
    np.testing.assert_allclose(n_mpjpe(0.5 * gt, gt), 0, atol=1e-12)
    pred = gt + 0.1 * rng.standard_normal((4, 17, 3))
    scale = (pred * gt).sum(axis=(1, 2)) / (pred * pred).sum(axis=(1, 2))
    ref = [np.linalg.norm(scale[b] * pred[b] - gt[b], axis=1).mean() for b in range(4)]
    np.testing.assert_allclose(n_mpjpe(pred, gt), ref)


def test_pdj_worked_example_strict_threshold():
    # Left shoulder (0, 0), right hip (30, 40): torso 50 px -> threshold 10 px, strict.
    gt = np.zeros((1, 17, 2))
    gt[0, H36M.left_shoulder] = (0.0, 0.0)
    gt[0, H36M.right_hip] = (30.0, 40.0)
    pred = gt.copy()
    pred[0, 5] += (6.0, 8.0)           # exactly 10 px: a miss
    pred[0, 6] += (6.0, 7.99)          # just below: detected
    pred[0, 7] += (0.0, 12.0)          # miss
    hits = pdj(pred, gt, H36M.left_shoulder, H36M.right_hip)
    assert hits.shape == (1, 17) and hits.dtype == bool
    expected = np.ones(17, dtype=bool)
    expected[[5, 7]] = False
    np.testing.assert_array_equal(hits[0], expected)
    assert 100 * hits.mean() == pytest.approx(100 * 15 / 17)


def test_pdj_panoptic_indices_per_sample_torso():
    gt = np.zeros((2, 15, 2))
    gt[:, PANOPTIC.right_hip] = [[0.0, 100.0], [0.0, 10.0]]   # torso 100 px and 10 px
    pred = gt + np.array([5.0, 0.0])
    np.testing.assert_array_equal(pdj(pred, gt, PANOPTIC.left_shoulder, PANOPTIC.right_hip).all(axis=1),
                                  [True, False])


def test_per_action_mean():
    values = [1.0, 3.0, 10.0, 5.0]
    actions = ["Directions", "Directions", "Walking", "unknown"]
    out = per_action_mean(values, actions)
    assert list(out) == list(H36M_ACTIONS)
    assert out["Directions"] == 2.0 and out["Walking"] == 10.0
    assert math.isnan(out["Eating"])
    assert per_action_mean(values, actions, names=["unknown"]) == {"unknown": 5.0}
    with pytest.raises(ValueError, match="action"):
        per_action_mean(values, actions[:3])
