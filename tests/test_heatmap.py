"""Heatmap encoding / decoding against hand numbers (docs/original.md#worked-examples) and the
original's formulas as slow loops (docs/original.md#soft-argmax-decoding,
#heatmap-to-image-coordinates, #sample-pipeline), from benchmarks/reference.py: float64 per-joint
and per-sample loops, independent of the vectorised code under test."""
import math

import numpy as np
import pytest
import torch

from benchmarks.reference import (apply_affine, original_affine, original_decode, original_decode_argmax,
                                  original_target)
from lib.core.heatmap import (decode_argmax, decode_soft, encode_heatmaps, prepare_heatmaps,
                              remap_h36m_to_panoptic, soft_argmax, to_image_coords)
from lib.core.skeleton import H36M_TO_PANOPTIC

W_HM, H_HM = 72, 96


def blob_heatmaps(rng, n, j, h=H_HM, w=W_HM, sigma=2.0, noise=0.02):
    """Gaussian blobs at random places (some near/over the border) plus noise."""
    cx = rng.uniform(-3, w + 2, size=(n, j, 1, 1))
    cy = rng.uniform(-3, h + 2, size=(n, j, 1, 1))
    xs = np.arange(w)[None, None, None, :]
    ys = np.arange(h)[None, None, :, None]
    hm = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    return hm + noise * rng.standard_normal((n, j, h, w))


def random_boxes(rng, n):
    centers = rng.uniform(300, 700, size=(n, 2))
    sx = rng.uniform(1.0, 3.0, size=n)
    scales = np.stack([sx, sx / 0.75], axis=1)
    return centers, scales


# ----------------------------------------------------------------------------- docs/original.md#example-1-box-centre-and-scale
def test_inverse_transform_worked_example():
    center = torch.tensor([[500.0, 500.0]])
    scale = torch.tensor([[2.15625, 2.875]])
    coords = torch.tensor([[[36.0, 48.0], [0.0, 0.0], [72.0, 96.0]]])
    out = to_image_coords(coords, center, scale, (72, 96))
    expected = torch.tensor([[[500.0, 500.0], [284.375, 212.5], [715.625, 787.5]]])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)
    assert abs(2.15625 * 200 / 72 - 5.989583) < 1e-6


def test_to_image_coords_matches_three_point_solution_and_opencv():
    rng = np.random.default_rng(0)
    centers, scales = random_boxes(rng, 5)
    coords = rng.uniform(-5, 80, size=(5, 17, 2))
    out = to_image_coords(torch.from_numpy(coords), torch.from_numpy(centers), torch.from_numpy(scales),
                          (W_HM, H_HM)).numpy()
    for b in range(5):
        matrix = original_affine(centers[b], scales[b], (W_HM, H_HM), inverse=True, exact=True)
        np.testing.assert_allclose(out[b], apply_affine(coords[b], matrix), rtol=0, atol=1e-9)
        # The original's float32 OpenCV solve agrees up to its own round-off.
        cv_matrix = original_affine(centers[b], scales[b], (W_HM, H_HM), inverse=True)
        np.testing.assert_allclose(out[b], apply_affine(coords[b], cv_matrix), rtol=0, atol=5e-3)


def test_to_image_coords_accepts_tensor_heatmap_size_and_batch_of_one():
    out = to_image_coords(torch.tensor([[[36.0, 48.0]]]), torch.tensor([[10.0, 20.0]]),
                          torch.tensor([[1.0, 1.0]]), torch.tensor([72, 96]))
    torch.testing.assert_close(out, torch.tensor([[[10.0, 20.0]]]))


# ----------------------------------------------------------------------------- docs/original.md#example-2-heatmap-target-centre
def test_gaussian_target_worked_example():
    joints = np.array([[144.0, 192.0]])
    target, weight = encode_heatmaps(joints, np.array([1]), (288, 384), (72, 96), 3)
    assert target.shape == (1, 96, 72) and target.dtype == np.float32
    assert weight.shape == (1, 1) and weight[0, 0] == 1.0
    rows, cols = np.nonzero(target[0])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (39, 57, 27, 45)
    assert target[0, 48, 36] == 1.0 and target[0].max() == 1.0
    assert np.isclose(target[0, 48, 37], math.exp(-1 / 18))


