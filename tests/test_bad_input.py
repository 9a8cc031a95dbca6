"""Bad input, untrusted files, corrupt files and the one-line CLI errors.

Every test first reproduces what went wrong (a pickle payload, a truncated file, a half JPEG) and
then checks what the user now gets: the payload does not run, the error names the file and the fix,
a CLI ends with exit code 2 and one line on stderr.
"""
import errno
import json
import logging
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import model_3d
from conftest import ROOT
from lib.config import get_cfg, load_cfg
from lib.datasets import index as idx
from lib.utils.errors import (BadValueError, ConfigError, CorruptFileError, DiskFullError, UntrustedFileError,
                              run_cli)

CFG = "experiments/demo/tiny_96x128.yaml"
NOT_A_CHECKPOINT = "not a PyTorch checkpoint or truncated"


class _Payload:
    """Unpickling this calls open(target, 'w'): a stand-in for any code a crafted pickle could run."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _write_payload(path, target, wrap=lambda p: p):
    with open(path, "wb") as fh:
        pickle.dump(wrap(_Payload(target)), fh)
    return path


def _cli(main, argv, capsys):
    """run_cli in-process -> (exit code, stderr lines)."""
    capsys.readouterr()
    rc = run_cli(main, argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


# ------------------------------------------------------------------------------------- no pickle
def test_stats_pickle_payload_runs_only_for_the_named_file(tmp_path):
    target = tmp_path / "created_by_payload"
    evil = _write_payload(tmp_path / "h36m_stats.pkl", target, wrap=lambda p: {"mean_2d": p})
    with pytest.raises(UntrustedFileError) as err:
        model_3d.load_stats(evil)
    assert not target.exists()
    assert str(evil) in str(err.value) and "io.open" in str(err.value) and "--trust" in str(err.value)
    with pytest.raises(UntrustedFileError):                    # trusting another file does not help
        model_3d.load_stats(evil, trusted=[tmp_path / "other.pkl"])
    assert not target.exists()
    with pytest.raises(KeyError):                              # trusted: it runs (then lacks the other keys)
        model_3d.load_stats(evil, trusted=[evil])
    assert target.exists()
    # plain data (the original's stats pickle: a dict of numpy arrays) still loads without any trust
    plain = tmp_path / "plain.pkl"
    with open(plain, "wb") as fh:
        pickle.dump({k: np.full((17, 3 if k.endswith("3d") else 2), 2.0) for k in model_3d.STATS_KEYS}, fh)
    assert model_3d.load_stats(plain)["std_3d"].shape == (17, 3)


def test_model_3d_stats_key_in_config_needs_trusted_files(tmp_path):
    target = tmp_path / "created_by_payload"
    evil = _write_payload(tmp_path / "x.pkl", target)
    weights = tmp_path / "sb.pth"
    torch.save(model_3d.build_lifter_net("sb", 17).state_dict(), weights)
    cfg = get_cfg()
    cfg.MODEL_3D.WEIGHTS.SB = str(weights)
    cfg.MODEL_3D.STATS = str(evil)
    with pytest.raises(UntrustedFileError, match="x.pkl"):
        model_3d.resolve_lifter(cfg, "sb")
    assert not target.exists()
    cfg.TRUSTED_FILES = [str(evil)]
    with pytest.raises(BadValueError, match="expected a dict"):   # it ran; what it returned is no stats
        model_3d.resolve_lifter(cfg, "sb")
    assert target.exists()


def test_infer_stats_pickle_needs_trust(tmp_path):
    from run import infer
    target = tmp_path / "created_by_payload"
    evil = _write_payload(tmp_path / "stats.pkl", target)
    weights = tmp_path / "sb.pth"
    torch.save(model_3d.build_lifter_net("sb", 17).state_dict(), weights)
    args = infer.parse_args(["--weights", "hrnet.pth", "--cfg", CFG, "--input", "x", "--out", "o",
                             "--lifter_weights", str(weights), "--stats", str(evil)])
    with pytest.raises(UntrustedFileError, match="stats.pkl"):
        infer.load_lifter(args, get_cfg(), 17, torch.device("cpu"))
    assert not target.exists()
    args.trust = [str(evil)]
    with pytest.raises(BadValueError, match="expected a dict"):
        infer.load_lifter(args, get_cfg(), 17, torch.device("cpu"))
    assert target.exists()


def _l2d_tree(src, annot_pkl_writer):
    seq = src / "S1" / "Eating"
    seq.mkdir(parents=True)
    annot_pkl_writer(seq / "annot.pkl")
    return src


def test_prepare_h36m_l2d_annot_pkl_payload(tmp_path):
    from lib.datasets.prepare_h36m import prepare_h36m
    target = tmp_path / "created_by_payload"
    src = _l2d_tree(tmp_path / "l2d", lambda p: _write_payload(p, target))
    kw = dict(splits=["train"], check_images=False, progress=False, log=lambda *_: None)
    with pytest.raises(UntrustedFileError, match="annot.pkl"):
        prepare_h36m(src, tmp_path / "out", **kw)
    assert not target.exists()
    with pytest.raises(CorruptFileError, match="expected a dict"):
        prepare_h36m(src, tmp_path / "out", trusted=[src], **kw)       # --trust the source folder
    assert target.exists()


def test_config_must_be_yaml_and_python_is_never_run(tmp_path, capsys):
    from run import train_hrnet
    target = tmp_path / "created_by_config"
    py = tmp_path / "exp.py"
    py.write_text(f"from yacs.config import CfgNode\nopen({str(target)!r}, 'w')\ncfg = CfgNode()\n")
    with pytest.raises(ConfigError, match="only .yaml / .yml"):
        load_cfg(str(py))
    rc, err = _cli(train_hrnet.main, ["--cfg", str(py)], capsys)
    assert rc == 2 and len(err) == 1 and str(py) in err[0]
    assert not target.exists()
    # YAML tags that would build Python objects are refused by the safe loader
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text(f"OUTPUT_DIR: !!python/object/apply:builtins.open [{str(target)!r}, 'w']\n")
    with pytest.raises(ConfigError, match="tagged.yaml line 1"):
        load_cfg(str(tagged))
    assert not target.exists()


# ------------------------------------------------------------------------------------- corrupt files
@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_ckpt")
    good = base / "good.pth"
    torch.save({"w": torch.arange(1000.0)}, good)
    data = good.read_bytes()
    (base / "truncated.pth").write_bytes(data[: len(data) // 2])
    (base / "random.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (base / "empty.pth").write_bytes(b"")
    return base


@pytest.mark.parametrize("kind", ["truncated", "random", "empty"])
def test_corrupt_checkpoints_are_named_with_the_fix(bad_checkpoints, kind):
    from lib.engine.checkpoint import load_checkpoint
    from model_2d.checkpoint import read_checkpoint
    path = bad_checkpoints / f"{kind}.pth"
    loaders = (read_checkpoint, load_checkpoint, model_3d.load_lifter_checkpoint)
    for load in loaders:
        with pytest.raises(CorruptFileError) as err:
            load(path)
        msg = str(err.value)
        assert msg == f"{NOT_A_CHECKPOINT}: {path}; re-download or re-create it", (load, msg)


def test_truncated_pretrained_and_finetune_name_the_file(bad_checkpoints):
    from lib.engine.builders import build_detector
    for key in ("MODEL.PRETRAINED", "TRAIN.FINETUNE"):
        cfg = load_cfg(CFG, [key, str(bad_checkpoints / "truncated.pth")])
        with pytest.raises(CorruptFileError, match=NOT_A_CHECKPOINT + ".*truncated.pth"):
            build_detector(cfg)


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    from run import train_hrnet
    bad = tmp_path / "broken.yaml"
    bad.write_text("TRAIN:\n  LR: 0.001\n  EPOCHS: [1, 2\nTEST:\n  BETA: 100\n")
    with pytest.raises(ConfigError) as err:
        load_cfg(str(bad))
    assert str(bad) in str(err.value) and "line 4" in str(err.value)   # where the parser noticed the open list
    rc, lines = _cli(train_hrnet.main, ["--cfg", str(bad)], capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "broken.yaml line 4" in lines[0]


def test_base_chain_merges_in_order_and_refuses_loops_and_missing_bases(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("SEED: 7\nTRAIN:\n  LR: 0.01\n  EPOCHS: 3\n")
    (tmp_path / "sub" / "mid.yaml").write_text("_BASE_: ../base.yaml\nTRAIN:\n  LR: 0.02\n")
    (tmp_path / "sub" / "top.yaml").write_text("_BASE_: mid.yaml\nTRAIN:\n  EPOCHS: 5\n")
    cfg = load_cfg(str(tmp_path / "sub" / "top.yaml"), ["TRAIN.EPOCHS", "6"])
    # defaults < base < mid < top < command line
    assert (cfg.SEED, cfg.TRAIN.LR, cfg.TRAIN.EPOCHS, cfg.CFG_NAME) == (7, 0.02, 6, "top")
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="leads back to itself"):
        load_cfg(str(tmp_path / "a.yaml"))
    (tmp_path / "lost.yaml").write_text("_BASE_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml"):
        load_cfg(str(tmp_path / "lost.yaml"))


def _minimal_index(root, n=1):
    info = {"format": idx.FORMAT, "version": idx.FORMAT_VERSION, "dataset": "h36m", "num_joints": 17,
            "splits": {"train": {"file": "train.npz", "count": n}}}
    (root / idx.INDEX_FILE).write_text(json.dumps(info))


def test_truncated_npz_names_the_file_and_force(tmp_path):
    np.savez(tmp_path / "full.npz", **{k: np.zeros((50, 17, 3)) for k in ("a", "b", "c")})
    data = (tmp_path / "full.npz").read_bytes()
    for name in ("train.npz", "stats.npz"):
        (tmp_path / name).write_bytes(data[: len(data) // 3])
    _minimal_index(tmp_path)
    with pytest.raises(CorruptFileError) as err:
        idx.load_split(tmp_path, "train", "h36m")
    assert str(tmp_path / "train.npz") in str(err.value) and "--force" in str(err.value)
    with pytest.raises(CorruptFileError) as err:
        idx.load_stats(tmp_path)
    assert str(tmp_path / "stats.npz") in str(err.value) and "--force" in str(err.value)


def test_truncated_annot_h5_is_named(tmp_path, capsys):
    import h5py
    from lib.datasets.prepare_h36m import prepare_h36m
    from run import prepare_h36m as prepare_cli
    seq = tmp_path / "src" / "processed" / "S1" / "Eating-1"
    seq.mkdir(parents=True)
    with h5py.File(seq / "annot.h5", "w") as f:
        for key, shape in (("pose/2d", (40, 32, 2)), ("pose/3d", (40, 32, 3)), ("frame", (40,))):
            f[key] = np.ones(shape)
        f["camera"] = np.full(40, 54138969)
    # a well-formed file without images: the empty split is one line from the CLI, as before run_cli
    argv = ["--src", str(tmp_path / "src"), "--dst", str(tmp_path / "out"), "--splits", "train"]
    rc, lines = _cli(prepare_cli.main, argv, capsys)
    lines = [x for x in lines if "seq/s]" not in x]               # minus the progress bar (stderr too)
    assert rc == 2 and len(lines) == 1 and "split 'train' is empty" in lines[0]
    data = (seq / "annot.h5").read_bytes()
    (seq / "annot.h5").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError) as err:
        prepare_h36m(tmp_path / "src", tmp_path / "out", splits=["train"], progress=False, log=lambda *_: None)
    assert str(seq / "annot.h5") in str(err.value) and "--force" in str(err.value)


def test_truncated_json_names_file_and_line(tmp_path):
    from lib.datasets.prepare_panoptic import load_calibration
    seq = tmp_path / "160422_ultimatum1"
    seq.mkdir()
    (seq / f"calibration_{seq.name}.json").write_text('{"cameras": [\n  {"panel": 0, "node": 3,\n')
    with pytest.raises(BadValueError, match=f"calibration_{seq.name}.json line 3, column 1"):
        load_calibration(seq)


def test_bad_boxes_files_name_file_and_line(tmp_path):
    from run.infer import read_boxes
    bad_json = tmp_path / "boxes.json"
    bad_json.write_text('[\n  [0, 0, 10, 10],\n  [0, 0, 10 10]\n]\n')
    with pytest.raises(BadValueError, match=r"boxes.json line 3, column"):
        read_boxes(bad_json)
    bad_csv = tmp_path / "boxes.csv"
    bad_csv.write_text("key,x1,y1,x2,y2\na.jpg,0,0,10,10\nb.jpg,0,0,10\n")
    with pytest.raises(BadValueError, match=r"boxes.csv line 3: expected 'key,x1,y1,x2,y2'"):
        read_boxes(bad_csv)


class _FullDisk:
    """A file that accepts ``room`` bytes and then fails as a full disk does."""

    def __init__(self, path, mode, room):
        self.fh, self.room = open(path, mode), room

    def write(self, data):
        if self.room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_disk_full_while_saving_keeps_the_previous_file(tmp_path, monkeypatch, capsys):
    from lib.utils import atomic_io
    path = tmp_path / "checkpoint.pth"
    atomic_io.atomic_save({"w": torch.ones(10)}, path)
    before = path.read_bytes()
    monkeypatch.setattr(atomic_io, "open", lambda p, mode: _FullDisk(p, mode, room=2000), raising=False)

    def save():
        atomic_io.atomic_save({"w": torch.zeros(100_000)}, path)

    with pytest.raises(DiskFullError) as err:
        save()
    assert str(path) in str(err.value) and "previous file is intact" in str(err.value)
    assert path.read_bytes() == before and not (tmp_path / "checkpoint.pth.tmp").exists()
    rc, lines = _cli(lambda argv: save(), None, capsys)
    assert rc == 2 and len(lines) == 1 and str(path) in lines[0]


def test_disk_full_while_preparing_keeps_the_previous_index_file(tmp_path, monkeypatch):
    arrays = {"x": np.arange(5)}
    idx._atomic_write(tmp_path / "stats.npz", lambda tmp: idx._save_npz(tmp, arrays))
    before = (tmp_path / "stats.npz").read_bytes()

    def full(tmp, arrays):
        Path(tmp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(idx, "_save_npz", full)
    with pytest.raises(DiskFullError, match="stats.npz; the previous file is intact"):
        idx._atomic_write(tmp_path / "stats.npz", lambda tmp: idx._save_npz(tmp, arrays))
    assert (tmp_path / "stats.npz").read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["stats.npz"]


def test_plain_enospc_from_any_writer_is_one_line(capsys):
    def main(argv):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/report.md")
    rc, lines = _cli(main, None, capsys)
    assert rc == 2 and lines == ["error: no space left on the device writing /data/out/report.md; free space, then "
                                 "re-run (set L2D_DEBUG=1 for the traceback)"]


# ------------------------------------------------------------------------------------- smaller ones
def _jpeg_bytes(h=64, w=48):
    # noise: the scan data dominates the file, so cutting it in half leaves a complete header
    image = np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def test_half_truncated_jpeg_is_detected(tmp_path):
    from lib.datasets.prepare_h36m import check_image
    from lib.utils.safe_io import jpeg_is_complete, read_image
    data = _jpeg_bytes()
    half = tmp_path / "half.jpg"
    half.write_bytes(data[: len(data) // 2])
    grey = cv2.imread(str(half))                       # the failure: OpenCV decodes it, no error ...
    assert grey is not None and grey[-8:].std() == 0   # ... with a flat grey lower part
    image, why = read_image(half)
    assert image is None and why.startswith("truncated JPEG")
    assert check_image(half) == "truncated"
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data + b"\x00" * 16)            # padding after the end marker is still complete
    assert jpeg_is_complete(whole.read_bytes()) and check_image(whole) == "ok"
    np.testing.assert_array_equal(read_image(whole)[0], cv2.imread(str(whole)))


@pytest.fixture(scope="module")
def demo_with_bad_jpeg(tmp_path_factory):
    """The tiny synthetic set with one training JPEG cut in half before preparation (images checked)."""
    from lib.datasets.synthetic import make_h36m_demo
    from run import prepare_h36m
    root = tmp_path_factory.mktemp("badjpeg") / "data"
    make_h36m_demo(root, seed=3, frames_per_seq=3, image_size=64, actions_per_subject=1,
                   subjects=("S1", "S9"), preview=False)
    victim = sorted((root / "processed" / "S1").rglob("*.jpg"))[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    info = prepare_h36m.main(["--src", str(root), "--dst", str(root), "--train-interval", "1",
                              "--valid-interval", "1"])
    return root, info


def _tiny(root):
    cfg = get_cfg()
    cfg.DATASET.ROOT = str(root)
    cfg.MODEL.IMAGE_SIZE = [48, 64]
    cfg.MODEL.HEATMAP_SIZE = [12, 16]
    cfg.MODEL.SIGMA = 1.0
    return cfg


def test_preparation_skips_and_counts_truncated_jpeg(demo_with_bad_jpeg):
    root, info = demo_with_bad_jpeg
    train = info["report"]["splits"]["train"]
    assert train["skipped_truncated_image"] == 1 and train["kept"] == 4 * 3 - 1
    assert info["report"]["splits"]["valid"]["skipped_truncated_image"] == 0


def test_reader_skips_truncated_jpeg_and_finds_stale_index_at_start(demo_with_bad_jpeg, tmp_path, caplog):
    from lib.datasets import build_dataset
    src, _ = demo_with_bad_jpeg
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    ds = build_dataset(_tiny(root), "train", is_train=False)
    n = len(ds)
    ds.image_path(1).write_bytes(ds.image_path(1).read_bytes()[:300])   # cut after preparation
    with caplog.at_level(logging.WARNING):
        assert ds.read_image(1) is None and ds[1][3]["index"] == 2
    assert any("truncated JPEG" in r.getMessage() for r in caplog.records)
    # a stale index: two images gone -> found when the dataset is built, with the count and the fix
    gone = [ds.image_path(0), ds.image_path(5)]
    for p in gone:
        p.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds2 = build_dataset(_tiny(root), "train", is_train=False)
    assert len(ds2) == n - 2 and ds2.summary()["missing_images_dropped"] == 2
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert f"2 of {n} indexed images are missing" in msg and "--force" in msg and str(gone[0]) in msg
    shutil.rmtree(root / "processed" / "S1")
    with pytest.raises(idx.DatasetIndexError, match=f"none of the {n} images.*--force"):
        build_dataset(_tiny(root), "train", is_train=False)


@pytest.mark.parametrize("opts, key", [
    (["TRAIN.EPOCHS", -1], "TRAIN.EPOCHS"), (["TRAIN.AMP", "fp8"], "TRAIN.AMP"),
    (["TRAIN.BATCH_SIZE_PER_GPU", 0], "TRAIN.BATCH_SIZE_PER_GPU"),
    (["TEST.BATCH_SIZE_PER_GPU", -4], "TEST.BATCH_SIZE_PER_GPU"),
    (["LIFTER_TRAIN.BATCH_SIZE", -1], "LIFTER_TRAIN.BATCH_SIZE")])
def test_invalid_values_rejected_when_the_config_loads(opts, key):
    with pytest.raises(BadValueError, match=f"config {key} = "):
        load_cfg(CFG, opts)


def test_epochs_minus_one_and_cross_valid_single_lifter_end_in_one_line(capsys, tmp_path):
    from run import train_hrnet, valid_hrnet
    rc, lines = _cli(train_hrnet.main, ["--cfg", CFG, "--epochs", "-1", "OUTPUT_DIR", str(tmp_path)], capsys)
    assert rc == 2 and len(lines) == 1 and "TRAIN.EPOCHS = -1" in lines[0]
    assert not any(tmp_path.iterdir())                  # nothing was started
    run = tmp_path / "run"                              # what a single-lifter training run leaves
    run.mkdir()
    (run / "config.yaml").write_text("MODEL_3D:\n  NAMES: [sb]\n")
    (run / "model_best.pth").write_bytes(b"")
    rc, lines = _cli(valid_hrnet.main, ["--cfg", CFG, "--model_3d", "sb", "--cross_valid", "--model_dir",
                                        str(run), "USE_CUDA", "False"], capsys)
    assert rc == 2 and len(lines) == 1
    assert "single-lifter run" in lines[0] and "multi-model" in lines[0] and "model_best_cross.pth" in lines[0]


def test_unknown_lifter_is_one_line_exit_2(capsys):
    from run import train_lifter
    rc, lines = _cli(train_lifter.main, ["--cfg", CFG, "--model_3d", "sb,nosuch"], capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: unknown lifter") and "nosuch" in lines[0]


def test_interrupt_is_one_line_without_traceback(capsys):
    def main(argv):
        raise KeyboardInterrupt
    rc, lines = _cli(main, None, capsys)
    assert rc == 130 and lines == ["interrupted"]


def test_real_cli_process_one_line_exit_2(tmp_path):
    """A CLI as a user runs it (its own process): a wrong --src -> one line naming it, exit 2."""
    proc = subprocess.run([sys.executable, "run/prepare_h36m.py", "--src", str(tmp_path / "nowhere")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and str(tmp_path / "nowhere") in lines[0], proc.stderr


def test_real_sigint_gives_one_line_and_130():
    """A real Ctrl-C (SIGINT to the process) while a command runs: 'interrupted', exit 130, no traceback."""
    import signal
    code = ("import sys, time\nfrom lib.utils.errors import run_cli\n"
            "def main(argv):\n    print('ready', flush=True)\n    time.sleep(120)\n"
            "sys.exit(run_cli(main))\n")
    # a shell's background job inherits SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # the child starts with the default disposition, as a command started from a terminal does
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "ready"      # main is running: the signal lands inside it
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and [x for x in err.splitlines() if x.strip()] == ["interrupted"], err
