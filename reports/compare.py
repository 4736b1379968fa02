"""Two runs side by side (``afx-bench compare A B``): per cell (system x task x metric of ``summary.csv``) and per
primary comparison (``primary.csv``), whether they differ beyond their intervals, so that a rerun on another
machine, or after a change, can be checked.

A cell *differs* when its two 95% intervals do not overlap (each already holds the spread between training seeds,
sources and examples); a cell without an interval (fewer than 2 sources) differs when its means are not equal. A
primary comparison differs when its two intervals of the difference do not overlap or its verdict changed. Cells or
comparisons found in one run only are listed too. Only the main metrics are compared (cost counters such as
``cost/seconds`` measure the machine, not the method). Stored results only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results import SUMMARY_GROUP
from bench.stats import main_metric
from reports import primary as P

SAME, WITHIN, DIFFERS, ONLY_A, ONLY_B = "identical", "within intervals", "differs", "only in A", "only in B"
CELL_COLUMNS = [*SUMMARY_GROUP, "mean_a", "ci_low_a", "ci_high_a", "mean_b", "ci_low_b", "ci_high_b", "status"]
PRIMARY_COLUMNS = ["comparison", "effect_set", "metric", "diff_a", "ci_low_a", "ci_high_a", "verdict_a", "diff_b",
                   "ci_low_b", "ci_high_b", "verdict_b", "status"]


@dataclass
class Comparison:
    cells: pd.DataFrame  # CELL_COLUMNS
    primary: pd.DataFrame  # PRIMARY_COLUMNS

    @property
    def flagged(self) -> int:
        return int((~self.cells["status"].isin([SAME, WITHIN])).sum()
                   + (~self.primary["status"].isin([SAME, WITHIN])).sum())


def _status(ma, la, ha, mb, lb, hb) -> str:
    if (ma == mb) or (np.isnan(ma) and np.isnan(mb)):
        return SAME
    if np.isnan(la) or np.isnan(lb):
        return DIFFERS  # nothing to judge the difference by: any change is one
    return WITHIN if max(la, lb) <= min(ha, hb) else DIFFERS


def _side_by_side(a: pd.DataFrame, b: pd.DataFrame, keys: list[str], cols: dict[str, str]) -> pd.DataFrame:
    """``a`` and ``b`` joined on ``keys``; ``cols`` maps (mean, low, high) to their column names."""
    m = a.merge(b, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    v = {f"{k}_{s}": pd.to_numeric(m[f"{c}_{s}"], errors="coerce").to_numpy(np.float64)
         for k, c in cols.items() for s in "ab"}
    m["status"] = [
        ONLY_A if w == "left_only" else ONLY_B if w == "right_only" else
        _status(v["mean_a"][i], v["low_a"][i], v["high_a"][i], v["mean_b"][i], v["low_b"][i], v["high_b"][i])
        for i, w in enumerate(m["_merge"])]
    return m.drop(columns="_merge")


def compare_runs(a: Path, b: Path) -> Comparison:
    from reports.docs import run_summary

    sa, sb = (run_summary(Path(x))[0] for x in (a, b))
    sa, sb = (s[s["metric"].astype(str).map(main_metric)] for s in (sa, sb))
    keep = [*SUMMARY_GROUP, "mean", "ci_low", "ci_high"]
    for s in (sa, sb):
        for k in SUMMARY_GROUP:
            s[k] = s[k].astype(str)
    cells = _side_by_side(sa[keep], sb[keep], SUMMARY_GROUP, {"mean": "mean", "low": "ci_low", "high": "ci_high"})
    pa, pb = (P.load(Path(x))[0] for x in (a, b))
    pk = ["comparison", "effect_set", "metric"]
    pcols = [*pk, "diff", "ci_low", "ci_high", "verdict"]
    prim = _side_by_side(pa[pcols], pb[pcols], pk, {"mean": "diff", "low": "ci_low", "high": "ci_high"})
    changed = (prim["status"].isin([SAME, WITHIN])) & (prim["verdict_a"] != prim["verdict_b"])
    prim.loc[changed, "status"] = DIFFERS + " (verdict)"
    return Comparison(cells[CELL_COLUMNS].reset_index(drop=True), prim[PRIMARY_COLUMNS].reset_index(drop=True))


def _num(x: float) -> str:
    return f"{x:.4g}"


def _cell_line(r) -> str:
    return (f"{r.status:9s} {r.system} / {r.effect} / {r.corpus} / {r.metric}: A {_num(r.mean_a)} "
            f"[{_num(r.ci_low_a)}, {_num(r.ci_high_a)}], B {_num(r.mean_b)} [{_num(r.ci_low_b)}, {_num(r.ci_high_b)}]")


def _primary_line(r) -> str:
    return (f"{r.status} {r.comparison}, {r.effect_set}, {r.metric}: A {_num(r.diff_a)} [{_num(r.ci_low_a)}, "
            f"{_num(r.ci_high_a)}] {r.verdict_a}; B {_num(r.diff_b)} [{_num(r.ci_low_b)}, {_num(r.ci_high_b)}] "
            f"{r.verdict_b}")


def report(c: Comparison, a: Path, b: Path, *, limit: int = 40) -> str:
    """A plain-text account: counts per status, then the flagged cells and comparisons (at most ``limit`` each)."""
    lines = [f"A: {a}", f"B: {b}", ""]
    parts = (("cells (system x task x metric)", "cells beyond their intervals", c.cells, _cell_line),
             ("primary comparisons", "primary comparisons that differ", c.primary, _primary_line))
    for name, _, df, _ in parts:
        counts = df["status"].value_counts()
        lines.append(f"{name}: {len(df)}; " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for _, title, df, line in parts:
        bad = df[~df["status"].isin([SAME, WITHIN])]
        if len(bad):
            lines += ["", f"{title} ({len(bad)}):"] + [f"  {line(r)}" for r in bad.head(limit).itertuples(index=False)]
            if len(bad) > limit:
                lines.append(f"  ... and {len(bad) - limit} more (--all lists every one)")
    lines += ["", "no difference beyond the intervals" if not c.flagged else
              f"{c.flagged} difference(s) beyond the intervals (or present in one run only)"]
    return "\n".join(lines)
