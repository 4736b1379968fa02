"""The report's ablation section: every departure of ``proposed`` from the published recipe (``proposed_paper``),
measured by labelled variants of either (``[systems.LABEL] base = "proposed"`` or ``"proposed_paper"``, e.g.
``proposed-no_desc`` or ``paper-with_hedge``; bench/presets/ablation.toml, ``tox -e ablation``).

Per metric (MR-STFT first), per effect set and corpus set (the tasks of that pair pooled), each variant against
``proposed`` and against ``proposed_paper``:

- both means with their 95% hierarchical bootstrap intervals (:func:`bench.stats.intervals`: seeds, then sources,
  then examples within each source), and the difference variant - reference with its interval, bootstrapped the
  same way over the per-example differences (seeds averaged within an example first);
- the two-sided Wilcoxon signed-rank test on per-source means (:func:`bench.stats.source_pairs`, seeds averaged,
  the examples where both have a value), Holm-adjusted within its family: one variant against one reference over
  the effect-set x corpus-set cells, per metric (the question "did this departure matter anywhere?").

A cell without a significant difference gives the smallest difference its test could detect (80% power at
alpha / family size, :func:`bench.stats.primary.detectable_effect`): absence of evidence is never reported as "nothing".
Then one sentence per departure, from the numbers of its natural contrast (``proposed`` against
``proposed-<without it>``, or ``paper-with_<it>`` against ``proposed_paper``), and one for ``proposed`` against
``proposed_paper`` (every departure together) when both ran. The section exists only when the run's config names
at least one such variant. Only stored results are read.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.stats.primary import NO_DIFFERENCE, detectable_effect
from reports import stats as S
from reports.primary import mde_text
from reports.results import Results

PROPOSED, PAPER = "proposed", "proposed_paper"
BASES = (PROPOSED, PAPER)
ALPHA = 0.05
POWER = 0.8
METRICS = ("mrstft", "param_mae", "mel_dist", "mfcc_dist")  # in this order, those the run has
SET_ORDER = {"seen": 0, "unseen": 1, "wild": 2}
# what each config key of a variant stands for (a variant's departure is named by the keys it sets)
DEPARTURES = {
    "features": "the descriptors",
    "param_weight": "the parameter loss and warm-up",
    "warmup_steps": "the parameter loss and warm-up",
    "hedge": "the hedge",
    "spsa_steps": "the SPSA fine-tuning",
    "select_on_valid": "validation selection",
    "validate_every": "validation selection",
    "init_from_params": "the output bias at the mean training setting",
    "standardise": "input standardisation",
    "inputs": "the difference input",
    "dropout": "dropout",
    "input_noise": "input noise",
}
# keys that only size what a departure needs (its validation examples, its warm-up's learning rate): not named
SUPPORT_KEYS = {"valid_examples", "validate_every", "lr", "hedge_candidates", "hedge_refine"}
COLUMNS = ["metric", "effect_set", "corpus_set", "variant", "base", "reference", "n_sources", "n_examples",
           "variant_mean", "variant_low", "variant_high", "reference_mean", "reference_low", "reference_high",
           "diff", "diff_low", "diff_high", "statistic", "p", "p_holm", "rank_biserial", "sd", "mde", "verdict"]


@dataclass
class Departure:
    name: str  # what the departure is, in words
    label: str  # the variant
    base: str  # proposed | proposed_paper
    keys: dict  # the variant's own keys

    @property
    def contrast(self) -> tuple[str, str]:
        """(with the departure, without it): proposed vs proposed-no_X, or paper-with_X vs proposed_paper."""
        return (PROPOSED, self.label) if self.base == PROPOSED else (self.label, PAPER)


@dataclass
class Section:
    departures: list[Departure]
    metrics: list[str]
    cells: list[tuple[str, str]]  # (effect set, corpus set)
    table: pd.DataFrame  # COLUMNS
    sentences: list[str]
    notes: list[str] = field(default_factory=list)
    n_resamples: int = S.N_RESAMPLES


def ablation_variants(config: dict) -> dict[str, dict]:
    """Labels in the run's ``systems.include`` whose section has ``base = "proposed"`` or ``"proposed_paper"``,
    with their own keys (without ``base``), in the include order."""
    systems = (config or {}).get("systems", {}) or {}
    out = {}
    for name in systems.get("include", []):
        sec = systems.get(name)
        if isinstance(sec, dict) and sec.get("base") in BASES:
            out[name] = {k: v for k, v in sec.items() if k != "base"} | {"base": sec["base"]}
    return out


def describe(label: str, base: str, keys: dict) -> str:
    """The departure a variant measures, from the keys it sets."""
    named = list(dict.fromkeys(DEPARTURES[k] for k in keys if k in DEPARTURES and k not in SUPPORT_KEYS))
    if not named:
        named = list(dict.fromkeys(DEPARTURES[k] for k in keys if k in DEPARTURES))
    what = " and ".join(named) if named else "the settings " + ", ".join(f"{k} = {v!r}" for k, v in keys.items())
    return what


def build(r: Results, *, n_resamples: int = S.N_RESAMPLES) -> Section | None:
    variants = ablation_variants(r.config)
    present = set(r.systems)
    variants = {k: v for k, v in variants.items() if k in present}
    if not variants:
        return None
    departures = []
    for label, sec in variants.items():
        keys = {k: v for k, v in sec.items() if k != "base"}
        departures.append(Departure(describe(label, sec["base"], keys), label, sec["base"], keys))
    metrics = [m for m in METRICS if m in set(r.metrics)]
    df = r.scores[r.scores["metric"].isin(metrics) & (r.scores["effect_set"] != "wild")]
    if "source_id" not in df.columns:
        df = df.assign(source_id=df["task"] + "#" + df["example"].astype(str))
    df = df.assign(source_id=df["source_id"].astype(str))
    cells = sorted({(a, b) for a, b in df[["effect_set", "corpus_set"]].drop_duplicates().itertuples(index=False)},
                   key=lambda p: (SET_ORDER.get(p[0], 9), SET_ORDER.get(p[1], 9), p))
    refs = [s for s in BASES if s in present]
    comparisons = [(d.label, d.base, ref) for d in departures for ref in refs if ref != d.label]
    if PROPOSED in present and PAPER in present:
        comparisons.append((PROPOSED, PROPOSED, PAPER))  # every departure together
    rows = []
    for metric in metrics:
        how = S.direction(metric)
        m = df[df["metric"] == metric]
        for es, cs in cells:
            g = m[(m["effect_set"] == es) & (m["corpus_set"] == cs)]
            if g.empty:
                continue
            wide = S.example_means(g, ["task", "corpus", "source_id", "example"])
            for variant, base, ref in comparisons:
                if variant not in wide or ref not in wide:
                    continue
                rows.append(_compare(g, wide, metric, how, es, cs, variant, base, ref, n_resamples))
    table = pd.DataFrame(rows, columns=COLUMNS)
    if not table.empty:  # Holm within a family: one variant vs one reference, one metric, over the cells
        table["p_holm"] = np.nan
        for _, idx in table.groupby(["metric", "variant", "reference"], sort=False).groups.items():
            table.loc[idx, "p_holm"] = S.holm(table.loc[idx, "p"].to_numpy(np.float64))
            level = ALPHA / len(idx)  # Holm's first step
            table.loc[idx, "mde"] = [sd * detectable_effect(int(n), alpha=level, power=POWER)
                                     for sd, n in table.loc[idx, ["sd", "n_sources"]].to_numpy()]
        table["verdict"] = [_verdict(row, S.direction(row.metric)) for row in table.itertuples(index=False)]
    sec = Section(departures, metrics, cells, table, [], n_resamples=n_resamples)
    sec.sentences = sentences(sec)
    sec.notes = notes(sec)
    return sec


def _compare(g, wide, metric, how, es, cs, variant, base, ref, n_resamples) -> dict:
    a = wide[variant].to_numpy(np.float64)
    b = wide[ref].to_numpy(np.float64)
    if how == "signed":
        a, b = np.abs(a), np.abs(b)
    sources = (wide.index.get_level_values("corpus").astype(str) + "/"
               + wide.index.get_level_values("source_id").astype(str)).to_numpy()
    a_s, b_s, _ = S.source_pairs(a, b, sources)
    t = S.paired_test(a_s, b_s, higher_is_better=how == "higher")
    iv = S.intervals(g[g["system"].isin([variant, ref])], ["system"], n_resamples=n_resamples)
    iv = iv.set_index("system")
    ok = np.isfinite(a) & np.isfinite(b)
    idx = wide.index.to_frame(index=False)
    diff = idx.assign(value=a - b)[ok]  # per example, seeds averaged: a bootstrap over sources and examples
    div = S.intervals(diff.assign(g=0), ["g"], n_resamples=n_resamples).iloc[0] if ok.any() else None
    return {"metric": metric, "effect_set": es, "corpus_set": cs, "variant": variant, "base": base,
            "reference": ref, "n_sources": t.n, "n_examples": int(ok.sum()),
            "variant_mean": iv.loc[variant, "mean"], "variant_low": iv.loc[variant, "ci_low"],
            "variant_high": iv.loc[variant, "ci_high"], "reference_mean": iv.loc[ref, "mean"],
            "reference_low": iv.loc[ref, "ci_low"], "reference_high": iv.loc[ref, "ci_high"],
            "diff": float(div["mean"]) if div is not None else math.nan,
            "diff_low": float(div["ci_low"]) if div is not None else math.nan,
            "diff_high": float(div["ci_high"]) if div is not None else math.nan,
            "statistic": t.statistic, "p": t.p, "p_holm": math.nan, "rank_biserial": t.rank_biserial,
            "sd": float(np.std(a_s - b_s, ddof=1)) if t.n > 1 else math.nan, "mde": math.nan, "verdict": ""}


def _verdict(row, how: str) -> str:
    """better / worse (the variant against the reference, Holm-adjusted p < ALPHA), or no difference detected."""
    if not np.isfinite(row.p_holm):
        return "n/a"
    if row.p_holm >= ALPHA:
        return NO_DIFFERENCE
    d = row.diff if how != "higher" else -row.diff
    return "better" if d < 0 else "worse"


# --- words --------------------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.3g}"


def _p(v: float) -> str:
    return "n/a" if not np.isfinite(v) else (f"{v:.3f}" if v >= 0.001 else "<0.001")


def _cell_text(row, sign: float) -> str:
    """"seen effects, speech audio: -0.052 [-0.081, -0.020], p(Holm) = 0.031" with the sign of (with - without)."""
    d, lo, hi = sign * row.diff, sign * row.diff_low, sign * row.diff_high
    lo, hi = min(lo, hi), max(lo, hi)
    ci = f" [{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) else ""
    return f"{row.effect_set} effects, {row.corpus_set} audio: {_fmt(d)}{ci}, p(Holm) = {_p(row.p_holm)}"


def contrast_rows(sec: Section, metric: str, with_: str, without: str) -> tuple[pd.DataFrame, float]:
    """The table's rows of one contrast and the sign that turns their difference into (with - without)."""
    t = sec.table[sec.table["metric"] == metric]
    rows = t[(t["variant"] == with_) & (t["reference"] == without)]
    if len(rows):
        return rows, 1.0
    return t[(t["variant"] == without) & (t["reference"] == with_)], -1.0


