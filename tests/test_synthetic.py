"""Synthetic demo data (lib/datasets/synthetic.py, run/make_demo_data.py) at a tiny size."""
import json

import cv2
import h5py
import numpy as np
import pytest

from lib.datasets.cameras import PANOPTIC_AXIS_M, load_h36m_cameras, project_h36m, project_panoptic
from lib.datasets.synthetic import (BODY_PARTS, H36M32_PARENTS, H36M32_USED, H36M_ACTION_IDS, h36m_background,
                                    h36m_occluder, make_h36m_demo, make_occluder, make_panoptic_demo,
                                    panoptic_background, render_person, subject_look, subject_style,
                                    visibility_rates)
from lib.utils.errors import BadValueError
from run import make_demo_data

CAMS = ("54138969", "55011271", "58860488", "60457274")
FRAMES = 4
SIZE = 128
SUBJECTS = ("S1", "S9")


def _generate(dst, seed=0):
    return make_h36m_demo(dst, seed=seed, frames_per_seq=FRAMES, image_size=SIZE, actions_per_subject=1,
                          subjects=SUBJECTS)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("demo_h36m")
    _generate(dst)
    return dst


def _sequences(dst):
    return sorted((dst / "processed").glob("S*/*-1"))


def _read(annot):
    with h5py.File(annot, "r") as f:
        return {k: f[k][()] for k in ("pose/2d", "pose/3d", "camera", "frame", "subject", "action", "subaction")}


def test_layout(demo):
    seqs = _sequences(demo)
    assert [s.parent.name for s in seqs] == sorted(SUBJECTS)
    params = json.loads((demo / "camera_parameters.json").read_text())
    assert sorted(params["intrinsics"]) == list(CAMS) and sorted(params["extrinsics"]) == sorted(SUBJECTS)
    assert (demo / "preview.jpg").is_file()
    for seq in seqs:
        assert seq.name[:-2] in H36M_ACTION_IDS
        assert (seq / "annot.h5").is_file()
        for cam in CAMS:
            names = sorted(p.name for p in (seq / "imageSequence" / cam).iterdir())
            assert names == [f"img_{i:06d}.jpg" for i in range(1, FRAMES + 1)]
            image = cv2.imread(str(seq / "imageSequence" / cam / names[0]))
            # 1000x1002 cameras keep their aspect: 128 x round(128 * 1.002) = 128 x 128; 1000x1000 -> 128x128
            intr = params["intrinsics"][cam]
            assert image.shape == (intr["height"], intr["width"], 3)
            aspect = 1.002 if cam in ("54138969", "60457274") else 1.0
            assert intr["width"] == SIZE and intr["height"] == round(SIZE * aspect)


def test_image_size_rounding(tmp_path):
    make_h36m_demo(tmp_path, frames_per_seq=1, image_size=256, actions_per_subject=1, subjects=("S5",), preview=False)
    intr = json.loads((tmp_path / "camera_parameters.json").read_text())["intrinsics"]
    assert (intr["54138969"]["width"], intr["54138969"]["height"]) == (256, 257)
    assert (intr["55011271"]["width"], intr["55011271"]["height"]) == (256, 256)
    K = np.asarray(intr["55011271"]["K"])
    ref = load_h36m_cameras()["S5"]["55011271"]
    np.testing.assert_allclose([K[0, 0], K[1, 1], K[0, 2], K[1, 2]], np.r_[ref["f"], ref["c"]] * 0.256)


def test_annot_shapes_and_rows(demo):
    for seq in _sequences(demo):
        a = _read(seq / "annot.h5")
        n = 4 * FRAMES
        assert a["pose/2d"].shape == (n, 32, 2) and a["pose/2d"].dtype == np.float32
        assert a["pose/3d"].shape == (n, 32, 3) and a["pose/3d"].dtype == np.float32
        for key in ("camera", "frame", "subject", "action", "subaction"):
            assert a[key].shape == (n,) and np.issubdtype(a[key].dtype, np.integer), key
        np.testing.assert_array_equal(a["camera"], np.repeat([int(c) for c in CAMS], FRAMES))   # camera after camera
        np.testing.assert_array_equal(a["frame"], np.tile(np.arange(1, FRAMES + 1), 4))
        assert set(a["subject"]) == {int(seq.parent.name[1:])}
        assert set(a["action"]) == {H36M_ACTION_IDS[seq.name[:-2]]} and set(a["subaction"]) == {1}
        assert (a["pose/3d"][..., 2] > 1500).all()       # in front of every camera, metres away


