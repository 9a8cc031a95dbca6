"""Drawing, 3D plots, validation sheets, plots and report.md (lib/utils/vis.py, lib/utils/report.py)."""
import re

import cv2
import matplotlib.image as mpimg
import numpy as np
import pytest

from lib.core.skeleton import H36M, H36M_ACTIONS, PANOPTIC
from lib.apps import report, vis
from lib.utils import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, size_wh=None):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None
    assert mpimg.imread(str(path)).shape[:2] == image.shape[:2]
    if size_wh is not None:
        assert (image.shape[1], image.shape[0]) == tuple(size_wh)
    return image


def distance_to_segments(height, width, segments):
    """(H, W) float64 distance of every pixel centre to the nearest segment (slow, obvious version)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    best = np.full((height, width), np.inf)
    for (ax_, ay), (bx, by) in segments:
        dx, dy = bx - ax_, by - ay
        length2 = dx * dx + dy * dy
        t = np.zeros_like(xs) if length2 == 0 else np.clip(((xs - ax_) * dx + (ys - ay) * dy) / length2, 0, 1)
        d = np.hypot(xs - (ax_ + t * dx), ys - (ay + t * dy))
        best = np.minimum(best, d)
    return best


def stick_figure(width=200, height=240):
    """A plausible 17-joint H36M pose in pixels, hand-placed."""
    cx = width / 2
    pts = {
        0: (cx, 130), 1: (cx - 15, 130), 2: (cx - 18, 170), 3: (cx - 20, 210), 4: (cx + 15, 130),
        5: (cx + 18, 170), 6: (cx + 20, 210), 7: (cx, 100), 8: (cx, 70), 9: (cx, 58), 10: (cx, 42),
        11: (cx + 25, 72), 12: (cx + 45, 95), 13: (cx + 55, 120), 14: (cx - 25, 72), 15: (cx - 45, 95),
        16: (cx - 55, 120),
    }
    return np.array([pts[j] for j in range(17)], np.float64) + 0.3


def test_bone_and_joint_sides_h36m():
    # (child, parent): r_hip-pelvis is right, l_hip-pelvis left, spine/neck/head centre, shoulders by side.
    expected = ["right", "right", "right", "left", "left", "left", "centre", "centre", "centre", "centre",
                "left", "left", "left", "right", "right", "right"]
    assert vis.bone_sides(H36M) == expected
    sides = vis.joint_sides(PANOPTIC)
    assert [sides[j] for j in (0, 1, 2)] == ["centre"] * 3 and sides[3] == "left" and sides[9] == "right"


def test_draw_skeleton_changes_exactly_along_bones():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 200, 3), dtype=np.uint8)
    joints = stick_figure()
    thickness, radius = 3, 4
    out = vis.draw_skeleton_2d(image, joints, H36M, "pred", thickness=thickness, radius=radius)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.shares_memory(out, image)
    changed = (out != image).any(axis=2)
    segments = [(joints[c], joints[p]) for c, p in H36M.bones] + [(joints[j], joints[j]) for j in range(17)]
    dist = distance_to_segments(240, 200, segments)
    margin = vis.drawn_extent_px(thickness, radius)
    assert not changed[dist > margin + 1.0].any()
    r, c = np.round(joints[:, 1]).astype(int), np.round(joints[:, 0]).astype(int)
    assert changed[r, c].all()
    # a bone's middle pixel is fully covered: exactly its side's colour (l_elbow-l_shoulder: left)
    mid = (joints[12] + joints[11]) / 2
    bone_px = out[int(round(mid[1])), int(round(mid[0]))]
    assert tuple(int(v) for v in bone_px) == vis.COLOR_SCHEMES["pred"]["left"]
    mid = (joints[15] + joints[14]) / 2
    assert tuple(int(v) for v in out[int(round(mid[1])), int(round(mid[0]))]) == vis.COLOR_SCHEMES["pred"]["right"]


def test_draw_skeleton_skips_low_confidence_and_nan():
    image = np.full((240, 200, 3), 128, np.uint8)
    joints = stick_figure()
    conf = np.ones(17)
    conf[13] = 0.1                       # l_wrist: its dot and the l_elbow-l_wrist bone vanish
    joints[16] = np.nan                  # r_wrist: likewise
    out = vis.draw_skeleton_2d(image, joints, H36M, "gt", conf=conf, conf_thresh=0.5, thickness=2)
    changed = (out != image).any(axis=2)
    for a, b in ((12, 13), (15, 16)):
        p = joints[a] + 0.8 * ((joints[b] if b != 16 else stick_figure()[16]) - joints[a])
        assert not changed[int(round(p[1])), int(round(p[0]))]
    assert changed[int(round(joints[12][1])), int(round(joints[12][0]))]
    with pytest.raises(ValueError, match="15 joints"):
        vis.draw_skeleton_2d(image, joints[:15], H36M)
    with pytest.raises(KeyError, match="unknown colour scheme"):
        vis.draw_skeleton_2d(image, stick_figure(), H36M, "purple")


def test_plot_skeleton_3d_camera_view_and_equal_axes():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot(projection="3d")
    rng = np.random.default_rng(1)
    pose = rng.normal(0, 0.3, (17, 3))
    pose[:, 1] *= 3                          # tall along camera y
    vis.plot_skeleton_3d(ax, pose, H36M, "gt")
    vis.plot_skeleton_3d(ax, pose + np.array([2.0, 0, 0]), H36M, "pred")
    # first bone (r_hip -> pelvis) is drawn as (x, z, -y)
    xs, ys, zs = ax.lines[0].get_data_3d()
    np.testing.assert_allclose(xs, pose[[1, 0], 0])
    np.testing.assert_allclose(ys, pose[[1, 0], 2])
    np.testing.assert_allclose(zs, -pose[[1, 0], 1])
    limits = np.array([ax.get_xlim(), ax.get_ylim(), ax.get_zlim()])
    spans = limits[:, 1] - limits[:, 0]
    np.testing.assert_allclose(spans, spans[0])          # equal axes
    both = np.concatenate([pose, pose + [2.0, 0, 0]])
    plotted = np.stack([both[:, 0], both[:, 2], -both[:, 1]], axis=1)
    assert (plotted.min(0) >= limits[:, 0]).all() and (plotted.max(0) <= limits[:, 1]).all()
    assert len(ax.lines) == 2 * len(H36M.bones)


def test_render_3d_panel_and_compose_sizes():
    pose = np.random.default_rng(2).normal(0, 0.3, (17, 3))
    panel = vis.render_3d_panel([(pose, "gt", "GT"), (pose * 1.1, "pred", "sb")], H36M, size_px=(301, 257),
                                title="sb: MPJPE 12.0 mm")
    assert panel.shape == (257, 301, 3) and panel.dtype == np.uint8
    assert panel.std() > 5                                  # something was drawn
    left = np.zeros((101, 150, 3), np.uint8)
    both = vis.compose_side_by_side(left, panel, height=101)
    assert both.shape[0] % 2 == 0 and both.shape[1] % 2 == 0
    assert both.shape[0] == 102 and both.shape[1] >= 150 + 118


def test_render_validation_samples_writes_k_pngs(tmp_path):
    rng = np.random.default_rng(3)
    n, panel_px = 5, 160
    images = [rng.integers(0, 256, (240, 200, 3), dtype=np.uint8) for _ in range(n)]
    gt2 = np.stack([stick_figure() + rng.normal(0, 1, (17, 2)) for _ in range(n)])
    pred2 = gt2 + rng.normal(0, 3, gt2.shape)
    gt3 = rng.normal(0, 0.3, (n, 17, 3))
    preds = {"sb": gt3 + 0.01, "videopose": gt3 + rng.normal(0, 0.05, gt3.shape)}
    paths = vis.render_validation_samples(images, gt2, pred2, gt3, preds, H36M, tmp_path / "vis", k=3,
                                          panel_px=panel_px)
    assert [p.name for p in paths] == ["vis_0000.png", "vis_0001.png", "vis_0002.png"]
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == [p.name for p in paths]
    for p in paths:
        assert_png(p, (panel_px * 3, panel_px))
    # MPJPE of a constant 1 cm offset on every coordinate: sqrt(3) cm
    np.testing.assert_allclose(vis.sample_mpjpe_mm(preds["sb"], gt3), np.sqrt(3) * 10.0, rtol=1e-9)
    # cropping mode (full frames + centre/scale) and k larger than N
    centers = np.tile([[100.0, 130.0]], (n, 1))
    scales = np.tile([[0.9, 1.2]], (n, 1))
    paths = vis.render_validation_samples(images, gt2, pred2, gt3, {"sb": preds["sb"]}, H36M,
                                          tmp_path / "crop", k=10, centers=centers, scales=scales,
                                          crop_size=(96, 128), panel_px=panel_px)
    assert len(paths) == n
    assert_png(paths[-1], (panel_px * 2, panel_px))


def test_denormalize_image_round_trip():
    rng = np.random.default_rng(4)
    bgr = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    rgb = bgr[..., ::-1].astype(np.float32) / 255.0
    chw = ((rgb - vis.IMAGENET_MEAN) / vis.IMAGENET_STD).transpose(2, 0, 1)
    np.testing.assert_array_equal(vis.denormalize_image(chw), bgr)


# ---------------------------------------------------------------------------------------------- report
def test_plots_are_valid_pngs(tmp_path):
    history = {"loss_2d": [1e-3, 5e-4, 2e-4], "total": [1.0, 0.3, 0.1], "mpjpe/sb": [90.0, 70.0, 60.0],
               "pdj": [30.0, 50.0, 60.0]}
    curves = plots.plot_training_curves(history, tmp_path / "plots" / "curves.png")
    assert_png(curves)
    per_action = {"sb": {a: 50.0 + i for i, a in enumerate(H36M_ACTIONS)},
                  "videopose": {"Walking": 40.0, "Directions": 45.0}}
    bars = report.plot_per_action(per_action, tmp_path / "plots")
    assert [p.name for p in bars] == ["per_action_sb.png", "per_action_videopose.png"]
    for p in bars:
        assert_png(p)
    table = {"pretrained": {"mpjpe": 90.0, "p_mpjpe": 70.0, "pdj": 60.0},
             "3d_guided": {"mpjpe": 80.0, "p_mpjpe": 60.0, "pdj": 63.0}}
    assert_png(plots.plot_metric_table(table, tmp_path / "demo.png"))
    assert not list(tmp_path.rglob("*.tmp*"))


def test_write_report(tmp_path):
    from lib.config import get_cfg

    run = tmp_path / "run"
    plot = plots.plot_training_curves({"loss_2d": [1.0, 0.5]}, run / "plots" / "curves.png")
    cfg = get_cfg()
    cfg.MODEL_3D.NAMES = ["sb", "videopose"]
    cfg.LOSS.OHKLM = True
    final = {"mpjpe": {"sb": 51.234, "videopose": 60.0}, "pdj": 88.5}
    best = {"mpjpe": {"sb": 50.0, "videopose": 59.5}, "pdj": 89.0, "epoch": 3}
    path = report.write_report(run, command=["python", "run/train_hrnet.py", "--cfg", "a b.yaml"],
                               config=cfg, final=final, best=best,
                               plots=[plot, run / "plots" / "absent.png"], title="demo run")
    text = path.read_text()
    assert path == run / "report.md"
    assert text.startswith("# demo run")
    assert "python run/train_hrnet.py --cfg 'a b.yaml'" in text
    assert "| MODEL_3D.NAMES | `[sb, videopose]` |" in text
    assert "| LOSS.OHKLM | `True` |" in text
    assert "| mpjpe/sb | 51.23 | 50.00 |" in text
    assert "| epoch | - | 3 |" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["plots/curves.png"] and (run / links[0]).is_file()
    assert "plots/absent.png` (missing)" in text


def _history():
    """Two epochs as lib/engine/trainer.py writes them (3D-guided, sb + held-out iganet)."""
    def entry(epoch, total, mpjpe, best):
        return {"epoch": epoch, "lr": 1e-3, "best": best, "best_cross": False,
                "train": {"total": total, "loss_2d": total / 100, "loss_3d/sb": 2.0 * total, "dwa_w/sb": 1.0,
                          "accuracy_2d": 0.5, "steps": 2, "seconds": 30.0, "samples_per_s": 4.0},
                "valid": {"pdj": 40.0 + epoch, "mpjpe": mpjpe, "p_mpjpe": mpjpe / 2,
                          "per_lifter": {"sb": mpjpe, "iganet": mpjpe + 10}, "cross_mpjpe": mpjpe + 10,
                          "cross_p_mpjpe": None, "ensemble_mpjpe": -1.0}}
    return {"mode": "3d", "lifters": ["sb"], "cross_lifters": ["iganet"],
            "epochs": [entry(0, 1.0, 300.0, True), entry(1, 0.1, 310.0, False)]}


def test_history_series_names_and_sentinels():
    epochs, series, best = plots.history_series(_history())
    assert epochs == [0, 1] and best == 0
    assert series["total"] == [1.0, 0.1] and series["loss_3d/sb"] == [2.0, 0.2]
    assert series["mpjpe/sb"] == [300.0, 310.0] and series["mpjpe/iganet"] == [310.0, 320.0]
    assert series["lr"] == [1e-3, 1e-3] and series["pdj"] == [40.0, 41.0]
    # bookkeeping is not plotted; -1 (not evaluated) and None are dropped entirely
    assert not {"steps", "seconds", "samples_per_s", "ensemble_mpjpe", "cross_p_mpjpe"} & set(series)
    flat_epochs, flat, none = plots.history_series({"loss_2d": [3.0, 2.0, 1.0]})
    assert flat_epochs == [0, 1, 2] and flat == {"loss_2d": [3.0, 2.0, 1.0]} and none is None


def test_trainer_curves_are_the_report_curves(tmp_path):
    from lib.utils import plots

    a = plots.plot_curves(_history(), tmp_path / "a.png")
    b = plots.plot_training_curves(_history(), tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes()
    assert_png(a)
    lifter_history = {"lifter": "sb", "dataset": "h36m", "epochs": [
        {"epoch": 0, "lr": 1e-3, "train": {"total": 0.5}, "valid": {"mpjpe": 80.0, "p_mpjpe": 60.0}, "best": True}]}
    assert_png(plots.plot_curves(lifter_history, tmp_path / "lifter.png"))
    with pytest.raises(ValueError, match="no values"):
        plots.plot_training_curves({"epochs": []}, tmp_path / "none.png")


def test_write_run_report_from_folder(tmp_path):
    import json

    from lib.config import get_cfg

    run = tmp_path / "run"
    (run / "vis").mkdir(parents=True)
    (run / "history.json").write_text(json.dumps(_history()))
    cfg = get_cfg()
    cfg.MODEL_3D.NAMES = ["sb"]
    (run / "config.yaml").write_text(cfg.dump())
    per_action = {"sb": {"Walking": 50.0, "Directions": None}}
    (run / "metrics.json").write_text(json.dumps({
        "num_samples": 24, "pdj": 77.5, "mpjpe": 123.456, "p_mpjpe": 99.0,
        "per_lifter": {"sb": {"mpjpe": 123.456, "p_mpjpe": 99.0, "held_out": False}},
        "cross": None, "ensemble": None, "per_action": per_action, "model_path": str(run / "model_best.pth"),
        "command": "python run/valid_hrnet.py --cfg x.yaml --model_dir run"}))
    report.plot_per_action(per_action, run)
    cv2.imwrite(str(run / "vis" / "vis_0000.png"), np.zeros((8, 16, 3), np.uint8))

    path = report.write_run_report(run, command=["python", "run/train_hrnet.py", "--cfg", "a b.yaml"])
    text = path.read_text()
    assert path == run / "report.md" and (run / "curves.png").is_file()     # drawn from history.json
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["curves.png", "per_action_sb.png", "vis/vis_0000.png"]
    assert all((run / link).is_file() for link in links)
    assert "## Command (training)\n\n```\npython run/train_hrnet.py --cfg 'a b.yaml'\n```" in text
    assert "## Command (validation)\n\n```\npython run/valid_hrnet.py --cfg x.yaml --model_dir run" in text
    assert "| metric | last epoch (1) | best epoch (0) | validation (model_best.pth) |" in text
    assert "| MPJPE (mm) | 310.00 | 300.00 | 123.46 |" in text
    assert "| MPJPE iganet (mm) | 320.00 | 310.00 | - |" in text
    assert "| cross MPJPE (mm) | 320.00 | 310.00 | - |" in text
    assert "ensemble" not in text                                          # -1: not evaluated
    assert "| samples | - | - | 24 |" in text
    assert "| lifter | Dir. | Walk. | Avg. |" in text and "| sb | - | 50.0 | 50.0 |" in text   # Directions: none
    assert "| MODEL_3D.NAMES | `[sb]` |" in text
    assert "2 epochs, 1.0 min training, 4.0 samples/s" in text
    # the training command is kept in history.json, so a later report (after validation) still has it
    assert json.loads((run / "history.json").read_text())["command"] == "python run/train_hrnet.py --cfg 'a b.yaml'"
    assert "python run/train_hrnet.py --cfg 'a b.yaml'" in report.write_run_report(run).read_text()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report.write_run_report(tmp_path / "absent")
