"""Statistics at the level of the source: what ``summary.csv`` holds and what the report's tables and tests use.

Plain numpy/scipy on tidy score tables (one row per system x seed x example x metric, with ``source_id``), so each
piece can be checked by hand (tests/test_stats.py).

The unit of replication is the **source** (a speaker, a piece, a file), not the example: the examples of one task
are segments cut from a few sources, so examples of one source are not independent, and a trained system's score
also varies with its training seed. Hence:

- :func:`intervals` / :func:`hierarchical_ci`: the mean of the finite values with a **hierarchical bootstrap**
  percentile interval: each resample draws the seeds with replacement, then the sources with replacement, then the
  examples of each drawn source with replacement (seeds and sources are crossed: every seed scored the same
  examples), and takes the weighted mean. The draws depend only on the seed and the cell's shape (number of seeds,
  examples per source), so a rebuilt summary or report shows the same numbers, whatever else is in the table.
- :func:`summarise`: ``summary.csv``'s rows: mean, std, n, the interval, the numbers of sources and seeds.
- :func:`source_pairs` + :func:`paired_test`: the Wilcoxon signed-rank test of two systems on their per-source
  means (seeds pooled by averaging within a source), with the matched-pairs rank-biserial correlation.
- :func:`holm`: Holm's step-down adjustment of one family of p-values; :func:`bh`: Benjamini-Hochberg q-values.
- :mod:`bench.stats.primary`: the primary family declared before the run, and power.

What each assumes is written in docs/report.md ("What the statistics assume").
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0
MIN_SOURCES = 2  # fewer sources: no interval (the spread between sources cannot be estimated from one)
SOURCE_KEYS = ("corpus", "source_id")  # what names a source (corpus too, so two corpora never share a source)
ITEM_KEYS = ("task", "example")  # what names an example (task too, so a pooled cell keeps the tasks apart)
STRATUM_KEYS = ("task",)  # a source's examples are redrawn within each of these (tasks are fixed, not sampled)
INTERVAL_COLUMNS = ["mean", "ci_low", "ci_high", "n", "n_sources", "n_seeds"]
_CHUNK = 4_000_000  # floats per (cells x seeds x resamples) block: bounds the memory of one matrix product


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int  # finite values
    n_sources: int
    n_seeds: int


# --- the hierarchical bootstrap --------------------------------------------------------------------------------
def hierarchical_ci(values, sources=None, seeds=None, *, confidence: float = CONFIDENCE,
                    n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Interval:
    """:func:`intervals` of one sample given as aligned 1-d arrays: ``values``, their ``sources`` (default: every
    value its own source) and training ``seeds`` (default: one seed). Values of one seed are the examples, in
    order; the k-th value of a source under one seed is the same example as the k-th under another."""
    v = np.asarray(values, dtype=np.float64).ravel()
    src = np.arange(v.size) if sources is None else np.asarray(sources).ravel()
    sd = np.zeros(v.size, dtype=np.int64) if seeds is None else np.asarray(seeds).ravel()
    if not (src.size == sd.size == v.size):
        raise ValueError(f"hierarchical_ci: {v.size} values, {src.size} sources, {sd.size} seeds")
    df = pd.DataFrame({"g": 0, "value": v, "source_id": src, "seed": sd})
    df["example"] = df.groupby(["seed", "source_id"], sort=False).cumcount()  # k-th example of a source
    row = intervals(df, ["g"], confidence=confidence, n_resamples=n_resamples, seed=seed).iloc[0]
    return Interval(float(row["mean"]), float(row["ci_low"]), float(row["ci_high"]), int(row["n"]),
                    int(row["n_sources"]), int(row["n_seeds"]))


def intervals(df: pd.DataFrame, group: Sequence[str], *, value: str = "value", confidence: float = CONFIDENCE,
              n_resamples: int = N_RESAMPLES, seed: int = SEED, ci: bool | Callable[[str], bool] = True,
              std: bool = False, examples: bool = False) -> pd.DataFrame:
    """Per ``group``: the mean of the finite ``value`` s and its hierarchical bootstrap interval.

    Returns the group columns (sorted) and ``mean, ci_low, ci_high, n, n_sources, n_seeds``. A source is named by
    :data:`SOURCE_KEYS` (the columns present; a row without ``source_id`` is a source of its own), an example by
    :data:`ITEM_KEYS`, a seed by ``seed`` (absent: one seed). No finite value: mean NaN, n 0. Fewer than
    :data:`MIN_SOURCES` sources: no interval (NaN). All values equal: a zero-width interval. ``n_resamples=0``:
    no intervals at all (NaN), the counts only; ``ci``, a predicate on the ``metric`` column, chooses the groups
    that get one (e.g. :func:`main_metric`). ``std``: also the standard deviation of the finite values (column
    ``std``, after ``mean``). ``examples``: also ``n_examples``, the distinct examples (n counts every seed's
    value). Two rows of one group with the same seed and example are an
    error: the table is not what the bootstrap assumes."""
    group = list(group)
    missing = [c for c in [*group, value] if c not in df.columns]
    if missing:
        raise ValueError(f"intervals: the table has no column(s) {missing}")
    cols = [*group, "mean", *(["std"] if std else []), *INTERVAL_COLUMNS[1:], *(["n_examples"] if examples else [])]
    if df.empty:
        return pd.DataFrame(columns=cols)
    grouped = df.groupby(group, sort=True, dropna=False)
    keys = grouped.size().reset_index()[group]
    gid_all = grouped.ngroup().to_numpy()
    n_groups = len(keys)
    v_all = pd.to_numeric(df[value], errors="coerce").to_numpy(np.float64)
    fin = np.isfinite(v_all)
    out = keys.copy()
    n = np.bincount(gid_all[fin], minlength=n_groups)
    sums = np.bincount(gid_all[fin], weights=v_all[fin], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["mean"] = np.where(n > 0, sums / np.maximum(n, 1), np.nan)
        if std:
            dev = np.bincount(gid_all[fin], weights=(v_all[fin] - out["mean"].to_numpy()[gid_all[fin]]) ** 2,
                              minlength=n_groups)
            out["std"] = np.where(n > 1, np.sqrt(dev / np.maximum(n - 1, 1)), np.nan)
    out["ci_low"] = np.nan
    out["ci_high"] = np.nan
    out["n"] = n.astype(int)
    out["n_sources"] = 0
    out["n_seeds"] = 0
    out["n_examples"] = 0
    if not fin.any():
        return out[cols]
    d = df.loc[fin]
    gid, v = gid_all[fin], v_all[fin]
    item = _codes(d, [c for c in ITEM_KEYS if c in d.columns], fallback=np.arange(len(d)))
    src = _source_codes(d, item)
    strat = _codes(d, [c for c in STRATUM_KEYS if c in d.columns], fallback=np.zeros(len(d)))
    sd = (pd.to_numeric(d["seed"], errors="coerce").fillna(-1).to_numpy(np.int64) if "seed" in d.columns
          else np.zeros(len(d), dtype=np.int64))
    order = np.lexsort((sd, item, strat, src, gid))
    gid, src, strat, item, sd, v = gid[order], src[order], strat[order], item[order], sd[order], v[order]
    # sorted: group, source, block (the source's examples in one task), example, seed
    new_src = np.r_[True, (gid[1:] != gid[:-1]) | (src[1:] != src[:-1])]
    new_block = new_src | np.r_[False, strat[1:] != strat[:-1]]
    new_item = new_block | np.r_[False, item[1:] != item[:-1]]
    dup = ~new_item & np.r_[False, sd[1:] == sd[:-1]]
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise ValueError(f"intervals: group {keys.iloc[gid[i]].to_dict()} has two values for one example "
                         f"(item {item[i]}) under seed {sd[i]}; each seed x example must appear once")
    item_id = np.cumsum(new_item) - 1  # global example index
    first_item = np.full(n_groups, -1, dtype=np.int64)
    ug, fi = np.unique(gid[new_item], return_index=True)
    first_item[ug] = item_id[new_item][fi]  # the first example index of each group
    local_item = item_id - first_item[gid]
    block_id = np.cumsum(new_block) - 1
    src_id = np.cumsum(new_src) - 1
    per_block = np.bincount(block_id[new_item], minlength=int(new_block.sum()))  # examples per block
    blocks_per_src = np.bincount(src_id[new_block], minlength=int(new_src.sum()))
    n_examples = np.bincount(gid[new_item], minlength=n_groups)
    src_gid = gid[new_src]
    n_sources = np.bincount(src_gid, minlength=n_groups)
    lo_seed = int(sd.min())
    pair_key = gid.astype(np.int64) * (int(sd.max()) - lo_seed + 1) + (sd - lo_seed)  # order-preserving
    keys_u, first_row = np.unique(pair_key, return_index=True)  # sorted unique (group, seed) pairs
    n_seeds = np.bincount(gid[first_row], minlength=n_groups)
    seed_start = np.searchsorted(gid[first_row], np.arange(n_groups))
    local_seed = np.searchsorted(keys_u, pair_key) - seed_start[gid]  # a seed's rank among its group's seeds
    out["n_sources"] = n_sources.astype(int)
    out["n_seeds"] = n_seeds.astype(int)
    if examples:
        out["n_examples"] = n_examples.astype(int)
    if n_resamples <= 0 or ci is False:
        return out[cols]
    if callable(ci):
        if "metric" not in group:
            raise ValueError("intervals: a ci predicate needs 'metric' among the group columns")
        wanted = keys["metric"].astype(str).map(lambda m: bool(ci(m))).to_numpy(bool)
    else:
        wanted = np.ones(n_groups, dtype=bool)
    low = np.full(n_groups, np.nan)
    high = np.full(n_groups, np.nan)
    # constant cells: a zero-width interval; cells with too few sources: none
    vmin = np.full(n_groups, np.inf)
    vmax = np.full(n_groups, -np.inf)
    np.minimum.at(vmin, gid, v)
    np.maximum.at(vmax, gid, v)
    const = wanted & (n > 0) & (vmin == vmax) & (n_sources >= MIN_SOURCES)
    low[const] = vmin[const]
    high[const] = vmin[const]
    todo = wanted & (n > 0) & (n_sources >= MIN_SOURCES) & ~const
    # cells of one shape (seeds; blocks per source; examples per block) share their resampling weights
    blk_gid = gid[new_block]
    src_cuts = np.flatnonzero(np.r_[True, src_gid[1:] != src_gid[:-1]])[1:]
    blk_cuts = np.flatnonzero(np.r_[True, blk_gid[1:] != blk_gid[:-1]])[1:]
    shapes: dict[tuple, list[int]] = {}
    for g, bps, cnt in zip(np.unique(src_gid), np.split(blocks_per_src, src_cuts), np.split(per_block, blk_cuts),
                           strict=True):
        if todo[g]:
            shapes.setdefault((int(n_seeds[g]), tuple(bps.tolist()), tuple(cnt.tolist())), []).append(int(g))
    if shapes:
        g_pos = np.full(n_groups, -1, dtype=np.int64)
        shape_of = np.full(n_groups, -1, dtype=np.int64)
        for s, gs in enumerate(shapes.values()):
            g_pos[gs] = np.arange(len(gs))
            shape_of[gs] = s
        row_shape = shape_of[gid]
        by_shape = np.argsort(row_shape, kind="stable")
        bounds = np.searchsorted(row_shape[by_shape], np.arange(len(shapes) + 1))
        q = [(1 - confidence) / 2, 1 - (1 - confidence) / 2]
        for s, (shape, gs) in enumerate(shapes.items()):
            rows = by_shape[bounds[s]:bounds[s + 1]]
            k_n, bps, counts = shape[0], np.asarray(shape[1], np.int64), np.asarray(shape[2], np.int64)
            n_items = int(counts.sum())
            vals = np.zeros((len(gs), k_n, n_items))
            mask = np.zeros((len(gs), k_n, n_items))
            vals[g_pos[gid[rows]], local_seed[rows], local_item[rows]] = v[rows]
            mask[g_pos[gid[rows]], local_seed[rows], local_item[rows]] = 1.0
            w_seed, w_item = _weights(k_n, bps, counts, n_resamples, seed)
            lo, hi = _percentiles(vals, mask, w_seed, w_item, q)
            low[gs], high[gs] = lo, hi
    out["ci_low"] = low
    out["ci_high"] = high
    return out[cols]


def _codes(d: pd.DataFrame, cols: list[str], fallback: np.ndarray) -> np.ndarray:
    if not cols:
        return fallback.astype(np.int64)
    return d.groupby(cols, sort=True, dropna=False).ngroup().to_numpy(np.int64)


def _source_codes(d: pd.DataFrame, item: np.ndarray) -> np.ndarray:
    """A code per row for its source; a row without a source id is a source of its own (its example)."""
    if "source_id" not in d.columns:
        return item.copy()
    sid = d["source_id"]
    known = sid.notna().to_numpy() & (sid.astype(str).to_numpy() != "")
    cols = [c for c in SOURCE_KEYS if c in d.columns]
    code = np.full(len(d), -1, dtype=np.int64)
    if known.any():
        code[known] = d.loc[known].groupby(cols, sort=True, dropna=False).ngroup().to_numpy(np.int64)
    if not known.all():
        code[~known] = code.max() + 1 + item[~known]
    return code


def _weights(k_n: int, blocks_per_source: np.ndarray, counts: np.ndarray, n_resamples: int,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampling weights of one cell shape: (B, seeds) and (B, examples), the examples in blocks (a source's
    examples of one task), the blocks grouped by source, in order.

    A weight is how often a resample drew that seed, or that example: its source's draws times its own draws
    within its block (a source's examples are redrawn within each task, so a pooled cell keeps its mix of tasks).
    Seeded by (seed, shape) alone."""
    rng = np.random.default_rng([int(seed), int(k_n), *map(int, blocks_per_source), *map(int, counts)])
    w_seed = (rng.multinomial(k_n, np.full(k_n, 1.0 / k_n), size=n_resamples) if k_n > 1
              else np.ones((n_resamples, 1)))
    j = blocks_per_source.size
    w_src = rng.multinomial(j, np.full(j, 1.0 / j), size=n_resamples)
    parts = [rng.multinomial(m, np.full(m, 1.0 / m), size=n_resamples) if m > 1 else np.ones((n_resamples, 1))
             for m in counts]
    w_ex = np.concatenate(parts, axis=1)
    w_item = w_ex * np.repeat(np.repeat(w_src, blocks_per_source, axis=1), counts, axis=1)
    return w_seed.astype(np.float64), w_item.astype(np.float64)


