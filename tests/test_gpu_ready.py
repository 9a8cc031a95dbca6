"""What a first GPU run would trip over or be skewed or slowed by, checked on the CPU
(docs/scaling.md#gpu-notes): the torch version check of every command; the GPU each torchrun process
takes (mocked device counts) and the collective timeout each entry point passes (a stand-in
init_process_group); rank 0's long work outlasting a real (gloo) collective timeout; no blocking
host-to-device copy per step (counted) with the numbers unchanged (the lifter's flip masks bit for
bit); the loader workers' cap and OpenCV threads; TRAIN.TF32. The float32 heatmap layer is tested in
tests/test_amp.py, the fp16 non-finite check in tests/test_heatmap.py."""
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
    """torchrun's environment for rank 5 of 8 (LOCAL_RANK 5 on its node) without a process group:
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


# ----------------------------------------------------------------------------- no host-to-device copy per step
def _old_epoch_inputs(data, sched, gen, perm, world, rank):
    """The lifter trainer's inputs per step as it drew them before: a flip mask per step from ``gen``."""
    from lib.engine.lifter_trainer import flip_batch
    n = data.x_tr.shape[0]
    order = torch.randperm(n, generator=gen)
    steps = []
    for step, s in enumerate(range(0, n, sched.batch_size)):
        if sched.max_steps and step >= sched.max_steps:
            break
        idx_b = order[s:s + sched.batch_size]
        n_glob = idx_b.shape[0]
        if world > 1 and n_glob < 2 * world:
            break
        mask = torch.rand(n_glob, generator=gen) < 0.5
        if world > 1:
            part = torch.tensor_split(torch.arange(n_glob), world)[rank]
            idx_b, mask = idx_b[part], mask[part]
        x, size, y = data.x_tr[idx_b], data.size_tr[idx_b], data.y_tr[idx_b]
        if data.v_tr is None:
            steps.append(flip_batch(x, size, y, perm, mask) + (None,))
        else:
            steps.append(flip_batch(x, size, y, perm, mask, data.v_tr[idx_b]))
    return steps


@pytest.mark.parametrize("n, batch, max_steps, world, rank, masked", [
    (23, 5, 0, 1, 0, False),          # a short last batch
    (23, 5, 2, 1, 0, True),           # MAX_STEPS_PER_EPOCH cuts the epoch; joint masks
    (21, 5, 0, 2, 1, False),          # torchrun rank 1: a last global batch of 1 < 2 x 2 is skipped
    (40, 8, 0, 2, 0, True)])
def test_lifter_flip_masks_drawn_once_per_epoch_are_the_per_step_draws(n, batch, max_steps, world, rank, masked):
    """Two epochs: every step's (flipped) inputs and the generator's state afterwards are bit for bit
    those of one mask drawn per step."""
    from types import SimpleNamespace

    import model_3d
    from lib.core.skeleton import get_skeleton
    from lib.engine.lifter_trainer import LifterData, _flip_perm, _Schedule, _train_epoch

    g = torch.Generator().manual_seed(5)
    j = 17
    valid = (torch.rand(n, j, generator=g) > 0.2).float() if masked else None
    data = LifterData(torch.rand(n, j, 2, generator=g) * 1000, torch.full((n, 2), 1000.0),
                      torch.randn(n, j, 3, generator=g) * 50, valid, None, None, None, None, None, ROOT)
    recipe = model_3d.get_recipe("videopose", "h36m")
    sched = _Schedule(recipe, 0.0, batch, max_steps, 5, 10, True)
    perm = _flip_perm(get_skeleton("h36m"))
    net = torch.nn.Linear(1, 1)
    seen = []

    def step_loss(x, size, y, v=None):
        seen.append((x, y, v))
        return net.weight.sum() * 0.0

    new_gen, old_gen = torch.Generator().manual_seed(42), torch.Generator().manual_seed(42)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    for _epoch in range(2):
        seen.clear()
        _train_epoch(step_loss, SimpleNamespace(net=net), optimizer, data, sched, new_gen, perm, 0, world, rank,
                     torch.device("cpu"))
        expected = _old_epoch_inputs(data, sched, old_gen, perm, world, rank)
        assert len(seen) == len(expected) > 0
        for (x, y, v), (ex, ey, ev) in zip(seen, expected):
            assert torch.equal(x, ex) and torch.equal(y, ey) and (v is None) == (ev is None)
            assert v is None or torch.equal(v, ev)
        assert torch.equal(new_gen.get_state(), old_gen.get_state())


