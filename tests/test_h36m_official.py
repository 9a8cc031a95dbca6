"""Human3.6M from the extracted official archives (CDF poses + mp4 videos), on small archives written
here in the official layout: the same index as the h36m-fetch path for the same frames, the faulty S11
video, video/pose length differences, a missing cdflib, and four real frames (skipped without the real
sample, docs/data.md#a-real-human36m-sample-for-the-tests)."""
import json
import re
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from lib.core.skeleton import H36M32_TO_17
from lib.datasets import h36m_official
from lib.datasets.cameras import load_h36m_cameras, project_h36m, world_to_camera
from lib.datasets.prepare_h36m import prepare_h36m
from lib.utils.errors import run_cli
from conftest import scaled_h36m_camera_json
from run import prepare_h36m as prepare_h36m_cli

cdflib = pytest.importorskip("cdflib")
from cdflib.cdfwrite import CDF as CDFWriter  # noqa: E402

SCALE = 0.2                 # videos are the Human3.6M frames shrunk to 200 x 200 px
CAMS = ("54138969", "55011271", "58860488", "60457274")


def _calibration(subjects):
    return scaled_h36m_camera_json(subjects, CAMS, SCALE)


def write_pose_cdf(path, pose):
    """A Human3.6M-style CDF: variable 'Pose', one record of T x (32*d) float32, as the archives hold it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = np.asarray(pose, np.float32).reshape(1, len(pose), -1)
    w = CDFWriter(str(path), cdf_spec={"Majority": "row_major"}, delete=True)
    w.write_var({"Variable": "Pose", "Data_Type": CDFWriter.CDF_FLOAT, "Num_Elements": 1, "Rec_Vary": True,
                 "Dim_Sizes": [flat.shape[1], flat.shape[2]]}, var_data=flat)
    w.close()


def _frame_image(uv, w, h, i):
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = (80 + 5 * i, 100, 120)
    for x, y in uv:
        cv2.circle(image, (int(round(x)), int(round(y))), 3, (255, 255, 255), -1)
    return image


def write_video(path, images):
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = images[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 50, (w, h))
    assert out.isOpened()
    for image in images:
        out.write(image)
    out.release()


def make_sources(root, recordings, frames=10, seed=0, mono=True, world=True, fetch=True, out_of_image=()):
    """The same synthetic recordings written as official archives (root/official) and, if ``fetch``,
    as an h36m-fetch folder (root/fetch) holding every frame.

    recordings: {(subject, archive name): h36m-fetch folder}; out_of_image: (subject, name, camera,
    frame) whose pelvis is moved left of the image in both. -> dict of what was written.
    """
    rng = np.random.default_rng(seed)
    subjects = sorted({s for s, _ in recordings})
    cam_json, cams = _calibration(subjects)
    off, fet = root / "official", root / "fetch"
    for base in (off, fet):
        base.mkdir(parents=True, exist_ok=True)
        (base / "camera_parameters.json").write_text(json.dumps(cam_json))
    written = {}
    for (subject, name), fetch_folder in recordings.items():
        world_mm = np.array([0.0, 0.0, 900.0]) + rng.normal(0, 250, (frames, 32, 3))
        world_mm = world_mm.astype(np.float32)
        if world:
            write_pose_cdf(off / subject / "MyPoseFeatures" / "D3_Positions" / f"{name}.cdf", world_mm)
        rows = {"pose/2d": [], "pose/3d": [], "camera": [], "frame": []}
        for c in CAMS:
            cam = cams[subject][c]
            # independent of the code under test: X_cam = R (X_world - T) in metres, the dataset's projection
            X_m = world_to_camera(world_mm.astype(np.float64) / 1000.0, cam["R"], cam["T"])
            cam_mm = (X_m * 1000.0).astype(np.float32)
            uv = project_h36m(X_m, cam["f"] * SCALE, cam["c"] * SCALE, cam["k"], cam["p"]).astype(np.float32)
            for (s, n, cc, fr) in out_of_image:
                if (s, n, cc) == (subject, name, c):
                    uv[fr - 1, 0] = (-5.0, 10.0)
            w, h = cam_json["intrinsics"][c]["width"], cam_json["intrinsics"][c]["height"]
            images = [_frame_image(uv[i], w, h, i) for i in range(frames)]
            write_pose_cdf(off / subject / "MyPoseFeatures" / "D2_Positions" / f"{name}.{c}.cdf", uv)
            if mono:
                write_pose_cdf(off / subject / "MyPoseFeatures" / "D3_Positions_mono" / f"{name}.{c}.cdf", cam_mm)
            write_video(off / subject / "Videos" / f"{name}.{c}.mp4", images)
            if fetch:
                for i, image in enumerate(images):
                    p = fet / "processed" / subject / fetch_folder / "imageSequence" / c / f"img_{i + 1:06d}.jpg"
                    p.parent.mkdir(parents=True, exist_ok=True)
                    cv2.imwrite(str(p), image)
            rows["pose/2d"].append(uv)
            rows["pose/3d"].append(cam_mm)
            rows["camera"].append(np.full(frames, int(c)))
            rows["frame"].append(np.arange(1, frames + 1))
        annot = {k: np.concatenate(v) for k, v in rows.items()}
        if fetch:
            seq = fet / "processed" / subject / fetch_folder
            with h5py.File(seq / "annot.h5", "w") as f:
                for k, v in annot.items():
                    f.create_dataset(k, data=v)
        written[(subject, name)] = dict(annot, world_mm=world_mm)
    return off, fet, written


def _load(dst, split):
    with np.load(dst / f"{split}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _prepare(src, dst, **kw):
    logs = []
    kw = {"train_interval": 3, "valid_interval": 4, "progress": False, "log": logs.append, **kw}
    info = prepare_h36m(src, dst, **kw)
    return info, "\n".join(logs)


def _sorted_rows(arrays, folder_of):
    """The split's rows ordered by (subject, recording, camera, frame), recordings named by folder_of."""
    folders = np.array([folder_of(p.split("/")[1]) for p in arrays["image"]])
    order = np.lexsort((arrays["frame"], arrays["camera"], folders, arrays["subject"]))
    return {k: v[order] for k, v in arrays.items()}, folders[order]


