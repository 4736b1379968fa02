"""The report's section on the ``wild`` effect set: hidden, real-world processing (room, pedal_chain, lofi,
recorded) that no system controls, so that parameter error does not apply and no oracle exists.

The section answers the evaluation plan's third experiment:

- per wild kind and system, each headline metric as mean and 95% hierarchical bootstrap CI (the cells of
  :func:`reports.tables.compute_stats`, so these numbers are exactly those of the per-effect tables);
- the paired test of the plan's hypothesis "the proposed model beats DeepAFx-ST on unknown processing":
  Wilcoxon signed-rank (:func:`reports.stats.paired_test`) of ``proposed`` against each DeepAFx-ST system on
  per-source means (paired by task and source), per kind and audio metric, Holm-adjusted over every kind and metric
  tested against that baseline, then one verdict per kind and one overall. A kind is *supported* only when MR-STFT
  (the primary metric) is significantly better and no metric significantly worse; a test without a significant
  difference states the smallest difference it could detect;
- which controller the proposed model's auto rule picked per example (``<out>/info.parquet``), beside the one it
  would pick with the target (the ``proposed:best_pick`` upper bound).

Nothing here draws or writes files except :func:`write`; the page renders what :func:`build` returns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results import INFO_FILE
from bench.stats.primary import NO_DIFFERENCE as S_NO_DIFFERENCE
from bench.stats.primary import detectable_effect
from reports import stats as S
from reports import tables as T
from reports.primary import mde_text
from reports.results import Results

WILD = "wild"
FOCUS = "proposed"  # the hypothesis is about this system, whatever the report's focus is
BASELINES = ("deepafx_st_autodiff", "deepafx_st_spsa")  # each tested when present; an absent one is stated
ALPHA = 0.05
SUPPORTED, CONTRADICTED, MIXED = "supported", "contradicted", "mixed"
NO_DIFFERENCE = "not supported (no significant difference on the primary metric)"
PRIMARY_METRIC = "mrstft"  # what "supported" rests on (the primary family's audio metric)
POWER = 0.8
NOT_TESTED = "not tested"
NO_ORACLE = ("No oracle exists for this set: the hidden processing is a recipe (a room, a chain of pedals, a "
             "telephone line), not settings that a system could return, so the oracle's cells are not applicable "
             "and its row is left out. Parameter error does not apply either (no system controls these effects).")
# the info.parquet keys holding a controller name, and what chose it
PICK_KEYS = {"picked": "auto rule (without the target)", "best_pick": "best with the target (upper bound)"}
HYPOTHESIS_COLUMNS = ["baseline", "kind", "metric", "n", "n_nonzero", "focus_mean", "baseline_mean", "mean_diff",
                      "median_diff", "statistic", "p", "p_holm", "rank_biserial", "sd", "mde", "verdict"]
DETECTED = ("better", "worse")


@dataclass
class Verdict:
    baseline: str
    scope: str  # a wild kind, or "overall"
    verdict: str  # supported | contradicted | mixed | not supported (no significant difference) | not tested
    detail: str  # the evidence, in words

    @property
    def sentence(self) -> str:
        where = "Overall" if self.scope == "overall" else self.scope
        return f"{where}, {FOCUS} vs {self.baseline}: {self.verdict}. {self.detail}"


@dataclass
class Section:
    kinds: list[str]
    systems: list[str]  # table rows: systems with scores on the wild set, the oracle left out
    tables: list[T.Table]
    stats: pd.DataFrame  # the tables' cells (level "effect", columns = wild kinds)
    left_out: list[str]  # headline metrics with no value on the wild set (param_mae)
    tests: pd.DataFrame  # HYPOTHESIS_COLUMNS
    verdicts: list[Verdict]
    notes: list[str]  # comparisons that could not be made, and why
    picks: pd.DataFrame  # kind, key, chooser, controller, count
    agreement: pd.DataFrame  # kind, examples, same: auto pick == best pick
    picks_note: str = ""  # why there is no pick table, when there is none
    metrics: list[str] = field(default_factory=list)  # the hypothesis metrics
    figure: object = None  # reports.figures.Figure of the picks, set by the build

    @property
    def overall(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.scope == "overall"]

    def matrices(self) -> list[tuple[str, pd.DataFrame]]:
        """(chooser, kinds x controllers counts) for each chooser with picks: the page's tables and figure. All
        share one row and column order (controllers by total count), so that they can be compared side by side."""
        if self.picks.empty:
            return []
        kinds = list(dict.fromkeys(self.picks["kind"]))
        order = list(self.picks.groupby("controller", sort=False)["count"].sum().sort_values(
            ascending=False, kind="stable").index)
        return [(chooser, pick_matrix(self.picks, key, kinds, order)) for key, chooser in PICK_KEYS.items()
                if (self.picks["key"] == key).any()]


def kinds_of(r: Results) -> list[str]:
    """The wild kinds (effects) of this run, in the report's effect order."""
    return [e for e in r.effects if r.effect_set.get(e) == WILD]


