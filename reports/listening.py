"""A listening test of a run's stored audio (MUSHRA, ITU-R BS.1534-3): export a self-contained browser test,
analyse the ratings it saves, and the report's section on them.

- :func:`export` writes ``DIR/`` (``index.html``, ``listen.js``, ``listen.css``, ``trials.js``, ``test.json``,
  ``audio/tNN/*.wav``, ``ratings/``): N stored examples of a results directory, each a trial with the style
  reference as the explicit reference and, as conditions, the hidden reference (the target), the low anchor
  (bypass: the input) and each system's output; every clip of a trial loudness-matched (pyloudnorm) to one level.
  It runs from ``index.html`` with no server: the trial list is a script, the audio relative files.
- :func:`read_ratings`, :func:`screen`, :func:`analyse`: the CSV files the page saves, the post-screening of
  BS.1534-3 (a listener who rates the hidden reference below 90 in more than 15 % of trials is excluded), the
  mean rating per condition with a bootstrap interval over listeners, and the paired tests of the focus system
  against every other condition (Wilcoxon signed-rank on listener means, Holm, rank-biserial r).
- :func:`write_analysis` writes ``listening.csv``, ``listening.md``, ``screening.csv``, ``listening.json``;
  :func:`report_section` is what reports/build.py shows when ``<results>/listening/listening.csv`` exists.

docs/listening.md describes the layout, the page and the analysis.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.stats import holm, min_p, paired_test
from reports import store
from reports.results import is_reference, is_variant, pick_focus, system_label

LEVEL_LUFS = -23.0  # the common integrated loudness of every clip of a trial (lowered when a clip would clip)
HEADROOM = 0.99  # peak after the gain
FORMAT = "afx-bench-listen/1"
ASSETS = ("index.html", "listen.js", "listen.css")
HIDDEN, ANCHOR, SYSTEM = "hidden_reference", "anchor", "system"  # the kinds of condition
SCALE = [(80, "Excellent"), (60, "Good"), (40, "Fair"), (20, "Poor"), (0, "Bad")]  # MUSHRA, lower bounds
SCREEN_BELOW = 90  # BS.1534-3 post-screening: hidden reference rated below this ...
SCREEN_PERCENT = 15  # ... in more than this share of the listener's trials: excluded
ALPHA = 0.05
N_RESAMPLES = 2000
RATING_COLUMNS = ["listener", "trial", "position", "task", "example", "condition", "system", "label", "rating",
                  "played", "plays", "order", "timestamp", "test_id"]
LISTENING_DIR = "listening"  # <results>/listening/ : what the report reads
FILES = ("listening.csv", "listening.md", "screening.csv", "listening.json")


# --- export ---------------------------------------------------------------------------------------------------
def _stored_systems(results: Path) -> tuple[list[str], list[str]]:
    """(tasks, systems) from the stored scores, in their order; empty when there are none."""
    path = results / "scores.parquet"
    if not path.is_file():
        return [], []
    df = pd.read_parquet(path, columns=["task", "system"])
    return list(dict.fromkeys(df["task"].astype(str))), list(dict.fromkeys(df["system"].astype(str)))


def _default_systems(names: list[str]) -> list[str]:
    pick = [s for s in names if not is_reference(s)]
    return pick or [s for s in names if s != "bypass" and not is_variant(s)]


def eligible_examples(index: store.AudioIndex, systems: list[str]) -> dict[str, list[int]]:
    """task -> the stored examples that have the input, reference, target and every system's output."""
    need = [*store.CLIPS, *(store.slug(s) for s in systems)]
    out = {}
    for task in sorted(index.dirs):
        ok = [e for e in index.examples(task) if all(k in index.clips(task, e) for k in need)]
        if ok:
            out[task] = ok
    return out


def pick_examples(eligible: dict[str, list[int]], n: int, seed: int) -> list[tuple[str, int]]:
    """``n`` (task, example) pairs, spread over the tasks: each task's examples and the task order shuffled by
    ``seed``, then one example per task in turn."""
    rng = np.random.default_rng(seed)
    tasks = sorted(eligible)
    queues = {t: [eligible[t][i] for i in rng.permutation(len(eligible[t]))] for t in tasks}
    order = [tasks[i] for i in rng.permutation(len(tasks))]
    picked: list[tuple[str, int]] = []
    while len(picked) < n and any(queues.values()):
        for t in order:
            if queues[t] and len(picked) < n:
                picked.append((t, int(queues[t].pop(0))))
    return picked


