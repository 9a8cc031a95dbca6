"""Engine units: LR schedule (docs/original.md#optimiser-and-learning-rate-schedule), run naming
(docs/original.md#run-folders-and-names + docs/differences.md), checkpoints, accuracy, validate()
(docs/original.md#validation-metrics)."""
import math
import random
import warnings

import numpy as np
import pytest
import torch

from conftest import ref_p_mpjpe_one
from lib.config import get_cfg, load_cfg
from lib.engine import checkpoint as ckpt_io
from lib.utils.atomic_io import atomic_save
from lib.engine.evaluator import median_over_lifters, validate
from lib.engine.builders import lr_factor, make_scheduler
from lib.engine.run_dir import loss_type, run_dir
from lib.engine.train_epoch import heatmap_accuracy
from lib.utils.logger import log_file_name

H36M_YAML = "experiments/h36m/w32_384x288_adam_lr1e-3.yaml"


# ----------------------------------------------------------------------------- LR schedule
def _reference_lrs(base, milestones, gamma, epochs, bump_epoch, bump):
    """The original: MultiStepLR stepped each epoch, LR x bump after epoch bump_epoch's step."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=base)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=gamma)
    lrs = []
    for epoch in range(epochs + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if epoch == bump_epoch:
            for g in opt.param_groups:
                g["lr"] *= bump
    return lrs


def test_lr_schedule_matches_spec_table():
    cfg = load_cfg(H36M_YAML)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=cfg.TRAIN.LR)
    sched = make_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.TRAIN.EPOCHS + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert len(lrs) == 41                                      # epochs 0..40
    table = {0: 1.0e-3, 4: 1.0e-3, 5: 6.70e-4, 9: 6.70e-4, 10: 4.489e-4, 15: 3.0076e-4, 20: 2.0151e-4,
             25: 1.3501e-4, 30: 9.0458e-5, 31: 4.5229e-4, 34: 4.5229e-4, 35: 3.0304e-4, 39: 3.0304e-4,
             40: 2.0303e-4}
    for epoch, want in table.items():
        assert lrs[epoch] == pytest.approx(want, rel=1e-4), epoch
    assert lrs[31] == pytest.approx(1e-3 * 0.67 ** 6 * 5, rel=1e-12)
    ref = _reference_lrs(1e-3, list(cfg.TRAIN.LR_STEP), 0.67, 40, 30, 5.0)
    np.testing.assert_allclose(lrs, ref, rtol=1e-12)


def test_lr_factor_edge_cases():
    cfg = get_cfg()
    cfg.TRAIN.LR_STEP = [2, 2, 4]          # repeated milestones count twice (MultiStepLR Counter)
    cfg.TRAIN.LR_FACTOR = 0.5
    cfg.TRAIN.LR_BUMP_EPOCH = -1
    assert [lr_factor(cfg, e) for e in range(6)] == [1, 1, 0.25, 0.25, 0.125, 0.125]
    cfg.TRAIN.LR_BUMP_EPOCH = 0
    assert lr_factor(cfg, 0) == 1 and lr_factor(cfg, 1) == 5.0


# ----------------------------------------------------------------------------- run naming
def _cfg(**loss):
    cfg = load_cfg(H36M_YAML)
    for k, v in loss.items():
        if k == "names":
            cfg.MODEL_3D.NAMES = v
        else:
            setattr(cfg.LOSS, k, v)
    return cfg


def test_run_dir_original_prefix_and_readme_example():
    cfg = _cfg(LOSS_3D=True, LOSS_3D_Z=True, OHKLM=True, LOSS_SINGLE_W=0.8, names=["sb"])
    name = loss_type(cfg)
    assert name.startswith("loss3dz1_dwa1_3xyw0.02_3zw0.04_ohklmw0.3")          # original's name
    assert name == "loss3dz1_dwa1_3xyw0.02_3zw0.04_ohklmw0.3_ohklm1_topk10_2dw0.5_3dw0.06_singlew0.8"
    assert run_dir(cfg).as_posix() == f"output/h36m/hrnet/{name}/sb"
    assert loss_type(_cfg()) == "only_loss_2d"
    assert run_dir(_cfg()).as_posix() == "output/h36m/hrnet/only_loss_2d"
    multi = _cfg(LOSS_3D=True, DROPOUT=True, names=["sb", "iganet"])
    assert loss_type(multi).startswith("dropout1_loss3davg0_loss3dcons0_avgw0.05_consw0.1_singlew1.0")
    assert loss_type(multi).endswith("_multi")
    assert run_dir(multi).name == "iganet_sb"


def test_run_dir_distinct_for_every_loss_option():
    variants = [dict(), dict(OHKLM=True), dict(OHKLM_TOP_K=5), dict(LOSS_2D_W=0.4), dict(LOSS_3D_W=0.1),
                dict(LOSS_SINGLE_W=0.8), dict(LOSS_3D_Z=True), dict(LOSS_3D_XY_W=0.03), dict(LOSS_3D_Z_W=0.05),
                dict(OHKLM_W=0.2), dict(LOSS_3D_AVG=True), dict(LOSS_3D_CONS=True), dict(BETA=50.0),
                dict(DWA=False), dict(DWA_T=1.0), dict(USE_TARGET_WEIGHT=False)]
    for names in (["sb"], ["sb", "videopose"]):
        dirs = [run_dir(_cfg(LOSS_3D=True, names=names, **v)) for v in variants]
        assert len(set(dirs)) == len(dirs), names
    multi = [dict(DROPOUT=True), dict(LOSS_3D_AVG_W=0.1), dict(LOSS_3D_CONS_W=0.2), dict()]
    dirs = [run_dir(_cfg(LOSS_3D=True, names=["sb", "iganet"], **v)) for v in multi]
    assert len(set(dirs)) == len(dirs)


def test_log_file_name():
    assert log_file_name("w32_384x288_adam_lr1e-3", "train", 0.0).startswith("w32_384x288_adam_lr1e-3_19")
    assert log_file_name("w32_384x288_adam_lr1e-3", "train").endswith("_train.log")


# ----------------------------------------------------------------------------- checkpoints
def test_rng_state_roundtrip_weights_only(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()            # leaves a cached gaussian in numpy's state
    state = ckpt_io.rng_state()
    path = atomic_save(ckpt_io.plain({"rng": state}), tmp_path / "rng.pth")
    first = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    loaded = torch.load(path, weights_only=True)
    ckpt_io.set_rng_state(loaded["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]


def test_plain_config_loads_weights_only(tmp_path):
    cfg = load_cfg(H36M_YAML)
    path = atomic_save({"config": ckpt_io.plain(cfg), "t": torch.ones(2)}, tmp_path / "c.pth")
    back = ckpt_io.load_checkpoint(path)
    assert back["config"]["TRAIN"]["LR_STEP"] == list(cfg.TRAIN.LR_STEP)
    assert back["config"]["MODEL"]["IMAGE_SIZE"] == [288, 384]


def test_atomic_save_crash_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    atomic_save({"epoch": 1, "w": torch.arange(4.0)}, path)
    real_save = torch.save

    def crashing_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 partial")           # half a file, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2, "w": torch.zeros(4)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    back = ckpt_io.load_checkpoint(path)
    assert back["epoch"] == 1 and torch.equal(back["w"], torch.arange(4.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]


def test_load_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ckpt_io.load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    from lib.utils.errors import CorruptFileError
    with pytest.raises(CorruptFileError, match="not a PyTorch checkpoint or truncated: .*bad.pth"):
        ckpt_io.load_checkpoint(bad)


# ----------------------------------------------------------------------------- accuracy (HRNet)
def _accuracy_reference(output, target, thr=0.5):
    """HRNet lib/core/evaluate.py accuracy, written as loops."""
    n, j, h, w = output.shape

    def maxpreds(m):
        out = np.zeros((n, j, 2))
        for a in range(n):
            for b in range(j):
                flat = m[a, b].reshape(-1)
                idx = int(np.argmax(flat))
                if flat[idx] > 0:
                    out[a, b] = (idx % w, idx // w)
        return out

    p, t = maxpreds(output), maxpreds(target)
    norm = np.array([h, w]) / 10.0
    accs = []
    for b in range(j):
        d = []
        for a in range(n):
            if t[a, b, 0] > 1 and t[a, b, 1] > 1:
                d.append(np.linalg.norm(p[a, b] / norm - t[a, b] / norm))
        if d:
            accs.append(np.mean(np.array(d) < thr))
    return sum(accs), len(accs)


def test_heatmap_accuracy_matches_reference():
    g = torch.Generator().manual_seed(0)
    output = torch.randn(3, 5, 8, 6, generator=g)
    target = torch.zeros(3, 5, 8, 6)
    locs = torch.randint(0, 6, (3, 5, 2), generator=g)
    for a in range(3):
        for b in range(5):
            target[a, b, locs[a, b, 1], locs[a, b, 0]] = 1.0
    output[0, 0] = target[0, 0]             # one exact hit
    got_sum, got_cnt = heatmap_accuracy(output, target)
    ref_sum, ref_cnt = _accuracy_reference(output.numpy(), target.numpy())
    assert float(got_cnt) == ref_cnt
    assert float(got_sum) == pytest.approx(ref_sum, abs=1e-6)


# ----------------------------------------------------------------------------- validate()
class _HeatmapsAreImages(torch.nn.Module):
    """A fake detector whose output is its input (the loader's 'images' are heatmaps)."""

    def forward(self, x):
        return x


class _FakeLifter(torch.nn.Module):
    def __init__(self, a, b, zscore_stats=None):
        super().__init__()
        self.a, self.b = a, b
        self.normalization = "zscore" if zscore_stats else "screen"
        self.mean_3d = zscore_stats[0] if zscore_stats else None
        self.std_3d = zscore_stats[1] if zscore_stats else None

    def forward(self, pose_2d_px, image_size):
        z = (pose_2d_px[..., :1] * pose_2d_px[..., 1:]) / image_size[:, None, :1] ** 2
        return torch.cat([pose_2d_px / image_size[:, None, :] * self.a, z * self.b], dim=-1) - 0.3


def _fake_batches(n_batches=3, batch=4, J=17, H=16, W=12, seed=0):
    from lib.core.skeleton import H36M_ACTIONS
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_batches):
        hm = torch.randn(batch, J, H, W, generator=g) * 0.2
        meta = {"joints_2d": torch.rand(batch, J, 2, generator=g) * 200 + 400,
                "center": torch.full((batch, 2), 500.0) + torch.randn(batch, 2, generator=g),
                "scale": torch.full((batch, 2), 1.5),
                "joints_3d": torch.randn(batch, J, 3, generator=g) * 30,
                "image_size": torch.tensor([[1000.0, 1002.0]]).repeat(batch, 1),
                "action_idx": torch.tensor([(i * batch + k) % 3 for k in range(batch)])}
        out.append((hm, torch.zeros(1), torch.zeros(1), meta))
    return out, list(H36M_ACTIONS)