RECORDINGS = {("S1", "Directions 1"): "Directions-1", ("S1", "TakingPhoto"): "TakingPhoto-1",
              ("S9", "WalkDog 1"): "WalkingDog-1", ("S9", "Photo"): "TakingPhoto-2"}
TO_FETCH = {h36m_official.folder_name(n): f for (_, n), f in RECORDINGS.items()}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("h36m_official")
    off, fet, written = make_sources(root, RECORDINGS, out_of_image=[("S1", "Directions 1", CAMS[1], 4)])
    info_off, log_off = _prepare(off, root / "prep_official")
    info_fet, _ = _prepare(fet, root / "prep_fetch")
    return dict(root=root, off=off, fet=fet, written=written, info_off=info_off, log_off=log_off,
                info_fet=info_fet)


@pytest.mark.parametrize("split", ["train", "valid"])
def test_same_index_as_h36m_fetch(both, split):
    root = both["root"]
    a, fa = _sorted_rows(_load(root / "prep_official", split), lambda f: TO_FETCH[f])
    b, fb = _sorted_rows(_load(root / "prep_fetch", split), lambda f: f)
    assert len(a["image"]) == len(b["image"]) > 0
    assert (fa == fb).all()
    for k in a:
        if k == "image":
            continue
        assert a[k].dtype == b[k].dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # images: same camera and frame, the recording's folder named after the archive's file
    for pa, pb in zip(a["image"], b["image"]):
        sa, fo, _, ca, na = pa.split("/")
        sb, _, _, cb, nb = pb.split("/")
        assert (sa, ca, na) == (sb, cb, nb) and TO_FETCH[fo]
    assert both["info_off"]["counts"] == both["info_fet"]["counts"]
    ra, rb = both["info_off"]["report"]["splits"][split], both["info_fet"]["report"]["splits"][split]
    for k in ("rows", "sampled", "skipped_root_not_visible", "skipped_missing_image", "skipped_black_image", "kept"):
        assert ra[k] == rb[k], k
    assert both["info_off"]["report"]["layouts"] == ["official"]


