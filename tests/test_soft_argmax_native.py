"""The CPU kernels of the windowed soft-argmax (lib/core/soft_argmax_kernels.c) against the torch
plan and a float64 softmax over the full map, and how they are built (lib/utils/native_build.py).

The kernel tests skip where no C compiler can build the library; the build tests do not need one."""
import math
import warnings

import numpy as np
import pytest
import torch

from lib.core import soft_argmax_native
from lib.core.soft_argmax import BLOCK_PX, EXP_CAP, WINDOW_TOL_PX, _exp_floor, window_plan, windowed_soft_argmax
from lib.utils import native_build
from tests.test_soft_argmax_window import peaked_maps, ref_soft_argmax

SIZES = ((96, 72), (64, 48), (21, 13), (45, 30), (17, 40), (8, 9), (5, 100), (100, 5), (16, 16), (33, 17))


@pytest.fixture(scope="module")
def kernels():
    lib = soft_argmax_native.kernels_for(torch.zeros(1, 8, 8))
    if lib is None:
        pytest.skip("no C compiler could build lib/core/soft_argmax_kernels.c here")
    return lib


def kernel_forward(lib, maps, beta, tol=WINDOW_TOL_PX):
    m, h, w = maps.shape
    count = min(2 * BLOCK_PX, h) * min(2 * BLOCK_PX, w)
    return soft_argmax_native.forward(lib, maps.contiguous(), beta, tol, BLOCK_PX,
                                      _exp_floor(torch.float32, count), EXP_CAP)


def grad_atol(ref_g, beta, upstream):
    """float32 round-off of the gradient: relative to its scale, plus beta |g| times the rounding of
    a coordinate near 100 px (4e-6), which d x / d h_i = beta p_i (gx_i - x) carries at the peak."""
    return 2e-5 * np.abs(ref_g).max() + 4e-6 * abs(beta) * np.abs(upstream).sum(axis=-1).max()


def run_host(maps, beta, upstream):
    """windowed_soft_argmax on the CPU's path (float32): -> (coords, gradient) as float64 numpy."""
    hm = torch.as_tensor(np.asarray(maps), dtype=torch.float32).requires_grad_(True)
    coords = windowed_soft_argmax(hm, beta, WINDOW_TOL_PX, True)
    (coords * torch.as_tensor(upstream, dtype=torch.float32)).sum().backward()
    return coords.detach().double().numpy(), hm.grad.double().numpy()


# ----------------------------------------------------------------------------- the plan
def test_kernel_plan_equals_the_torch_plan(kernels):
    rng = np.random.default_rng(0)
    for h, w in SIZES:
        maps = torch.from_numpy(peaked_maps(rng, 3, 6, h, w, sigma=1.5)).float().reshape(-1, h, w)
        maps[0] = 0.3 * torch.from_numpy(rng.standard_normal((h, w))).float()      # noise: fails the bound
        maps[1] = 0.0                                                               # flat
        maps[2] = 0.0
        maps[2, h - 1, w - 1] = 1.0                                                 # corner peak
        for beta in (100.0, 3.0, 0.0):
            plan = window_plan(maps, beta)
            _, use, peak, saved = kernel_forward(kernels, maps, beta)
            y0, x0 = saved[0], saved[1]
            assert use.tolist() == plan["use_window"].tolist(), (h, w, beta)
            assert torch.equal(peak, plan["peak"])
            on = plan["use_window"]
            assert torch.equal(y0[on], plan["y0"][on]) and torch.equal(x0[on], plan["x0"][on])
            if beta == 100.0 and h * w > 256:
                assert bool(use[3:].all())                                          # trained-looking maps


# ----------------------------------------------------------------------------- the results
@pytest.mark.parametrize("beta", [100.0, 40.0, -100.0])
def test_kernels_equal_the_full_map_softmax(kernels, beta):
    rng = np.random.default_rng(1)
    for h, w in SIZES:
        maps = peaked_maps(rng, 2, 9, h, w, sigma=1.5)
        maps[1, 4] = 0.1 * rng.standard_normal((h, w))                           # the fallback, in the same call
        if beta < 0:
            maps = -maps
        maps = maps.astype(np.float32)
        upstream = rng.standard_normal((2, 9, 2))
        coords, grad = run_host(maps, beta, upstream)
        ref_c, ref_g = ref_soft_argmax(maps, beta, upstream)
        # float32 round-off of coordinates up to ~100 px, and of gradients relative to their scale
        np.testing.assert_allclose(coords, ref_c, rtol=0, atol=3e-5)
        np.testing.assert_allclose(grad, ref_g, rtol=0, atol=grad_atol(ref_g, beta, upstream))


