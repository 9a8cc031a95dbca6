"""Synthetic demo data (lib/datasets/synthetic.py, run/make_demo_data.py) at a tiny size."""
import json

import cv2
import h5py
import numpy as np
import pytest

from lib.datasets.cameras import PANOPTIC_AXIS_M, load_h36m_cameras, project_h36m, project_panoptic
from lib.datasets.synthetic import (H36M32_PARENTS, H36M32_USED, H36M_ACTION_IDS, h36m_background,
                                    make_h36m_demo, make_panoptic_demo, panoptic_background)
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
            # far from the person the background is untouched (up to JPEG noise)
            yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
            dist = np.min(np.hypot(xx[..., None] - joints[:, 0], yy[..., None] - joints[:, 1]), axis=-1)
            far = dist > 25
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
