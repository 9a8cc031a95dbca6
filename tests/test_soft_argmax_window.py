"""The windowed soft-argmax (lib/core/soft_argmax.py) against a float64 softmax over the full map,
and its window / full-map choice against the bound recomputed here by a plain loop.

On the CPU each map takes the window or the full map as its plan says; other devices (and
``tol_px <= 0``) take the full map for every map, which the last tests check on the CPU."""
import math

import numpy as np
import pytest
import torch

from lib.core.heatmap import soft_argmax
from lib.core.soft_argmax import BLOCK_PX, WINDOW_TOL_PX, window_plan, windowed_soft_argmax

# ----------------------------------------------------------------------------- references
def ref_soft_argmax(maps, beta, upstream):
    """float64 softmax over every pixel; -> (coords (N, J, 2), d <coords, upstream> / d maps)."""
    hm = torch.as_tensor(np.asarray(maps, dtype=np.float64)).requires_grad_(True)
    n, j, h, w = hm.shape
    prob = torch.softmax(beta * hm.reshape(n, j, -1), dim=-1).reshape(n, j, h, w)
    coords = torch.stack([(prob * torch.arange(w, dtype=torch.float64)).sum(dim=(2, 3)),
                          (prob * torch.arange(h, dtype=torch.float64)[:, None]).sum(dim=(2, 3))], dim=-1)
    grad, = torch.autograd.grad((coords * torch.as_tensor(upstream, dtype=torch.float64)).sum(), hm)
    return coords.detach().numpy(), grad.numpy()


def ref_window_mean(hm, beta, y0, x0, size):
    """float64 soft-argmax restricted to the window [y0, y0 + sy) x [x0, x0 + sx) of one map."""
    sy, sx = size
    win = np.asarray(hm, np.float64)[y0:y0 + sy, x0:x0 + sx]
    p = np.exp(beta * (win - win.max()))
    p /= p.sum()
    return np.array([(p * np.arange(x0, x0 + sx)).sum(), (p * np.arange(y0, y0 + sy)[:, None]).sum()])


def ref_plan_one(hm, beta, tol):
    """One (H, W) map, beta >= 0, by loops: block maxima, the 2 x 2-block window (the peak's block
    and the neighbours on the side of the larger neighbouring maximum), the largest value in the
    blocks not wholly inside it, and ``n_O exp(beta (m_O - peak)) max(W - 1, H - 1)``."""
    hm = np.asarray(hm, np.float64)
    h, w = hm.shape
    b = BLOCK_PX
    blocks = {}
    for by in range(math.ceil(h / b)):
        for bx in range(math.ceil(w / b)):
            blocks[by, bx] = hm[by * b:(by + 1) * b, bx * b:(bx + 1) * b].max()
    (pby, pbx), peak = max(blocks.items(), key=lambda kv: kv[1])   # first maximum in row-major order

    def at(by, bx):
        return blocks.get((by, bx), -math.inf)                        # past the border: -inf

    start_y = pby - 1 if at(pby - 1, pbx) > at(pby + 1, pbx) else pby
    start_x = pbx - 1 if at(pby, pbx - 1) > at(pby, pbx + 1) else pbx
    sy, sx = min(2 * b, h), min(2 * b, w)
    y0 = min(start_y * b, h - sy)
    x0 = min(start_x * b, w - sx)
    outside = [v for (by, bx), v in blocks.items()
               if not (by * b >= y0 and min((by + 1) * b, h) <= y0 + sy
                       and bx * b >= x0 and min((bx + 1) * b, w) <= x0 + sx)]
    n_out = h * w - sy * sx
    bound = 0.0 if not outside else n_out * math.exp(beta * (max(outside) - peak)) * max(w - 1, h - 1)
    return {"peak": peak, "y0": y0, "x0": x0, "size": (sy, sx), "bound": bound, "use": bound <= tol,
            "back": (start_y < pby, start_x < pbx)}


def peaked_maps(rng, n, j, h=96, w=72, sigma=2.0, noise=0.01, height=1.0):
    """A trained detector's look: a Gaussian of the given height per map (centres anywhere, a few
    beyond the border) over weak noise."""
    cx = rng.uniform(-2, w + 1, size=(n, j, 1, 1))
    cy = rng.uniform(-2, h + 1, size=(n, j, 1, 1))
    xs, ys = np.arange(w), np.arange(h)[:, None]
    blob = height * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    return blob + noise * rng.standard_normal((n, j, h, w))