def _loudness(x: np.ndarray, sr: int) -> float:
    import pyloudnorm

    if x.shape[0] < 16 or not np.any(x):
        return -math.inf
    meter = pyloudnorm.Meter(sr, block_size=min(0.4, x.shape[0] / sr))
    return float(meter.integrated_loudness(x if x.shape[1] > 1 else x[:, 0]))


def trial_gains(clips: dict[str, np.ndarray], sr: int, level: float = LEVEL_LUFS) -> tuple[float, dict]:
    """The trial's common loudness and each clip's gain (dB) and measured loudness: every clip to ``level``
    LUFS, or to a lower common level when a clip would otherwise peak above :data:`HEADROOM` (clip-safe, still
    matched). A silent clip (loudness undefined) gets 0 dB."""
    loud = {k: _loudness(x, sr) for k, x in clips.items()}
    target = level
    for k, x in clips.items():
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if np.isfinite(loud[k]) and peak > 0:
            target = min(target, loud[k] + 20 * math.log10(HEADROOM / peak))
    gains = {k: {"gain_db": round(target - v, 2) if np.isfinite(v) else 0.0,
                 "loudness_lufs": round(v, 2) if np.isfinite(v) else None} for k, v in loud.items()}
    return round(target, 2), gains


def export(results: Path, dest: Path, *, systems: list[str] | None = None, n: int = 10, seed: int = 0,
           level: float = LEVEL_LUFS) -> dict:
    """Write the listening test of ``results`` into ``dest`` (see the module docstring); returns its spec (what
    ``test.json`` holds). Existing ratings in ``dest/ratings`` are kept; the audio is rewritten."""
    import soundfile as sf

    results, dest = Path(results), Path(dest)
    tasks, stored = _stored_systems(results)
    index = store.AudioIndex(results, tasks)
    if not index.dirs:
        raise ValueError(f"{results}: no stored audio (audio/<task>/<example>/); run with run.audio_examples > 0")
    if not stored:  # no scores: the output files' names are the systems
        stored = sorted({k for t in index.dirs for e in index.examples(t) for k in index.clips(t, e)}
                        - set(store.CLIPS))
    if systems:
        unknown = [s for s in systems if s not in stored]
        if unknown:
            raise ValueError(f"--systems: {', '.join(unknown)} not in {results}; stored: {', '.join(stored)}")
    systems = list(systems) if systems else _default_systems(stored)
    if not systems:
        raise ValueError(f"{results}: no system to test (stored: {', '.join(stored) or 'none'})")
    eligible = eligible_examples(index, systems)
    if not eligible:
        raise ValueError(f"{results}: no stored example has the input, reference, target and the output of every "
                         f"system of {', '.join(systems)}; choose others with --systems")
    picked = pick_examples(eligible, n, seed)
    rng = np.random.default_rng([seed, 1])
    shutil.rmtree(dest / "audio", ignore_errors=True)
    trials = []
    for i, (task, ex) in enumerate(picked, start=1):
        files = index.clips(task, ex)
        conds = [(HIDDEN, "target", "target"), (ANCHOR, "bypass", "input")]
        conds += [(SYSTEM, s, store.slug(s)) for s in systems]
        keys = ["reference", *(k for _, _, k in conds)]
        data, sr = {}, 0
        for k in keys:
            x, rate = sf.read(str(files[k]), dtype="float64", always_2d=True)
            if sr and rate != sr:
                raise ValueError(f"{files[k]}: {rate} Hz, but the other clips of {task} #{ex} are {sr} Hz")
            sr, data[k] = rate, x
        level_t, gains = trial_gains(data, sr, level)
        tid = f"t{i:02d}"
        names = [f"c{j + 1}" for j in rng.permutation(len(conds))]  # file names that do not give it away
        (dest / "audio" / tid).mkdir(parents=True, exist_ok=True)

        clip = {}
        for key, name in [("reference", "reference"), *((k, nm) for (_, _, k), nm in zip(conds, names,
                                                                                        strict=True))]:
            src = f"audio/{tid}/{name}.wav"
            y = np.clip(data[key] * 10 ** (gains[key]["gain_db"] / 20), -1, 1)
            sf.write(str(dest / src), y, sr, subtype="PCM_16")
            clip[key] = {"src": src, **gains[key]}
        meta = index.meta(task, ex)
        trials.append({"id": tid, "task": task, "example": ex, "effect": meta.get("effect", ""),
                       "corpus": meta.get("corpus", ""), "sample_rate": sr, "level_lufs": level_t,
                       "reference": clip["reference"],
                       "conditions": [{"id": name, "condition": kind, "system": system, **clip[key]}
                                      for (kind, system, key), name in zip(conds, names, strict=True)]})
    spec = {"format": FORMAT, "method": "MUSHRA (ITU-R BS.1534-3)", "title": f"Listening test: {results.name}",
            "results": results.name, "seed": seed, "level_lufs": level, "systems": systems,
            "scale": [[lo, name] for lo, name in SCALE], "trials": trials}
    spec["test_id"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    text = json.dumps(spec, indent=1)
    (dest / "test.json").write_text(text + "\n")
    (dest / "trials.js").write_text("// generated by `afx-bench listen export`: the trial list (also test.json)\n"
                                    f"window.AFX_LISTEN = {text};\n")
    assets = Path(__file__).parent / "templates" / "listen"
    for name in ASSETS:
        shutil.copyfile(assets / name, dest / name)
    (dest / "ratings").mkdir(exist_ok=True)
    (dest / "ratings" / "README.txt").write_text(
        "Put the CSV files the listeners saved (ratings-<listener>-*.csv) here, then run\n"
        "  afx-bench listen analyze ratings/*.csv --results <results dir>\n")
    return spec


# --- ratings and post-screening ---------------------------------------------------------------------------------
def read_ratings(paths: list[Path]) -> pd.DataFrame:
    """The rows of every CSV; a listener's later row for one trial and condition replaces an earlier one (a file
    saved twice, or a session saved part way and again at the end)."""
    parts = []
    for p in paths:
        df = pd.read_csv(p, dtype={"listener": str, "trial": str, "task": str, "condition": str, "system": str})
        missing = [c for c in ("listener", "trial", "condition", "system", "rating") if c not in df.columns]
        if missing:
            raise ValueError(f"{p}: not a ratings file of `afx-bench listen` (no column {', '.join(missing)})")
        parts.append(df.assign(file=Path(p).name))
    if not parts:
        raise ValueError("no ratings files")
    df = pd.concat(parts, ignore_index=True)
    df["rating"] = pd.to_numeric(df["rating"], errors="coerce")
    bad = df[(df["rating"] < 0) | (df["rating"] > 100)]
    if len(bad):
        raise ValueError(f"{bad['file'].iloc[0]}: rating {bad['rating'].iloc[0]} outside 0-100")
    df["listener"] = df["listener"].astype(str).str.strip()
    if "timestamp" in df.columns:
        df = df.sort_values("timestamp", kind="stable")
    return df.drop_duplicates(["listener", "trial", "condition", "system"], keep="last").reset_index(drop=True)


def screen(ratings: pd.DataFrame) -> pd.DataFrame:
    """BS.1534-3 post-screening, per listener: ``trials`` (those with a hidden-reference rating), ``below``
    (rated it below :data:`SCREEN_BELOW`), ``share``, ``excluded`` and ``reason``. Excluded: ``below`` is more
    than :data:`SCREEN_PERCENT` % of ``trials`` (exactly 15 % stays), or no hidden-reference rating at all (the
    rule cannot be applied, so the listener is not trusted)."""
    rows = []
    for listener, g in ratings.groupby("listener", sort=True):
        h = g[(g["condition"] == HIDDEN) & g["rating"].notna()]
        trials, below = int(h["trial"].nunique()), int((h.groupby("trial")["rating"].last() < SCREEN_BELOW).sum())
        if trials == 0:
            excluded, reason = True, "no hidden-reference rating: cannot be screened"
        elif below * 100 > SCREEN_PERCENT * trials:  # integers: exactly 15 % is not "more than"
            excluded, reason = True, f"hidden reference below {SCREEN_BELOW} in {below} of {trials} trials"
        else:
            excluded, reason = False, ""
        rows.append({"listener": listener, "trials": trials, "below": below,
                     "share": below / trials if trials else math.nan, "excluded": excluded, "reason": reason})
    return pd.DataFrame(rows, columns=["listener", "trials", "below", "share", "excluded", "reason"])


# --- analysis ---------------------------------------------------------------------------------------------------
def bootstrap_ci(values, *, n_resamples: int = N_RESAMPLES, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per listener), listeners drawn with
    replacement. Fewer than 2 values: (NaN, NaN)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or n_resamples <= 0:
        return math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_resamples, v.size))
    means = v[idx].mean(axis=1)
    a = (1 - confidence) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


