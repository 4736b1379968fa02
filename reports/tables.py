"""Tables: per metric, systems x (effect set, corpus set) and systems x effect, each cell the mean over examples
with a 95% bootstrap CI and n; the paired tests of the focus system against every other system per task.

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
from reports.results import Results, is_ranked, system_label

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
def compute_stats(r: Results, plan: dict[str, list[str]], *, n_resamples: int = S.N_RESAMPLES) -> pd.DataFrame:
    """Long table: metric, level ("set" | "effect"), column, system, mean, ci_low, ci_high, n, rows, status.

    ``plan`` maps a metric to the levels it is summarised at."""
    df = r.scores
    df = df.assign(set_key=df["effect_set"] + "|" + df["corpus_set"])
    keycol = {"set": "set_key", "effect": "effect"}
    records, samples = [], []
    by_metric = dict(tuple(df.groupby("metric", sort=False)))
    for metric, levels in plan.items():
        m = by_metric.get(metric)
        if m is None:
            continue
        for level in levels:
            for (system, col), g in m.groupby(["system", keycol[level]], sort=False):
                v = g["value"].to_numpy(np.float64)
                records.append({"metric": metric, "level": level, "column": col, "system": system,
                                "rows": int(v.size)})
                samples.append(v)
    cis = S.bootstrap_cis(samples, n_resamples=n_resamples)
    for rec, ci in zip(records, cis, strict=True):
        rec.update(mean=ci.mean, ci_low=ci.low, ci_high=ci.high, n=ci.n, status="ok" if ci.n else "na")
    cols = ["metric", "level", "column", "system", "mean", "ci_low", "ci_high", "n", "rows", "status"]
    return pd.DataFrame(records, columns=cols)


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
        """(value, interval, n note) as plain text; value is n/a or a dash when there is no number."""
        c = self.cells[(system, col)]
        if c.status == "missing":
            return MISSING, "", ""
        if c.status == "na":
            return NA, "", ""
        ci = f"[{self.fmt(c.low)}, {self.fmt(c.high)}]" if np.isfinite(c.low) else ""
        return self.fmt(c.mean), ci, (f"n={c.n}" if c.show_n else "")

    def column_header(self, col: Column) -> str:
        n = self.col_n.get(col.key)
        return f"{col.label} (n={n})" if n else col.label


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
            cells[(row.system, row.column)] = Cell(row.mean, row.ci_low, row.ci_high, int(row.n), row.status)
    col_n = {}
    for c in columns:
        ns = [cells[(s, c.key)].n for s in systems if cells[(s, c.key)].status == "ok"]
        if ns:
            col_n[c.key] = max(set(ns), key=lambda k: (ns.count(k), k))
            for s in systems:
                cell = cells[(s, c.key)]
                cell.show_n = cell.status == "ok" and cell.n != col_n[c.key]
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
    return Table(name, metric, level, how, columns, systems, cells, col_n, decimals, heading)


def _close(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


# --- the paired tests ---------------------------------------------------------------------------------------
def significance(r: Results, metrics: list[str]) -> pd.DataFrame:
    """Wilcoxon signed-rank test of the focus system against each other system, per task and metric, on the
    examples both have a finite value for; Holm-adjusted over the systems compared within each (metric, task)."""
    cols = ["metric", "task", "effect", "effect_set", "corpus", "corpus_set", "focus", "baseline", "n",
            "n_nonzero", "mean_diff", "median_diff", "statistic", "p", "p_holm", "rank_biserial", "verdict"]
    if r.focus is None:
        return pd.DataFrame(columns=cols)
    rows = []
    df = r.scores[r.scores["metric"].isin(metrics)]
    for (metric, task), g in df.groupby(["metric", "task"], sort=False):
        wide = g.pivot_table(index="example", columns="system", values="value", aggfunc="mean", dropna=False)
        if r.focus not in wide:
            continue
        how = S.direction(metric)
        info = r.task_info(task)
        fam = []
        for b in r.systems:
            if b == r.focus or b not in wide:
                continue
            a_v, b_v = wide[r.focus].to_numpy(np.float64), wide[b].to_numpy(np.float64)
            if how == "signed":  # compare distances from 0
                a_v, b_v = np.abs(a_v), np.abs(b_v)
            t = S.paired_test(a_v, b_v, higher_is_better=how == "higher")
            if t.n == 0:
                continue  # n/a for one of the two: no test
            fam.append({"metric": metric, "task": task, **{k: info[k] for k in cols[2:6]}, "focus": r.focus,
                        "baseline": b, "n": t.n, "n_nonzero": t.n_nonzero, "mean_diff": t.mean_diff,
                        "median_diff": t.median_diff, "statistic": t.statistic, "p": t.p,
                        "rank_biserial": t.rank_biserial})
        adj = S.holm([f["p"] for f in fam])
        for f, p in zip(fam, adj, strict=True):
            f["p_holm"] = p
            f["verdict"] = ("better" if f["mean_diff"] > 0 else "worse") if p < 0.05 else "n.s."
        rows += fam
    out = pd.DataFrame(rows, columns=cols)
    if not out.empty:
        rank = pd.DataFrame({"m": out["metric"].map({m: i for i, m in enumerate(metrics)}),
                             "t": out["task"].map({t: i for i, t in enumerate(r.tasks)}),
                             "b": out["baseline"].map({s: i for i, s in enumerate(r.systems)})})
        out = out.loc[rank.sort_values(["m", "t", "b"], kind="stable").index].reset_index(drop=True)
    return out


def significance_summary(sig: pd.DataFrame) -> pd.DataFrame:
    """Per metric and baseline: on how many tasks the focus system is significantly better / worse / neither."""
    if sig.empty:
        return pd.DataFrame(columns=["metric", "baseline", "tasks", "better", "worse", "n.s.", "median_r"])
    g = sig.groupby(["metric", "baseline"], sort=False)
    out = g.agg(tasks=("task", "size"), better=("verdict", lambda v: int((v == "better").sum())),
                worse=("verdict", lambda v: int((v == "worse").sum())),
                ns=("verdict", lambda v: int((v == "n.s.").sum())), median_r=("rank_biserial", "median"))
    return out.reset_index().rename(columns={"ns": "n.s."})


# --- Markdown and LaTeX -------------------------------------------------------------------------------------
def stat_note(n_resamples: int) -> str:
    return (f"Mean over examples with its 95% bootstrap confidence interval (percentile method, {n_resamples} "
            "resamples); n = examples per cell (stated in the column header, and in a cell when it differs). "
            "Bold: best in the column (oracle, which knows the true settings, is not ranked, nor is a labelled "
            "variant such as proposed:best_pick, which chooses with the target). "
            f"{NA}: not applicable; {MISSING}: no result (the cell failed or was not run).")


def to_markdown(t: Table) -> str:
    head = ["system"] + [t.column_header(c) for c in t.columns]
    lines = [f"**{t.title}** ({t.direction_text()})", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + [":---:"] * len(t.columns)) + "|"]
    for s in t.systems:
        cells = []
        for c in t.columns:
            v, ci, n = t.cell_parts(s, c.key)
            txt = " ".join(x for x in (v, ci, f"({n})" if n else "") if x)
            cells.append(f"**{txt}**" if t.cells[(s, c.key)].best else txt)
        lines.append(f"| {system_label(s)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def latex_escape(s: str) -> str:
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
           "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(rep.get(ch, ch) for ch in str(s))


def to_latex(t: Table, n_resamples: int) -> str:
    cols = "l" + "c" * len(t.columns)
    wide = len(t.columns) > 4
    out = [r"\begin{table}[t]", r"\centering", r"\small"]
    if wide:
        out.append(r"\resizebox{\linewidth}{!}{%")
    out += [rf"\begin{{tabular}}{{{cols}}}", r"\toprule"]
    out.append("System & " + " & ".join(latex_escape(t.column_header(c)) for c in t.columns) + r" \\")
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
        out.append(latex_escape(system_label(s)) + " & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    if wide:
        out.append("}")
    cap = (f"{latex_escape(t.title)} ({t.direction_text()}). "
           + latex_escape(stat_note(n_resamples)).replace("—", "---"))
    out += [rf"\caption{{{cap}}}", rf"\label{{tab:{t.name}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


SIG_COLUMNS = [("task", "task"), ("baseline", "vs"), ("n", "n"), ("mean_diff", "mean diff"),
               ("statistic", "W"), ("p", "p"), ("p_holm", "p (Holm)"), ("rank_biserial", "r"),
               ("verdict", "verdict")]


def _sig_fmt(col: str, v) -> str:
    if col in ("n",):
        return str(int(v))
    if col in ("p", "p_holm"):
        return "n/a" if not np.isfinite(v) else (f"{v:.3f}" if v >= 0.001 else "<0.001")
    if col in ("mean_diff", "rank_biserial", "statistic"):
        return "n/a" if not np.isfinite(v) else (f"{v:.3g}" if col == "mean_diff" else f"{v:.2f}")
    if col == "baseline":
        return system_label(str(v))
    return str(v)


def significance_markdown(sig: pd.DataFrame, metric: str, focus: str) -> str:
    sub = sig[sig["metric"] == metric]
    lines = [f"**{metric}: {focus} vs each system, paired Wilcoxon signed-rank per task, Holm-adjusted**", "",
             "| " + " | ".join(h for _, h in SIG_COLUMNS) + " |", "|" + "|".join(["---"] * len(SIG_COLUMNS)) + "|"]
    for row in sub.itertuples(index=False):
        d = row._asdict()
        lines.append("| " + " | ".join(_sig_fmt(c, d[c]) for c, _ in SIG_COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def significance_latex(sig: pd.DataFrame, metric: str, focus: str) -> str:
    sub = sig[sig["metric"] == metric]
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{ll" + "r" * 6 + "l}", r"\toprule",
           " & ".join(h for _, h in SIG_COLUMNS) + r" \\", r"\midrule"]
    for row in sub.itertuples(index=False):
        d = row._asdict()
        out.append(" & ".join(latex_escape(_sig_fmt(c, d[c])) for c, _ in SIG_COLUMNS) + r" \\")
    cap = (f"{latex_escape(metric)}: {latex_escape(focus)} against each system, two-sided Wilcoxon signed-rank "
           "test on the same examples per task, p-values Holm-adjusted over the systems compared on a task; "
           "mean diff $>0$ and $r>0$ (matched-pairs rank-biserial correlation) favour "
           f"{latex_escape(focus)}.")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{cap}}}",
            rf"\label{{tab:sig__{_safe(metric)}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


def summary_markdown(summary: pd.DataFrame, focus: str) -> str:
    lines = [f"**{focus} vs each system: tasks where it is significantly better / worse (Holm, 0.05)**", "",
             "| metric | vs | tasks | better | worse | n.s. | median r |", "|---|---|---|---|---|---|---|"]
    for row in summary.itertuples(index=False):
        r_ = "n/a" if not np.isfinite(row.median_r) else f"{row.median_r:.2f}"
        lines.append(f"| {row.metric} | {system_label(row.baseline)} | {row.tasks} | {row.better} | "
                     f"{row.worse} | {row[5]} | {r_} |")
    return "\n".join(lines) + "\n"


def summary_latex(summary: pd.DataFrame, focus: str) -> str:
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{llrrrrr}", r"\toprule",
           r"Metric & vs & Tasks & Better & Worse & n.s. & median $r$ \\", r"\midrule"]
    for row in summary.itertuples(index=False):
        r_ = "n/a" if not np.isfinite(row.median_r) else f"{row.median_r:.2f}"
        out.append(f"{latex_escape(row.metric)} & {latex_escape(system_label(row.baseline))} & {row.tasks} & "
                   f"{row.better} & {row.worse} & {row[5]} & {r_} \\\\")
    cap = (f"Tasks on which {latex_escape(focus)} is significantly better or worse than each system "
           "(paired Wilcoxon signed-rank, Holm-adjusted, $\\alpha=0.05$).")
    out += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{cap}}}", r"\label{tab:sig-summary}", r"\end{table}"]
    return "\n".join(out) + "\n"
