"""run/infer.py end to end on CPU: images and a short video, JSON/NPZ contents, overlays, MP4."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

import model_2d
import model_3d
from lib.config import load_cfg
from lib.core.skeleton import H36M
from lib.apps import vis
from run import infer

ROOT = Path(__file__).resolve().parents[1]
TINY_CFG = ROOT / "experiments" / "demo" / "tiny_96x128.yaml"
FIXED_NET = "test_infer_fixed_heatmaps"

# Heatmap-pixel peaks (24 x 32 maps of the tiny config) of a standing figure, all >= 2 px from the border.
PEAKS_HM = np.array([[12, 17], [10, 17], [10, 22], [10, 27], [14, 17], [14, 22], [14, 27], [12, 13],
                     [12, 9], [12, 7], [12, 5], [15, 9], [17, 12], [19, 15], [9, 9], [7, 12], [5, 15]],
                    np.float64)


class FixedHeatmaps(nn.Module):
    """Unit Gaussians (sigma 1) at PEAKS_HM whatever the input: a detector whose answer is known."""

    def __init__(self, cfg):
        super().__init__()
        w, h = cfg.MODEL.HEATMAP_SIZE
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        peaks = torch.as_tensor(PEAKS_HM, dtype=torch.float32)
        d2 = (xs - peaks[:, 0, None, None]) ** 2 + (ys - peaks[:, 1, None, None]) ** 2
        self.register_buffer("maps", torch.exp(-d2 / 2.0), persistent=False)
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.gain * self.maps.expand(x.shape[0], -1, -1, -1) + 0.0 * x.mean()


@pytest.fixture
def fixed_net():
    """FixedHeatmaps registered only while a test runs (other test files enumerate the registry)."""
    model_2d.register_pose_net(FIXED_NET, override=True)(FixedHeatmaps)
    yield FIXED_NET
    model_2d.POSE_NETS.pop(FIXED_NET, None)


def make_run(folder: Path, model_name=None, seed=0) -> Path:
    cfg = load_cfg(str(TINY_CFG))
    if model_name:
        cfg.MODEL.NAME = model_name
    torch.manual_seed(seed)
    net = model_2d.build_pose_net(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "model_best.pth")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder


@pytest.fixture(scope="module")
def lifter_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    stats = {"mean_2d": rng.uniform(80, 160, (17, 2)), "std_2d": rng.uniform(10, 30, (17, 2)),
             "mean_3d": rng.normal(0, 20, (17, 3)), "std_3d": rng.uniform(5, 30, (17, 3))}
    torch.manual_seed(1)
    lifter = model_3d.build_lifter("sb", 17, stats=stats)
    path = tmp_path_factory.mktemp("lifter") / "sb.pth"
    model_3d.save_lifter_checkpoint(path, lifter, name="sb", num_joints=17, dataset="h36m")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def expected_center_scale(box, aspect=96 / 128):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    if w > aspect * h:
        h = w / aspect
    elif w < aspect * h:
        w = h * aspect
    return np.array([x1 + (x2 - x1) / 2, y1 + (y2 - y1) / 2]), np.array([w, h]) / 200.0 * 1.25


def distance_to_segments(height, width, segments):
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    best = np.full((height, width), np.inf)
    for (ax_, ay), (bx, by) in segments:
        dx, dy = bx - ax_, by - ay
        length2 = dx * dx + dy * dy
        t = np.zeros_like(xs) if length2 == 0 else np.clip(((xs - ax_) * dx + (ys - ay) * dy) / length2, 0, 1)
        best = np.minimum(best, np.hypot(xs - (ax_ + t * dx), ys - (ay + t * dy)))
    return best


def test_infer_images_known_detector(tmp_path, lifter_file, fixed_net):
    run = make_run(tmp_path / "run", fixed_net)
    rng = np.random.default_rng(5)
    frames = tmp_path / "frames"
    frames.mkdir()
    sizes = {"a.png": (240, 200), "b.png": (200, 260), "c.jpg": (300, 240)}       # (h, w)
    for name, (h, w) in sizes.items():
        cv2.imwrite(str(frames / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    (frames / "notes.txt").write_text("not an image")
    boxes = {"a.png": [20, 30, 150, 220], "b.png": [40.5, 10, 190, 180]}           # c.jpg: whole frame
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    out = tmp_path / "out"
    summary = infer.main(["--run_dir", str(run), "--model_3d", "sb", "--lifter_weights", str(lifter_file),
                          "--input", str(frames), "--boxes", str(tmp_path / "boxes.json"), "--out", str(out),
                          "--gpu_id", "-1", "--batch_size", "2"])
    assert summary["frames"] == 3 and summary["video"] is None
    recs = read_jsonl(out / "predictions.jsonl")
    assert [r["frame"] for r in recs] == [0, 1, 2]
    assert [r["image"] for r in recs] == ["a.png", "b.png", "c.jpg"]
    lifter = model_3d.build_lifter("sb", 17, weights=str(lifter_file))
    npz = np.load(out / "predictions.npz", allow_pickle=False)
    assert npz["joints_2d_px"].shape == (3, 17, 2) and npz["confidence"].shape == (3, 17)
    assert npz["joints_3d_m"].shape == (3, 17, 3) and npz["box"].shape == (3, 4)
    assert list(npz["joint_names"]) == list(H36M.joint_names)
    for i, rec in enumerate(recs):
        h, w = sizes[rec["image"]]
        assert np.asarray(rec["joints_2d_px"]).shape == (17, 2)
        assert np.asarray(rec["confidence"]).shape == (17,)
        assert np.asarray(rec["joints_3d_m"]).shape == (17, 3)
        box = boxes.get(rec["image"], [0, 0, w, h])
        np.testing.assert_allclose(rec["box"], box)
        # heatmap peak -> image px through HRNet's inverse crop (isotropic, box width)
        center, scale = expected_center_scale(box)
        k = scale[0] * 200.0 / 24.0
        expected = center + k * (PEAKS_HM - np.array([12.0, 16.0]))
        np.testing.assert_allclose(rec["joints_2d_px"], expected, atol=2e-3)
        np.testing.assert_allclose(npz["joints_2d_px"][i], expected, atol=1e-3)
        np.testing.assert_allclose(rec["confidence"], 1.0, atol=1e-5)
        with torch.no_grad():
            want_3d = lifter(torch.as_tensor(npz["joints_2d_px"][i:i + 1]),
                             torch.tensor([[float(w), float(h)]]))[0].numpy()
        np.testing.assert_allclose(npz["joints_3d_m"][i], want_3d, atol=1e-5)
        np.testing.assert_allclose(rec["joints_3d_m"], want_3d, atol=2e-5)

        # the overlay differs from the input exactly along the drawn skeleton
        source = cv2.imread(str(frames / rec["image"]), cv2.IMREAD_COLOR)
        overlay = cv2.imread(str(out / "overlay" / (Path(rec["image"]).stem + ".png")), cv2.IMREAD_COLOR)
        assert overlay.shape == source.shape
        changed = (overlay != source).any(axis=2)
        joints = np.asarray(npz["joints_2d_px"][i], np.float64)
        thickness = vis.default_thickness(h, w)
        segments = [(joints[c], joints[p]) for c, p in H36M.bones] + [(j, j) for j in joints]
        far = distance_to_segments(h, w, segments) > vis.drawn_extent_px(thickness, thickness + 1) + 1.0
        assert far.mean() > 0.5
        assert not changed[far].any()
        rr, cc = np.round(joints[:, 1]).astype(int), np.round(joints[:, 0]).astype(int)
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        assert inside.sum() >= 15 and changed[rr[inside], cc[inside]].all()
        combined = cv2.imread(str(out / "combined" / (Path(rec["image"]).stem + ".png")), cv2.IMREAD_COLOR)
        assert combined is not None and combined.shape[1] > combined.shape[0] >= 360


def test_infer_video_tiny_hrnet(tmp_path, lifter_file):
    from lib.datasets.synthetic import make_h36m_demo

    run = make_run(tmp_path / "run")
    make_h36m_demo(tmp_path / "demo", seed=0, frames_per_seq=6, image_size=128, actions_per_subject=1)
    jpgs = sorted((tmp_path / "demo" / "processed").glob("S*/*-*/imageSequence/*/img_*.jpg"))[:6]
    assert len(jpgs) == 6
    first = cv2.imread(str(jpgs[0]))
    h, w = first.shape[:2]
    h, w = h - h % 2, w - w % 2
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for path in jpgs:
        writer.write(cv2.imread(str(path))[:h, :w])
    writer.release()

    out = tmp_path / "out"
    summary = infer.main(["--run_dir", str(run), "--lifter_weights", str(lifter_file), "--input", str(video),
                          "--out", str(out), "--gpu_id", "-1", "--batch_size", "4"])
    recs = read_jsonl(out / "predictions.jsonl")
    assert [r["frame"] for r in recs] == list(range(6))
    for rec in recs:
        assert np.asarray(rec["joints_2d_px"]).shape == (17, 2)
        assert np.asarray(rec["confidence"]).shape == (17,)
        assert np.asarray(rec["joints_3d_m"]).shape == (17, 3)
        np.testing.assert_allclose(rec["box"], [0, 0, w, h])
        assert np.isfinite(rec["joints_3d_m"]).all()
    npz = np.load(out / "predictions.npz", allow_pickle=False)
    assert npz["joints_2d_px"].shape == (6, 17, 2) and npz["joints_3d_m"].shape == (6, 17, 3)
    np.testing.assert_array_equal(npz["image_size"], np.tile([w, h], (6, 1)))
    assert len(list((out / "overlay").glob("*.png"))) == 6
    combined = sorted((out / "combined").glob("*.png"))
    assert len(combined) == 6
    frame_shape = cv2.imread(str(combined[0])).shape

    mp4 = Path(summary["video"])
    assert mp4 == out / "clip_pose.mp4" and mp4.is_file()
    cap = cv2.VideoCapture(str(mp4))
    assert cap.isOpened()
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == frame_shape
        count += 1
    cap.release()
    assert count == 6


def test_read_boxes_formats(tmp_path):
    csv_path = tmp_path / "boxes.csv"
    csv_path.write_text("image,x,y,w,h\nimg_1.jpg,10,20,30,40\n3,0,0,5,5\n")
    ordered, keyed = infer.read_boxes(csv_path, "xywh")
    assert ordered is None and keyed == {"img_1.jpg": [10, 20, 40, 60], "3": [0, 0, 5, 5]}
    js = tmp_path / "b.json"
    js.write_text(json.dumps([{"frame": 2, "box": [1, 2, 3, 4]}, {"image": "dir/x.png", "bbox": [0, 0, 9, 9]}]))
    assert infer.read_boxes(js) == (None, {"2": [1, 2, 3, 4], "x.png": [0, 0, 9, 9]})
    js.write_text(json.dumps([[1, 2, 3, 4], [5, 6, 7, 8]]))
    assert infer.read_boxes(js)[0] == [[1, 2, 3, 4], [5, 6, 7, 8]]
    js.write_text(json.dumps({"a.jpg": [5, 5, 1, 1]}))
    with pytest.raises(ValueError, match="is empty"):
        infer.read_boxes(js)


def test_cli_arguments(tmp_path):
    with pytest.raises(SystemExit):
        infer.parse_args(["--input", "x", "--out", "y"])                       # no detector
    with pytest.raises(SystemExit):
        infer.parse_args(["--weights", "w.pth", "--input", "x", "--out", "y"])  # --weights needs --cfg
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        infer.main(["--run_dir", str(tmp_path), "--input", str(tmp_path), "--out", str(tmp_path / "o")])
    done = subprocess.run([sys.executable, str(ROOT / "run" / "infer.py"), "--help"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and "--lifter_weights" in done.stdout


def test_infer_2d_only_argmax_whole_frame(tmp_path, fixed_net):
    run = make_run(tmp_path / "run", fixed_net)
    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "x.png"), np.full((180, 150, 3), 90, np.uint8))
    out = tmp_path / "out"
    summary = infer.main(["--run_dir", str(run), "--model_3d", "none", "--argmax", "--input", str(frames),
                          "--out", str(out), "--gpu_id", "-1"])
    assert summary["lifter"] is None
    (rec,) = read_jsonl(out / "predictions.jsonl")
    assert "joints_3d_m" not in rec
    assert "joints_3d_m" not in np.load(out / "predictions.npz").files
    center, scale = expected_center_scale([0, 0, 150, 180])
    expected = center + scale[0] * 200.0 / 24.0 * (PEAKS_HM - np.array([12.0, 16.0]))
    np.testing.assert_allclose(rec["joints_2d_px"], expected, atol=2e-3)
    np.testing.assert_allclose(rec["confidence"], 1.0, atol=1e-6)       # argmax maxvals
    assert cv2.imread(str(out / "combined" / "x.png")).shape[0] == 360