def sentence(sec: Section, name: str, with_: str, without: str, metric: str) -> str:
    """One sentence: what ``name`` (the difference between ``with_`` and ``without``) changed on ``metric``, cell
    by cell: a significant gain or loss (Holm-adjusted p < ALPHA); else a gain or loss whose interval excludes 0
    but whose paired test is not significant; else no difference detected, with the smallest difference the test
    could have detected (never "nothing": a few sources and one seed cannot show an absence)."""
    rows, sign = contrast_rows(sec, metric, with_, without)
    how = S.direction(metric)
    head = (f"{name[0].upper() + name[1:]} ({with_} against {without}, {metric}, {_better_word(how)}; "
            "difference with - without)")
    if rows.empty:
        return f"{head}: not measured (no shared examples)."
    groups: dict[str, list[str]] = {k: [] for k in ("sig+", "sig-", "ci+", "ci-", "none")}
    for row in rows.itertuples(index=False):
        d = sign * row.diff
        lo, hi = sorted((sign * row.diff_low, sign * row.diff_high))
        gain = (d < 0) if how != "higher" else (d > 0)
        if np.isfinite(row.p_holm) and row.p_holm < ALPHA:
            key = "sig+" if gain else "sig-"
        elif np.isfinite(lo) and (lo > 0 or hi < 0):
            key = "ci+" if gain else "ci-"
        else:
            key = "none"
        text = _cell_text(row, sign)
        if key == "none":
            text += f", smallest detectable {mde_text(getattr(row, 'mde', math.nan))}"
        groups[key].append(text)
    words = {"sig+": "a significant gain on ", "sig-": "a significant loss on ",
             "ci+": "a gain whose interval excludes 0 but whose paired test is not significant after Holm on ",
             "ci-": "a loss whose interval excludes 0 but whose paired test is not significant after Holm on ",
             "none": f"no difference detected (the interval includes 0; the smallest difference the test could "
                     f"detect with {POWER:.0%} power is given) on "}
    parts = [words[k] + "; ".join(v) for k, v in groups.items() if v]
    return f"{head}: " + ", ".join(parts) + "."


