"""Build ``<out>/report/`` from a results directory: tables (Markdown, LaTeX, CSV), figures (PNG, PDF), audio
examples (WAV) and ``report.html``, which shows all of them with the config, environment, failures and links to
the MLflow runs.

Only stored results are read (scores.parquet, config.json, failures.csv, the MLflow store, and the audio and
parameter estimates described in :mod:`reports.store`): no model, no torch, no GPU. The report is built in a
temporary folder next to the old one and swapped in when complete, so a failed build leaves the last good report.

    afx-bench report --out DIR        (or: python -m reports.build DIR)

``afx-bench report --docs NAME --out DIR`` copies the run's tables to docs/results/NAME/ instead (reports/docs.py).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from reports import ablation as A
from reports import budgets as B
from reports import examples as X
from reports import frontier as Fr
from reports import latent as Lt
from reports import listening as L
from reports import primary as P
from reports import stats as S
from reports import store
from reports import tables as T
from reports import wild as W
from reports.mlflow_info import Reader
from reports.results import Results, is_reference, load_results, system_label

PREFERRED = ["param_mae", "mrstft", "mfcc_dist", "mel_dist", "ac_mean", "loudness", "rms_err", "crest_err",
             "centroid_err", "pesq"]
MAX_MEL_FIGURES = 12  # mel-spectrogram figures (median examples; one task per effect first); ~0.5 s each


def build_report(out: Path, *, n_resamples: int = S.N_RESAMPLES, max_mel: int = MAX_MEL_FIGURES,
                 log=None, before_studies=None) -> Path:
    """Build the report of results directory ``out``; returns ``<out>/report/report.html``. ``before_studies``:
    called (and waited for) before the sections that read the studies' folders, so that the rest of the report
    can be built while a run's studies still go on."""
    t0 = time.perf_counter()
    out = Path(out)
    results = load_results(out)
    reader = Reader(out)  # MLflow is slow to import: read the store in a child process meanwhile
    tmp = out / f".report-build-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        ctx = _build(results, tmp, reader, n_resamples=n_resamples, max_mel=max_mel, before_studies=before_studies)
        ctx["build_seconds"] = time.perf_counter() - t0
        (tmp / "report.html").write_text(render(ctx), encoding="utf-8")
    except BaseException:
        if reader.proc is not None and reader.proc.poll() is None:
            reader.proc.kill()
            reader.proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = out / "report"
    old = out / f".report-old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    if log is not None:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in ctx["timings"].items())
        log(f"report built in {time.perf_counter() - t0:.1f} s ({stages}): {final / 'report.html'}")
    return final / "report.html"


def order_metrics(metrics: list[str]) -> list[str]:
    head = [m for m in PREFERRED if m in metrics]
    rest = [m for m in metrics if m not in head]
    return head + [m for m in rest if not m.startswith("cost/")] + [m for m in rest if m.startswith("cost/")]


def plan_for(metrics: list[str]) -> dict[str, list[str]]:
    plan = {}
    for m in metrics:
        if T.headline(m):
            plan[m] = ["set", "effect"]
        elif m.startswith("param_mae/"):
            plan[m] = ["effect"]  # a parameter belongs to one effect
        else:
            plan[m] = ["set"]
    return plan


class Timer:
    """Wall-clock seconds per build stage, shown at the foot of the page."""

    def __init__(self):
        self.t = time.perf_counter()
        self.stages: dict[str, float] = {}

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.t
        self.t = now


