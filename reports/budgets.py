"""The budget table: what each system spent to train (``<out>/budgets.csv``, one row per trained system and seed,
written by the runner) and what it spends per example at inference (the ``cost/renders`` and ``cost/seconds``
scores). Systems differ in budget unless the run's ``run.budget.*`` settings equalised them, and the table says
which; a run without ``budgets.csv`` gets a sentence saying so, not an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.results import BUDGET_COLUMNS, BUDGETS_FILE

NOT_TRAINED, NOT_RECORDED = "—", "n/a"
INFERENCE = {"cost/renders": "renders", "cost/seconds": "seconds"}  # score key -> column
# (column, header) of the table, in order
COLUMNS = [("seeds", "seeds"), ("train_examples", "train examples"), ("steps", "steps"),
           ("train_renders", "train renders"), ("train_seconds", "train s"), ("device", "device"),
           ("device_seconds", "device s"), ("parameters", "parameters"), ("renders", "renders / example"),
           ("seconds", "s / example")]
TRAIN = ("seeds", "train_examples", "steps", "train_renders", "train_seconds", "device", "device_seconds",
         "parameters")


@dataclass
class Budgets:
    table: pd.DataFrame  # one row per system: "system" and the keys of COLUMNS (NaN: not recorded)
    trained: set[str]  # systems with a row in budgets.csv
    note: str  # how to read it: equalised or not, missing file

    def cell(self, system: str, col: str) -> str:
        row = self.table.set_index("system").loc[system]
        if col in TRAIN and system not in self.trained:
            return NOT_TRAINED
        return fmt(row[col], col)


def fmt(v, col: str) -> str:
    if col == "device":
        return NOT_RECORDED if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return NOT_RECORDED
    if col in ("seconds", "train_seconds", "device_seconds"):
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    if col == "renders":
        return f"{x:.1f}" if x != round(x) else f"{x:,.0f}"
    return f"{x:,.0f}" if x == round(x) else f"{x:,.1f}"


def read_budgets(out: Path) -> pd.DataFrame | None:
    """``<out>/budgets.csv``, or None when the run wrote none. A file without the schema's columns is an error."""
    p = Path(out) / BUDGETS_FILE
    if not p.is_file():
        return None
    try:
        df = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=BUDGET_COLUMNS)
    missing = [c for c in BUDGET_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: missing columns {missing} (expected {BUDGET_COLUMNS})")
    return df


def inference_from_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per system: the mean ``cost/renders`` and ``cost/seconds`` per example (all tasks, seeds and examples)."""
    sub = scores[scores["metric"].isin(list(INFERENCE))]
    if sub.empty:
        return pd.DataFrame(columns=["system", *INFERENCE.values()])
    m = sub.groupby(["system", "metric"])["value"].mean().unstack("metric")
    return m.rename(columns=INFERENCE).reindex(columns=list(INFERENCE.values())).reset_index()


def inference_from_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The same numbers from ``summary.csv``: each system's task means weighted by their n."""
    sub = summary[summary["metric"].isin(list(INFERENCE))].copy()
    if sub.empty:
        return pd.DataFrame(columns=["system", *INFERENCE.values()])
    sub = sub[sub["n"] > 0].assign(w=lambda d: d["mean"] * d["n"])
    g = sub.groupby(["system", "metric"])[["w", "n"]].sum()
    m = (g["w"] / g["n"]).unstack("metric")
    return m.rename(columns=INFERENCE).reindex(columns=list(INFERENCE.values())).reset_index()


def budget_table(systems: list[str], budgets: pd.DataFrame | None, inference: pd.DataFrame,
                 config: dict | None = None) -> Budgets:
    """One row per system (``systems`` first, then any other in budgets.csv): its training budget averaged over
    its seeds (``seeds``: how many budgets.csv rows it has) and its inference cost per example."""
    names = list(dict.fromkeys([*systems, *([] if budgets is None else budgets["system"].astype(str))]))
    rows = []
    trained: set[str] = set()
    for s in names:
        rec: dict = {"system": s}
        b = None if budgets is None else budgets[budgets["system"].astype(str) == s]
        if b is not None and len(b):
            trained.add(s)
            rec["seeds"] = int(b["seed"].nunique())
            for c in TRAIN[1:]:
                if c == "device":
                    vals = sorted({str(v) for v in b[c].dropna()})
                    rec[c] = ", ".join(vals) if vals else math.nan
                else:
                    v = pd.to_numeric(b[c], errors="coerce")
                    rec[c] = float(v.mean()) if v.notna().any() else math.nan
        inf = inference[inference["system"] == s]
        for c in INFERENCE.values():
            rec[c] = float(inf[c].iloc[0]) if len(inf) and c in inf else math.nan
        rows.append(rec)
    table = pd.DataFrame(rows, columns=["system", *[c for c, _ in COLUMNS]])
    return Budgets(table, trained, budget_note(budgets, config or {}))


def budget_note(budgets: pd.DataFrame | None, config: dict) -> str:
    if budgets is None:
        head = (f"This run wrote no {BUDGETS_FILE} (it predates the file, or trained nothing), so the training "
                "columns are empty; the inference columns come from the cost/* scores.")
    else:
        head = (f"Training budgets from {BUDGETS_FILE}, averaged over each system's seeds; inference cost per "
                "example from the cost/renders and cost/seconds scores (all tasks, seeds and examples).")
    budget = (config.get("run") or {}).get("budget") if isinstance(config, dict) else None
    set_keys = {k: v for k, v in (budget or {}).items() if v not in (None, "", 0, [], {})} \
        if isinstance(budget, dict) else {}
    if set_keys:
        eq = ("The run equalised budgets with run.budget: "
              + ", ".join(f"{k} = {v}" for k, v in sorted(set_keys.items()))
              + "; figures it does not cover still differ between systems.")
    else:
        eq = ("Budgets differ between systems: this run did not equalise them (run.budget.* unset), so compare "
              "scores with the budget in view.")
    return (f"{head} {eq} {NOT_TRAINED}: the system is not trained; {NOT_RECORDED}: not recorded. Seconds are wall "
            "time on a shared machine.")


def to_markdown(b: Budgets) -> str:
    lines = ["**Budgets: training (per system, mean over seeds) and inference (per example)**", "", b.note, "",
             "| system | " + " | ".join(h for _, h in COLUMNS) + " |",
             "|---|" + "|".join("---:" if c != "device" else "---" for c, _ in COLUMNS) + "|"]
    for s in b.table["system"]:
        lines.append(f"| {s} | " + " | ".join(b.cell(s, c) for c, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def to_csv_frame(b: Budgets) -> pd.DataFrame:
    out = b.table.copy()
    out.insert(1, "trained", out["system"].isin(b.trained))
    return out