def test_values_and_decoded_frames(both):
    """Index values against the written poses, and only the kept frames decoded, each the video's frame."""
    root, written = both["root"], both["written"]
    dst = root / "prep_official"
    info = json.loads((dst / "index.json").read_text())
    assert info["image_root"] == "images"
    train = _load(dst, "train")
    # S1: 2 recordings x 4 cameras x frames 1, 4, 7, 10 = 32 sampled, one pelvis outside the image
    assert len(train["image"]) == 31 and info["report"]["splits"]["train"]["skipped_root_not_visible"] == 1
    for i, rel in enumerate(train["image"]):
        subject, folder, _, cam, name = rel.split("/")
        arch = folder.replace("_", " ")
        a = written[(subject, arch)]
        row = np.flatnonzero((a["camera"] == int(cam)) & (a["frame"] == train["frame"][i]))[0]
        j3d_cm = a["pose/3d"][row][list(H36M32_TO_17)].astype(np.float64) / 10.0
        np.testing.assert_array_equal(train["joints_2d"][i], a["pose/2d"][row][list(H36M32_TO_17)])
        np.testing.assert_allclose(train["hip_camera"][i], j3d_cm[0], rtol=1e-6)
        np.testing.assert_allclose(train["joints_3d"][i], j3d_cm - j3d_cm[0], atol=1e-4)
        assert name == f"img_{train['frame'][i]:06d}.jpg"
    on_disk = {p.relative_to(dst / "images").as_posix() for p in (dst / "images").rglob("*.jpg")}
    assert on_disk == set(train["image"].tolist()) | set(_load(dst, "valid")["image"].tolist())
    assert info["report"]["splits"]["train"]["official"]["frames_written"] == 31
    # a decoded frame is the video's frame of that number (its background brightens frame by frame)
    rel = [r for r in train["image"] if r.endswith("img_000007.jpg")][0]
    image = cv2.imread(str(dst / "images" / rel))
    assert abs(int(np.median(image[..., 0])) - (80 + 5 * 6)) <= 3


def test_world_positions_through_the_calibration_match_mono(tmp_path, both):
    """Without D3_Positions_mono the world D3_Positions are moved into each camera with the extrinsics."""
    off, _, written = make_sources(tmp_path, {("S1", "Directions 1"): "Directions-1"}, mono=False, fetch=False)
    info, _ = _prepare(off, tmp_path / "prep", splits=["train"], train_interval=1)
    train = _load(tmp_path / "prep", "train")
    a = written[("S1", "Directions 1")]
    assert len(train["image"]) == 40
    for i in range(len(train["image"])):
        row = np.flatnonzero((a["camera"] == int(train["camera"][i])) & (a["frame"] == train["frame"][i]))[0]
        mono_cm = a["pose/3d"][row][list(H36M32_TO_17)].astype(np.float64) / 10.0
        np.testing.assert_allclose(train["hip_camera"][i], mono_cm[0], atol=1e-3)
        np.testing.assert_allclose(train["joints_3d"][i], mono_cm - mono_cm[0], atol=1e-3)
    assert info["report"]["splits"]["train"]["official"]["mono_vs_world_max_mm"] is None
    # with both present the index takes the mono file and the report says how far the two agree
    rep = both["info_off"]["report"]["splits"]["train"]["official"]
    assert rep["mono_vs_world_max_mm"] is not None and rep["mono_vs_world_max_mm"] < 0.01
    assert "D3_Positions_mono and D3_Positions through the calibration agree" in both["log_off"]


def test_mono_and_world_disagreeing_is_reported(tmp_path):
    off, _, written = make_sources(tmp_path, {("S1", "Walking 1"): "Walking-1"}, frames=4, fetch=False)
    shifted = written[("S1", "Walking 1")]["world_mm"] + np.array([0, 0, 30], np.float32)   # 30 mm higher
    write_pose_cdf(off / "S1" / "MyPoseFeatures" / "D3_Positions" / "Walking 1.cdf", shifted)
    info, log = _prepare(off, tmp_path / "prep", splits=["train"], train_interval=1)
    rep = info["report"]["splits"]["train"]["official"]
    # in camera c the shift is 30 R_c e_z: its largest component over the four cameras
    cams = load_h36m_cameras()["S1"]
    expected = max(30.0 * np.abs(cams[c]["R"][:, 2]).max() for c in CAMS)
    assert abs(rep["mono_vs_world_max_mm"] - expected) < 1e-2 and "DIFFER by more than 1 mm" in log