@dataclass
class Analysis:
    table: pd.DataFrame  # one row per condition (hidden reference, systems, anchor), tests against the focus
    screening: pd.DataFrame
    focus: str | None
    n_trials: int
    n_resamples: int
    notes: list[str] = field(default_factory=list)

    @property
    def n_listeners(self) -> int:
        return len(self.screening)

    @property
    def n_excluded(self) -> int:
        return int(self.screening["excluded"].sum()) if len(self.screening) else 0


TABLE_COLUMNS = ["system", "condition", "mean", "ci_low", "ci_high", "median", "n_listeners", "n_ratings", "vs",
                 "n_pairs", "mean_diff", "statistic", "p", "p_holm", "rank_biserial", "verdict"]


def condition_label(condition: str, system: str) -> str:
    if condition == HIDDEN:
        return "hidden reference (target)"
    if condition == ANCHOR:
        return "anchor (bypass: the input)"
    return system_label(system)


def analyse(ratings: pd.DataFrame, *, focus: str | None = None, n_resamples: int = N_RESAMPLES,
            seed: int = 0) -> Analysis:
    """Screen, then per condition the mean of the kept listeners' mean ratings with its bootstrap interval, and
    the paired tests of ``focus`` (default: :func:`reports.results.pick_focus` of the rated systems) against
    every other condition on listener means, Holm-adjusted over those comparisons."""
    scr = screen(ratings)
    kept = set(scr.loc[~scr["excluded"], "listener"])
    r = ratings[ratings["listener"].isin(kept) & ratings["rating"].notna()]
    notes = []
    if r.empty:
        notes.append(f"All {len(scr)} listeners were excluded by the post-screening: no ratings remain."
                     if len(scr) else "No ratings.")
        return Analysis(pd.DataFrame(columns=TABLE_COLUMNS), scr, None, 0, n_resamples, notes)
    means = r.groupby(["condition", "system", "listener"])["rating"].mean().unstack("listener")
    systems = sorted(s for c, s in means.index if c == SYSTEM)
    if focus is not None and focus not in systems:
        raise ValueError(f"--focus {focus}: not a rated system ({', '.join(systems) or 'none'})")
    focus = focus or pick_focus(systems)
    rank = {HIDDEN: 0, SYSTEM: 1, ANCHOR: 2}  # then the focus system first, the others by name
    order = sorted(means.index, key=lambda k: (rank.get(k[0], 3), k[1] != focus, k[1]))
    rows = []
    for c, s in order:
        lm = means.loc[(c, s)]
        lo, hi = bootstrap_ci(lm.to_numpy(), n_resamples=n_resamples, seed=seed)
        n_r = int(((r["condition"] == c) & (r["system"] == s)).sum())
        row = dict.fromkeys(TABLE_COLUMNS, math.nan) | {
            "system": s, "condition": c, "mean": float(lm.mean()), "ci_low": lo, "ci_high": hi,
            "median": float(lm.median()), "n_listeners": int(lm.notna().sum()), "n_ratings": n_r, "vs": "",
            "verdict": ""}
        if focus is not None and not (c == SYSTEM and s == focus):
            t = paired_test(means.loc[(SYSTEM, focus)].to_numpy(), lm.to_numpy(), higher_is_better=True)
            row |= {"vs": focus, "n_pairs": t.n, "mean_diff": t.mean_diff, "statistic": t.statistic, "p": t.p,
                    "rank_biserial": t.rank_biserial}
        rows.append(row)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    if len(table):
        table["p_holm"] = holm(table["p"].to_numpy())
        table["verdict"] = [_verdict(row) for row in table.itertuples()]
    n_trials = int(r["trial"].nunique())
    return Analysis(table, scr, focus, n_trials, n_resamples, notes)


