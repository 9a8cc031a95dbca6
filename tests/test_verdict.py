"""The verdict arithmetic (lib/eval/verdict.py) against scipy, and by hand on a tiny case."""
import math

import numpy as np
import pytest

from lib.eval.verdict import betainc, summarise, t_cdf, t_ppf

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")


@pytest.mark.parametrize("df", [1, 2, 4, 7, 30, 200])
def test_student_t_cdf_and_quantile_match_scipy(df):
    for t in (-12.0, -3.1, -0.4, 0.0, 0.7, 2.2, 9.5):
        assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-10, abs=1e-13)
    for q in (0.001, 0.025, 0.3, 0.5, 0.9, 0.975, 0.999):
        assert t_ppf(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-9, abs=1e-10)


def test_incomplete_beta_matches_scipy():
    for a, b, x in ((0.5, 0.5, 0.3), (2.0, 0.5, 0.9), (15.0, 0.5, 0.2), (3.5, 7.0, 0.6), (1.0, 1.0, 0.25)):
        assert betainc(a, b, x) == pytest.approx(scipy_special.betainc(a, b, x), rel=1e-11)


def test_summary_matches_scipy_one_sample_t_test():
    rng = np.random.default_rng(0)
    for n in (2, 5, 9):
        x = rng.normal(3.0, 2.0, n)
        s = summarise(x)
        assert s["n"] == n and s["mean"] == pytest.approx(x.mean()) and s["sd"] == pytest.approx(x.std(ddof=1))
        assert s["p_value"] == pytest.approx(scipy_stats.ttest_1samp(x, 0.0).pvalue, rel=1e-9)
        low, high = scipy_stats.t.interval(0.95, n - 1, loc=x.mean(), scale=scipy_stats.sem(x))
        assert s["ci95"] == pytest.approx([low, high], rel=1e-9)
        # a paired t-test of two paired samples is the one-sample test of their differences
        a = rng.normal(80.0, 5.0, n)
        b = a - x
        assert summarise(a - b)["p_value"] == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-9)


def test_summary_by_hand_and_edge_cases():
    # x = 1, 3: mean 2, sd sqrt(2), se 1, t = 2 with 1 df: p = 2 (1 - (1/2 + atan(2)/pi)), ci = 2 -+ 12.706
    s = summarise([1.0, 3.0])
    assert s["mean"] == 2.0 and s["sd"] == pytest.approx(math.sqrt(2.0))
    assert s["p_value"] == pytest.approx(1.0 - 2.0 * math.atan(2.0) / math.pi, rel=1e-12)
    assert s["ci95"] == pytest.approx([2.0 - 12.706204736, 2.0 + 12.706204736], rel=1e-9)
    assert summarise([4.0]) == {"mean": 4.0, "sd": None, "n": 1, "ci95": None, "p_value": None}
    assert summarise([2.0, 2.0, 2.0])["p_value"] == 0.0 and summarise([0.0, 0.0])["p_value"] == 1.0
    with pytest.raises(ValueError):
        summarise([])