def _build(r: Results, d: Path, reader: Reader, *, n_resamples: int, max_mel: int, before_studies=None) -> dict:
    tick = Timer()
    metrics = order_metrics(r.metrics)
    heads = [m for m in metrics if T.headline(m)]
    stats = T.compute_stats(r, plan_for(metrics), n_resamples=n_resamples)
    set_cols, eff_cols = T.set_columns(r), T.effect_columns(r)
    set_tables = [T.make_table(stats, r, m, "set", set_cols) for m in heads]
    eff_tables = [T.make_table(stats, r, m, "effect", eff_cols) for m in heads]
    tested = [m for m in heads if not m.startswith("cost/")]
    primary = P.compute(r, n_resamples=n_resamples)
    P.write(primary, r.out, d / "tables")  # <out>/primary.csv: the run's headline, beside summary.csv
    sig = T.significance(r, tested)
    summary = T.significance_summary(sig)
    wild = W.build(r, stats, heads)  # None without wild tasks: no section
    budgets = B.budget_table(r.systems, B.read_budgets(r.out), B.inference_from_scores(r.scores), r.config)
    files = write_tables(d, r, stats, set_tables, eff_tables, sig, summary, tested, n_resamples, wild, budgets,
                         primary.table)
    frontier = Fr.build(r, B.read_budgets(r.out), n_resamples=n_resamples)  # None: no system searches
    if frontier is not None:
        files.update(Fr.write(frontier, d))
        with open(d / "tables.md", "a") as fh:
            fh.write("\n" + Fr.markdown(frontier))
    ablation = A.build(r, n_resamples=n_resamples)  # None without ablation variants: no section
    if ablation is not None:
        files.update(A.write(ablation, d))
    tick("tables and tests")
    try:
        params = store.load_params(r.out)
    except Exception:  # unreadable estimates cost the scatter plot, not the report
        params = pd.DataFrame(columns=store.PARAM_COLUMNS)
    figures, audio, mel = _figures(r, d, stats, heads, set_cols, params, max_mel, tick, wild, frontier)
    if before_studies is not None:
        before_studies()
        tick("waiting for the run's studies")
    latent = Lt.build(r.out, d)  # <out>/latent/ (a latent study); None without one: no section
    listening = L.report_section(r.out, d)  # <out>/listening/ (afx-bench listen analyze); None: a one-line note
    mlflow = reader.result()
    tick("MLflow store (waiting)")
    return {
        "title": _title(r), "built": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "out": str(r.out.resolve()), "n_rows": len(r.scores), "focus": r.focus,
        "references": [s for s in r.systems if is_reference(s)], "systems": r.systems, "wild": wild,
        "primary": P.section(primary.table, r.config),
        "tasks": r.tasks, "set_tables": set_tables, "eff_tables": eff_tables, "sig": sig, "summary": summary,
        "sig_by_metric": {m: sig[sig["metric"] == m] for m in tested if (sig["metric"] == m).any()},
        "power_notes": {m: T.exploratory_note(sig, m) for m in tested}, "floor_note": T.FLOOR_NOTE,
        "budgets": budgets, "budget_columns": B.COLUMNS, "frontier": frontier,
        "stat_note": T.stat_note(n_resamples), "figures": figures, "audio": audio, "mel": mel,
        "listening": listening,
        "latent": latent, "failures": _failures(r), "config": json.dumps(r.config, indent=1) if r.config else "",
        "mlflow": mlflow, "cell_runs": _cell_runs(r, mlflow), "environment": _environment(mlflow),
        "files": files, "params_saved": bool(len(params)), "n_resamples": n_resamples,
        "n_examples": r.scores.groupby(["system", "task"])["example"].nunique().max() if len(r.scores) else 0,
        "fmt_p": T._sig_fmt, "timings": tick.stages,
        "wild_no_oracle": W.NO_ORACLE, "wild_focus": W.FOCUS, "wild_alpha": W.ALPHA,
        "ablation": ablation, "ablation_html": _markup(A.to_html(ablation)) if ablation is not None else "",
    }


def _markup(text: str):
    from markupsafe import Markup

    return Markup(text)  # built with html.escape in reports/ablation.py


def _title(r: Results) -> str:
    preset = r.config.get("preset", "") if r.config else ""
    return f"afx-bench report: {preset + ' preset, ' if preset else ''}{r.out.resolve().name}"


# --- tables -------------------------------------------------------------------------------------------------
def write_tables(d: Path, r: Results, stats, set_tables, eff_tables, sig, summary, tested, n_resamples,
                 wild: W.Section | None = None, budgets: B.Budgets | None = None,
                 primary: pd.DataFrame | None = None) -> dict:
    td = d / "tables"
    td.mkdir(parents=True, exist_ok=True)
    stats.to_csv(td / "stats.csv", index=False)
    sig.to_csv(td / "significance.csv", index=False)
    summary.to_csv(td / "significance_summary.csv", index=False)
    md = [f"# {_title(r)}", ""]
    tex_parts = []
    if primary is not None:
        md.append(P.markdown(primary, r.config))
        tex = P.latex(primary, r.config)
        (td / "primary.tex").write_text(tex)
        tex_parts.append(tex)
    md += [T.stat_note(n_resamples), "", T.FLOOR_NOTE, "", "## By effect set", ""]
    md += [T.to_markdown(t) for t in set_tables]
    md += ["## By effect", ""] + [T.to_markdown(t) for t in eff_tables]
    for t in set_tables + eff_tables:
        tex = T.to_latex(t, n_resamples)
        (td / f"{t.name}.tex").write_text(tex)
        tex_parts.append(tex)
    if r.focus and not sig.empty:
        md += [f"## Exploratory paired tests: {r.focus} vs each system, per task", "",
               T.summary_markdown(summary, r.focus)]
        tex = T.summary_latex(summary, r.focus)
        (td / "significance_summary.tex").write_text(tex)
        tex_parts.append(tex)
        for m in tested:
            if (sig["metric"] == m).any():
                md.append(T.significance_markdown(sig, m, r.focus))
                tex = T.significance_latex(sig, m, r.focus)
                (td / f"significance__{T._safe(m)}.tex").write_text(tex)
                tex_parts.append(tex)
    if budgets is not None:
        md += ["## Budgets", "", B.to_markdown(budgets)]
        B.to_csv_frame(budgets).to_csv(td / "budgets.csv", index=False)
    wild_files = {}
    if wild is not None:
        md.append(W.markdown(wild))
        wild_tex, wild_files = W.write(wild, d, n_resamples)
        tex_parts += wild_tex
    (d / "tables.md").write_text("\n".join(md))
    header = ("% afx-bench tables, generated by reports/build.py; needs \\usepackage{booktabs,graphicx}.\n"
              "% Each table is also in tables/<name>.tex for a single \\input.\n\n")
    (d / "tables.tex").write_text(header + "\n".join(tex_parts))
    return {"tables.md": "tables.md", "tables.tex": "tables.tex",
            **({"primary.csv": f"tables/{P.PRIMARY_FILE}"} if primary is not None else {}),
            "stats.csv": "tables/stats.csv",
            "significance.csv": "tables/significance.csv",
            "significance_summary.csv": "tables/significance_summary.csv",
            **({"budgets.csv": "tables/budgets.csv"} if budgets is not None else {}), **wild_files}


