"""2D in the files lifter projects read: export, VideoPose3D's own loading path, import, joint layouts,
untrusted files and the evaluation protocols (docs/detections.md)."""
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import model_3d
from conftest import ROOT, make_tiny_h36m
from lib.config import get_cfg
from lib.core.skeleton import H36M, H36M32_TO_17
from lib.datasets import index as idx
from lib.datasets import vp3d
from lib.datasets.cameras import H36M_IMAGE_SIZE, load_h36m_cameras, project_h36m
from lib.engine.evaluator import evaluate_checkpoint, evaluation_context, validate_arrays
from lib.eval import protocols
from lib.utils.errors import UntrustedFileError, run_cli
from run import export_detections, train_hrnet, train_lifter, valid_hrnet

CFG = str(ROOT / "experiments" / "demo" / "tiny_96x128.yaml")


# ----------------------------------------------------------------------------- VideoPose3D's loading path
def _qrot(q, v):
    """Rotate vectors v (..., 3) by unit quaternions q (..., 4) = (w, x, y, z)."""
    qvec = q[..., 1:]
    uv = np.cross(qvec, v)
    uuv = np.cross(qvec, uv)
    return v + 2 * (q[..., :1] * uv + uuv)


def _quaternion(rot):
    """3 x 3 rotation -> (w, x, y, z) (the largest of the four first, for accuracy), for the test's camera
    table: VideoPose3D stores orientations as quaternions."""
    t = np.trace(rot)
    i = int(np.argmax([t, rot[0, 0], rot[1, 1], rot[2, 2]]))
    if i == 0:
        w = np.sqrt(1 + t) / 2
        q = [w, (rot[2, 1] - rot[1, 2]) / (4 * w), (rot[0, 2] - rot[2, 0]) / (4 * w), (rot[1, 0] - rot[0, 1]) / (4 * w)]
    else:
        a = i - 1
        b, c = (a + 1) % 3, (a + 2) % 3
        v = np.sqrt(1 + rot[a, a] - rot[b, b] - rot[c, c]) / 2
        q = np.zeros(4)
        q[0] = (rot[c, b] - rot[b, c]) / (4 * v)
        q[1 + a], q[1 + b], q[1 + c] = v, (rot[b, a] + rot[a, b]) / (4 * v), (rot[c, a] + rot[a, c]) / (4 * v)
    return np.asarray(q, np.float64)


def vp3d_load(path_3d, path_2d, cameras):
    """A faithful minimal re-implementation of VideoPose3D's loading path (facebookresearch/VideoPose3D,
    common/h36m_dataset.py ``Human36mDataset`` and common/mocap_dataset.py, then run.py from "Loading
    dataset" to the screen normalisation, with common/camera.py's ``world_to_camera`` and
    ``normalize_screen_coordinates``), written here from reading that code.

    ``cameras``: {subject: [4 dicts with orientation (camera -> world quaternion), translation (mm),
    res_w, res_h]} in VideoPose3D's camera order. Both files are read with ``np.load(allow_pickle=True)``
    as VideoPose3D does (the test wrote them itself). -> (keypoints normalised, positions_3d, symmetry).
    """
    # Human36mDataset.__init__: translations mm -> m, the 17 joints kept
    cams = {s: [dict(c, translation=np.asarray(c["translation"], np.float32) / 1000) for c in cs]
            for s, cs in cameras.items()}
    data = np.load(path_3d, allow_pickle=True)["positions_3d"].item()
    removed = [4, 5, 9, 10, 11, 16, 20, 21, 22, 23, 24, 28, 29, 30, 31]
    kept = [j for j in range(32) if j not in removed]
    dataset = {s: {a: {"positions": p[:, kept], "cameras": cams[s]} for a, p in acts.items()}
               for s, acts in data.items()}
    # run.py: world_to_camera per camera, global offset removed but the trajectory kept in joint 0
    for subject, acts in dataset.items():
        for anim in acts.values():
            positions_3d = []
            for cam in anim["cameras"]:
                q = np.asarray(cam["orientation"], np.float64)
                q_inv = np.concatenate([q[:1], -q[1:]])
                x = anim["positions"] - cam["translation"]
                pos_3d = _qrot(np.broadcast_to(q_inv, x.shape[:-1] + (4,)), x)
                pos_3d[:, 1:] -= pos_3d[:, :1]
                positions_3d.append(pos_3d)
            anim["positions_3d"] = positions_3d
    keypoints = np.load(path_2d, allow_pickle=True)
    symmetry = keypoints["metadata"].item()["keypoints_symmetry"]
    keypoints = keypoints["positions_2d"].item()
    for subject, acts in dataset.items():
        assert subject in keypoints, f"Subject {subject} is missing from the 2D detections dataset"
        for action in acts:
            assert action in keypoints[subject], f"Action {action} of subject {subject} is missing"
            for cam_idx in range(len(keypoints[subject][action])):
                mocap_length = acts[action]["positions_3d"][cam_idx].shape[0]
                assert keypoints[subject][action][cam_idx].shape[0] >= mocap_length
                if keypoints[subject][action][cam_idx].shape[0] > mocap_length:
                    keypoints[subject][action][cam_idx] = keypoints[subject][action][cam_idx][:mocap_length]
            assert len(keypoints[subject][action]) == len(acts[action]["positions_3d"])
    for subject in keypoints:
        for action in keypoints[subject]:
            for cam_idx, kps in enumerate(keypoints[subject][action]):
                cam = cams[subject][cam_idx]
                kps[..., :2] = kps[..., :2] / cam["res_w"] * 2 - [1, cam["res_h"] / cam["res_w"]]
                keypoints[subject][action][cam_idx] = kps
    return keypoints, dataset, symmetry