@pytest.mark.parametrize("chunk", [1, 5, 100_000])
def test_validate_matches_slow_reference(chunk, monkeypatch):
    """Lifted and scored per batch (chunk 1), across batch boundaries (5 with batches of 4), or all at once."""
    from lib.core.heatmap import decode_soft
    from lib.engine import evaluator
    monkeypatch.setattr(evaluator, "LIFT_CHUNK", chunk)
    cfg = get_cfg()
    cfg.TEST.POST_PROCESS = True
    batches, actions = _fake_batches()
    stats = (torch.rand(17, 3) * 5, torch.rand(17, 3) * 20 + 5)
    lifters = {"sb": _FakeLifter(1.0, 2.0, stats), "videopose": _FakeLifter(0.5, 1.0)}
    cross = {"iganet": _FakeLifter(0.8, -1.0)}
    res = validate(cfg, batches, _HeatmapsAreImages(), torch.device("cpu"), lifters, cross,
                   beta=100.0, ensemble=True, action_valid=True)

    # slow reference, float64, sample by sample
    per, per_p, hits, acts, ens, ens_p = {n: [] for n in ("sb", "videopose", "iganet")}, \
        {n: [] for n in ("sb", "videopose", "iganet")}, [], [], [], []
    for hm, _, _, meta in batches:
        pred2d = decode_soft(hm, meta["center"], meta["scale"], 100.0, True).double().numpy()
        gt2d = meta["joints_2d"].double().numpy()
        for p, g in zip(pred2d, gt2d):
            torso = np.linalg.norm(g[11] - g[1])
            hits += [np.linalg.norm(p[j] - g[j]) < 0.2 * torso for j in range(17)]
        acts += meta["action_idx"].tolist()
        preds = {}
        for name, lifter in {**lifters, **cross}.items():
            pm = lifter(torch.from_numpy(pred2d).float(), meta["image_size"]).double().numpy() * 1000
            gcm = meta["joints_3d"].double().numpy()
            if name == "sb":
                m, s = stats[0].double().numpy(), stats[1].double().numpy()
                gcm = (gcm - m) / (s + 1e-8) * s + m
            gmm = gcm * 10
            preds[name] = (pm, gmm)
            per[name] += list(np.linalg.norm(pm - gmm, axis=-1).mean(-1))
            per_p[name] += [ref_p_mpjpe_one(p, g) for p, g in zip(pm, gmm)]
        med = np.median(np.stack([preds[n][0] for n in ("sb", "videopose", "iganet")]), axis=0)
        ens += list(np.linalg.norm(med - preds["sb"][1], axis=-1).mean(-1))
        ens_p += [ref_p_mpjpe_one(p, g) for p, g in zip(med, preds["sb"][1])]

    assert res["num_samples"] == 12
    assert res["pdj"] == pytest.approx(100 * np.mean(hits), abs=1e-9)
    for n in per:
        assert res["per_lifter"][n]["mpjpe"] == pytest.approx(np.mean(per[n]), rel=1e-5)
        assert res["per_lifter"][n]["p_mpjpe"] == pytest.approx(np.mean(per_p[n]), rel=1e-4)
    assert res["per_lifter"]["iganet"]["held_out"] and not res["per_lifter"]["sb"]["held_out"]
    assert res["main"]["mpjpe"] == pytest.approx(np.mean(per["sb"] + per["videopose"]), rel=1e-5)
    assert res["cross"]["mpjpe"] == pytest.approx(np.mean(per["iganet"]), rel=1e-5)
    assert res["ensemble"]["mpjpe"] == pytest.approx(np.mean(ens), rel=1e-5)
    assert res["ensemble"]["p_mpjpe"] == pytest.approx(np.mean(ens_p), rel=1e-4)
    assert res["mpjpe"] == res["ensemble"]["mpjpe"]              # ensemble replaces the main metric
    acts = np.array(acts)
    for a in range(15):
        want = np.mean(np.array(per["videopose"])[acts == a]) if (acts == a).any() else None
        got = res["per_action"]["videopose"][actions[a]]
        assert (got is None and want is None) or got == pytest.approx(want, rel=1e-5)