def assert_within_bound(coords, grad, ref_c, ref_g, plan, beta, upstream, slack_c, slack_g):
    """Per map: |x - x_ref| <= eps (W - 1), |y - y_ref| <= eps (H - 1) and the L1 gradient error
    <= 3 |beta| eps ((W - 1) |g_x| + (H - 1) |g_y|), eps = bound / max(W - 1, H - 1) on window maps
    and 0 on full-map ones; plus round-off ``slack_c`` (px) and ``slack_g`` (per pixel)."""
    n, j, h, w = ref_g.shape
    use = plan["use_window"].reshape(n, j).numpy()
    eps = np.where(use, plan["bound"].reshape(n, j).numpy(), 0.0) / max(w - 1, h - 1)
    err = np.abs(coords - ref_c)
    assert np.all(err[..., 0] <= eps * (w - 1) + slack_c) and np.all(err[..., 1] <= eps * (h - 1) + slack_c)
    g_err = np.abs(grad - ref_g).sum(axis=(2, 3))
    g_bound = 3 * abs(beta) * eps * ((w - 1) * np.abs(upstream[..., 0]) + (h - 1) * np.abs(upstream[..., 1]))
    assert np.all(g_err <= g_bound + slack_g * h * w)


def run(maps, beta, upstream, dtype=torch.float64, tol_px=WINDOW_TOL_PX):
    hm = torch.as_tensor(np.asarray(maps)).to(dtype).requires_grad_(True)
    coords = windowed_soft_argmax(hm, beta, tol_px)
    (coords * torch.as_tensor(upstream).to(coords.dtype)).sum().backward()
    return coords.detach().double().numpy(), hm.grad.double().numpy()


def assert_equals_full_map(maps, beta, upstream, atol, grad_scale_floor=0.0):
    """Coordinates within ``atol`` px and gradients within ``atol`` times their largest entry (at
    least ``grad_scale_floor``) of the float64 full-map softmax; -> the coordinates."""
    ref_c, ref_g = ref_soft_argmax(maps, beta, upstream)
    coords, grad = run(maps, beta, upstream)
    np.testing.assert_allclose(coords, ref_c, rtol=0, atol=atol)
    np.testing.assert_allclose(grad, ref_g, rtol=0, atol=atol * max(np.abs(ref_g).max(), grad_scale_floor))
    return coords


def plan_of(maps, beta, tol=WINDOW_TOL_PX):
    """The library's plan for (N, J, H, W) maps with beta of either sign."""
    t = torch.as_tensor(np.asarray(maps, np.float64))
    t = t.reshape(-1, *t.shape[2:])
    return window_plan(-t if beta < 0 else t, abs(beta), tol)


# ----------------------------------------------------------------------------- the plan
def test_plan_matches_loop_reference_on_many_sizes():
    rng = np.random.default_rng(0)
    backwards = set()
    for h, w in ((96, 72), (64, 48), (21, 13), (45, 30), (17, 40), (8, 9)):
        maps = peaked_maps(rng, 2, 5, h, w, sigma=1.5)
        maps[0, 0] = 0.3 * rng.standard_normal((h, w))                     # noise: fails the bound
        maps[0, 1, :, :] = 0.0                                             # flat
        maps[0, 1, h - 1, w - 1] = 1.0                                     # corner peak
        for beta in (100.0, 3.0):
            plan = plan_of(maps, beta)
            for i, hm in enumerate(maps.reshape(-1, h, w)):
                ref = ref_plan_one(hm, beta, WINDOW_TOL_PX)
                assert (int(plan["y0"][i]), int(plan["x0"][i])) == (ref["y0"], ref["x0"])
                assert plan["size"] == ref["size"]
                assert float(plan["peak"][i]) == ref["peak"]
                np.testing.assert_allclose(float(plan["bound"][i]), ref["bound"], rtol=1e-12, atol=0)
                assert bool(plan["use_window"][i]) == ref["use"]
                backwards.add(ref["back"])
    assert len(backwards) == 4                  # windows extended up and/or left, and neither
    # a 16 x 16 window sees at least 4 px around the peak away from borders: trained maps use it
    plan = plan_of(peaked_maps(rng, 4, 17), 100.0)
    assert float(plan["use_window"].double().mean()) == 1.0


