"""Preparation (H36M, Panoptic), the versioned index, stats and the dataset pipeline on tiny fixtures
built inside the test (h36m-fetch / L2D / panoptic-toolbox layouts, images drawn with OpenCV)."""
import json
import logging
import pickle
import shutil

import cv2
import h5py
import numpy as np
import pytest
import torch

from benchmarks.reference import original_target
from lib.config import get_cfg
from lib.core.skeleton import H36M32_TO_17, H36M_ACTIONS
from lib.datasets import DATASETS, build_dataset, index as idx
from lib.datasets.cameras import load_h36m_cameras, project_h36m, world_to_camera
from conftest import scaled_h36m_camera_json
from lib.datasets.prepare_h36m import normalise_action, prepare_h36m
from lib.datasets.prepare_panoptic import prepare_panoptic
from run import prepare_h36m as prepare_h36m_cli

SCALE = 0.2                         # fixture images are the H36M frames shrunk to 200 px
CAMS = ("54138969", "55011271")
FRAMES = 6


def _scaled_cameras(subjects):
    return scaled_h36m_camera_json(subjects, CAMS, SCALE)


def _draw(path, uv, w, h, black=False):
    image = np.zeros((h, w, 3), np.uint8)
    if not black:
        image[:] = (90, 110, 130)
        for x, y in uv:
            cv2.circle(image, (int(round(x)), int(round(y))), 2, (255, 255, 255), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def make_h36m_tree(root, layout="fetch", seqs=None, seed=0):
    """Tiny Human3.6M source tree -> dict of what was written (rows per sequence)."""
    seqs = seqs or {"S1": ["Directions-1", "TakingPhoto-2"], "S9": ["WalkDog 1"]}
    rng = np.random.default_rng(seed)
    cam_json, cams = _scaled_cameras(sorted(seqs))
    data_dir = root / "processed" if layout == "fetch" else root
    data_dir.mkdir(parents=True, exist_ok=True)
    (root / "camera_parameters.json").write_text(json.dumps(cam_json))
    written = {}
    for subject, folders in seqs.items():
        for folder in folders:
            world_m = np.array([0.0, 0.0, 0.9]) + rng.normal(0, 0.25, (FRAMES, 32, 3))
            rows_2d, rows_3d, cam_col, frame_col = [], [], [], []
            for c in CAMS:
                cam = cams[subject][c]
                X_m = world_to_camera(world_m, cam["R"], cam["T"])
                uv = project_h36m(X_m, cam["f"] * SCALE, cam["c"] * SCALE, cam["k"], cam["p"])
                rows_2d.append(uv)
                rows_3d.append(X_m * 1000.0)
                cam_col += [int(c)] * FRAMES
                frame_col += list(range(1, FRAMES + 1))
                w, h = cam_json["intrinsics"][c]["width"], cam_json["intrinsics"][c]["height"]
                for i in range(FRAMES):
                    name = f"img_{i + 1:06d}.jpg" if layout == "fetch" else f"img_{i + 1:08d}.jpg"
                    _draw(data_dir / subject / folder / "imageSequence" / c / name, uv[i], w, h)
            annot = {"pose/2d": np.concatenate(rows_2d).astype(np.float32),
                     "pose/3d": np.concatenate(rows_3d).astype(np.float32),
                     "camera": np.array(cam_col), "frame": np.array(frame_col)}
            seq_dir = data_dir / subject / folder
            if layout == "fetch":
                with h5py.File(seq_dir / "annot.h5", "w") as f:
                    for k, v in annot.items():
                        f.create_dataset(k, data=v)
            else:
                with open(seq_dir / "annot.pkl", "wb") as fh:
                    pickle.dump(annot, fh)
            written[(subject, folder)] = annot
    return written, cam_json


def tiny_cfg(root, image_size=(96, 128), heatmap_size=(24, 32), sigma=1.0):
    cfg = get_cfg()
    cfg.DATASET.ROOT = str(root)
    cfg.MODEL.IMAGE_SIZE = list(image_size)
    cfg.MODEL.HEATMAP_SIZE = list(heatmap_size)
    cfg.MODEL.SIGMA = sigma
    return cfg


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("h36m")
    src = base / "fetch"
    written, cam_json = make_h36m_tree(src)
    # one black frame, one missing image, one row with the pelvis outside the image (S1 Directions-1)
    seq = src / "processed" / "S1" / "Directions-1"
    w, h = cam_json["intrinsics"][CAMS[0]]["width"], cam_json["intrinsics"][CAMS[0]]["height"]
    _draw(seq / "imageSequence" / CAMS[0] / "img_000003.jpg", [], w, h, black=True)
    (seq / "imageSequence" / CAMS[1] / "img_000005.jpg").unlink()
    annot = written[("S1", "Directions-1")]
    annot["pose/2d"][FRAMES + 0, 0] = (-5.0, 10.0)       # camera 2, frame 1: pelvis left of the image
    with h5py.File(seq / "annot.h5", "r+") as f:
        f["pose/2d"][...] = annot["pose/2d"]
    dst = base / "prepared"
    logs = []
    info = prepare_h36m(src, dst, train_interval=1, valid_interval=2, progress=False, log=logs.append)
    return dict(src=src, dst=dst, info=info, written=written, cam_json=cam_json, logs=logs)


def _load(dst, split):
    with np.load(dst / f"{split}.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_index_layout_and_values(prepared):
    dst, written, cam_json = prepared["dst"], prepared["written"], prepared["cam_json"]
    info = json.loads((dst / "index.json").read_text())
    assert info["format"] == idx.FORMAT and info["version"] == idx.FORMAT_VERSION
    assert info["dataset"] == "h36m" and info["num_joints"] == 17
    train = _load(dst, "train")
    assert set(train) == set(idx.SPLIT_KEYS)
    # train: 2 sequences x 2 cameras x 6 frames = 24 rows, minus root-out, black, missing
    assert len(train["image"]) == 24 - 3 == info["splits"]["train"]["count"]
    cams = load_h36m_cameras()
    for i in range(len(train["image"])):
        subject, folder, _, cam, name = train["image"][i].split("/")
        frame = int(name[4:10])
        assert train["frame"][i] == frame and train["camera"][i] == cam and train["subject"][i] == subject
        a = written[(subject, folder)]
        row = [r for r in range(len(a["camera"])) if str(a["camera"][r]) == cam and a["frame"][r] == frame][0]
        j2d = np.array([a["pose/2d"][row, k] for k in H36M32_TO_17])
        j3d_cm = np.array([a["pose/3d"][row, k] for k in H36M32_TO_17]) / 10.0
        np.testing.assert_allclose(train["joints_2d"][i], j2d, rtol=1e-6)
        np.testing.assert_allclose(train["hip_camera"][i], j3d_cm[0], rtol=1e-5)
        np.testing.assert_allclose(train["joints_3d"][i], j3d_cm - j3d_cm[0], atol=1e-4)
        W, H = cam_json["intrinsics"][cam]["width"], cam_json["intrinsics"][cam]["height"]
        assert (train["width"][i], train["height"][i]) == (W, H)
        for j in range(17):
            x, y = j2d[j]
            assert train["joints_vis"][i, j] == int(0 <= x < W and 0 <= y < H)
        np.testing.assert_allclose(train["cam_T"][i], cams[subject][cam]["t_mm"] / 10.0, rtol=1e-5)
        np.testing.assert_allclose(train["cam_K"][i, 0, 0], cams[subject][cam]["f"][0] * SCALE, rtol=1e-6)
        assert train["action"][i] == {"Directions-1": "Directions", "TakingPhoto-2": "TakingPhoto"}[folder]
    valid = _load(dst, "valid")
    # valid interval 2: frames 1, 3, 5 of each camera
    assert sorted(set(valid["frame"].tolist())) == [1, 3, 5] and len(valid["image"]) == 6
    assert set(valid["action"].tolist()) == {"WalkingDog"}


def test_report_counts_every_skip(prepared):
    rep = prepared["info"]["report"]["splits"]["train"]
    assert rep["skipped_root_not_visible"] == 1
    assert rep["skipped_black_image"] == 1
    assert rep["skipped_missing_image"] == 1
    assert rep["rows"] == 24 and rep["sampled"] == 24 and rep["kept"] == 21
    text = "\n".join(prepared["logs"])
    assert "missing_image" in text and "black_image" in text and "S1" in text and "Directions" in text


def test_stats_match_loop_definition(prepared):
    dst = prepared["dst"]
    train = _load(dst, "train")
    stats = idx.load_stats(dst)
    keep2d = []
    for i in range(len(train["image"])):        # slow reference of docs/differences.md
        W, H = train["width"][i], train["height"][i]
        if all(-200 < x < W + 200 and -200 < y < H + 200 for x, y in train["joints_2d"][i].astype(np.float64)):
            keep2d.append(train["joints_2d"][i].astype(np.float64))
    keep2d = np.array(keep2d)
    mean2d = keep2d.sum(0) / len(keep2d)
    std2d = np.sqrt(((keep2d - mean2d) ** 2).sum(0) / len(keep2d))
    j3d = train["joints_3d"].astype(np.float64)
    np.testing.assert_allclose(stats["mean_2d"], mean2d, rtol=1e-5)
    np.testing.assert_allclose(stats["std_2d"], std2d, rtol=1e-4)
    np.testing.assert_allclose(stats["mean_3d"], j3d.mean(0), atol=1e-4)
    np.testing.assert_allclose(stats["std_3d"], np.sqrt(((j3d - j3d.mean(0)) ** 2).mean(0)), atol=1e-4)
    assert stats["mean_2d"].shape == (17, 2) and stats["std_3d"].shape == (17, 3)


def test_rerun_is_noop_unless_force(prepared, capsys):
    dst = prepared["dst"]
    before = (dst / "train.npz").stat().st_mtime_ns
    # --src may be the folder holding processed/ or processed/ itself
    prepare_h36m_cli.main(["--src", str(prepared["src"] / "processed"), "--dst", str(dst),
                           "--train-interval", "1", "--valid-interval", "2"])
    assert "up to date" in capsys.readouterr().out
    assert (dst / "train.npz").stat().st_mtime_ns == before
    out = prepare_h36m_cli.main(["--src", str(prepared["src"]), "--dst", str(dst), "--train-interval", "1",
                                 "--valid-interval", "2", "--force", "--no-check-images"])
    assert out["report"]["splits"]["train"]["kept"] == 22           # black frame no longer detected
    prepare_h36m(prepared["src"], dst, train_interval=1, valid_interval=2, progress=False, log=lambda *_: None)


def test_l2d_layout_with_pickled_annotations(tmp_path):
    make_h36m_tree(tmp_path / "l2d", layout="l2d", seqs={"S5": ["Photo 1"], "S11": ["WalkTogether-1"]})
    info = prepare_h36m(tmp_path / "l2d", tmp_path / "out", train_interval=3, valid_interval=3,
                        progress=False, log=lambda *_: None)
    assert info["report"]["layouts"] == ["l2d"]
    train = _load(tmp_path / "out", "train")
    assert len(train["image"]) == 2 * 2 and train["image"][0].endswith("img_00000001.jpg")
    assert set(train["action"].tolist()) == {"TakingPhoto"}
    assert set(_load(tmp_path / "out", "valid")["action"].tolist()) == {"WalkingTogether"}


def test_action_names_normalised():
    assert normalise_action("TakingPhoto-1") == normalise_action("Photo 1") == "TakingPhoto"
    assert normalise_action("WalkDog_2") == normalise_action("WalkingDog-1") == "WalkingDog"
    assert normalise_action("WalkTogether") == "WalkingTogether"
    assert normalise_action("SittingDown 1") == "SittingDown" and normalise_action("Discussion-2") == "Discussion"
    assert all(normalise_action(a + "-1") == a for a in H36M_ACTIONS)
    assert normalise_action("Juggling-1") == ""


def test_errors_name_paths_and_commands(tmp_path, prepared):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_h36m(tmp_path / "nowhere", tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="annot.h5"):
        prepare_h36m(tmp_path, tmp_path / "o", progress=False)
    with pytest.raises(FileNotFoundError, match="nocam.json"):
        prepare_h36m(prepared["src"], tmp_path / "o", cameras=tmp_path / "nocam.json", progress=False)
    with pytest.raises(idx.DatasetIndexError, match="prepare_h36m.py"):
        idx.read_index(tmp_path / "absent")
    with pytest.raises(idx.DatasetIndexError, match=r"index.json not found.*prepare_h36m.py"):
        idx.read_index(tmp_path)
    with pytest.raises(idx.DatasetIndexError, match="no split 'test'"):
        idx.load_split(prepared["dst"], "test")
    cfg = tiny_cfg(prepared["dst"])
    cfg.DATASET.DATASET = "mpi_inf_3dhp"
    with pytest.raises(KeyError, match="h36m.*panoptic"):
        build_dataset(cfg, "train", True)


def test_empty_split_says_which_filter(tmp_path):
    make_h36m_tree(tmp_path / "a", seqs={"S1": ["Eating-1"]})
    with pytest.raises(ValueError, match=r"split 'valid' is empty: no subject folder \['S9', 'S11'\]"):
        prepare_h36m(tmp_path / "a", tmp_path / "o", progress=False, log=lambda *_: None)
    for p in (tmp_path / "a" / "processed").rglob("*.jpg"):
        p.unlink()
    with pytest.raises(ValueError, match="missing-image filter"):
        prepare_h36m(tmp_path / "a", tmp_path / "o", splits=["train"], progress=False, log=lambda *_: None)


def test_old_index_version_rejected_then_rebuilt(tmp_path, prepared):
    dst = tmp_path / "copy"
    shutil.copytree(prepared["dst"], dst)
    info = json.loads((dst / "index.json").read_text())
    info["version"] = 0
    (dst / "index.json").write_text(json.dumps(info))
    with pytest.raises(idx.DatasetIndexError, match=r"version 0.*--force"):
        build_dataset(tiny_cfg(dst), "train", True)
    logs = []
    prepare_h36m(prepared["src"], dst, train_interval=1, valid_interval=2, progress=False, log=logs.append)
    assert any("rebuilding" in line for line in logs)
    assert idx.read_index(dst)["version"] == idx.FORMAT_VERSION


def test_dataset_item_matches_hand_pipeline(prepared):
    cfg = tiny_cfg(prepared["dst"], sigma=2.0)
    ds = build_dataset(cfg, "train", is_train=True)
    assert type(ds) is DATASETS["h36m"] and len(ds) == 21 and ds.num_joints == 17
    assert ds.stats is not None and set(ds.stats) == set(idx.STATS_KEYS)
    train = _load(prepared["dst"], "train")
    for i in (0, 7, 20):
        image, target, weight, meta = ds[i]
        assert image.shape == (3, 128, 96) and image.dtype == torch.float32
        assert target.shape == (17, 32, 24) and weight.shape == (17, 1)
        j2d = train["joints_2d"][i].astype(np.float64)
        W, H = int(train["width"][i]), int(train["height"][i])
        xs, ys = [p[0] for p in j2d], [p[1] for p in j2d]
        w, h = max(xs) - min(xs), max(ys) - min(ys)
        x1, y1 = int(max(0, min(xs) - 0.075 * w)), int(max(0, min(ys) - 0.075 * h))
        x2, y2 = int(min(W, max(xs) + 0.075 * w)), int(min(H, max(ys) + 0.075 * h))
        bw, bh = x2 - x1, y2 - y1
        center = (x1 + bw / 2, y1 + bh / 2)
        if bw > 0.75 * bh:
            bh = bw / 0.75
        elif bw < 0.75 * bh:
            bw = bh * 0.75
        np.testing.assert_allclose(meta["center"], center, rtol=1e-6)
        np.testing.assert_allclose(meta["scale"], (bw / 200 * 1.25, bh / 200 * 1.25), rtol=1e-6)
        # crop of the original way: OpenCV 3-point solve, then ToTensor + Normalize
        from tests.test_transforms import hrnet_affine_reference
        M = hrnet_affine_reference(np.array(center), np.array(meta["scale"], np.float64), 0, (96, 128))
        bgr = cv2.imread(meta["image"])
        crop = cv2.warpAffine(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), M, (96, 128), flags=cv2.INTER_LINEAR)
        ref = (torch.from_numpy(crop).permute(2, 0, 1).float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) \
            / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        assert (image - ref).abs().mean() < 0.02
        joints_crop = np.array([M @ np.array([x, y, 1.0]) for x, y in j2d])
        t_ref, w_ref = original_target(joints_crop, train["joints_vis"][i], (96, 128), (24, 32), 2)
        np.testing.assert_allclose(target.numpy(), t_ref, atol=1e-6)
        np.testing.assert_array_equal(weight.numpy(), w_ref)
        assert meta["joints_2d_vis"].shape == (17, 2)
        np.testing.assert_array_equal(meta["joints_2d_vis"][:, 0], train["joints_vis"][i])
        np.testing.assert_allclose(meta["joints_3d"], train["joints_3d"][i])
        assert meta["image_size"].tolist() == [W, H] and meta["width"] == W and meta["height"] == H
        assert meta["action_idx"] == H36M_ACTIONS.index(meta["action"]) and meta["index"] == i


def test_default_collate_and_batch_of_one(prepared):
    ds = build_dataset(tiny_cfg(prepared["dst"]), "valid", is_train=False)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)
    images, targets, weights, meta = next(iter(loader))
    assert images.shape == (4, 3, 128, 96) and targets.shape == (4, 17, 32, 24) and weights.shape == (4, 17, 1)
    assert meta["center"].shape == (4, 2) and meta["joints_3d"].shape == (4, 17, 3)
    assert meta["image_size"].dtype == torch.float32 and meta["action_idx"].tolist() == [12] * 4
    assert isinstance(meta["subject"], list) and meta["subject"][0] == "S9"
    one = next(iter(torch.utils.data.DataLoader(ds, batch_size=1)))
    assert one[0].shape == (1, 3, 128, 96) and one[3]["joints_2d"].shape == (1, 17, 2)


