"""The statistics behind the report: the source-level statistics of :mod:`bench.stats` (shared with the
harness's ``summary.csv``), and the direction of each metric.

- :func:`intervals` / :func:`hierarchical_ci`: the mean and its hierarchical bootstrap interval (seeds, then
  sources, then examples within each source; percentile method; seeded, so a rebuilt report shows the same
  numbers).
- :func:`source_pairs` + :func:`paired_test`: the Wilcoxon signed-rank test of two systems on their per-source
  means (seeds pooled by averaging within a source), with the matched-pairs rank-biserial correlation as effect
  size, oriented so that a positive value favours the first system.
- :func:`holm`: Holm's step-down adjustment of a family of p-values; :func:`bh`: Benjamini-Hochberg q-values of the
  exploratory per-task tests.
- :func:`direction`: whether a metric is lower-better, higher-better, or a signed delta (best at 0).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from bench.stats import (
    CONFIDENCE,
    MIN_SOURCES,
    N_RESAMPLES,
    SEED,
    Interval,
    PairedTest,
    bh,
    example_means,
    hierarchical_ci,
    holm,
    intervals,
    min_p,
    paired_test,
    rank_biserial,
    source_pairs,
)

__all__ = ["CONFIDENCE", "KNOWN_HIGHER", "MIN_SOURCES", "N_RESAMPLES", "SEED", "SIGNED_PREFIXES", "Interval",
           "PairedTest", "base_name", "best_value", "better", "bh", "direction", "example_means", "hierarchical_ci",
           "holm", "intervals", "min_p", "paired_test", "rank_biserial", "source_pairs"]

# metrics whose registry entry may be unavailable (optional package missing) but whose direction is known
KNOWN_HIGHER = frozenset({"pesq", "stoi", "estoi", "si_sdr", "sisdr", "sdr", "snr"})
SIGNED_PREFIXES = ("ac_signed",)  # signed deltas: neither lower nor higher is better; 0 is best


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
