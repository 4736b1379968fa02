"""The primary family: the comparisons an ``[analysis]`` section declares before the run (bench/config.py,
:class:`bench.config.AnalysisConfig`), each tested on per-source means pooled over an effect set's tasks, Holm over
that family only, with the difference's hierarchical-bootstrap interval, an effect size, the smallest difference
the run could detect, and a mixed model beside it as a check; and the power behind that smallest difference and
behind `afx-bench power`. What each assumes: docs/report.md ("What the statistics assume")."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.stats import N_RESAMPLES, SEED, example_means, holm, intervals, min_p, source_pairs


# --- power --------------------------------------------------------------------------------------------------
def _power_fn(n: float, effect: float, alpha: float) -> float:
    """Power of the two-sided paired test (a one-sample t-test on the per-source differences, statsmodels) with
    ``n`` sources at standardised effect ``effect`` (mean / sd of the differences) and level ``alpha``."""
    from scipy.stats import norm
    from statsmodels.stats.power import TTestPower

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(TTestPower().power(effect_size=effect, nobs=n, alpha=alpha, alternative="two-sided"))
    if np.isfinite(p):
        return p
    # scipy's noncentral t fails far in its tail (large n x effect): the normal approximation, exact enough there
    z = norm.isf(alpha / 2)
    return float(norm.sf(z - abs(effect) * math.sqrt(n)) + norm.cdf(-z - abs(effect) * math.sqrt(n)))


def detectable_effect(n: int, *, alpha: float, power: float = 0.8) -> float:
    """The smallest standardised effect (mean / sd of the per-source differences) that ``n`` sources detect with
    probability ``power`` at level ``alpha``: the number behind "no difference detected". NaN below 3 sources."""
    from scipy.optimize import brentq

    if n < 3:
        return math.nan
    if min_p(n) > alpha:  # even the most extreme sign pattern of n sources cannot reach alpha
        return math.inf
    f = lambda e: _power_fn(n, e, alpha) - power  # noqa: E731 (statsmodels' own solver fails for small n)
    return float(brentq(f, 1e-9, 1e3)) if f(1e3) > 0 else math.nan


def sources_needed(effect: float, *, alpha: float, power: float = 0.8) -> float:
    """The sources (pairs) a paired test needs to detect standardised effect ``effect`` with probability
    ``power`` at level ``alpha`` (rounded up); inf for an effect of 0, NaN when unknown."""
    from scipy.optimize import brentq

    e = abs(effect)
    if not np.isfinite(e):
        return math.nan
    if e == 0:
        return math.inf
    least = max(2.0, math.ceil(1 - math.log2(alpha)))  # fewer sources cannot give an exact p below alpha
    f = lambda n: _power_fn(n, e, alpha) - power  # noqa: E731
    if f(least) >= 0:
        return least
    if f(1e9) < 0:
        return math.inf
    return float(math.ceil(brentq(f, least, 1e9)))


# --- the primary family -------------------------------------------------------------------------------------
PRIMARY_COLUMNS = ["comparison", "effect_set", "metric", "diff", "ci_low", "ci_high", "p", "p_holm", "n_sources",
                   "n_seeds", "verdict", "focus", "against", "focus_mean", "against_mean", "effect_size", "sd",
                   "n_better", "n_tasks", "mde", "mixed_diff", "mixed_p", "note"]
BETTER, WORSE, NO_DIFFERENCE, NOT_TESTED = "better", "worse", "no difference detected", "not tested"
PARAM_PREFIX = "param_"  # parameter metrics: never compared on the wild set (no settings exist there)
PAIR_KEYS = ["task", "corpus", "source_id", "example"]  # one example of one source in one task


@dataclass(frozen=True)
class Comparison:
    effect_set: str
    metric: str
    focus: str
    against: str

    @property
    def name(self) -> str:
        return f"{self.focus} vs {self.against}"


@dataclass
class Primary:
    """The primary family's results: one row per declared comparison (PRIMARY_COLUMNS; one not made has verdict
    "not tested" and says why in ``note``), and the settings they were tested under."""

    table: pd.DataFrame
    alpha: float = 0.05
    power: float = 0.8

    @property
    def family_size(self) -> int:
        return int(self.table["p"].notna().sum())


def declared_family(analysis) -> list[Comparison]:
    """The comparisons an ``[analysis]`` section (:class:`bench.config.AnalysisConfig`) declares: per effect set,
    metric and system, in that order; parameter metrics are left out on the wild set."""
    return [Comparison(es, m, analysis.focus, b) for es in analysis.effect_sets for m in analysis.metrics
            for b in analysis.against if not (es == "wild" and m.startswith(PARAM_PREFIX))]


def primary_family(scores: pd.DataFrame, analysis, *, direction: Callable[[str], str] = lambda m: "lower",
                   n_resamples: int = N_RESAMPLES, seed: int = SEED, mixed: bool = True) -> Primary:
    """Test the declared family on a tidy score table (system, task, effect_set, corpus, source_id, example, seed,
    metric, value).

    Per comparison: each system's values are averaged over its seeds per example, the examples where both have a
    value are kept, and those are averaged per source over every task of the effect set (a source met in several
    tasks is one source, averaged once). On the per-source differences (focus - against): a two-sided paired
    permutation test of their mean (sign flips, :func:`scipy.stats.permutation_test`; exact when 2^n is at most
    ``analysis.permutations``), Cohen's d_z, and the smallest difference detectable with ``analysis.power`` at
    the Holm family's first level alpha / m. ``diff`` and its interval: the hierarchical bootstrap
    (:func:`intervals`: seeds, sources, examples) of the per-example difference, seed by seed when both systems
    have the same seeds. Holm over the comparisons made. ``mixed``: also a linear mixed model (statsmodels) of the
    per-source, per-seed means with source and training run as crossed random effects, as a check.
    ``direction(metric)``: "lower", "higher" or "signed" (signed: distances from 0 are compared)."""
    df = scores if "seed" in scores.columns else scores.assign(seed=0)
    if "source_id" not in df.columns:  # older results: every example its own source
        df = df.assign(source_id=df["task"].astype(str) + "#" + df["example"].astype(str))
    present, scored = set(df["system"].astype(str).unique()), set(df["metric"].astype(str).unique())
    rows = []
    for c in declared_family(analysis):
        missing = [s for s in (c.focus, c.against) if s not in present]
        row = None
        if missing:
            note = f"{' and '.join(missing)} not in this run (or none of its cells finished)"
        elif c.metric not in scored:
            note = f"{c.metric} not scored in this run"
        elif not (df["effect_set"] == c.effect_set).any():
            note = f"this run has no {c.effect_set} tasks"
        else:
            sub = df[(df["effect_set"] == c.effect_set) & (df["metric"] == c.metric)
                     & df["system"].isin([c.focus, c.against])]
            row = _compare_pooled(sub, c, direction(c.metric), n_resamples=n_resamples, seed=seed,
                                  permutations=analysis.permutations, mixed=mixed)
            note = (f"no {c.effect_set} example has a {c.metric} value for both (the metric does not apply to one "
                    "of them there, or its cells are missing)")
        rows.append(row or {"comparison": c.name, "effect_set": c.effect_set, "metric": c.metric,
                            "focus": c.focus, "against": c.against, "verdict": NOT_TESTED, "note": note})
    table = pd.DataFrame(rows, columns=PRIMARY_COLUMNS)
    tested = table["verdict"] != NOT_TESTED
    table["p_holm"] = holm(table["p"].to_numpy(np.float64))
    level = analysis.alpha / max(int(table["p"].notna().sum()), 1)  # Holm's first step: what a power claim uses
    for i in table.index[tested]:
        r = table.loc[i]
        table.at[i, "mde"] = r["sd"] * detectable_effect(int(r["n_sources"]), alpha=level, power=analysis.power)
        table.at[i, "verdict"] = _primary_verdict(r, analysis.alpha, direction(r["metric"]))
    table["note"] = table["note"].fillna("")
    return Primary(table, analysis.alpha, analysis.power)


def _primary_verdict(r, alpha: float, how: str) -> str:
    if not (np.isfinite(r["p_holm"]) and r["p_holm"] < alpha):
        return NO_DIFFERENCE
    d = r["focus_mean"] - r["against_mean"]  # the mean of the per-source differences: what the test is about
    return BETTER if (d > 0) == (how == "higher") else WORSE


def _compare_pooled(sub: pd.DataFrame, c: Comparison, how: str, *, n_resamples: int, seed: int,
                    permutations: int, mixed: bool) -> dict | None:
    sub = sub.assign(source_id=sub["source_id"].astype(str), corpus=sub["corpus"].astype(str))
    if how == "signed":
        sub = sub.assign(value=sub["value"].abs())
    wide = example_means(sub, PAIR_KEYS)
    if c.focus not in wide or c.against not in wide:
        return None
    both = wide[[c.focus, c.against]].dropna()
    if both.empty:
        return None
    idx = both.index.to_frame(index=False)
    src = (idx["corpus"] + "/" + idx["source_id"]).to_numpy()
    a_s, b_s, _ = source_pairs(both[c.focus].to_numpy(), both[c.against].to_numpy(), src)
    d = a_s - b_s
    n = int(d.size)
    sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
    diff_rows = _differences(sub, c, both.index)
    iv = intervals(diff_rows.assign(g=0), ["g"], n_resamples=n_resamples, seed=seed).iloc[0]
    better = (d > 0) if how == "higher" else (d < 0)
    mm = _mixed_check(sub, c, both.index) if mixed else (math.nan, math.nan)
    return {"comparison": c.name, "effect_set": c.effect_set, "metric": c.metric, "diff": float(iv["mean"]),
            "ci_low": float(iv["ci_low"]), "ci_high": float(iv["ci_high"]),
            "p": paired_permutation_p(d, n_resamples=permutations, seed=seed), "p_holm": math.nan,
            "n_sources": n, "n_seeds": int(iv["n_seeds"]), "verdict": "", "focus": c.focus, "against": c.against,
            "focus_mean": float(a_s.mean()), "against_mean": float(b_s.mean()),
            "effect_size": float(d.mean() / sd) if n > 1 and sd > 0 else math.nan, "sd": sd,
            "n_better": int(better.sum()), "n_tasks": int(idx["task"].nunique()), "mde": math.nan,
            "mixed_diff": mm[0], "mixed_p": mm[1], "note": ""}


def paired_permutation_p(d, *, n_resamples: int = 20000, seed: int = SEED) -> float:
    """Two-sided p of the paired permutation test of mean(d) = 0: every difference's sign flipped at random
    (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``), exact when 2^n <= ``n_resamples``.
    NaN below 2 pairs; 1 when every difference is 0."""
    from scipy.stats import permutation_test

    d = np.asarray(d, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    res = permutation_test((d,), _mean_statistic, permutation_type="samples", vectorized=True,
                           n_resamples=int(n_resamples), alternative="two-sided", rng=np.random.default_rng(seed))
    return float(min(1.0, res.pvalue))


def _mean_statistic(x, axis):
    return np.mean(x, axis=axis)


def _per_seed(sub: pd.DataFrame, system: str, keep: pd.Index) -> pd.DataFrame:
    """One system's values per (seed, example) on the paired examples ``keep``: rows indexed by PAIR_KEYS, one
    column per seed."""
    s = sub[sub["system"] == system].pivot_table(index=PAIR_KEYS, columns="seed", values="value", aggfunc="mean")
    return s.reindex(keep)


def _differences(sub: pd.DataFrame, c: Comparison, keep: pd.Index) -> pd.DataFrame:
    """focus - against per example and seed (long: PAIR_KEYS, seed, value): seed by seed when both systems have
    the same seeds, else the system with fewer seeds averaged over its own."""
    a, b = _per_seed(sub, c.focus, keep), _per_seed(sub, c.against, keep)
    if list(a.columns) == list(b.columns):
        d = a - b
    elif a.shape[1] >= b.shape[1]:
        d = a.sub(b.mean(axis=1), axis=0)
    else:
        d = b.rsub(a.mean(axis=1), axis=0)
    out = d.stack().rename("value").reset_index()
    return out.rename(columns={out.columns[len(PAIR_KEYS)]: "seed"})


def _mixed_check(sub: pd.DataFrame, c: Comparison, keep: pd.Index) -> tuple[float, float]:
    """The focus system's fixed effect and its Wald p in a linear mixed model of per-source, per-seed means (the
    paired examples of each source averaged): ``value ~ focus`` with crossed random intercepts for the source and
    the training run (system x seed, when a system has several seeds), statsmodels' MixedLM by REML. NaN when
    the model cannot be fitted."""
    import statsmodels.api as sm

    parts = []
    for system in (c.focus, c.against):
        v = _per_seed(sub, system, keep).stack().rename("value").reset_index()
        v = v.rename(columns={v.columns[len(PAIR_KEYS)]: "seed"})
        v = v.assign(source=v["corpus"] + "/" + v["source_id"]).groupby(["seed", "source"], as_index=False)[
            "value"].mean()
        parts.append(v.assign(focus=float(system == c.focus), run=system + "#" + v["seed"].astype(str)))
    df = pd.concat(parts, ignore_index=True).assign(g=0)
    vc = {"source": "0 + C(source)"}
    if df.groupby("focus")["run"].nunique().max() > 1:
        vc["run"] = "0 + C(run)"
    if df["source"].nunique() < 3:
        return math.nan, math.nan
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence and boundary notes: a check, not the test
            fit = sm.MixedLM.from_formula("value ~ focus", groups="g", re_formula="0", vc_formula=vc,
                                          data=df).fit(reml=True)
        return float(fit.fe_params["focus"]), float(fit.pvalues["focus"])
    except (ValueError, np.linalg.LinAlgError):
        return math.nan, math.nan