def build(r: Results, stats: pd.DataFrame, heads: list[str]) -> Section | None:
    """The wild set's section, or None when the run has no wild task (the page then has no such section)."""
    kinds = kinds_of(r)
    if not kinds:
        return None
    wild = r.scores[r.scores["effect_set"] == WILD]
    systems = [s for s in r.systems if s != "oracle" and (wild["system"] == s).any()]
    cells = stats[(stats["level"] == "effect") & stats["column"].isin(kinds) & stats["system"].isin(systems)]
    has_value = cells[cells["status"] == "ok"].groupby("metric").size()
    shown = [m for m in heads if m in has_value.index]
    columns = [T.Column(k, k, WILD) for k in kinds]
    tables = [T.make_table(cells, r, m, "effect", columns, systems=systems, name=f"wild__{T._safe(m)}",
                           heading=f"{m} on the wild set, by kind") for m in shown]
    metrics = hypothesis_metrics(shown)
    tests, notes = hypothesis_tests(r, metrics)
    info, picks_note = load_info(r.out)
    picks, agreement = pick_counts(info, kinds)
    if info is not None and picks.empty:
        picks_note = (f"{INFO_FILE} has no controller picks on the wild set (rows with key "
                      f"{' or '.join(PICK_KEYS)}), so the proposed model's choices are not shown.")
    stats_out = cells[cells["metric"].isin(shown)].reset_index(drop=True)
    return Section(kinds, systems, tables, stats_out, [m for m in heads if m not in shown], tests,
                   verdicts(tests, kinds), notes, picks, agreement, picks_note, metrics)


def hypothesis_metrics(heads: list[str]) -> list[str]:
    """The audio metrics of the test: headline metrics other than parameter error and cost."""
    return [m for m in heads if not m.startswith(("param_mae", "cost/"))]


# --- the paired test of the hypothesis ----------------------------------------------------------------------
def hypothesis_tests(r: Results, metrics: list[str], *, focus: str = FOCUS,
                     baselines: tuple[str, ...] = BASELINES) -> tuple[pd.DataFrame, list[str]]:
    """Wilcoxon signed-rank tests of ``focus`` against each baseline, per wild kind and metric, on per-source means
    (seeds averaged per example, the examples both have a finite value for averaged per source; paired by task and
    source, so a kind's corpora pool). One Holm family per baseline: every kind and metric tested against it (the
    rows of its hypothesis table). Returns the tests and the comparisons not made, as text."""
    wild = r.scores[(r.scores["effect_set"] == WILD) & r.scores["metric"].isin(metrics)]
    have = set(wild["system"])
    notes: list[str] = []
    if focus not in have:
        notes.append(f"No test of the hypothesis: {focus} has no scores on the wild set"
                     f"{_why_absent(r, focus)}.")
        return pd.DataFrame(columns=HYPOTHESIS_COLUMNS), notes
    rows = []
    for b in baselines:
        if b not in have:
            notes.append(f"{focus} vs {b} could not be tested: {b} has no scores on the wild set"
                         f"{_why_absent(r, b)}.")
            continue
        family = []
        for kind in kinds_of(r):
            tested = 0
            for metric in metrics:
                sub = wild[(wild["effect"] == kind) & (wild["metric"] == metric) & wild["system"].isin([focus, b])]
                sub = sub.assign(source_id=sub["task"] + "|" + _sources(sub))  # a source within its task
                wide = S.example_means(sub, ["source_id", "task", "example"])  # seeds averaged per example
                if focus not in wide or b not in wide:
                    continue
                how = S.direction(metric)
                a_v, b_v = wide[focus].to_numpy(np.float64), wide[b].to_numpy(np.float64)
                if how == "signed":  # distance from 0
                    a_v, b_v = np.abs(a_v), np.abs(b_v)
                a_s, b_s, _ = S.source_pairs(a_v, b_v, wide.index.get_level_values("source_id").to_numpy())
                t = S.paired_test(a_s, b_s, higher_is_better=how == "higher")
                if t.n == 0:
                    continue  # the metric does not apply to this kind (e.g. PESQ without speech)
                d = b_s - a_s
                family.append({"baseline": b, "kind": kind, "metric": metric, "n": t.n, "n_nonzero": t.n_nonzero,
                               "focus_mean": float(a_s.mean()), "baseline_mean": float(b_s.mean()),
                               "mean_diff": t.mean_diff, "median_diff": t.median_diff, "statistic": t.statistic,
                               "p": t.p, "rank_biserial": t.rank_biserial,
                               "sd": float(np.std(d, ddof=1)) if d.size > 1 else np.nan})
                tested += 1
            if not tested:
                notes.append(f"{focus} vs {b} on {kind} could not be tested: no example has a value for both.")
        level = ALPHA / max(len(family), 1)  # Holm's first step: what the smallest detectable effect uses
        for f, p in zip(family, S.holm([f["p"] for f in family]), strict=True):
            f["p_holm"] = p
            f["verdict"] = _direction(f["rank_biserial"]) if p < ALPHA else S_NO_DIFFERENCE
            f["mde"] = f["sd"] * detectable_effect(f["n"], alpha=level, power=POWER)
        rows += family
    return pd.DataFrame(rows, columns=HYPOTHESIS_COLUMNS), notes


