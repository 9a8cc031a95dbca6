"""Loss terms against slow loop versions of the original formulas and docs/original.md#worked-examples, examples 3-4."""
import math

import numpy as np
import pytest
import torch

from lib.core.losses import (DWAState, JointsMSELoss, average_prediction_loss, consistency_loss,
                             draw_dropout_index, dwa_weights, joints_mse_per_joint, lifter_dropout_mask,
                             mse_3d_terms, ohklm, ohklm_per_group)


def random_heatmaps(seed, n=3, j=17, h=8, w=6):
    gen = torch.Generator().manual_seed(seed)
    output = torch.randn(n, j, h, w, dtype=torch.float64, generator=gen)
    target = torch.rand(n, j, h, w, dtype=torch.float64, generator=gen)
    weight = (torch.rand(n, j, 1, generator=gen) > 0.3).double()
    return output, target, weight


# ----------------------------------------------------------------------------- references
def ref_joints_mse(output, target, weight, use_target_weight):
    """HRNet JointsMSELoss: loop over joints, MSE(mean) of (B, HW) slices, times 0.5, / J."""
    n, j = output.shape[:2]
    pred = output.reshape(n, j, -1).split(1, 1)
    gt = target.reshape(n, j, -1).split(1, 1)
    loss = 0.0
    for idx in range(j):
        p, g = pred[idx][:, 0], gt[idx][:, 0]
        if use_target_weight:
            p, g = p * weight[:, idx], g * weight[:, idx]
        loss += 0.5 * ((p - g) ** 2).mean()
    return loss / j


def ref_per_joint(output, target, weight):
    n, j = output.shape[:2]
    out = torch.zeros(n, j, dtype=output.dtype)
    for b in range(n):
        for p in range(j):
            diff = output[b, p] * weight[b, p, 0] - target[b, p] * weight[b, p, 0]
            out[b, p] = 0.5 * (diff ** 2).mean()
    return out


def ref_ohklm(loss_2d, loss_3d, top_k):
    """The original's per-sample loop (docs/original.md#ohklm)."""
    total_2d = total_3d = 0.0
    for b in range(loss_2d.shape[0]):
        _, idx = torch.topk(loss_3d[b], k=top_k, dim=0, sorted=False)
        total_2d += torch.gather(loss_2d[b], 0, idx).sum() / top_k
        total_3d += torch.gather(loss_3d[b], 0, idx).sum() / top_k
    return total_2d / loss_2d.shape[0], total_3d / loss_2d.shape[0]


# ----------------------------------------------------------------------------- heatmap losses
@pytest.mark.parametrize("use_target_weight", [True, False])
def test_joints_mse_matches_loop(use_target_weight):
    output, target, weight = random_heatmaps(0)
    loss = JointsMSELoss(use_target_weight)(output, target, weight)
    assert loss.dim() == 0
    torch.testing.assert_close(loss, ref_joints_mse(output, target, weight, use_target_weight))


def test_joints_mse_hand_value():
    # One 1x2 map, prediction (1, 0), target (0, 0), weight 1 -> 0.5 * mean(1, 0) = 0.25;
    # weight 0 silences the joint entirely.
    output = torch.tensor([[[[1.0, 0.0]], [[3.0, 3.0]]]])
    target = torch.zeros_like(output)
    weight = torch.tensor([[[1.0], [0.0]]])
    assert JointsMSELoss(True)(output, target, weight).item() == pytest.approx(0.25 / 2)
    torch.testing.assert_close(joints_mse_per_joint(output, target, weight), torch.tensor([[0.25, 0.0]]))


def test_per_joint_matches_loop_and_batch_of_one():
    output, target, weight = random_heatmaps(1)
    per_joint = joints_mse_per_joint(output, target, weight)
    assert per_joint.shape == (3, 17)
    torch.testing.assert_close(per_joint, ref_per_joint(output, target, weight))
    torch.testing.assert_close(per_joint.mean(), JointsMSELoss(True)(output, target, weight))
    one = joints_mse_per_joint(output[:1], target[:1], weight[:1])
    assert one.shape == (1, 17)
    torch.testing.assert_close(one, per_joint[:1])