def world_3d_file(path, arrays):
    """data_3d_h36m.npz of a prepared split: world metres (T, 32, 3) per recording from camera 0's rows
    (the 17 joints at their 32-joint places), and the VideoPose3D camera table of those cameras."""
    seq = vp3d.sequence_names("h36m", arrays["subject"], arrays["image"])
    cam_mm = (arrays["joints_3d"] + arrays["hip_camera"][:, None]).astype(np.float64) * 10.0
    R, T = arrays["cam_R"].astype(np.float64), arrays["cam_T"].astype(np.float64) * 10.0
    world_m = np.einsum("nji,nkj->nki", R, cam_mm - T[:, None]) / 1000.0          # R^T (X_cam - t)
    out, cameras = {}, {}
    for s, a in sorted(set(zip(arrays["subject"].tolist(), seq.tolist()))):
        rows = np.flatnonzero((arrays["subject"] == s) & (seq == a) & (arrays["camera"] == vp3d.VP3D_CAMERAS[0]))
        rows = rows[np.argsort(arrays["frame"][rows])]
        full = np.zeros((len(rows), 32, 3), np.float32)
        full[:, list(H36M32_TO_17)] = world_m[rows]
        out.setdefault(s, {})[a] = full
        table = []
        for c in vp3d.VP3D_CAMERAS:
            r = np.flatnonzero((arrays["subject"] == s) & (arrays["camera"] == c))[0]
            rot = R[r]                                      # world -> camera
            centre_mm = -rot.T @ T[r]
            w, h = H36M_IMAGE_SIZE[c]
            table.append({"orientation": _quaternion(rot.T), "translation": centre_mm, "res_w": w, "res_h": h})
        cameras[s] = table
    np.savez_compressed(path, positions_3d=out)
    return cameras


def gt_file(path, arrays, dataset="h36m"):
    """The split's ground-truth 2D as VideoPose3D's file (what data_2d_h36m_gt.npz is to VideoPose3D)."""
    seq = vp3d.sequence_names(dataset, arrays["subject"], arrays["image"])
    arranged = vp3d.arrange(arrays["joints_2d"], arrays["subject"], seq, arrays["camera"], arrays["frame"],
                            vp3d.VP3D_CAMERAS, True)
    vp3d.write_npz(path, positions_2d=arranged.positions, metadata=vp3d.metadata_for("h36m"))
    return path


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("detections")
    data = make_tiny_h36m(base / "data", seed=5, frames_per_seq=4)
    common = ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(base / "out"), "USE_CUDA", "False",
              "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "2"]
    stats = idx.load_stats(data)
    plain = list(common)                    # without the lifter weights
    torch.manual_seed(0)
    for name in ("sb", "videopose"):
        lifter = model_3d.build_lifter(name, 17, stats=stats if name == "sb" else None)
        model_3d.save_lifter_checkpoint(base / f"{name}.pth", lifter, name=name, num_joints=17, dataset="h36m")
        common += [f"MODEL_3D.WEIGHTS.{name.upper()}", str(base / f"{name}.pth")]
    run = Path(train_hrnet.main(["--cfg", CFG, "--epochs", "0"] + common)["run_dir"])   # a (briefly) trained detector
    return {"base": base, "data": data, "common": common, "plain": plain, "ckpt": run / "model_best.pth"}


def _cfg(env, *opts):
    from lib.config import load_cfg
    cfg = load_cfg(CFG, env["common"] + ["MODEL_3D.NAMES", "['sb', 'videopose']"] + list(opts))
    cfg.freeze()
    return cfg