def _percentiles(vals, mask, w_seed, w_item, q) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the weighted means, per cell: ``vals``/``mask`` (cells, seeds, examples)."""
    g_n, k_n, n_items = vals.shape
    b = w_item.shape[0]
    step = max(1, _CHUNK // max(1, k_n * b))
    lo, hi = np.empty(g_n), np.empty(g_n)
    wt = w_item.T  # (examples, B)
    for a in range(0, g_n, step):
        sl = slice(a, min(g_n, a + step))
        num = np.einsum("gkb,kb->gb", (vals[sl].reshape(-1, n_items) @ wt).reshape(-1, k_n, b), w_seed.T)
        if mask[sl].all():  # every seed x example has a value: one denominator per resample
            den = np.broadcast_to(w_seed.sum(axis=1) * w_item.sum(axis=1), num.shape)
        else:
            den = np.einsum("gkb,kb->gb", (mask[sl].reshape(-1, n_items) @ wt).reshape(-1, k_n, b), w_seed.T)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = num / den
        if (den > 0).all():
            res = np.quantile(means, q, axis=1)
        else:  # a resample that drew no value of a cell: left out of its percentiles
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = np.nanquantile(np.where(den > 0, means, np.nan), q, axis=1)
        lo[sl], hi[sl] = res[0], res[1]
    return lo, hi


# --- summary.csv ---------------------------------------------------------------------------------------------
def summarise(scores: pd.DataFrame, group: list[str], *, ci: bool | Callable[[str], bool] = True,
              n_resamples: int = N_RESAMPLES, seed: int = SEED) -> pd.DataFrame:
    """Per ``group`` (system x task x metric): the mean over finite values (all seeds and examples), their std and
    count, the hierarchical bootstrap interval of the mean (``ci_low``, ``ci_high``), and the numbers of sources
    and seeds behind it. NaN = not applicable, never 0.

    ``ci``: True (every row), False (none: the counts only, fast), or a predicate on the metric name (e.g.
    :func:`main_metric`): rows it rejects get NaN intervals. A quick-sized table (~130k rows) takes about a second
    with ``ci=True`` (tests/test_stats.py times it)."""
    cols = [*group, "mean", "std", "n", "ci_low", "ci_high", "n_sources", "n_seeds"]
    if scores.empty:
        return pd.DataFrame(columns=cols)
    df = scores if "seed" in scores.columns else scores.assign(seed=0)  # older results: one seed
    out = intervals(df, group, n_resamples=n_resamples, seed=seed, ci=ci, std=True)
    return out[cols].reset_index(drop=True)


def main_metric(metric: str) -> bool:
    """A headline metric: a base name (no "/"), not a cost counter. A predicate for ``summarise(ci=...)``."""
    return "/" not in metric


# --- paired tests on per-source means ------------------------------------------------------------------------
@dataclass(frozen=True)
class PairedTest:
    n: int  # pairs (sources) with both values finite
    n_nonzero: int  # pairs whose difference is not 0 (the ones the signed-rank test ranks)
    mean_diff: float  # mean of (baseline - focus) oriented so that > 0 favours the focus system
    median_diff: float
    statistic: float  # scipy's W (the smaller of the two rank sums)
    p: float
    rank_biserial: float  # in [-1, 1]; > 0 favours the focus system


def source_pairs(focus, baseline, sources) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-source means of two systems' per-example values (aligned 1-d arrays, ``sources`` names each example's
    source), over the examples where both are finite, so both means cover the same examples. Returns (focus
    means, baseline means, the sources), sources sorted. Average over seeds first (see :func:`example_means`)."""
    a = np.asarray(focus, dtype=np.float64).ravel()
    b = np.asarray(baseline, dtype=np.float64).ravel()
    s = np.asarray(sources, dtype=object).ravel()
    if not (a.shape == b.shape == s.shape):
        raise ValueError(f"source_pairs: {a.size} focus values, {b.size} baseline values, {s.size} sources; "
                         "pair them on the same examples first")
    keep = np.isfinite(a) & np.isfinite(b)
    if not keep.any():
        return np.empty(0), np.empty(0), np.empty(0, dtype=object)
    codes, names = pd.factorize(pd.Series(s[keep]).astype(str), sort=True)
    cnt = np.bincount(codes)
    return (np.bincount(codes, weights=a[keep]) / cnt, np.bincount(codes, weights=b[keep]) / cnt,
            np.asarray(names, dtype=object))