class _HostCopies:
    """Records what is a blocking host-to-device copy on a GPU (a stream synchronisation): torch.tensor /
    torch.as_tensor given a device, and Tensor.to(<device>) without non_blocking=True. On the CPU
    these cost nothing, so the code's structure is what is checked: the count must not grow with the
    number of steps or batches."""

    # Moves of tensors that live on the device from the first step on (no-ops there): the DWA history
    # (DWAState.update) and the weights computed from it (L2DObjective.lifter_weights).
    ON_DEVICE_AFTER_FIRST_STEP = {("losses.py", "update"), ("objective.py", "lifter_weights")}

    def __init__(self, monkeypatch):
        import sys
        self.calls = []
        real_tensor, real_as_tensor, real_to = torch.tensor, torch.as_tensor, torch.Tensor.to

        def tensor(*args, **kw):
            if kw.get("device") is not None:
                self.calls.append("torch.tensor")
            return real_tensor(*args, **kw)

        def as_tensor(*args, **kw):
            if kw.get("device") is not None:
                self.calls.append("torch.as_tensor")
            return real_as_tensor(*args, **kw)

        def to(t, *args, **kw):
            to_device = "device" in kw or any(isinstance(a, (torch.device, str)) for a in args)
            caller = sys._getframe(1).f_code
            site = (caller.co_filename.replace("\\", "/").rsplit("/", 1)[-1], caller.co_name)
            if to_device and not kw.get("non_blocking", False) and site not in self.ON_DEVICE_AFTER_FIRST_STEP:
                self.calls.append(f"Tensor.to in {site}")
            return real_to(t, *args, **kw)

        monkeypatch.setattr(torch, "tensor", tensor)
        monkeypatch.setattr(torch, "as_tensor", as_tensor)
        monkeypatch.setattr(torch.Tensor, "to", to)

    def count(self, fn) -> int:
        fn()                                   # once before: caches and one-off moves are made
        self.calls.clear()
        fn()
        return len(self.calls)


@pytest.fixture
def host_copies(monkeypatch):
    return _HostCopies(monkeypatch)


@pytest.mark.parametrize("cfg_file", ["experiments/demo/tiny_96x128.yaml", "experiments/demo/tiny_panoptic.yaml"])
def test_training_steps_make_no_host_copies(cfg_file, host_copies):
    """A guided training step (the Panoptic remap of every step included) makes no blocking host copy:
    3 steps make as many as 1 (one-off setup only), and the constants it uses are made once."""
    import copy
    import logging

    from benchmarks.benchmark import build_lifters, random_batch
    from lib.config import load_cfg
    from lib.core.heatmap import device_constant, prepare_heatmaps
    from lib.core.objective import L2DObjective
    from lib.core.skeleton import get_skeleton
    from lib.engine.builders import build_detector
    from lib.engine.train_epoch import train_one_epoch

    cfg = load_cfg(cfg_file, ["LOSS.LOSS_3D", "True", "LOSS.LOSS_3D_Z", "True", "LOSS.OHKLM", "True",
                              "PRINT_FREQ", "100"])
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_detector(cfg)
    lifters = build_lifters(["sb"], get_skeleton(cfg.DATASET.DATASET).num_joints, cpu)
    batches = [random_batch(cfg, 2, cpu, seed=s) for s in range(3)]

    def epoch(n):
        net = copy.deepcopy(model)
        train_one_epoch(0, net, L2DObjective(cfg, lifters), batches[:n], torch.optim.Adam(net.parameters()),
                        None, cpu, cfg, logging.getLogger("copies"), is_main=False)

    assert host_copies.count(lambda: epoch(3)) == host_copies.count(lambda: epoch(1))
    maps = torch.rand(2, 17, 8, 6)
    assert host_copies.count(lambda: prepare_heatmaps(maps, "panoptic")) == 0
    assert device_constant((1, 2), torch.long, "cpu") is device_constant((1, 2), torch.long, "cpu")


