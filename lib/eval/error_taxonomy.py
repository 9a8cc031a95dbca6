"""Keypoint error diagnosis for one person per sample, after Ruggero Ronchi & Perona,
"Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation" (ICCV 2017).

Shapes: ``N`` samples, ``J`` joints. Coordinates in pixels of the same image.

Every predicted joint gets one label from its keypoint similarity (COCO's OKS term)

    ks(p, g) = exp(-|p - g|^2 / (2 s^2 k_j^2)),    s^2 = the person's area,

* ``good``       ks to its own ground truth >= 0.85 (within the human annotators' error margin);
* ``jitter``     0.5 <= ks to its own ground truth < 0.85 (near the right joint, not precise);
* ``inversion``  ks to its own ground truth < 0.5, but ks >= 0.5 to the ground truth of its
                 left/right-symmetric joint of the same body (e.g. the left knee predicted on the
                 right knee; the symmetric joint's k is used, equal to its own by symmetry);
* ``miss``       everything else: near no ground truth of its own or its mirror joint.

Ronchi & Perona's fourth class, ``swap`` (near a joint of ANOTHER person), needs several people per
image and is left out: with one person per sample it can not occur. Joints without a mirror joint
(pelvis, spine, thorax, neck, head) are either good, jitter or miss.

``s^2`` is the area of the tight box of the sample's ground-truth 2D joints (width x height). COCO
uses the segment area, which for a person is roughly half its box; with the box the ks of one pixel
error is a little more lenient, uniformly for every joint, method and sample.

Per-joint constants ``k_j = 2 sigma_j`` as in COCO's evaluation code (``vars = (2 sigma)^2``),
with ``sigma_j`` of COCO's keypoints where Human3.6M has the joint (hips 0.107, knees 0.087,
ankles 0.089, shoulders 0.079, elbows 0.072, wrists 0.062). The Human3.6M joints that COCO lacks:

* ``pelvis`` and ``spine`` 0.107 (the hips' value): inner torso points with no surface landmark,
  placed from the hips / along the back; no better defined than the hips themselves;
* ``thorax`` 0.079 (the shoulders' value): the point between the shoulders, located from them;
* ``neck`` (Human3.6M's "Neck/Nose" point) and ``head`` (its top) 0.079: CrowdPose's evaluation
  gives its neck and head-top keypoints the shoulders' 0.079; COCO's nose (0.026) is a crisp skin
  landmark, which Human3.6M's marker-derived neck/nose and head-top points are not.
"""
import numpy as np

from lib.core.skeleton import H36M

GOOD, JITTER, INVERSION, MISS = 0, 1, 2, 3
LABELS = ("good", "jitter", "inversion", "miss")
GOOD_KS = 0.85
NEAR_KS = 0.5

# COCO sigmas in the Human3.6M-17 order (see the module docstring for the five COCO lacks).
H36M_SIGMAS = np.array([0.107, 0.107, 0.087, 0.089, 0.107, 0.087, 0.089, 0.107, 0.079, 0.079, 0.079,
                        0.079, 0.072, 0.062, 0.079, 0.072, 0.062])
H36M_JOINT_K = 2.0 * H36M_SIGMAS


def mirror_index(num_joints, flip_pairs):
    """(J,) int: the left/right-symmetric joint of each joint; itself for a joint on the midline."""
    mirror = np.arange(num_joints)
    pairs = np.asarray(flip_pairs, dtype=np.int64).reshape(-1, 2)
    mirror[pairs[:, 0]], mirror[pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
    return mirror


def gt_box_area(gt_2d_px):
    """(N,J,2) -> (N,) area of the tight box of each sample's ground-truth joints (px^2)."""
    gt = np.asarray(gt_2d_px, dtype=np.float64)
    size = gt.max(axis=-2) - gt.min(axis=-2)
    return size[..., 0] * size[..., 1]


def keypoint_similarity(pred_2d_px, gt_2d_px, joint_k, area):
    """(N,J,2), (N,J,2), (J,), (N,) -> (N,J) ks = exp(-d^2 / (2 area k_j^2))."""
    d2 = ((np.asarray(pred_2d_px, np.float64) - np.asarray(gt_2d_px, np.float64)) ** 2).sum(-1)
    # a degenerate box (all joints on one line) would divide by zero: one square pixel at least
    s2 = np.maximum(np.asarray(area, np.float64), 1.0)[..., None]
    k2 = np.asarray(joint_k, np.float64) ** 2
    return np.exp(-d2 / (2.0 * s2 * k2))


def error_labels(pred_2d_px, gt_2d_px, flip_pairs=H36M.flip_pairs, joint_k=H36M_JOINT_K, area=None):
    """(N,J,2) predictions and ground truth (px) -> (N,J) int8 labels GOOD/JITTER/INVERSION/MISS.

    ``area`` (N,) the person's area s^2 in px^2; None: :func:`gt_box_area` of ``gt_2d_px``.
    """
    pred = np.asarray(pred_2d_px, np.float64)
    gt = np.asarray(gt_2d_px, np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be (N,J,2); got {pred.shape} and {gt.shape}")
    area = gt_box_area(gt) if area is None else np.broadcast_to(np.asarray(area, np.float64), gt.shape[:1])
    mirror = mirror_index(gt.shape[1], flip_pairs)
    own = keypoint_similarity(pred, gt, joint_k, area)
    flipped = keypoint_similarity(pred, gt[:, mirror], np.asarray(joint_k)[mirror], area)
    has_mirror = mirror != np.arange(gt.shape[1])
    labels = np.full(own.shape, MISS, np.int8)
    labels[(own < NEAR_KS) & (flipped >= NEAR_KS) & has_mirror] = INVERSION
    labels[own >= NEAR_KS] = JITTER
    labels[own >= GOOD_KS] = GOOD
    return labels


def error_taxonomy(pred_2d_px, gt_2d_px, flip_pairs=H36M.flip_pairs, joint_k=H36M_JOINT_K, area=None):
    """Share of joints that are good / jitter / inversion / miss (module docstring for the rules).

    pred_2d_px, gt_2d_px (N,J,2) px (numpy or torch); flip_pairs ((left, right), ...) joint
    indices; joint_k (J,) per-joint constants (default :data:`H36M_JOINT_K`, Human3.6M-17 order);
    area (N,) s^2 px^2 or None (ground-truth box area). Returns {"good", "jitter", "inversion",
    "miss": float fractions of all N*J joints, summing to 1; "labels": (N,J) int8 array of
    GOOD=0, JITTER=1, INVERSION=2, MISS=3; "per_joint": {class: (J,) fractions over samples}}.
    """
    labels = error_labels(_numpy(pred_2d_px), _numpy(gt_2d_px), flip_pairs, joint_k,
                          None if area is None else _numpy(area))
    onehot = labels[..., None] == np.arange(len(LABELS), dtype=np.int8)      # (N,J,4)
    overall = onehot.mean(axis=(0, 1)) if labels.size else np.zeros(len(LABELS))
    per_joint = onehot.mean(axis=0) if len(labels) else np.zeros((labels.shape[1], len(LABELS)))
    out = {name: float(overall[i]) for i, name in enumerate(LABELS)}
    out["labels"] = labels
    out["per_joint"] = {name: per_joint[:, i] for i, name in enumerate(LABELS)}
    return out


def _numpy(x):
    if hasattr(x, "detach"):                 # a torch tensor, on any device
        x = x.detach().cpu().numpy()
    return np.asarray(x)
