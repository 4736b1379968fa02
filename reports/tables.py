"""Tables: per metric, systems x (effect set, corpus set) and systems x effect, each cell the mean over seeds and
examples with a 95% hierarchical bootstrap CI (seeds, then sources, then examples), n, sources and seeds; the
exploratory paired tests of the focus system against every other ranked system per task, on per-source means (raw
p and a Benjamini-Hochberg q; decisions come from the primary table, reports/primary.py).

Cell states: ``ok``; ``na`` (rows exist but every value is NaN: the metric does not apply, e.g. parameter error
of a system that estimates no parameters), rendered "n/a"; ``missing`` (no rows: the cell failed or was not run),
rendered as a dash. Neither is ever rendered as 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reports import stats as S
from reports.results import Results, is_ranked, is_variant, system_label

NA, MISSING = "n/a", "—"


def headline(metric: str) -> bool:
    """Metrics that get tables of their own: base names (no "/") and the cost counters."""
    return "/" not in metric or metric.startswith("cost/")


# --- columns ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    key: str
    label: str
    group: str = ""  # effect set, for the per-effect tables


def set_columns(r: Results) -> list[Column]:
    """(effect set, corpus set) pairs present, seen before unseen before wild."""
    pairs = r.scores[["effect_set", "corpus_set"]].drop_duplicates()
    order = {"seen": 0, "unseen": 1, "wild": 2}
    pairs = sorted(map(tuple, pairs.to_numpy()), key=lambda p: (order.get(p[0], 9), order.get(p[1], 9), p))
    one_corpus_set = len({p[1] for p in pairs}) == 1
    cols = []
    for es, cs in pairs:
        label = f"{es} effects" if one_corpus_set else f"{es} effects, {cs} audio"
        cols.append(Column(f"{es}|{cs}", label, es))
    return cols


def effect_columns(r: Results) -> list[Column]:
    return [Column(e, e, r.effect_set.get(e, "")) for e in r.effects]


# --- statistics over the cells ------------------------------------------------------------------------------
STATS_COLUMNS = ["metric", "level", "column", "system", "mean", "ci_low", "ci_high", "n", "n_examples", "n_sources",
                 "n_seeds", "rows", "status"]


def compute_stats(r: Results, plan: dict[str, list[str]], *, n_resamples: int = S.N_RESAMPLES) -> pd.DataFrame:
    """Long table: metric, level ("set" | "effect"), column, system, mean, ci_low, ci_high, n (finite values, every
    seed's), n_examples, n_sources, n_seeds, rows, status: one row per cell, its hierarchical bootstrap interval
    from :func:`bench.stats.intervals`.

    ``plan`` maps a metric to the levels it is summarised at."""
    df = r.scores
    if "seed" not in df.columns:
        df = df.assign(seed=0)  # results written before the seed column: one seed
    df = df.assign(set_key=df["effect_set"] + "|" + df["corpus_set"])
    keycol = {"set": "set_key", "effect": "effect"}
    order = {m: i for i, m in enumerate(plan)}
    parts = []
    for level in ("set", "effect"):
        metrics = [m for m, levels in plan.items() if level in levels]
        sub = df[df["metric"].isin(metrics)]
        if sub.empty:
            continue
        sub = sub.assign(column=sub[keycol[level]])
        group = ["metric", "system", "column"]
        iv = S.intervals(sub, group, n_resamples=n_resamples, examples=True)
        rows = sub.groupby(group, sort=True, dropna=False).size().rename("rows").reset_index()
        iv = iv.merge(rows, on=group, how="left").assign(level=level)
        parts.append(iv)
    if not parts:
        return pd.DataFrame(columns=STATS_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out["status"] = np.where(out["n"] > 0, "ok", "na")
    out = out.assign(_m=out["metric"].map(order), _l=out["level"].map({"set": 0, "effect": 1}))
    out = out.sort_values(["_m", "_l"], kind="stable").drop(columns=["_m", "_l"])
    return out[STATS_COLUMNS].reset_index(drop=True)


# --- one rendered table -------------------------------------------------------------------------------------
@dataclass
class Cell:
    mean: float = math.nan
    low: float = math.nan
    high: float = math.nan
    n: int = 0
    status: str = "missing"
    best: bool = False
    show_n: bool = False  # n differs from the column's usual n
    n_sources: int = 0
    n_seeds: int = 0
    show_sources: bool = False  # n_sources differs from the column's usual number
    show_seeds: bool = False  # n_seeds differs from the row's number of seeds


@dataclass
class Table:
    name: str  # file-name-safe id
    metric: str
    level: str
    how: str  # lower | higher | signed
    columns: list[Column]
    systems: list[str]
    cells: dict[tuple[str, str], Cell]
    col_n: dict[str, int] = field(default_factory=dict)
    col_sources: dict[str, int] = field(default_factory=dict)
    row_seeds: dict[str, int] = field(default_factory=dict)  # a system's seeds (the most among its cells)
    decimals: int = 3
    heading: str = ""  # overrides the default title (e.g. the wild set's tables)

    @property
    def title(self) -> str:
        if self.heading:
            return self.heading
        what = "effect set" if self.level == "set" else "effect"
        return f"{self.metric} by {what}"

    def direction_text(self) -> str:
        return {"lower": "lower is better", "higher": "higher is better",
                "signed": "signed difference, 0 is best"}[self.how]

    def fmt(self, x: float) -> str:
        return f"{x:.{self.decimals}f}"

    def cell_parts(self, system: str, col: str) -> tuple[str, str, str]:
        """(value, interval, note) as plain text; value is n/a or a dash when there is no number. The note gives
        n, sources and seeds where they differ from the column header's n and sources and the row's seeds."""
        c = self.cells[(system, col)]
        if c.status == "missing":
            return MISSING, "", ""
        if c.status == "na":
            return NA, "", ""
        ci = f"[{self.fmt(c.low)}, {self.fmt(c.high)}]" if np.isfinite(c.low) else ""
        note = [f"n={c.n}" if c.show_n else "", _count(c.n_sources, "source") if c.show_sources else "",
                _count(c.n_seeds, "seed") if c.show_seeds else ""]
        return self.fmt(c.mean), ci, ", ".join(x for x in note if x)

    def column_header(self, col: Column) -> str:
        n, src = self.col_n.get(col.key), self.col_sources.get(col.key)
        if not n:
            return col.label
        return f"{col.label} (n={n}, {_count(src, 'source')})" if src else f"{col.label} (n={n})"

    def seeds_text(self, system: str) -> str:
        k = self.row_seeds.get(system, 0)
        return str(k) if k else MISSING


def _count(k: int | None, what: str) -> str:
    return f"{k} {what}{'' if k == 1 else 's'}"


def _mode(values: list[int]) -> int:
    return max(set(values), key=lambda k: (values.count(k), k))


def make_table(stats: pd.DataFrame, r: Results, metric: str, level: str, columns: list[Column], *,
               systems: list[str] | None = None, name: str = "", heading: str = "") -> Table:
    """One metric's table at one level. ``systems`` (default: all) are its rows; ``name`` and ``heading`` replace
    the default file name and title, for tables of a subset such as the wild set."""
    how = S.direction(metric)
    systems = list(r.systems if systems is None else systems)
    sub = stats[(stats["metric"] == metric) & (stats["level"] == level)]
    cells: dict[tuple[str, str], Cell] = {(s, c.key): Cell() for s in systems for c in columns}
    for row in sub.itertuples(index=False):
        if (row.system, row.column) in cells:
            cells[(row.system, row.column)] = Cell(row.mean, row.ci_low, row.ci_high, int(row.n_examples), row.status,
                                                   n_sources=int(row.n_sources), n_seeds=int(row.n_seeds))
    col_n, col_sources = {}, {}
    seeds_of = stats.groupby("system")["n_seeds"].max().to_dict() if len(stats) else {}
    row_seeds = {s: int(seeds_of[s]) for s in systems if seeds_of.get(s, 0) > 0}  # over the whole run
    for s in row_seeds:
            for c in columns:
                cell = cells[(s, c.key)]
                cell.show_seeds = cell.status == "ok" and cell.n_seeds != row_seeds[s]
    for c in columns:
        ok = [cells[(s, c.key)] for s in systems if cells[(s, c.key)].status == "ok"]
        if ok:
            col_n[c.key] = _mode([x.n for x in ok])
            col_sources[c.key] = _mode([x.n_sources for x in ok])
            for s in systems:
                cell = cells[(s, c.key)]
                cell.show_n = cell.status == "ok" and cell.n != col_n[c.key]
                cell.show_sources = cell.status == "ok" and cell.n_sources != col_sources[c.key]
        ranked = [cells[(s, c.key)].mean for s in systems if is_ranked(s) and cells[(s, c.key)].status == "ok"]
        if len(ranked) >= 2:
            best = S.best_value(ranked, how)
            for s in systems:
                cell = cells[(s, c.key)]
                cell.best = is_ranked(s) and cell.status == "ok" and _close(cell.mean, best)
    means = [abs(c.mean) for c in cells.values() if c.status == "ok" and np.isfinite(c.mean) and c.mean != 0]
    decimals = 3
    if means:
        decimals = int(np.clip(2 - math.floor(math.log10(float(np.median(means)))), 0, 6))
    name = name or f"{_safe(metric)}__{level}"
    return Table(name, metric, level, how, columns, systems, cells, col_n, col_sources, row_seeds, decimals,
                 heading)


def _close(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


# --- the exploratory paired tests ---------------------------------------------------------------------------
SIG_COLUMNS_ALL = ["metric", "task", "effect", "effect_set", "corpus", "corpus_set", "focus", "baseline", "n",
                   "n_examples", "n_nonzero", "mean_diff", "median_diff", "statistic", "p", "q_bh",
                   "rank_biserial", "verdict"]
ALPHA = 0.05


def tested_against(r: Results) -> list[str]:
    """The systems the focus system is tested against: every one but itself, the oracle and labelled variants
    (which know or choose with the target: never in a test family)."""
    return [b for b in r.systems if b != r.focus and is_ranked(b) and not is_variant(b)]


def significance(r: Results, metrics: list[str]) -> pd.DataFrame:
    """Exploratory Wilcoxon signed-rank tests of the focus system against each other ranked system, per task and
    metric, on per-source means: each system's values are averaged over its seeds per example, the examples where
    both have a finite value are kept, and those are averaged per source; the sources are the pairs (``n``;
    ``n_examples`` the examples behind them). Raw p and a Benjamini-Hochberg q over every comparison of one
    metric's table (all tasks x systems); ``verdict`` better/worse at q < ALPHA, else empty. The oracle and
    labelled variants are never tested."""
    cols = SIG_COLUMNS_ALL
    if r.focus is None:
        return pd.DataFrame(columns=cols)
    rows = []
    df = r.scores[r.scores["metric"].isin(metrics)]
    if "source_id" not in df.columns:  # older results: every example its own source
        df = df.assign(source_id=df["task"] + "#" + df["example"].astype(str))
    against = tested_against(r)
    for metric, m in df.groupby("metric", sort=False):
        how = S.direction(metric)
        fam = []
        for task, g in m.groupby("task", sort=False):
            wide = S.example_means(g.assign(source_id=g["source_id"].astype(str)), ["source_id", "example"])
            if r.focus not in wide:
                continue
            info = r.task_info(task)
            sources = wide.index.get_level_values("source_id").to_numpy()
            for b in against:
                if b not in wide:
                    continue
                a_v, b_v = wide[r.focus].to_numpy(np.float64), wide[b].to_numpy(np.float64)
                if how == "signed":  # compare distances from 0
                    a_v, b_v = np.abs(a_v), np.abs(b_v)
                a_s, b_s, _ = S.source_pairs(a_v, b_v, sources)
                t = S.paired_test(a_s, b_s, higher_is_better=how == "higher")
                if t.n == 0:
                    continue  # n/a for one of the two: no test
                fam.append({"metric": metric, "task": task, **{k: info[k] for k in cols[2:6]}, "focus": r.focus,
                            "baseline": b, "n": t.n, "n_examples": int((np.isfinite(a_v) & np.isfinite(b_v)).sum()),
                            "n_nonzero": t.n_nonzero, "mean_diff": t.mean_diff, "median_diff": t.median_diff,
                            "statistic": t.statistic, "p": t.p, "rank_biserial": t.rank_biserial})
        for f, q in zip(fam, S.bh([f["p"] for f in fam]), strict=True):
            f["q_bh"] = q
            f["verdict"] = ("better" if f["mean_diff"] > 0 else "worse") if q < ALPHA else ""
        rows += fam
    out = pd.DataFrame(rows, columns=cols)
    if not out.empty:
        rank = pd.DataFrame({"m": out["metric"].map({m: i for i, m in enumerate(metrics)}),
                             "t": out["task"].map({t: i for i, t in enumerate(r.tasks)}),
                             "b": out["baseline"].map({s: i for i, s in enumerate(r.systems)})})
        out = out.loc[rank.sort_values(["m", "t", "b"], kind="stable").index].reset_index(drop=True)
    return out


def exploratory_note(sig: pd.DataFrame, metric: str) -> str:
    """What one metric's per-task tests are: how many, what q is, and that they decide nothing."""
    sub = sig[sig["metric"] == metric]
    if sub.empty:
        return ""
    n = int(sub["n_nonzero"].max())
    return (f"Exploratory: {len(sub)} per-task comparisons (tasks x systems; the oracle and labelled variants are "
            f"never tested), raw p and a Benjamini-Hochberg q over this table (false discovery rate). With at most {n} "
            f"sources per task the smallest two-sided p is {S.min_p(n):.2g}. Decide with the primary table.")


def significance_summary(sig: pd.DataFrame) -> pd.DataFrame:
    """Per metric and baseline: on how many tasks the focus system is better / worse at q < ALPHA (exploratory)."""
    if sig.empty:
        return pd.DataFrame(columns=["metric", "baseline", "tasks", "better", "worse", "neither", "median_r"])
    g = sig.groupby(["metric", "baseline"], sort=False)
    out = g.agg(tasks=("task", "size"), better=("verdict", lambda v: int((v == "better").sum())),
                worse=("verdict", lambda v: int((v == "worse").sum())),
                neither=("verdict", lambda v: int((v == "").sum())), median_r=("rank_biserial", "median"))
    return out.reset_index()


# --- Markdown and LaTeX -------------------------------------------------------------------------------------
def stat_note(n_resamples: int) -> str:
    return (f"Mean over seeds and examples with its 95% hierarchical bootstrap confidence interval (percentile "
            f"method, {n_resamples} resamples, fixed seed; each resample draws the seeds, then the sources, then the "
            "examples within each drawn source, so the interval includes the spread between training seeds and "
            "between sources). n = examples per cell, with the number of sources they were cut from (column header; "
            "repeated in a cell when it differs); seeds = the training seeds behind a row (1 for a system that is "
            "not trained). No interval: fewer than 2 sources. "
            "Bold: best in the column (oracle, which knows the true settings, is not ranked, nor is a labelled "
            "variant such as proposed:best_pick, which chooses with the target). "
            f"{NA}: not applicable; {MISSING}: no result (the cell failed or was not run).")


FLOOR_NOTE = ("Reference rows: bypass (the input unchanged), random (a random setting), mean (the mean of the "
              "training settings) and constant (the one setting with the best validation score) are floors, and "
              "oracle (the true settings) is the ceiling. A learned system must beat bypass, random, mean and "
              "constant before it may claim to read the reference.")


def to_markdown(t: Table) -> str:
    head = ["system", "seeds"] + [t.column_header(c) for c in t.columns]
    lines = [f"**{t.title}** ({t.direction_text()})", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---", "---:"] + [":---:"] * len(t.columns)) + "|"]
    for s in t.systems:
        cells = []
        for c in t.columns:
            v, ci, n = t.cell_parts(s, c.key)
            txt = " ".join(x for x in (v, ci, f"({n})" if n else "") if x)
            cells.append(f"**{txt}**" if t.cells[(s, c.key)].best else txt)
        lines.append(f"| {system_label(s)} | {t.seeds_text(s)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def latex_escape(s: str) -> str:
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(rep.get(ch, ch) for ch in str(s))


def to_latex(t: Table, n_resamples: int) -> str:
    cols = "lr" + "c" * len(t.columns)
    wide = len(t.columns) > 4
    out = [r"\begin{table}[t]", r"\centering", r"\small"]
    if wide:
        out.append(r"\resizebox{\linewidth}{!}{%")
    out += [rf"\begin{{tabular}}{{{cols}}}", r"\toprule"]
    out.append("System & Seeds & " + " & ".join(latex_escape(t.column_header(c)) for c in t.columns) + r" \\")
    out.append(r"\midrule")
    for s in t.systems:
        cells = []
        for c in t.columns:
            v, ci, n = t.cell_parts(s, c.key)
            if v == MISSING:
                cells.append("---")
                continue
            if v == NA:
                cells.append("n/a")
                continue
            body = rf"\textbf{{{v}}}" if t.cells[(s, c.key)].best else v
            if ci:
                body += rf" {{\scriptsize {ci}}}"
            if n:
                body += rf" {{\scriptsize ({n})}}"
            cells.append(body)
        out.append(latex_escape(system_label(s)) + f" & {latex_escape(t.seeds_text(s)).replace('—', '---')} & "
                   + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if wide:
        out.append("}")
    cap = (f"{latex_escape(t.title)} ({t.direction_text()}). "
           + latex_escape(stat_note(n_resamples)).replace("—", "---"))
    out += [rf"\caption{{{cap}}}", rf"\label{{tab:{t.name}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


SIG_COLUMNS = [("task", "task"), ("baseline", "vs"), ("n", "sources"), ("n_examples", "examples"),
               ("mean_diff", "mean diff"), ("statistic", "W"), ("p", "p"), ("q_bh", "q (BH)"), ("rank_biserial", "r"),
               ("verdict", "at q < 0.05")]


def _sig_fmt(col: str, v) -> str:
    if col in ("n", "n_examples"):
        return str(int(v))
    if col in ("p", "p_holm", "q_bh"):
        return "n/a" if not np.isfinite(v) else (f"{v:.3f}" if v >= 0.001 else "<0.001")
    if col in ("mean_diff", "rank_biserial", "statistic"):
        return "n/a" if not np.isfinite(v) else (f"{v:.3g}" if col == "mean_diff" else f"{v:.2f}")
    if col == "baseline":
        return system_label(str(v))
    return str(v)


def significance_markdown(sig: pd.DataFrame, metric: str, focus: str) -> str:
    sub = sig[sig["metric"] == metric]
    note = exploratory_note(sig, metric)
    lines = [f"**{metric}: {focus} vs each system per task (exploratory): paired Wilcoxon signed-rank on per-source "
             "means, raw p and Benjamini-Hochberg q over this table**", "", *([note, ""] if note else []),
             "| " + " | ".join(h for _, h in SIG_COLUMNS) + " |", "|" + "|".join(["---"] * len(SIG_COLUMNS)) + "|"]
    for row in sub.itertuples(index=False):
        d = row._asdict()
        lines.append("| " + " | ".join(_sig_fmt(c, d[c]) for c, _ in SIG_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def significance_latex(sig: pd.DataFrame, metric: str, focus: str) -> str:
    sub = sig[sig["metric"] == metric]
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{ll" + "r" * 7 + "l}", r"\toprule",
           " & ".join(h for _, h in SIG_COLUMNS) + r" \\", r"\midrule"]
    for row in sub.itertuples(index=False):
        d = row._asdict()
        out.append(" & ".join(latex_escape(_sig_fmt(c, d[c])) for c, _ in SIG_COLUMNS) + r" \\")
    cap = (f"Exploratory: {latex_escape(metric)}, {latex_escape(focus)} against each system, two-sided Wilcoxon "
           "signed-rank test per task on per-source means (seeds averaged within a source), raw p and "
           "Benjamini-Hochberg q over every comparison of this table; mean diff $>0$ and $r>0$ (matched-pairs "
           f"rank-biserial correlation) favour {latex_escape(focus)}. Decisions: the primary table.")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{cap}}}",
            rf"\label{{tab:sig__{_safe(metric)}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


def summary_markdown(summary: pd.DataFrame, focus: str) -> str:
    lines = [f"**{focus} vs each system (exploratory): tasks where it is better / worse at BH q < {ALPHA}**", "",
             "| metric | vs | tasks | better | worse | neither | median r |", "|---|---|---|---|---|---|---|"]
    for row in summary.itertuples(index=False):
        r_ = "n/a" if not np.isfinite(row.median_r) else f"{row.median_r:.2f}"
        lines.append(f"| {row.metric} | {system_label(row.baseline)} | {row.tasks} | {row.better} | "
                     f"{row.worse} | {row.neither} | {r_} |")
    return "\n".join(lines) + "\n"


def summary_latex(summary: pd.DataFrame, focus: str) -> str:
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{llrrrrr}", r"\toprule",
           r"Metric & vs & Tasks & Better & Worse & Neither & median $r$ \\", r"\midrule"]
    for row in summary.itertuples(index=False):
        r_ = "n/a" if not np.isfinite(row.median_r) else f"{row.median_r:.2f}"
        out.append(f"{latex_escape(row.metric)} & {latex_escape(system_label(row.baseline))} & {row.tasks} & "
                   f"{row.better} & {row.worse} & {row.neither} & {r_} \\\\")
    cap = (f"Exploratory: tasks on which {latex_escape(focus)} is better or worse than each system (paired "
           "Wilcoxon signed-rank on per-source means, Benjamini-Hochberg q over each metric's table, "
           f"$q<{ALPHA}$). Decisions: the primary table.")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{cap}}}", r"\label{tab:sig-summary}", r"\end{table}"]
    return "\n".join(out) + "\n"