# ----------------------------------------------------------------------------- equality with the full map
@pytest.mark.parametrize("beta", [100.0, 40.0, -100.0, -40.0])
def test_window_equals_full_map_on_peaked_maps(beta):
    rng = np.random.default_rng(1)
    maps = peaked_maps(rng, 3, 17)
    maps[1, 2] = 0.1 * rng.standard_normal(maps.shape[2:])                 # one map needs the fallback
    if beta < 0:                                                            # beta < 0 weights the minimum
        maps = -maps
    upstream = rng.standard_normal((3, 17, 2))
    plan = plan_of(maps, beta)
    use = plan["use_window"].reshape(3, 17).numpy()
    assert use.sum() >= 50 and not use[1, 2]
    ref_c, ref_g = ref_soft_argmax(maps, beta, upstream)
    # float64: within the bound, per map, plus float64 round-off
    coords, grad = run(maps, beta, upstream)
    assert_within_bound(coords, grad, ref_c, ref_g, plan, beta, upstream, 1e-9, 1e-9 * np.abs(ref_g).max())
    # float32, as in training: float32 round-off on top
    coords32, grad32 = run(maps, beta, upstream, torch.float32)
    assert_within_bound(coords32, grad32, ref_c, ref_g, plan, beta, upstream, 5e-5, 2e-5 * np.abs(ref_g).max())


def test_bound_holds_for_coordinates_and_gradients_when_loosened():
    # With a loose tolerance the window is taken on maps whose outside mass is visible; the error
    # must still respect the bound: |dx| <= eps (W-1), L1 gradient error <= 3 |beta| eps ((W-1)|gx| + (H-1)|gy|).
    rng = np.random.default_rng(2)
    h, w, beta = 48, 40, 12.0
    maps = peaked_maps(rng, 2, 6, h, w, sigma=1.5, noise=0.03)
    upstream = rng.standard_normal((2, 6, 2))
    tol = 5.0
    plan = plan_of(maps, beta, tol)
    use = plan["use_window"].reshape(2, 6).numpy()
    bound = plan["bound"].reshape(2, 6).numpy()
    assert use.sum() >= 6 and (bound[use] > 1e-4).any()                    # really lossy windows
    ref_c, ref_g = ref_soft_argmax(maps, beta, upstream)
    coords, grad = run(maps, beta, upstream, tol_px=tol)
    assert_within_bound(coords, grad, ref_c, ref_g, plan, beta, upstream, 1e-12, 1e-12)
    assert np.abs(coords - ref_c)[use].max() > 1e-6                      # and the windows did differ


def test_second_peak_just_inside_and_outside_the_window():
    # Peak 1 at (36, 48): block (4, 6) on a zero background, window x in [32, 48), y in [48, 64) (the
    # neighbouring blocks tie: the window extends right and down), or one block further up or left
    # where that neighbour is larger. A second peak of 0.9 one pixel inside the window is summed
    # exactly; one pixel outside, it fails the bound.
    h, w, beta = 96, 72, 100.0
    maps = np.zeros((1, 4, h, w))
    maps[0, :, 48, 36] = 1.0
    maps[0, 0, 48, 47] = 0.9
    maps[0, 1, 48, 48] = 0.9
    maps[0, 2, 63, 36] = 0.9
    maps[0, 3, 64, 36] = 0.9
    n_out = h * w - 16 * 16
    plan = plan_of(maps, beta)
    assert plan["y0"].tolist() == [48] * 4 and plan["x0"].tolist() == [32] * 4
    outside_bound = n_out * math.exp(beta * (0.9 - 1.0)) * (h - 1)
    np.testing.assert_allclose(plan["bound"].numpy(), [n_out * math.exp(-beta) * (h - 1), outside_bound] * 2,
                               rtol=1e-9)
    assert plan["use_window"].tolist() == [True, False, True, False]
    upstream = np.random.default_rng(3).standard_normal((1, 4, 2))
    assert_equals_full_map(maps, beta, upstream, 1e-10)