def _sources(df: pd.DataFrame) -> pd.Series:
    """Each row's source id as text; without one (older results) every example is its own source."""
    if "source_id" not in df.columns:
        return "#" + df["example"].astype(str)
    return df["source_id"].astype(str)


def _direction(r: float) -> str:
    """Better or worse by the sign of the rank-biserial correlation: the direction the signed-rank test itself
    measures (a mean difference can point the other way when one example dominates it)."""
    return "better" if r > 0 else "worse"


def _why_absent(r: Results, system: str) -> str:
    f = r.failures
    if not f.empty and "system" in f and "effect_set" in f:
        if ((f["system"] == system) & (f["effect_set"] == WILD)).any():
            return " (its wild cells failed; see Failures)"
    return "" if system in r.systems else " (it is not in this run)"


def combine(verdicts: dict[str, str]) -> str:
    """One kind's verdict from its tests' verdicts by metric: supported when the primary metric (MR-STFT) is
    significantly better and no metric significantly worse; contradicted when MR-STFT is significantly worse and
    no metric better; mixed when MR-STFT is significant one way and another metric the other; else not supported
    (MR-STFT not significant, whatever the others say)."""
    primary = verdicts.get(PRIMARY_METRIC)
    if primary is None:
        return NOT_TESTED
    others = [v for m, v in verdicts.items() if m != PRIMARY_METRIC]
    if primary == "better":
        return MIXED if "worse" in others else SUPPORTED
    if primary == "worse":
        return MIXED if "better" in others else CONTRADICTED
    return NO_DIFFERENCE


def overall(per_kind: dict[str, str]) -> str:
    """The verdict over the kinds: supported (or contradicted) only when every tested kind is; not supported when
    none is either; mixed otherwise."""
    tested = [v for v in per_kind.values() if v != NOT_TESTED]
    if tested and all(v == SUPPORTED for v in tested):
        return SUPPORTED
    if tested and all(v == CONTRADICTED for v in tested):
        return CONTRADICTED
    if not any(v in (SUPPORTED, CONTRADICTED, MIXED) for v in tested):
        return NO_DIFFERENCE
    return MIXED


def verdicts(tests: pd.DataFrame, kinds: list[str], *, focus: str = FOCUS) -> list[Verdict]:
    """One verdict per baseline and kind, and one overall per baseline, each with a plain sentence."""
    out: list[Verdict] = []
    for b in dict.fromkeys(tests["baseline"]):
        fam = tests[tests["baseline"] == b]
        per_kind = {}
        for kind in kinds:
            sub = fam[fam["kind"] == kind]
            if sub.empty:
                out.append(Verdict(b, kind, NOT_TESTED, "No example has a value for both."))
                continue
            v = combine(dict(zip(sub["metric"], sub["verdict"], strict=True)))
            per_kind[kind] = v
            why = "" if v != NOT_TESTED else f"{PRIMARY_METRIC} was not scored. "
            out.append(Verdict(b, kind, v, why + _evidence(sub, focus)))
        groups: dict[str, list[str]] = {}
        for kind, kv in per_kind.items():
            groups.setdefault(kv, []).append(kind)
        detail = "; ".join(f"{kv} on {', '.join(ks)}" for kv, ks in groups.items())
        out.append(Verdict(b, "overall", overall(per_kind),
                           f"By kind: {detail} ({len(fam)} tests, Holm-adjusted, alpha {ALPHA})."))
    return out


