"""Reading a results directory: scores, config, failures, and the layout every table and figure shares
(system order, the focus system, column order)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.results import CONFIG_FILE, FAILURES_FILE, SCORE_COLUMNS, SCORES_FILE

FLOOR_SYSTEMS = ("bypass", "random", "mean", "constant")  # what a learned system must beat (bench/floors.py)
REFERENCE_SYSTEMS = (*FLOOR_SYSTEMS, "oracle")  # anchors, not contenders
UNRANKED = frozenset({"oracle"})  # knows the true settings: never "best" in a column
# A labelled variant answer is scored by the runner as "<system>:<variant>". It may use what a contender may not
# (best_pick chooses the proposed model's controller with the target), so it is treated like the oracle: never
# ranked, never the focus of a paired test, always shown with its label. The notes below say what it is.
VARIANT_SEP = ":"
VARIANT_NOTES = {"best_pick": ("upper bound, chooses with the target", "upper bound, uses target")}  # (long, short)
SET_ORDER = {"seen": 0, "unseen": 1, "wild": 2}


class ReportError(RuntimeError):
    """Results that the report cannot be built from; the message says which file and why."""


@dataclass
class Results:
    out: Path
    scores: pd.DataFrame
    config: dict = field(default_factory=dict)
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)
    systems: list[str] = field(default_factory=list)
    focus: str | None = None
    effects: list[str] = field(default_factory=list)  # column order of the per-effect tables
    effect_set: dict[str, str] = field(default_factory=dict)
    tasks: list[str] = field(default_factory=list)

    @property
    def corpus_sets(self) -> list[str]:
        return sorted(self.scores["corpus_set"].dropna().unique(), key=lambda s: SET_ORDER.get(s, 9))

    @property
    def metrics(self) -> list[str]:
        return list(self.scores["metric"].unique())  # first-seen order; unique() reads the column in C

    def task_info(self, task: str) -> dict:
        if not hasattr(self, "_task_info"):
            cols = ["task", "effect", "effect_set", "corpus", "corpus_set", "split"]
            first = self.scores.drop_duplicates("task")[cols]
            self._task_info = {row["task"]: row for row in first.to_dict("records")}
        return self._task_info[task]


def load_results(out: Path) -> Results:
    out = Path(out)
    path = out / SCORES_FILE
    if not path.is_file():
        raise ReportError(f"{path}: no scores; run `afx-bench run --out {out}` first")
    try:
        scores = pd.read_parquet(path)
    except Exception as e:
        raise ReportError(f"{path}: cannot be read ({type(e).__name__}: {e})") from e
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns and c not in ("source_id", "seed")]
    if missing:
        raise ReportError(f"{path}: missing columns {missing}")
    scores = scores.copy()
    if "seed" not in scores.columns:  # results written before the seed column: one seed
        scores["seed"] = 0
    scores["seed"] = pd.to_numeric(scores["seed"], errors="coerce").fillna(-1).astype("int64")
    scores["value"] = pd.to_numeric(scores["value"], errors="coerce").astype("float64")
    for c in ("system", "task", "effect", "effect_set", "corpus", "corpus_set", "split", "metric"):
        scores[c] = scores[c].astype(str)
    config = _read_json(out / CONFIG_FILE)
    failures = _read_failures(out)
    r = Results(out, scores, config, failures)
    order = list(config.get("systems", {}).get("include", [])) if config else []
    seen = list(dict.fromkeys(scores["system"]))
    if not failures.empty and "system" in failures:
        seen += [s for s in dict.fromkeys(failures["system"].astype(str)) if s not in seen]
    r.systems = [s for s in order if s in seen] + [s for s in seen if s not in order]
    r.focus = pick_focus(r.systems)
    eff_sets = scores.groupby("effect", sort=False)["effect_set"].first().to_dict()
    cfg_order = []
    if config:
        e = config.get("effects", {})
        cfg_order = list(e.get("seen", [])) + list(e.get("unseen", [])) + list(e.get("wild", []))
    names = [n for n in cfg_order if n in eff_sets] + [n for n in eff_sets if n not in cfg_order]
    r.effects = sorted(names, key=lambda n: SET_ORDER.get(eff_sets[n], 9))  # stable: config order within a set
    r.effect_set = eff_sets
    corp = scores.groupby("task", sort=False).agg(eff=("effect", "first"), cs=("corpus_set", "first"),
                                                 c=("corpus", "first"))
    rank = {n: i for i, n in enumerate(r.effects)}
    r.tasks = sorted(corp.index, key=lambda t: (rank.get(corp.loc[t, "eff"], 99),
                                                SET_ORDER.get(corp.loc[t, "cs"], 9), corp.loc[t, "c"]))
    return r


def is_variant(system: str) -> bool:
    """A labelled variant answer ("proposed:best_pick"), not a system of its own."""
    return VARIANT_SEP in system


def is_reference(system: str) -> bool:
    """Anchors (the floors bypass, random, mean and constant; the oracle) and labelled variants: shown, compared
    against, never contenders."""
    return system in REFERENCE_SYSTEMS or is_variant(system)


def is_ranked(system: str) -> bool:
    """May this system be marked "best" in a column? Not the oracle (it knows the true settings) and not a
    labelled variant (it may use the target, e.g. best_pick)."""
    return system not in UNRANKED and not is_variant(system)


def system_label(system: str, *, short: bool = False) -> str:
    """The name shown for a system: a variant carries what it is ("proposed:best_pick (upper bound, chooses with
    the target)") wherever it appears, so it is never read as a contender. ``short``: for legends and panels."""
    if not is_variant(system):
        return system
    base, variant = system.split(VARIANT_SEP, 1)
    notes = VARIANT_NOTES.get(variant, (f"variant of {base}, not ranked", "variant, not ranked"))
    return f"{system} ({notes[1] if short else notes[0]})"


def pick_focus(systems: list[str]) -> str | None:
    """The system the report is about: "proposed", else the first non-reference system, else the first system
    that is neither bypass nor a labelled variant (so the paired tests still compare something), else none."""
    if "proposed" in systems:
        return "proposed"
    for s in systems:
        if not is_reference(s):
            return s
    for s in systems:
        if s != "bypass" and not is_variant(s):
            return s
    return next((s for s in systems if not is_variant(s)), None)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_failures(out: Path) -> pd.DataFrame:
    p = out / FAILURES_FILE
    if p.is_file():
        try:
            return pd.read_csv(p, dtype=str).fillna("")
        except (OSError, ValueError, pd.errors.EmptyDataError):
            pass
    return pd.DataFrame(columns=["system", "task", "stage", "error"])