@pytest.mark.parametrize("sigma", [1, 2, 3, 1.5, 2.5, 1.4, 1.7])
def test_encode_matches_per_joint_loop(sigma):
    rng = np.random.default_rng(int(sigma * 10))
    image_size, heatmap_size = (288, 384), (72, 96)
    joints = rng.uniform(-60, 420, size=(6, 17, 2))
    joints[0, :4] = [[0.0, 0.0], [-1.9, -5.0], [287.9, 383.9], [-40.0, 100.0]]  # truncation edge cases
    vis = (rng.uniform(size=(6, 17)) > 0.2).astype(np.float32)
    target, weight = encode_heatmaps(joints, vis, image_size, heatmap_size, sigma)
    for b in range(6):
        ref_t, ref_w = original_target(joints[b], vis[b], image_size, heatmap_size, sigma)
        np.testing.assert_array_equal(weight[b], ref_w)
        np.testing.assert_array_equal(target[b], ref_t)       # bitwise: same float32 arithmetic


def test_encode_accepts_vis_with_trailing_axis_and_non_square_stride():
    rng = np.random.default_rng(1)
    joints = rng.uniform(0, 128, size=(17, 2))
    vis = np.ones((17, 1))
    target, weight = encode_heatmaps(joints, vis, (96, 128), (24, 32), 1)
    ref_t, ref_w = original_target(joints, vis[:, 0], (96, 128), (24, 32), 1)
    np.testing.assert_array_equal(target, ref_t)
    np.testing.assert_array_equal(weight, ref_w)
    with pytest.raises(ValueError, match="joints_vis"):
        encode_heatmaps(joints, np.ones(16), (96, 128), (24, 32), 1)


# ----------------------------------------------------------------------------- decoding
def test_one_hot_decodes_to_its_pixel():
    hm = torch.zeros(2, 3, H_HM, W_HM)
    pixels = [(5, 7), (70, 95), (0, 0), (36, 48), (1, 2), (13, 80)]
    for i, (x, y) in enumerate(pixels):
        hm[i // 3, i % 3, y, x] = 1.0
    coords = soft_argmax(hm, beta=1000.0)
    torch.testing.assert_close(coords, torch.tensor(pixels, dtype=torch.float32).reshape(2, 3, 2),
                               rtol=0, atol=1e-3)
    # Through decode_soft with the identity-like box: centre at the map centre, k = 1.
    center = torch.tensor([[W_HM / 2, H_HM / 2]]).expand(2, 2)
    scale = torch.full((2, 2), W_HM / 200.0)
    out = decode_soft(hm, center, scale, beta=1000.0, post_process=False)
    torch.testing.assert_close(out, coords, rtol=0, atol=1e-4)
    argmax_coords, maxvals = decode_argmax(hm, center, scale, post_process=False)
    torch.testing.assert_close(argmax_coords, coords, rtol=0, atol=1e-3)
    assert maxvals.shape == (2, 3, 1) and bool((maxvals == 1).all())


@pytest.mark.parametrize("post_process", [True, False])
def test_decode_soft_matches_original_loop(post_process):
    rng = np.random.default_rng(2)
    hm = blob_heatmaps(rng, 4, 17)
    centers, scales = random_boxes(rng, 4)
    out = decode_soft(torch.from_numpy(hm), torch.from_numpy(centers), torch.from_numpy(scales),
                      beta=100.0, post_process=post_process)
    ref = original_decode(torch.from_numpy(hm), centers, scales, 100.0, post_process, exact=True).numpy()
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    # float32, as in training: same numbers up to float32 round-off.
    out32 = decode_soft(torch.from_numpy(hm).float(), torch.from_numpy(centers).float(),
                        torch.from_numpy(scales).float(), beta=100.0, post_process=post_process)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), ref, rtol=0, atol=2e-2)


def test_post_process_strict_bounds_and_sign():
    # One-hot-ish peaks with a higher right / lower neighbour: shift +0.25 in x, -0.25 in y
    # only when 1 < px < W-1 and 1 < py < H-1.
    cases = [((2, 2), True), ((1, 40), False), ((40, 1), False), ((W_HM - 2, 40), True),
             ((W_HM - 1, 40), False), ((40, H_HM - 2), True), ((40, H_HM - 1), False)]
    hm = torch.zeros(1, len(cases), H_HM, W_HM)
    for j, ((x, y), _) in enumerate(cases):
        hm[0, j, y, x] = 1.0
        if x + 1 < W_HM:
            hm[0, j, y, x + 1] = 0.01
        if y - 1 >= 0:
            hm[0, j, y - 1, x] = 0.01
    center = torch.tensor([[W_HM / 2, H_HM / 2]])
    scale = torch.tensor([[W_HM / 200.0, 1.0]])
    plain = decode_soft(hm, center, scale, beta=2000.0, post_process=False)
    shifted = decode_soft(hm, center, scale, beta=2000.0, post_process=True)
    for j, (_, inside) in enumerate(cases):
        expected = torch.tensor([0.25, -0.25]) if inside else torch.zeros(2)
        torch.testing.assert_close(shifted[0, j] - plain[0, j], expected, rtol=0, atol=1e-5)
    # sign(0) = 0: a symmetric neighbourhood is not shifted.
    sym = torch.zeros(1, 1, H_HM, W_HM)
    sym[0, 0, 30, 30] = 1.0
    torch.testing.assert_close(decode_soft(sym, center, scale, 2000.0, True),
                               decode_soft(sym, center, scale, 2000.0, False))