def test_faulty_s11_directions_video_is_skipped_and_reported(tmp_path):
    recs = {("S11", "Directions"): "Directions-2", ("S11", "Greeting"): "Greeting-1"}
    off, _, _ = make_sources(tmp_path, recs, frames=6, fetch=False)
    # the official release's S11 "Directions" video of camera 54138969 is corrupt; so is one more here
    (off / "S11" / "Videos" / "Directions.54138969.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x17" * 500)
    (off / "S11" / "Videos" / "Greeting.58860488.mp4").write_bytes(b"not a video at all" * 40)
    info, log = _prepare(off, tmp_path / "prep", splits=["valid"], valid_interval=1)
    valid = _load(tmp_path / "prep", "valid")
    by_rec = {}
    for rel, cam in zip(valid["image"].tolist(), valid["camera"].tolist()):
        by_rec.setdefault(rel.split("/")[1], set()).add(cam)
    assert by_rec == {"Directions": set(CAMS) - {"54138969"}, "Greeting": set(CAMS) - {"58860488"}}
    assert len(valid["image"]) == 2 * 3 * 6
    skipped = info["report"]["splits"]["valid"]["official"]["views_skipped"]
    assert len(skipped) == 2
    assert skipped[0].startswith("S11/Directions.54138969: video corrupt in the official release")
    assert skipped[1].startswith("S11/Greeting.58860488: the video cannot be decoded")
    assert "views skipped (2)" in log and "S11/Directions.54138969" in log
    assert not (tmp_path / "prep" / "images" / "S11" / "Directions" / "imageSequence" / "54138969").exists()


def test_length_mismatch_keeps_common_frames_and_reports(tmp_path):
    off, _, written = make_sources(tmp_path, {("S1", "Walking 1"): "Walking-1"}, frames=12, fetch=False)
    cam_json = json.loads((off / "camera_parameters.json").read_text())
    short, long_ = CAMS[0], CAMS[2]
    for cam, n in ((short, 9), (long_, 15)):
        w, h = cam_json["intrinsics"][cam]["width"], cam_json["intrinsics"][cam]["height"]
        write_video(off / "S1" / "Videos" / f"Walking 1.{cam}.mp4", [_frame_image([], w, h, i) for i in range(n)])
    info, log = _prepare(off, tmp_path / "prep", splits=["train"], train_interval=1)
    train = _load(tmp_path / "prep", "train")
    frames = {c: sorted(train["frame"][train["camera"] == c].tolist()) for c in CAMS}
    assert frames[short] == list(range(1, 10))
    assert all(frames[c] == list(range(1, 13)) for c in CAMS if c != short)
    lengths = info["report"]["splits"]["train"]["official"]["length_differences"]
    assert lengths == [f"S1/Walking 1.{short}: video 9 frames, 2D poses 12, 3D poses 12: kept the first 9",
                       f"S1/Walking 1.{long_}: video 15 frames, 2D poses 12, 3D poses 12: kept the first 12"]
    assert "different lengths, common frames kept (2)" in log
    # the kept rows hold the first frames' poses
    a = written[("S1", "Walking 1")]
    i = np.flatnonzero((train["camera"] == short) & (train["frame"] == 9))[0]
    row = np.flatnonzero((a["camera"] == int(short)) & (a["frame"] == 9))[0]
    np.testing.assert_array_equal(train["joints_2d"][i], a["pose/2d"][row][list(H36M32_TO_17)])