def test_validate_chunks_keep_masked_and_unmasked_batches_apart(monkeypatch):
    """A batch without ``joints_3d_valid`` (masking on) is never scored together with masked ones:
    the chunked values equal those of lifting each batch alone, sample by sample."""
    from lib.engine import evaluator
    cfg = get_cfg()
    cfg.DATASET.MASK_LOW_CONFIDENCE = True
    batches, _ = _fake_batches(n_batches=4)
    g = torch.Generator().manual_seed(3)
    for i in (0, 1, 3):                              # batch 2 carries no mask
        batches[i][3]["joints_3d_valid"] = (torch.rand(4, 17, generator=g) > 0.3).float()
    lifters = {"sb": _FakeLifter(1.0, 2.0)}
    results = {}
    for chunk in (1, 100_000):
        monkeypatch.setattr(evaluator, "LIFT_CHUNK", chunk)
        results[chunk] = validate(cfg, batches, _HeatmapsAreImages(), torch.device("cpu"), lifters, beta=100.0)
    one, many = results[1], results[100_000]
    np.testing.assert_allclose(many["per_sample_mpjpe"]["sb"], one["per_sample_mpjpe"]["sb"], rtol=1e-6)
    assert many["per_lifter"]["sb"]["p_mpjpe"] == pytest.approx(one["per_lifter"]["sb"]["p_mpjpe"], rel=1e-6)
    assert many["unmasked"]["mpjpe"] == pytest.approx(one["unmasked"]["mpjpe"], rel=1e-6)
    # batch 2's samples are scored on all their joints: their masked and unmasked errors agree
    np.testing.assert_allclose(one["per_sample_mpjpe"]["sb"][8:12],
                               _unmasked_per_sample(cfg, batches[2], lifters["sb"]), rtol=1e-5)