def _evidence(sub: pd.DataFrame, focus: str) -> str:
    parts = []
    for word, key in (("significantly better", "better"), ("significantly worse", "worse")):
        rows = sub[sub["verdict"] == key]
        if len(rows):
            items = [f"{row.metric} (Holm p {_p(row.p_holm)}, r {row.rank_biserial:.2f}, {row.n} sources)"
                     for row in rows.itertuples(index=False)]
            parts.append(f"{focus} is {word} on {', '.join(items)}")
    ns = sub[~sub["verdict"].isin(DETECTED)]
    if len(ns):
        parts.append("no difference detected on " + ", ".join(
            f"{row.metric} (Holm p {_p(row.p_holm)}; smallest detectable {mde_text(row.mde)})"
            for row in ns.itertuples(index=False)))
    return "; ".join(parts) + "."


def _p(p: float) -> str:
    return T._sig_fmt("p", p)


# --- the proposed model's controller picks ------------------------------------------------------------------
def load_info(out: Path) -> tuple[pd.DataFrame | None, str]:
    """``<out>/info.parquet`` (system, task, effect, effect_set, corpus, corpus_set, split, example, key, value),
    or None and the reason it cannot be used."""
    p = Path(out) / INFO_FILE
    if not p.is_file():
        return None, (f"No {INFO_FILE} in the results directory, so the controllers the proposed model picked are "
                      "not known (the runner writes it with the scores).")
    try:
        info = pd.read_parquet(p)
    except Exception as e:
        return None, f"{INFO_FILE} cannot be read ({type(e).__name__}: {e}), so the picks are not shown."
    missing = [c for c in ("system", "effect", "effect_set", "task", "example", "key", "value") if c not in info]
    if missing:
        return None, f"{INFO_FILE} lacks columns {missing}, so the picks are not shown."
    return info, ""


def _text(v) -> str:
    """A stored value as plain text: a JSON-encoded string loses its quotes."""
    s = str(v)
    if s.startswith('"'):
        try:
            return str(json.loads(s))
        except ValueError:
            pass
    return s


