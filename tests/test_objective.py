"""L2DObjective: every named term against an independent float64 computation
(docs/original.md#dwa-and-lifter-dropout, docs/original.md#losses),
the docs/original.md#worked-examples, example 7 composition, 2D-only and Panoptic modes, gradients and resume state."""
import io

import numpy as np
import pytest
import torch
import torch.nn as nn

from lib.config import get_cfg
from lib.core.heatmap import decode_soft, encode_heatmaps, remap_h36m_to_panoptic
from lib.core.losses import JointsMSELoss, dwa_weights
from lib.core.objective import L2DObjective, combine_losses

W_HM, H_HM = 24, 32
IMAGE = (96, 128)


class LinearLifter(nn.Module):
    """Stand-in lifter: a fixed linear map of width-normalised 2D joints (frozen)."""

    def __init__(self, seed, num_joints):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.mix = nn.Parameter(torch.eye(num_joints) + 0.1 * torch.randn(num_joints, num_joints, generator=gen),
                                requires_grad=False)
        self.proj = nn.Parameter(0.5 * torch.randn(2, 3, generator=gen), requires_grad=False)
        self.bias = nn.Parameter(0.1 * torch.randn(3, generator=gen), requires_grad=False)

    def forward(self, pose_2d_px, image_size):
        x = pose_2d_px / image_size[:, None, :1] * 2 - 1
        return self.mix.to(x.dtype) @ (x @ self.proj.to(x.dtype)) + self.bias.to(x.dtype)


def make_cfg(**loss):
    cfg = get_cfg()
    cfg.defrost()
    cfg.LOSS.LOSS_3D = True
    for key, value in loss.items():
        setattr(cfg.LOSS, key, value)
    cfg.TEST.POST_PROCESS = True
    return cfg


def make_batch(seed, n=4, num_joints=17, channels=17):
    rng = np.random.default_rng(seed)
    xs = np.arange(W_HM)[None, None, None, :]
    ys = np.arange(H_HM)[None, None, :, None]
    cx = rng.uniform(0, W_HM, size=(n, channels, 1, 1))
    cy = rng.uniform(0, H_HM, size=(n, channels, 1, 1))
    hm = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 2.0) + 0.05 * rng.standard_normal((n, channels, H_HM, W_HM))
    joints_crop = rng.uniform(0, IMAGE[0], size=(n, num_joints, 2))
    target, weight = encode_heatmaps(joints_crop, rng.uniform(size=(n, num_joints)) > 0.2, IMAGE, (W_HM, H_HM), 1)
    meta = {"center": torch.from_numpy(rng.uniform(400, 600, size=(n, 2))).float(),
            "scale": torch.from_numpy(rng.uniform(1.5, 2.5, size=(n, 2))).float(),
            "joints_3d": torch.from_numpy(rng.uniform(-80, 80, size=(n, num_joints, 3))).float(),
            "image_size": torch.tensor([[1000.0, 1002.0]]).expand(n, 2).contiguous()}
    return torch.from_numpy(hm).float(), torch.from_numpy(target), torch.from_numpy(weight), meta


def lifters_dict(num_joints=17, names=("sb", "videopose", "iganet")):
    return {name: LinearLifter(i, num_joints) for i, name in enumerate(names)}