def _verdict(row) -> str:
    if not row.vs:
        return ""
    if not np.isfinite(row.p_holm):
        return "n/a"
    if row.p_holm < ALPHA:
        return "better" if row.mean_diff > 0 else "worse"
    return "n.s."


def power_note(a: Analysis) -> str:
    tested = a.table[a.table["vs"] != ""] if len(a.table) else a.table
    m = int(np.isfinite(tested["p"]).sum()) if len(tested) else 0
    if not m:
        return ""
    n = int(tested["n_pairs"].max())
    best = min_p(n) * m
    if not np.isfinite(best) or best >= ALPHA:
        return (f"With {n} listeners the smallest possible p is {min_p(n):.3g}, and Holm over {m} comparisons "
                f"multiplies it by {m}: nothing here can be significant, so 'n.s.' says nothing about a "
                "difference.")
    return ""


def summary_text(a: Analysis) -> str:
    n, k = a.n_listeners, a.n_excluded
    rule = (f"post-screening (ITU-R BS.1534-3: a listener who rates the hidden reference below {SCREEN_BELOW} in "
            f"more than {SCREEN_PERCENT} % of trials is excluded)")
    if n == 0:
        return "No ratings."
    who = a.screening[a.screening["excluded"]]
    detail = "; ".join(f"{row.listener} ({row.reason})" for row in who.itertuples())
    text = f"{n} listener{'s' if n != 1 else ''} took part; the {rule} excluded {k} of {n}" + (
        f": {detail}." if k else ".")
    if k < n:
        text += (f" The numbers below are from the {n - k} remaining listener{'s' if n - k != 1 else ''} and "
                 f"{a.n_trials} trial{'s' if a.n_trials != 1 else ''}.")
    return text