def test_deterministic_per_seed(tmp_path, demo):
    _generate(tmp_path / "again", seed=0)
    _generate(tmp_path / "other", seed=1)
    for seq in _sequences(demo):
        rel = seq.relative_to(demo)
        a, b = _read(seq / "annot.h5"), _read(tmp_path / "again" / rel / "annot.h5")
        for key in a:
            assert a[key].tobytes() == b[key].tobytes(), key
        img = rel / "imageSequence" / CAMS[0] / "img_000001.jpg"
        assert (demo / img).read_bytes() == (tmp_path / "again" / img).read_bytes()
    other = sorted((tmp_path / "other" / "processed").glob("S*/*-1/annot.h5"))
    first = _read(_sequences(demo)[0] / "annot.h5")["pose/3d"]
    assert not any(np.array_equal(first, _read(p)["pose/3d"]) for p in other)


def test_2d_is_projection_of_3d_with_written_cameras(demo):
    cams = load_h36m_cameras(demo / "camera_parameters.json")
    for seq in _sequences(demo):
        a = _read(seq / "annot.h5")
        subject = seq.parent.name
        worlds = []
        for ci, cam_id in enumerate(CAMS):
            cam = cams[subject][cam_id]
            rows = slice(ci * FRAMES, (ci + 1) * FRAMES)
            uv = project_h36m(a["pose/3d"][rows], cam["f"], cam["c"], cam["k"], cam["p"])
            np.testing.assert_allclose(uv, a["pose/2d"][rows], atol=1e-3)
            worlds.append((a["pose/3d"][rows].astype(np.float64) - cam["t_mm"]) @ cam["R"])   # R^T (X - t)
        # the four cameras see one and the same world skeleton, standing on the floor z = 0
        for w in worlds[1:]:
            np.testing.assert_allclose(w, worlds[0], atol=0.05)
        feet_z = worlds[0][:, [3, 4, 8, 9], 2].min(axis=1)
        np.testing.assert_allclose(feet_z, 0.0, atol=0.05)
        assert (worlds[0][:, 15, 2] > worlds[0][:, 0, 2]).all()          # head above pelvis


def test_bone_lengths_constant_within_sequence(demo):
    for seq in _sequences(demo):
        pose = _read(seq / "annot.h5")["pose/3d"].astype(np.float64)
        lengths = []
        for j in H36M32_USED[1:]:
            parent = H36M32_PARENTS[j]
            lengths.append(np.linalg.norm(pose[:, j] - pose[:, parent], axis=-1))
        lengths = np.stack(lengths, axis=1)                               # (rows, 16)
        np.testing.assert_allclose(lengths, np.broadcast_to(lengths[:1], lengths.shape), atol=0.05)
        thigh = np.linalg.norm(pose[0, 2] - pose[0, 1])
        assert 350 < thigh < 550


