"""Numbers that regenerate: ``afx-bench report --docs NAME --out DIR`` copies a run's ``summary.csv`` and
``primary.csv`` (and ``budgets.csv``, ``config.json``) to ``docs/results/NAME/``, states where they came from in
``SOURCE.md``, and writes ``tables.md`` from the copied CSVs alone, opening with the primary table. :func:`check` regenerates ``tables.md`` from the CSV and compares
(tests/test_report.py does so for every folder under docs/results/), so a number in the docs is always one that
the stored CSV gives.

The tables: per main metric (a base name, not a cost counter), rows = tasks (effect x corpus), columns = systems;
each cell the mean over seeds and examples with its 95% hierarchical bootstrap interval from ``summary.csv``, the
row's n and sources, each system's seeds in its header; then the budget table (:mod:`reports.budgets`).
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bench.results import BUDGETS_FILE, CONFIG_FILE, SCORES_FILE, SUMMARY_COLUMNS, SUMMARY_FILE
from bench.stats import N_RESAMPLES, main_metric
from reports import budgets as B
from reports import latent as Lt
from reports import primary as P
from reports import stats as S
from reports.results import FLOOR_SYSTEMS, SET_ORDER, ReportError, is_ranked, system_label

ROOT = Path(__file__).resolve().parents[1] / "docs" / "results"
TABLES, SOURCE = "tables.md", "SOURCE.md"
PREFERRED = ["param_mae", "mrstft", "mfcc_dist", "mel_dist", "ac_mean", "loudness", "rms_err", "crest_err",
             "centroid_err", "pesq"]  # reports.build's order of the headline metrics
MISSING = "—"


def write_docs(out: Path, name: str, *, root: Path | None = None, command: str | None = None) -> Path:
    """Copy run ``out``'s tables to ``root/name/`` (default: the repository's docs/results) and generate
    ``tables.md``; returns that folder."""
    out = Path(out)
    root = ROOT if root is None else Path(root)
    if not name or "/" in name or name.startswith("."):
        raise ReportError(f"--docs {name!r}: give a plain folder name (e.g. quick)")
    summary, recomputed = run_summary(out)
    dest = root / name
    dest.mkdir(parents=True, exist_ok=True)
    if recomputed:
        summary.to_csv(dest / SUMMARY_FILE, index=False)
    else:
        shutil.copyfile(out / SUMMARY_FILE, dest / SUMMARY_FILE)
    primary = _primary(out)
    if primary is not None:
        primary.to_csv(dest / P.PRIMARY_FILE, index=False)
    else:
        (dest / P.PRIMARY_FILE).unlink(missing_ok=True)  # a stale copy from an earlier run
    for f in (BUDGETS_FILE, CONFIG_FILE):
        if (out / f).is_file():
            shutil.copyfile(out / f, dest / f)
        else:
            (dest / f).unlink(missing_ok=True)  # a stale copy from an earlier run
    _copy_latent(out, dest)
    config = _config(dest)
    (dest / SOURCE).write_text(source_md(out, name, config, command, recomputed), encoding="utf-8")
    (dest / TABLES).write_text(render(dest), encoding="utf-8")
    return dest


def _copy_latent(out: Path, dest: Path) -> None:
    """The latent study's summaries and axes (not the raw probes or figures) to ``dest/latent/``, replacing any
    earlier copy."""
    src, to = Path(out) / "latent", dest / "latent"
    shutil.rmtree(to, ignore_errors=True)
    files = [p for k in (Lt.SUMMARY, Lt.AXES) for p in sorted(src.glob(f"*{k}"))] if src.is_dir() else []
    for p in files:
        to.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, to / p.name)


def run_summary(out: Path) -> tuple[pd.DataFrame, bool]:
    """The run's summary.csv; one written before the interval columns existed is recomputed from scores.parquet
    with :func:`bench.stats.summarise` (SOURCE.md says so)."""
    p = out / SUMMARY_FILE
    if p.is_file():
        df = pd.read_csv(p)
        if all(c in df.columns for c in SUMMARY_COLUMNS):
            return df, False
    scores = out / SCORES_FILE
    if not scores.is_file():
        raise ReportError(f"{p}: no summary (and no {SCORES_FILE} to compute it from); run "
                          f"`afx-bench run --out {out}` first")
    from bench.results import summarise

    return summarise(pd.read_parquet(scores)), True


def _primary(out: Path) -> pd.DataFrame | None:
    """The run's primary table: its ``primary.csv`` (written with the report), else computed from its scores;
    None for a results directory without scores."""
    try:
        return P.load(out)[0]
    except ReportError:
        return None


def _config(d: Path) -> dict:
    try:
        return json.loads((d / CONFIG_FILE).read_text()) if (d / CONFIG_FILE).is_file() else {}
    except (OSError, ValueError):
        return {}


def _git(*args: str) -> str:
    try:
        res = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                             text=True, timeout=20)
        return res.stdout.strip() if res.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def source_md(out: Path, name: str, config: dict, command: str | None, recomputed: bool) -> str:
    commit = _git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    # this command's own output (docs/results/<name>, tracked) is not a change to the code that made the numbers
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude)docs/results/{name}"))
    run = config.get("run", {}) if config else {}
    seeds = run.get("seeds", run.get("seed", "not recorded"))
    cmd = command or f"afx-bench report --docs {shlex.quote(name)} --out {shlex.quote(str(out))}"
    wall, machine, shas = run_record(out)
    made = ", ".join(f"`{sha}`" for sha in shas) if shas else "not recorded (no git_sha tag in mlflow.db)"
    lines = [f"# docs/results/{name}: where these numbers come from", "",
             f"- results directory: `{out}`",
             f"- preset: `{config.get('preset', 'not recorded')}`" if config else "- preset: not recorded "
             "(no config.json)",
             f"- seeds: `{seeds}`",
             f"- commit that made the numbers: {made} (the run's `git_sha` tag"
             + (", one per invocation)" if len(shas) > 1 else ")"),
             f"- commit: `{commit}`" + (" (with uncommitted changes to tracked files)" if dirty else "")
             + " (the checkout that wrote this folder)",
             f"- wall time: {wall}", f"- machine: {machine}",
             f"- copied and generated by: `{cmd}`", "",
             f"`{SUMMARY_FILE}` is the run's own table"
             + (f" (recomputed from its {SCORES_FILE}: the run's summary predates the interval columns)"
                if recomputed else "") + f"; `{TABLES}` is generated from it (and from `{BUDGETS_FILE}` when "
             "present) by `reports/docs.py`, and tests/test_report.py checks that regenerating it gives the same "
             f"text. `{P.PRIMARY_FILE}` is the run's primary table (written with its report from its "
             f"{SCORES_FILE}, or computed from it by this command); `{TABLES}` opens with it. Edit none by hand: "
             "rerun the command.", ""]
    return "\n".join(lines)


def run_record(out: Path) -> tuple[str, str, list[str]]:
    """(wall time, machine, commits) of a run from its MLflow store: the benchmark runs' durations summed (a
    resumed run has one per invocation), the newest one's environment.json and the commits its invocations were
    tagged with (``git_sha``, oldest first, each once); "not recorded" when the store cannot say."""
    from reports.mlflow_info import read_store

    try:
        info = read_store(out)
    except Exception as e:  # an unreadable store costs these lines, not the docs
        return f"not recorded ({type(e).__name__})", "not recorded", []
    by_start = sorted(info.get("benchmark", []), key=lambda r: r.get("start") or 0)
    shas = list(dict.fromkeys(r["git_sha"] for r in by_start if r.get("git_sha")))
    runs = [r for r in info.get("benchmark", []) if r.get("start") and r.get("end")]
    wall = "not recorded (no finished benchmark run in mlflow.db)"
    if runs:
        sec = sum(r["end"] - r["start"] for r in runs) / 1000
        wall = f"{int(sec // 60)} min {sec % 60:.0f} s" + (f" over {len(runs)} invocations" if len(runs) > 1 else "")
    env = (info.get("environment") or {}).get("data") or {}
    machine = ", ".join(str(x) for x in (env.get("platform"), env.get("machine"),
                                          f"{env['cpus']} CPUs" if env.get("cpus") else None,
                                          f"device {env['device']}" if env.get("device") else None,
                                          env.get("gpu")) if x) or "not recorded"
    return wall, machine, shas


# --- tables.md from the CSV ---------------------------------------------------------------------------------
def render(d: Path) -> str:
    """``tables.md`` of docs folder ``d``, from its summary.csv, budgets.csv and config.json alone."""
    d = Path(d)
    summary = pd.read_csv(d / SUMMARY_FILE)
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ReportError(f"{d / SUMMARY_FILE}: missing columns {missing}")
    config = _config(d)
    budgets = B.read_budgets(d)
    primary = P.read(d / P.PRIMARY_FILE) if (d / P.PRIMARY_FILE).is_file() else None
    text = tables_md(summary, budgets, config, d.name, primary)
    latent = Lt.read_section(d / "latent", []) if (d / "latent").is_dir() else None
    return text if latent is None else text.rstrip("\n") + "\n\n" + Lt.to_markdown(latent) + "\n"


def check(d: Path) -> str:
    """'' when ``d/tables.md`` is what its CSV regenerates; else a short account of the first difference."""
    have = (Path(d) / TABLES).read_text(encoding="utf-8")
    want = render(d)
    if have == want:
        return ""
    for i, (a, b) in enumerate(zip(have.splitlines(), want.splitlines(), strict=False)):
        if a != b:
            return f"{d / TABLES}, line {i + 1}: stored {a!r}, regenerated {b!r}"
    return f"{d / TABLES}: stored {len(have)} characters, regenerated {len(want)}"


def _systems(summary: pd.DataFrame, config: dict) -> list[str]:
    order = list((config.get("systems") or {}).get("include", [])) if config else []
    seen = list(dict.fromkeys(summary["system"].astype(str)))
    return [s for s in order if s in seen] + [s for s in seen if s not in order]


def _metrics(summary: pd.DataFrame) -> list[str]:
    ms = [m for m in dict.fromkeys(summary["metric"].astype(str)) if main_metric(m) and not m.startswith("cost")]
    return [m for m in PREFERRED if m in ms] + [m for m in ms if m not in PREFERRED]


def _rows(summary: pd.DataFrame, config: dict) -> list[tuple]:
    eff = config.get("effects", {}) if config else {}
    cfg = [*eff.get("seen", []), *eff.get("unseen", []), *eff.get("wild", [])]
    keys = summary[["effect", "effect_set", "corpus", "corpus_set", "split"]].drop_duplicates()
    keys = [tuple(map(str, k)) for k in keys.to_numpy()]
    rank = {e: i for i, e in enumerate(cfg)}
    return sorted(keys, key=lambda k: (SET_ORDER.get(k[1], 9), rank.get(k[0], 99), k[0], SET_ORDER.get(k[3], 9),
                                       k[2], k[4]))


def _mode(v: list) -> float:
    return max(set(v), key=lambda k: (v.count(k), k))


def _examples(c) -> float:
    """Examples behind a summary row: its values per seed (n counts every seed's value)."""
    k = int(c.n_seeds)
    return float(c.n) / k if k > 0 else float(c.n)


def _num(x: float) -> str:
    return f"{x:.0f}" if x == round(x) else f"{x:.1f}"


def metric_table(summary: pd.DataFrame, metric: str, systems: list[str], rows: list[tuple],
                 seeds: dict[str, int]) -> str:
    """One metric's table: rows = tasks with a value for some system, columns = systems (``seeds``: each system's
    seeds over the whole run, for its header)."""
    how = S.direction(metric)
    sub = summary[summary["metric"] == metric]
    cell = {(str(r.system), (str(r.effect), str(r.effect_set), str(r.corpus), str(r.corpus_set), str(r.split))): r
            for r in sub.itertuples(index=False)}
    shown = [s for s in systems if any((s, k) in cell for k in rows)]
    rows = [k for k in rows if any((s, k) in cell and cell[(s, k)].n > 0 for s in shown)]
    ok = [c for c in cell.values() if c.n > 0 and np.isfinite(c.mean)]
    if not ok:
        return ""
    means = [abs(c.mean) for c in ok if c.mean != 0]
    dec = int(np.clip(2 - math.floor(math.log10(float(np.median(means)))), 0, 6)) if means else 3
    head = ["effect", "corpus", "n", "sources"] + [f"{system_label(s)} ({seeds[s]} seed{'s' * (seeds[s] != 1)})"
                                                   for s in shown]
    lines = [f"### {metric} ({_direction_text(how)})", "", "| " + " | ".join(head) + " |",
             "|---|---|---:|---:|" + "|".join([":---:"] * len(shown)) + "|"]
    for k in rows:
        here = [cell[(s, k)] for s in shown if (s, k) in cell and cell[(s, k)].n > 0]
        n = _mode([_examples(c) for c in here]) if here else 0
        src = _mode([int(c.n_sources) for c in here]) if here else 0
        ranked = [cell[(s, k)].mean for s in shown if (s, k) in cell and is_ranked(s) and cell[(s, k)].n > 0]
        best = S.best_value(ranked, how) if len(ranked) >= 2 else math.nan
        out = []
        for s in shown:
            c = cell.get((s, k))
            if c is None:
                out.append(MISSING)
                continue
            if c.n == 0 or not np.isfinite(c.mean):
                out.append("n/a")
                continue
            txt = f"{c.mean:.{dec}f}"
            if np.isfinite(c.ci_low) and np.isfinite(c.ci_high):
                txt += f" [{c.ci_low:.{dec}f}, {c.ci_high:.{dec}f}]"
            note = [f"n={_num(_examples(c))}" if _examples(c) != n else "",
                    f"{int(c.n_sources)} source{'s' * (int(c.n_sources) != 1)}" if int(c.n_sources) != src else "",
                    f"{int(c.n_seeds)} seed{'s' * (int(c.n_seeds) != 1)}" if int(c.n_seeds) != seeds[s] else ""]
            note = ", ".join(x for x in note if x)
            if note:
                txt += f" ({note})"
            out.append(f"**{txt}**" if is_ranked(s) and c.mean == best else txt)
        effect, eset, corpus, cset, split = k
        split_txt = "" if split == "test" else f", {split}"
        lines.append(f"| {effect} ({eset}) | {corpus} ({cset}{split_txt}) | {_num(n)} | {src} | " + " | ".join(out)
                     + " |")
    return "\n".join(lines) + "\n"


def _direction_text(how: str) -> str:
    return {"lower": "lower is better", "higher": "higher is better", "signed": "signed difference, 0 is best"}[how]


def tables_md(summary: pd.DataFrame, budgets: pd.DataFrame | None, config: dict, name: str,
              primary: pd.DataFrame | None = None) -> str:
    systems = _systems(summary, config)
    rows = _rows(summary, config)
    preset = config.get("preset", "") if config else ""
    floors = ", ".join(s for s in FLOOR_SYSTEMS if s in systems) or "none in this run"
    source = f"`{SUMMARY_FILE}`" + (f" and `{P.PRIMARY_FILE}`" if primary is not None else "")
    parts = [f"# {name}: main results", "",
             f"Generated by `reports/docs.py` from {source} in this folder"
             + (f" (preset `{preset}`)" if preset else "") + f"; see `{SOURCE}` for the command, seeds and commit. "
             "Do not edit by hand.", "",
             *([P.markdown(primary, config), "## Every task (means and intervals)", ""] if primary is not None
               else []),
             "Each cell: the mean over seeds and examples, with its 95% hierarchical bootstrap confidence interval "
             f"(percentile method, {N_RESAMPLES} resamples, fixed seed; each resample draws the seeds, then the "
             "sources, then the examples within each drawn source, so the interval includes seed and source "
             "variance). n = examples (values per seed), sources = the sources they were cut from (a cell that "
             "differs says so); "
             "a system's seeds are in its column header (1 for a system that is not trained). No interval: fewer "
             "than 2 sources. Bold: best mean in the row among ranked systems (not the oracle, not a labelled "
             "variant). n/a: not applicable; —: no result.", "",
             f"Floors in this run: {floors}. A learned system must beat bypass, random, mean and constant before it "
             "may claim to read the reference; the oracle (true settings) is the ceiling.", ""]
    seeds = summary.groupby("system")["n_seeds"].max().astype(int).to_dict()
    for m in _metrics(summary):
        t = metric_table(summary, m, systems, rows, seeds)
        if t:
            parts += [t]
    b = B.budget_table(systems, budgets, B.inference_from_summary(summary), config)
    parts += ["## Budgets", "", B.to_markdown(b)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m reports.docs NAME RESULTS_DIR", file=sys.stderr)
        return 2
    print(write_docs(Path(argv[1]), argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
