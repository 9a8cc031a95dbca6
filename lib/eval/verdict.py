"""A verdict over paired seeds: mean, standard deviation, Student-t 95 % interval and p-value.

The benchmark of the paper's claim runs one pre-trained detector per seed and fine-tunes it twice
or more (2D-only and guided), so the runs of a seed are paired: the statistic is each seed's
improvement of the guided run over the 2D-only one, ``100 (baseline - guided) / baseline`` in %,
and the test is Student's one-sample t-test of those per-seed improvements against 0 (the paired
t-test of the relative error). With n seeds:

    mean = sum(x) / n,  sd = sqrt(sum((x - mean)^2) / (n - 1)),  se = sd / sqrt(n),
    ci95 = mean -+ t_{0.975, n-1} se,  t = mean / se,  p = 2 (1 - F_{n-1}(|t|)).

Student's t distribution is computed here (no scipy at run time): its CDF through the regularised
incomplete beta function, ``F_v(t) = 1 - I_{v/(v+t^2)}(v/2, 1/2) / 2`` for t >= 0, evaluated with
its continued fraction (modified Lentz; near t = 0 through the complementary form, which keeps the
digits that 1 - x would lose), and the quantile by bisection on the CDF.
"""
import math
from typing import Dict, Sequence

_EPS = 1e-15
_TINY = 1e-300


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), converges for x < (a+1)/(a+b+2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0, 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    t2 = t * t
    if t2 < df:     # near 0: I_x(v/2, 1/2) = 1 - I_{1-x}(1/2, v/2) keeps the digits 1 - x would lose
        tail = 0.5 * (1.0 - betainc(0.5, df / 2.0, t2 / (df + t2)))
    else:
        tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t2))
    return 1.0 - tail if t >= 0 else tail


def t_ppf(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t (0 < q < 1), by bisection on :func:`t_cdf`."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"t_ppf: q must be in (0, 1), got {q}")
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > q:
        lo *= 2.0
    while t_cdf(hi, df) < q:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def summarise(values: Sequence[float]) -> Dict:
    """``{mean, sd, n, ci95: [low, high], p_value}`` of per-seed improvements (module docstring).

    With one value ``sd``, the interval and the p-value are None (nothing to estimate them from);
    with ``sd`` 0 the interval is the mean itself and the p-value 0 (or 1 for a mean of 0).
    """
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("summarise: no values")
    mean = sum(xs) / n
    if n == 1:
        return {"mean": mean, "sd": None, "n": 1, "ci95": None, "p_value": None}
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    se = sd / math.sqrt(n)
    half = t_ppf(0.975, n - 1) * se
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = 2.0 * (1.0 - t_cdf(abs(mean / se), n - 1))
    return {"mean": mean, "sd": sd, "n": n, "ci95": [mean - half, mean + half], "p_value": p}