def test_fallback_taken_exactly_where_the_bound_says():
    # A second peak of height v just outside the window: bound = n_O exp(beta (v - 1)) (H - 1).
    # With tol = 1 px, v at the bound's crossing -/+ 1e-4 puts the bound at tol * exp(-/+ 0.01):
    # the first map takes the window (its result is the window's mean, visibly off the full map's),
    # the second the full map.
    h, w, beta, tol = 96, 72, 100.0, 1.0
    n_out = h * w - 16 * 16
    v_star = 1.0 + math.log(tol / (n_out * (h - 1))) / beta
    maps = np.zeros((1, 2, h, w))
    maps[0, :, 48, 36] = 1.0
    maps[0, :, 47, 35] = 0.5                                   # asymmetric peak; window y in [40, 56)
    maps[0, 0, 48, 60] = v_star - 1e-4
    maps[0, 1, 48, 60] = v_star + 1e-4
    plan = plan_of(maps, beta, tol)
    bounds = [n_out * math.exp(beta * (maps[0, i, 48, 60] - 1.0)) * (h - 1) for i in range(2)]
    np.testing.assert_allclose(plan["bound"].numpy(), bounds, rtol=1e-9)
    assert bounds[0] < tol < bounds[1] and plan["use_window"].tolist() == [True, False]
    upstream = np.ones((1, 2, 2))
    coords, grad = run(maps, beta, upstream, tol_px=tol)
    ref_c, ref_g = ref_soft_argmax(maps, beta, upstream)
    assert plan["y0"].tolist() == [40] * 2 and plan["x0"].tolist() == [32] * 2
    window = ref_window_mean(maps[0, 0], beta, 40, 32, (16, 16))
    assert abs(window[0] - ref_c[0, 0, 0]) > 1e-5              # the window is measurably not the full map
    np.testing.assert_allclose(coords[0, 0], window, rtol=0, atol=1e-12)
    assert abs(grad[0, 0, 48, 60]) == 0.0                      # nothing outside the window
    np.testing.assert_allclose(coords[0, 1], ref_c[0, 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad[0, 1], ref_g[0, 1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("beta", [100.0, 1.0, 0.0, -1.0, -100.0])
def test_flat_and_multimodal_maps_take_the_full_map(beta):
    rng = np.random.default_rng(4)
    h, w = 96, 72
    maps = np.zeros((1, 4, h, w))
    maps[0, 1] = 0.25                                           # flat, not zero
    maps[0, 2, 10, 10] = maps[0, 2, 80, 60] = 1.0               # two equal peaks far apart
    maps[0, 3] = peaked_maps(rng, 1, 1, h, w, sigma=30.0, noise=0.0)[0, 0]   # broad
    if beta < 0:
        maps = -maps
    plan = plan_of(maps, beta)
    assert not plan["use_window"].any()
    upstream = rng.standard_normal((1, 4, 2))
    coords = assert_equals_full_map(maps, beta, upstream, 1e-9, grad_scale_floor=1.0)
    np.testing.assert_allclose(coords[0, 0], [(w - 1) / 2, (h - 1) / 2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(coords[0, 1], [(w - 1) / 2, (h - 1) / 2], rtol=0, atol=1e-9)


@pytest.mark.parametrize("beta", [100.0, -100.0])
def test_peaks_at_borders_and_corners(beta):
    rng = np.random.default_rng(5)
    for h, w in ((96, 72), (45, 30), (21, 13)):
        spots = [(0, 0), (w - 1, h - 1), (0, h - 1), (w - 1, 0), (0, h // 2), (w // 2, 0), (w - 1, h // 2),
                 (w // 2, h - 1), (1, 1), (w - 2, h - 2)]
        maps = 0.01 * rng.standard_normal((1, len(spots), h, w))
        xs, ys = np.arange(w), np.arange(h)[:, None]
        for k, (x, y) in enumerate(spots):
            maps[0, k] += np.exp(-((xs - x - 0.3) ** 2 + (ys - y + 0.2) ** 2) / 4.5)
        if beta < 0:
            maps = -maps
        plan = plan_of(maps, beta)
        if h * w > 16 * 16:
            assert bool(plan["use_window"].all())               # the clamped windows still pass
        upstream = rng.standard_normal((1, len(spots), 2))
        assert_equals_full_map(maps, beta, upstream, 1e-9)


def test_gradcheck_through_the_window():
    gen = torch.Generator().manual_seed(6)
    hm = 0.01 * torch.randn(1, 2, 40, 32, dtype=torch.float64, generator=gen)
    hm[0, 0, 20, 15] += 1.0
    hm[0, 0, 21, 15] += 0.97
    hm[0, 1, 0, 31] += 1.0
    hm[0, 1, 1, 30] += 0.98
    assert bool(plan_of(hm, 100.0)["use_window"].all())
    hm.requires_grad_(True)
    # fast mode: random projections of the Jacobian (a full one needs 2 forwards per pixel)
    for seed in range(3):
        torch.manual_seed(seed)
        assert torch.autograd.gradcheck(lambda x: windowed_soft_argmax(x, 100.0, WINDOW_TOL_PX),
                                        (hm,), fast_mode=True)


def test_public_soft_argmax_uses_it_and_keeps_dtypes():
    rng = np.random.default_rng(7)
    maps = torch.from_numpy(peaked_maps(rng, 2, 3)).float()
    out = soft_argmax(maps, 100.0)
    assert out.dtype == torch.float32 and out.shape == (2, 3, 2)
    torch.testing.assert_close(out, windowed_soft_argmax(maps, 100.0, WINDOW_TOL_PX), rtol=0, atol=0)
    # the full map for every map (the path of GPUs): the same up to float32 round-off
    torch.testing.assert_close(out, windowed_soft_argmax(maps, 100.0, 0.0), rtol=0, atol=2e-5)
    bf = maps.bfloat16().requires_grad_(True)
    out_bf = soft_argmax(bf, 100.0)
    out_bf.sum().backward()
    assert out_bf.dtype == torch.float32 and bf.grad.dtype == torch.bfloat16
    assert soft_argmax(maps[:0], 100.0).shape == (0, 3, 2)


def test_plan_on_nan_and_minus_inf_maps():
    # NaN: never the window (the full map then gives NaN); a -inf background weighs exactly 0, so
    # the window is exact even at beta = 0, where exp(0 * -inf) would be NaN.
    maps = torch.zeros(2, 20, 20, dtype=torch.float64)
    maps[0, 3, 3] = float("nan")
    maps[1] = float("-inf")
    maps[1, 5, 5] = 1.0
    for beta in (100.0, 0.0):
        plan = window_plan(maps, beta)
        assert plan["use_window"].tolist() == [False, True] and plan["bound"][1] == 0.0
        assert math.isnan(float(plan["bound"][0]))


@pytest.mark.parametrize("beta", [100.0, -40.0])
def test_zero_tolerance_takes_the_full_map_everywhere(beta):
    """tol_px = 0: every map through the plain full-map expectation (what GPUs run), equal to the
    float64 softmax to round-off, coordinates and gradients, although the window would be exact."""
    rng = np.random.default_rng(11)
    maps = peaked_maps(rng, 2, 4) * np.sign(beta)
    assert bool(plan_of(maps, beta)["use_window"].all())
    upstream = rng.standard_normal((2, 4, 2))
    ref_c, ref_g = ref_soft_argmax(maps, beta, upstream)
    coords, grad = run(maps, beta, upstream, tol_px=0.0)
    np.testing.assert_allclose(coords, ref_c, rtol=0, atol=1e-10)
    np.testing.assert_allclose(grad, ref_g, rtol=0, atol=1e-10 * np.abs(ref_g).max())
    # the window path leaves the gradient exactly 0 outside its window; the full path does not
    _, grad_win = run(maps, beta, upstream)
    assert (grad_win == 0).sum() > (grad == 0).sum()


def test_config_tolerance_reaches_training_and_validation_decodes(monkeypatch):
    """MODEL.SOFT_ARGMAX_TOL_PX is the tolerance of both decodes (0 forces the full map in both)."""
    import model_3d
    from lib.config import load_cfg
    from lib.core import heatmap as hm_mod
    from lib.core.objective import L2DObjective
    from lib.engine.evaluator import predict_2d
    seen = []
    real = hm_mod.windowed_soft_argmax
    monkeypatch.setattr(hm_mod, "windowed_soft_argmax", lambda h, b, tol: seen.append(tol) or real(h, b, tol))
    cfg = load_cfg("experiments/demo/tiny_96x128.yaml", ["MODEL.SOFT_ARGMAX_TOL_PX", 0.0, "LOSS.LOSS_3D", True])
    n, (w, h) = 2, cfg.MODEL.HEATMAP_SIZE
    maps = torch.from_numpy(peaked_maps(np.random.default_rng(12), n, 17, h, w)).float()
    meta = {"center": torch.full((n, 2), 500.0), "scale": torch.full((n, 2), 2.0),
            "joints_3d": torch.zeros(n, 17, 3), "image_size": torch.full((n, 2), 1000.0)}
    stats = {"mean_2d": np.full((17, 2), 500.0), "std_2d": np.full((17, 2), 80.0),
             "mean_3d": np.zeros((17, 3)), "std_3d": np.full((17, 3), 20.0)}
    objective = L2DObjective(cfg, {"sb": model_3d.build_lifter("sb", 17, stats=stats)})
    objective(maps, maps, torch.ones(n, 17, 1), meta)
    predict_2d(cfg, lambda x: maps, torch.zeros(n, 3, 4, 4), meta, torch.device("cpu"))
    assert len(seen) == 2 and seen == [0.0, 0.0]
