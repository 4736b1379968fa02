"""The primary table: the comparisons the run's ``[analysis]`` section declared before the run (by default, per
effect set, ``proposed`` against each floor, baseline and its published recipe, on MR-STFT and parameter error),
tested on per-source means pooled over the set's tasks, Holm over that family only (:func:`bench.stats.
primary.primary_family`). The report, ``tables.md`` and ``docs/results/NAME/`` open with it.

``primary.csv`` (:data:`bench.stats.primary.PRIMARY_COLUMNS`, one row per declared comparison) is computed from the stored
scores; everything shown here is rendered from that table and the run's config alone, so ``docs/results/NAME/``
regenerates its text from its copy of the CSV.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

import bench.stats.primary as BS
from bench.results import CONFIG_FILE, SCORES_FILE
from reports import stats as S
from reports.results import ReportError, Results

PRIMARY_FILE = "primary.csv"


def analysis_of(config: dict):
    """The run's ``[analysis]`` section (the defaults for results written before it existed)."""
    from bench.config import AnalysisConfig, ConfigError, parse_section

    sec = (config or {}).get("analysis")
    if not isinstance(sec, dict):
        return AnalysisConfig()
    try:
        return parse_section(AnalysisConfig, sec, "analysis")
    except ConfigError as e:
        raise ReportError(f"{CONFIG_FILE}: {e}") from e


def compute(r: Results, *, n_resamples: int = S.N_RESAMPLES) -> BS.Primary:
    """The primary family of a loaded run, from its scores and its declared ``[analysis]``."""
    return BS.primary_family(r.scores, analysis_of(r.config), direction=S.direction, n_resamples=n_resamples)


def write(primary: BS.Primary, *dirs: Path) -> None:
    """``primary.csv`` into each of ``dirs``."""
    from bench.results import atomic_csv

    for d in dirs:
        atomic_csv(primary.table, Path(d) / PRIMARY_FILE)