# ----------------------------------------------------------------------------- export
def test_export_loads_in_videopose3d_and_equals_validation_predictions(env):
    out = env["base"] / "data_2d_h36m_demo.npz"
    summary = export_detections.main(["--cfg", CFG, "--model_file", str(env["ckpt"]), "--out", str(out)]
                                     + env["common"])
    assert summary["every_frame"] and summary["subjects"] == ["S9"] and summary["layout"] == "h36m"
    _info, arrays = idx.load_split(env["data"], "valid", "h36m")
    cameras = world_3d_file(env["base"] / "data_3d_h36m.npz", arrays)
    keypoints, dataset, symmetry = vp3d_load(env["base"] / "data_3d_h36m.npz", out, cameras)
    assert symmetry == [[4, 5, 6, 11, 12, 13], [1, 2, 3, 14, 15, 16]]
    action = vp3d.vp3d_action("S9", arrays["image"][0].split("/")[1])
    assert list(keypoints["S9"]) == [action] and " " in action           # e.g. "Phoning 1": the CDF name
    # the loader's camera-frame 3D is the prepared one (root-relative, metres)
    pos = dataset["S9"][action]["positions_3d"]
    for ci, cam in enumerate(vp3d.VP3D_CAMERAS):
        rows = np.flatnonzero(arrays["camera"] == cam)
        rows = rows[np.argsort(arrays["frame"][rows])]
        np.testing.assert_allclose(pos[ci][:, 1:], arrays["joints_3d"][rows][:, 1:] / 100.0, atol=1e-4)
    # its normalised 2D is validation's prediction of the same frames, normalised with the camera resolution
    cfg = _cfg(env)
    context = evaluation_context(cfg)
    res = evaluate_checkpoint(cfg, env["ckpt"], context=context, return_predictions=True)
    pred, base = res["pred_2d"], context.dataset
    assert pred.shape == (len(base), 17, 2)
    for i in range(len(base)):
        ci = vp3d.VP3D_CAMERAS.index(base.cameras[i])
        w, h = H36M_IMAGE_SIZE[base.cameras[i]]
        expected = pred[i] / w * 2 - np.array([1, h / w])
        np.testing.assert_allclose(keypoints["S9"][action][ci][base.frames[i] - 1], expected, atol=1e-6)


def test_importing_the_export_scores_as_the_detector_and_gt_as_gt(env, capsys):
    common = env["common"] + ["--model_3d", "sb,videopose"]
    out = env["base"] / "data_2d_h36m_val.npz"
    export_detections.main(["--cfg", CFG, "--model_file", str(env["ckpt"]), "--out", str(out), "--confidence"]
                           + env["common"])
    assert vp3d.read_detections(out).channels == 3
    det = valid_hrnet.main(["--cfg", CFG, "--model_dir", str(env["ckpt"].parent)] + common)
    imp = valid_hrnet.main(["--cfg", CFG, "--detections", str(out), "--model_dir", str(env["base"] / "imp")] + common)
    for key in ("mpjpe", "p_mpjpe", "pdj"):
        assert imp[key] == pytest.approx(det[key], rel=1e-5), key
    # ground-truth 2D in VideoPose3D's file gives --gt's numbers exactly
    _info, arrays = idx.load_split(env["data"], "valid", "h36m")
    gt = gt_file(env["base"] / "data_2d_h36m_gt.npz", arrays)
    by_gt = valid_hrnet.main(["--cfg", CFG, "--gt", "--model_dir", str(env["base"] / "gt")] + common)
    by_file = valid_hrnet.main(["--cfg", CFG, "--detections", str(gt), "--model_dir", str(env["base"] / "g")] + common)
    for key in ("mpjpe", "p_mpjpe", "pdj"):
        assert by_file[key] == by_gt[key], key
    assert by_file["per_lifter"] == by_gt["per_lifter"]
    on_disk = json.loads((env["base"] / "g" / "metrics.json").read_text())
    assert on_disk["detections"] == str(gt) and on_disk["protocol"]["average"] == "frame"
    valid_hrnet.main(["--cfg", CFG, "--detections", str(gt), "--model_dir", str(env["base"] / "a")] + common
                     + ["TEST.PROTOCOL.AVERAGE", "action", "TEST.PROTOCOL.FLIP", "True", "TEST.PROTOCOL.N_MPJPE", "True"])
    on_disk = json.loads((env["base"] / "a" / "metrics.json").read_text())
    assert on_disk["protocol"]["average"] == "action" and on_disk["protocol"]["flip"] is True
    assert on_disk["protocol"]["metrics"] == ["mpjpe", "p_mpjpe", "n_mpjpe"] and on_disk["n_mpjpe"] > 0