def example_means(scores: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Each system's value per example, averaged over its seeds: a wide table indexed by ``by`` (e.g. task,
    source_id, example) with one column per system. NaN values are not averaged in (an example whose every seed
    is NaN stays NaN)."""
    return scores.pivot_table(index=list(by), columns="system", values="value", aggfunc="mean", dropna=False)


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
    """Two-sided Wilcoxon signed-rank test of ``focus`` against ``baseline`` on aligned pairs (per-source means,
    from :func:`source_pairs`). Pairs with a NaN on either side are dropped; zero differences are dropped
    (Wilcoxon's method). The exact null distribution is used when scipy can (small n, no ties)."""
    from scipy.stats import wilcoxon

    a = np.asarray(focus, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_test: {a.shape} vs {b.shape} values; pair them on the same sources first")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = (a - b) if higher_is_better else (b - a)
    n, nz = int(d.size), int(np.count_nonzero(d))
    if n == 0:
        return PairedTest(0, 0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean_d, med_d = float(d.mean()), float(np.median(d))
    if nz == 0:  # identical on every pair: no evidence of a difference
        return PairedTest(n, 0, mean_d, med_d, 0.0, 1.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample / ties notes from scipy
        res = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return PairedTest(n, nz, mean_d, med_d, float(res.statistic), float(res.pvalue), rank_biserial(d))


def min_p(n: int) -> float:
    """The smallest two-sided p the exact signed-rank test can give with ``n`` nonzero pairs: 2 / 2^n."""
    return math.nan if n <= 0 else min(1.0, 2.0 ** (1 - n))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values of one family (statsmodels); NaNs stay NaN and are not counted in the
    family size."""
    return _adjusted(pvalues, "holm")


def bh(pvalues) -> np.ndarray:
    """Benjamini-Hochberg q-values (false discovery rate) of one family (statsmodels); NaNs stay NaN."""
    return _adjusted(pvalues, "fdr_bh")


def _adjusted(pvalues, method: str) -> np.ndarray:
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method=method)[1]
    return out
