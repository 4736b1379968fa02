"""The frontier: quality against inference compute (issue 29; docs/baselines.md, "The frontier").

Every system is a point at its inference renders per example (the mean of its ``cost/renders`` scores; a system
that records none renders at most its one answer and sits at 1), with its mean MR-STFT (and MFCC distance) and the
hierarchical-bootstrap interval, per effect set and corpus set. A system run at several budgets as labelled variants
(``ito_cmaes@16``, ``ito_cmaes@64``: the label before '@' names the family) is a curve. Trained systems carry their
training renders (budgets.csv) in the legend: the frontier is inference compute, and the training column of the
budget table says what was spent before.

Beside the figure:

* ``frontier_reach.csv``: per effect set and search family, the fewest renders per example at which the family's
  mean reaches the focus system's (the proposed model), or "not within" its largest budget.
* ``frontier_cells.csv``: per pair of systems at an equal budget (the same '@' suffix) and each hybrid against the
  model it starts from, in how many tasks (cells) of each effect set the first has the lower mean.
* ``frontier_tests.csv``: the same pairs, per effect set, tested as the primary family tests (per-source means pooled
  over the set's tasks, a paired permutation test, the bootstrap interval of the difference), but *exploratory*:
  they were not declared before the run, so raw p and Benjamini-Hochberg q over this table are shown, never Holm.
* a paragraph: per effect set and budget, the system with the lowest mean among those that spend no more, and its
  paired test against the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from bench.stats import bh, intervals
from bench.stats.primary import primary_family
from reports import stats as S
from reports.results import UNRANKED, VARIANT_SEP, Results

METRICS = ("mrstft", "mfcc_dist")  # the frontier's qualities, the first the headline
BUDGET_SEP = "@"
SETS = ("seen", "unseen", "wild")


def family(system: str) -> str:
    """The system a labelled budget variant belongs to: ``ito_cmaes@16`` -> ``ito_cmaes``."""
    return system.split(BUDGET_SEP, 1)[0]


def budget_label(system: str) -> str:
    return system.split(BUDGET_SEP, 1)[1] if BUDGET_SEP in system else ""


@dataclass
class Frontier:
    points: pd.DataFrame  # effect_set, corpus_set, system, family, metric, renders, mean, ci_low, ci_high, n_sources
    reach: pd.DataFrame  # effect_set, family, target, target_mean, renders_needed, note
    cells: pd.DataFrame  # a, b, effect_set, cells, a_better
    tests: pd.DataFrame  # a, b, effect_set, metric, a_mean, b_mean, diff, ci_low, ci_high, p, q, n_sources
    paragraph: list[str] = field(default_factory=list)
    focus: str = ""
    train_renders: dict = field(default_factory=dict)


def contenders(r: Results) -> list[str]:
    """The systems on the plane: every system but the report's ':' variants and the oracle."""
    return [s for s in r.systems if VARIANT_SEP not in s and s not in UNRANKED]


def renders_per_example(r: Results, systems: list[str]) -> dict[str, float]:
    """Mean cost/renders per example of each system over all its tasks; 1 for one that records none."""
    sub = r.scores[r.scores["metric"] == "cost/renders"]
    means = sub.groupby("system")["value"].mean()
    return {s: float(means[s]) if s in means and np.isfinite(means[s]) else 1.0 for s in systems}


def _renders_of(r: Results, points: pd.DataFrame, group: list[str]) -> pd.Series:
    """Each point's mean cost/renders per example over its own tasks (1 where the system records none there:
    its answer's own render)."""
    sub = r.scores[r.scores["metric"] == "cost/renders"]
    means = sub.groupby(group)["value"].mean().rename("renders")
    return points.join(means, on=group)["renders"].fillna(1.0)


def build(r: Results, budgets: pd.DataFrame | None = None, *, n_resamples: int = S.N_RESAMPLES) -> Frontier | None:
    """The frontier of a run, or None when no system searches at inference (nothing to plot against renders)."""
    systems = contenders(r)
    renders = renders_per_example(r, systems)
    if not any(v > 1 for v in renders.values()):
        return None
    metrics = [m for m in METRICS if m in r.metrics]
    if not metrics:
        return None
    sc = r.scores[r.scores["system"].isin(systems) & r.scores["metric"].isin(metrics)]
    by_corpus = intervals(sc, ["effect_set", "corpus_set", "system", "metric"], n_resamples=n_resamples)
    by_corpus["renders"] = _renders_of(r, by_corpus, ["effect_set", "corpus_set", "system"])
    pooled = intervals(sc, ["effect_set", "system", "metric"], n_resamples=n_resamples).assign(corpus_set="all")
    pooled["renders"] = _renders_of(r, pooled, ["effect_set", "system"])
    points = pd.concat([by_corpus, pooled], ignore_index=True)
    points["family"] = points["system"].map(family)
    train = {}
    if budgets is not None and len(budgets):
        tr = budgets.groupby("system")["train_renders"].mean()
        train = {s: float(v) for s, v in tr.items() if np.isfinite(v)}
    focus = r.focus if r.focus in systems else ""
    pairs = compared_pairs(systems, focus)
    f = Frontier(points, reach_table(points, focus, metrics[0]), cell_wins(r, pairs, metrics[0]),
                 pair_tests(r, pairs, metrics, n_resamples), focus=focus, train_renders=train)
    f.paragraph = paragraph(f, metrics[0])
    return f