def _better_word(how: str) -> str:
    return {"lower": "lower is better", "higher": "higher is better", "signed": "0 is best"}[how]


def sentences(sec: Section) -> list[str]:
    if sec.table.empty:
        return []
    metric = sec.metrics[0]
    out = []
    have = set(sec.table["variant"]) | set(sec.table["reference"])
    for d in sec.departures:
        w, wo = d.contrast
        if w in have and wo in have:
            out.append(sentence(sec, d.name, w, wo, metric))
    if PROPOSED in have and PAPER in have:
        out.append(sentence(sec, "every departure together", PROPOSED, PAPER, metric))
    return out


def notes(sec: Section) -> list[str]:
    t = sec.table
    if t.empty:
        return ["No variant shares examples with proposed or proposed_paper: nothing to compare."]
    fam = t.groupby(["metric", "variant", "reference"]).size()
    m, n = int(fam.max()), int(t["n_sources"].max())
    best = S.min_p(n) * m
    out = [f"Paired tests on per-source means (n = sources, at most {n}); the smallest two-sided p of the exact "
           f"signed-rank test is {S.min_p(n):.2g}, and Holm over a family of {m} cells multiplies it by up to {m}."]
    if not best < ALPHA:
        out.append(f"With these counts no comparison can reach {ALPHA} after Holm: \"no difference detected\" here "
                   "says nothing about a difference; read the intervals.")
    return out