# ----------------------------------------------------------------------------- OHKLM
@pytest.mark.parametrize("top_k", [1, 5, 10, 17])
def test_ohklm_matches_per_sample_loop(top_k):
    gen = torch.Generator().manual_seed(top_k)
    loss_2d = torch.rand(6, 17, dtype=torch.float64, generator=gen, requires_grad=True)
    loss_3d = torch.rand(6, 17, dtype=torch.float64, generator=gen)
    got_2d, got_3d = ohklm(loss_2d, loss_3d, top_k)
    ref_2d, ref_3d = ref_ohklm(loss_2d, loss_3d, top_k)
    torch.testing.assert_close(got_2d, ref_2d)
    torch.testing.assert_close(got_3d, ref_3d)
    # Gradient only through the selected 2D losses: 1 / (N top_k) each.
    got_2d.backward()
    selected = torch.zeros(6, 17, dtype=torch.float64)
    selected.scatter_(1, torch.topk(loss_3d, top_k, dim=1).indices, 1.0 / (6 * top_k))
    torch.testing.assert_close(loss_2d.grad, selected)


def test_ohklm_hand_value_and_groups():
    loss_2d = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    loss_3d = torch.tensor([[0.4, 0.1, 0.3, 0.2]])       # top-2 joints: 0 and 2
    got_2d, got_3d = ohklm(loss_2d, loss_3d, 2)
    assert got_2d.item() == pytest.approx(2.0) and got_3d.item() == pytest.approx(0.35)
    # K lifters in one call: a leading axis, 2D loss broadcast.
    both = torch.stack([loss_3d, loss_3d.flip(-1)])
    per_k, _ = ohklm_per_group(loss_2d.unsqueeze(0), both, 2)
    torch.testing.assert_close(per_k, torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="top_k"):
        ohklm(loss_2d, loss_3d, 5)


# ----------------------------------------------------------------------------- 3D terms
def test_mse_3d_terms_hand_values():
    pred = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    gt = torch.zeros_like(pred)
    terms = mse_3d_terms(pred, gt)
    assert terms["xyz"].item() == pytest.approx(14 / 6)
    assert terms["xy"].item() == pytest.approx(5 / 4)
    assert terms["z"].item() == pytest.approx(9 / 2)
    torch.testing.assert_close(terms["per_joint"], torch.tensor([[14 / 3, 0.0]]))


def test_average_and_consistency_terms():
    gen = torch.Generator().manual_seed(5)
    preds = torch.randn(3, 4, 17, 3, dtype=torch.float64, generator=gen)
    gt = torch.randn(4, 17, 3, dtype=torch.float64, generator=gen)
    mean_pred = (preds[0] + preds[1] + preds[2]) / 3
    torch.testing.assert_close(average_prediction_loss(preds, gt), ((mean_pred - gt) ** 2).mean())
    ref_cons = sum(((preds[a] - preds[b]) ** 2).mean() for a in range(3) for b in range(a + 1, 3))
    torch.testing.assert_close(consistency_loss(preds), ref_cons)
    same = preds[:1].expand(3, -1, -1, -1)
    assert consistency_loss(same).item() == 0.0
    assert average_prediction_loss(same, preds[0]).item() < 1e-30     # mean of 3 equal values: round-off only
    assert consistency_loss(preds[:1]).item() == 0.0


