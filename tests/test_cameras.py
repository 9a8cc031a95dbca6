"""Calibration loading and projection models (lib/datasets/cameras.py)."""
import json
import pickle

import numpy as np
import pytest

from lib.datasets.cameras import (PANOPTIC_AXIS_M, load_h36m_cameras, project_h36m,
                                  project_panoptic, world_to_camera)


def _sample_camera(imgname):
    base = str(imgname).split("/")[-1]          # e.g. S1_Directions_1.54138969_000001.jpg
    subject = base.split("_")[0]
    cam_id = base.split(".")[1].split("_")[0]
    return subject, cam_id


def test_projection_reproduces_real_annotations(shared_data):
    sample = np.load(shared_data / "test_h36m_body3d.npz")
    cams = load_h36m_cameras()
    for i, name in enumerate(sample["imgname"]):
        subject, cam_id = _sample_camera(name)
        cam = cams[subject][cam_id]
        uv = project_h36m(sample["S"][i, :, :3], cam["f"], cam["c"], cam["k"], cam["p"])
        np.testing.assert_allclose(uv, sample["part"][i, :, :2], atol=0.01)
    # batched call over all 4 frames of one camera gives the same as one at a time
    cam = cams["S1"]["54138969"]
    batched = project_h36m(sample["S"][:, :, :3], cam["f"], cam["c"], cam["k"], cam["p"])
    single = np.stack([project_h36m(s[:, :3], cam["f"], cam["c"], cam["k"], cam["p"]) for s in sample["S"]])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-12)


def test_distortion_matters_on_real_sample(shared_data):
    sample = np.load(shared_data / "test_h36m_body3d.npz")
    subject, cam_id = _sample_camera(sample["imgname"][3])
    cam = load_h36m_cameras()[subject][cam_id]
    uv = project_h36m(sample["S"][3, :, :3], cam["f"], cam["c"], np.zeros(3), np.zeros(2))
    assert np.abs(uv - sample["part"][3, :, :2]).max() > 0.5


def test_shipped_json_equals_cameras_pkl(shared_data):
    with open(shared_data / "cameras.pkl", "rb") as fh:
        ref = pickle.load(fh)
    cams = load_h36m_cameras()
    assert len(ref) == 44                       # 11 subjects x 4 cameras
    for (subject, cam_id), r in ref.items():
        cam = cams[subject][str(cam_id)]
        # cameras.pkl stores the camera->world rotation (mmpose applies X_cam = R^T (X - T))
        np.testing.assert_allclose(cam["R"], np.asarray(r["R"]).T, rtol=0, atol=1e-12)
        for key in ("T", "f", "c", "k", "p"):
            np.testing.assert_allclose(cam[key], np.asarray(r[key]).reshape(cam[key].shape), rtol=0, atol=1e-12)
        assert (cam["width"], cam["height"]) == (int(r["w"]), int(r["h"]))


def test_real_sample_is_upright_in_the_world_frame(shared_data):
    """camera -> world with the loaded extrinsics: pelvis near the origin at hip height, feet on the floor."""
    sample = np.load(shared_data / "test_h36m_body3d.npz")
    cams = load_h36m_cameras()
    for i, name in enumerate(sample["imgname"]):
        subject, cam_id = _sample_camera(name)
        cam = cams[subject][cam_id]
        world_m = sample["S"][i, :, :3] @ cam["R"] + cam["T"]       # inverse of R (X - T)
        np.testing.assert_allclose(world_to_camera(world_m, cam["R"], cam["T"]), sample["S"][i, :, :3], atol=1e-9)
        assert np.abs(world_m[0, :2]).max() < 1.5, name              # inside the capture area
        assert 0.0 < world_m[[3, 6], 2].min() < 0.2, name            # an ankle just above z = 0
        assert world_m[10, 2] > world_m[0, 2] + 0.3, name            # head above pelvis