def test_rerun_noop_and_force_does_not_decode_again(tmp_path):
    off, _, _ = make_sources(tmp_path, {("S1", "Directions 1"): "Directions-1"}, frames=5, fetch=False)
    dst = tmp_path / "prep"
    info, _ = _prepare(off, dst, splits=["train"], train_interval=2)
    assert info["report"]["splits"]["train"]["official"]["frames_written"] == 4 * 3
    again, log = _prepare(off, dst, splits=["train"], train_interval=2)
    assert again["fingerprint"] == info["fingerprint"] and "up to date" in log
    forced, _ = _prepare(off, dst, splits=["train"], train_interval=2, force=True)
    assert forced["report"]["splits"]["train"]["official"]["frames_written"] == 0
    assert forced["counts"] == info["counts"]
    # a finer interval decodes only the frames not yet written
    finer, _ = _prepare(off, dst, splits=["train"], train_interval=1)
    assert finer["report"]["splits"]["train"]["official"]["frames_written"] == 4 * 2


def test_missing_cdflib_is_one_line(tmp_path, monkeypatch, capsys):
    off, fet, _ = make_sources(tmp_path, {("S1", "Directions 1"): "Directions-1"}, frames=3)
    monkeypatch.setitem(sys.modules, "cdflib", None)          # `import cdflib` now raises ImportError
    capsys.readouterr()
    rc = run_cli(prepare_h36m_cli.main, ["--src", str(off), "--dst", str(tmp_path / "o"), "--splits", "train"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1
    assert "cdflib" in err[0] and "pip install cdflib" in err[0] and "Directions 1" in err[0]
    with pytest.raises(h36m_official.MissingPackageError):
        h36m_official.import_cdflib("x")
    # the h36m-fetch path never needs it
    out = prepare_h36m_cli.main(["--src", str(fet), "--dst", str(tmp_path / "f"), "--splits", "train",
                                 "--train-interval", "1"])
    assert out["counts"]["train"] == 4 * 3


def test_bad_cdf_and_missing_files(tmp_path):
    off, _, _ = make_sources(tmp_path, {("S1", "Eating"): "Eating-1"}, frames=3, fetch=False)
    # a video missing and one view without 2D: skipped, reported
    (off / "S1" / "Videos" / f"Eating.{CAMS[3]}.mp4").unlink()
    (off / "S1" / "MyPoseFeatures" / "D2_Positions" / f"Eating.{CAMS[2]}.cdf").unlink()
    # and a video of another size than the calibration's (200 x 200 here)
    write_video(off / "S1" / "Videos" / f"Eating.{CAMS[1]}.mp4", [_frame_image([], 120, 100, i) for i in range(3)])
    info, _ = _prepare(off, tmp_path / "prep", splits=["train"], train_interval=1)
    skipped = info["report"]["splits"]["train"]["official"]["views_skipped"]
    assert [s.split(":")[0] for s in skipped] == [f"S1/Eating.{CAMS[i]}" for i in (1, 2, 3)]
    assert "the video is 120x100 but the calibration says 200x200" in skipped[0]
    assert "no 2D poses" in skipped[1] and "no video" in skipped[2] and "Videos_S1.tgz" in skipped[2]
    assert info["counts"]["train"] == 1 * 3
    # a broken CDF is one error naming the file and the archive to extract again
    (off / "S1" / "MyPoseFeatures" / "D2_Positions" / f"Eating.{CAMS[0]}.cdf").write_bytes(b"garbage" * 20)
    with pytest.raises(h36m_official.CorruptFileError, match=r"Eating\.54138969\.cdf.*Poses_D2_Positions_S1\.tgz"):
        _prepare(off, tmp_path / "prep2", splits=["train"])
    # poses only, no videos at all: the empty split says why
    write_pose_cdf(off / "S1" / "MyPoseFeatures" / "D2_Positions" / f"Eating.{CAMS[0]}.cdf",
                   np.zeros((3, 32, 2), np.float32))
    for p in (off / "S1" / "Videos").glob("*.mp4"):
        p.unlink()
    with pytest.raises(ValueError, match=r"split 'train' is empty: every view .* was skipped .*no video"):
        _prepare(off, tmp_path / "prep3", splits=["train"])


def test_layout_variants(tmp_path):
    """h36m-fetch's extracted/ folder names are read too; '_ALL' files are not recordings."""
    off, _, _ = make_sources(tmp_path, {("S5", "Discussion 2"): "Discussion-1"}, frames=3, fetch=False)
    ext = tmp_path / "h36m-fetch" / "extracted" / "S5"
    ext.mkdir(parents=True)
    for kind, new in (("D2_Positions", "Poses_D2_Positions"), ("D3_Positions", "Poses_D3_Positions"),
                      ("D3_Positions_mono", "Poses_D3_Positions_mono")):
        (off / "S5" / "MyPoseFeatures" / kind).rename(ext / new)
    (off / "S5" / "Videos").rename(ext / "Videos")
    write_pose_cdf(ext / "Poses_D2_Positions" / f"_ALL 1.{CAMS[0]}.cdf", np.zeros((3, 32, 2), np.float32))
    write_pose_cdf(ext / "Poses_D3_Positions" / "Sitting 1.cdf", np.zeros((3, 32, 3), np.float32))
    (ext.parent.parent / "camera_parameters.json").write_text((off / "camera_parameters.json").read_text())
    info, log = _prepare(tmp_path / "h36m-fetch", tmp_path / "prep", splits=["train"], train_interval=1)
    assert info["counts"]["train"] == 4 * 3
    assert info["report"]["ignored"] == ["S5/_ALL 1: not a recording (ignored)"]
    assert info["report"]["splits"]["train"]["official"]["views_skipped"] == [
        "S5/Sitting 1: world 3D poses only, no camera's 2D poses or video"]
    assert set(_load(tmp_path / "prep", "train")["action"].tolist()) == {"Discussion"}


def test_real_frames_through_world_positions(shared_data, tmp_path):
    """Four real frames: camera-frame 3D -> world with the shipped calibration (X = R^T X_cam + T) written
    as D3_Positions, the real 2D as D2_Positions, the real image as a one-frame video; preparation must
    give back the real camera-frame joints and 2D."""
    z = np.load(shared_data / "test_h36m_body3d.npz")
    cams = load_h36m_cameras()
    src = tmp_path / "official"
    expect = {}
    for name, part, S in zip(z["imgname"], z["part"], z["S"]):
        m = re.fullmatch(r"(S\d+)_(.+)\.(\d+)_(\d+)\.jpg", Path(str(name)).name)
        subject, rec, cam_id = m.group(1), m.group(2).replace("_", " "), m.group(3)
        cam = cams[subject][cam_id]
        cam_m = S[:, :3].astype(np.float64)
        world_mm = (cam_m @ cam["R"] + cam["T"]) * 1000.0                  # R^T X_cam + T, row vectors
        full_3d, full_2d = np.zeros((1, 32, 3)), np.zeros((1, 32, 2))
        full_3d[0, list(H36M32_TO_17)] = world_mm
        full_2d[0, list(H36M32_TO_17)] = part[:, :2]
        feat = src / subject / "MyPoseFeatures"
        write_pose_cdf(feat / "D3_Positions" / f"{rec}.cdf", full_3d)
        write_pose_cdf(feat / "D2_Positions" / f"{rec}.{cam_id}.cdf", full_2d)
        image = cv2.imread(str(shared_data / Path(str(name)).name))       # 1000 x 1000 or 1000 x 1002
        write_video(src / subject / "Videos" / f"{rec}.{cam_id}.mp4", [image])
        expect[subject] = (cam_m * 100.0, part[:, :2])
    info, _ = _prepare(src, tmp_path / "prep", splits=["train"], train_interval=1)
    train = _load(tmp_path / "prep", "train")
    assert sorted(train["subject"].tolist()) == ["S1", "S5", "S7", "S8"]
    for i, subject in enumerate(train["subject"]):
        j3d_cm, j2d = expect[subject]
        np.testing.assert_allclose(train["hip_camera"][i], j3d_cm[0], atol=1e-3)
        np.testing.assert_allclose(train["joints_3d"][i], j3d_cm - j3d_cm[0], atol=1e-3)
        np.testing.assert_allclose(train["joints_2d"][i], j2d, atol=1e-4)
    assert set(train["action"].tolist()) == {"Directions", "SittingDown", "Greeting", "WalkingDog"}
    assert info["report"]["splits"]["train"]["official"]["frames_written"] == 4