def _unmasked_per_sample(cfg, batch, lifter):
    from lib.core.heatmap import decode_soft
    hm, _, _, meta = batch
    pred2d = decode_soft(hm, meta["center"], meta["scale"], 100.0, bool(cfg.TEST.POST_PROCESS))
    pm = lifter(pred2d, meta["image_size"]).double().numpy() * 1000
    return np.linalg.norm(pm - meta["joints_3d"].double().numpy() * 10, axis=-1).mean(-1)


def test_validate_without_lifters_and_with_gt_2d():
    cfg = get_cfg()
    batches, _ = _fake_batches(n_batches=1)
    res = validate(cfg, batches, None, torch.device("cpu"), None, gt_2d=True)
    assert res["pdj"] == 100.0 and res["mpjpe"] == -1.0 and res["per_lifter"] == {}


def test_median_is_numpy_median():
    x = torch.randn(4, 3, 5, 3, dtype=torch.float64)
    np.testing.assert_allclose(median_over_lifters(x).numpy(), np.median(x.numpy(), axis=0))
    np.testing.assert_allclose(median_over_lifters(x[:3]).numpy(), np.median(x[:3].numpy(), axis=0))


def test_device_fallback_warns_once(monkeypatch):
    from lib.utils import device as dev
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dev.select_device(0).type == "cpu"
        assert dev.select_device(1).type == "cpu"
    assert len([w for w in caught if "CUDA is not available" in str(w.message)]) == 1
    assert dev.select_device(0, use_cuda=False).type == "cpu"