def pick_counts(info: pd.DataFrame | None, kinds: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts, agreement). counts: per kind, chooser (the info key) and controller, how many examples chose it.
    agreement: per kind, on how many of the examples with both, the auto pick equals the best pick.

    One pick per example and key: the runner stores ``best_pick`` twice (in the proposed model's own info and in
    its ``proposed:best_pick`` variant's), which must not count twice."""
    counts_cols = ["kind", "key", "chooser", "controller", "count"]
    agree_cols = ["kind", "examples", "same"]
    if info is None or info.empty:
        return pd.DataFrame(columns=counts_cols), pd.DataFrame(columns=agree_cols)
    sub = info[(info["effect_set"].astype(str) == WILD) & info["key"].isin(list(PICK_KEYS))
               & info["effect"].isin(kinds)].drop_duplicates(["task", "example", "key"]).copy()
    if sub.empty:
        return pd.DataFrame(columns=counts_cols), pd.DataFrame(columns=agree_cols)
    sub["controller"] = sub["value"].map(_text)
    sub["kind"] = sub["effect"].astype(str)
    g = sub.groupby(["kind", "key", "controller"]).size().rename("count").reset_index()
    g["chooser"] = g["key"].map(PICK_KEYS)
    order = {k: i for i, k in enumerate(kinds)}
    keys = {k: i for i, k in enumerate(PICK_KEYS)}
    g = g.assign(_k=g["kind"].map(order), _c=g["key"].map(keys)).sort_values(
        ["_k", "_c", "count", "controller"], ascending=[True, True, False, True])
    counts = g[counts_cols].reset_index(drop=True)
    agree = []
    by_key = {k: d.set_index(["task", "example"])["controller"] for k, d in sub.groupby("key")}
    if len(by_key) == 2:
        both = pd.concat(by_key, axis=1, join="inner")
        both["kind"] = sub.drop_duplicates(["task", "example"]).set_index(["task", "example"])["kind"]
        for kind in kinds:
            k = both[both["kind"] == kind]
            if len(k):
                agree.append({"kind": kind, "examples": len(k), "same": int((k["picked"] == k["best_pick"]).sum())})
    return counts, pd.DataFrame(agree, columns=agree_cols)


def pick_matrix(counts: pd.DataFrame, key: str = "picked", kinds: list[str] | None = None,
                controllers: list[str] | None = None) -> pd.DataFrame:
    """Kinds x controllers: how many examples of each kind the given chooser sent to each controller. Rows and
    columns default to those present (controllers by count); missing combinations are 0."""
    sub = counts[counts["key"] == key]
    if sub.empty:
        return pd.DataFrame()
    m = sub.pivot_table(index="kind", columns="controller", values="count", aggfunc="sum", fill_value=0)
    if controllers is None:
        controllers = list(m.sum().sort_values(ascending=False, kind="stable").index)
    rows = kinds if kinds is not None else list(dict.fromkeys(sub["kind"]))
    return m.reindex(index=rows, columns=controllers, fill_value=0).astype(int)


# --- recipes of the audio examples --------------------------------------------------------------------------
SKIP_RECIPE_KEYS = {"kind", "tail_seed", "source_m", "mic_m", "full_order", "max_order", "params01"}


def recipe_summary(recipe, limit: int = 220) -> str:
    """A one-line account of a hidden recipe (example.json's ``meta.recipe``): a chain as its effects in order,
    dimensions as a x b x c, other scalar fields as ``name value``; seeds and positions are left out."""
    if not isinstance(recipe, dict):
        return ""
    parts = []
    for k, v in recipe.items():
        if k in SKIP_RECIPE_KEYS or v is None:
            continue
        if k == "chain" and isinstance(v, list):
            parts.append("chain " + " → ".join(str(s.get("effect", "?")) if isinstance(s, dict) else str(s)
                                                for s in v))
        elif isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
            parts.append(f"{k} " + " x ".join(_num(x) for x in v))
        elif isinstance(v, (int, float, str)) and not isinstance(v, bool):
            parts.append(f"{k} {_num(v) if not isinstance(v, str) else v}")
    text = ", ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(x) -> str:
    """3 significant digits, without an exponent for rates and frequencies (5260, not 5.26e+03)."""
    if isinstance(x, float):
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"
    return str(x)


# --- Markdown, LaTeX, CSV -----------------------------------------------------------------------------------
def hypothesis_markdown(sec: Section) -> str:
    lines = [f"**Hypothesis: \"{FOCUS} beats DeepAFx-ST on unknown processing\"** (the wild set)", "",
             f"Two-sided Wilcoxon signed-rank test of {FOCUS} against each DeepAFx-ST system on per-source means "
             f"(seeds averaged; paired by task and source, n = sources), per wild kind and audio metric; p-values Holm-adjusted over every kind and metric "
             f"tested against that system; better/worse: adjusted p < {ALPHA}, in the direction of the matched-pairs "
             f"rank-biserial correlation r (r > 0 favours {FOCUS}); otherwise the smallest difference the test "
             f"could detect ({POWER:.0%} power at alpha / tests). A kind is *supported* only when {FOCUS} is "
             f"significantly better on {PRIMARY_METRIC} (the primary metric) and worse on no metric, *contradicted* "
             f"when it is significantly worse on {PRIMARY_METRIC} and better on none, *mixed* when {PRIMARY_METRIC} "
             "and another metric disagree, *not supported* when MR-STFT shows no significant difference (absence "
             "of evidence, not evidence of equality). Overall: supported or contradicted only when every kind is; "
             "these tests are secondary to the primary table.", ""]
    for v in sec.verdicts:
        lines.append(f"- {v.sentence}" if v.scope != "overall" else f"- **{v.sentence}**")
    for n in sec.notes:
        lines.append(f"- {n}")
    if len(sec.tests):
        cols = [("baseline", "vs"), ("kind", "kind"), ("metric", "metric"), ("n", "sources"), ("focus_mean", FOCUS),
                ("baseline_mean", "baseline"), ("statistic", "W"), ("p", "p"), ("p_holm", "p (Holm)"),
                ("rank_biserial", "r"), ("mde", "smallest detectable"), ("verdict", "verdict")]
        lines += ["", "| " + " | ".join(h for _, h in cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
        for row in sec.tests.to_dict("records"):
            lines.append("| " + " | ".join(_fmt(c, row[c]) for c, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def _fmt(col: str, v) -> str:
    if col in ("focus_mean", "baseline_mean", "mde"):
        return "n/a" if not np.isfinite(v) else f"{v:.4g}"
    return T._sig_fmt(col, v)


def hypothesis_latex(sec: Section) -> str:
    cols = [("baseline", "vs"), ("kind", "kind"), ("metric", "metric"), ("n", "sources"), ("statistic", "W"),
            ("p", "p"), ("p_holm", "p (Holm)"), ("rank_biserial", "r"), ("verdict", "verdict")]
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{lll" + "r" * 5 + "l}", r"\toprule",
           " & ".join(h for _, h in cols) + r" \\", r"\midrule"]
    for row in sec.tests.to_dict("records"):
        out.append(" & ".join(T.latex_escape(_fmt(c, row[c])) for c, _ in cols) + r" \\")
    summary = " ".join(v.sentence for v in sec.overall)
    cap = (f"Wild set: {T.latex_escape(FOCUS)} against DeepAFx-ST, two-sided Wilcoxon signed-rank test on the same "
           "examples per kind and metric, p-values Holm-adjusted over the kinds and metrics tested against each "
           f"system; $r>0$ favours {T.latex_escape(FOCUS)}. {T.latex_escape(summary)}")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{cap}}}", r"\label{tab:wild-hypothesis}",
            r"\end{table}"]
    return "\n".join(out) + "\n"


def picks_markdown(sec: Section) -> str:
    if sec.picks.empty:
        return f"{sec.picks_note}\n"
    lines = [f"**Controllers the {FOCUS} model picked, per wild kind** (examples per controller)", ""]
    for chooser, m in sec.matrices():
        lines += [f"*{chooser}*", "", "| kind | " + " | ".join(m.columns) + " | examples |",
                  "|---|" + "---:|" * (len(m.columns) + 1)]
        for kind, row in m.iterrows():
            lines.append(f"| {kind} | " + " | ".join(str(int(v)) for v in row) + f" | {int(row.sum())} |")
        lines.append("")
    for row in sec.agreement.itertuples(index=False):
        lines.append(f"- {row.kind}: the auto pick is the best pick on {row.same} of {row.examples} examples.")
    return "\n".join(lines) + "\n"


def markdown(sec: Section) -> str:
    """The whole section as Markdown (in tables.md and in wild.md)."""
    out = ["## The wild set (unknown processing)", "", NO_ORACLE, ""]
    if sec.left_out:
        out += [f"Not shown (no value on the wild set): {', '.join(sec.left_out)}.", ""]
    out += [T.to_markdown(t) for t in sec.tables]
    out += [hypothesis_markdown(sec), picks_markdown(sec)]
    return "\n".join(out)


def write(sec: Section, d: Path, n_resamples: int) -> tuple[list[str], dict[str, str]]:
    """Write the section's files into report directory ``d``; returns (LaTeX parts for tables.tex, files)."""
    td = d / "tables"
    td.mkdir(parents=True, exist_ok=True)
    sec.stats.to_csv(td / "wild_stats.csv", index=False)
    sec.tests.to_csv(td / "wild_hypothesis.csv", index=False)
    pd.DataFrame([{"baseline": v.baseline, "scope": v.scope, "verdict": v.verdict, "sentence": v.sentence}
                  for v in sec.verdicts], columns=["baseline", "scope", "verdict", "sentence"]).to_csv(
        td / "wild_verdicts.csv", index=False)
    sec.picks.to_csv(td / "wild_picks.csv", index=False)
    (d / "wild_hypothesis.md").write_text(hypothesis_markdown(sec))
    (d / "wild.md").write_text(markdown(sec))
    tex = []
    for t in sec.tables:
        part = T.to_latex(t, n_resamples).replace(r"\caption{", r"\caption{Wild set; no oracle exists. ", 1)
        (td / f"{t.name}.tex").write_text(part)
        tex.append(part)
    if len(sec.tests):
        part = hypothesis_latex(sec)
        (td / "wild_hypothesis.tex").write_text(part)
        tex.append(part)
    files = {"wild.md": "wild.md", "wild_hypothesis.md": "wild_hypothesis.md",
             "wild_stats.csv": "tables/wild_stats.csv", "wild_hypothesis.csv": "tables/wild_hypothesis.csv",
             "wild_verdicts.csv": "tables/wild_verdicts.csv", "wild_picks.csv": "tables/wild_picks.csv"}
    return tex, files