def test_post_process_shift_is_constant_for_gradients():
    rng = np.random.default_rng(3)
    hm = torch.from_numpy(blob_heatmaps(rng, 3, 5)).requires_grad_(True)
    centers, scales = (torch.from_numpy(a) for a in random_boxes(rng, 3))
    weights = torch.from_numpy(rng.standard_normal((3, 5, 2)))
    (decode_soft(hm, centers, scales, 100.0, True) * weights).sum().backward()
    grad_pp = hm.grad.clone()
    hm.grad = None
    (decode_soft(hm, centers, scales, 100.0, False) * weights).sum().backward()
    torch.testing.assert_close(grad_pp, hm.grad)
    # And the hand-written backward equals autograd through plain softmax ops.
    hm.grad = None
    (soft_argmax(hm, 100.0) * weights).sum().backward()
    h, w = hm.shape[-2:]
    prob = torch.softmax(100.0 * hm.reshape(3, 5, -1), dim=-1).reshape(3, 5, h, w)
    auto_x = (prob * torch.arange(w, dtype=hm.dtype)).sum(dim=(2, 3))
    auto_y = (prob * torch.arange(h, dtype=hm.dtype)[:, None]).sum(dim=(2, 3))
    auto_grad, = torch.autograd.grad((torch.stack([auto_x, auto_y], -1) * weights).sum(), hm)
    torch.testing.assert_close(hm.grad, auto_grad)


