"""Pipeline stages are reused only when made from the same inputs (lib/apps/stages.py); the whole
pipeline's reuse is tested in test_pipeline.py."""
import os

import pytest

from lib.apps.stages import find_run, mark_stage, reuse_stage, stage_done, stage_inputs


def _finished_run(stage_dir):
    run = stage_dir / "h36m" / "pose_hrnet" / "only_loss_2d"
    run.mkdir(parents=True)
    (run / "final_state.pth").write_bytes(b"x")
    (run / "model_best.pth").write_bytes(b"x")
    return run


def test_stage_reused_only_with_the_same_checkpoint_and_options(tmp_path):
    ckpt = tmp_path / "pre" / "model_best.pth"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"a")
    stage = tmp_path / "finetune"
    inputs = stage_inputs([ckpt], ["--epochs", 3])
    assert inputs["options"] == ["--epochs", "3"] and inputs["checkpoints"][0][0] == str(ckpt.resolve())

    assert not reuse_stage(stage, inputs)                 # nothing there yet
    run = _finished_run(stage)
    mark_stage(stage, inputs)
    assert reuse_stage(stage, inputs) and find_run(stage) == run

    # other options: cleared, to be trained again
    assert not reuse_stage(stage, stage_inputs([ckpt], ["--epochs", "4"]))
    assert not stage.exists()

    # the start checkpoint re-made (same path, new modification time): trained again
    _finished_run(stage)
    mark_stage(stage, inputs)
    stat = ckpt.stat()
    os.utime(ckpt, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 ** 9))
    assert not reuse_stage(stage, stage_inputs([ckpt], ["--epochs", 3]))
    assert not stage.exists()


def test_unfinished_or_unmarked_stage_is_cleared(tmp_path):
    stage = tmp_path / "pretrain"
    inputs = stage_inputs(options=["--epochs", "1"])
    (stage / "run").mkdir(parents=True)                   # a run that died before final_state.pth
    (stage / "stage.json").write_text("{}")
    assert not reuse_stage(stage, inputs) and not stage.exists()
    _finished_run(stage)                                  # finished but made by an older demo (no stage.json)
    assert not reuse_stage(stage, inputs) and not stage.exists()
    with pytest.raises(RuntimeError, match="model_best.pth"):
        find_run(stage)


def test_stage_done_reads_only_and_a_custom_marker_finishes_a_lifter_stage(tmp_path):
    stage = tmp_path / "lifters" / "sb"
    inputs = stage_inputs(options=["--model_3d", "sb"])
    stage.mkdir(parents=True)
    (stage / "sb_h36m.pth").write_bytes(b"w")
    mark_stage(stage, inputs)
    assert not stage_done(stage, inputs)                    # no final_state.pth: not a finished detector run
    assert stage_done(stage, inputs, "sb_h36m.pth") and reuse_stage(stage, inputs, "sb_h36m.pth")
    assert not stage_done(stage, stage_inputs(options=["--model_3d", "iganet"]), "sb_h36m.pth")
    assert stage.is_dir()                                   # stage_done never clears
    (stage / "stage.json").write_text("{trunc")             # a torn record counts as none
    assert not stage_done(stage, inputs, "sb_h36m.pth")
