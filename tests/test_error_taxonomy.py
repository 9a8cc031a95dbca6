"""lib/eval/error_taxonomy.py on hand-made predictions of one standing person."""
import numpy as np
import pytest
import torch

from lib.core.skeleton import H36M
from lib.eval.error_taxonomy import (GOOD, H36M_JOINT_K, INVERSION, JITTER, MISS, error_taxonomy,
                                     gt_box_area, keypoint_similarity, mirror_index)

# Human3.6M-17 order, pixels: a person standing upright, seen from the front.
GT = np.array([[100, 150], [80, 150], [80, 200], [80, 250], [120, 150], [120, 200], [120, 250], [100, 120],
               [100, 90], [100, 75], [100, 55], [130, 90], [140, 120], [145, 150], [70, 90], [60, 120],
               [55, 150]], np.float64)
AREA = (145 - 55) * (250 - 55)
R_KNEE, L_KNEE, R_ELBOW, L_WRIST, R_WRIST, THORAX = 2, 5, 15, 13, 16, 8


def _one(pred):
    return error_taxonomy(pred[None], GT[None], H36M.flip_pairs, H36M_JOINT_K)


def _offset_for_ks(ks, joint):
    """The displacement (px) that gives keypoint similarity ``ks`` to the joint's own ground truth."""
    return H36M_JOINT_K[joint] * np.sqrt(AREA) * np.sqrt(-2.0 * np.log(ks))


def test_box_area_and_mirror():
    assert gt_box_area(GT[None])[0] == AREA
    mirror = mirror_index(17, H36M.flip_pairs)
    assert mirror[R_KNEE] == L_KNEE and mirror[L_KNEE] == R_KNEE and mirror[THORAX] == THORAX
    np.testing.assert_array_equal(mirror[mirror], np.arange(17))


def test_perfect_prediction_is_all_good():
    out = _one(GT.copy())
    assert out["good"] == 1.0 and out["jitter"] == out["inversion"] == out["miss"] == 0.0
    assert (out["labels"] == GOOD).all()


def test_jitter_inversion_miss_by_hand():
    pred = GT.copy()
    d = _offset_for_ks(0.7, R_ELBOW)                  # halfway inside the jitter band [0.5, 0.85)
    pred[R_ELBOW] += (d, 0.0)
    pred[L_KNEE] = GT[R_KNEE]                         # the left knee put on the right knee
    pred[L_WRIST] = GT[L_WRIST] + (1000.0, 1000.0)    # nowhere near the body
    ks = keypoint_similarity(pred[None], GT[None], H36M_JOINT_K, [AREA])[0]
    assert ks[R_ELBOW] == pytest.approx(0.7)
    assert ks[L_KNEE] < 0.5                           # the knees are far enough apart to tell
    labels = _one(pred)["labels"][0]
    assert labels[R_ELBOW] == JITTER and labels[L_KNEE] == INVERSION and labels[L_WRIST] == MISS
    others = np.setdiff1d(np.arange(17), [R_ELBOW, L_KNEE, L_WRIST])
    assert (labels[others] == GOOD).all()


def test_band_edges():
    for ks, want in ((0.86, GOOD), (0.84, JITTER), (0.51, JITTER), (0.49, MISS)):
        pred = GT.copy()
        pred[R_ELBOW] += (0.0, -_offset_for_ks(ks, R_ELBOW))      # straight up: away from the left elbow
        assert _one(pred)["labels"][0, R_ELBOW] == want, ks


def test_midline_joint_is_never_an_inversion():
    pred = GT.copy()
    pred[THORAX] = GT[9]                  # the thorax on the neck: no mirror joint, so a miss or jitter
    label = _one(pred)["labels"][0, THORAX]
    assert label != INVERSION


def test_fractions_sum_to_one_and_batch_and_torch():
    rng = np.random.default_rng(0)
    gt = GT[None] + rng.normal(0, 3, (50, 17, 2))
    pred = gt + rng.normal(0, 12, gt.shape)
    pred[:10, [R_KNEE, L_KNEE]] = gt[:10, [L_KNEE, R_KNEE]]          # ten samples with inverted knees
    out = error_taxonomy(pred, gt, H36M.flip_pairs, H36M_JOINT_K)
    total = sum(out[k] for k in ("good", "jitter", "inversion", "miss"))
    assert total == pytest.approx(1.0)
    assert out["labels"].shape == (50, 17) and out["inversion"] >= 20 / (50 * 17)
    for k in ("good", "jitter", "inversion", "miss"):
        assert out["per_joint"][k].shape == (17,)
    np.testing.assert_allclose(sum(out["per_joint"][k] for k in ("good", "jitter", "inversion", "miss")), 1.0)
    again = error_taxonomy(torch.from_numpy(pred).float(), torch.from_numpy(gt).float(), H36M.flip_pairs,
                           torch.from_numpy(H36M_JOINT_K))
    assert (again["labels"] == out["labels"]).mean() > 0.99            # float32 may move a borderline joint


def test_area_argument_overrides_the_box():
    pred = GT.copy()
    pred[R_ELBOW] += (0.0, -_offset_for_ks(0.7, R_ELBOW))
    assert _one(pred)["labels"][0, R_ELBOW] == JITTER
    tiny = error_taxonomy(pred[None], GT[None], H36M.flip_pairs, H36M_JOINT_K, area=[AREA / 100.0])
    assert tiny["labels"][0, R_ELBOW] == MISS                          # the same offset on a 10x smaller person


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        error_taxonomy(GT[None], GT[None, :16])