def test_missing_image_at_train_time_is_replaced(prepared, tmp_path, caplog):
    dst = tmp_path / "p"
    shutil.copytree(prepared["dst"], dst)
    info = json.loads((dst / "index.json").read_text())
    info["image_root"] = str(tmp_path / "imgs")
    (dst / "index.json").write_text(json.dumps(info))
    shutil.copytree(prepared["src"] / "processed", tmp_path / "imgs")
    ds = build_dataset(tiny_cfg(dst), "train", is_train=True)
    ds.image_path(3).unlink()
    ds.image_path(4).write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING):
        items = [ds[3], ds[3], ds[4]]
    assert [m["index"] for *_, m in items] == [5, 5, 5]
    assert len([r for r in caplog.records if "unreadable or missing image" in r.getMessage()]) == 2
    assert ds.summary()["unreadable_images_seen"] == 2
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))   # a whole epoch, no crash
    assert batch[0].shape[0] == len(ds)


def test_augmentation_keeps_targets_on_the_joints(prepared):
    cfg = tiny_cfg(prepared["dst"])
    cfg.DATASET.AUGMENT = True
    cfg.DATASET.ROT_FACTOR = 0          # without rotation the affine follows from meta centre/scale
    cfg.DATASET.PROB_HALF_BODY = 0.5
    torch.manual_seed(3)
    ds = build_dataset(cfg, "train", is_train=True)
    plain = build_dataset(tiny_cfg(prepared["dst"]), "train", is_train=False)
    from lib.core.transforms import affine_points, get_affine_transform
    flips = 0
    for i in range(len(ds)):
        image, target, weight, meta = ds[i]
        M = get_affine_transform(meta["center"], meta["scale"], 0, (96, 128))
        crop = affine_points(meta["joints_2d"], M) / 4.0
        peak = target.flatten(1).argmax(1)
        for j in np.flatnonzero(weight[:, 0].numpy() > 0):
            if not (0 <= crop[j, 0] and crop[j, 0] + 0.5 < 24 and 0 <= crop[j, 1] and crop[j, 1] + 0.5 < 32):
                continue        # blob centre outside the map: only its clipped edge is drawn
            assert abs(int(peak[j]) % 24 - crop[j, 0]) <= 0.51 and abs(int(peak[j]) // 24 - crop[j, 1]) <= 0.51
        flips += int(not np.allclose(meta["joints_2d"], plain[i][3]["joints_2d"]))
    assert flips > 0
    np.testing.assert_array_equal(plain[0][0].numpy(), build_dataset(tiny_cfg(prepared["dst"]), "train", True)[0][0].numpy())


def test_max_samples(prepared):
    cfg = tiny_cfg(prepared["dst"])
    cfg.DATASET.MAX_SAMPLES = 5
    assert len(build_dataset(cfg, "train", True)) == 5


# ------------------------------------------------------------------ CMU Panoptic
PAN_NODES = (3, 6, 12, 13, 23)


def _pan_project(p_world, cam):
    """docs/original.md#cmu-panoptic-data projection, joint by joint, with its in-place order."""
    M = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    R, t = np.array(cam["R"]) @ M, np.array(cam["t"]).reshape(3)
    K, (k1, k2, p1, p2, k3) = np.array(cam["K"]), cam["distCoef"]
    out = []
    for p in p_world:
        x = R @ (np.array(p) @ M) + t
        xn, yn = x[0] / (x[2] + 1e-5), x[1] / (x[2] + 1e-5)
        r = xn * xn + yn * yn
        rad = 1 + k1 * r + k2 * r * r + k3 * r ** 3
        xn2 = xn * rad + 2 * p1 * xn * yn + p2 * (r + 2 * xn * xn)
        yn2 = yn * rad + 2 * p2 * xn2 * yn + p1 * (r + 2 * yn * yn)
        u = K[0, 0] * xn2 + K[0, 1] * yn2 + K[0, 2]
        v = K[1, 0] * u + K[1, 1] * yn2 + K[1, 2]
        out.append((u, v))
    return np.array(out)


def make_panoptic_tree(root, seqs=("171204_pose1", "171026_pose3"), frames=4, size=(320, 180)):
    rng = np.random.default_rng(5)
    written = {}
    for seq in seqs:
        d = root / seq
        (d / "hdPose3d_stage1_coco19").mkdir(parents=True)
        cams = []
        for n in PAN_NODES:
            ang = np.deg2rad(n * 15.0)
            R = np.array([[np.cos(ang), 0, -np.sin(ang)], [0, 1, 0], [np.sin(ang), 0, np.cos(ang)]])  # y-down world
            cams.append({"name": f"00_{n:02d}", "type": "hd", "resolution": list(size), "panel": 0, "node": n,
                         "K": [[300.0, 0, size[0] / 2], [0, 300.0, size[1] / 2], [0, 0, 1]],
                         "distCoef": [-0.01, 0.002, 0.0005, -0.0003, 0.0], "R": R.tolist(),
                         "t": (np.array([[0.0], [100.0], [400.0]])).tolist()})
        cams.append({"name": "50_01", "type": "kinect-color", "resolution": [1920, 1080], "panel": 50, "node": 1,
                     "K": np.eye(3).tolist(), "distCoef": [0] * 5, "R": np.eye(3).tolist(), "t": [[0], [0], [0]]})
        (d / f"calibration_{seq}.json").write_text(json.dumps({"cameras": cams}))
        poses = []
        for f in range(frames * 2):
            joints = np.concatenate([rng.normal([0, -100, 0], 25, (19, 3)), np.full((19, 1), 0.8)], 1)
            joints[4, 3] = 0.05                                   # l-elbow low confidence
            bodies = [{"id": 0, "joints19": joints.reshape(-1).tolist()}]
            if f == 2:
                bodies.append(bodies[0])                          # two people -> skipped
            (d / "hdPose3d_stage1_coco19" / f"body3DScene_{f:08d}.json").write_text(
                json.dumps({"version": 1, "bodies": bodies}))
            poses.append(joints)
            for cam in cams[:5]:
                uv = _pan_project(joints[:15, :3], cam)
                _draw(d / "hdImgs" / cam["name"] / f"{cam['name']}_{f:08d}.jpg", uv, *size)
        written[seq] = (cams, poses)
    return written


def test_panoptic_prepare_and_dataset(tmp_path):
    written = make_panoptic_tree(tmp_path / "src")
    info = prepare_panoptic(tmp_path / "src", tmp_path / "out", train_seqs=["171204_pose1"],
                            valid_seqs=["171026_pose3"], interval=2, progress=False, log=lambda *_: None)
    rep = info["report"]["splits"]["train"]
    assert rep["annotation_files"] == 8 and rep["sampled_frames"] == 4 and rep["skipped_not_one_body"] == 1
    train = _load(tmp_path / "out", "train")
    cams, poses = written["171204_pose1"]
    M = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    assert len(train["image"]) == info["counts"]["train"] > 0
    for i in range(len(train["image"])):
        frame, name = int(train["frame"][i]), str(train["camera"][i])
        assert frame in (0, 4, 6)
        cam = [c for c in cams if c["name"] == name][0]
        p = poses[frame][:15, :3]
        uv = _pan_project(p, cam)
        np.testing.assert_allclose(train["joints_2d"][i], uv, rtol=1e-5, atol=1e-3)
        Rp, t = np.array(cam["R"]) @ M, np.array(cam["t"]).reshape(3)
        cam3d = np.array([Rp @ (q @ M - t) for q in p])
        np.testing.assert_allclose(train["joints_3d"][i], cam3d - cam3d[2], atol=1e-3)
        np.testing.assert_allclose(train["hip_camera"][i], cam3d[2], atol=1e-3)
        vis = [int(poses[frame][j, 3] > 0.1 and 0 <= uv[j, 0] <= 319 and 0 <= uv[j, 1] <= 179) for j in range(15)]
        assert train["joints_vis"][i].tolist() == vis and train["joints_vis"][i, 4] == 0
        assert train["image"][i] == f"171204_pose1/hdImgs/{name}/{name}_{frame:08d}.jpg"
    cfg = tiny_cfg(tmp_path / "out")
    cfg.DATASET.DATASET = "panoptic"
    ds = build_dataset(cfg, "valid", is_train=False)
    image, target, weight, meta = ds[0]
    assert target.shape == (15, 32, 24) and meta["action"] == "" and meta["action_idx"] == -1
    assert weight[4, 0] == 0 and meta["image_size"].tolist() == [320, 180]
    assert ds.stats["mean_3d"].shape == (15, 3)
    with pytest.raises(ValueError, match="none of the train sequences"):
        prepare_panoptic(tmp_path / "src", tmp_path / "o2", train_seqs=["nope"], progress=False, log=lambda *_: None)