def expected_terms(hm, target, weight, meta, lifters, loss_cfg, dwa_w, post_process=True, dataset="h36m"):
    """Independent float64 computation of docs/original.md#the-total-loss from the same decoded 2D pose."""
    if dataset == "panoptic":
        hm = remap_h36m_to_panoptic(hm)
    pose = decode_soft(hm, meta["center"], meta["scale"], 100.0, post_process).double()
    gt = meta["joints_3d"].double() / 100
    hm64, target64, weight64 = hm.double(), target.double(), weight.double()
    n, j = hm.shape[:2]
    l2d_pj = np.zeros((n, j))
    for b in range(n):
        for p in range(j):
            l2d_pj[b, p] = 0.5 * ((hm64[b, p] * weight64[b, p, 0] - target64[b, p] * weight64[b, p, 0]) ** 2).mean()
    loss_2d = l2d_pj.mean()
    preds = {name: lifter(pose, meta["image_size"].double()).detach().numpy() for name, lifter in lifters.items()}
    gt = gt.numpy()
    per = {}
    for name, p in preds.items():
        e3d = ((p - gt) ** 2).mean(axis=-1)
        hard = []
        for b in range(n):
            idx = np.argsort(-e3d[b])[:loss_cfg["OHKLM_TOP_K"]]
            hard.append(l2d_pj[b, idx].mean())
        per[name] = dict(xyz=((p - gt) ** 2).mean(), xy=((p[..., :2] - gt[..., :2]) ** 2).mean(),
                         z=((p[..., 2] - gt[..., 2]) ** 2).mean(), ohklm=np.mean(hard))
    names = list(lifters)
    w = dict(zip(names, dwa_w))
    out = {"loss_2d": loss_2d,
           "loss_ohklm": sum(w[k] * per[k]["ohklm"] for k in names),
           "loss_3d": sum(w[k] * per[k]["xyz"] for k in names),
           "loss_3d_xy": sum(w[k] * per[k]["xy"] for k in names),
           "loss_3d_z": sum(w[k] * per[k]["z"] for k in names)}
    mean_pred = sum(preds.values()) / len(preds)
    out["loss_3d_avg"] = ((mean_pred - gt) ** 2).mean()
    out["loss_3d_cons"] = sum(((preds[a] - preds[b]) ** 2).mean()
                              for i, a in enumerate(names) for b in names[i + 1:])
    out["weighted_2d"] = loss_cfg["LOSS_2D_W"] * loss_2d + loss_cfg["OHKLM_W"] * out["loss_ohklm"]
    if loss_cfg["LOSS_3D_Z"]:
        out["weighted_3d"] = loss_cfg["LOSS_3D_XY_W"] * out["loss_3d_xy"] + loss_cfg["LOSS_3D_Z_W"] * out["loss_3d_z"]
    else:
        out["weighted_3d"] = loss_cfg["LOSS_3D_W"] * out["loss_3d"]
    out["total"] = (loss_cfg["LOSS_SINGLE_W"] * (out["weighted_2d"] + out["weighted_3d"])
                    + loss_cfg["LOSS_3D_AVG_W"] * out["loss_3d_avg"] + loss_cfg["LOSS_3D_CONS_W"] * out["loss_3d_cons"])
    for k in names:
        out[f"loss_3d/{k}"] = per[k]["xyz"]
        out[f"dwa_w/{k}"] = w[k]
    return out, np.array([per[k]["xyz"] for k in names])


def full_loss_cfg(loss_3d_z):
    return dict(LOSS_3D_Z=loss_3d_z, OHKLM=True, OHKLM_TOP_K=10, DROPOUT=True, LOSS_3D_AVG=True,
                LOSS_3D_CONS=True, LOSS_SINGLE_W=0.8, LOSS_2D_W=0.5, OHKLM_W=0.3, LOSS_3D_W=0.06,
                LOSS_3D_XY_W=0.02, LOSS_3D_Z_W=0.04, LOSS_3D_AVG_W=0.05, LOSS_3D_CONS_W=0.1)


# ----------------------------------------------------------------------------- docs/original.md#worked-examples,
# example 7
def test_loss_composition_worked_example():
    one = torch.ones(1)
    out = combine_losses(torch.tensor(2e-4), torch.tensor([5e-4]), torch.tensor([9.9]), torch.tensor([1e-3]),
                         torch.tensor([4e-3]), one, torch.tensor(7.0), torch.tensor(7.0),
                         loss_2d_w=0.5, ohklm_w=0.3, loss_3d_w=0.06, loss_3d_xy_w=0.02, loss_3d_z_w=0.04,
                         loss_3d_avg_w=0.05, loss_3d_cons_w=0.1, loss_single_w=0.8,
                         use_ohklm=True, use_3d_z=True, use_avg=False, use_cons=False)
    assert out["weighted_2d"].item() == pytest.approx(2.5e-4)
    assert out["weighted_3d"].item() == pytest.approx(1.8e-4)
    assert out["total"].item() == pytest.approx(3.44e-4)