def test_export_needs_every_frame_or_lists_the_kept_ones(env, tmp_path):
    _info, arrays = idx.load_split(env["data"], "valid", "h36m")
    seq = vp3d.sequence_names("h36m", arrays["subject"], arrays["image"])
    half = arrays["frame"] % 2 == 1                                      # an interval-2 preparation: 1, 3
    args = (arrays["joints_2d"][half], arrays["subject"][half], seq[half], arrays["camera"][half],
            arrays["frame"][half])
    strict = vp3d.arrange(*args, vp3d.VP3D_CAMERAS, True)
    assert len(strict.gaps) == 4 and "not every frame from 1" in strict.gaps[0]
    kept = vp3d.arrange(*args, vp3d.VP3D_CAMERAS, False)
    path = vp3d.write_npz(tmp_path / "kept.npz", positions_2d=kept.positions,
                          metadata=vp3d.metadata_for("h36m", frames=kept.frames, cameras=list(vp3d.VP3D_CAMERAS)))
    det = vp3d.read_detections(path)
    got, found = vp3d.rows_2d(det, "h36m", arrays["subject"], seq, arrays["camera"], arrays["frame"])
    assert (found == half).all()
    np.testing.assert_array_equal(got[half], arrays["joints_2d"][half])
    assert np.isnan(got[~half]).all()
    # the pipeline's choice: every frame when the split has them, else the kept frames
    from types import SimpleNamespace
    from lib.apps.detections import write_export
    base = SimpleNamespace(subjects=arrays["subject"], images=arrays["image"], cameras=arrays["camera"],
                           frames=arrays["frame"], width=arrays["width"], height=arrays["height"])
    cfg = get_cfg()
    auto = write_export(cfg, tmp_path / "auto.npz", arrays["joints_2d"][half], base, np.flatnonzero(half),
                        every_frame=None)
    full = write_export(cfg, tmp_path / "full.npz", arrays["joints_2d"], base, np.arange(len(half)), every_frame=None)
    assert auto["every_frame"] is False and full["every_frame"] is True
    assert vp3d.read_detections(tmp_path / "auto.npz").frames is not None
    with pytest.raises(vp3d.DetectionsFileError, match="--kept_frames"):
        write_export(cfg, tmp_path / "no.npz", arrays["joints_2d"][half], base, np.flatnonzero(half))
    # through the command: one clear line naming the fix
    other = make_tiny_h36m(tmp_path / "data", seed=5, frames_per_seq=4)
    from run import prepare_h36m
    prepare_h36m.main(["--src", str(other), "--dst", str(other), "--valid-interval", "2", "--train-interval", "1",
                       "--no-check-images", "--force"])
    argv = ["--cfg", CFG, "--model_file", str(env["ckpt"]), "--out", str(tmp_path / "x.npz"), "DATASET.ROOT",
            str(other), "USE_CUDA", "False"]
    assert run_cli(export_detections.main, argv) == 2
    assert not (tmp_path / "x.npz").exists()
    summary = export_detections.main(argv[:6] + ["--kept_frames"] + argv[6:])
    assert summary["every_frame"] is False and summary["rows"] == 8


def test_panoptic_sibling_lists_cameras_and_frames(tmp_path):
    class Rows:                                  # the columns of a prepared Panoptic split
        subjects = np.array(["171204_pose1"] * 4 + ["171204_pose2"] * 2)
        images = np.array([f"x/{i}.jpg" for i in range(6)])
        cameras = np.array(["00_06", "00_03", "00_06", "00_03", "00_03", "00_03"])
        frames = np.array([30, 15, 15, 30, 45, 60])
        width, height = np.full(6, 1920), np.full(6, 1080)
    cfg = get_cfg()
    cfg.DATASET.DATASET = "panoptic"
    from lib.apps.detections import write_export
    poses = np.arange(6 * 15 * 2, dtype=np.float32).reshape(6, 15, 2)
    summary = write_export(cfg, tmp_path / "p.npz", poses, Rows, np.arange(6))
    assert summary["layout"] == "panoptic15" and summary["every_frame"] is False
    det = vp3d.read_detections(tmp_path / "p.npz")
    assert det.cameras == ("00_03", "00_06") and det.layout == "panoptic15"
    cams = det.positions["171204_pose1"]["panoptic"]
    np.testing.assert_array_equal(cams[0], poses[[1, 3]])                # 00_03: frames 15, 30 in order
    np.testing.assert_array_equal(cams[1], poses[[2, 0]])                # 00_06: frames 15, 30 in order
    assert det.positions["171204_pose2"]["panoptic"][1].shape == (0, 15, 2)
    assert det.frames["171204_pose1"]["panoptic"][1].tolist() == [15, 30]
    got, found = vp3d.rows_2d(det, "panoptic", Rows.subjects, np.full(6, "panoptic"), Rows.cameras, Rows.frames)
    assert found.all()
    np.testing.assert_array_equal(got, poses)


