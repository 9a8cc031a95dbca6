"""Procedural people seen by real Human3.6M cameras: a small demo dataset.

Shapes: ``T`` frames of a sequence, ``32`` joints of the Human3.6M annotation layout,
``(H, W)`` image size. Units are in the names (``_mm``, ``_cm``, ``_px``).

Two writers share one pose generator and one renderer:

* :func:`make_h36m_demo` writes the anibali/h36m-fetch layout
  (``processed/<S>/<Action>-<n>/annot.h5`` + ``imageSequence/<cam>/img_%06d.jpg``) and a
  ``camera_parameters.json`` (L2D layout) whose intrinsics are those of the SCALED images:
  images are the Human3.6M frames shrunk by ``image_size / 1000`` (f and c scaled by the same
  factor; 1000x1002 cameras become ``image_size x round(1.002 image_size)``, e.g. 256x257), and the
  2D annotations are exact projections (Human3.6M distortion model) into those scaled images.
* :func:`make_panoptic_demo` writes the CMU panoptic-toolbox layout with a synthetic ring of 5 HD
  cameras (1920x1080) and the L2D projection model of docs/original.md#cmu-panoptic-data

What the images hold, and why (the miniature's 2D errors should look like a real detector's):

* a person of shaded volumes drawn far-to-near (self-occlusion in depth order), dressed per subject
  (shirt, trousers, shoes, skin, hair) identically on both sides: no colour or mark names left or
  right. The head has hair on the back and a face (eyes, nose) on the front, so front and back can
  be told apart as on a real person, and left/right only through that and the 3D arrangement;
  left/right inversions become possible, as with real detectors;
* static backgrounds with clutter (boxes, discs, poles, limb-like bars in clothing and skin colours);
* in a share of the camera views (:data:`OCCLUDED_VIEW_RATE`) a static foreground object (furniture,
  a pillar, a round object) in front of the person, covering joints in some frames;
* each take wanders on the floor (:data:`FLOOR_WANDER_MM`) so that limbs sometimes leave a camera's
  frame (truncation), the pelvis always staying in every view (:func:`place_in_view`).

Annotations are always the exact projections: occluded and truncated joints keep their true
coordinates, as Human3.6M's motion capture does.

Splits: :func:`make_h36m_demo` can write a split plan ``splits.json`` (S9 valid for selection, S11
test for reporting) and :func:`write_pose_only_split` an image-free ``train_poses`` split for the
lifters (other takes of the training subjects), both read by ``lib/datasets/prepare_h36m.py``.

Everything is deterministic for a given seed (one numpy Generator per purpose and sequence, keyed by
(seed, subject, action[, take])).
"""
import json
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

from lib.core.skeleton import H36M32_TO_17
from lib.datasets import index as idx
from lib.datasets.cameras import (H36M_CAMERA_IDS, H36M_UNRELEASED_SUBJECTS, PANOPTIC_AXIS_M, load_h36m_cameras,
                                  project_h36m, project_panoptic)
from lib.utils.errors import BadValueError

# ---------------------------------------------------------------------------------------------
# Skeleton (Human3.6M 32-joint annotation layout)
# ---------------------------------------------------------------------------------------------
H36M32_PARENTS = (-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19,
                  20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30)
H36M32_USED = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
VALID_SUBJECTS = ("S9", "S11")
TEST_SUBJECTS = ("S11",)       # with a test split (make_h36m_demo(test_split=True)): reporting only
# The 2D pre-training's people (make_h36m_demo(pretrain_people=N)): S101, S102, ..., none of them
# filmed by Human3.6M; person k stands in the cameras of TRAIN_SUBJECTS[k % 5]. A real detector has
# seen thousands of people (COCO) before Human3.6M's five (docs/benchmark.md, the fourth design).
PRETRAIN_SUBJECT_BASE = 100


def pretrain_subjects(count):
    """The names of ``count`` pre-training people: S101 ... S<100+count>."""
    return tuple(f"S{PRETRAIN_SUBJECT_BASE + k}" for k in range(1, int(count) + 1))

# h36m-fetch action ids (metadata.xml; 1 = "_ALL" is excluded there)
H36M_ACTION_IDS = {"Directions": 2, "Discussion": 3, "Eating": 4, "Greeting": 5, "Phoning": 6,
                   "Posing": 7, "Purchases": 8, "Sitting": 9, "SittingDown": 10, "Smoking": 11,
                   "TakingPhoto": 12, "Waiting": 13, "Walking": 14, "WalkingDog": 15,
                   "WalkingTogether": 16}
DEMO_ACTIONS = ("Directions", "Eating", "Greeting", "Phoning", "Sitting", "Waiting", "Walking",
                "WalkingDog")

# Mean Human3.6M bone lengths (mm), scaled per subject.
BONE_MM = dict(hip_width=130.0, thigh=445.0, shin=450.0, foot=150.0, spine=235.0, chest=255.0,
               neck=120.0, head=115.0, shoulder=150.0, upper_arm=280.0, forearm=250.0, hand=90.0)

SECONDS_PER_FRAME = 0.08      # demo frames are 12.5 fps: visible motion, still smooth

_deg = np.deg2rad
# Anatomical limits (radians) applied to every generated angle trajectory.
JOINT_LIMITS = dict(lean=(_deg(-20), _deg(60)), twist=(_deg(-45), _deg(45)), side=(_deg(-20), _deg(20)),
                    head_pitch=(_deg(-40), _deg(50)), head_yaw=(_deg(-60), _deg(60)),
                    hip_flex=(_deg(-30), _deg(120)), hip_abd=(_deg(-10), _deg(45)),
                    knee=(_deg(0), _deg(150)), sh_flex=(_deg(-50), _deg(170)),
                    sh_abd=(_deg(0), _deg(160)), elbow=(_deg(0), _deg(150)))


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _apply(R, v):
    """(T,3,3) @ (3,) or (T,3) -> (T,3)."""
    return np.einsum("tij,...j->ti", R, np.asarray(v, dtype=np.float64)) if np.ndim(v) == 1 \
        else np.einsum("tij,tj->ti", R, v)


def subject_style(seed, subject):
    """Per-subject body: bone lengths (mm) and movement temperament, deterministic per seed."""
    rng = np.random.default_rng([seed, int(subject.lstrip("S")), 0])
    height = rng.normal(1.0, 0.045)
    bones = {k: v * height * rng.normal(1.0, 0.025) for k, v in BONE_MM.items()}
    return dict(bones=bones, amplitude=rng.uniform(0.8, 1.2), tempo=rng.uniform(0.85, 1.15))


def subject_actions(seed, subject, count):
    """``count`` action names for a subject: consecutive slices of one seeded permutation, so the
    training subjects together cover every demo action."""
    order = np.random.default_rng([seed, 7]).permutation(len(DEMO_ACTIONS))
    all_subjects = TRAIN_SUBJECTS + VALID_SUBJECTS
    i = all_subjects.index(subject) if subject in all_subjects else int(subject.lstrip("S"))
    picked = {DEMO_ACTIONS[order[(count * i + j) % len(DEMO_ACTIONS)]] for j in range(count)}
    return tuple(sorted(picked))