# ----------------------------------------------------------------------------- DWA
# (docs/original.md#worked-examples, example 3)
def test_dwa_worked_example_three_steps():
    ones = [1.0, 1.0]
    l1, l2, l3 = [0.02, 0.04], [0.01, 0.04], [0.03, 0.05]
    # Iteration t appends L(t) first, then uses Q[-2] / Q[-3].
    w1 = dwa_weights([ones, ones, l1])
    w2 = dwa_weights([ones, l1, l2])
    w3 = dwa_weights([l1, l2, l3])
    np.testing.assert_allclose(w1, [0.5, 0.5])
    e = np.exp(np.array([0.02, 0.04]) / 2)
    np.testing.assert_allclose(w2, e / e.sum())
    np.testing.assert_allclose(w2, [0.4975, 0.5025], atol=5e-5)
    np.testing.assert_allclose(w3, [math.exp(0.25) / (math.exp(0.25) + math.exp(0.5)),
                                    math.exp(0.5) / (math.exp(0.25) + math.exp(0.5))])
    np.testing.assert_allclose(w3, [0.4378, 0.5622], atol=5e-5)

    state = DWAState(2, T=2.0)
    for losses, expected in ((l1, w1), (l2, w2), (l3, w3)):
        state.update(torch.tensor(losses))
        got = state.weights()
        assert got.shape == (2,)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    assert state.num_updates == 3


def test_dwa_state_detaches_round_trips_and_k1():
    state = DWAState(3)
    losses = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
    state.update(losses * 2)
    assert not state.history.requires_grad
    state.update(torch.tensor([0.3, 0.2, 0.1]))
    saved = state.state_dict()
    assert isinstance(saved["history"], list) and all(isinstance(v, float) for v in saved["history"][0])
    restored = DWAState(3)
    restored.load_state_dict(saved)
    torch.testing.assert_close(restored.weights(), state.weights())
    for s in (state, restored):
        s.update(torch.tensor([0.5, 0.5, 0.5]))
    torch.testing.assert_close(restored.weights(), state.weights())
    with pytest.raises(ValueError, match="K=3"):
        DWAState(2).load_state_dict(saved)

    single = DWAState(1)
    for v in (0.3, 0.1, 0.7):
        single.update(torch.tensor([v]))
        assert single.weights().tolist() == [1.0]


# ----------------------------------------------------------------------------- dropout
# (docs/original.md#worked-examples, example 4)
def test_dropout_frequencies_are_one_over_k_plus_one():
    rng = np.random.RandomState(42)
    draws = 8000
    dropped = np.zeros(4)
    for _ in range(draws):
        mask = lifter_dropout_mask(3, rng, enabled=True)
        assert mask.dtype == np.float32 and mask.shape == (3,) and mask.sum() >= 2
        zeros = np.flatnonzero(mask == 0)
        dropped[zeros[0] if zeros.size else 3] += 1
    np.testing.assert_allclose(dropped / draws, 0.25, atol=0.02)


def test_dropout_draws_every_call_even_when_disabled():
    rng, twin = np.random.RandomState(7), np.random.RandomState(7)
    for _ in range(20):
        assert lifter_dropout_mask(3, rng, enabled=False).tolist() == [1.0, 1.0, 1.0]
        twin.randint(0, 4)
    assert rng.randint(0, 1000) == twin.randint(0, 1000)
    # K = 1: never dropped, but a draw from {0, 1} still happens.
    rng, twin = np.random.RandomState(3), np.random.RandomState(3)
    for _ in range(20):
        assert lifter_dropout_mask(1, rng, enabled=True).tolist() == [1.0]
        twin.randint(0, 2)
    assert rng.randint(0, 1000) == twin.randint(0, 1000)


def test_dropout_index_follows_the_draw():
    rng, twin = np.random.RandomState(11), np.random.RandomState(11)
    for _ in range(50):
        d = twin.randint(0, 3)
        expected = [0.0 if i == d else 1.0 for i in range(2)]
        assert lifter_dropout_mask(2, rng, enabled=True).tolist() == expected
    gen = np.random.default_rng(0)
    assert all(0 <= draw_dropout_index(2, gen) <= 2 for _ in range(20))
