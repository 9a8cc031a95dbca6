"""Procedural stick-people seen by real Human3.6M cameras: a small demo dataset.

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

Everything is deterministic for a given seed (one numpy Generator per sequence keyed by
(seed, subject, action)).
"""
import json
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

from lib.datasets.cameras import (H36M_CAMERA_IDS, PANOPTIC_AXIS_M, load_h36m_cameras,
                                  project_h36m, project_panoptic)

# ---------------------------------------------------------------------------------------------
# Skeleton (Human3.6M 32-joint annotation layout)
# ---------------------------------------------------------------------------------------------
H36M32_PARENTS = (-1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19,
                  20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30)
H36M32_USED = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
VALID_SUBJECTS = ("S9", "S11")

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
                      root_scale=1.0):
    """One sequence of world joints (T,32,3) mm, deterministic per (seed, subject, action).

    ``root_scale`` shrinks the floor path about the world origin (smaller capture volumes).
    """
    style = subject_style(seed, subject)
    rng = np.random.default_rng([seed, int(subject.lstrip("S")), H36M_ACTION_IDS.get(action, 99), 1])
    t = t0 + np.arange(num_frames) * seconds_per_frame
    angles, root_xy, yaw = _action_angles(action, t, rng, style)
    return forward_kinematics(angles, style["bones"], root_xy * root_scale, yaw)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------
COLOR_RIGHT = (40, 60, 215)    # BGR: red
COLOR_LEFT = (215, 110, 30)    # BGR: blue
COLOR_TORSO = (60, 170, 70)    # BGR: green
COLOR_HEAD = (120, 170, 225)   # BGR: skin

# (joint a, joint b, colour, radius mm)
LIMBS = (
    (1, 2, COLOR_RIGHT, 75), (2, 3, COLOR_RIGHT, 55), (3, 4, COLOR_RIGHT, 40),
    (6, 7, COLOR_LEFT, 75), (7, 8, COLOR_LEFT, 55), (8, 9, COLOR_LEFT, 40),
    (25, 26, COLOR_RIGHT, 48), (26, 27, COLOR_RIGHT, 40), (27, 30, COLOR_RIGHT, 35),
    (17, 18, COLOR_LEFT, 48), (18, 19, COLOR_LEFT, 40), (19, 22, COLOR_LEFT, 35),
    (0, 12, COLOR_TORSO, 120), (12, 13, COLOR_TORSO, 125), (13, 14, COLOR_TORSO, 50),
    (1, 6, COLOR_TORSO, 80), (17, 25, COLOR_TORSO, 65), (0, 1, COLOR_TORSO, 70), (0, 6, COLOR_TORSO, 70),
)
HEAD_RADIUS_MM = 105.0
_SHIFT = 4                     # cv2 sub-pixel drawing: coordinates in 1/16 px
_SCALE = 1 << _SHIFT