def test_soft_argmax_float32_on_trained_looking_maps_matches_float64():
    # Peak 1 over a background near 0: with beta = 100 nearly every exponent lies 87-110 below the
    # maximum, where float32 exp() is denormal or zero. The float32 result and its gradient must
    # still be those of an exact float64 softmax.
    rng = np.random.default_rng(7)
    hm64 = torch.from_numpy(blob_heatmaps(rng, 3, 17, sigma=2.0, noise=0.005))
    weights = torch.from_numpy(rng.standard_normal((3, 17, 2)))
    exponents = 100.0 * (hm64 - hm64.amax(dim=(2, 3), keepdim=True))
    assert float(((exponents < -87.3) & (exponents > -103.9)).double().mean()) > 0.5
    hm32 = hm64.float().requires_grad_(True)
    coords32 = soft_argmax(hm32, 100.0)
    (coords32 * weights.float()).sum().backward()
    hm_ref = hm32.detach().double().requires_grad_(True)
    h, w = hm_ref.shape[-2:]
    prob = torch.softmax(100.0 * hm_ref.reshape(3, 17, -1), dim=-1).reshape(3, 17, h, w)
    ref = torch.stack([(prob * torch.arange(w, dtype=torch.float64)).sum(dim=(2, 3)),
                       (prob * torch.arange(h, dtype=torch.float64)[:, None]).sum(dim=(2, 3))], -1)
    ref_grad, = torch.autograd.grad((ref * weights).sum(), hm_ref)
    np.testing.assert_allclose(coords32.detach().double().numpy(), ref.detach().numpy(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(hm32.grad.double().numpy(), ref_grad.numpy(), rtol=0,
                               atol=1e-4 * float(ref_grad.abs().max()))


def test_soft_argmax_any_beta_sign_matches_softmax():
    # beta < 0 weights the minimum (the shift must use the map's minimum, or exp() overflows).
    rng = np.random.default_rng(8)
    hm = torch.from_numpy(blob_heatmaps(rng, 2, 3, h=9, w=7))
    for beta in (-300.0, -1.0, 0.0, 2.5):
        prob = torch.softmax(beta * hm.reshape(2, 3, -1), dim=-1).reshape(2, 3, 9, 7)
        ref = torch.stack([(prob * torch.arange(7.0, dtype=torch.float64)).sum(dim=(2, 3)),
                           (prob * torch.arange(9.0, dtype=torch.float64)[:, None]).sum(dim=(2, 3))], -1)
        torch.testing.assert_close(soft_argmax(hm, beta), ref)


def test_gradcheck_soft_argmax_and_to_image_coords():
    gen = torch.Generator().manual_seed(0)
    hm = torch.randn(2, 3, 5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: soft_argmax(x, beta=3.0), (hm,))
    coords = torch.rand(2, 3, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    center = torch.rand(2, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    scale = (torch.rand(2, 2, dtype=torch.float64, generator=gen) + 0.5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c, m, s: to_image_coords(c, m, s, (4, 5)), (coords, center, scale))


@pytest.mark.parametrize("post_process", [True, False])
def test_decode_argmax_matches_original_loop(post_process):
    rng = np.random.default_rng(4)
    hm = blob_heatmaps(rng, 3, 17).astype(np.float32)
    hm[0, :3] -= 5.0                       # max <= 0 -> coordinates zeroed before the transform
    hm[1, 0] = 0.0                         # all-zero map: max 0 -> zeroed
    centers, scales = random_boxes(rng, 3)
    coords, maxvals = decode_argmax(torch.from_numpy(hm), torch.from_numpy(centers).float(),
                                    torch.from_numpy(scales).float(), post_process=post_process)
    ref_coords, ref_max = original_decode_argmax(hm, centers, scales, post_process)
    np.testing.assert_allclose(coords.numpy(), ref_coords, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(maxvals.numpy(), ref_max.astype(np.float32))


def test_decode_on_batch_of_one_and_bfloat16():
    hm = torch.zeros(1, 17, H_HM, W_HM)
    hm[0, :, 48, 36] = 1.0
    center, scale = torch.tensor([[500.0, 500.0]]), torch.tensor([[2.15625, 2.875]])
    out = decode_soft(hm, center, scale, beta=1000.0)
    assert out.shape == (1, 17, 2)
    torch.testing.assert_close(out, torch.full((1, 17, 2), 500.0), rtol=0, atol=1e-2)
    out_bf16 = decode_soft(hm.bfloat16(), center, scale, beta=1000.0)
    assert out_bf16.dtype == torch.float32
    torch.testing.assert_close(out_bf16, out, rtol=0, atol=1e-2)


# ----------------------------------------------------------------------------- remapping
def test_remap_h36m_to_panoptic():
    hm = torch.arange(17.0).reshape(1, 17, 1, 1).expand(2, 17, 3, 4)
    out = remap_h36m_to_panoptic(hm)
    assert out.shape == (2, 15, 3, 4)
    assert out[:, :, 0, 0].tolist() == [list(map(float, H36M_TO_PANOPTIC))] * 2
    assert [8, 9, 0, 11, 12, 13, 4, 5, 6, 14, 15, 16, 1, 2, 3] == list(H36M_TO_PANOPTIC)
    torch.testing.assert_close(prepare_heatmaps(hm, "panoptic"), out)
    assert prepare_heatmaps(hm, "h36m") is hm
    with pytest.raises(ValueError, match="unknown"):
        prepare_heatmaps(hm, "mpii")
    with pytest.raises(ValueError, match="17"):
        remap_h36m_to_panoptic(hm[:, :16])


def test_maps_finite_flags_exactly_the_maps_with_nan_or_inf():
    from lib.core.heatmap import maps_finite
    maps = torch.rand(3, 4, 6, 5)
    maps[0, 1, 2, 3] = float("nan")
    maps[1, 2, 0, 0] = float("inf")
    maps[2, 3, 5, 4] = -float("inf")
    maps[2, 0, 1, 1] = 1e9                      # diverged but finite: not flagged
    expected = torch.isfinite(maps).flatten(2).all(dim=-1)
    assert torch.equal(maps_finite(maps), expected)
    assert int((~expected).sum()) == 3


def test_maps_finite_sums_half_precision_maps_without_overflow():
    # 96 x 72 maps of 1000 per pixel: every value is finite in fp16 (max 65504), the sum of a map
    # (6.9e6) is not; only the map holding a NaN and the one holding an inf may be flagged.
    from lib.core.heatmap import maps_finite
    maps = torch.full((2, 3, 72, 96), 1000.0, dtype=torch.float16)
    assert not torch.isfinite(maps.sum(dim=(-2, -1))).any()       # an fp16 reduction overflows on every map
    maps[0, 1, 5, 7] = float("nan")
    maps[1, 2, 0, 0] = float("inf")
    expected = torch.tensor([[True, False, True], [True, True, False]])
    for m in (maps, maps.bfloat16(), maps.float(), maps.double()):
        assert torch.equal(maps_finite(m), expected), m.dtype