def _action_angles(action, t, rng, style):
    """Sinusoidal joint-angle trajectories (radians, each (T,)) and root path for one action."""
    T = t.shape[0]
    amp = style["amplitude"] * rng.uniform(0.85, 1.15)
    w = 2 * np.pi * style["tempo"] * rng.uniform(0.9, 1.1)   # rad/s for a 1 Hz base rhythm
    ph = rng.uniform(0, 2 * np.pi, size=8)
    zero = np.zeros(T)

    def osc(mean_deg, amp_deg, freq=1.0, k=0):
        return _deg(mean_deg) + amp * _deg(amp_deg) * np.sin(freq * w * t + ph[k])

    a = {k: zero.copy() for k in ("lean", "twist", "side", "head_pitch", "head_yaw")}
    for side in ("r", "l"):
        a.update({f"hip_flex_{side}": osc(3, 3, 0.3, 0), f"hip_abd_{side}": osc(6, 2, 0.2, 1),
                  f"knee_{side}": osc(6, 4, 0.3, 2), f"sh_flex_{side}": osc(8, 6, 0.4, 3),
                  f"sh_abd_{side}": osc(10, 4, 0.3, 4), f"elbow_{side}": osc(20, 8, 0.4, 5)})
    a["head_pitch"] = osc(5, 8, 0.4, 6)
    a["head_yaw"] = osc(0, 20, 0.25, 7)
    moving = action in ("Walking", "WalkingDog", "Directions")
    if action in ("Walking", "WalkingDog"):
        g = w * (0.9 if action == "Walking" else 0.75) * t + ph[0]        # gait phase
        a["hip_flex_r"] = _deg(10) + amp * _deg(25) * np.sin(g)
        a["hip_flex_l"] = _deg(10) - amp * _deg(25) * np.sin(g)
        a["knee_r"] = _deg(8) + amp * _deg(45) * np.clip(np.sin(g - 1.2), 0, None)
        a["knee_l"] = _deg(8) + amp * _deg(45) * np.clip(np.sin(g + np.pi - 1.2), 0, None)
        a["sh_flex_r"] = -amp * _deg(22) * np.sin(g)
        a["sh_flex_l"] = amp * _deg(22) * np.sin(g)
        a["elbow_r"] = _deg(20) + amp * _deg(12) * (1 - np.sin(g))
        a["elbow_l"] = _deg(20) + amp * _deg(12) * (1 + np.sin(g))
        a["lean"] = _deg(6) + _deg(2) * np.sin(2 * g)
        a["twist"] = _deg(6) * np.sin(g)
        if action == "WalkingDog":            # one arm holds a leash forward-down
            a["sh_flex_r"] = osc(45, 8, 0.6, 3)
            a["elbow_r"] = osc(25, 10, 0.6, 4)
            a["lean"] = _deg(14) + _deg(3) * np.sin(g)
    elif action == "Sitting" or action == "Eating":
        a["hip_flex_r"] = osc(88, 4, 0.3, 0)
        a["hip_flex_l"] = osc(85, 4, 0.3, 1)
        a["knee_r"] = osc(90, 6, 0.3, 2)
        a["knee_l"] = osc(80, 6, 0.25, 3)
        a["hip_abd_r"] = osc(12, 4, 0.2, 4)
        a["hip_abd_l"] = osc(10, 4, 0.2, 5)
        a["lean"] = osc(8, 8, 0.3, 6)
        a["sh_flex_r"] = osc(35, 10, 0.5, 7)
        a["sh_flex_l"] = osc(30, 10, 0.4, 1)
        a["elbow_r"] = osc(70, 15, 0.5, 2)
        a["elbow_l"] = osc(65, 15, 0.4, 3)
        if action == "Eating":                # hand to mouth and back
            cyc = 0.5 * (1 - np.cos(0.8 * w * t + ph[4]))
            a["sh_flex_r"] = _deg(25) + amp * _deg(35) * cyc
            a["elbow_r"] = _deg(60) + amp * _deg(80) * cyc
            a["head_pitch"] = osc(15, 8, 0.8, 5)
    elif action == "Greeting":               # waving arm high, small bow
        a["sh_abd_r"] = osc(115, 15, 0.7, 0)
        a["sh_flex_r"] = osc(30, 10, 0.5, 1)
        a["elbow_r"] = osc(70, 35, 1.6, 2)
        a["lean"] = _deg(10) + amp * _deg(10) * np.clip(np.sin(0.5 * w * t + ph[3]), 0, None)
    elif action == "Directions":             # pointing, turning the torso
        a["sh_flex_l"] = osc(80, 15, 0.5, 0)
        a["sh_abd_l"] = osc(25, 15, 0.4, 1)
        a["elbow_l"] = osc(15, 10, 0.5, 2)
        a["twist"] = osc(0, 25, 0.35, 3)
        a["head_yaw"] = osc(0, 30, 0.35, 3)
    elif action == "Phoning":                # hand at the ear, weight shifts
        a["sh_flex_r"] = osc(40, 8, 0.3, 0)
        a["sh_abd_r"] = osc(35, 6, 0.3, 1)
        a["elbow_r"] = osc(138, 6, 0.4, 2)
        a["side"] = osc(0, 6, 0.3, 3)
        a["hip_abd_l"] = osc(10, 5, 0.3, 3)
        a["head_yaw"] = osc(-10, 20, 0.3, 4)
    elif action == "Waiting":                # hands on hips / behind, shifting weight
        for side in ("r", "l"):
            a[f"sh_abd_{side}"] = osc(40, 8, 0.3, 0)
            a[f"sh_flex_{side}"] = osc(-25, 8, 0.3, 1)
            a[f"elbow_{side}"] = osc(95, 10, 0.3, 2)
        a["side"] = osc(0, 8, 0.4, 3)
        a["knee_r"] = _deg(5) + amp * _deg(15) * np.clip(np.sin(0.4 * w * t + ph[4]), 0, None)
    for name, values in list(a.items()):
        lo, hi = JOINT_LIMITS[name[:-2] if name[-2:] in ("_r", "_l") else name]
        a[name] = np.clip(values, lo, hi)

    # Root path on the floor (mm) and heading (rad, 0 = facing world +y).
    centre = rng.uniform(-600, 600, size=2)
    if moving:
        speed = {"Walking": 1100.0, "WalkingDog": 800.0, "Directions": 350.0}[action] * rng.uniform(0.85, 1.15)
        radius = rng.uniform(1100, 1500)
        direction = rng.choice([-1.0, 1.0])
        theta = rng.uniform(0, 2 * np.pi) + direction * speed * t / radius
        root_xy = np.stack([radius * np.cos(theta), radius * np.sin(theta)], -1) * 0.9
        root_xy = root_xy + centre * 0.2
        # heading along the tangent (facing direction d = (-sin yaw, cos yaw))
        tangent = direction * np.stack([-np.sin(theta), np.cos(theta)], -1)
        yaw = np.arctan2(-tangent[:, 0], tangent[:, 1])
    else:
        root_xy = np.repeat(centre[None], T, 0) + 40.0 * np.stack(
            [np.sin(0.3 * w * t + ph[1]), np.cos(0.25 * w * t + ph[2])], -1)
        yaw = rng.uniform(-np.pi, np.pi) + _deg(15) * np.sin(0.2 * w * t + ph[5])
    return a, root_xy, yaw


def forward_kinematics(angles, bones, root_xy_mm, yaw):
    """Joint angles (each (T,)) -> (T,32,3) world joints in mm, z up, lowest foot point on z=0.

    Body frame: x = the person's right, y = forward, z = up; ``yaw`` turns it about world z.
    """
    T = yaw.shape[0]
    J = np.zeros((T, 32, 3))
    R_torso = _rz(angles["twist"]) @ _ry(angles["side"]) @ _rx(-angles["lean"])
    R_chest = _rz(0.5 * angles["twist"]) @ _ry(0.5 * angles["side"]) @ _rx(-0.5 * angles["lean"])
    R_chest = R_torso @ R_chest
    R_head = R_chest @ _rz(angles["head_yaw"]) @ _rx(-angles["head_pitch"])
    b = bones
    J[:, 12] = _apply(R_torso, [0.0, -15.0, b["spine"]])
    J[:, 11] = 0.5 * J[:, 12]                                  # lower-spine anchor
    J[:, 13] = J[:, 12] + _apply(R_chest, [0.0, 5.0, b["chest"]])
    J[:, 16] = J[:, 13]                                        # shoulder anchors coincide with thorax
    J[:, 24] = J[:, 13]
    J[:, 14] = J[:, 13] + _apply(R_head, [0.0, 45.0, b["neck"]])
    J[:, 15] = J[:, 14] + _apply(R_head, [0.0, -15.0, b["head"]])
    for side, s in (("r", 1.0), ("l", -1.0)):
        hip, knee, ankle, toe, site = (1, 2, 3, 4, 5) if side == "r" else (6, 7, 8, 9, 10)
        J[:, hip] = [s * b["hip_width"], 0.0, -15.0]
        R_thigh = _ry(-s * angles[f"hip_abd_{side}"]) @ _rx(angles[f"hip_flex_{side}"])
        J[:, knee] = J[:, hip] + _apply(R_thigh, [0.0, 0.0, -b["thigh"]])
        R_shin = R_thigh @ _rx(-angles[f"knee_{side}"])
        J[:, ankle] = J[:, knee] + _apply(R_shin, [0.0, 0.0, -b["shin"]])
        # foot stays roughly level: undo most of the shin's pitch
        R_foot = R_shin @ _rx(0.8 * (angles[f"knee_{side}"] - angles[f"hip_flex_{side}"]))
        J[:, toe] = J[:, ankle] + _apply(R_foot, [0.0, 0.87 * b["foot"], -0.5 * b["foot"]])
        J[:, site] = J[:, toe]
        sh, el, wr, th, th_site, hand, hand_site = ((25, 26, 27, 28, 29, 30, 31) if side == "r"
                                                    else (17, 18, 19, 20, 21, 22, 23))
        J[:, sh] = J[:, 13] + _apply(R_chest, [s * b["shoulder"], -10.0, -25.0])
        R_upper = R_chest @ _ry(-s * angles[f"sh_abd_{side}"]) @ _rx(angles[f"sh_flex_{side}"])
        J[:, el] = J[:, sh] + _apply(R_upper, [0.0, 0.0, -b["upper_arm"]])
        R_fore = R_upper @ _rx(angles[f"elbow_{side}"])
        J[:, wr] = J[:, el] + _apply(R_fore, [0.0, 0.0, -b["forearm"]])
        J[:, hand] = J[:, wr] + _apply(R_fore, [0.0, 0.0, -b["hand"]])
        J[:, hand_site] = J[:, hand]
        J[:, th] = J[:, wr] + _apply(R_fore, [-s * 25.0, 20.0, -0.5 * b["hand"]])
        J[:, th_site] = J[:, th]
    # world placement: rotate about z, lift so the lowest foot point touches the floor
    R_world = _rz(yaw)
    world = np.einsum("tij,tkj->tki", R_world, J)
    feet = world[:, [3, 4, 8, 9], 2]
    world[:, :, 2] -= feet.min(axis=1, keepdims=True)
    world[:, :, :2] += root_xy_mm[:, None, :]
    return world