# ----------------------------------------------------------------------------- multi-model
@pytest.mark.parametrize("loss_3d_z", [True, False])
def test_three_lifters_every_term_over_three_steps(loss_3d_z):
    loss_cfg = full_loss_cfg(loss_3d_z)
    cfg = make_cfg(**loss_cfg)
    lifters = lifters_dict()
    objective = L2DObjective(cfg, lifters, seed=123)
    twin_rng = np.random.RandomState(123)
    history = [[1.0] * 3, [1.0] * 3]
    for step in range(3):
        hm, target, weight, meta = make_batch(step)
        total, terms = objective(hm.requires_grad_(True), target, weight, meta)
        hm = hm.detach()
        # DWA weights of this step from the lagged history, then the dropout draw.
        _, xyz = expected_terms(hm, target, weight, meta, lifters, loss_cfg, [1.0] * 3)
        history.append(list(xyz))
        w = np.array(dwa_weights(history[-3:], T=2.0))
        d = twin_rng.randint(0, 4)
        if d < 3:
            w[d] = 0.0
        expected, _ = expected_terms(hm, target, weight, meta, lifters, loss_cfg, w)
        assert set(terms) == set(expected)
        for key, value in expected.items():
            assert terms[key].dim() == 0 and not terms[key].requires_grad, key
            np.testing.assert_allclose(terms[key].item(), value, rtol=2e-5, atol=1e-9, err_msg=key)
        assert total.requires_grad
        np.testing.assert_allclose(total.item(), expected["total"], rtol=2e-5)


def test_consistency_and_average_vanish_when_lifters_agree_with_each_other_and_gt():
    cfg = make_cfg(**full_loss_cfg(True))
    shared = LinearLifter(0, 17)
    lifters = {"sb": shared, "videopose": shared, "iganet": shared}
    hm, target, weight, meta = make_batch(5)
    pose = decode_soft(hm, meta["center"], meta["scale"], 100.0, True)
    meta["joints_3d"] = shared(pose, meta["image_size"]).detach() * 100
    _, terms = L2DObjective(cfg, lifters)(hm, target, weight, meta)
    assert terms["loss_3d_cons"].item() == 0.0
    assert terms["loss_3d_avg"].item() < 1e-12
    assert terms["loss_3d"].item() < 1e-12


def test_gradients_reach_heatmaps_through_3d_terms():
    # 2D weight 0 and no OHKLM: the only path to the heatmaps is soft-argmax -> lifters.
    cfg = make_cfg(LOSS_2D_W=0.0, OHKLM=False, LOSS_3D_AVG=True, LOSS_3D_CONS=True)
    lifters = lifters_dict()
    hm, target, weight, meta = make_batch(6)
    # float64 throughout, so that tiny gradients compare tightly.
    hm, target, weight = hm.double().requires_grad_(True), target.double(), weight.double()
    meta = {k: v.double() for k, v in meta.items()}
    objective = L2DObjective(cfg, lifters)
    total, terms = objective(hm, target, weight, meta)
    total.backward()
    assert hm.grad is not None and hm.grad.abs().sum() > 0
    # Same gradient from a plain-autograd decode (softmax ops + constant shift + closed-form affine).
    w = torch.tensor([terms[f"dwa_w/{k}"].item() for k in lifters], dtype=torch.float64)
    hm_ref = hm.detach().clone().requires_grad_(True)
    n, j = hm.shape[:2]
    prob = torch.softmax(100.0 * hm_ref.reshape(n, j, -1), -1).reshape(n, j, H_HM, W_HM)
    coords = torch.stack([(prob * torch.arange(W_HM)).sum((2, 3)),
                          (prob * torch.arange(H_HM)[:, None]).sum((2, 3))], -1)
    shift = (decode_soft(hm.detach(), meta["center"], meta["scale"], 100.0, True)
             - decode_soft(hm.detach(), meta["center"], meta["scale"], 100.0, False))
    k = meta["scale"][:, :1, None] * 200 / W_HM
    pose = meta["center"][:, None] + k * (coords - torch.tensor([W_HM / 2, H_HM / 2])) + shift
    gt = meta["joints_3d"] / 100
    preds = [lifter(pose, meta["image_size"]) for lifter in lifters.values()]
    ref = cfg.LOSS.LOSS_3D_W * sum(wk * ((p - gt) ** 2).mean() for wk, p in zip(w, preds))
    ref = ref + 0.05 * ((sum(preds) / 3 - gt) ** 2).mean()
    ref = ref + 0.1 * sum(((preds[a] - preds[b]) ** 2).mean() for a in range(3) for b in range(a + 1, 3))
    np.testing.assert_allclose(total.item(), ref.item(), rtol=1e-6)
    ref.backward()
    torch.testing.assert_close(hm.grad, hm_ref.grad, rtol=1e-7, atol=1e-12)