# ----------------------------------------------------------------------------- layouts, untrusted files, names
def test_coco_layout_is_converted_by_the_table(tmp_path):
    rng = np.random.default_rng(0)
    coco = rng.uniform(0, 1000, (5, 17, 3)).astype(np.float32)
    path = vp3d.write_npz(tmp_path / "coco.npz", positions_2d={"S9": {"Walking": [coco] * 4}},
                          metadata={"layout_name": "coco", "num_joints": 17,
                                    "keypoints_symmetry": [[1, 3, 5, 7, 9, 11, 13, 15], [2, 4, 6, 8, 10, 12, 14, 16]]})
    det = vp3d.read_detections(path)
    got, found = vp3d.rows_2d(det, "h36m", ["S9"] * 5, ["Walking"] * 5, ["54138969"] * 5, np.arange(1, 6))
    assert found.all() and got.shape == (5, 17, 3)
    c = coco.astype(np.float64)
    by_hand = {0: (c[:, 11] + c[:, 12]) / 2, 1: c[:, 12], 3: c[:, 16], 4: c[:, 11],
               7: (c[:, 5] + c[:, 6] + c[:, 11] + c[:, 12]) / 4, 8: (c[:, 5] + c[:, 6]) / 2, 9: c[:, 0],
               10: (c[:, 1] + c[:, 2]) / 2, 11: c[:, 5], 13: c[:, 9], 16: c[:, 10]}
    for joint, value in by_hand.items():
        np.testing.assert_allclose(got[:, joint], value, rtol=1e-6, err_msg=str(joint))