def generate_sequence(seed, subject, action, num_frames, t0=0.0, seconds_per_frame=SECONDS_PER_FRAME,
                      root_scale=1.0, take=1):
    """One sequence of world joints (T,32,3) mm, deterministic per (seed, subject, action, take).

    ``root_scale`` shrinks the floor path about the world origin (smaller capture volumes).
    ``take`` > 1: another recording of the same subject doing the same action (new phases, path and
    heading from the same distribution), like Human3.6M's second subaction; take 1 is the rendered one.
    """
    style = subject_style(seed, subject)
    rng = np.random.default_rng(_take_key([seed, int(subject.lstrip("S")), H36M_ACTION_IDS.get(action, 99), 1], take))
    t = t0 + np.arange(num_frames) * seconds_per_frame
    angles, root_xy, yaw = _action_angles(action, t, rng, style)
    return forward_kinematics(angles, style["bones"], root_xy * root_scale, yaw)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
# (joint a, joint b, surface, radius mm). A left limb and its right twin share one surface: on a
# real body both sides wear the same clothes and skin, so left and right can only be told apart
# from the body's 3D arrangement (the face, the feet pointing forward, what hides what), as in a
# real image. "sleeve" is the forearm: the shirt's colour, or skin for short sleeves.
BODY_PARTS = (
    (1, 2, "bottom", 75), (2, 3, "bottom", 55), (3, 4, "shoe", 40),
    (6, 7, "bottom", 75), (7, 8, "bottom", 55), (8, 9, "shoe", 40),
    (25, 26, "top", 48), (26, 27, "sleeve", 40), (27, 30, "skin", 35),
    (17, 18, "top", 48), (18, 19, "sleeve", 40), (19, 22, "skin", 35),
    (0, 12, "top", 120), (12, 13, "top", 125), (13, 14, "skin", 50),
    (1, 6, "bottom", 80), (17, 25, "top", 65), (0, 1, "bottom", 70), (0, 6, "bottom", 70),
)
HEAD_RADIUS_MM = 105.0
# Head features: (surface, offset in head radii along (right, forward, up), radius in head radii,
# "face" = only where the face is turned towards the camera). Hair sits on the back and top, the
# face and nose on the front: front and back of the head are visible as on a real person, while
# the two eyes and two ears are mirror images of each other and name no side.
HEAD_FEATURES = (
    ("hair", (0.0, -0.22, 0.18), 0.93, False),
    ("skin", (0.0, 0.12, -0.06), 0.86, False),
    ("skin", (0.93, -0.05, 0.0), 0.2, False), ("skin", (-0.93, -0.05, 0.0), 0.2, False),
    ("eye", (0.33, 0.82, 0.14), 0.11, True), ("eye", (-0.33, 0.82, 0.14), 0.11, True),
    ("nose", (0.0, 0.97, -0.12), 0.17, True),
)
FACE_VISIBLE_COS = 0.15       # face features drawn when the face turns at least ~9 deg towards the camera
SKIN_TONES_BGR = ((95, 125, 170), (120, 160, 210), (150, 190, 235), (60, 85, 125), (80, 115, 160))
_SHIFT = 4                     # cv2 sub-pixel drawing: coordinates in 1/16 px
_SCALE = 1 << _SHIFT


def _hsv_colour(rng, saturation, value):
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(*saturation), rng.uniform(*value)]]], np.float32)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)[0, 0].astype(np.float64)


def subject_look(seed, subject):
    """Per-subject clothes and skin (BGR float), deterministic per seed; the same on both sides."""
    rng = np.random.default_rng([seed, int(subject.lstrip("S")), 2])
    skin = np.asarray(SKIN_TONES_BGR[rng.integers(len(SKIN_TONES_BGR))], np.float64) * rng.uniform(0.92, 1.08)
    top = _hsv_colour(rng, (20, 220), (50, 230))
    look = dict(skin=skin, top=top, bottom=_hsv_colour(rng, (10, 160), (30, 170)),
                shoe=np.full(3, rng.uniform(15, 70)), hair=_hsv_colour(rng, (40, 160), (15, 90)),
                eye=np.full(3, 25.0), nose=0.82 * skin)
    look["sleeve"] = skin if rng.random() < 0.4 else top
    return look


def _shade(color, factor):
    return tuple(int(min(255, max(0, v * factor))) for v in color)


def _head_axes(joints_cam):
    """Unit (right, forward, up) of the head in the camera frame from thorax, neck/nose and head.

    The three points span the head's mid-sagittal plane, so its normal is the head's right; up is
    along neck -> head and forward completes the frame (a few degrees off the skull's forward, which
    only moves the drawn face, never the annotation)."""
    a = joints_cam[14] - joints_cam[13]
    up = joints_cam[15] - joints_cam[14]
    right = np.cross(a, up)
    right = right / max(np.linalg.norm(right), 1e-9)
    up = up / max(np.linalg.norm(up), 1e-9)
    forward = np.cross(up, right)
    return np.stack([right, forward / max(np.linalg.norm(forward), 1e-9), up])


def _draw_limb(image, p0, p1, r_px, color):
    # concentric bands, dark rim to bright core: a lit cylinder seen side-on
    q0 = tuple(int(round(v * _SCALE)) for v in p0)
    q1 = tuple(int(round(v * _SCALE)) for v in p1)
    for frac, factor in ((1.0, 0.5), (0.8, 0.75), (0.55, 1.0), (0.22, 1.3)):
        thick = max(1, int(round(2 * r_px * frac)))
        cv2.line(image, q0, q1, _shade(color, factor), thick, cv2.LINE_AA, _SHIFT)


def _draw_ball(image, centre_px, r_px, color, light_dx):
    for frac, factor, dx in ((1.0, 0.55, 0.0), (0.8, 0.85, 0.1), (0.45, 1.1, 0.25)):
        c = tuple(int(round((v + light_dx * dx * r_px) * _SCALE)) for v in centre_px)
        cv2.circle(image, c, max(1, int(round(r_px * frac * _SCALE))), _shade(color, factor), -1, cv2.LINE_AA,
                   _SHIFT)


def _draw_head(image, centre_px, centre_cam, joints_cam, focal_px, look, light, light_dx):
    axes = _head_axes(joints_cam)
    z = centre_cam[2]
    toward_camera = -centre_cam / np.linalg.norm(centre_cam)
    face_cos = float(axes[1] @ toward_camera)
    offsets = np.array([f[1] for f in HEAD_FEATURES]) @ axes * HEAD_RADIUS_MM        # (F,3) camera mm
    # small offsets project through the local pinhole Jacobian at the head centre
    uv = centre_px + focal_px / z * (offsets[:, :2] - np.outer(offsets[:, 2], centre_cam[:2] / z))
    depth = z + offsets[:, 2]
    for i in np.argsort(-depth, kind="stable"):
        surface, _off, radius, on_face = HEAD_FEATURES[i]
        if on_face and face_cos < FACE_VISIBLE_COS:
            continue
        r_px = focal_px * radius * HEAD_RADIUS_MM / depth[i]
        color = look[surface] * light
        if on_face:
            cv2.circle(image, tuple(int(round(v * _SCALE)) for v in uv[i]), max(1, int(round(r_px * _SCALE))),
                       _shade(color, 1.0), -1, cv2.LINE_AA, _SHIFT)
        else:
            _draw_ball(image, uv[i], r_px, color, light_dx)


