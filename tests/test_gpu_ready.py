"""What a first GPU run would trip over, checked on the CPU (docs/scaling.md#gpu-notes): the torch
version check of every command, ..."""
import subprocess
import sys

import pytest
import torch

from conftest import ROOT


# ----------------------------------------------------------------------------- the torch version
@pytest.mark.parametrize("version, ok", [("2.4.1+cu121", False), ("2.0.0", False), ("1.13.1", False),
                                         ("2.5.0", True), ("2.5.0a0+git1234", True), ("2.13.0+cpu", True),
                                         ("3.0.0", True)])
def test_version_check_knows_the_minimum(version, ok):
    from lib.utils.versions import TorchVersionError, check_torch
    if ok:
        assert check_torch(version) == version
    else:
        with pytest.raises(TorchVersionError):
            check_torch(version)


def test_every_command_stops_on_an_old_torch_with_one_line(monkeypatch, capsys):
    from lib.utils.errors import EXIT_USER_ERROR, run_cli
    ran = []
    monkeypatch.setattr(torch, "__version__", "2.4.1+cu121")
    rc = run_cli(ran.append, ["--cfg", "x.yaml"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == EXIT_USER_ERROR and ran == []                  # main never started
    assert len(err) == 1
    assert "PyTorch 2.4.1+cu121 is installed" in err[0] and "torch>=2.5" in err[0] and "upgrade" in err[0]
    monkeypatch.setattr(torch, "__version__", "2.5.1")
    assert run_cli(ran.append, ["a"]) == 0 and ran == [["a"]]


def test_the_minimum_has_the_apis_the_code_calls_and_the_requirements_state_it():
    # the APIs the minimum stands for exist in the installed torch (which passes the check)
    from lib.utils.versions import MIN_TORCH_TEXT, check_torch
    check_torch()
    assert callable(torch.serialization.safe_globals) and callable(torch.amp.GradScaler)
    assert f"torch>={MIN_TORCH_TEXT}" in (ROOT / "requirements.txt").read_text().split()
    assert f"pytorch>={MIN_TORCH_TEXT}" in (ROOT / "L2D.yaml").read_text().replace("- ", "").split()


def test_version_check_as_a_command():
    proc = subprocess.run([sys.executable, "-m", "lib.utils.versions"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""


# ----------------------------------------------------------------------------- process group: device and timeout
class _Recorded(Exception):
    """Raised by the stand-in init_process_group once it has recorded its arguments."""


@pytest.fixture
def fake_group(monkeypatch):
    """torchrun's environment for rank 1 of 8 (LOCAL_RANK 5 on its node) without a process group:
    init_process_group records its keywords; set_device records its index."""
    import torch.distributed as dist
    calls = {"init": [], "set_device": []}
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "5")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls["init"].append(kw))
    monkeypatch.setattr(dist, "get_rank", lambda *a, **k: 5)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 8)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls["set_device"].append(i))
    return calls


@pytest.mark.parametrize("visible, index", [(8, 5), (1, 0), (4, 1)])
def test_each_process_takes_a_visible_gpu(fake_group, monkeypatch, visible, index):
    # 8 visible: torchrun's one GPU per LOCAL_RANK; 1 visible: SLURM --gpus-per-task=1 / a per-rank
    # CUDA_VISIBLE_DEVICES (set_device(5) would be "invalid device ordinal"); 4: groups of GPUs
    from lib.engine.distributed import init_distributed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
    info = init_distributed(use_cuda=True)
    assert fake_group["set_device"] == [index] and info.device == torch.device("cuda", index)
    assert fake_group["init"][0]["backend"] == "nccl" and (info.rank, info.world_size, info.local_rank) == (5, 8, 5)


def test_the_collective_timeout_reaches_init_process_group(fake_group):
    import datetime

    from lib.engine.distributed import DEFAULT_TIMEOUT_MINUTES, init_distributed
    from lib.utils.errors import BadValueError
    init_distributed(use_cuda=False, timeout_minutes=240)
    init_distributed(use_cuda=False)
    assert [c["timeout"] for c in fake_group["init"]] == [datetime.timedelta(hours=4),
                                                         datetime.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES)]
    assert fake_group["init"][0]["backend"] == "gloo" and fake_group["set_device"] == []
    with pytest.raises(BadValueError, match="DIST_TIMEOUT_MINUTES"):
        init_distributed(use_cuda=False, timeout_minutes=0)