def test_validation_moves_indices_once(monkeypatch, host_copies):
    """Dataset indices and action indices go to the device once per validation, not per batch; the
    numbers are unchanged: with the DDP ordering path on (indices given in reverse), the per-sample
    errors come back in dataset order and equal the plain run's."""
    import lib.engine.evaluator as ev
    from benchmarks.benchmark import build_lifters, random_batch
    from lib.config import load_cfg
    from lib.engine.builders import build_detector

    cfg = load_cfg("experiments/demo/tiny_96x128.yaml", ["TEST.ACTION_VALID", "True"])
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_detector(cfg)
    lifters = build_lifters(["sb"], 17, cpu)
    batches = [random_batch(cfg, 2, cpu, seed=s) for s in range(4)]
    plain = ev.validate(cfg, batches, model, cpu, lifters, action_valid=True)
    for i, (_, _, _, meta) in enumerate(batches):
        meta["index"] = torch.tensor([7 - 2 * i, 6 - 2 * i])          # dataset order = reversed rows
    monkeypatch.setattr(ev, "is_dist", lambda: True)                   # gather (an identity here) and reorder
    copies = [host_copies.count(lambda: ev.validate(cfg, batches[:n], model, cpu, lifters, action_valid=True))
              for n in (2, 4)]
    assert copies[0] == copies[1]
    ordered = ev.validate(cfg, batches, model, cpu, lifters, action_valid=True)
    rows = torch.arange(8).reshape(4, 2).flip(0).flip(1).reshape(-1).numpy()      # dataset index -> plain row
    assert (ordered["per_sample_mpjpe"]["sb"] == plain["per_sample_mpjpe"]["sb"][rows]).all()
    for name, per in plain["per_action"].items():
        for action, value in per.items():
            got = ordered["per_action"][name][action]
            assert (got is None and value is None) or got == pytest.approx(value, rel=1e-12), action
    assert ordered["mpjpe"] == pytest.approx(plain["mpjpe"], rel=1e-12) and ordered["pdj"] == plain["pdj"]


def test_lifter_epoch_moves_its_masks_once(host_copies):
    """One lifter epoch copies its permutation and its flip masks once, however many steps it makes."""
    from types import SimpleNamespace

    import model_3d
    from lib.core.skeleton import get_skeleton
    from lib.engine.lifter_trainer import LifterData, _flip_perm, _Schedule, _train_epoch
    n, j = 40, 17
    data = LifterData(torch.rand(n, j, 2) * 1000, torch.full((n, 2), 1000.0), torch.randn(n, j, 3), None,
                      None, None, None, None, None, ROOT)
    net = torch.nn.Linear(1, 1)
    perm = _flip_perm(get_skeleton("h36m"))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)

    def epoch(batch):
        sched = _Schedule(model_3d.get_recipe("videopose", "h36m"), 0.0, batch, 0, 5, 10, True)
        _train_epoch(lambda x, size, y: net.weight.sum() * 0.0, SimpleNamespace(net=net), optimizer, data, sched,
                     torch.Generator().manual_seed(0), perm, 0, 1, 0, torch.device("cpu"))

    assert host_copies.count(lambda: epoch(4)) == host_copies.count(lambda: epoch(20)) == 2


# ----------------------------------------------------------------------------- data loader workers
@pytest.mark.parametrize("requested, cpus, local, train, valid", [
    (24, 96, 8, 11, 6),        # 8 GPUs on 96 CPUs: 96 / 8 - 1 for the process itself
    (24, 16, 1, 15, 8),        # one GPU, 16 CPUs
    (4, 2, 1, 1, 1),           # at least one worker when WORKERS > 0
    (24, 8, 8, 1, 1),
    (3, 64, 2, 3, 2),          # WORKERS below the cap is kept
    (0, 64, 1, 0, 0)])         # WORKERS 0: data loading in the main process
