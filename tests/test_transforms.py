"""Box -> centre/scale -> crop affine: docs/original.md#worked-examples worked examples and parity with HRNet's
3-point solve."""
import cv2
import numpy as np
import pytest

from lib.core.transforms import (affine_points, box_from_joints, box_to_center_scale, flip_joints,
                                 get_affine_transform)


def hrnet_affine_reference(center, scale, rot, output_size, shift=(0.0, 0.0), inv=False):
    """HRNet's get_affine_transform written out: three float32 points, OpenCV's solver."""
    scale_px = np.asarray(scale, np.float64) * 200.0
    src_w = scale_px[0]
    dst_w, dst_h = output_size
    rad = np.pi * rot / 180.0

    def rotate(p):
        return np.array([p[0] * np.cos(rad) - p[1] * np.sin(rad), p[0] * np.sin(rad) + p[1] * np.cos(rad)])

    def third(a, b):
        d = a - b
        return b + np.array([-d[1], d[0]], np.float32)

    src = np.zeros((3, 2), np.float32)
    dst = np.zeros((3, 2), np.float32)
    src[0] = np.asarray(center) + scale_px * np.asarray(shift)
    src[1] = src[0] + rotate([0.0, src_w * -0.5])
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + np.array([0.0, dst_w * -0.5])
    src[2] = third(src[0], src[1])
    dst[2] = third(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


def test_worked_example_box_center_scale():
    # docs/original.md#example-1-box-centre-and-scale: joints spanning x 400..600, y 300..700 in a 1000x1000 image.
    joints = np.array([[400.0, 300.0], [600.0, 700.0], [500.0, 500.0]])
    box = box_from_joints(joints, 1000, 1000)
    assert box.tolist() == [385, 270, 615, 730]
    center, scale = box_to_center_scale(box, 288 / 384)
    assert center.dtype == np.float32 and scale.dtype == np.float32
    np.testing.assert_allclose(center, [500.0, 500.0])
    np.testing.assert_allclose(scale, [2.15625, 2.875])


def test_worked_example_inverse_and_forward():
    center, scale = np.array([500.0, 500.0]), np.array([2.15625, 2.875])
    inv = get_affine_transform(center, scale, 0, (72, 96), inv=True)
    got = affine_points(np.array([[36.0, 48.0], [0.0, 0.0], [72.0, 96.0]]), inv)
    np.testing.assert_allclose(got, [[500.0, 500.0], [284.375, 212.5], [715.625, 787.5]], atol=1e-9)
    # docs/original.md#example-2-heatmap-target-centre: image (500, 500) -> crop (144, 192) of a 288x384 input
    fwd = get_affine_transform(center, scale, 0, (288, 384))
    np.testing.assert_allclose(affine_points(np.array([[500.0, 500.0]]), fwd), [[144.0, 192.0]], atol=1e-9)
    # forward formula of docs/original.md#heatmap-to-image-coordinates: x_crop = W/2 + (x - cx) * W / (sx * 200)
    x = np.array([[123.0, 777.0]])
    k = 288 / (2.15625 * 200)
    np.testing.assert_allclose(affine_points(x, fwd), [[144 + (123 - 500) * k, 192 + (777 - 500) * k]], atol=1e-9)


@pytest.mark.parametrize("inv", [False, True])
def test_closed_form_matches_three_point_solve(inv):
    rng = np.random.default_rng(0)
    for _ in range(20):
        center = rng.uniform(50, 950, 2)
        scale = rng.uniform(0.5, 5.0, 2)
        rot = rng.uniform(-60, 60)
        shift = rng.uniform(-0.2, 0.2, 2)
        out = (int(rng.integers(32, 400)), int(rng.integers(32, 400)))
        ref = hrnet_affine_reference(center, scale, rot, out, shift, inv)
        got = get_affine_transform(center, scale, rot, out, shift=shift, inv=inv)
        # the reference works in float32 points: compare where it is exact to float32
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=2e-3)


def test_batched_affine_equals_per_sample_and_inverse_composes():
    rng = np.random.default_rng(1)
    center = rng.uniform(100, 900, (4, 3, 2))
    scale = rng.uniform(1, 3, (4, 3, 2))
    rot = rng.uniform(-30, 30, (4, 3))
    M = get_affine_transform(center, scale, rot, (96, 128))
    Minv = get_affine_transform(center, scale, rot, (96, 128), inv=True)
    assert M.shape == (4, 3, 2, 3)
    pts = rng.uniform(0, 1000, (4, 3, 5, 2))
    back = affine_points(affine_points(pts, M), Minv)
    np.testing.assert_allclose(back, pts, atol=1e-8)
    for a in range(4):
        for b in range(3):
            single = get_affine_transform(center[a, b], scale[a, b], rot[a, b], (96, 128))
            np.testing.assert_allclose(M[a, b], single)
            for j in range(5):   # slow loop reference for affine_points
                x, y = pts[a, b, j]
                expect = single @ np.array([x, y, 1.0])
                np.testing.assert_allclose(affine_points(pts, M)[a, b, j], expect, atol=1e-9)


def test_box_clips_to_image_and_truncates():
    joints = np.array([[[-50.0, 10.3], [120.7, 990.9]], [[10.0, 20.0], [30.0, 60.0]]])
    box = box_from_joints(joints, np.array([100, 1000]), np.array([1000, 1000]))
    # sample 0: w = 170.7 -> x1 = max(0, -62.8) = 0, x2 = min(100, 133.5) = 100;
    # h = 980.6 -> y1 = max(0, 10.3 - 73.545) = 0, y2 = min(1000, 1064.445) = 1000
    assert box[0].tolist() == [0, 0, 100, 1000]
    # sample 1: w 20 -> 8.5, 31.5 -> (8, 31); h 40 -> 17, 63 -> (17, 63)
    assert box[1].tolist() == [8, 17, 31, 63]
    assert box.dtype == np.int64


def test_box_to_center_scale_wide_box():
    center, scale = box_to_center_scale(np.array([0, 0, 400, 100]), 0.75)
    np.testing.assert_allclose(center, [200.0, 50.0])
    np.testing.assert_allclose(scale, [400 / 200 * 1.25, 400 / 0.75 / 200 * 1.25], rtol=1e-6)


def test_flip_joints_swaps_pairs():
    joints = np.array([[10.0, 1.0], [20.0, 2.0], [30.0, 3.0]])
    vis = np.array([1, 0, 1])
    fj, fv = flip_joints(joints, vis, 100, [(0, 2)])
    np.testing.assert_allclose(fj, [[69.0, 3.0], [79.0, 2.0], [89.0, 1.0]])
    assert fv.tolist() == [1, 0, 1]