def test_kernels_agree_with_the_torch_path(kernels):
    rng = np.random.default_rng(2)
    maps = torch.from_numpy(peaked_maps(rng, 8, 17)).float()
    upstream = torch.from_numpy(rng.standard_normal((8, 17, 2))).float()
    got, want = [], []
    for host, out in ((True, got), (False, want)):          # the masked path never uses the kernels
        hm = maps.clone().requires_grad_(True)
        coords = windowed_soft_argmax(hm, 100.0, WINDOW_TOL_PX, host)
        (coords * upstream).sum().backward()
        out += [coords.detach(), hm.grad]
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=2e-5)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=grad_atol(want[1].numpy(), 100.0, upstream.numpy()))
    assert int((got[1] != 0).sum()) <= 8 * 17 * 16 * 16                         # zero outside the windows


def test_non_finite_maps_give_what_the_full_map_gives(kernels):
    h, w = 40, 32
    rng = np.random.default_rng(3)
    maps = peaked_maps(rng, 1, 4, h, w, sigma=1.5).astype(np.float32)
    maps[0, 0, 3, 3] = np.nan                                     # NaN anywhere: NaN joint
    maps[0, 1, 20, 20] = np.inf                                   # +inf: NaN joint, as torch.softmax
    maps[0, 2, :, :5] = -np.inf                                   # -inf pixels weigh nothing
    upstream = np.ones((1, 4, 2))
    coords, grad = run_host(maps, 100.0, upstream)
    assert np.isnan(coords[0, 0]).all() and np.isnan(coords[0, 1]).all()
    ref_c, ref_g = ref_soft_argmax(np.where(np.isneginf(maps), -1e30, maps)[:, 2:], 100.0, upstream[:, 2:])
    np.testing.assert_allclose(coords[0, 2:], ref_c[0], rtol=0, atol=3e-5)
    np.testing.assert_allclose(grad[0, 2:], ref_g[0], rtol=0, atol=grad_atol(ref_g, 100.0, upstream))


def test_kernels_give_the_same_numbers_on_any_thread_count(kernels):
    rng = np.random.default_rng(4)
    maps = torch.from_numpy(peaked_maps(rng, 4, 17)).float()
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            hm = maps.clone().requires_grad_(True)
            coords = windowed_soft_argmax(hm, 100.0, WINDOW_TOL_PX, True)
            coords.sum().backward()
            outs.append((coords.detach(), hm.grad))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


# ----------------------------------------------------------------------------- building
def _fresh(monkeypatch, tmp_path):
    monkeypatch.setattr(native_build, "_loaded", {})
    monkeypatch.setattr(native_build, "_warned", set())
    monkeypatch.setenv(native_build.CACHE_ENV, str(tmp_path / "cache"))