# --- output -------------------------------------------------------------------------------------------------
def _ci(mean, lo, hi) -> str:
    return _fmt(mean) + (f" [{_fmt(lo)}, {_fmt(hi)}]" if np.isfinite(lo) else "")


HEADER = ["effects", "audio", "variant", "vs", "sources", "variant mean", "reference mean", "difference",
          "p", "p (Holm)", "r", "verdict", "smallest detectable"]


def _row_cells(row) -> list[str]:
    return [row.effect_set, row.corpus_set, row.variant, row.reference, str(int(row.n_sources)),
            _ci(row.variant_mean, row.variant_low, row.variant_high),
            _ci(row.reference_mean, row.reference_low, row.reference_high),
            _ci(row.diff, row.diff_low, row.diff_high), _p(row.p), _p(row.p_holm),
            _fmt(row.rank_biserial), row.verdict, mde_text(row.mde) if row.verdict == NO_DIFFERENCE else ""]


def intro(sec: Section) -> str:
    return ("Each variant is proposed without one departure (proposed-...) or the published recipe proposed_paper "
            "with one departure added (paper-with_...), trained and scored like a system. Per effect set and corpus "
            "set (tasks pooled): each mean with its 95% hierarchical bootstrap interval (seeds, sources, examples; "
            f"{sec.n_resamples} resamples), the difference variant - reference with its interval, and the two-sided "
            "Wilcoxon signed-rank test on per-source means with the rank-biserial r (> 0 favours the variant), "
            "Holm-adjusted over the cells of one variant against one reference. better / worse: the variant "
            f"against the reference at p(Holm) < {ALPHA}.")