def _fmt(v, spec=".1f") -> str:
    return "n/a" if v is None or not np.isfinite(v) else format(v, spec)


def _fmt_p(v) -> str:
    return "n/a" if not np.isfinite(v) else ("<0.001" if v < 0.001 else f"{v:.3f}")


def markdown(a: Analysis) -> str:
    out = ["## Listening test (MUSHRA, ITU-R BS.1534-3)", "", summary_text(a), ""] + [n for n in a.notes] + [""]
    if len(a.table):
        out += ["Ratings 0-100 (bad 0-20, poor 20-40, fair 40-60, good 60-80, excellent 80-100). Each condition: "
                "the mean over listeners of each listener's mean rating, with a 95 % percentile bootstrap "
                f"interval over listeners ({a.n_resamples} resamples; none with fewer than 2 listeners).", "",
                "| condition | mean | 95 % CI | median | listeners | ratings |", "|---|---|---|---|---|---|"]
        for row in a.table.itertuples():
            ci = f"[{_fmt(row.ci_low)}, {_fmt(row.ci_high)}]" if np.isfinite(row.ci_low) else "n/a"
            out.append(f"| {condition_label(row.condition, row.system)} | {_fmt(row.mean)} | {ci} | "
                       f"{_fmt(row.median)} | {row.n_listeners} | {row.n_ratings} |")
        tested = a.table[a.table["vs"] != ""]
        if a.focus and len(tested):
            out += ["", f"### Paired tests: {a.focus} against each condition", "",
                    "Two-sided Wilcoxon signed-rank test on listener means (pairs: the listeners who rated both), "
                    f"p Holm-adjusted over the {len(tested)} comparisons; r: matched-pairs rank-biserial "
                    f"correlation; mean diff and r > 0 favour {a.focus}. Better/worse: adjusted p < {ALPHA}.", "",
                    "| vs | listeners | mean diff | W | p | p (Holm) | r | verdict |", "|---|---|---|---|---|---|---|---|"]
            for row in tested.itertuples():
                out.append(f"| {condition_label(row.condition, row.system)} | {_fmt(row.n_pairs, '.0f')} | "
                           f"{_fmt(row.mean_diff)} | {_fmt(row.statistic)} | {_fmt_p(row.p)} | "
                           f"{_fmt_p(row.p_holm)} | {_fmt(row.rank_biserial, '.2f')} | {row.verdict} |")
            if power_note(a):
                out += ["", power_note(a)]
    if len(a.screening):
        out += ["", "### Post-screening", "", f"| listener | trials | hidden reference < {SCREEN_BELOW} | share | "
                "excluded |", "|---|---|---|---|---|"]
        for row in a.screening.itertuples():
            out.append(f"| {row.listener} | {row.trials} | {row.below} | {_fmt(100 * row.share, '.0f')} % | "
                       f"{'yes: ' + row.reason if row.excluded else 'no'} |")
    return "\n".join(out) + "\n"