def test_batch_of_one_single_lifter():
    cfg = make_cfg(OHKLM=True, LOSS_3D_Z=True, DROPOUT=True)
    hm, target, weight, meta = make_batch(7, n=1)
    hm.requires_grad_(True)
    objective = L2DObjective(cfg, lifters_dict(names=("sb",)))
    total, terms = objective(hm, target, weight, meta)
    total.backward()
    assert total.dim() == 0 and hm.grad.shape == hm.shape
    assert terms["dwa_w/sb"].item() == 1.0          # K = 1: weight 1, never dropped
    assert terms["loss_3d_cons"].item() == 0.0       # switched off -> reported as 0


# ----------------------------------------------------------------------------- other modes
def test_two_d_only_is_plain_heatmap_loss():
    hm, target, weight, meta = make_batch(8)
    expected = JointsMSELoss(True)(hm, target, weight)
    for objective in (L2DObjective(make_cfg(), {}), L2DObjective(make_cfg(LOSS_3D=False), lifters_dict())):
        total, terms = objective(hm, target, weight, {})
        torch.testing.assert_close(total, expected)
        torch.testing.assert_close(terms["total"], expected)
        assert terms["weighted_3d"].item() == 0.0


def test_panoptic_remaps_before_loss_and_decoding():
    cfg = make_cfg(OHKLM=True)
    cfg.DATASET.DATASET = "panoptic"
    lifters = lifters_dict(num_joints=15, names=("sb", "iganet"))
    hm17, target, weight, meta = make_batch(9, num_joints=15, channels=17)
    total, terms = L2DObjective(cfg, lifters, seed=0)(hm17, target, weight, meta)
    loss_cfg = {k: cfg.LOSS[k] for k in cfg.LOSS}
    w = np.array([0.5, 0.5])
    expected, _ = expected_terms(hm17, target, weight, meta, lifters, loss_cfg, w, dataset="panoptic")
    for key in ("loss_2d", "loss_ohklm", "loss_3d", "loss_3d/iganet"):
        np.testing.assert_allclose(terms[key].item(), expected[key], rtol=2e-5, err_msg=key)
    assert terms["dwa_w/sb"].item() == pytest.approx(0.5)


def test_missing_meta_key_is_named():
    hm, target, weight, meta = make_batch(10)
    del meta["image_size"]
    with pytest.raises(KeyError, match="image_size"):
        L2DObjective(make_cfg(), lifters_dict(names=("sb",)))(hm, target, weight, meta)


def test_resume_restores_dwa_history_and_dropout_rng():
    cfg = make_cfg(DROPOUT=True)
    lifters = lifters_dict()
    first = L2DObjective(cfg, lifters, seed=5)
    for step in range(3):
        first(*make_batch(step))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = L2DObjective(cfg, lifters, seed=999)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for step in range(3, 8):
        batch = make_batch(step)
        _, a = first(*batch)
        _, b = resumed(*batch)
        for key in a:
            torch.testing.assert_close(a[key], b[key], msg=key)


def test_decodes_once_per_step_with_four_lifters(monkeypatch):
    import lib.core.objective as objective_module
    calls = []
    real = objective_module.decode_soft

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(objective_module, "decode_soft", counting)
    lifters = lifters_dict(names=("sb", "videopose", "iganet", "mixste"))
    objective = L2DObjective(make_cfg(OHKLM=True, LOSS_3D_CONS=True, LOSS_3D_AVG=True, DROPOUT=True), lifters)
    _, terms = objective(*make_batch(11))
    assert len(calls) == 1
    weights = [terms[f"dwa_w/{k}"].item() for k in lifters]
    assert sorted(weights)[1:] == [0.25] * 3 and sorted(weights)[0] in (0.0, 0.25)   # uniform, maybe one dropped