def read(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = [c for c in BS.PRIMARY_COLUMNS if c not in df.columns]
    if missing:
        raise ReportError(f"{path}: missing columns {missing}")
    df["note"] = df["note"].fillna("").astype(str)
    return df


def load(out: Path, *, n_resamples: int = S.N_RESAMPLES) -> tuple[pd.DataFrame, dict]:
    """(the primary table, the run's config) of results directory ``out``: its ``primary.csv``, else computed
    from its scores."""
    from reports.results import load_results

    out = Path(out)
    if (out / PRIMARY_FILE).is_file():
        import json

        config = json.loads((out / CONFIG_FILE).read_text()) if (out / CONFIG_FILE).is_file() else {}
        return read(out / PRIMARY_FILE), config
    if not (out / SCORES_FILE).is_file():
        raise ReportError(f"{out}: neither {PRIMARY_FILE} nor {SCORES_FILE}; run `afx-bench run --out {out}` first")
    r = load_results(out)
    return compute(r, n_resamples=n_resamples).table, r.config


# --- words ----------------------------------------------------------------------------------------------------
def _num(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.3g}"


def _p(x: float) -> str:
    return "n/a" if not np.isfinite(x) else (f"{x:.3f}" if x >= 0.001 else f"{x:.1g}")


def mde_text(x: float) -> str:
    """The smallest detectable difference in words: a number, or why there is none."""
    if np.isinf(x):
        return "none (too few sources for any difference to reach significance)"
    return _num(x) if np.isfinite(x) else "not estimable (too few sources)"


def _seeds(k) -> str:
    k = int(k) if np.isfinite(k) else 0
    return f"{k} seed{'s' * (k != 1)}"


def _caution(row, alpha: float) -> str:
    """The test conditions on the trained models the run has; the interval and the mixed model also count the
    spread between training seeds. When they do not bear the verdict out, the sentence says so."""
    why = []
    if np.isfinite(row.ci_low) and row.ci_low <= 0 <= row.ci_high:
        why.append("its 95% interval includes 0")
    if np.isfinite(row.mixed_p) and row.mixed_p >= alpha:
        why.append(f"the mixed model gives p = {_p(row.mixed_p)}")
    if not why:
        return ""
    return (f"; but {' and '.join(why)}: counted with the spread between training seeds and sources, the "
            "difference is not established")


def sentence(row, power: float = 0.8, alpha: float = 0.05) -> str:
    """One plain sentence for one comparison (a row of primary.csv)."""
    where = f"On {row.effect_set} effects"
    if row.verdict == BS.NOT_TESTED:
        return f"{where}, {row.comparison} on {row.metric} was not tested: {row.note}."
    how = S.direction(row.metric)
    d = row.focus_mean - row.against_mean
    word = "lower" if d < 0 else "higher"
    ci = (f"95% CI of the difference {row.ci_low:+.3g} to {row.ci_high:+.3g}; " if np.isfinite(row.ci_low) else "")
    better = "lower" if how != "higher" else "higher"
    evidence = (f"({ci}{row.focus}'s is {better} for {int(row.n_better)} of {int(row.n_sources)} sources, "
                f"{_seeds(row.n_seeds)})")
    head = (f"{where}, {row.focus}'s {row.metric} is {_num(abs(d))} {word} than {row.against}'s {evidence}")
    if row.verdict in (BS.BETTER, BS.WORSE):
        return f"{head}: {row.focus} is {row.verdict} (p = {_p(row.p)}, Holm p = {_p(row.p_holm)}){_caution(row, alpha)}."
    tail = (f"the smallest difference this run could detect with {power:.0%} power is {_num(row.mde)}"
            if np.isfinite(row.mde) else f"the smallest difference this run could detect: {mde_text(row.mde)}")
    return f"{head}: no difference detected (Holm p = {_p(row.p_holm)}); {tail}."


def method_note(table: pd.DataFrame, analysis) -> str:
    m = int(table["p"].notna().sum())
    skipped = len(table) - int((table["verdict"] != BS.NOT_TESTED).sum())
    return (f"Declared before the run in `[analysis]`: {analysis.focus} against "
            f"{', '.join(analysis.against)} on {', '.join(analysis.metrics)} (parameter error never on wild effects), "
            f"per effect set ({', '.join(analysis.effect_sets)}): {len(table)} comparisons, {m} tested"
            + (f", {skipped} not (the rows say why)" if skipped else "") + ". Each is tested on per-source means "
            "pooled over the set's tasks (a source met in several tasks counts once): a two-sided paired "
            "permutation test of the mean difference (sign flips; exact up to "
            f"{int(math.log2(analysis.permutations))} sources), Holm over these "
            f"{m} comparisons only, alpha {analysis.alpha}. diff = {analysis.focus} - the other, with its 95% "
            "hierarchical bootstrap interval (seeds, sources, examples); d_z = mean / sd of the per-source "
            "differences; mixed model: the same difference from a linear mixed model with source and training run "
            "as random effects (statsmodels), a check. A comparison without a significant difference gives the "
            f"smallest difference the run could detect ({analysis.power:.0%} power at alpha / {max(m, 1)}), not "
            "\"no effect\".")


COLUMNS = ["comparison", "effects", "metric", "diff [95% CI]", "d_z", "better in", "p", "p (Holm)", "sources",
           "seeds", "verdict", "smallest detectable", "mixed model"]


def row_cells(row) -> list[str]:
    if row.verdict == BS.NOT_TESTED:
        return [row.comparison, row.effect_set, row.metric, "—", "—", "—", "—", "—", "—", "—",
                f"not tested: {row.note}", "—", "—"]
    ci = f" [{row.ci_low:+.3g}, {row.ci_high:+.3g}]" if np.isfinite(row.ci_low) else ""
    mixed = f"{row.mixed_diff:+.3g} (p {_p(row.mixed_p)})" if np.isfinite(row.mixed_diff) else "n/a"
    mde = mde_text(row.mde) if row.verdict == BS.NO_DIFFERENCE else ""
    return [row.comparison, row.effect_set, row.metric, f"{row.diff:+.3g}{ci}", _num(row.effect_size),
            f"{int(row.n_better)}/{int(row.n_sources)}", _p(row.p), _p(row.p_holm), str(int(row.n_sources)),
            str(int(row.n_seeds)), row.verdict, mde, mixed]


def markdown(table: pd.DataFrame, config: dict, *, level: str = "##") -> str:
    """The primary table and its sentences in Markdown (tables.md and docs/results/NAME/tables.md)."""
    a = analysis_of(config)
    lines = [f"{level} Primary comparisons (declared before the run)", "", method_note(table, a), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 9 + ["---"]) + "|"]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in table.itertuples(index=False)]
    lines += [""] + [f"- {sentence(r, a.power, a.alpha)}" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def latex(table: pd.DataFrame, config: dict) -> str:
    from reports.tables import latex_escape

    a = analysis_of(config)
    cols = ["comparison", "effects", "metric", "diff [95% CI]", "p", "p (Holm)", "sources", "seeds", "verdict"]
    keep = [COLUMNS.index(c) for c in cols]
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\resizebox{\linewidth}{!}{%",
           r"\begin{tabular}{lll" + "r" * 5 + "l}", r"\toprule", " & ".join(cols) + r" \\", r"\midrule"]
    for r in table.itertuples(index=False):
        cells = row_cells(r)
        out.append(" & ".join(latex_escape(cells[i]).replace("—", "---") for i in keep) + r" \\")
    cap = latex_escape(method_note(table, a))
    out += [r"\bottomrule", r"\end{tabular}", "}", rf"\caption{{Primary comparisons. {cap}}}",
            r"\label{tab:primary}", r"\end{table}"]
    return "\n".join(out) + "\n"


def html_rows(table: pd.DataFrame) -> list[dict]:
    """The table's rows as display cells for the page, with the verdict's CSS class."""
    css = {BS.BETTER: "better", BS.WORSE: "worse"}
    return [{"cells": row_cells(r), "verdict": css.get(r.verdict, "")} for r in table.itertuples(index=False)]


def section(table: pd.DataFrame, config: dict) -> dict:
    """What the report page shows: the note, the rows and the sentences."""
    a = analysis_of(config)
    return {"note": method_note(table, a), "columns": COLUMNS, "rows": html_rows(table),
            "sentences": [sentence(r, a.power, a.alpha) for r in table.itertuples(index=False)]}


def needed_sources(table: pd.DataFrame, *, alpha: float, power: float) -> pd.DataFrame:
    """Per tested comparison: the sources needed to detect the observed standardised effect with ``power`` at
    Holm's first level (alpha / m over the m comparisons tested), and the smallest difference the run's own sources
    detect so (``detectable``, in the metric's units): what `afx-bench power` prints."""
    t = table[table["verdict"] != BS.NOT_TESTED].copy()
    level = alpha / max(int(t["p"].notna().sum()), 1)
    t["sources_needed"] = [BS.sources_needed(e, alpha=level, power=power) for e in t["effect_size"]]
    t["detectable"] = [sd * BS.detectable_effect(int(n), alpha=level, power=power)
                       for sd, n in zip(t["sd"], t["n_sources"], strict=True)]
    t["level"] = level
    return t[["comparison", "effect_set", "metric", "diff", "effect_size", "sd", "n_sources", "n_seeds",
              "sources_needed", "detectable", "level", "verdict"]].reset_index(drop=True)