def make_background(rng, width, height):
    """Textured (H,W,3) uint8 background: gradient + checker + blurred noise + floor band."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, size=(2, 3)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    g = (np.cos(ang) * xx / width + np.sin(ang) * yy / height)
    g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
    img = c0 * (1 - g[..., None]) + c1 * g[..., None]
    cell = rng.uniform(0.04, 0.15) * max(width, height)
    checker = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None] * 2 - 1
    img += checker * rng.uniform(6, 22)
    noise = rng.normal(0, 1, size=(max(height // 4, 2), max(width // 4, 2), 3)).astype(np.float32)
    noise = cv2.resize(cv2.GaussianBlur(noise, (0, 0), 1.0), (width, height), interpolation=cv2.INTER_LINEAR)
    img += noise * rng.uniform(8, 20)
    floor = rng.uniform(0.55, 0.75) * height
    img[yy >= floor] *= rng.uniform(0.6, 0.85)
    return np.clip(img, 12, 245).astype(np.uint8)


def _shade(color, factor):
    return tuple(int(min(255, max(0, v * factor))) for v in color)


def render_person(image, joints_px, depth, focal_px):
    """Draw a depth-ordered shaded stick person in place.

    image (H,W,3) uint8 BGR; joints_px (32,2) pixel coords; depth (32,) camera-frame depth in the
    same unit as the limb radii (mm) when focal_px is in px — radius_px = focal_px * r / depth.
    """
    items = []
    for a, b, color, radius in LIMBS:
        z = 0.5 * (depth[a] + depth[b])
        items.append((z, "limb", (a, b, color, radius)))
    head_c = 0.3 * joints_px[14] + 0.7 * joints_px[15]
    head_z = 0.3 * depth[14] + 0.7 * depth[15]
    items.append((head_z, "head", (head_c,)))
    items.sort(key=lambda item: -item[0])             # far first
    for z, kind, data in items:
        if z <= 1e-6:
            continue
        if kind == "limb":
            a, b, color, radius = data
            r_px = focal_px * radius / z
            p0 = tuple(int(round(v * _SCALE)) for v in joints_px[a])
            p1 = tuple(int(round(v * _SCALE)) for v in joints_px[b])
            for frac, factor in ((1.0, 0.5), (0.8, 0.75), (0.55, 1.0), (0.22, 1.3)):
                thick = max(1, int(round(2 * r_px * frac)))
                cv2.line(image, p0, p1, _shade(color, factor), thick, cv2.LINE_AA, _SHIFT)
        else:
            (centre,) = data
            r_px = focal_px * HEAD_RADIUS_MM / z
            for frac, factor, dx in ((1.0, 0.55, 0.0), (0.85, 0.8, -0.08), (0.55, 1.05, -0.18), (0.25, 1.3, -0.28)):
                c = tuple(int(round((v + dx * r_px) * _SCALE)) for v in centre)
                cv2.circle(image, c, max(1, int(round(r_px * frac * _SCALE))), _shade(COLOR_HEAD, factor),
                           -1, cv2.LINE_AA, _SHIFT)
    return image


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


def _sequence_rng(seed, subject, action, purpose):
    return np.random.default_rng([seed, int(subject.lstrip("S")), H36M_ACTION_IDS[action], purpose])


def h36m_background(seed, subject, action, cam_index, width, height):
    """The static background of one (sequence, camera), exactly as the writer uses it."""
    rng = _sequence_rng(seed, subject, action, 100 + cam_index)
    return make_background(rng, width, height)


def _encode_jpg(path, image, quality):
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def make_h36m_demo(dst, seed=0, frames_per_seq=30, image_size=256, actions_per_subject=2,
                   subjects=TRAIN_SUBJECTS + VALID_SUBJECTS, jpeg_quality=90, preview=True):
    """Write the synthetic Human3.6M demo set under ``dst``; returns a summary dict.

    Layout: ``dst/processed/<S>/<Action>-1/annot.h5`` and ``.../imageSequence/<cam>/img_%06d.jpg``
    (frame 1..frames_per_seq), ``dst/camera_parameters.json`` (L2D layout, scaled intrinsics),
    ``dst/preview.jpg``. annot.h5: pose/2d (N,32,2) float32 px, pose/3d (N,32,3) float32
    camera-frame mm, camera/frame/subject/action/subaction (N,) int64, intrinsics/<cam> (4,)
    [fx, cx, fy, cy]; rows camera after camera (N = 4 * frames_per_seq).
    """
    start = time.time()
    dst = Path(dst)
    scaled = scaled_h36m_cameras(image_size)
    cam_ids = tuple(sorted(H36M_CAMERA_IDS))
    (dst / "processed").mkdir(parents=True, exist_ok=True)
    with open(dst / "camera_parameters.json", "w") as fh:
        json.dump(_l2d_camera_json(scaled, subjects), fh, indent=1)
    counts, sheet = {}, []
    for subject in subjects:
        actions = subject_actions(seed, subject, actions_per_subject)
        for action in actions:
            world_mm = generate_sequence(seed, subject, action, frames_per_seq)
            seq_dir = dst / "processed" / subject / f"{action}-1"
            rows_2d, rows_3d = [], []
            for ci, cam_id in enumerate(cam_ids):
                cam = scaled[subject][cam_id]
                cam_mm = world_mm @ cam["R"].T + cam["t_mm"]
                uv = project_h36m(cam_mm, cam["f"], cam["c"], cam["k"], cam["p"])
                rows_3d.append(cam_mm)
                rows_2d.append(uv)
                background = h36m_background(seed, subject, action, ci, cam["width"], cam["height"])
                img_dir = seq_dir / "imageSequence" / cam_id
                img_dir.mkdir(parents=True, exist_ok=True)
                for i in range(frames_per_seq):
                    image = render_person(background.copy(), uv[i], cam_mm[i, :, 2], float(cam["f"].mean()))
                    _encode_jpg(img_dir / f"img_{i + 1:06d}.jpg", image, jpeg_quality)
                    if preview and i == frames_per_seq // 2 and len(sheet) < 16 and ci in (0, 3):
                        sheet.append((image, uv[i]))
            n = 4 * frames_per_seq
            with h5py.File(seq_dir / "annot.h5", "w") as f:
                f.create_dataset("pose/2d", data=np.concatenate(rows_2d).astype(np.float32))
                f.create_dataset("pose/3d", data=np.concatenate(rows_3d).astype(np.float32))
                f.create_dataset("camera", data=np.repeat(np.array([int(c) for c in cam_ids], np.int64),
                                                          frames_per_seq))
                f.create_dataset("frame", data=np.tile(np.arange(1, frames_per_seq + 1, dtype=np.int64), 4))
                f.create_dataset("subject", data=np.full(n, int(subject.lstrip("S")), np.int64))
                f.create_dataset("action", data=np.full(n, H36M_ACTION_IDS[action], np.int64))
                f.create_dataset("subaction", data=np.full(n, 1, np.int64))
                for cam_id in cam_ids:
                    cam = scaled[subject][cam_id]
                    f.create_dataset(f"intrinsics/{cam_id}", data=np.array(
                        [cam["f"][0], cam["c"][0], cam["f"][1], cam["c"][1]], np.float64))
            counts[subject] = counts.get(subject, 0) + n
    if preview and sheet:
        write_preview(dst / "preview.jpg", sheet, H36M_PREVIEW_BONES)
    return dict(dst=str(dst), frames=counts, train_frames=sum(counts.get(s, 0) for s in TRAIN_SUBJECTS),
                valid_frames=sum(counts.get(s, 0) for s in VALID_SUBJECTS), seconds=time.time() - start,
                megabytes=_folder_mb(dst))


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
        kept = np.arange(0, n, PANOPTIC_KEEP_EVERY)
        for ci, cam in enumerate(calib):
            R, t = np.asarray(cam["R"]), np.asarray(cam["t"]).reshape(3)
            uv = project_panoptic(raw32_cm[kept], cam["K"], cam["distCoef"], R, t)
            depth_mm = 10.0 * (raw32_cm[kept] @ R.T + t)[..., 2]
            background = panoptic_background(seed, si, ci)
            img_dir = seq_dir / "hdImgs" / cam["name"]
            img_dir.mkdir(parents=True, exist_ok=True)
            for j, frame in enumerate(kept):
                image = render_person(background.copy(), uv[j], depth_mm[j], float(cam["K"][0][0]))
                _encode_jpg(img_dir / f"{cam['name']}_{frame:08d}.jpg", image, jpeg_quality)
                if preview and j == len(kept) // 2 and len(sheet) < 8:
                    sheet.append((image, uv[j][list(PANOPTIC_FROM_H36M32)]))
        counts[seq] = dict(annotations=n, kept_frames=len(kept), images=len(kept) * len(calib))
    if preview and sheet:
        write_preview(dst / "preview.jpg", sheet, PANOPTIC_PREVIEW_BONES)
    return dict(dst=str(dst), sequences=counts, seconds=time.time() - start, megabytes=_folder_mb(dst))


PANOPTIC_PREVIEW_BONES = ((12, 2), (13, 12), (14, 13), (6, 2), (7, 6), (8, 7), (0, 2), (1, 0), (3, 0), (4, 3),
                          (5, 4), (9, 0), (10, 9), (11, 10))