def test_something_drawn_at_mid_limb(demo):
    cams = json.loads((demo / "camera_parameters.json").read_text())["intrinsics"]
    for seq in _sequences(demo):
        a = _read(seq / "annot.h5")
        subject, action = seq.parent.name, seq.name[:-2]
        for ci, cam_id in enumerate(CAMS):
            bg = h36m_background(0, subject, action, ci, cams[cam_id]["width"], cams[cam_id]["height"]).astype(int)
            image = cv2.imread(str(seq / "imageSequence" / cam_id / "img_000001.jpg")).astype(int)
            joints = a["pose/2d"][ci * FRAMES]
            for child, parent in ((2, 1), (12, 0), (7, 6)):                # r thigh, spine, l thigh
                x, y = np.round(0.5 * (joints[child] + joints[parent])).astype(int)
                assert np.abs(image[y, x] - bg[y, x]).sum() > 30, (seq.name, cam_id, child)
            # far from the person and off the foreground object the background is untouched (up to JPEG noise)
            yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
            dist = np.min(np.hypot(xx[..., None] - joints[:, 0], yy[..., None] - joints[:, 1]), axis=-1)
            far = dist > 25
            track = a["pose/2d"][ci * FRAMES:(ci + 1) * FRAMES].astype(np.float64)
            occluder = h36m_occluder(0, subject, action, ci, track, image.shape[1], image.shape[0])
            if occluder is not None:
                far &= cv2.dilate(occluder[1].astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
            assert np.abs(image[far] - bg[far]).mean() < 6


def test_cli_writes_default_layout(tmp_path):
    summary = make_demo_data.main(["--dst", str(tmp_path / "d"), "--frames-per-seq", "1", "--image-size", "64"])
    assert summary["train_frames"] == 5 * 2 * 4 and summary["valid_frames"] == 2 * 2 * 4
    assert sorted(p.name for p in (tmp_path / "d" / "processed").iterdir()) == sorted(
        ["S1", "S5", "S6", "S7", "S8", "S9", "S11"])
    actions = {p.name for p in (tmp_path / "d" / "processed").glob("S[15678]/*")}
    assert len(actions) >= 6                                              # training covers many actions


def test_panoptic_layout_and_projection(tmp_path):
    seq = "171204_pose1"
    make_panoptic_demo(tmp_path, seed=0, kept_frames=2, sequences=((seq, "Walking"),))
    calib = json.loads((tmp_path / seq / f"calibration_{seq}.json").read_text())
    hd = [c for c in calib["cameras"] if c["type"] == "hd"]
    assert [(c["panel"], c["node"]) for c in hd] == [(0, 3), (0, 6), (0, 12), (0, 13), (0, 23)]
    assert all(c["name"] == f"00_{c['node']:02d}" and c["resolution"] == [1920, 1080] for c in hd)
    scenes = sorted((tmp_path / seq / "hdPose3d_stage1_coco19").glob("body3DScene_*.json"))
    assert len(scenes) == 30
    for ci, cam in enumerate(hd):
        R, t = np.asarray(cam["R"]), np.asarray(cam["t"]).reshape(3)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.asarray(cam["K"]).shape == (3, 3) and len(cam["distCoef"]) == 5
        images = sorted((tmp_path / seq / "hdImgs" / cam["name"]).iterdir())
        assert [p.name for p in images] == [f"{cam['name']}_{i:08d}.jpg" for i in (0, 15)]
        for frame in (0, 15):
            scene = json.loads(scenes[frame].read_text())
            assert scene["fpsType"] == "hd_29_97" and len(scene["bodies"]) == 1
            joints = np.asarray(scene["bodies"][0]["joints19"]).reshape(19, 4)
            assert (joints[:, 3] > 0.1).all()
            up = joints[:15, :3] @ PANOPTIC_AXIS_M                        # L2D's p' = p M: z up, cm
            assert up[0, 2] > up[2, 2] > up[8, 2] > 0 and up[8, 2] < 20     # neck > hip > ankle ~ floor
            uv = project_panoptic(joints[:15, :3], cam["K"], cam["distCoef"], R, t)
            assert 0 <= uv[2, 0] <= 1919 and 0 <= uv[2, 1] <= 1079         # root inside the image
            image = cv2.imread(str(tmp_path / seq / "hdImgs" / cam["name"] / f"{cam['name']}_{frame:08d}.jpg"))
            assert image.shape == (1080, 1920, 3)
            if frame == 0:
                bg = panoptic_background(0, 0, ci).astype(int)
                x, y = np.round(0.5 * (uv[12] + uv[13])).astype(int)        # mid right thigh
                assert np.abs(image[y, x].astype(int) - bg[y, x]).sum() > 30


# ---------------------------------------------------------------------------------------------
# What the images hold: no side from colour, a face on the front, occluders, truncation
# ---------------------------------------------------------------------------------------------
LEFT_LIMBS = ((6, 7), (7, 8), (17, 18), (18, 19))          # thigh, shin, upper arm, forearm (32 layout)
RIGHT_LIMBS = ((1, 2), (2, 3), (25, 26), (26, 27))


def _limb_pixels(image, joints, limbs):
    """BGR pixels at 35 %, 50 % and 65 % along each limb that lies inside the image."""
    out = []
    h, w = image.shape[:2]
    for a, b in limbs:
        for t in (0.35, 0.5, 0.65):
            x, y = np.floor((1 - t) * joints[a] + t * joints[b]).astype(int)
            if 0 <= x < w and 0 <= y < h:
                out.append(image[y, x])
    return out


def test_no_side_identifiable_from_colour(demo):
    """Pixels on the left limbs and on the right limbs have the same colours (up to shading, light
    and what happens to lie in front); a renderer that paints sides differently fails here."""
    left, right = [], []
    for seq in _sequences(demo):
        a = _read(seq / "annot.h5")
        for ci, cam_id in enumerate(CAMS):
            for i in range(FRAMES):
                image = cv2.imread(str(seq / "imageSequence" / cam_id / f"img_{i + 1:06d}.jpg")).astype(float)
                joints = a["pose/2d"][ci * FRAMES + i]
                left += _limb_pixels(image, joints, LEFT_LIMBS)
                right += _limb_pixels(image, joints, RIGHT_LIMBS)
    left, right = np.array(left), np.array(right)
    assert len(left) > 200 and len(right) > 200
    gap = np.abs(np.median(left, axis=0) - np.median(right, axis=0))
    spread = np.median(np.abs(np.r_[left, right] - np.median(np.r_[left, right], axis=0)), axis=0)
    assert gap.max() < 15, (gap, spread)                 # blue vs red limbs: > 100 in two channels
    # chromaticity too: the blue/red balance of each side's pixels
    balance = lambda p: np.median((p[:, 0] - p[:, 2]) / (p.sum(1) + 1.0))
    assert abs(balance(left) - balance(right)) < 0.05


def test_left_and_right_parts_share_one_surface():
    parts = {(a, b): surface for a, b, surface, _r in BODY_PARTS}
    for (la, lb), (ra, rb) in zip(LEFT_LIMBS + ((8, 9), (19, 22)), RIGHT_LIMBS + ((3, 4), (27, 30))):
        assert parts[(la, lb)] == parts[(ra, rb)], ((la, lb), (ra, rb))
    look = subject_look(0, "S1")
    assert set(look) >= {s for s in parts.values()}


def test_head_faces_forward():
    """The face is drawn on the body's front: the head frame from thorax, neck/nose and head."""
    from lib.datasets.synthetic import _head_axes, forward_kinematics, subject_style
    zero = {k: np.zeros(1) for k in ("lean", "twist", "side", "head_pitch", "head_yaw")}
    for side in ("r", "l"):
        zero.update({f"{n}_{side}": np.zeros(1) for n in ("hip_flex", "hip_abd", "knee", "sh_flex", "sh_abd", "elbow")})
    for yaw in (0.0, 1.0, -2.5):
        world = forward_kinematics(zero, subject_style(0, "S1")["bones"], np.zeros((1, 2)), np.array([yaw]))[0]
        right, forward, up = _head_axes(world)
        np.testing.assert_allclose(forward[:2] / np.linalg.norm(forward[:2]), [-np.sin(yaw), np.cos(yaw)], atol=1e-6)
        assert np.degrees(np.arccos(forward @ [-np.sin(yaw), np.cos(yaw), 0.0])) < 10
        assert right @ (world[25] - world[17]) > 0 and up[2] > 0.95       # right shoulder on the right


def test_front_and_back_look_different():
    """Seen from the front the head shows eyes and nose, from the back only hair."""
    canvas = np.full((200, 200, 3), 128, np.uint8)
    look = subject_look(0, "S1")
    zero = {k: np.zeros(1) for k in ("lean", "twist", "side", "head_pitch", "head_yaw")}
    for side in ("r", "l"):
        zero.update({f"{n}_{side}": np.zeros(1) for n in ("hip_flex", "hip_abd", "knee", "sh_flex", "sh_abd", "elbow")})
    from lib.datasets.synthetic import forward_kinematics, subject_style
    heads = []
    for yaw in (np.pi, 0.0):       # camera on world -y looking +y: yaw pi faces it, yaw 0 turns away
        world = forward_kinematics(zero, subject_style(0, "S1")["bones"], np.zeros((1, 2)), np.array([yaw]))[0]
        cam = np.stack([world[:, 0], -(world[:, 2] - 1000.0), world[:, 1] + 3000.0], -1)   # x right, y down, z forward
        uv = 400.0 * cam[:, :2] / cam[:, 2:] + 100.0
        image = render_person(canvas.copy(), uv, cam, 400.0, look)
        cx, cy = np.round(0.3 * uv[14] + 0.7 * uv[15]).astype(int)
        heads.append(image[cy - 8:cy + 9, cx - 8:cx + 9].astype(float))
    face, back = heads
    skin_share = [(np.abs(h / look["skin"] - 1.0).max(-1) < 0.35).mean() for h in heads]   # lit skin, any shade band
    hair_share = [(np.abs(h - look["hair"]).sum(-1) < 60).mean() for h in heads]
    assert skin_share[0] > 0.5 and skin_share[1] < 0.25, skin_share
    assert hair_share[1] > hair_share[0] + 0.3, hair_share


def test_demo_rates_within_bounds():
    """Truncation and foreground occlusion at the demo's size (seed 0, 80 frames) and at other
    seeds stay within the stated bounds (counts from the annotations and occluder masks only)."""
    for seed in (0, 1, 2):
        rates = visibility_rates(seed=seed, frames_per_seq=80)
        assert 0.005 <= rates["truncated_joints"] <= 0.05, (seed, rates)
        assert 0.03 <= rates["truncated_frames"] <= 0.25, (seed, rates)
        assert 0.03 <= rates["occluded_joints"] <= 0.15, (seed, rates)
        assert 0.10 <= rates["occluded_frames"] <= 0.45, (seed, rates)


def test_summary_counts_match_rates(demo):
    rates = visibility_rates(seed=0, frames_per_seq=FRAMES, image_size=SIZE, actions_per_subject=1,
                             subjects=SUBJECTS)
    summary = _generate(demo.parent / "again_for_rates")
    for key in ("truncated_joints", "occluded_joints", "truncated_frames", "occluded_frames"):
        assert summary[key] == pytest.approx(rates[key]), key


def test_pelvis_always_in_view(demo):
    params = json.loads((demo / "camera_parameters.json").read_text())["intrinsics"]
    for seq in _sequences(demo):
        a = _read(seq / "annot.h5")
        for ci, cam_id in enumerate(CAMS):
            pelvis = a["pose/2d"][ci * FRAMES:(ci + 1) * FRAMES, 0]
            w, h = params[cam_id]["width"], params[cam_id]["height"]
            assert ((pelvis >= 0) & (pelvis < (w, h))).all()


def test_occluder_is_static_and_over_the_person():
    rng = np.random.default_rng(5)
    track = np.tile(np.array([[100.0, 60.0]]), (10, 32, 1)) + rng.normal(0, 20, (10, 32, 2))
    made = [make_occluder(np.random.default_rng(s), track, 256, 256) for s in range(40)]
    made = [m for m in made if m is not None]
    assert 5 < len(made) < 30                              # about OCCLUDED_VIEW_RATE of the views
    for overlay, mask in made:
        assert overlay.shape == (256, 256, 3) and mask.shape == (256, 256) and mask.any()
        ys, xs = np.nonzero(mask)
        assert xs.min() < track[..., 0].max() + 60 and xs.max() > track[..., 0].min() - 60


def test_deterministic_every_file(tmp_path, demo):
    """Same seed -> the same bytes in every written file (images, occluders included)."""
    _generate(tmp_path / "again2", seed=0)
    files = sorted(p.relative_to(demo) for p in (demo / "processed").rglob("*.jpg"))
    assert len(files) == len(SUBJECTS) * 4 * FRAMES
    for rel in files:
        assert (demo / rel).read_bytes() == (tmp_path / "again2" / rel).read_bytes(), rel


# ---------------------------------------------------------------------------------------------
# Splits: valid (selection) / test (reporting), and the image-free lifter split
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def split_demo(tmp_path_factory):
    from lib.datasets.prepare_h36m import prepare_h36m
    root = tmp_path_factory.mktemp("split_demo") / "data"
    summary = make_demo_data.main(["--dst", str(root), "--frames-per-seq", "2", "--image-size", "64",
                                   "--actions-per-subject", "1", "--held-out-actions", "8",
                                   "--held-out-frames", "1", "--test-split", "--lifter-poses", "300"])
    info = prepare_h36m(root, root, train_interval=1, valid_interval=1, test_interval=1,
                        splits=("train", "valid", "test"), check_images=False, progress=False, log=lambda *_: None)
    return root, summary, info


def test_test_split_separates_subjects(split_demo):
    from lib.datasets import index as idx
    root, summary, info = split_demo
    assert summary["train_frames"] == 5 * 1 * 4 * 2
    assert summary["valid_frames"] == summary["test_frames"] == 8 * 4 * 1       # every action, one frame each
    subjects = {}
    for split in ("train", "valid", "test"):
        _info, arrays = idx.load_split(root, split, "h36m")
        subjects[split] = set(arrays["subject"].tolist())
        if split != "train":
            assert len(set(arrays["action"].tolist())) == 8                        # every demo action
    assert subjects == {"train": {"S1", "S5", "S6", "S7", "S8"}, "valid": {"S9"}, "test": {"S11"}}
    assert info["splits"]["test"]["count"] == 32 and info["splits"]["valid"]["count"] == 32


def test_test_split_of_several_people_with_their_own_take_length(tmp_path):
    """The benchmark's test split: S11 and the never-released S2, S3, S4, S10, seen through their own
    Human3.6M cameras, each a different body, with --test-frames frames a take."""
    from lib.datasets import index as idx
    from lib.datasets.prepare_h36m import prepare_h36m
    root = tmp_path / "data"
    summary = make_demo_data.main(["--dst", str(root), "--frames-per-seq", "1", "--image-size", "64",
                                   "--actions-per-subject", "1", "--held-out-actions", "2", "--held-out-frames", "3",
                                   "--test-split", "--test-subjects", "S2,S10,S11", "--test-frames", "2"])
    assert summary["valid_frames"] == 2 * 4 * 3 and summary["test_frames"] == 3 * 2 * 4 * 2
    assert json.loads((root / "splits.json").read_text())["subjects"]["test"] == ["S11", "S2", "S10"]
    prepare_h36m(root, root, train_interval=1, valid_interval=1, test_interval=1, splits=("train", "valid", "test"),
                 check_images=False, progress=False, log=lambda *_: None)
    _info, test = idx.load_split(root, "test", "h36m")
    assert set(test["subject"].tolist()) == {"S2", "S10", "S11"}
    # every row's 2D is its 3D seen through that subject's own calibration, intrinsics scaled to 64 px
    shipped, scale = load_h36m_cameras(), 64 / 1000.0
    for subject in ("S2", "S10"):
        for r in np.flatnonzero(test["subject"] == subject):
            cam = shipped[subject][str(test["camera"][r])]
            uv = project_h36m(test["joints_3d"][r] + test["hip_camera"][r], np.asarray(cam["f"]) * scale,
                              np.asarray(cam["c"]) * scale, cam["k"], cam["p"])
            np.testing.assert_allclose(uv, test["joints_2d"][r], atol=0.02)
    bodies = {s: subject_style(0, s)["bones"]["thigh"] for s in ("S2", "S10", "S11")}
    assert len(set(bodies.values())) == 3                                      # three different people


@pytest.mark.parametrize("args, says", [(["--test-split", "--test-subjects", "S9"], "S9 cannot"),
                                         (["--test-split", "--test-subjects", "S12"], "S12"),
                                         (["--test-frames", "4"], "add --test-split")])
def test_bad_test_split_arguments_are_refused(tmp_path, args, says):
    with pytest.raises(BadValueError, match=says):
        make_demo_data.main(["--dst", str(tmp_path / "d")] + args)
    assert not (tmp_path / "d").exists()


def test_pretrain_people_are_a_split_of_their_own_and_change_no_other_image(tmp_path):
    """--pretrain-people: other people (their own bodies and clothes) in the split pretrain, seen through
    a training subject's cameras; every other file is byte for byte what it is without them."""
    from lib.datasets import index as idx
    from lib.datasets.prepare_h36m import prepare_h36m
    base = ["--frames-per-seq", "1", "--image-size", "64", "--actions-per-subject", "1", "--held-out-actions", "1",
            "--held-out-frames", "1", "--test-split", "--pretrain-actions", "1", "--pretrain-frames", "2"]
    plain, crowd = tmp_path / "plain", tmp_path / "crowd"
    make_demo_data.main(["--dst", str(plain)] + base)
    summary = make_demo_data.main(["--dst", str(crowd), "--pretrain-people", "3"] + base)
    assert summary["pretrain_frames"] == 3 * 1 * 4 * 2
    files = sorted(p.relative_to(plain) for p in (plain / "processed").rglob("*") if p.is_file())
    assert files and all((plain / f).read_bytes() == (crowd / f).read_bytes() for f in files)
    assert (plain / "preview.jpg").read_bytes() == (crowd / "preview.jpg").read_bytes()
    people = ["S101", "S102", "S103"]
    assert json.loads((crowd / "splits.json").read_text())["subjects"]["pretrain"] == people
    prepare_h36m(crowd, crowd, train_interval=1, valid_interval=1, test_interval=1,
                 splits=("train", "valid", "test", "pretrain"), check_images=False, progress=False,
                 log=lambda *_: None)
    _info, pre = idx.load_split(crowd, "pretrain", "h36m")
    assert sorted(set(pre["subject"].tolist())) == people and len(pre["image"]) == 3 * 4 * 2
    with pytest.raises(BadValueError, match="--train-interval must be >= 1"):     # pretrain samples as train does
        prepare_h36m(crowd, tmp_path / "bad", train_interval=0, splits=("pretrain",), check_images=False,
                     progress=False, log=lambda *_: None)
    # person k stands in the cameras of training subject k % 5 (S102 -> S6), intrinsics scaled to 64 px
    shipped, scale = load_h36m_cameras(), 64 / 1000.0
    for r in np.flatnonzero(pre["subject"] == "S102"):
        cam = shipped["S6"][str(pre["camera"][r])]
        uv = project_h36m(pre["joints_3d"][r] + pre["hip_camera"][r], np.asarray(cam["f"]) * scale,
                          np.asarray(cam["c"]) * scale, cam["k"], cam["p"])
        np.testing.assert_allclose(uv, pre["joints_2d"][r], atol=0.02)
    # nobody of the crowd looks like, or is built like, a training or test person
    named = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")
    tops = {s: tuple(subject_look(0, s)["top"]) for s in named + tuple(people)}
    thighs = {s: subject_style(0, s)["bones"]["thigh"] for s in named + tuple(people)}
    assert len(set(tops.values())) == len(tops) and len(set(thighs.values())) == len(thighs)


def test_pretrain_people_need_the_split_plan(tmp_path):
    with pytest.raises(BadValueError, match="add --test-split"):
        make_demo_data.main(["--dst", str(tmp_path / "d"), "--pretrain-people", "2"])
    assert not (tmp_path / "d").exists()


def test_pose_only_split_is_indexed_and_exact(split_demo):
    from lib.datasets import index as idx
    root, summary, info = split_demo
    assert summary["lifter_poses"] == 300
    assert info["splits"]["train_poses"] == {"file": "train_poses.npz", "count": 300, "pose_only": True,
                                             "subjects": ["S1", "S5", "S6", "S7", "S8"]}
    _info, poses = idx.load_split(root, "train_poses", "h36m")
    _info, train = idx.load_split(root, "train", "h36m")
    assert (poses["image"] == "").all() and set(poses["width"].tolist()) == {64}
    assert set(zip(poses["subject"].tolist(), poses["action"].tolist())) == \
        set(zip(train["subject"].tolist(), train["action"].tolist()))               # same subjects doing the same actions
    # 2D = exact projection of the 3D (root-relative + hip) with the sample's own camera
    cam_xyz = (poses["joints_3d"] + poses["hip_camera"][:, None]).astype(np.float64) * 10.0
    for i in range(0, 300, 37):
        K, dist = poses["cam_K"][i].astype(np.float64), poses["cam_dist"][i].astype(np.float64)
        uv = project_h36m(cam_xyz[i], K[[0, 1], [0, 1]], K[[0, 1], [2, 2]], dist[[0, 1, 4]], dist[[2, 3]])
        np.testing.assert_allclose(uv, poses["joints_2d"][i], atol=1e-2)
    np.testing.assert_allclose(poses["joints_3d"][:, 0], 0.0, atol=1e-6)
    # no pose-only sample repeats a rendered frame
    flat = lambda a: np.round(a["joints_3d"].reshape(len(a["joints_3d"]), -1), 1)
    rendered = {row.tobytes() for row in flat(train)}
    assert not any(row.tobytes() in rendered for row in flat(poses))


def test_pose_only_split_added_to_an_existing_index(tmp_path):
    from lib.datasets import index as idx
    from lib.datasets.synthetic import write_pose_only_split
    root = tmp_path / "d"
    make_h36m_demo(root, frames_per_seq=1, image_size=64, actions_per_subject=1, subjects=("S1", "S9"),
                   preview=False)
    _prepare(root)
    assert "train_poses" not in idx.read_index(root)["splits"]
    assert write_pose_only_split(root, seed=0, num_frames=50, image_size=64) == 50
    info = idx.read_index(root)
    assert info["splits"]["train_poses"]["count"] == 50 and info["counts"]["train_poses"] == 50
    _info, arrays = idx.load_split(root, "train_poses", "h36m")
    assert len(arrays["image"]) == 50


def _prepare(root):
    from lib.datasets.prepare_h36m import prepare_h36m
    return prepare_h36m(root, root, train_interval=1, valid_interval=1, check_images=False, progress=False,
                        log=lambda *_: None)


def test_pose_only_frames_follow_the_rendered_distribution():
    """Takes 2, 3, ... are other recordings of the same motions: bone lengths per subject as rendered."""
    from lib.datasets.synthetic import pose_only_arrays
    arrays = pose_only_arrays(0, 2000, image_size=128, subjects=("S1", "S5"))
    assert len(arrays["image"]) == 2000 and set(arrays["subject"].tolist()) == {"S1", "S5"}
    assert set(arrays["camera"].tolist()) == set(CAMS)
    j3d = arrays["joints_3d"].astype(np.float64)
    for subject in ("S1", "S5"):
        thigh = np.linalg.norm(j3d[arrays["subject"] == subject][:, 2] - j3d[arrays["subject"] == subject][:, 1], axis=-1)
        np.testing.assert_allclose(thigh, thigh[0], atol=0.01)           # one body per subject (cm)


def test_no_plan_keeps_the_human36m_splits(tmp_path):
    from lib.datasets.prepare_h36m import prepare_h36m
    root = tmp_path / "d"
    make_h36m_demo(root, frames_per_seq=1, image_size=64, actions_per_subject=1, subjects=("S1", "S9", "S11"),
                   preview=False)
    assert not (root / "splits.json").exists()
    info = prepare_h36m(root, root, train_interval=1, valid_interval=1, check_images=False, progress=False,
                        log=lambda *_: None)
    assert info["splits"]["valid"]["subjects"] == ["S9", "S11"]
    with pytest.raises(BadValueError, match="test"):
        prepare_h36m(root, root, splits=("train", "test"), check_images=False, progress=False, force=True,
                     log=lambda *_: None)


def test_long_subject_lists_are_shortened_in_the_preparation_report():
    from lib.datasets.prepare_h36m import _names
    people = ["S1", "S5"] + [f"S{k}" for k in range(101, 301)]
    assert _names(people) == "S1, S5, " + ", ".join(f"S{k}" for k in range(101, 109)) + ", ..., S300 (202 subjects)"
    assert _names(people[:12]) == ", ".join(people[:12])