def render_person(image, joints_px, joints_cam, focal_px, look=None, light=1.0, light_dx=-1.0):
    """Draw a depth-ordered shaded person in place; returns ``image``.

    image (H,W,3) uint8 BGR; joints_px (32,2) pixel coords; joints_cam (32,3) camera-frame joints
    (x right, y down, z forward) in the unit of the radii (mm) when focal_px is in px:
    radius_px = focal_px * r / depth. ``look``: :func:`subject_look` (default: that of S1, seed 0);
    ``light`` scales every surface colour; ``light_dx`` (+-1) the side the head's highlight is on.
    """
    look = subject_look(0, "S1") if look is None else look
    joints_cam = np.asarray(joints_cam, np.float64)
    depth = joints_cam[:, 2]
    head_cam = 0.3 * joints_cam[14] + 0.7 * joints_cam[15]
    head_px = 0.3 * joints_px[14] + 0.7 * joints_px[15]
    items = [(0.5 * (depth[a] + depth[b]), k) for k, (a, b, _s, _r) in enumerate(BODY_PARTS)]
    items.append((head_cam[2], -1))
    items.sort(key=lambda item: -item[0])             # far first
    for z, k in items:
        if z <= 1e-6:
            continue
        if k < 0:
            _draw_head(image, head_px, head_cam, joints_cam, focal_px, look, light, light_dx)
            continue
        a, b, surface, radius = BODY_PARTS[k]
        _draw_limb(image, joints_px[a], joints_px[b], focal_px * radius / z, look[surface] * light)
    return image