def test_unknown_layouts_and_bad_shapes_are_refused_in_one_line(tmp_path, capsys):
    mpii = vp3d.write_npz(tmp_path / "mpii.npz", positions_2d={"S9": {"Walking": [np.zeros((2, 16, 2))] * 4}},
                          metadata={"layout_name": "mpii", "num_joints": 16, "keypoints_symmetry": [[3], [0]]})
    with pytest.raises(vp3d.DetectionsFileError, match="layout 'mpii' is not read here"):
        vp3d.read_detections(mpii)
    wrong = vp3d.write_npz(tmp_path / "wrong.npz", positions_2d={"S9": {"Walking": [np.zeros((2, 15, 2))] * 4}},
                           metadata=vp3d.metadata_for("h36m"))
    assert run_cli(valid_hrnet.main, ["--cfg", CFG, "--detections", str(wrong), "--model_3d", "sb",
                                      "USE_CUDA", "False"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected (T, 17, 2 or 3)" in err[0]
    panoptic = np.zeros((2, 15, 2), np.float32)
    det = vp3d.Detections(Path("p.npz"), {"a": {"panoptic": [panoptic]}}, "panoptic15", ("00_03",))
    with pytest.raises(vp3d.DetectionsFileError, match="only 'coco' -> 'h36m'"):
        vp3d.rows_2d(det, "h36m", ["a"], ["panoptic"], ["00_03"], [1])


class _Payload:
    """Unpickling this runs ``exec`` (writes a marker file): a data file carrying code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_file_carrying_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "evil.npz"
    header = {"descr": "|O", "fortran_order": False, "shape": ()}
    with zipfile.ZipFile(path, "w") as zf:
        with zf.open("positions_2d.npy", "w") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            fh.write(pickle.dumps(_Payload(marker), protocol=3))
    with pytest.raises(UntrustedFileError, match="would run code"):
        vp3d.read_detections(path)
    assert run_cli(valid_hrnet.main, ["--cfg", CFG, "--detections", str(path), "--model_3d", "sb",
                                      "USE_CUDA", "False"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "builtins.exec" in err[0] and "--trust" in err[0]
    assert not marker.exists()


def test_action_names_follow_the_cdf_files():
    assert vp3d.vp3d_action("S9", "TakingPhoto-1") == "Photo 1"
    assert vp3d.vp3d_action("S9", "WalkingDog-2") == "WalkDog"
    assert vp3d.vp3d_action("S1", "Eating-1") == "Eating 2"                # S1's first Eating is "Eating 2"
    assert vp3d.vp3d_action("S11", "Directions-2") == "Directions"         # the recording VideoPose3D drops
    assert vp3d.vp3d_action("S5", "WalkDog 1") == "WalkDog 1"              # already a CDF name
    assert vp3d.vp3d_action("S6", "TakingPhoto") == "Photo"
    assert vp3d.canonical_action("WalkTogether 1") == "WalkingTogether"
    # S2, S3, S4, S10: filmed, never released (the synthetic benchmark's extra test people)
    assert vp3d.vp3d_action("S2", "Directions-1") == "Directions 1"
    assert vp3d.vp3d_action("S10", "TakingPhoto-2") == "Photo 2"
    for subject, folder in (("S12", "Directions-1"), ("S2", "Directions-3"), ("S1", "Directions-3")):
        with pytest.raises(vp3d.DetectionsFileError, match="no CDF name"):
            vp3d.vp3d_action(subject, folder)
    # every subject's 30 recordings have 30 distinct names
    for subject in ("S1", "S5", "S6", "S7", "S8", "S9", "S11"):
        names = {vp3d.vp3d_action(subject, f"{a}-{k}") for a in vp3d._CDF[subject] for k in (1, 2)}
        assert len(names) == 30, subject


# ----------------------------------------------------------------------------- 3D from VideoPose3D's file
def test_data_3d_import_checks_lengths_trims_and_uses_the_shipped_calibration(tmp_path, env):
    rng = np.random.default_rng(1)
    world = (rng.normal(0, 0.3, (6, 32, 3)) + np.array([0.0, 0.0, 1.0])).astype(np.float32)   # metres
    cams = load_h36m_cameras()["S9"]
    views = []
    for c in vp3d.VP3D_CAMERAS:
        cam = cams[c]
        xc = (world.astype(np.float64) - cam["T"]) @ cam["R"].T
        uv = project_h36m(xc, cam["f"], cam["c"], cam["k"], cam["p"])[:, list(H36M32_TO_17)]
        views.append(np.concatenate([uv, np.zeros((2, 17, 2))]).astype(np.float32))   # 2 extra video frames
    vp3d.write_npz(tmp_path / "d3.npz", positions_3d={"S9": {"Walking 1": world}})
    vp3d.write_npz(tmp_path / "d2.npz", positions_2d={"S9": {"Walking 1": views}}, metadata=vp3d.metadata_for("h36m"))
    det = vp3d.read_detections(tmp_path / "d2.npz")
    a = vp3d.vp3d_split(det, vp3d.read_data_3d(tmp_path / "d3.npz"), ["S9"])
    assert len(a["pred_2d"]) == 6 * 4 and set(a["action"].tolist()) == {"Walking"}
    np.testing.assert_allclose(a["pred_2d"], a["joints_2d"], atol=1e-3)     # trimmed to the 6 mocap frames
    cam = cams["55011271"]
    xc = (world.astype(np.float64) - cam["T"]) @ cam["R"].T * 100.0
    xc = xc[:, list(H36M32_TO_17)]
    rows = a["camera"] == "55011271"
    np.testing.assert_allclose(a["joints_3d"][rows], xc - xc[:, :1], atol=1e-3)
    assert (a["width"][rows] == 1000).all() and (a["height"][a["camera"] == "54138969"] == 1002).all()
    short = [v[:5] for v in views]
    vp3d.write_npz(tmp_path / "short.npz", positions_2d={"S9": {"Walking 1": short}},
                   metadata=vp3d.metadata_for("h36m"))
    with pytest.raises(vp3d.DetectionsFileError, match="5 2D frames < 6 mocap frames"):
        vp3d.vp3d_split(vp3d.read_detections(tmp_path / "short.npz"), vp3d.read_data_3d(tmp_path / "d3.npz"), ["S9"])
    # through the command: the projected ground truth scores PDJ 100 %
    out = valid_hrnet.main(["--cfg", CFG, "--detections", str(tmp_path / "d2.npz"), "--data_3d",
                            str(tmp_path / "d3.npz"), "--model_3d", "videopose", "--model_dir", str(tmp_path / "m")]
                           + env["common"])
    assert out["pdj"] == 100.0 and out["num_samples"] == 24 and out["data_3d"] == str(tmp_path / "d3.npz")


# ----------------------------------------------------------------------------- lifters trained on detections
def test_lifter_trains_on_a_detection_file(env):
    out = env["base"] / "all.npz"
    export_detections.main(["--cfg", CFG, "--model_file", str(env["ckpt"]), "--out", str(out), "--subjects", "S1,S9"]
                           + env["common"])
    cfg = _cfg(env, "LIFTER_TRAIN.DETECTIONS", str(out))
    from lib.engine.lifter_trainer import _load_data
    data = _load_data(cfg, "sb", model_3d.get_spec("sb"), torch.device("cpu"), log=_Log())
    det = vp3d.read_detections(out)
    _info, train = idx.load_split(env["data"], "train", "h36m")
    seq = vp3d.sequence_names("h36m", train["subject"], train["image"])
    want, found = vp3d.rows_2d(det, "h36m", train["subject"], seq, train["camera"], train["frame"])
    assert found.all()
    np.testing.assert_array_equal(data.x_tr.numpy(), want)
    assert not np.allclose(want, train["joints_2d"])                      # not the ground truth
    np.testing.assert_allclose(data.stats["mean_2d"], want.astype(np.float64).mean(axis=0), rtol=1e-5)
    res = train_lifter.main(["--cfg", CFG, "--model_3d", "sb", "--detections", str(out), "--epochs", "1",
                             "--weights", str(env["base"] / "sb_det.pth")] + env["plain"])
    saved = torch.load(env["base"] / "sb_det.pth", weights_only=True)
    np.testing.assert_allclose(np.asarray(saved["stats"]["mean_2d"]), data.stats["mean_2d"], rtol=1e-6)
    assert res["best"]["epoch"] == 0


class _Log:
    def __init__(self):
        self.lines = []

    def info(self, msg, *args):
        self.lines.append(msg % args)


# ----------------------------------------------------------------------------- protocols
class _FakeLifter(torch.nn.Module):
    """A lifter with a known, asymmetric answer (metres): joint j of sample n -> (x/w, y/w * 0.5 + x/(2w), 0.1 j)."""
    normalization = "screen"

    def forward(self, pose_2d_px, image_size):
        w = image_size[:, None, :1].to(pose_2d_px.dtype)
        x, y = pose_2d_px[..., 0:1] / w, pose_2d_px[..., 1:2] / w
        z = 0.1 * torch.arange(pose_2d_px.shape[1], dtype=pose_2d_px.dtype)[None, :, None].expand_as(x)
        return torch.cat([x, 0.5 * y + 0.5 * x, z], dim=-1)


def _fake(pose, w):
    x, y = pose[..., 0] / w[:, None], pose[..., 1] / w[:, None]
    z = 0.1 * np.broadcast_to(np.arange(pose.shape[1]), x.shape)
    return np.stack([x, 0.5 * y + 0.5 * x, z], -1)


def _protocol_arrays(n=12):
    rng = np.random.default_rng(3)
    return {"joints_2d": rng.uniform(100, 900, (n, 17, 2)).astype(np.float32),
            "joints_3d": rng.normal(0, 30, (n, 17, 3)).astype(np.float32),
            "width": np.full(n, 1000), "height": np.full(n, 1002),
            "action": np.array(["Walking"] * 3 + ["Eating"] * 9), "subject": np.array(["S9"] * 6 + ["S11"] * 6),
            "frame": np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 4, 5, 6]),
            "sequence": np.array(["Walking 1"] * 3 + ["Eating"] * 3 + ["Directions"] * 6)}


def _run(arrays, pred, **protocol):
    cfg = get_cfg()
    for k, v in protocol.items():
        cfg.TEST.PROTOCOL[k.upper()] = v
    cfg.TEST.BATCH_SIZE_PER_GPU = 5
    return validate_arrays(cfg, arrays, pred, torch.device("cpu"), {"fake": _FakeLifter()})


def _errors_by_hand(arrays, pred, flip=False):
    """float64 per-sample MPJPE (mm) of the fake lifter, with VideoPose3D's flip done step by step."""
    w = arrays["width"].astype(np.float64)
    out = _fake(pred.astype(np.float64), w)
    if flip:
        perm = list(range(17))
        for a, b in H36M.flip_pairs:
            perm[a], perm[b] = b, a
        mirrored = pred.astype(np.float64)[:, perm]
        mirrored[..., 0] = w[:, None] - mirrored[..., 0]
        back = _fake(mirrored, w)[:, perm]
        back[..., 0] *= -1
        out = (out + back) / 2
    pred_mm, gt_mm = out * 1000.0, arrays["joints_3d"].astype(np.float64) * 10.0
    return pred_mm, gt_mm, np.linalg.norm(pred_mm - gt_mm, axis=-1).mean(-1)


def test_protocol_defaults_are_the_originals_and_recorded():
    cfg = get_cfg()
    p = protocols.protocol_from_cfg(cfg)
    assert p == protocols.Protocol() and not p.selects_frames
    assert p.describe() == {"average": "frame", "interval": 0, "flip": False, "n_mpjpe": False,
                            "exclude_s11_directions": False, "metrics": ["mpjpe", "p_mpjpe"]}
    a = _protocol_arrays()
    pred = a["joints_2d"] + 3.0
    res = _run(a, pred)
    _, _, err = _errors_by_hand(a, pred)
    assert res["mpjpe"] == pytest.approx(err.mean(), rel=1e-5)
    assert res["protocol"]["samples_left_out"] == 0 and "n_mpjpe" not in res
    with pytest.raises(Exception, match="TEST.PROTOCOL.AVERAGE"):
        protocols.Protocol(average="subject")


def test_action_wise_average_is_the_mean_of_the_action_means():
    a = _protocol_arrays()
    pred = a["joints_2d"] - 5.0
    _, _, err = _errors_by_hand(a, pred)
    res = _run(a, pred, average="action")
    assert res["mpjpe"] == pytest.approx((err[:3].mean() + err[3:].mean()) / 2, rel=1e-5)   # 3 Walking, 9 Eating
    assert res["mpjpe"] != pytest.approx(err.mean(), rel=1e-3)
    assert res["per_lifter"]["fake"]["mpjpe"] == res["mpjpe"]
    with pytest.raises(Exception, match="needs an action for every sample"):
        protocols.average(torch.tensor([1.0, 2.0]), torch.tensor([0, -1]), "action", 15)


def test_interval_and_s11_directions_select_the_samples():
    a = _protocol_arrays()
    pred = a["joints_2d"] + 2.0
    _, _, err = _errors_by_hand(a, pred)
    every2 = _run(a, pred, interval=2)                   # frames 1, 3, 5
    keep = (a["frame"] - 1) % 2 == 0
    assert every2["num_samples"] == keep.sum() == 7 and every2["protocol"]["samples_left_out"] == 5
    assert every2["mpjpe"] == pytest.approx(err[keep].mean(), rel=1e-5)
    out = _run(a, pred, exclude_s11_directions=True)
    assert out["num_samples"] == 6 and out["mpjpe"] == pytest.approx(err[:6].mean(), rel=1e-5)
    both = _run(a, pred, exclude_s11_directions=True, interval=2)
    assert both["mpjpe"] == pytest.approx(err[:6][keep[:6]].mean(), rel=1e-5)


def test_lifter_flip_averages_the_unmirrored_prediction():
    a = _protocol_arrays()
    pred = a["joints_2d"] + 1.0
    _, _, plain = _errors_by_hand(a, pred)
    _, _, flipped = _errors_by_hand(a, pred, flip=True)
    res = _run(a, pred, flip=True)
    assert res["mpjpe"] == pytest.approx(flipped.mean(), rel=1e-5)
    assert abs(flipped.mean() - plain.mean()) > 1.0                      # the switch changes the number


def test_n_mpjpe_and_p_mpjpe_by_hand():
    a = _protocol_arrays()
    pred = a["joints_2d"] + 4.0
    pred_mm, gt_mm, _ = _errors_by_hand(a, pred)
    res = _run(a, pred, n_mpjpe=True)
    scale = (pred_mm * gt_mm).sum(axis=(1, 2)) / (pred_mm * pred_mm).sum(axis=(1, 2))
    n_err = np.linalg.norm(scale[:, None, None] * pred_mm - gt_mm, axis=-1).mean(-1)
    assert res["n_mpjpe"] == pytest.approx(n_err.mean(), rel=1e-5) and res["protocol"]["metrics"][-1] == "n_mpjpe"
    from conftest import ref_p_mpjpe_one
    assert res["p_mpjpe"] == pytest.approx(np.mean([ref_p_mpjpe_one(p, g) for p, g in zip(pred_mm, gt_mm)]), rel=1e-5)
    # a scaled copy has N-MPJPE 0
    g = torch.as_tensor(gt_mm)
    assert protocols.n_mpjpe_torch(1.7 * g, g).abs().max() < 1e-9


# ----------------------------------------------------------------------------- a user's video
def vp3d_load_custom(path_2d):
    """VideoPose3D's loading of a ``custom`` file (common/custom_dataset.py ``CustomDataset``, then the
    same run.py loop as for Human3.6M, where a recording without 3D is skipped before the length
    checks): the resolution of each video from ``metadata['video_metadata']`` normalises its 2D."""
    data = np.load(path_2d, allow_pickle=True)
    resolutions = data["metadata"].item()["video_metadata"]
    cameras = {video: [{"id": video, "res_w": res["w"], "res_h": res["h"]}] for video, res in resolutions.items()}
    dataset = {video: {"custom": {"cameras": cameras[video][0]}} for video in resolutions}
    keypoints = data["positions_2d"].item()
    for subject, acts in dataset.items():
        assert subject in keypoints
        for action in acts:
            assert action in keypoints[subject]
    for subject in keypoints:
        for action in keypoints[subject]:
            for cam_idx, kps in enumerate(keypoints[subject][action]):
                cam = cameras[subject][cam_idx]
                kps[..., :2] = kps[..., :2] / cam["res_w"] * 2 - [1, cam["res_h"] / cam["res_w"]]
    return keypoints, cameras


def test_infer_writes_videopose3d_custom_file(tmp_path):
    import cv2
    from run import infer
    from test_infer import make_run
    run = make_run(tmp_path / "run")
    rng = np.random.default_rng(2)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    for _ in range(5):
        writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    writer.release()
    summary = infer.main(["--run_dir", str(run), "--model_3d", "none", "--input", str(video), "--out",
                          str(tmp_path / "out"), "--gpu_id", "-1", "--no_images", "--export_custom", "mine",
                          "--export_confidence"])
    assert summary["custom"] == str(tmp_path / "out" / "data_2d_custom_mine.npz")
    pred = np.load(tmp_path / "out" / "predictions.npz", allow_pickle=False)
    keypoints, cameras = vp3d_load_custom(summary["custom"])
    assert list(keypoints) == ["clip.mp4"] and cameras["clip.mp4"][0]["res_w"] == 96
    kps = keypoints["clip.mp4"]["custom"][0]
    assert kps.shape == (5, 17, 3)
    np.testing.assert_allclose(kps[..., :2], pred["joints_2d_px"] / 96 * 2 - [1, 64 / 96], atol=1e-6)
    np.testing.assert_allclose(kps[..., 2], pred["confidence"], atol=1e-7)
    det = vp3d.read_detections(summary["custom"])
    assert det.layout == "h36m" and det.metadata["l2d"]["every_frame"]
