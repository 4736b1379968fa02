"""The statistics behind the report: bootstrap confidence intervals, paired tests, Holm's correction.

Everything here is plain numpy/scipy on 1-d arrays, so that each piece can be checked by hand (tests/test_report.py).

- :func:`bootstrap_ci`: the mean and a percentile bootstrap confidence interval of the mean
  (``scipy.stats.bootstrap``, seeded, so a rebuilt report shows the same numbers).
- :func:`paired_test`: the Wilcoxon signed-rank test of two systems on the same examples, with the matched-pairs
  rank-biserial correlation as effect size, oriented so that a positive value favours the first system.
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
- :func:`direction`: whether a metric is lower-better, higher-better, or a signed delta (best at 0).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cache

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0

# metrics whose registry entry may be unavailable (optional package missing) but whose direction is known
KNOWN_HIGHER = frozenset({"pesq", "stoi", "estoi", "si_sdr", "sisdr", "sdr", "snr"})
SIGNED_PREFIXES = ("ac_signed",)  # signed deltas: neither lower nor higher is better; 0 is best


@dataclass(frozen=True)
class CI:
    mean: float
    low: float
    high: float
    n: int  # observations used (finite values)


def bootstrap_ci(values, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                 seed: int = SEED) -> CI:
    """Mean of the finite values with a percentile bootstrap CI of the mean.

    NaN values (not applicable) are dropped first. No finite value: mean NaN, n 0. One value: the interval is
    undefined (NaN). All values equal: the interval is degenerate (low = high = mean)."""
    return bootstrap_cis([values], confidence=confidence, n_resamples=n_resamples, seed=seed)[0]


def bootstrap_cis(samples, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                  seed: int = SEED) -> list[CI]:
    """:func:`bootstrap_ci` of many samples at once, in a few ``scipy.stats.bootstrap`` calls.

    Samples with the same number of finite values are stacked and resampled together. scipy draws the resample
    indices from (seed, n) alone, so each result is exactly what a separate call with the same seed gives."""
    from scipy.stats import bootstrap

    clean = []
    for v in samples:
        x = np.asarray(v, dtype=np.float64).ravel()
        clean.append(x[np.isfinite(x)])
    out: list[CI | None] = [None] * len(clean)
    by_n: dict[int, list[int]] = {}
    for i, x in enumerate(clean):
        n = int(x.size)
        if n == 0:
            out[i] = CI(math.nan, math.nan, math.nan, 0)
        elif n == 1:
            out[i] = CI(float(x[0]), math.nan, math.nan, 1)
        elif np.all(x == x[0]):
            out[i] = CI(float(x.mean()), float(x[0]), float(x[0]), n)
        else:
            by_n.setdefault(n, []).append(i)
    for n, idx in by_n.items():
        data = np.stack([clean[i] for i in idx])  # (groups, n)
        batch = max(1, min(n_resamples, 4_000_000 // (len(idx) * n)))  # bounds the (groups, batch, n) copy
        kw = dict(n_resamples=n_resamples, confidence_level=confidence, method="percentile", vectorized=True,
                  axis=-1, batch=batch)
        try:
            res = bootstrap((data,), np.mean, rng=np.random.default_rng(seed), **kw)
        except TypeError:  # scipy < 1.15 calls it random_state
            res = bootstrap((data,), np.mean, random_state=np.random.default_rng(seed), **kw)
        lo = np.atleast_1d(res.confidence_interval.low)
        hi = np.atleast_1d(res.confidence_interval.high)
        for j, i in enumerate(idx):
            out[i] = CI(float(clean[i].mean()), float(lo[j]), float(hi[j]), n)
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class PairedTest:
    n: int  # pairs with both values finite
    n_nonzero: int  # pairs whose difference is not 0 (the ones the signed-rank test ranks)
    mean_diff: float  # mean of (baseline - focus) oriented so that > 0 favours the focus system
    median_diff: float
    statistic: float  # scipy's W (the smaller of the two rank sums)
    p: float
    rank_biserial: float  # in [-1, 1]; > 0 favours the focus system


def rank_biserial(d) -> float:
    """Matched-pairs rank-biserial correlation of differences ``d``: (R+ - R-) / (R+ + R-), ranks of |d| over
    the nonzero differences (ties get their average rank). +1: every difference positive; NaN: none nonzero."""
    from scipy.stats import rankdata

    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return math.nan
    r = rankdata(np.abs(d))
    return float((r[d > 0].sum() - r[d < 0].sum()) / r.sum())


def paired_test(focus, baseline, *, higher_is_better: bool = False) -> PairedTest:
    """Two-sided Wilcoxon signed-rank test of ``focus`` against ``baseline`` on the same examples (aligned
    arrays). Pairs with a NaN on either side are dropped; zero differences are dropped (Wilcoxon's method)."""
    from scipy.stats import wilcoxon

    a = np.asarray(focus, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: {a.shape} vs {b.shape} values; pair them on the same examples first")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = (a - b) if higher_is_better else (b - a)
    n, nz = int(d.size), int(np.count_nonzero(d))
    if n == 0:
        return PairedTest(0, 0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean_d, med_d = float(d.mean()), float(np.median(d))
    if nz == 0:  # identical on every example: no evidence of a difference
        return PairedTest(n, 0, mean_d, med_d, 0.0, 1.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / ties notes from scipy
        res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return PairedTest(n, nz, mean_d, med_d, float(res.statistic), float(res.pvalue), rank_biserial(d))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaNs stay NaN and are not counted in the family size."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# --- metric direction ---------------------------------------------------------------------------------------
def base_name(metric: str) -> str:
    return metric.split("/", 1)[0]


@cache
def direction(metric: str) -> str:
    """"lower", "higher" or "signed" for a metric name (its base name before "/" decides).

    The metric registry says (``Metric.higher_is_better``); a name it does not know (a derived key such as
    ``ac_mean`` or ``cost/seconds``) is looked up by its prefix before "_", then defaults to lower-is-better."""
    base = base_name(metric)
    if base.startswith(SIGNED_PREFIXES):
        return "signed"
    for name in dict.fromkeys([base, base.split("_", 1)[0]]):
        hib = _registry_higher_is_better(name)
        if hib is not None:
            return "higher" if hib else "lower"
    return "higher" if base in KNOWN_HIGHER else "lower"


def _registry_higher_is_better(name: str) -> bool | None:
    try:
        from bench.metrics import METRICS

        if name not in METRICS.names():
            return None
        return bool(getattr(METRICS.get(name), "higher_is_better", False))
    except Exception:  # an optional metric whose package is missing: fall back to the known directions
        return None


def better(a: float, b: float, how: str) -> bool:
    """Is ``a`` strictly better than ``b`` under direction ``how``?"""
    if how == "higher":
        return a > b
    if how == "signed":
        return abs(a) < abs(b)
    return a < b


def best_value(values, how: str) -> float:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan
    if how == "higher":
        return float(v.max())
    if how == "signed":
        return float(v[np.argmin(np.abs(v))])
    return float(v.min())