# ---------------------------------------------------------------------------------------------
# Scene: background clutter, foreground occluders
# ---------------------------------------------------------------------------------------------
def _add_clutter(image, rng, count):
    """Static scene objects drawn into an (H,W,3) uint8 background: boxes, discs, poles and limb-like
    bars in random and in clothing/skin colours, so that the detector meets person-like and
    edge-rich structure off the person, as in real rooms (furniture, posters, other people)."""
    h, w = image.shape[:2]
    size = max(h, w)
    for _ in range(count):
        # poles are few in real rooms; boxes and rounder things many
        kind = rng.choice(4, p=(0.35, 0.25, 0.1, 0.3))
        color = _hsv_colour(rng, (0, 200), (30, 235))
        centre = rng.uniform(0, 1, 2) * (w, h)
        if kind == 0:                                 # box: furniture, door, poster
            half = rng.uniform(0.03, 0.16, 2) * size
            p0, p1 = np.round(centre - half).astype(int), np.round(centre + half).astype(int)
            cv2.rectangle(image, tuple(p0), tuple(p1), _shade(color, 1.0), -1)
            cv2.rectangle(image, tuple(p0), tuple(p1), _shade(color, 0.6), max(1, size // 200))
        elif kind == 1:                               # disc or oval: lamp, plant, ball
            axes = tuple(int(v) for v in np.round(rng.uniform(0.02, 0.09, 2) * size))
            _ellipse(image, centre, axes, rng.uniform(0, 180), color)
        elif kind == 2:                               # pole: a thin vertical-ish bar across the room
            x = centre[0]
            tilt = rng.uniform(-0.1, 0.1) * h
            _draw_limb(image, (x - tilt, 0.0), (x + tilt, float(h)), rng.uniform(0.005, 0.02) * size, color)
        else:                                         # limb-like bar: the shape a detector could take for an arm
            if rng.random() < 0.5:
                color = SKIN_TONES_BGR[rng.integers(len(SKIN_TONES_BGR))]
            length = rng.uniform(0.06, 0.2) * size
            ang = rng.uniform(0, np.pi)
            d = 0.5 * length * np.array([np.cos(ang), np.sin(ang)])
            _draw_limb(image, centre - d, centre + d, rng.uniform(0.008, 0.025) * size, np.asarray(color, float))
    return image


def _ellipse(image, centre, axes, angle, color, value=None):
    c = tuple(int(round(v * _SCALE)) for v in centre)
    ax = tuple(max(1, int(round(v * _SCALE))) for v in axes)
    fill = _shade(color, 1.0) if value is None else value
    cv2.ellipse(image, c, ax, angle, 0, 360, fill, -1, cv2.LINE_AA, _SHIFT)


def make_background(rng, width, height):
    """Textured (H,W,3) uint8 background: gradient + checker + clutter + blurred noise + floor band."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, size=(2, 3)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    g = (np.cos(ang) * xx / width + np.sin(ang) * yy / height)
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    img = c0 * (1 - g[..., None]) + c1 * g[..., None]
    cell = rng.uniform(0.04, 0.15) * max(width, height)
    checker = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None] * 2 - 1
    img += checker * rng.uniform(6, 22)
    img = _add_clutter(np.clip(img, 0, 255).astype(np.uint8), rng, int(rng.integers(6, 15))).astype(np.float32)
    noise = rng.normal(0, 1, size=(max(height // 4, 2), max(width // 4, 2), 3)).astype(np.float32)
    noise = cv2.resize(cv2.GaussianBlur(noise, (0, 0), 1.0), (width, height), interpolation=cv2.INTER_LINEAR)
    img += noise * rng.uniform(8, 20)
    floor = rng.uniform(0.55, 0.75) * height
    img[yy >= floor] *= rng.uniform(0.6, 0.85)
    return np.clip(img, 12, 245).astype(np.uint8)


# Share of (sequence, camera) views that get a foreground object between the camera and the person.
OCCLUDED_VIEW_RATE = 0.4


def make_occluder(rng, track_px, width, height):
    """A static foreground object for one (sequence, camera) view, or None.

    track_px (T,32,2): the person's joints over the sequence; the object is placed over the person's
    box at one random frame, so it covers joints in some frames and none in others as the person
    moves. Kinds: a piece of furniture standing on the floor in front (its base lower in the image
    than the person's feet), a pillar over the whole image height, or a rounder object (plant, bag).
    -> (overlay (H,W,3) uint8, mask (H,W) bool): draw ``overlay`` where ``mask`` after the person.
    """
    if rng.random() >= OCCLUDED_VIEW_RATE:
        return None
    pts = track_px[rng.integers(len(track_px))][list(H36M32_USED)]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    box_w, box_h = np.maximum(hi - lo, 4.0)
    mask = np.zeros((height, width), np.uint8)
    kind = rng.integers(3)
    if kind == 0:
        half_w = 0.5 * rng.uniform(0.5, 1.2) * box_w
        bottom = hi[1] + rng.uniform(0.0, 0.15) * box_h
        top = bottom - rng.uniform(0.25, 0.55) * box_h
        cx = rng.uniform(lo[0], hi[0])
        p0, p1 = (int(round(cx - half_w)), int(round(top))), (int(round(cx + half_w)), int(round(bottom)))
        cv2.rectangle(mask, p0, p1, 255, -1)
    elif kind == 1:
        cx = rng.uniform(lo[0], hi[0])
        tilt = rng.uniform(-0.05, 0.05) * height
        cv2.line(mask, (int(round(cx - tilt)), 0), (int(round(cx + tilt)), height),
                 255, max(2, int(round(rng.uniform(0.15, 0.35) * box_w))))
    else:
        centre = rng.uniform(lo, hi)
        axes = rng.uniform(0.15, 0.3, 2) * box_h
        _ellipse(mask, centre, axes, rng.uniform(0, 180), None, value=255)
    return _occluder_texture(rng, width, height), mask > 127


def _occluder_texture(rng, width, height):
    """Flat colour under a soft light gradient and faint stripes (wood, fabric)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    color = _hsv_colour(rng, (0, 220), (30, 220)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    grad = 0.8 + 0.4 * (np.cos(ang) * xx / width + np.sin(ang) * yy / height)
    period = rng.uniform(0.01, 0.05) * max(width, height)
    stripes = 1.0 + rng.uniform(0.0, 0.12) * np.sin(2 * np.pi * (xx if rng.random() < 0.5 else yy) / period)
    return np.clip(color * (grad * stripes)[..., None], 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Human3.6M writer
# ---------------------------------------------------------------------------------------------
def scaled_h36m_cameras(image_size, cams=None):
    """Human3.6M cameras for images shrunk by image_size/1000 -> {subject: {cam: dict}} (mm extrinsics)."""
    cams = cams if cams is not None else load_h36m_cameras()
    s = image_size / 1000.0
    out = {}
    for subject, per_cam in cams.items():
        out[subject] = {}
        for cam_id, cam in per_cam.items():
            out[subject][cam_id] = dict(
                R=cam["R"], t_mm=cam["t_mm"], f=cam["f"] * s, c=cam["c"] * s, k=cam["k"], p=cam["p"],
                width=int(round(cam["width"] * s)), height=int(round(cam["height"] * s)))
    return out


def _with_pretrain_cameras(scaled, people):
    """``scaled`` plus the cameras of each pre-training person (those of a training subject, cycled)."""
    out = dict(scaled)
    for k, subject in enumerate(people, start=1):
        out[subject] = scaled[TRAIN_SUBJECTS[k % len(TRAIN_SUBJECTS)]]
    return out


def _l2d_camera_json(scaled, subjects):
    intrinsics, extrinsics = {}, {}
    for subject in subjects:
        extrinsics[subject] = {}
        for cam_id, cam in scaled[subject].items():
            K = [[cam["f"][0], 0.0, cam["c"][0]], [0.0, cam["f"][1], cam["c"][1]], [0.0, 0.0, 1.0]]
            dist = [cam["k"][0], cam["k"][1], cam["p"][0], cam["p"][1], cam["k"][2]]
            intrinsics[cam_id] = dict(width=cam["width"], height=cam["height"], K=K,
                                      distCoef=[float(v) for v in dist])
            extrinsics[subject][cam_id] = dict(R=cam["R"].tolist(), t=cam["t_mm"].reshape(3, 1).tolist())
    return {"_about": "Synthetic demo: Human3.6M cameras with intrinsics scaled to the demo image size. "
                      "X_cam_mm = R X_world_mm + t; distCoef = k1,k2,p1,p2,k3 (Human3.6M model).",
            "intrinsics": intrinsics, "extrinsics": extrinsics}


def _take_key(key, take):
    """rng key of a take: take 1 keeps the key it always had (its motion is the one rendered so far)."""
    return list(key) if int(take) == 1 else list(key) + [int(take)]


def _sequence_rng(seed, subject, action, purpose, take=1):
    return np.random.default_rng(_take_key([seed, int(subject.lstrip("S")), H36M_ACTION_IDS[action], purpose], take))


def h36m_background(seed, subject, action, cam_index, width, height):
    """The static background of one (sequence, camera), exactly as the writer uses it."""
    rng = _sequence_rng(seed, subject, action, 100 + cam_index)
    return make_background(rng, width, height)


def h36m_occluder(seed, subject, action, cam_index, track_px, width, height):
    """The foreground object of one (sequence, camera) -> (overlay, mask) or None, as the writer uses it."""
    return make_occluder(_sequence_rng(seed, subject, action, 200 + cam_index), track_px, width, height)


def _lighting(seed, subject, action, cam_index):
    rng = _sequence_rng(seed, subject, action, 300 + cam_index)
    return rng.uniform(0.8, 1.15), float(rng.choice([-1.0, 1.0]))


# Each take is moved on the floor by up to this much (x and y): people also stand and walk near the
# edges of a camera's view, where part of the body leaves the frame (truncation), while Human3.6M's
# own volume keeps everybody in view.
FLOOR_WANDER_MM = 2500.0
# ...as far as the pelvis stays this share of the image size inside every view of the subject: the
# preparation drops frames whose pelvis is outside (as with Human3.6M), and a person whose centre
# leaves the image is no longer the detector's input.
PELVIS_MARGIN = 0.02


def camera_view(world_mm, cam):
    """(T,32,3) world mm -> (camera-frame mm (T,32,3), exact projection px (T,32,2))."""
    cam_mm = world_mm @ cam["R"].T + cam["t_mm"]
    return cam_mm, project_h36m(cam_mm, cam["f"], cam["c"], cam["k"], cam["p"])


def place_in_view(world_mm, offset_xy_mm, cams, margin=PELVIS_MARGIN):
    """Shift a take by the largest share (1, 0.9, ..., 0) of ``offset_xy_mm`` whose pelvis stays
    inside every camera of ``cams`` ({id: camera}, scaled) for every frame; (T,32,3) mm."""
    shares = np.linspace(1.0, 0.0, 11)
    shift = shares[:, None] * np.r_[offset_xy_mm, 0.0]                       # (11,3)
    pelvis = world_mm[None, :, 0] + shift[:, None]                           # (11,T,3)
    ok = np.ones(len(shares), bool)
    for cam in cams.values():
        cam_mm, uv = camera_view(pelvis, cam)
        lo = margin * np.array([cam["width"], cam["height"]])
        hi = np.array([cam["width"], cam["height"]]) - lo
        ok &= ((uv >= lo) & (uv <= hi)).all(axis=(1, 2)) & (cam_mm[..., 2] > 0).all(axis=1)
    best = shift[np.argmax(ok)] if ok.any() else np.zeros(3)
    return world_mm + best


def h36m_take(seed, subject, action, num_frames, cams, take=1):
    """World joints (T,32,3) mm of one take as the writers use it: :func:`generate_sequence` moved
    on the floor by the take's own offset, within :func:`place_in_view` of the subject's ``cams``."""
    world = generate_sequence(seed, subject, action, num_frames, take=take)
    offset = _sequence_rng(seed, subject, action, 3, take).uniform(-FLOOR_WANDER_MM, FLOOR_WANDER_MM, 2)
    return place_in_view(world, offset, cams)


def joint_visibility(track_px, width, height, mask=None):
    """Of the 17 used joints: (truncated (T,17) bool: outside the image, as the preparation's
    joints_vis; occluded (T,17) bool: inside it but under the foreground object ``mask``)."""
    pts = np.asarray(track_px)[:, list(H36M32_USED)]
    x, y = pts[..., 0], pts[..., 1]
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    occluded = np.zeros_like(inside)
    if mask is not None:
        xi = np.clip(np.floor(x), 0, width - 1).astype(np.int64)
        yi = np.clip(np.floor(y), 0, height - 1).astype(np.int64)
        occluded = inside & mask[yi, xi]
    return ~inside, occluded


def _encode_jpg(path, image, quality):
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def _write_annot(path, subject, action, cam_ids, scaled, rows_2d, rows_3d, frames):
    n = len(cam_ids) * frames
    with h5py.File(path, "w") as f:
        f.create_dataset("pose/2d", data=np.concatenate(rows_2d).astype(np.float32))
        f.create_dataset("pose/3d", data=np.concatenate(rows_3d).astype(np.float32))
        f.create_dataset("camera", data=np.repeat(np.array([int(c) for c in cam_ids], np.int64), frames))
        f.create_dataset("frame", data=np.tile(np.arange(1, frames + 1, dtype=np.int64), len(cam_ids)))
        f.create_dataset("subject", data=np.full(n, int(subject.lstrip("S")), np.int64))
        f.create_dataset("action", data=np.full(n, H36M_ACTION_IDS[action], np.int64))
        f.create_dataset("subaction", data=np.full(n, 1, np.int64))
        for cam_id in cam_ids:
            cam = scaled[subject][cam_id]
            f.create_dataset(f"intrinsics/{cam_id}", data=np.array(
                [cam["f"][0], cam["c"][0], cam["f"][1], cam["c"][1]], np.float64))


def _render_view(img_dir, seed, subject, action, ci, cam, cam_mm, uv, jpeg_quality):
    """Write one camera's frames of a take; -> (visibility counts (4,), middle frame image)."""
    width, height = cam["width"], cam["height"]
    background = h36m_background(seed, subject, action, ci, width, height)
    occluder = h36m_occluder(seed, subject, action, ci, uv, width, height)
    look = subject_look(seed, subject)
    light, light_dx = _lighting(seed, subject, action, ci)
    focal = float(cam["f"].mean())
    img_dir.mkdir(parents=True, exist_ok=True)
    middle = None
    for i in range(len(uv)):
        image = render_person(background.copy(), uv[i], cam_mm[i], focal, look, light, light_dx)
        if occluder is not None:
            np.copyto(image, occluder[0], where=occluder[1][..., None])
        _encode_jpg(img_dir / f"img_{i + 1:06d}.jpg", image, jpeg_quality)
        if i == len(uv) // 2:
            middle = image
    return _view_counts(uv, width, height, occluder), middle


def _view_counts(uv, width, height, occluder):
    """(truncated joints, occluded joints, frames with any truncated, frames with any occluded)."""
    truncated, occluded = joint_visibility(uv, width, height, None if occluder is None else occluder[1])
    return np.array([truncated.sum(), occluded.sum(), truncated.any(1).sum(), occluded.any(1).sum()])


def _rates(seen, frames):
    frames = max(int(frames), 1)
    return dict(truncated_joints=float(seen[0]) / (17 * frames), occluded_joints=float(seen[1]) / (17 * frames),
                truncated_frames=float(seen[2]) / frames, occluded_frames=float(seen[3]) / frames)


def _demo_takes(seed, subjects, frames_per_seq, actions_per_subject, held_out_actions, held_out_frames,
                test_subjects=(), test_frames=None, pretrain=(), pretrain_actions=2, pretrain_frames=4):
    """(subject, action, frames) of every rendered take of the demo."""
    for subject in pretrain:
        for action in subject_actions(seed, subject, pretrain_actions):
            yield subject, action, pretrain_frames
    for subject in subjects:
        held_out = subject not in TRAIN_SUBJECTS
        n_actions = held_out_actions if held_out and held_out_actions else actions_per_subject
        if subject in test_subjects and test_frames:
            frames = test_frames
        else:
            frames = held_out_frames if held_out and held_out_frames else frames_per_seq
        for action in subject_actions(seed, subject, n_actions):
            yield subject, action, frames


def visibility_rates(seed=0, frames_per_seq=80, image_size=256, actions_per_subject=2,
                     subjects=TRAIN_SUBJECTS + VALID_SUBJECTS, held_out_actions=None, held_out_frames=None):
    """The truncation and occlusion shares :func:`make_h36m_demo` reports for the same arguments,
    from the annotations and occluder masks alone (nothing rendered)."""
    scaled = scaled_h36m_cameras(image_size)
    seen, total = np.zeros(4, np.int64), 0
    for subject, action, frames in _demo_takes(seed, subjects, frames_per_seq, actions_per_subject,
                                               held_out_actions, held_out_frames):
        world_mm = h36m_take(seed, subject, action, frames, scaled[subject])
        for ci, cam_id in enumerate(sorted(H36M_CAMERA_IDS)):
            cam = scaled[subject][cam_id]
            _cam_mm, uv = camera_view(world_mm, cam)
            occluder = h36m_occluder(seed, subject, action, ci, uv, cam["width"], cam["height"])
            seen += _view_counts(uv, cam["width"], cam["height"], occluder)
            total += frames
    return _rates(seen, total)


def split_subjects(subjects, test_split, test_subjects=TEST_SUBJECTS):
    """{split: subjects} of the demo: train = the training subjects; without ``test_split`` every
    held-out subject is ``valid`` (as Human3.6M's S9 + S11); with it the ``test_subjects`` are
    ``test`` (the reported figures) and the other held-out subjects ``valid`` (checkpoint selection),
    so choosing and reporting never share a subject."""
    plan = {"train": [s for s in subjects if s in TRAIN_SUBJECTS]}
    held_out = [s for s in subjects if s not in TRAIN_SUBJECTS]
    if test_split:
        plan["valid"] = [s for s in held_out if s not in test_subjects]
        plan["test"] = [s for s in held_out if s in test_subjects]
    else:
        plan["valid"] = held_out
    return plan


def make_h36m_demo(dst, seed=0, frames_per_seq=30, image_size=256, actions_per_subject=2,
                   subjects=TRAIN_SUBJECTS + VALID_SUBJECTS, jpeg_quality=90, preview=True,
                   held_out_actions=None, held_out_frames=None, test_split=False, test_subjects=TEST_SUBJECTS,
                   test_frames=None, pretrain_people=0, pretrain_actions=2, pretrain_frames=4):
    """Write the synthetic Human3.6M demo set under ``dst``; returns a summary dict.

    Layout: ``dst/processed/<S>/<Action>-1/annot.h5`` and ``.../imageSequence/<cam>/img_%06d.jpg``
    (frame 1..frames_per_seq), ``dst/camera_parameters.json`` (L2D layout, scaled intrinsics),
    ``dst/preview.jpg``. annot.h5: pose/2d (N,32,2) float32 px, pose/3d (N,32,3) float32
    camera-frame mm, camera/frame/subject/action/subaction (N,) int64, intrinsics/<cam> (4,)
    [fx, cx, fy, cy]; rows camera after camera (N = 4 * frames_per_seq).

    Held-out subjects (not in TRAIN_SUBJECTS) perform ``held_out_actions`` actions (default
    ``actions_per_subject``; 8 = every demo action, as Human3.6M's test subjects perform every action)
    of ``held_out_frames`` frames (default ``frames_per_seq``). ``test_split``: also write
    ``dst/splits.json`` (:func:`split_subjects`) for the preparation: S9 ``valid``, the
    ``test_subjects`` ``test`` (S11 by default; any of the never-released
    ``lib.datasets.cameras.H36M_UNRELEASED_SUBJECTS`` are rendered in addition), with
    ``test_frames`` frames a take (default ``held_out_frames``).
    ``pretrain_people`` > 0 (with ``test_split``): also render that many other people
    (:func:`pretrain_subjects`, each with its own body and clothes, ``pretrain_actions`` actions of
    ``pretrain_frames`` frames) as the split ``pretrain``, for the detector's 2D pre-training; the
    other splits' images are the same with or without them.
    The summary counts the 17 used joints outside the image (``truncated_joints``) and under a
    foreground object (``occluded_joints``) as shares of all joints, and the shares of frames with any.
    """
    start = time.time()
    dst = Path(dst)
    test_subjects = tuple(test_subjects)
    allowed = TEST_SUBJECTS + H36M_UNRELEASED_SUBJECTS
    if not test_subjects or any(s not in allowed for s in test_subjects):
        raise BadValueError(f"--test-subjects {','.join(test_subjects)}: name one or more of {','.join(allowed)} "
                            f"(training subjects and S9 cannot be test subjects)")
    if pretrain_people and not test_split:
        raise BadValueError("--pretrain-people writes its split into splits.json: add --test-split")
    if test_split:
        subjects = tuple(subjects) + tuple(s for s in test_subjects if s not in subjects)
    plan = split_subjects(subjects, test_split, test_subjects)
    crowd = pretrain_subjects(pretrain_people)
    if crowd:
        plan["pretrain"] = list(crowd)
    scaled = _with_pretrain_cameras(scaled_h36m_cameras(image_size), crowd)
    cam_ids = tuple(sorted(H36M_CAMERA_IDS))
    (dst / "processed").mkdir(parents=True, exist_ok=True)
    with open(dst / "camera_parameters.json", "w") as fh:
        json.dump(_l2d_camera_json(scaled, tuple(subjects) + crowd), fh, indent=1)
    counts, sheet, seen = {}, [], np.zeros(4, np.int64)
    for subject, action, frames in _demo_takes(seed, subjects, frames_per_seq, actions_per_subject,
                                               held_out_actions, held_out_frames,
                                               test_subjects if test_split else (), test_frames,
                                               crowd, pretrain_actions, pretrain_frames):
        world_mm = h36m_take(seed, subject, action, frames, scaled[subject])
        seq_dir = dst / "processed" / subject / f"{action}-1"
        rows_2d, rows_3d = [], []
        for ci, cam_id in enumerate(cam_ids):
            cam_mm, uv = camera_view(world_mm, scaled[subject][cam_id])
            rows_3d.append(cam_mm)
            rows_2d.append(uv)
            view_counts, middle = _render_view(seq_dir / "imageSequence" / cam_id, seed, subject, action, ci,
                                               scaled[subject][cam_id], cam_mm, uv, jpeg_quality)
            seen += view_counts
            if preview and len(sheet) < 16 and ci in (0, 3) and subject not in crowd:
                sheet.append((middle, uv[frames // 2]))
        _write_annot(seq_dir / "annot.h5", subject, action, cam_ids, scaled, rows_2d, rows_3d, frames)
        counts[subject] = counts.get(subject, 0) + len(cam_ids) * frames
    # a plan left by an earlier generation into dst would re-split this one
    (dst / SPLIT_PLAN_FILE).unlink(missing_ok=True)
    if test_split:
        write_split_plan(dst, plan)
    if preview and sheet:
        write_preview(dst / "preview.jpg", sheet, H36M_PREVIEW_BONES)
    split_frames = {f"{k}_frames": sum(counts.get(s, 0) for s in v) for k, v in plan.items()}
    # the pre-training people are counted as their split (pretrain_frames): one line each would bury the rest
    frames = {k: v for k, v in counts.items() if k not in crowd}
    return dict(dst=str(dst), frames=frames, **split_frames, **_rates(seen, sum(counts.values())),
                seconds=time.time() - start, megabytes=_folder_mb(dst))


# ---------------------------------------------------------------------------------------------
# The split plan and the pose-only split for the lifters
# ---------------------------------------------------------------------------------------------
SPLIT_PLAN_FILE = "splits.json"
POSE_ONLY_SPLIT = "train_poses"
POSE_ONLY_TAKE_FRAMES = 80          # frames of one take, as a rendered demo sequence (--frames-per-seq 80)


def read_split_plan(root):
    """``root/splits.json`` -> dict (subjects, pose_only), or None when there is none."""
    path = Path(root) / SPLIT_PLAN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_split_plan(root, subjects=None, pose_only=None):
    """Create or update ``root/splits.json``: ``subjects`` {split: [subject]} replaces the subject
    lists, ``pose_only`` {split: file} is added to the pose-only splits; the rest is kept."""
    plan = read_split_plan(root) or {
        "_about": "Which subjects make which split (read by lib/datasets/prepare_h36m.py), and splits "
                  "of poses without images, already in the prepared-index format.",
        "subjects": split_subjects(TRAIN_SUBJECTS + VALID_SUBJECTS, False), "pose_only": {}}
    if subjects is not None:
        plan["subjects"] = {k: list(v) for k, v in subjects.items()}
    plan["pose_only"].update(pose_only or {})
    Path(root).mkdir(parents=True, exist_ok=True)
    (Path(root) / SPLIT_PLAN_FILE).write_text(json.dumps(plan, indent=1))
    return plan


def _camera_arrays(cam):
    """Index-format camera arrays of a scaled camera, as the preparation builds them from the
    written camera_parameters.json: R, T cm (X_cam_cm = R X_world_cm + T), K, dist k1 k2 p1 p2 k3."""
    K = np.array([[cam["f"][0], 0.0, cam["c"][0]], [0.0, cam["f"][1], cam["c"][1]], [0.0, 0.0, 1.0]])
    dist = np.array([cam["k"][0], cam["k"][1], cam["p"][0], cam["p"][1], cam["k"][2]])
    return cam["R"], cam["t_mm"] / 10.0, K, dist


def _pose_rows(subject, action, cam_id, cam, cam_mm, uv):
    """Index-format rows of one camera's view of a take (no image), pelvis-outside frames dropped."""
    j2d = uv.astype(np.float32)[:, list(H36M32_TO_17)].astype(np.float64)
    j3d = cam_mm.astype(np.float32)[:, list(H36M32_TO_17)].astype(np.float64) / 10.0   # as annot.h5 -> cm
    w, h = cam["width"], cam["height"]
    vis = ((j2d[..., 0] >= 0) & (j2d[..., 0] < w) & (j2d[..., 1] >= 0) & (j2d[..., 1] < h)).astype(np.uint8)
    keep = vis[:, 0] > 0
    n, frames = int(keep.sum()), np.flatnonzero(keep) + 1
    R, T, K, dist = _camera_arrays(cam)
    hip = j3d[keep, 0]
    return {"image": np.full(n, ""), "joints_2d": j2d[keep], "joints_vis": vis[keep],
            "joints_3d": j3d[keep] - hip[:, None], "hip_camera": hip, "width": np.full(n, w),
            "height": np.full(n, h), "action": np.full(n, action), "subject": np.full(n, subject),
            "camera": np.full(n, cam_id), "frame": frames, "cam_R": np.repeat(R[None], n, 0),
            "cam_T": np.repeat(T[None], n, 0), "cam_K": np.repeat(K[None], n, 0),
            "cam_dist": np.repeat(dist[None], n, 0)}


def pose_only_arrays(seed, num_frames, image_size=256, subjects=TRAIN_SUBJECTS, actions_per_subject=2,
                     take_frames=POSE_ONLY_TAKE_FRAMES):
    """``num_frames`` image-free samples (index-format arrays, 17 joints) of the given subjects.

    Same subjects, bodies and actions as the rendered training set (``actions_per_subject`` as
    there), same floor placement and the same four scaled cameras with the exact projection, but
    other takes (2, 3, ...: new phases, paths and headings from the same distribution), so no
    sample repeats a rendered frame. Every (subject, action) pair gets the same number of takes of
    at most ``take_frames`` frames (rounds of takes 2, 3, ...), so a small split is as balanced as a
    large one; the rows past ``num_frames`` (fewer than one round) are dropped from the end.
    """
    scaled = scaled_h36m_cameras(image_size)
    pairs = [(s, a) for s in subjects for a in subject_actions(seed, s, actions_per_subject)]
    views = len(pairs) * len(H36M_CAMERA_IDS)
    rounds = max(1, -(-num_frames // (views * take_frames)))
    frames = max(1, -(-num_frames // (views * rounds)))
    parts, made, take = [], 0, 2
    while made < num_frames:            # one more round only if dropped pelvis-outside rows left it short
        for subject, action in pairs:
            world_mm = h36m_take(seed, subject, action, frames, scaled[subject], take=take)
            for cam_id in sorted(H36M_CAMERA_IDS):
                cam = scaled[subject][cam_id]
                rows = _pose_rows(subject, action, cam_id, cam, *camera_view(world_mm, cam))
                parts.append(rows)
                made += len(rows["image"])
        take += 1
    return {k: np.concatenate([p[k] for p in parts])[:num_frames] for k in parts[0]}


def write_pose_only_split(root, seed=0, num_frames=32000, image_size=256, subjects=TRAIN_SUBJECTS,
                          actions_per_subject=2, name=POSE_ONLY_SPLIT):
    """Write ``root/<name>.npz`` (:func:`pose_only_arrays`) in the prepared-index format and name it
    in ``root/splits.json``, from which the preparation carries it into the index it writes; when
    ``root`` already holds a prepared index it is added there too. -> number of samples.

    Its ``image`` entries are empty: a lifter's training split of ground-truth 2D -> 3D only.
    """
    root = Path(root)
    arrays = pose_only_arrays(seed, num_frames, image_size, subjects, actions_per_subject)
    n = idx.write_split(root, name, arrays, 17)
    write_split_plan(root, pose_only={name: f"{name}.npz"})
    if (root / idx.INDEX_FILE).is_file():
        info = idx.read_index(root, "h36m")
        info["splits"][name] = pose_only_entry(name, arrays)
        info.setdefault("counts", {})[name] = n
        idx.write_index(root, info)
    return n


def pose_only_entry(name, arrays):
    """The index.json entry of a pose-only split."""
    subjects = sorted(set(np.asarray(arrays["subject"]).tolist()), key=lambda s: int(s[1:]))
    return {"file": f"{name}.npz", "count": int(len(arrays["image"])), "pose_only": True, "subjects": subjects}


# 17 used joints as (child, parent) pairs in the 32 layout, for the preview overlay
H36M_PREVIEW_BONES = ((1, 0), (2, 1), (3, 2), (6, 0), (7, 6), (8, 7), (12, 0), (13, 12), (14, 13),
                      (15, 14), (17, 13), (18, 17), (19, 18), (25, 13), (26, 25), (27, 26))


def write_preview(path, frames, bones, tile=256, cols=4):
    """Contact sheet: each (image, joints_px) with the annotation drawn (white bones, yellow dots)."""
    tiles = []
    for image, joints in frames:
        h, w = image.shape[:2]
        s = tile / max(h, w)
        im = cv2.resize(image, (int(round(w * s)), int(round(h * s))), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((tile, tile, 3), np.uint8)
        canvas[:im.shape[0], :im.shape[1]] = im
        pts = joints * s
        for a, b in bones:
            cv2.line(canvas, tuple(int(v) for v in pts[a]), tuple(int(v) for v in pts[b]), (255, 255, 255), 1,
                     cv2.LINE_AA)
        used = sorted({j for bone in bones for j in bone})
        for j in used:
            cv2.circle(canvas, tuple(int(v) for v in pts[j]), 2, (0, 255, 255), -1, cv2.LINE_AA)
        tiles.append(canvas)
    while len(tiles) % cols:
        tiles.append(np.zeros((tile, tile, 3), np.uint8))
    rows = [np.concatenate(tiles[i:i + cols], axis=1) for i in range(0, len(tiles), cols)]
    _encode_jpg(Path(path), np.concatenate(rows, axis=0), 90)


def _folder_mb(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2 ** 20




# ---------------------------------------------------------------------------------------------
# CMU Panoptic writer
# ---------------------------------------------------------------------------------------------
PANOPTIC_HD_CAMERAS = ((0, 3), (0, 6), (0, 12), (0, 13), (0, 23))
PANOPTIC_SIZE = (1920, 1080)
PANOPTIC_FPS = 29.97
PANOPTIC_KEEP_EVERY = 15                     # the loader keeps annotation file index i % 15 == 0
PANOPTIC_DEMO_SEQUENCES = (("171204_pose1", "Greeting"), ("171026_pose1", "Walking"),
                           ("171026_pose3", "Directions"))          # last one is in the valid list
# coco19 rows 0..14 taken from the 32-joint skeleton (L2D's H36M_TO_PANOPTIC, in 32-joint indices)
PANOPTIC_FROM_H36M32 = (13, 14, 0, 17, 18, 19, 6, 7, 8, 25, 26, 27, 1, 2, 3)


def panoptic_calibration(rng, cameras=PANOPTIC_HD_CAMERAS):
    """Synthetic HD ring: list of calibration entries (R, t cm in the raw y-down Panoptic world)."""
    entries = []
    for panel, node in cameras:
        azimuth = 2 * np.pi * node / 31 + rng.uniform(-0.1, 0.1)
        centre_q = np.array([420 * np.cos(azimuth), 420 * np.sin(azimuth), rng.uniform(80, 230)])
        target_q = np.array([rng.uniform(-15, 15), rng.uniform(-15, 15), rng.uniform(85, 105)])
        z_c = (target_q - centre_q) / np.linalg.norm(target_q - centre_q)
        x_c = np.cross(z_c, [0.0, 0.0, 1.0])
        x_c /= np.linalg.norm(x_c)
        y_c = np.cross(z_c, x_c)
        R_q = np.stack([x_c, y_c, z_c])                 # z-up world (L2D's p' = p M) -> camera
        R = R_q @ PANOPTIC_AXIS_M.T                      # raw world p -> camera (R' = R M = R_q)
        t = -R_q @ centre_q
        f = rng.uniform(1150, 1300)
        K = [[f, 0.0, 960 + rng.uniform(-12, 12)], [0.0, f * rng.uniform(0.998, 1.002), 540 + rng.uniform(-12, 12)],
             [0.0, 0.0, 1.0]]
        dist = [rng.uniform(-0.25, -0.2), rng.uniform(0.1, 0.2), rng.uniform(-5e-4, 5e-4),
                rng.uniform(-5e-4, 5e-4), rng.uniform(-0.05, 0.0)]
        entries.append(dict(name=f"{panel:02d}_{node:02d}", type="hd", resolution=list(PANOPTIC_SIZE),
                            panel=panel, node=node, K=K, distCoef=dist, R=R.tolist(), t=t.reshape(3, 1).tolist()))
    return entries


def _panoptic_joints19(world_mm):
    """(T,32,3) z-up world mm -> (T,19,4) raw Panoptic world cm (y down) + confidence."""
    raw_cm = (world_mm / 10.0) @ PANOPTIC_AXIS_M.T       # p = p' M^T, so L2D's p M gives p' back
    body = raw_cm[:, list(PANOPTIC_FROM_H36M32)]
    nose, head = raw_cm[:, 14], raw_cm[:, 15]
    up = head - nose
    side = raw_cm[:, 17] - raw_cm[:, 25]                  # towards the person's left
    side /= np.linalg.norm(side, axis=-1, keepdims=True)
    face = [nose + 0.45 * up + 3.0 * side, nose + 0.35 * up + 7.5 * side,
            nose + 0.45 * up - 3.0 * side, nose + 0.35 * up - 7.5 * side]    # l-eye, l-ear, r-eye, r-ear
    xyz = np.concatenate([body, np.stack(face, 1)], axis=1)
    conf = np.full(xyz.shape[:2] + (1,), 0.9)
    return np.concatenate([xyz, conf], axis=-1)


def panoptic_background(seed, sequence_index, cam_index):
    """The static 1920x1080 background of one (sequence, camera), exactly as the writer uses it."""
    rng = np.random.default_rng([seed, 1000 + sequence_index, 100 + cam_index])
    return make_background(rng, *PANOPTIC_SIZE)


def make_panoptic_demo(dst, seed=0, kept_frames=12, sequences=PANOPTIC_DEMO_SEQUENCES, jpeg_quality=50,
                       preview=True):
    """Write the synthetic CMU Panoptic demo under ``dst``; returns a summary dict.

    Per sequence: ``calibration_<seq>.json`` (5 HD cameras, 1920x1080, t in cm),
    ``hdPose3d_stage1_coco19/body3DScene_%08d.json`` for 15 * kept_frames frames (29.97 fps) and
    ``hdImgs/00_XX/00_XX_%08d.jpg`` only for the frames the loader keeps (index % 15 == 0).
    Ground truth follows L2D's projection (docs/original.md#cmu-panoptic-data, :func:`project_panoptic`).
    """
    start = time.time()
    dst = Path(dst)
    width, height = PANOPTIC_SIZE
    sheet, counts = [], {}
    for si, (seq, action) in enumerate(sequences):
        rng = np.random.default_rng([seed, 1000 + si])
        seq_dir = dst / seq
        (seq_dir / "hdPose3d_stage1_coco19").mkdir(parents=True, exist_ok=True)
        calib = panoptic_calibration(rng)
        vga = dict(name="01_01", type="vga", resolution=[640, 480], panel=1, node=1,
                   K=[[745.0, 0.0, 320.0], [0.0, 745.0, 240.0], [0.0, 0.0, 1.0]], distCoef=[0.0] * 5,
                   R=np.eye(3).tolist(), t=[[0.0], [0.0], [400.0]])
        with open(seq_dir / f"calibration_{seq}.json", "w") as fh:
            json.dump({"calibDataSource": "synthetic L2D demo", "cameras": calib + [vga]}, fh)
        n = PANOPTIC_KEEP_EVERY * kept_frames
        world_mm = generate_sequence(seed, f"S{100 + si}", action, n, seconds_per_frame=1.0 / PANOPTIC_FPS,
                                     root_scale=0.5)
        joints19 = np.round(_panoptic_joints19(world_mm), 3)
        for i in range(n):
            body = dict(id=0, joints19=[float(v) for v in joints19[i].reshape(-1)])
            scene = dict(version=0.7, univTime=round(1000.0 * i / PANOPTIC_FPS, 3), fpsType="hd_29_97",
                         bodies=[body])
            with open(seq_dir / "hdPose3d_stage1_coco19" / f"body3DScene_{i:08d}.json", "w") as fh:
                json.dump(scene, fh)
        raw32_cm = (world_mm / 10.0) @ PANOPTIC_AXIS_M.T
        look = subject_look(seed, f"S{100 + si}")
        kept = np.arange(0, n, PANOPTIC_KEEP_EVERY)
        for ci, cam in enumerate(calib):
            R, t = np.asarray(cam["R"]), np.asarray(cam["t"]).reshape(3)
            uv = project_panoptic(raw32_cm[kept], cam["K"], cam["distCoef"], R, t)
            cam_mm = 10.0 * (raw32_cm[kept] @ R.T + t)
            background = panoptic_background(seed, si, ci)
            img_dir = seq_dir / "hdImgs" / cam["name"]
            img_dir.mkdir(parents=True, exist_ok=True)
            for j, frame in enumerate(kept):
                image = render_person(background.copy(), uv[j], cam_mm[j], float(cam["K"][0][0]), look)
                _encode_jpg(img_dir / f"{cam['name']}_{frame:08d}.jpg", image, jpeg_quality)
                if preview and j == len(kept) // 2 and len(sheet) < 8:
                    sheet.append((image, uv[j][list(PANOPTIC_FROM_H36M32)]))
        counts[seq] = dict(annotations=n, kept_frames=len(kept), images=len(kept) * len(calib))
    if preview and sheet:
        write_preview(dst / "preview.jpg", sheet, PANOPTIC_PREVIEW_BONES)
    return dict(dst=str(dst), sequences=counts, seconds=time.time() - start, megabytes=_folder_mb(dst))


PANOPTIC_PREVIEW_BONES = ((12, 2), (13, 12), (14, 13), (6, 2), (7, 6), (8, 7), (0, 2), (1, 0), (3, 0), (4, 3),
                          (5, 4), (9, 0), (10, 9), (11, 10))
