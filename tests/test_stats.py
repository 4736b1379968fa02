"""bench/stats: the hierarchical bootstrap (seeds, sources, examples within sources), summarise, the paired
test on per-source means, Holm, on small hand-made tables."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from bench import stats as S
from bench.results import SUMMARY_COLUMNS, SUMMARY_GROUP
from bench.stats import primary as P


def _cell(values, sources, seeds=None, task="speech/peq/test"):
    """A score table of one summary group: values with their source, seed and example index."""
    v = np.asarray(values, dtype=float)
    seeds = np.zeros(v.size, dtype=int) if seeds is None else np.asarray(seeds)
    df = pd.DataFrame({"system": "s", "task": task, "effect": "peq", "effect_set": "seen", "corpus": "speech",
                       "corpus_set": "seen", "split": "test", "seed": seeds, "source_id": np.asarray(sources),
                       "metric": "mrstft", "value": v})
    df["example"] = df.groupby("seed").cumcount()
    return df


# --- the hierarchical bootstrap -----------------------------------------------------------------------------
def test_examples_of_one_source_do_not_shrink_the_interval():
    """Two sources far apart, each with many near-identical examples: an example-level bootstrap would call the
    mean known to +-0.1; resampling sources first says what 2 sources can say (the interval spans both)."""
    rng = np.random.default_rng(0)
    v = np.r_[rng.normal(0, 0.05, 50), rng.normal(10, 0.05, 50)]
    src = np.repeat(["a", "b"], 50)
    hier = S.hierarchical_ci(v, src)
    indep = S.hierarchical_ci(v)  # every value its own source: the example-level bootstrap
    assert hier.n == 100 and hier.n_sources == 2 and indep.n_sources == 100
    assert hier.mean == pytest.approx(v.mean()) == indep.mean
    assert indep.high - indep.low < 2.5  # ~ 2 x 1.96 x 5 / sqrt(100)
    assert hier.low < 0.5 and hier.high > 9.5  # resamples of {a, a}, {a, b}, {b, b}


def test_a_dominant_source_widens_the_interval():
    """One source contributes most examples: the interval is about sources, so it is wider than the naive one."""
    rng = np.random.default_rng(1)
    levels = rng.normal(0, 1, 8)
    counts = [40, 2, 2, 2, 2, 2, 2, 2]
    src = np.repeat(np.arange(8), counts)
    v = levels[src] + rng.normal(0, 0.1, src.size)
    hier, indep = S.hierarchical_ci(v, src), S.hierarchical_ci(v)
    assert (hier.high - hier.low) > 2 * (indep.high - indep.low)


def test_interval_matches_a_source_level_bootstrap_by_hand():
    """One example per source: the hierarchical bootstrap is the plain percentile bootstrap of the mean."""
    x = np.random.default_rng(3).gamma(2.0, 1.0, 40)
    ci = S.hierarchical_ci(x, np.arange(40))
    rng = np.random.default_rng(12345)
    means = x[rng.integers(0, x.size, (20000, x.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert ci.low == pytest.approx(lo, abs=0.08 * (hi - lo)) and ci.high == pytest.approx(hi, abs=0.08 * (hi - lo))
    se = x.std(ddof=1) / math.sqrt(x.size)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_seed_variance_widens_the_interval():
    rng = np.random.default_rng(2)
    src = np.repeat(np.arange(8), 3)
    v = rng.normal(0, 1, 8)[src] + rng.normal(0, 0.1, src.size)
    one = S.hierarchical_ci(v, src)
    same = S.hierarchical_ci(np.r_[v, v, v], np.tile(src, 3), np.repeat([0, 1, 2], v.size))
    apart = S.hierarchical_ci(np.r_[v - 1, v, v + 1], np.tile(src, 3), np.repeat([0, 1, 2], v.size))
    assert same.n_seeds == apart.n_seeds == 3 and same.n == 72 and same.n_sources == 8
    assert same.high - same.low == pytest.approx(one.high - one.low, rel=0.15)  # identical seeds add nothing
    assert apart.mean == pytest.approx(one.mean)
    assert (apart.high - apart.low) > 1.5 * (one.high - one.low)


def test_edge_cases_nan_and_determinism():
    nan = S.hierarchical_ci([np.nan, np.nan], [0, 1])
    assert nan.n == 0 and math.isnan(nan.mean) and math.isnan(nan.low)
    one_source = S.hierarchical_ci([1.0, 2.0, 3.0], [0, 0, 0])  # the spread between sources is unknown
    assert one_source.mean == 2.0 and one_source.n_sources == 1 and math.isnan(one_source.low)
    const = S.hierarchical_ci([0.5, 0.5, 0.5], [0, 1, 2])
    assert (const.low, const.high) == (0.5, 0.5)
    a = S.hierarchical_ci([1.0, 2.0, np.nan, 3.0, 10.0], [0, 1, 2, 3, 4])
    b = S.hierarchical_ci([1.0, 2.0, 3.0, 10.0], [0, 1, 3, 4])
    assert a == b and a.mean == 4.0 and a.n == 4 and a.n_sources == 4  # NaN: dropped, never counted as 0
    assert S.hierarchical_ci([1.0, 5, 2, 8], [0, 1, 2, 3]) == S.hierarchical_ci([1.0, 5, 2, 8], [0, 1, 2, 3])


def test_a_cell_does_not_depend_on_the_rest_of_the_table():
    """The draws depend on the cell's shape and the seed only: summarising one cell alone or among others gives the
    same interval (so summary.csv does not change as cells are added)."""
    rng = np.random.default_rng(4)
    a = _cell(rng.normal(size=12), np.repeat(["x", "y", "z"], 4))
    b = _cell(rng.normal(size=7), ["p", "q", "q", "r", "r", "r", "s"]).assign(metric="mfcc_dist")
    c = _cell(rng.normal(size=12), np.repeat(["x", "y", "z"], 4)).assign(system="t")
    alone = S.intervals(a, ["system", "metric"])
    together = S.intervals(pd.concat([c, b, a]), ["system", "metric"]).set_index(["system", "metric"])
    assert together.loc[("s", "mrstft")].to_dict() == alone.set_index(["system", "metric"]).iloc[0].to_dict()


def test_pooled_tasks_are_strata_not_resampled():
    """A source's examples are redrawn within each task: pooling two tasks with very different levels does not put
    the mix of tasks into the interval."""
    rng = np.random.default_rng(5)
    parts = []
    for task, level in (("t1", 0.0), ("t2", 10.0)):
        src = np.repeat(np.arange(6), 4)
        parts.append(_cell(level + rng.normal(0, 0.3, src.size) + rng.normal(0, 0.3, 6)[src], src, task=task))
    both = pd.concat(parts, ignore_index=True)
    iv = S.intervals(both, ["system"]).iloc[0]
    assert iv["n_sources"] == 6 and iv["mean"] == pytest.approx(5.0, abs=0.3)
    assert iv["ci_high"] - iv["ci_low"] < 1.0  # not the +-5 of a resampled task mix


def test_duplicate_rows_are_an_error():
    df = _cell([1.0, 2.0], ["a", "b"])
    with pytest.raises(ValueError, match="two values for one example"):
        S.intervals(pd.concat([df, df]), ["system"])


# --- summarise ----------------------------------------------------------------------------------------------
def test_summarise_columns_counts_and_ci_choice():
    rng = np.random.default_rng(6)
    src = np.repeat(["a", "b", "c"], 2)
    df = pd.concat([_cell(rng.normal(size=6), src), _cell(rng.normal(size=12), np.tile(src, 2), [0] * 6 + [1] * 6)
                    .assign(system="t"), _cell(rng.normal(size=6), src).assign(metric="cost/seconds"),
                    _cell([np.nan] * 6, src).assign(metric="param_mae")], ignore_index=True)
    out = S.summarise(df, SUMMARY_GROUP)
    assert list(out.columns) == SUMMARY_COLUMNS
    row = out.set_index(["system", "metric"])
    assert row.loc[("t", "mrstft"), "n"] == 12 and row.loc[("t", "mrstft"), "n_seeds"] == 2
    assert row.loc[("s", "mrstft"), "n_sources"] == 3 and row.loc[("s", "mrstft"), "n_seeds"] == 1
    sub = df[(df["system"] == "s") & (df["metric"] == "mrstft")]["value"]
    assert row.loc[("s", "mrstft"), "mean"] == pytest.approx(sub.mean())
    assert row.loc[("s", "mrstft"), "std"] == pytest.approx(sub.std())
    assert row.loc[("s", "mrstft"), "ci_low"] < sub.mean() < row.loc[("s", "mrstft"), "ci_high"]
    na = row.loc[("s", "param_mae")]
    assert na["n"] == 0 and math.isnan(na["mean"]) and na["n_sources"] == 0  # not applicable: never 0
    main = S.summarise(df, SUMMARY_GROUP, ci=S.main_metric).set_index(["system", "metric"])
    assert math.isnan(main.loc[("s", "cost/seconds"), "ci_low"])
    assert main.loc[("s", "mrstft"), "ci_low"] == row.loc[("s", "mrstft"), "ci_low"]
    none = S.summarise(df, SUMMARY_GROUP, ci=False)
    assert none["ci_low"].isna().all() and list(none["n"]) == list(out["n"])
    old = S.summarise(df[df["system"] == "s"].drop(columns=["seed"]), SUMMARY_GROUP)  # before the seed column
    assert (old["n_seeds"][old["n"] > 0] == 1).all()
    assert list(S.summarise(df.iloc[:0], SUMMARY_GROUP).columns) == SUMMARY_COLUMNS


def test_summarise_is_fast_on_a_quick_sized_table():
    """9 systems x 20 tasks x 30 metric keys x 24 examples (8 sources), 4 systems under 3 seeds: ~200k rows."""
    rng = np.random.default_rng(7)
    ex = np.arange(24)
    base = pd.DataFrame({"example": ex, "source_id": [f"s{i // 3}" for i in ex]})
    parts = []
    metrics = [f"m{i}" for i in range(10)] + [f"param_mae/p{i}" for i in range(10)] + \
        [f"ac/f{i}" for i in range(8)] + ["cost/seconds", "cost/renders"]
    for si in range(9):
        for t in range(20):
            for sd in (0, 1, 2) if si >= 5 else (0,):
                tags = {"system": f"sys{si}", "task": f"c{t % 2}/e{t // 2}/test", "effect": f"e{t // 2}",
                        "effect_set": "seen", "corpus": f"c{t % 2}", "corpus_set": "seen", "split": "test",
                        "seed": sd}
                vals = rng.normal(size=(len(metrics), 24))
                df = pd.concat([base] * len(metrics), ignore_index=True).assign(
                    metric=np.repeat(metrics, 24), value=vals.ravel(), **tags)
                parts.append(df)
    scores = pd.concat(parts, ignore_index=True)
    t0 = time.perf_counter()
    out = S.summarise(scores, SUMMARY_GROUP)
    took = time.perf_counter() - t0
    assert len(out) == 9 * 20 * len(metrics) and out["ci_low"].notna().all()
    assert took < 10, f"summarise took {took:.1f} s on {len(scores)} rows"


# --- paired tests on per-source means -----------------------------------------------------------------------
def test_source_pairs_average_examples_within_a_source():
    a = [1.0, 3.0, 10.0, np.nan, 4.0]
    b = [2.0, 2.0, 12.0, 5.0, np.nan]
    src = ["x", "x", "y", "y", "z"]
    fa, fb, names = S.source_pairs(a, b, src)
    # y's second example and z are dropped (one side NaN): both means cover the same examples
    assert list(names) == ["x", "y"] and list(fa) == [2.0, 10.0] and list(fb) == [2.0, 12.0]
    with pytest.raises(ValueError, match="pair them"):
        S.source_pairs([1.0], [1.0, 2.0], ["x"])


def test_paired_test_on_source_means_counts_sources_not_examples():
    """Ten examples from each of five sources: the test has n = 5 pairs, whatever the number of examples."""
    rng = np.random.default_rng(8)
    src = np.repeat(np.arange(5), 10)
    focus = rng.normal(0, 0.1, 50) + rng.normal(0, 1, 5)[src]
    base = focus + 0.5 + rng.normal(0, 0.1, 50)
    fa, fb, _ = S.source_pairs(focus, base, src)
    t = S.paired_test(fa, fb)  # lower is better: the focus is better on every source
    assert t.n == 5 and t.rank_biserial == 1.0
    assert t.p == pytest.approx(sps.wilcoxon(fb - fa).pvalue) == pytest.approx(2 / 32)  # the exact minimum
    assert S.min_p(5) == pytest.approx(2 / 32)
    naive = S.paired_test(focus, base)  # what pairing examples would claim
    assert naive.n == 50 and naive.p < 1e-8


def test_wilcoxon_and_rank_biserial_hand_worked():
    focus = np.ones(5)
    d = np.array([1.0, 2.0, -3.0, 4.0, 5.0])  # baseline - focus; lower is better, so > 0 favours focus
    t = S.paired_test(focus, focus + d)
    # ranks of |d|: 1..5; R+ = 1+2+4+5 = 12, R- = 3; W = min = 3; r = (12 - 3) / 15
    assert t.statistic == 3 and t.rank_biserial == pytest.approx(0.6)
    assert t.p == pytest.approx(10 / 32)  # exact null: 5 of 32 sign patterns have R- <= 3, two-sided
    flipped = S.paired_test(focus, focus + d, higher_is_better=True)
    assert flipped.rank_biserial == pytest.approx(-0.6) and flipped.p == pytest.approx(t.p)
    same = S.paired_test([1.0, 2.0], [1.0, 2.0])
    assert same.p == 1.0 and same.rank_biserial == 0.0 and S.paired_test([np.nan], [1.0]).n == 0


def test_holm_hand_worked():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone: 0.06
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = S.holm([0.01, np.nan, 0.02])  # NaN is not part of the family: m = 2
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert S.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0]) and S.holm([]).size == 0


def test_bh_is_statsmodels_benjamini_hochberg():
    p = [0.01, 0.04, 0.03, 0.005]
    assert S.bh(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])  # p * m / rank, made monotone
    assert math.isnan(S.bh([0.01, np.nan])[1])


# --- the primary family ---------------------------------------------------------------------------------------
def _family(values: dict, tasks=("speech/peq/test", "speech/delay/test"), n_sources=6, per=2, seeds=None,
            effect_set="seen"):
    """A score table: each system's value per (task, source, k-th example) from values[system](task, source, k,
    seed); every source is met in every task."""
    rows = []
    for system, f in values.items():
        for sd in (seeds or {}).get(system, (0,)):
            for t in tasks:
                for j in range(n_sources):
                    for k in range(per):
                        rows.append({"system": system, "task": t, "effect": t.split("/")[1], "effect_set": effect_set,
                                     "corpus": "speech", "corpus_set": "seen", "split": "test", "seed": sd,
                                     "source_id": f"v{j}", "example": j * per + k, "metric": "mrstft",
                                     "value": float(f(t, j, k, sd))})
    return pd.DataFrame(rows)


def _analysis(**kw):
    from bench.config import AnalysisConfig

    return AnalysisConfig(**{"against": ["base"], "effect_sets": ["seen"], "metrics": ["mrstft"], "focus": "prop",
                             **kw})


def test_a_source_met_in_several_tasks_counts_once():
    """Three tasks, six voices met in each: six pairs, not eighteen; the test is on the per-source means over every
    task of the set, as a hand computation gives."""
    rng = np.random.default_rng(3)
    level = rng.normal(0, 1, 6)
    noise = {(t, j, k): rng.normal(0, 0.2) for t in "abc" for j in range(6) for k in range(2)}
    tasks = ("speech/a/test", "speech/b/test", "speech/c/test")
    scores = _family({"prop": lambda t, j, k, s: level[j] + noise[(t.split("/")[1], j, k)],
                      "base": lambda t, j, k, s: level[j] + 0.3}, tasks=tasks)
    row = P.primary_family(scores, _analysis(), n_resamples=500).table.iloc[0]
    assert row["n_sources"] == 6 and row["n_tasks"] == 3
    by_hand = scores.pivot_table(index="source_id", columns="system", values="value", aggfunc="mean")
    d = (by_hand["prop"] - by_hand["base"]).to_numpy()
    assert row["focus_mean"] - row["against_mean"] == pytest.approx(d.mean())
    exact = sps.permutation_test((d,), lambda x, axis: x.mean(axis=axis), permutation_type="samples",
                                 n_resamples=np.inf).pvalue
    assert row["p"] == pytest.approx(exact)  # 2^6 sign patterns: exact
    assert row["n_better"] == int((d < 0).sum()) and row["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert row["ci_low"] <= row["diff"] <= row["ci_high"] and row["diff"] == pytest.approx(d.mean())


def test_the_primary_family_holm_verdicts_power_and_mixed_check():
    rng = np.random.default_rng(6)
    level = rng.normal(0, 1, 20)
    run = {0: 0.0, 1: 0.05, 2: -0.05}
    values = {"prop": lambda t, j, k, s: level[j] + run[s] + rng.normal(0, 0.1),
              "far": lambda t, j, k, s: level[j] + 0.5 + rng.normal(0, 0.1),  # prop is clearly better
              "near": lambda t, j, k, s: level[j] + rng.normal(0, 0.1),  # no difference
              "oracle": lambda t, j, k, s: 0.0}
    scores = _family(values, n_sources=20, seeds={"prop": (0, 1, 2)})
    a = _analysis(against=["far", "near", "absent"], permutations=4096)
    prim = P.primary_family(scores, a, n_resamples=400)
    t = prim.table.set_index("against")
    assert list(t.index) == ["far", "near", "absent"] and "oracle" not in t.index
    assert t.loc["far", "verdict"] == P.BETTER and t.loc["near", "verdict"] == P.NO_DIFFERENCE
    assert t.loc["absent", "verdict"] == P.NOT_TESTED and "absent not in this run" in t.loc["absent", "note"]
    assert prim.family_size == 2 and t.loc["far", "n_seeds"] == 3
    assert list(t["p_holm"].iloc[:2]) == pytest.approx(list(S.holm(t["p"].iloc[:2])))
    # the smallest detectable difference: 80% power at alpha / 2, in the metric's units
    mde = t.loc["near", "sd"] * P.detectable_effect(20, alpha=0.025, power=0.8)
    assert t.loc["near", "mde"] == pytest.approx(mde) and 0 < mde < 0.5
    # the mixed model (source and training run random) agrees with the permutation test's difference
    assert t.loc["far", "mixed_diff"] == pytest.approx(t.loc["far", "focus_mean"] - t.loc["far", "against_mean"],
                                                       abs=1e-6)
    assert t.loc["far", "mixed_p"] < 1e-6 and t.loc["near", "mixed_p"] > 0.01


def test_power_and_detectable_effect_agree_with_statsmodels():
    from statsmodels.stats.power import TTestPower

    n = P.sources_needed(0.5, alpha=0.05, power=0.8)
    assert n == 34 and TTestPower().power(0.5, 34, 0.05) >= 0.8 > TTestPower().power(0.5, 33, 0.05)
    e = P.detectable_effect(34, alpha=0.05, power=0.8)
    assert TTestPower().power(e, 34, 0.05) == pytest.approx(0.8, abs=1e-6)
    assert P.detectable_effect(4, alpha=0.05) == math.inf  # 4 sources: no sign pattern reaches p < 0.05
    assert P.sources_needed(0.0, alpha=0.05) == math.inf and P.sources_needed(50.0, alpha=0.05) == 6


def test_the_analysis_section_never_puts_the_oracle_or_a_variant_in_a_family():
    from bench.config import ConfigError, load_config

    for bad in ('["oracle"]', '["proposed:best_pick"]'):
        with pytest.raises(ConfigError, match="cannot be in a test family"):
            load_config("quick", sets=[f"analysis.against={bad}"])
    quick = P.declared_family(load_config("quick").analysis)
    assert len(quick) <= 40
    assert not any(c.effect_set == "wild" and c.metric == "param_mae" for c in quick)