def test_loader_workers_are_capped_by_the_cpus_of_the_process(requested, cpus, local, train, valid):
    from lib.engine.builders import loader_workers
    assert loader_workers(requested, False, cpus, local) == train
    assert loader_workers(requested, True, cpus, local) == valid


@pytest.mark.filterwarnings("ignore:This DataLoader will create")   # torch compares with this machine's CPUs
def test_loaders_take_the_cap_from_affinity_and_torchrun(monkeypatch):
    """make_loader / valid_loader read the CPUs (affinity mask) and LOCAL_WORLD_SIZE themselves, and set
    the OpenCV worker initialisation."""
    import lib.engine.builders as builders
    from lib.config import get_cfg
    monkeypatch.setattr(builders, "usable_cpus", lambda: 96)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    cfg = get_cfg()
    cfg.WORKERS = 24
    data = list(range(10))
    train = builders.make_loader(data, 2, None, cfg, torch.device("cpu"))
    valid = builders.valid_loader(cfg, data, torch.device("cpu"), 1, 8)
    assert (train.num_workers, valid.num_workers) == (11, 6)
    assert train.worker_init_fn is builders.loader_worker_init is valid.worker_init_fn
    assert train.persistent_workers and valid.persistent_workers


class _CvThreads(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        import cv2
        return cv2.getNumThreads()


def test_workers_run_opencv_without_its_thread_pool(monkeypatch):
    import cv2

    import lib.engine.builders as builders
    from lib.config import get_cfg
    calls = []
    monkeypatch.setattr(cv2, "setNumThreads", calls.append)
    builders.loader_worker_init(0)
    assert calls == [0]
    monkeypatch.undo()
    # a real worker: the parent's 4 OpenCV threads (inherited by a forked worker) become 1 there
    monkeypatch.setattr(builders, "usable_cpus", lambda: 4)
    cfg = get_cfg()
    cfg.WORKERS = 1
    before = cv2.getNumThreads()
    cv2.setNumThreads(4)
    try:
        loader = builders.make_loader(_CvThreads(), 2, None, cfg, torch.device("cpu"))
        assert [int(v) for v in next(iter(loader))] == [1, 1]
    finally:
        cv2.setNumThreads(before)


# ----------------------------------------------------------------------------- TF32
@pytest.fixture
def tf32_restored():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _tf32():
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


def test_tf32_switch_sets_matmul_and_cudnn_together(tf32_restored):
    from lib.config import get_cfg
    from lib.utils.device import apply_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True     # torch's defaults
    apply_tf32(True)
    assert _tf32() == (True, True)
    apply_tf32(False)
    assert _tf32() == (False, False)
    assert get_cfg().TRAIN.TF32 is True                   # the default: the original's torch 1.8 behaviour


@pytest.mark.parametrize("tf32", [False, True])
def test_training_lifter_training_and_validation_apply_tf32(fake_group, monkeypatch, tmp_path, tf32_restored, tf32):
    """TRAIN.TF32 is set before anything runs (here: before the process group, which stops the call)."""
    import torch.distributed as dist
    from lib.engine.evaluator import evaluation_context
    from lib.engine.lifter_trainer import train_lifter
    from lib.engine.trainer import train

    def stop(**kw):
        raise _Recorded()

    monkeypatch.setattr(dist, "init_process_group", stop)
    cfg = _cfg("OUTPUT_DIR", str(tmp_path), "DATASET.ROOT", str(tmp_path / "data"), "TRAIN.TF32", str(tf32))
    for call in (lambda: train(cfg), lambda: train_lifter(cfg, "sb"), lambda: evaluation_context(cfg)):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = (not tf32), (not tf32)
        with pytest.raises(_Recorded):
            call()
        assert _tf32() == (tf32, tf32)