def _cfg(*opts):
    from lib.config import get_cfg
    cfg = get_cfg()
    cfg.merge_from_list(["USE_CUDA", "False", "DIST_TIMEOUT_MINUTES", "135"] + list(opts))
    return cfg


def test_every_entry_point_passes_the_configured_timeout(fake_group, monkeypatch, tmp_path):
    """train, train_lifter, evaluation_context and the pipeline open the group with DIST_TIMEOUT_MINUTES."""
    import datetime

    import torch.distributed as dist
    from lib.apps.pipeline import Pipeline
    from lib.engine.evaluator import evaluation_context
    from lib.engine.lifter_trainer import train_lifter
    from lib.engine.trainer import train

    def record_then_stop(**kw):
        fake_group["init"].append(kw)
        raise _Recorded()

    monkeypatch.setattr(dist, "init_process_group", record_then_stop)
    cfg = _cfg("OUTPUT_DIR", str(tmp_path), "DATASET.ROOT", str(tmp_path / "data"))
    for call in (lambda: train(cfg), lambda: train_lifter(cfg, "sb"), lambda: evaluation_context(cfg),
                 lambda: Pipeline(cfg, tmp_path / "out").run()):
        with pytest.raises(_Recorded):
            call()
    assert [c["timeout"] for c in fake_group["init"]] == [datetime.timedelta(minutes=135)] * 4
    assert "DIST_TIMEOUT_MINUTES" in (ROOT / "docs" / "config.md").read_text()


# ----------------------------------------------------------------------------- rank 0's long work
_RANK0_SCRIPT = r'''
import json, os, sys, time
import torch.distributed as dist
from lib.engine import distributed as ddp

ddp.init_distributed(use_cuda=False, timeout_minutes=float(sys.argv[2]) / 60)   # a 3-second timeout
out = {}
def slow():
    time.sleep(float(sys.argv[3]))          # twice the collective timeout
    return {"prepared": True}
out["result"] = ddp.run_on_main(slow, poll_s=0.2)
def fails():
    raise ValueError("no such source folder")
try:
    ddp.run_on_main(fails, poll_s=0.2)
except ddp.RankZeroFailedError as err:
    out["error"] = "RankZeroFailedError: " + str(err)
except ValueError as err:
    out["error"] = "ValueError: " + str(err)
out["after"] = ddp.run_on_main(lambda: 7)   # the group still works after a failure
ddp.barrier()
# the way it was: rank 0 works, the others wait in one broadcast -> the collective times out
box = [None]
try:
    if ddp.rank() == 0:
        time.sleep(float(sys.argv[3]))
        box = [1]
    dist.broadcast_object_list(box, src=0)
    out["plain_wait"] = "finished"
except Exception as err:                    # noqa: BLE001
    out["plain_wait"] = type(err).__name__
with open(os.path.join(sys.argv[1], f"rank{ddp.rank()}.json"), "w") as fh:
    json.dump(out, fh)
os._exit(0)                                 # the plain wait may have left the group unusable
'''


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_rank0_work_longer_than_the_collective_timeout(tmp_path):
    """Two gloo processes with a 3 s collective timeout: rank 0 works 6 s and the other rank gets its
    result (waiting in polls); rank 0's error stops the other rank with one clear error; a plain
    broadcast wait over the same 6 s times out, as NCCL's watchdog would stop it."""
    import json
    import os

    from conftest import free_port
    script = tmp_path / "rank0.py"
    script.write_text(_RANK0_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", "--monitor-interval=0.1", str(script), str(tmp_path), "3", "6"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["result"] == r1["result"] == {"prepared": True}
    assert r0["error"] == "ValueError: no such source folder"
    assert r1["error"].startswith("RankZeroFailedError: rank 0 stopped with an error")
    assert r0["after"] == r1["after"] == 7
    assert r1["plain_wait"] != "finished"