def compared_pairs(systems: list[str], focus: str) -> list[tuple[str, str]]:
    """(a, b): every two systems at the same '@' budget (the hybrid first), and each hybrid at every budget against
    the focus system it starts from."""
    out = []
    by_budget: dict[str, list[str]] = {}
    for s in systems:
        if budget_label(s):
            by_budget.setdefault(budget_label(s), []).append(s)
    for group in by_budget.values():
        group = sorted(group, key=lambda s: (not family(s).startswith(focus or "\0"), s))
        out += [(a, b) for i, a in enumerate(group) for b in group[i + 1:]]
    if focus:
        out += [(s, focus) for s in systems if budget_label(s) and family(s).startswith(f"{focus}_")]
    return list(dict.fromkeys(out))


def reach_table(points: pd.DataFrame, focus: str, metric: str) -> pd.DataFrame:
    """Per effect set and family of labelled budgets: the fewest measured renders per example whose mean is at or
    below the focus system's (lower is better for the frontier's metrics)."""
    cols = ["effect_set", "family", "target", "target_mean", "renders_needed", "note"]
    if not focus:
        return pd.DataFrame(columns=cols)
    p = points[(points["corpus_set"] == "all") & (points["metric"] == metric)]
    rows = []
    for es in [s for s in SETS if s in set(p["effect_set"])]:
        sub = p[p["effect_set"] == es]
        target = sub[sub["system"] == focus]["mean"]
        if target.empty or not np.isfinite(target.iloc[0]):
            continue
        t = float(target.iloc[0])
        curves = set(sub[sub["system"].map(budget_label) != ""]["family"])
        for fam, g in sub[sub["family"].isin(curves)].groupby("family"):
            g = g.sort_values("renders")
            hit = g[g["mean"] <= t]
            if len(hit):
                rows.append([es, fam, focus, t, float(hit["renders"].iloc[0]), f"{hit['system'].iloc[0]}"])
            else:
                rows.append([es, fam, focus, t, math.nan, f"not within {g['renders'].max():.0f}"])
    return pd.DataFrame(rows, columns=cols)


def cell_wins(r: Results, pairs: list[tuple[str, str]], metric: str) -> pd.DataFrame:
    """Per pair and effect set: the tasks (cells) where both have a mean, and those where ``a``'s is lower."""
    cols = ["a", "b", "effect_set", "cells", "a_better"]
    sub = r.scores[r.scores["metric"] == metric]
    means = sub.groupby(["system", "effect_set", "task"])["value"].mean()
    rows = []
    for a, b in pairs:
        for es in SETS:
            try:
                ma, mb = means[a][es], means[b][es]
            except KeyError:
                continue
            both = pd.concat([ma, mb], axis=1, keys=["a", "b"]).dropna()
            if len(both):
                rows.append([a, b, es, len(both), int((both["a"] < both["b"]).sum())])
    return pd.DataFrame(rows, columns=cols)


def pair_tests(r: Results, pairs: list[tuple[str, str]], metrics: list[str], n_resamples: int) -> pd.DataFrame:
    """The pairs tested as the primary family tests a comparison, one at a time (exploratory: BH over the table)."""
    cols = ["a", "b", "effect_set", "metric", "a_mean", "b_mean", "diff", "ci_low", "ci_high", "p", "q",
            "n_sources"]
    rows = []
    present = set(r.scores["effect_set"].unique())
    for a, b in pairs:
        sets = [s for s in SETS if s in present]
        one = SimpleNamespace(focus=a, against=[b], effect_sets=sets, metrics=list(metrics), alpha=0.05, power=0.8,
                              permutations=20000)
        t = primary_family(r.scores, one, direction=S.direction, n_resamples=n_resamples, mixed=False).table
        for row in t[t["p"].notna()].itertuples(index=False):
            rows.append([a, b, row.effect_set, row.metric, row.focus_mean, row.against_mean, row.diff, row.ci_low,
                         row.ci_high, row.p, math.nan, int(row.n_sources)])
    out = pd.DataFrame(rows, columns=cols)
    out["q"] = bh(out["p"].to_numpy(np.float64)) if len(out) else []
    return out


