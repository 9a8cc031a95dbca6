"""Plots and report.md from real (tiny) runs: training writes curves.png and report.md; validation
with --action_valid --vis updates report.md, writes the per-action chart and K sheets of the
right size. In process, tiny config, synthetic data, CPU."""
import json
import re
from pathlib import Path

import cv2
import pytest

from run import train_hrnet, train_lifter, valid_hrnet
from conftest import make_tiny_h36m

CFG = "experiments/demo/tiny_96x128.yaml"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
VIS_PANEL_PX = 320          # lib.utils.vis.render_validation_samples' default panel size


def png_size(path: Path):
    """(width, height) of a PNG that both its signature and OpenCV accept."""
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None and image.size > 0, f"{path} does not decode"
    return image.shape[1], image.shape[0]


def report_links(report: Path):
    """Relative image links of a report.md, each checked to exist beside it."""
    text = report.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    for link in links:
        assert not Path(link).is_absolute(), link
        assert (report.parent / link).is_file(), f"{report} links to missing {link}"
    return text, links


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    """A 3D-guided (sb) run of two epochs x 2 steps on a tiny synthetic set."""

    base = tmp_path_factory.mktemp("report")
    data = base / "data"
    make_tiny_h36m(data, seed=1, frames_per_seq=3, image_size=128)
    common = ["DATASET.ROOT", str(data), "OUTPUT_DIR", str(base / "out"), "USE_CUDA", "False",
              "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "8", "TRAIN.MAX_STEPS_PER_EPOCH", "2",
              "PRINT_FREQ", "1", "LIFTER_TRAIN.BATCH_SIZE", "16", "MODEL_3D.WEIGHTS.SB", str(base / "sb.pth")]
    train_lifter.main(["--cfg", CFG, "--model_3d", "sb", "--epochs", "1"] + common)
    out = train_hrnet.main(["--cfg", CFG, "--epochs", "1", "--loss_3d", "--loss_3d_z", "--ohklm",
                            "--model_3d", "sb"] + common)
    return {"run": Path(out["run_dir"]), "common": common, "base": base}


def test_training_writes_curves_and_report(run3d):
    run = run3d["run"]
    history = json.loads((run / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1]
    width, height = png_size(run / "curves.png")
    assert width > 600 and height > 200
    # the run's report (lib.apps.report.write_run_report, written by run/train_hrnet.py after training)
    report = run / "report.md"
    assert report.is_file(), "training did not write report.md"
    text, links = report_links(report)
    assert "curves.png" in links
    assert "## Key configuration" in text and "| MODEL_3D.NAMES | `[sb]` |" in text
    last = history["epochs"][-1]["valid"]
    assert f"| MPJPE (mm) | {last['mpjpe']:.2f} |" in text
    assert f"| PDJ@0.2 (%) | {last['pdj']:.2f} |" in text


def test_validation_vis_action_chart_and_report(run3d, capsys):
    run = run3d["run"]
    k = 3
    valid_hrnet.main(["--cfg", CFG, "--model_dir", str(run), "--model_3d", "sb", "--action_valid",
                      "--vis", "--vis_num", str(k)] + run3d["common"])
    sheets = sorted((run / "vis").glob("*.png"))
    assert [p.name for p in sheets] == [f"vis_{i:04d}.png" for i in range(k)]
    for p in sheets:   # the crop panel, then one 3D panel for sb
        assert png_size(p) == (2 * VIS_PANEL_PX, VIS_PANEL_PX)
    chart = run / "per_action_sb.png"
    assert png_size(chart)[0] > 300
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["command"].startswith("python run/valid_hrnet.py --cfg ")
    text, links = report_links(run / "report.md")
    assert {"curves.png", "per_action_sb.png", "vis/vis_0000.png"} <= set(links)
    assert "## Command (validation)" in text and "## Per-action MPJPE (mm)" in text
    mpjpe_row = next(line for line in text.splitlines() if line.startswith("| MPJPE (mm) |"))
    assert mpjpe_row.endswith(f"| {metrics['mpjpe']:.2f} |")           # the validation column is last

    # a second validation with fewer sheets leaves exactly that many (names still sort)
    valid_hrnet.main(["--cfg", CFG, "--model_dir", str(run), "--model_3d", "sb", "--vis", "--vis_num", "2"]
                     + run3d["common"])
    assert [p.name for p in sorted((run / "vis").glob("*.png"))] == ["vis_0000.png", "vis_0001.png"]
    report_links(run / "report.md")


def test_gt_validation_folder_gets_a_report(run3d):
    folder = run3d["base"] / "gt"
    valid_hrnet.main(["--cfg", CFG, "--gt", "--model_dir", str(folder), "--model_3d", "sb", "--vis",
                      "--vis_num", "1"] + run3d["common"])
    text, links = report_links(folder / "report.md")
    assert links == ["vis/vis_0000.png"]
    assert "| validation, GT 2D |" in text and "| PDJ@0.2 (%) | 100.00 |" in text