def test_published_extrinsics_s1():
    """karfly/VideoPose3D publish t = -R T (mm) for S1 camera 54138969 and R[0] = (-0.9154, 0.4018, 0.0257)."""
    cam = load_h36m_cameras()["S1"]["54138969"]
    np.testing.assert_allclose(cam["t_mm"], [-346.05078140028075, 546.9807793144001, 5474.481087434061], atol=1e-6)
    np.testing.assert_allclose(cam["R"][0], [-0.9153617321513369, 0.40180836633680234, 0.02574754463350265],
                               atol=1e-12)


def test_derived_fields_are_consistent():
    cam = load_h36m_cameras()["S5"]["55011271"]
    X_world_m = np.array([[0.1, -0.4, 0.9], [1.2, 0.3, 0.05]])
    via_centre = world_to_camera(X_world_m, cam["R"], cam["T"])
    via_t = (cam["R"] @ (X_world_m * 1000.0).T).T + cam["t_mm"]
    np.testing.assert_allclose(via_centre * 1000.0, via_t, atol=1e-9)
    assert cam["K"][0, 0] == cam["f"][0] and cam["K"][1, 2] == cam["c"][1] and cam["K"][2, 2] == 1.0
    np.testing.assert_array_equal(cam["dist"], [cam["k"][0], cam["k"][1], cam["p"][0], cam["p"][1], cam["k"][2]])
    np.testing.assert_allclose(cam["R"] @ cam["R"].T, np.eye(3), atol=1e-9)


def test_project_h36m_hand_values():
    # no distortion: pure pinhole
    uv = project_h36m(np.array([[1.0, 2.0, 4.0]]), (100.0, 200.0), (10.0, 20.0), np.zeros(3), np.zeros(2))
    np.testing.assert_allclose(uv, [[35.0, 120.0]])
    # x = 0.5, y = 0.25, r2 = 0.3125; radial = 1 + 0.1 r2; tan = p1 y + p2 x
    k, p = np.array([0.1, 0.0, 0.0]), np.array([0.01, 0.02])
    r2 = 0.3125
    radial = 1 + 0.1 * r2
    tan = 0.01 * 0.25 + 0.02 * 0.5
    expect = [0.5 * (radial + tan) + 0.02 * r2, 0.25 * (radial + tan) + 0.01 * r2]
    uv = project_h36m(np.array([[2.0, 1.0, 4.0]]), (1.0, 1.0), (0.0, 0.0), k, p)
    np.testing.assert_allclose(uv[0], expect, rtol=1e-14)


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_karfly_and_l2d_layouts_round_trip(tmp_path):
    shipped = load_h36m_cameras()
    subjects = ("S1", "S9")
    intr_karfly, intr_l2d, extr = {}, {}, {}
    for s in subjects:
        extr[s] = {}
        for cam_id, cam in shipped[s].items():
            extr[s][cam_id] = {"R": cam["R"].tolist(), "t": cam["t_mm"].reshape(3, 1).tolist()}
            intr_karfly[cam_id] = {"calibration_matrix": cam["K"].tolist(), "distortion": cam["dist"].tolist()}
            intr_l2d[cam_id] = {"width": cam["width"], "height": cam["height"], "K": cam["K"].tolist(),
                                "distCoef": cam["dist"].tolist()}
    for name, intr in (("camera-parameters.json", intr_karfly), ("camera_parameters.json", intr_l2d)):
        loaded = load_h36m_cameras(_write(tmp_path, name, {"intrinsics": intr, "extrinsics": extr}))
        assert sorted(loaded) == list(subjects)
        for s in subjects:
            for cam_id, cam in shipped[s].items():
                got = loaded[s][cam_id]
                for key in ("R", "T", "f", "c", "k", "p", "K", "dist", "t_mm"):
                    np.testing.assert_allclose(got[key], cam[key], rtol=0, atol=1e-9, err_msg=f"{name} {key}")
                assert (got["width"], got["height"]) == (cam["width"], cam["height"])