def write_analysis(a: Analysis, dest: Path) -> list[Path]:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    a.table.to_csv(dest / "listening.csv", index=False)
    a.screening.to_csv(dest / "screening.csv", index=False)
    (dest / "listening.md").write_text(markdown(a))
    info = {"focus": a.focus, "listeners": a.n_listeners, "excluded": a.n_excluded, "trials": a.n_trials,
            "n_resamples": a.n_resamples, "summary": summary_text(a), "notes": a.notes, "power_note": power_note(a),
            "rule": {"below": SCREEN_BELOW, "percent": SCREEN_PERCENT}}
    (dest / "listening.json").write_text(json.dumps(info, indent=1) + "\n")
    return [dest / f for f in FILES]


def copy_to_results(src: Path, results: Path) -> Path:
    dst = Path(results) / LISTENING_DIR
    dst.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        if (Path(src) / f).is_file():
            shutil.copy2(Path(src) / f, dst / f)
    return dst


# --- the report's section -----------------------------------------------------------------------------------------
def report_section(out: Path, report_dir: Path) -> dict | None:
    """The listening section of the report from ``<out>/listening/`` (None without ``listening.csv``): copies
    its files into ``<report>/listening/`` and appends its Markdown to ``<report>/tables.md``."""
    src = Path(out) / LISTENING_DIR
    if not (src / "listening.csv").is_file():
        return None
    dst = Path(report_dir) / LISTENING_DIR
    dst.mkdir(parents=True, exist_ok=True)
    files = {}
    for f in FILES:
        if (src / f).is_file():
            shutil.copy2(src / f, dst / f)
            files[f] = f"{LISTENING_DIR}/{f}"
    try:
        table = pd.read_csv(src / "listening.csv", dtype={"vs": str, "verdict": str}).fillna({"vs": "",
                                                                                                "verdict": ""})
    except pd.errors.EmptyDataError:
        table = pd.DataFrame(columns=TABLE_COLUMNS)
    try:
        info = json.loads((src / "listening.json").read_text())
    except (OSError, ValueError):
        info = {}
    md = (src / "listening.md").read_text() if (src / "listening.md").is_file() else ""
    tables_md = Path(report_dir) / "tables.md"
    if md and tables_md.is_file():
        tables_md.write_text(tables_md.read_text().rstrip("\n") + "\n\n" + md)
    rows = [{"label": condition_label(r.condition, r.system), "kind": r.condition, "mean": _fmt(r.mean),
             "ci": f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]" if np.isfinite(r.ci_low) else "n/a",
             "median": _fmt(r.median), "listeners": int(r.n_listeners), "ratings": int(r.n_ratings),
             "vs": r.vs, "n_pairs": _fmt(r.n_pairs, ".0f"), "mean_diff": _fmt(r.mean_diff),
             "statistic": _fmt(r.statistic), "p": _fmt_p(r.p), "p_holm": _fmt_p(r.p_holm),
             "r": _fmt(r.rank_biserial, ".2f"), "verdict": r.verdict} for r in table.itertuples()]
    return {"rows": rows, "tested": [r for r in rows if r["vs"]], "focus": info.get("focus"),
            "summary": info.get("summary", ""), "notes": info.get("notes", []),
            "power_note": info.get("power_note", ""), "n_resamples": info.get("n_resamples", N_RESAMPLES),
            "files": files, "below": SCREEN_BELOW, "percent": SCREEN_PERCENT, "alpha": ALPHA}