def test_switched_off_or_without_a_compiler_the_torch_path_runs(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    monkeypatch.setenv(native_build.DISABLE_ENV, "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # switched off: silent
        assert native_build.load_native(soft_argmax_native.SOURCE) is None
    _fresh(monkeypatch, tmp_path)
    monkeypatch.delenv(native_build.DISABLE_ENV)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match="no C compiler"):
        assert native_build.load_native(soft_argmax_native.SOURCE) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # one warning per process
        assert native_build.load_native(soft_argmax_native.SOURCE) is None
    # and the soft-argmax then runs as torch operations, with the numbers of the masked path
    maps = torch.from_numpy(peaked_maps(np.random.default_rng(5), 2, 3)).float()
    assert soft_argmax_native.kernels_for(maps.reshape(-1, 96, 72)) is None
    torch.testing.assert_close(windowed_soft_argmax(maps, 100.0, WINDOW_TOL_PX, True),
                               windowed_soft_argmax(maps, 100.0, WINDOW_TOL_PX, False), rtol=0, atol=0)


def test_a_failed_build_warns_and_leaves_no_file(monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    bad = tmp_path / "broken.c"
    bad.write_text("int l2d_broken(void) { return 1 }\n")
    compiler = native_build.os.environ.get("CC") or "cc"
    if native_build.shutil.which(compiler) is None:
        pytest.skip("no C compiler here")
    with pytest.warns(RuntimeWarning, match="could not build broken.c"):
        assert native_build.load_native(bad) is None
    assert not any((tmp_path / "cache").glob("*.so"))


def test_builds_are_cached_by_source_and_reused(kernels, monkeypatch, tmp_path):
    _fresh(monkeypatch, tmp_path)
    src = tmp_path / "answer.c"
    src.write_text("int l2d_answer(void) { return 42; }\n")
    assert native_build.load_native(src).l2d_answer() == 42
    built = sorted((tmp_path / "cache").glob("answer-*.so"))
    assert len(built) == 1 and not list((tmp_path / "cache").glob(".answer-*"))   # no temporary left
    _fresh(monkeypatch, tmp_path)
    mtime = built[0].stat().st_mtime_ns
    assert native_build.load_native(src).l2d_answer() == 42                       # reused, not rebuilt
    assert built[0].stat().st_mtime_ns == mtime
    _fresh(monkeypatch, tmp_path)
    src.write_text("int l2d_answer(void) { return 43; }\n")                       # an edited source
    assert native_build.load_native(src).l2d_answer() == 43
    assert len(list((tmp_path / "cache").glob("answer-*.so"))) == 2


def test_soft_argmax_kernels_only_take_float32_cpu_contiguous_maps(kernels):
    maps = torch.zeros(2, 8, 8)
    assert soft_argmax_native.kernels_for(maps) is kernels
    assert soft_argmax_native.kernels_for(maps.double()) is None
    assert soft_argmax_native.kernels_for(maps.transpose(1, 2)) is None
    assert math.isfinite(_exp_floor(torch.float32, 256))


# ----------------------------------------------------------------------------- the quarter-pixel shift
@pytest.mark.parametrize("beta", [100.0, -100.0])
def test_kernel_shift_equals_the_post_processing(kernels, beta):
    """The shift the kernels take while a map is in the cache equals lib.core.heatmap's, computed
    from the same coordinates: window maps, full-map ones, peaks at the borders (where the strict
    1 < p < W - 1 test decides), ties (sign 0), NaN maps and bfloat16 input."""
    from lib.core.heatmap import _quarter_pixel_shift
    from lib.core.soft_argmax import windowed_soft_argmax_and_shift
    rng = np.random.default_rng(6)
    for h, w in ((96, 72), (21, 13), (17, 40)):
        maps = peaked_maps(rng, 3, 8, h, w, sigma=1.5)
        maps[0, 0] = 0.1 * rng.standard_normal((h, w))                        # the full-map path
        maps[0, 1] = 0.0
        maps[0, 1, 1, 1] = 1.0                                                # at the strict border
        maps[0, 2] = 0.0
        maps[0, 2, 2, 2] = 1.0                                                # just inside it
        maps[0, 3] = 0.0
        maps[0, 3, h // 2, w // 2] = 1.0                                      # neighbours tie: sign 0
        maps[0, 4, 3, 3] = np.nan
        if beta < 0:
            maps = -maps
        for dtype in (torch.float32, torch.bfloat16):
            hm = torch.from_numpy(maps).to(dtype)
            coords, shift = windowed_soft_argmax_and_shift(hm, beta, WINDOW_TOL_PX, True)
            assert shift is not None and shift.dtype == torch.float32
            want = _quarter_pixel_shift(hm, coords)
            assert torch.equal(shift, want), (h, w, dtype)
            assert set(shift.unique().tolist()) <= {-0.25, 0.0, 0.25} and (shift != 0).any()
    # elsewhere (the masked path) decode_soft computes it itself: no shift comes back
    assert windowed_soft_argmax_and_shift(hm, beta, WINDOW_TOL_PX, False)[1] is None