def test_unknown_layout_names_file_and_layouts(tmp_path):
    path = _write(tmp_path, "weird.json", {"foo": 1})
    with pytest.raises(ValueError) as err:
        load_h36m_cameras(path)
    assert "weird.json" in str(err.value) and "karfly" in str(err.value) and "L2D" in str(err.value)
    with pytest.raises(FileNotFoundError):
        load_h36m_cameras(tmp_path / "missing.json")


def _panoptic_reference(p_world_cm, K, dist, R, t):
    """Slow per-point transcription of docs/original.md#cmu-panoptic-data with L2D's R' = R M and p' = p M."""
    M = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]
    R2 = [[sum(R[i][m] * M[m][j] for m in range(3)) for j in range(3)] for i in range(3)]
    p2 = [sum(p_world_cm[m] * M[m][j] for m in range(3)) for j in range(3)]
    x = [sum(R2[i][j] * p2[j] for j in range(3)) + t[i] for i in range(3)]
    k1, k2, p1, p2_, k3 = dist
    x0 = x[0] / (x[2] + 1e-5)
    x1 = x[1] / (x[2] + 1e-5)
    r = x0 * x0 + x1 * x1
    rad = 1 + k1 * r + k2 * r * r + k3 * r * r * r
    x0 = x0 * rad + 2 * p1 * x0 * x1 + p2_ * (r + 2 * x0 * x0)
    x1 = x1 * rad + 2 * p2_ * x0 * x1 + p1 * (r + 2 * x1 * x1)      # uses the updated x0
    u = K[0][0] * x0 + K[0][1] * x1 + K[0][2]
    v = K[1][0] * u + K[1][1] * x1 + K[1][2]                          # uses the updated u
    return u, v


def test_project_panoptic_matches_slow_reference():
    rng = np.random.default_rng(3)
    angle = 0.4
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    t = np.array([12.0, -30.0, 280.0])
    # K10 and K01 non-zero so the "v uses u" quirk is exercised
    K = np.array([[1400.0, 3.0, 950.0], [0.02, 1390.0, 540.0], [0.0, 0.0, 1.0]])
    dist = np.array([-0.25, 0.12, 0.003, -0.002, 0.01])
    pts = rng.normal(scale=60.0, size=(2, 5, 15, 3)) + [0.0, -100.0, 0.0]
    got = project_panoptic(pts, K, dist, R, t)
    assert got.shape == (2, 5, 15, 2)
    ref = np.array([_panoptic_reference(p.tolist(), K.tolist(), dist.tolist(), R.tolist(), t.tolist())
                    for p in pts.reshape(-1, 3)]).reshape(2, 5, 15, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)
    # the L2D pair (R M, p M) gives the same as the raw pair
    np.testing.assert_allclose(project_panoptic(pts @ PANOPTIC_AXIS_M, K, dist, R @ PANOPTIC_AXIS_M, t), got,
                               atol=1e-9)


def test_shipped_layout_r_convention_key(tmp_path):
    """A file that declares world->camera R is taken as is; the default reads R as camera->world."""
    cam = load_h36m_cameras()["S1"]["54138969"]
    entry = {"R": cam["R"].tolist(), "T": cam["T"].tolist(), "f": cam["f"].tolist(), "c": cam["c"].tolist(),
             "k": cam["k"].tolist(), "p": cam["p"].tolist(), "width": 1000, "height": 1002}
    data = {"R_convention": "world_to_camera", "cameras": {"S1": {"54138969": entry}}}
    got = load_h36m_cameras(_write(tmp_path, "w2c.json", data))["S1"]["54138969"]
    np.testing.assert_array_equal(got["R"], cam["R"])
    data.pop("R_convention")
    got = load_h36m_cameras(_write(tmp_path, "c2w.json", data))["S1"]["54138969"]
    np.testing.assert_array_equal(got["R"], cam["R"].T)
    data["R_convention"] = "sideways"
    with pytest.raises(ValueError, match="R_convention"):
        load_h36m_cameras(_write(tmp_path, "bad.json", data))