def paragraph(f: Frontier, metric: str) -> list[str]:
    """Per effect set and budget (each '@' budget of the run): the system with the lowest mean among those that
    spend at most that many renders per example, and its exploratory paired test against the next."""
    p = f.points[(f.points["corpus_set"] == "all") & (f.points["metric"] == metric)]
    budgets = sorted({float(b) for b in (budget_label(s) for s in p["system"]) if _number(b)})
    out = []
    for es in [s for s in SETS if s in set(p["effect_set"])]:
        sub = p[(p["effect_set"] == es) & p["mean"].notna()]
        parts = []
        for b in budgets:
            within = sub[sub["renders"] <= b * 1.0001].sort_values("mean")
            if within.empty:
                continue
            best = within.iloc[0]
            text = f"at {b:.0f} renders, {best['system']} ({best['mean']:.3g} [{best['ci_low']:.3g}, {best['ci_high']:.3g}])"
            if len(within) > 1:
                nxt = within.iloc[1]
                t = _test(f.tests, best["system"], nxt["system"], es, metric)
                text += f", then {nxt['system']} ({nxt['mean']:.3g}" + (
                    f"; paired p = {t['p']:.2g}, q = {t['q']:.2g}, {int(t['n_sources'])} sources)" if t is not None
                    else "; not paired at an equal budget)")
            parts.append(text)
        if parts:
            out.append(f"{es.capitalize()} effects, lowest {metric} among systems spending at most the budget: "
                       + "; ".join(parts) + ".")
    return out


def _number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _test(tests: pd.DataFrame, a: str, b: str, es: str, metric: str):
    t = tests[(tests["effect_set"] == es) & (tests["metric"] == metric)
              & (((tests["a"] == a) & (tests["b"] == b)) | ((tests["a"] == b) & (tests["b"] == a)))]
    return None if t.empty else t.iloc[0]


# --- writing -------------------------------------------------------------------------------------------------
def write(f: Frontier, d: Path) -> dict:
    """The three tables as CSV under ``<report>/tables``; returns {name: relative path}."""
    td = Path(d) / "tables"
    td.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, df in (("frontier.csv", f.points), ("frontier_reach.csv", f.reach), ("frontier_cells.csv", f.cells),
                     ("frontier_tests.csv", f.tests)):
        df.to_csv(td / name, index=False)
        files[name] = f"tables/{name}"
    return files


def markdown(f: Frontier) -> str:
    lines = ["## The frontier: quality against renders per example", "",
             "Each system at its mean inference renders per example (cost/renders; 1 when it records none: its "
             "answer's own render); labelled budgets (SYSTEM@N) form a curve. Paired tests here are exploratory "
             "(not declared before the run): raw p and BH q over this table.", ""]
    lines += f.paragraph + [""]
    if len(f.reach):
        lines += [f"**Renders per example needed to reach {f.focus}'s mean**", "",
                  "| effect set | family | target mean | renders needed | note |", "|---|---|---:|---:|---|"]
        for r in f.reach.itertuples(index=False):
            need = "—" if not np.isfinite(r.renders_needed) else f"{r.renders_needed:.3g}"
            lines.append(f"| {r.effect_set} | {r.family} | {r.target_mean:.3g} | {need} | {r.note} |")
        lines.append("")
    if len(f.cells):
        lines += ["**Cells (tasks) where the first system has the lower mean**", "",
                  "| first | second | effect set | cells | first lower |", "|---|---|---|---:|---:|"]
        lines += [f"| {r.a} | {r.b} | {r.effect_set} | {r.cells} | {r.a_better} |" for r in f.cells.itertuples()]
        lines.append("")
    return "\n".join(lines) + "\n"


def figure(F, f: Frontier, metric: str) -> None:
    """One panel per effect set (columns) and corpus set (rows: each corpus set, then all pooled): the metric's
    mean and interval against renders per example on a log axis."""
    p = f.points[f.points["metric"] == metric]
    if p.empty:
        return
    sets = [s for s in SETS if s in set(p["effect_set"])]
    rows = [c for c in ("seen", "unseen") if c in set(p["corpus_set"])] + ["all"]
    import seaborn as sns

    families = list(dict.fromkeys(p["family"]))  # one colour per family: the report's palette cycles at ten
    colors = dict(zip(families, sns.color_palette("tab20", max(20, len(families))), strict=False))
    fig, axes = F.new(3.3 * len(sets), 2.6 * len(rows), len(rows), len(sets), sharex=True)
    for i, cs in enumerate(rows):
        for j, es in enumerate(sets):
            ax = axes[i][j]
            sub = p[(p["effect_set"] == es) & (p["corpus_set"] == cs)]
            for fam, g in sub.groupby("family", sort=False):
                g = g.sort_values("renders")
                color = colors[fam]
                err = np.vstack([g["mean"] - g["ci_low"], g["ci_high"] - g["mean"]]).clip(min=0)
                err = np.where(np.isfinite(err), err, 0)
                tr = f.train_renders.get(g["system"].iloc[0])
                label = fam + (f" (trained on {tr:,.0f} renders)" if tr else "")
                ax.errorbar(g["renders"], g["mean"], yerr=err, marker="o", ms=4, lw=1.2, capsize=2, color=color,
                            label=label if (i, j) == (0, 0) else None)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{es} effects, {cs} corpora" if cs != "all" else f"{es} effects, all corpora", fontsize=9)
            if j == 0:
                ax.set_ylabel(metric)
            if i == len(rows) - 1:
                ax.set_xlabel("renders per example (log)")
    fig.legend(loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=7, frameon=False)
    F.save(fig, f"frontier__{metric}", f"{metric} against inference renders per example (log axis), per effect set "
           "and corpus set, with the hierarchical-bootstrap 95% interval; a labelled budget family is a line. Training "
           "renders in the legend.", "frontier")