def markdown(sec: Section) -> str:
    lines = ["# Ablations: each departure from the published recipe", "", intro(sec), ""]
    lines += ["| variant | base | departure | its own keys |", "|---|---|---|---|"]
    for d in sec.departures:
        keys = ", ".join(f"`{k} = {v!r}`" for k, v in d.keys.items())
        lines.append(f"| {d.label} | {d.base} | {d.name} | {keys} |")
    lines += ["", "## What each departure changed", ""] + [f"- {s}" for s in sec.sentences] + [""]
    lines += [f"_{n}_" for n in sec.notes] + [""]
    for metric in sec.metrics:
        sub = sec.table[sec.table["metric"] == metric]
        if sub.empty:
            continue
        lines += [f"## {metric} ({_better_word(S.direction(metric))})", "", "| " + " | ".join(HEADER) + " |",
                  "|" + "|".join(["---"] * len(HEADER)) + "|"]
        lines += ["| " + " | ".join(_row_cells(r)) + " |" for r in sub.itertuples(index=False)]
        lines.append("")
    return "\n".join(lines)


def to_html(sec: Section) -> str:
    e = html.escape
    out = [f'<p class="note">{e(intro(sec))}</p>', '<table class="sig" id="ablation-variants"><thead><tr>'
           "<th class=\"sys\">variant</th><th class=\"sys\">base</th><th class=\"sys\">departure</th>"
           "<th class=\"sys\">its own keys</th></tr></thead><tbody>"]
    for d in sec.departures:
        keys = ", ".join(f"{k} = {v!r}" for k, v in d.keys.items())
        out.append(f"<tr><td class=\"sys\">{e(d.label)}</td><td class=\"sys\">{e(d.base)}</td>"
                   f"<td class=\"sys\">{e(d.name)}</td><td class=\"sys\"><code>{e(keys)}</code></td></tr>")
    out.append("</tbody></table>")
    out.append('<h3 id="ablation-sentences">What each departure changed</h3><ul class="verdicts">')
    out += [f"<li>{e(s)}</li>" for s in sec.sentences]
    out.append("</ul>")
    out += [f'<p class="note">{e(n)}</p>' for n in sec.notes]
    for metric in sec.metrics:
        sub = sec.table[sec.table["metric"] == metric]
        if sub.empty:
            continue
        out.append(f'<h3 id="ablation-{e(metric)}">{e(metric)} ({e(_better_word(S.direction(metric)))})</h3>')
        out.append(f'<table class="sig ablation" id="ablation-table-{e(metric)}"><thead><tr>'
                   + "".join(f"<th>{e(h)}</th>" for h in HEADER) + "</tr></thead><tbody>")
        for row in sub.itertuples(index=False):
            out.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in _row_cells(row)) + "</tr>")
        out.append("</tbody></table>")
    return "\n".join(out)


def write(sec: Section, d: Path) -> dict[str, str]:
    """``ablation.md`` in the report folder and ``tables/ablation.csv``; returns the files by name."""
    d = Path(d)
    (d / "tables").mkdir(parents=True, exist_ok=True)
    (d / "ablation.md").write_text(markdown(sec))
    sec.table.to_csv(d / "tables" / "ablation.csv", index=False)
    return {"ablation.md": "ablation.md", "ablation.csv": "tables/ablation.csv"}