# --- figures and audio --------------------------------------------------------------------------------------
def _figures(r: Results, d: Path, stats, heads, set_cols, params, max_mel, tick, wild=None, frontier=None):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    from reports import figures as F

    with plt.rc_context():
        sns.set_theme(style="whitegrid", context="paper", font_scale=0.95)
        figs = F.Figures(d, r.systems)
        tick("plotting libraries")
        single = tuple(m for m in ("param_mae", X.primary_metric(r)) if m)
        F.metric_pointplots(figs, stats, heads, set_cols, single=single)
        F.ac_profiles(figs, stats, set_cols)
        F.bypass_heatmaps(figs, stats, heads, r.effects)
        F.param_errors(figs, stats, r.effects)
        if wild is not None:
            wild.figure = F.wild_picks(figs, wild.matrices())
        if frontier is not None:
            for m in sorted(set(frontier.points["metric"]), key=Fr.METRICS.index):
                Fr.figure(figs, frontier, m)
        tick("metric figures")
        F.param_scatter(figs, params, r.effects)
        tick("parameter scatter plots")
        audio = X.collect(r, d)
        tick("audio examples")
        mel = {}
        for item in mel_picks(audio, r, max_mel):
            name = f"mel_{X.task_dir(item.task)}_{item.example:04d}"
            score = f", {item.metric} {item.value:.3g}" if np.isfinite(item.value) else ""
            clips = [(system_label(k, short=True), x) for k, x in item.arrays.items()]
            fig = F.mel_grid(figs, name, clips, item.sample_rate,
                             f"{item.task}, example {item.example} ({item.rank}{score})",
                             f"Mel spectrograms of {item.task}, example {item.example}: input, reference, target and "
                             "each system's output, on one dB scale.")
            mel[(item.task, item.example)] = fig
        for item in audio:
            item.arrays = {}  # not needed any more
        tick("mel spectrograms")
    return figs.items, audio, mel


def mel_picks(audio: list, r: Results, limit: int) -> list:
    """The median example of each task, at most ``limit``: first one task per effect, then the others."""
    medians = [a for a in audio if a.rank in ("median", "stored")]
    effect = {t: r.task_info(t)["effect"] for t in {a.task for a in medians}}
    first, rest, seen = [], [], set()
    for a in medians:
        (rest if effect[a.task] in seen else first).append(a)
        seen.add(effect[a.task])
    return (first + rest)[: max(0, limit)]


# --- metadata -----------------------------------------------------------------------------------------------
def _failures(r: Results) -> list[dict]:
    f = r.failures
    if f.empty:
        return []
    cols = [c for c in ("system", "task", "stage", "error") if c in f.columns]
    return f[cols].to_dict("records")


def _cell_runs(r: Results, mlflow: dict) -> dict:
    """(system, task) -> the newest cell run, for the run-link matrix."""
    out = {}
    for rec in (mlflow or {}).get("cells", []):  # newest first
        out.setdefault((rec["system"], rec["task"]), rec)
    return out


def _environment(mlflow: dict) -> str:
    env = (mlflow or {}).get("environment")
    return json.dumps(env["data"], indent=1) if env else ""


# --- html ---------------------------------------------------------------------------------------------------
def render(ctx: dict) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("reports", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, spec=".3g": "n/a" if v is None or not np.isfinite(v) else format(v, spec)
    env.filters["label"] = system_label
    env.filters["when"] = lambda ms: (dt.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")
                                      if ms else "")
    return env.get_template("report.html.j2").render(**ctx)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m reports.build OUT", file=sys.stderr)
        return 2
    print(f"report: {build_report(Path(argv[0]), log=print)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
