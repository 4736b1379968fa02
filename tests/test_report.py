"""The report: its statistics against hand-computed values, its tables, and a full build from a synthetic
results directory (reports/synthetic.py)."""

from __future__ import annotations

import html as html_lib
import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import stats as sps

from reports import stats as S
from reports import store
from reports import tables as T
from reports.results import load_results


# --- the statistics: bench/stats.py (tests/test_stats.py), re-exported for the report -----------------------
def test_report_statistics_are_the_harness_statistics():
    import bench.stats as B

    for name in ("intervals", "hierarchical_ci", "paired_test", "source_pairs", "holm", "bh", "rank_biserial"):
        assert getattr(S, name) is getattr(B, name)


def test_metric_directions(monkeypatch):
    from bench.metrics import METRICS, Metric

    class Higher(Metric):
        name = "zz_report_test_score"
        higher_is_better = True

    monkeypatch.setitem(METRICS._items, Higher.name, Higher)  # registered for this test only
    assert S.direction("zz_report_test_score/sub") == "higher"
    assert S.direction("param_mae") == "lower" and S.direction("param_mae/gain_db") == "lower"
    assert S.direction("mrstft") == "lower" and S.direction("cost/seconds") == "lower"
    assert S.direction("ac_signed/depth") == "signed"
    assert S.direction("pesq") == "higher"
    assert S.best_value([0.5, -0.1, 0.3], "signed") == -0.1
    assert S.best_value([0.5, np.nan, 0.3], "higher") == 0.5


# --- tables on a small hand-made table ----------------------------------------------------------------------
def _small_results(tmp_path):
    rows = []
    vals = {"bypass": [3.0, 4.0, 5.0], "proposed": [1.0, 2.0, 3.0], "oracle": [0.0, 0.0, 0.0]}
    for system, v in vals.items():
        for effect, eset in (("peq", "seen"), ("delay", "unseen")):
            for i, x in enumerate(v):
                base = {"system": system, "task": f"speech/{effect}/test", "effect": effect, "effect_set": eset,
                        "corpus": "speech", "corpus_set": "seen", "split": "test", "example": i,
                        "source_id": f"s{i}"}
                rows.append({**base, "metric": "mrstft", "value": x + (effect == "delay")})
                pm = np.nan if system == "bypass" else x / 10
                if not (system == "proposed" and effect == "delay"):  # a missing cell
                    rows.append({**base, "metric": "param_mae", "value": pm})
    pd.DataFrame(rows).to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "config.json").write_text(json.dumps({"systems": {"include": ["bypass", "oracle", "proposed"]}}))
    return load_results(tmp_path)


def test_tables_bold_na_and_missing(tmp_path):
    r = _small_results(tmp_path)
    assert r.systems == ["bypass", "oracle", "proposed"] and r.focus == "proposed"
    stats = T.compute_stats(r, {"mrstft": ["set", "effect"], "param_mae": ["set", "effect"]})
    t = T.make_table(stats, r, "mrstft", "set", T.set_columns(r))
    assert [c.label for c in t.columns] == ["seen effects", "unseen effects"]
    cell = t.cells[("proposed", "seen|seen")]
    assert cell.mean == pytest.approx(2.0) and cell.n == 3 and cell.best
    assert not t.cells[("oracle", "seen|seen")].best  # the oracle is never ranked
    assert t.col_n == {"seen|seen": 3, "unseen|seen": 3}
    p = T.make_table(stats, r, "param_mae", "set", T.set_columns(r))
    assert p.cell_parts("bypass", "seen|seen") == ("n/a", "", "")
    assert p.cell_parts("proposed", "unseen|seen") == (T.MISSING, "", "")
    md, tex = T.to_markdown(p), T.to_latex(p, 2000)
    bypass_md = next(line for line in md.splitlines() if line.startswith("| bypass"))
    assert bypass_md.count("n/a") == 2 and "0" not in bypass_md.replace("bypass", "")
    bypass_tex = next(line for line in tex.splitlines() if line.startswith("bypass"))
    assert bypass_tex.count("n/a") == 2 and "0" not in bypass_tex
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\textbf" not in tex  # one contender: no "best"
    assert r"\textbf{2.00}" in T.to_latex(t, 2000) and "**2.00 [" in T.to_markdown(t)
    na = stats[(stats["metric"] == "param_mae") & (stats["system"] == "bypass")]
    assert (na["status"] == "na").all() and na["mean"].isna().all()


def test_exploratory_tests_are_on_source_means_with_bh_q_and_never_test_the_oracle(tmp_path):
    r = _small_results(tmp_path)
    sig = T.significance(r, ["mrstft"])
    assert len(sig) == 2 and set(sig["baseline"]) == {"bypass"}  # 2 tasks x 1 system: the oracle is never tested
    peq = sig[sig["task"] == "speech/peq/test"].set_index("baseline")
    p_b = sps.wilcoxon(np.array([3.0, 4, 5]) - np.array([1.0, 2, 3])).pvalue  # one example per source
    assert peq.loc["bypass", "p"] == pytest.approx(p_b) and peq.loc["bypass", "n"] == 3
    from statsmodels.stats.multitest import multipletests

    assert list(sig["q_bh"]) == pytest.approx(list(multipletests(sig["p"], method="fdr_bh")[1]))
    assert "p_holm" not in sig and peq.loc["bypass", "rank_biserial"] == 1.0
    assert (sig["verdict"] == "").all()  # n = 3 cannot reach q < 0.05 (two-sided exact minimum 0.25)
    note = T.exploratory_note(sig, "mrstft")
    assert "Exploratory" in note and "Benjamini-Hochberg" in note and "primary table" in note


def test_significance_pairs_sources_and_pools_seeds(tmp_path):
    """Four examples from each of 6 sources, the focus system under 2 seeds: 6 pairs, seeds averaged first."""
    rng = np.random.default_rng(0)
    rows = []
    level = rng.normal(0, 1, 6)
    for system, seeds, shift in (("bypass", (0,), 1.0), ("constant", (0,), 0.0), ("proposed", (0, 1), 0.3)):
        for sd in seeds:
            for i in range(24):
                rows.append({"system": system, "task": "speech/peq/test", "effect": "peq", "effect_set": "seen",
                             "corpus": "speech", "corpus_set": "seen", "split": "test", "seed": sd, "example": i,
                             "source_id": f"s{i // 4}", "metric": "mrstft",
                             "value": level[i // 4] + shift + rng.normal(0, 0.01) + (0.1 if sd else -0.1)})
    pd.DataFrame(rows).to_parquet(tmp_path / "scores.parquet")
    r = load_results(tmp_path)
    sig = T.significance(r, ["mrstft"]).set_index("baseline")
    assert r.focus == "proposed" and set(sig.index) == {"bypass", "constant"}  # the floors are tested
    assert (sig["n"] == 6).all() and (sig["n_examples"] == 24).all()
    v = pd.DataFrame(rows)
    ex = v.groupby(["system", "example"])["value"].mean().unstack("system")  # seeds averaged per example
    src = ex.groupby(np.arange(24) // 4).mean()
    assert sig.loc["bypass", "p"] == pytest.approx(sps.wilcoxon(src["bypass"] - src["proposed"]).pvalue)
    assert sig.loc["bypass", "rank_biserial"] == 1.0 and sig.loc["constant", "rank_biserial"] == -1.0


# --- what the runner stores ---------------------------------------------------------------------------------
def test_reads_what_the_runner_stores(tmp_path):
    """The contract with bench/results.py: the audio and parameter files it stores are found and read."""
    from types import SimpleNamespace as NS

    from bench.results import ResultStore as Results
    from bench.results import param_rows

    tags = {"task": "folder:/x y/peq4/test", "effect": "peq4", "effect_set": "seen", "corpus": "folder:/x y",
            "corpus_set": "seen", "split": "test"}
    task = NS(id=tags["task"], sample_rate=8000, tags=lambda: dict(tags), effect=NS(param_names=("gain", "q")))
    x = np.linspace(-0.5, 0.5, 800, dtype=np.float32)
    examples = [NS(index=i, input=x, reference=x * 0.5, target=x * 0.7, source_id="s", meta={},
                   true_params01=np.array([0.2, 0.4])) for i in range(3)]
    estimates = [NS(output=x * 0.6, params01=np.array([0.25, 0.3])) for _ in examples]
    res = Results(tmp_path)
    res.save_audio("my system", task, examples, estimates, 2)
    rows = pd.DataFrame([{"system": "my system", **{k: v for k, v in tags.items()}, "example": 0, "source_id": "s",
                          "metric": "mrstft", "value": 1.0, "cell_key": "k"}])
    res.write_cell("my system", task, rows, param_rows("my system", task, examples, estimates))
    res.rebuild_tables()
    index = store.AudioIndex(tmp_path, [tags["task"]])
    assert index.examples(tags["task"]) == [0, 1]
    clips = index.clips(tags["task"], 1)
    assert set(clips) == {"input", "reference", "target", store.slug("my system")}
    assert np.allclose(sf.read(clips["target"], dtype="float32")[0], x * 0.7, atol=1e-6)
    params = store.load_params(tmp_path)
    assert len(params) == 6 and set(params["param"]) == {"gain", "q"}
    assert params["estimate"].iloc[0] == 0.25 and params["true"].iloc[0] == 0.2


# --- a full build -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from reports.build import build_report
    from reports.synthetic import make_results

    out = make_results(tmp_path_factory.mktemp("results"), n=6, n_audio=3, mlflow=True)
    had_torch = "torch" in sys.modules
    html = build_report(out, max_mel=3)
    if not had_torch:
        assert "torch" not in sys.modules, "building the report imported torch"
    return out, html


def test_build_writes_every_artefact(built):
    out, html = built
    d = out / "report"
    assert html == d / "report.html"
    for f in ("tables.tex", "tables.md", "tables/stats.csv", "tables/significance.csv",
              "tables/param_mae__set.tex", "latent/chorus__proposed_summary.csv", "latent/chorus__proposed_axes.csv",
              "latent/chorus__proposed_probes.csv", "latent/chorus__proposed_knobs_mel_grid.png",
              "latent/chorus__proposed_knobs_trajectories.png"):
        assert (d / f).is_file(), f
    pngs = sorted(p.stem for p in (d / "figures").glob("*.png"))
    assert pngs == sorted(p.stem for p in (d / "figures").glob("*.pdf"))
    for prefix in ("metric_mrstft", "metric_param_mae", "metrics_by_set", "vs_bypass", "ac_profiles",
                   "param_errors", "params_scatter_peq", "mel_"):
        assert any(p.startswith(prefix) for p in pngs), prefix
    wavs = list((d / "audio").rglob("*.wav"))
    assert wavs and all(abs(sf.read(w)[0]).max() <= 1.0 for w in wavs)
    page = html.read_text()
    for p in re.findall(r'(?:src|href)="([^"#:]+)"', page):  # every relative reference exists
        assert (d / p).exists(), p
    assert page.count("<audio") == len(wavs)
    assert "127.0.0.1:5000/#/experiments/" in page  # links to the MLflow runs
    assert '"python": "3.' in html_lib.unescape(page)  # the environment.json artifact of the benchmark run
    assert "oneshot_eq: NaN/Inf" in page  # the failure is listed
    assert not list(out.glob(".report-*"))  # no temporary build folder left behind


def test_the_report_opens_with_the_primary_table(built):
    """primary.csv beside the run's summary and in the report's tables; the page, tables.md and tables.tex open
    with it; the declared family never holds the oracle or a variant; absent systems are rows saying so."""
    from bench.stats.primary import NOT_TESTED, PRIMARY_COLUMNS

    out, html = built
    prim = pd.read_csv(out / "primary.csv")
    assert list(prim.columns) == PRIMARY_COLUMNS
    assert (out / "report" / "tables" / "primary.csv").read_bytes() == (out / "primary.csv").read_bytes()
    assert not prim["against"].isin(["oracle", "proposed:best_pick"]).any() and set(prim["focus"]) == {"proposed"}
    assert set(prim["effect_set"]) == {"seen", "unseen", "wild"} and len(prim) <= 40
    assert not ((prim["effect_set"] == "wild") & (prim["metric"] == "param_mae")).any()
    absent = prim[prim["against"].isin(["ito_cmaes", "proposed_paper"])]
    assert (absent["verdict"] == NOT_TESTED).all() and absent["note"].str.contains("not in this run").all()
    tested = prim[prim["verdict"] != NOT_TESTED]
    assert tested["p"].notna().all() and (tested["n_sources"] > 0).all()
    assert list(tested["p_holm"]) == pytest.approx(list(S.holm(tested["p"])))  # Holm over the family only
    page = html.read_text()
    assert page.index('<section id="primary">') < page.index('<section id="sets">')
    sentences = re.search(r'<ul class="verdicts" id="primary-sentences">(.*?)</ul>', page, re.S).group(1)
    assert sentences.count("<li>") == len(prim) and "no effect" not in sentences and "n.s." not in sentences
    md = (out / "report" / "tables.md").read_text()
    assert md.index("## Primary comparisons") < md.index("## By effect set")
    assert "| proposed vs constant | seen | mrstft |" in md
    assert (out / "report" / "tables.tex").read_text().index("tab:primary") < \
        (out / "report" / "tables.tex").read_text().index("tab:mrstft__set")


def test_na_is_never_rendered_as_zero(built):
    out, html = built
    page = html.read_text()
    tables = re.findall(r'<table class="results" id="table-(param_mae__[a-z]+)">(.*?)</table>', page, re.S)
    assert len(tables) == 2
    for _, body in tables:
        row = re.search(r'<td class="sys">bypass</td>(.*?)</tr>', body, re.S).group(1)
        values = re.findall(r'<span class="v">([^<]*)</span>', row)
        assert values and set(values) == {"n/a"}
    # the hidden ("wild") effect has no parameters: n/a for every system there
    room = re.search(r'id="table-param_mae__effect">.*?</table>', page, re.S).group(0)
    for row in re.findall(r"<tr[^>]*><td class=\"sys\">.*?</tr>", room, re.S):
        assert re.findall(r'<span class="v">([^<]*)</span>', row)[-1] == "n/a"
    md = (out / "report" / "tables.md").read_text()
    assert re.search(r"\| bypass \| 1 \| n/a \| n/a \|", md)
    stats = pd.read_csv(out / "report" / "tables" / "stats.csv")
    na = stats[stats["status"] == "na"]
    assert len(na) and na["mean"].isna().all()
    missing = T.MISSING  # the failed cell (oneshot_eq on music/delay) is a dash, not a number
    eff = re.search(r'id="table-mrstft__set">.*?</table>', page, re.S).group(0)
    row = re.search(r'<td class="sys">oneshot_eq</td>(.*?)</tr>', eff, re.S).group(1)
    assert missing in re.findall(r'<span class="v">([^<]*)</span>', row)


def test_build_without_store_audio_or_config(tmp_path, built):
    out, _ = built
    scores = pd.read_parquet(out / "scores.parquet")
    scores = scores[scores["metric"].isin(["mrstft", "param_mae"])]
    scores.to_parquet(tmp_path / "scores.parquet")
    html = __import__("reports.build", fromlist=["build_report"]).build_report(tmp_path)
    page = html.read_text()
    assert "No run links: no MLflow store" in page and "No audio was stored" in page
    assert "<audio" not in page and (tmp_path / "report" / "tables.tex").is_file()


def test_missing_scores_is_a_clear_error(tmp_path):
    from reports.build import build_report
    from reports.results import ReportError

    with pytest.raises(ReportError, match="no scores"):
        build_report(tmp_path)


# --- labelled variants and the wild set ---------------------------------------------------------------------
def test_variants_are_labelled_never_ranked_never_focus():
    from reports.results import is_ranked, is_reference, is_variant, pick_focus, system_label

    assert is_variant("proposed:best_pick") and not is_variant("proposed")
    assert not is_ranked("proposed:best_pick") and not is_ranked("oracle") and is_ranked("bypass")
    assert is_reference("proposed:best_pick") and not is_reference("oneshot_eq")
    assert pick_focus(["proposed:best_pick", "bypass", "oneshot_eq"]) == "oneshot_eq"
    assert pick_focus(["bypass", "x:y"]) == "bypass" and pick_focus(["x:y"]) is None
    assert system_label("proposed:best_pick") == "proposed:best_pick (upper bound, chooses with the target)"
    assert system_label("proposed:best_pick", short=True) == "proposed:best_pick (upper bound, uses target)"
    assert "not ranked" in system_label("ito_cmaes:other") and system_label("oracle") == "oracle"


def _wild_results(tmp_path, systems=("bypass", "oracle", "proposed", "deepafx_st_autodiff", "deepafx_st_spsa",
                                     "proposed:best_pick"), n=10, picks=True):
    """Two wild kinds on two corpora: proposed clearly better than DeepAFx-ST (autodiff) on room, clearly worse on
    lofi; the SPSA variant is indistinguishable from proposed; the best_pick variant is the lowest everywhere."""
    rng = np.random.default_rng(5)
    rows, info = [], []
    level = {"bypass": {"room": 1.0, "lofi": 1.0}, "oracle": {"room": np.nan, "lofi": np.nan},
             "proposed": {"room": 0.4, "lofi": 1.5}, "deepafx_st_autodiff": {"room": 0.9, "lofi": 0.7},
             "proposed:best_pick": {"room": 0.1, "lofi": 0.1}}
    for corpus, cset in (("speech", "seen"), ("music", "unseen")):
        for kind in ("room", "lofi"):
            task = f"{corpus}/{kind}/test"
            tags = {"task": task, "effect": kind, "effect_set": "wild", "corpus": corpus, "corpus_set": cset,
                    "split": "test"}
            noise = rng.normal(0, 0.05, n)
            for s in systems:
                v = level.get(s, level["proposed"])[kind] + (noise if s == "deepafx_st_spsa" else 0) \
                    + rng.normal(0, 0.02, n)
                for i in range(n):
                    base = {"system": s, **tags, "example": i, "source_id": f"{corpus}{i}"}
                    rows.append({**base, "metric": "mrstft", "value": float(v[i])})
                    rows.append({**base, "metric": "param_mae", "value": np.nan})
                    if s == "proposed" and picks:
                        info.append({**{k: v for k, v in base.items() if k != "source_id"}, "key": "picked",
                                     "value": "reverb" if kind == "room" else json.dumps("peq")})
        for s in systems:  # a seen task too: the wild set is one part of the run
            for i in range(n):
                rows.append({"system": s, "task": f"{corpus}/peq/test", "effect": "peq", "effect_set": "seen",
                             "corpus": corpus, "corpus_set": cset, "split": "test", "example": i,
                             "source_id": "x", "metric": "mrstft", "value": float(rng.uniform(0, 1))})
    pd.DataFrame(rows).to_parquet(tmp_path / "scores.parquet")
    if picks:
        pd.DataFrame(info).to_parquet(tmp_path / "info.parquet")
    return load_results(tmp_path)


def test_wild_hypothesis_verdicts_and_holm(tmp_path):
    from reports import wild as W

    r = _wild_results(tmp_path)
    assert W.kinds_of(r) == ["room", "lofi"] and r.focus == "proposed"
    stats = T.compute_stats(r, {"mrstft": ["set", "effect"], "param_mae": ["set", "effect"]}, n_resamples=200)
    sec = W.build(r, stats, ["param_mae", "mrstft"])
    assert sec.left_out == ["param_mae"] and [t.metric for t in sec.tables] == ["mrstft"]
    assert "oracle" not in sec.systems and "proposed:best_pick" in sec.systems
    tests = sec.tests.set_index(["baseline", "kind"])
    assert set(sec.tests["baseline"]) == {"deepafx_st_autodiff", "deepafx_st_spsa"}  # never a variant
    # paired by task and example: 2 corpora x 10 examples per kind
    assert (sec.tests["n"] == 20).all()
    assert tests.loc[("deepafx_st_autodiff", "room"), "verdict"] == "better"
    assert tests.loc[("deepafx_st_autodiff", "lofi"), "verdict"] == "worse"
    # Holm per baseline over its kinds x metrics: >= raw p, monotone in raw p, equal to the hand computation
    for _, fam in sec.tests.groupby("baseline"):
        assert list(fam["p_holm"]) == pytest.approx(list(S.holm(fam["p"])))
        assert (fam["p_holm"] >= fam["p"] - 1e-15).all()
        ordered = fam.sort_values("p")["p_holm"].to_numpy()
        assert (np.diff(ordered) >= -1e-15).all()
    # the raw p is scipy's Wilcoxon on the same pairs
    sub = r.scores[(r.scores["effect"] == "room") & (r.scores["metric"] == "mrstft")]
    wide = sub.pivot_table(index=["task", "example"], columns="system", values="value")
    p = sps.wilcoxon(wide["deepafx_st_autodiff"] - wide["proposed"]).pvalue
    assert tests.loc[("deepafx_st_autodiff", "room"), "p"] == pytest.approx(p)
    v = {(x.baseline, x.scope): x.verdict for x in sec.verdicts}
    assert v[("deepafx_st_autodiff", "room")] == "supported"
    assert v[("deepafx_st_autodiff", "lofi")] == "contradicted"
    assert v[("deepafx_st_autodiff", "overall")] == "mixed"
    assert v[("deepafx_st_spsa", "room")] == W.NO_DIFFERENCE
    spsa = next(x for x in sec.verdicts if x.scope == "room" and x.baseline == "deepafx_st_spsa")
    assert "no difference detected on mrstft" in spsa.detail and "smallest detectable" in spsa.detail
    overall = next(x for x in sec.verdicts if x.scope == "overall" and x.baseline == "deepafx_st_autodiff")
    assert "supported on room" in overall.sentence and "contradicted on lofi" in overall.sentence
    md = W.hypothesis_markdown(sec)
    assert "lofi, proposed vs deepafx_st_autodiff: contradicted." in md and "proposed:best_pick" not in md
    # the variant is the lowest mean on both kinds, yet proposed or the baseline is bold, never it
    t = sec.tables[0]
    assert t.cells[("proposed", "room")].best and not t.cells[("proposed:best_pick", "room")].best
    assert t.cells[("proposed:best_pick", "room")].mean < t.cells[("proposed", "room")].mean
    line = next(x for x in T.to_markdown(t).splitlines() if x.startswith("| proposed:best_pick"))
    assert "(upper bound, chooses with the target)" in line and "**" not in line
    assert r"\textbf" not in next(x for x in T.to_latex(t, 200).splitlines() if x.startswith("proposed:best"))
    # picks: a JSON-quoted value is read as text
    assert W.pick_matrix(sec.picks).to_dict() == {"reverb": {"room": 20, "lofi": 0}, "peq": {"room": 0, "lofi": 20}}


def test_a_wild_kind_is_supported_only_by_the_primary_metric_with_no_metric_worse():
    from reports import wild as W

    nd = "no difference detected"
    assert W.combine({"mrstft": "better", "mel_dist": nd}) == W.SUPPORTED
    assert W.combine({"mrstft": "better", "mel_dist": "worse"}) == W.MIXED
    assert W.combine({"mrstft": nd, "mel_dist": "better", "pesq": "better"}) == W.NO_DIFFERENCE  # 1 of 9 is not it
    assert W.combine({"mrstft": "worse", "mel_dist": nd}) == W.CONTRADICTED
    assert W.combine({"mel_dist": "better"}) == W.NOT_TESTED
    assert W.overall({"room": W.SUPPORTED, "lofi": W.SUPPORTED}) == W.SUPPORTED
    assert W.overall({"room": W.SUPPORTED, "lofi": W.NO_DIFFERENCE}) == W.MIXED
    assert W.overall({"room": W.NO_DIFFERENCE, "lofi": W.NOT_TESTED}) == W.NO_DIFFERENCE


def test_wild_comparisons_that_cannot_be_made(tmp_path):
    from reports import wild as W

    r = _wild_results(tmp_path, systems=("bypass", "proposed"), picks=False)
    r.failures = pd.DataFrame([{"system": "deepafx_st_autodiff", "task": "speech/room/test", "effect_set": "wild",
                                "stage": "evaluate", "error": "x"}])
    r.systems = r.systems + ["deepafx_st_autodiff"]  # in the run, but its wild cells failed
    stats = T.compute_stats(r, {"mrstft": ["effect"]}, n_resamples=100)
    sec = W.build(r, stats, ["mrstft"])
    assert sec.tests.empty and sec.verdicts == []
    assert len(sec.notes) == 2 and "deepafx_st_autodiff could not be tested" in sec.notes[0]
    assert "its wild cells failed" in sec.notes[0] and "(it is not in this run)" in sec.notes[1]
    assert sec.picks.empty and "No info.parquet" in sec.picks_note
    assert "could not be tested" in W.hypothesis_markdown(sec) and "No info.parquet" in W.picks_markdown(sec)
    (tmp_path / "b").mkdir()
    r2 = _wild_results(tmp_path / "b", systems=("bypass", "deepafx_st_autodiff"), picks=False)
    sec2 = W.build(r2, T.compute_stats(r2, {"mrstft": ["effect"]}, n_resamples=100), ["mrstft"])
    assert sec2.tests.empty and "proposed has no scores on the wild set" in sec2.notes[0]
    # no wild task: no section
    seen = r2.scores[r2.scores["effect_set"] != "wild"]
    (tmp_path / "c").mkdir()
    seen.to_parquet(tmp_path / "c" / "scores.parquet")
    r3 = load_results(tmp_path / "c")
    assert W.build(r3, T.compute_stats(r3, {"mrstft": ["effect"]}, n_resamples=100), ["mrstft"]) is None


def test_build_without_wild_tasks_has_no_wild_section(tmp_path):
    from reports.build import build_report

    _small_results(tmp_path)  # seen and unseen effects only
    page = build_report(tmp_path, n_resamples=100).read_text()
    assert 'id="wild"' not in page and 'href="#wild"' not in page
    assert not (tmp_path / "report" / "wild.md").exists()
    assert "wild set" not in (tmp_path / "report" / "tables.md").read_text()


def test_reads_the_picks_the_runner_stores(tmp_path):
    """The contract with bench/results.py's info.parquet: the picks it writes are the ones the report counts."""
    from types import SimpleNamespace as NS

    import bench.results as runner
    from reports import wild as W
    tags = {"task": "speech/room/test", "effect": "room", "effect_set": "wild", "corpus": "speech",
            "corpus_set": "seen", "split": "test"}
    task = NS(id=tags["task"], sample_rate=8000, tags=lambda: dict(tags))
    examples = [NS(index=i) for i in range(3)]
    own = [NS(info={"picked": c, "best_pick": "delay", "renders": 4, "distances": {"reverb": 0.1}})
           for c in ("reverb", "delay", "reverb")]
    variant = [NS(info={"best_pick": "delay"}) for _ in examples]
    res = runner.ResultStore(tmp_path)
    rows = pd.DataFrame([{"system": "proposed", **tags, "example": 0, "source_id": "s", "metric": "mrstft",
                          "value": 1.0, "cell_key": "k"}])
    info = pd.concat([runner.info_rows("proposed", task, examples, own),
                      runner.info_rows("proposed:best_pick", task, examples, variant)], ignore_index=True)
    res.write_cell("proposed", task, rows, None, info)
    res.rebuild_tables()
    stored, note = W.load_info(tmp_path)
    assert note == "" and set(stored["key"]) == {"picked", "best_pick", "distances"}  # numbers are scores
    counts, agreement = W.pick_counts(stored, ["room"])
    got = {(k, c): n for k, c, n in counts[["key", "controller", "count"]].itertuples(index=False)}
    assert got == {("picked", "reverb"): 2, ("picked", "delay"): 1, ("best_pick", "delay"): 3}
    assert agreement.to_dict("records") == [{"kind": "room", "examples": 3, "same": 1}]


def test_recipe_summary():
    from reports.wild import recipe_summary

    chain = {"kind": "pedal_chain", "chain": [{"effect": "distortion", "params01": [0.1]},
                                              {"effect": "reverb", "params01": [0.5]}], "trim_db": -2.5}
    assert recipe_summary(chain) == "chain distortion → reverb, trim_db -2.5"
    room = {"kind": "room", "rt60_requested_s": 0.8123, "room_m": [6.2, 4.1, 3.0], "tail_seed": 9}
    assert recipe_summary(room) == "rt60_requested_s 0.812, room_m 6.2 x 4.1 x 3"
    assert recipe_summary(None) == "" and len(recipe_summary({"a": "x" * 500}, limit=50)) == 50
    assert recipe_summary({"lowpass_hz": 5262.4, "resample_hz": 16300.0}) == "lowpass_hz 5262, resample_hz 16300"


def test_build_has_the_wild_section(built):
    from reports.synthetic import CORPORA, PICKS

    out, html = built
    d = out / "report"
    for f in ("wild.md", "wild_hypothesis.md", "tables/wild_hypothesis.csv", "tables/wild_stats.csv",
              "tables/wild_picks.csv", "tables/wild_verdicts.csv", "tables/wild__mrstft.tex",
              "tables/wild_hypothesis.tex", "figures/wild_picks.png", "figures/wild_picks.pdf"):
        assert (d / f).is_file(), f
    verdicts = pd.read_csv(d / "tables" / "wild_verdicts.csv").set_index("scope")["verdict"].to_dict()
    assert verdicts == {"room": "supported", "lofi": "contradicted", "overall": "mixed"}
    hyp = pd.read_csv(d / "tables" / "wild_hypothesis.csv")
    assert set(hyp["baseline"]) == {"deepafx_st_autodiff"} and "mrstft" in set(hyp["metric"])
    assert (hyp["p_holm"] >= hyp["p"]).all() and list(hyp["p_holm"]) == pytest.approx(list(S.holm(hyp["p"])))
    # picked-controller counts: what the synthetic data put in (6 examples per task, one task per corpus)
    picks = pd.read_csv(d / "tables" / "wild_picks.csv")
    n = 6
    for kind, keys in PICKS.items():
        for key, cycle in keys.items():
            got = picks[(picks["kind"] == kind) & (picks["key"] == key)].set_index("controller")["count"].to_dict()
            want: dict[str, int] = {}
            for i in range(n):
                want[cycle[i % len(cycle)]] = want.get(cycle[i % len(cycle)], 0) + len(CORPORA)
            assert got == want, (kind, key)
    page = html.read_text()
    sec = re.search(r'<section id="wild">(.*?)</section>', page, re.S).group(1)
    assert "No oracle exists for this set" in sec and 'src="figures/wild_picks.png"' in sec
    assert "supported" in sec and "contradicted" in sec and "mixed" in sec
    for body in re.findall(r'<table class="results" id="table-wild__[^"]*">(.*?)</table>', sec, re.S):
        assert '<td class="sys">oracle</td>' not in body
    # anywhere on the page: the variant is labelled and never bold
    rows = re.findall(r'<td class="sys">proposed:best_pick([^<]*)</td>(.*?)</tr>', page, re.S)
    assert rows and all(label == " (upper bound, chooses with the target)" for label, _ in rows)
    assert all("best" not in cls for _, body in rows for cls in re.findall(r'<td class="([^"]*)"', body))
    md = (d / "tables.md").read_text()
    assert all("**" not in line for line in md.splitlines() if line.startswith("| proposed:best_pick"))
    sig = pd.read_csv(d / "tables" / "significance.csv")
    assert set(sig["focus"]) == {"proposed"}
    # wild audio: the variant's clip is played, and the hidden recipe is stated next to the example
    assert list((d / "audio").rglob("proposed_best_pick.wav"))
    assert "hidden recipe: rt60_requested_s 0.8, room_m 6.2 x 4.1 x 3" in page
    assert "hidden recipe: style telephone" in page


# --- floors, budgets, numbers that regenerate ---------------------------------------------------------------
def test_floors_are_reference_rows_in_every_table(built):
    from reports.results import FLOOR_SYSTEMS, is_ranked, is_reference, pick_focus

    assert set(FLOOR_SYSTEMS) == {"bypass", "random", "mean", "constant"}
    assert all(is_reference(s) and is_ranked(s) for s in FLOOR_SYSTEMS)
    assert pick_focus(["mean", "constant", "bypass", "oneshot_eq"]) == "oneshot_eq"
    out, html = built
    page = html.read_text()
    tables = re.findall(r'<table class="results" id="table-(?!budgets)[^"]*">(.*?)</table>', page, re.S)
    assert tables
    for body in tables:
        for floor in ("mean", "constant"):
            assert f'<tr class="ref"><td class="sys">{floor}</td>' in body
    assert "must beat bypass, random, mean and constant before it may claim to read the reference" in page
    sig = pd.read_csv(out / "report" / "tables" / "significance.csv")
    assert {"mean", "constant"} <= set(sig["baseline"])  # the focus system is tested against the floors
    md = (out / "report" / "tables.md").read_text()
    assert "| seeds |" in md and "(n=6, 5 sources)" in md
    assert re.search(r"\| proposed \| 2 \| ", md) and re.search(r"\| bypass \| 1 \| ", md)


def test_budget_table(built, tmp_path):
    from reports import budgets as B

    out, html = built
    md = (out / "report" / "tables.md").read_text()
    assert "## Budgets" in md and "this run did not equalise them" in md
    lines = md.split("## Budgets", 1)[1].splitlines()
    row = next(line for line in lines if line.startswith("| deepafx_st_autodiff | 2 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:5] == ["384", "120", "1,920"] and cells[7] == "n/a"  # device seconds not recorded
    assert next(line for line in lines if line.startswith("| bypass | — |"))  # not trained
    page = html.read_text()
    assert 'id="table-budgets"' in page and 'href="#budgets"' in page
    # inference cost per example: the mean of the cost/seconds scores
    scores = pd.read_parquet(out / "scores.parquet")
    want = scores[(scores["system"] == "proposed") & (scores["metric"] == "cost/seconds")]["value"].mean()
    b = B.budget_table(["proposed"], B.read_budgets(out), B.inference_from_scores(scores))
    assert b.table.set_index("system").loc["proposed", "seconds"] == pytest.approx(want)
    summary = pd.read_csv(out / "summary.csv")
    from_summary = B.inference_from_summary(summary).set_index("system").loc["proposed", "seconds"]
    assert from_summary == pytest.approx(want)
    # equalised budgets are stated; no budgets.csv is a sentence, not an error
    eq = B.budget_table(["proposed"], B.read_budgets(out), B.inference_from_scores(scores),
                        {"run": {"budget": {"train_renders": 2000, "steps": None}}})
    assert "run.budget: train_renders = 2000" in eq.note
    none = B.budget_table(["proposed"], None, B.inference_from_scores(scores))
    assert "wrote no budgets.csv" in none.note and none.cell("proposed", "steps") == B.NOT_TRAINED
    (tmp_path / "budgets.csv").write_text("system,seed\nx,0\n")
    with pytest.raises(ValueError, match="missing columns"):
        B.read_budgets(tmp_path)


def test_report_docs_round_trip(built, tmp_path, monkeypatch):
    """`afx-bench report --docs NAME --out DIR` copies the CSVs, writes SOURCE.md, and tables.md is exactly what
    the copied CSV regenerates; an edited number is caught."""
    import reports.docs as D
    from bench.cli import main

    out, _ = built
    monkeypatch.setattr(D, "ROOT", tmp_path / "results")
    assert main(["report", "--docs", "syn", "--out", str(out)]) == 0
    d = tmp_path / "results" / "syn"
    for f in ("summary.csv", "primary.csv", "budgets.csv", "config.json", "SOURCE.md", "tables.md"):
        assert (d / f).is_file(), f
    assert (d / "summary.csv").read_bytes() == (out / "summary.csv").read_bytes()
    source = (d / "SOURCE.md").read_text()
    assert f"afx-bench report --docs syn --out {out}" in source and "preset: `synthetic`" in source
    assert "seeds: `[0, 1]`" in source and re.search(r"- commit: `([0-9a-f]{40}|unknown)", source)
    assert f"commit that made the numbers: `{'0' * 40}` (the run's `git_sha` tag)" in source  # the run's, not HEAD's
    assert D.check(d) == ""
    md = (d / "tables.md").read_text()
    summary = pd.read_csv(d / "summary.csv")
    row = summary[(summary["system"] == "proposed") & (summary["metric"] == "mrstft")
                  & (summary["effect"] == "peq") & (summary["corpus"] == "speech")].iloc[0]
    assert f"**{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]**" in md
    assert "proposed (2 seeds)" in md and "## Budgets" in md
    assert (d / "primary.csv").read_bytes() == (out / "primary.csv").read_bytes()
    assert md.index("## Primary comparisons") < md.index("## Every task") and "primary.csv" in source
    # the latent study's summaries and axes come along (not its raw probes or figures), and their tables
    assert sorted(p.name for p in (d / "latent").iterdir()) == sorted(
        p.name for p in (out / "latent").iterdir() if p.name.endswith(("_summary.csv", "_axes.csv")))
    assert "## Latent-space study" in md and "### Selectivity on chorus" in md
    assert "**proposed on chorus: the latent moves nothing" in md
    (d / "tables.md").write_text(md.replace(f"{row['mean']:.3f}", "0.000", 1))
    assert "line" in D.check(d)
    assert main(["report", "--docs", "../x", "--out", str(out)]) == 2


def test_docs_results_regenerate_from_their_csv():
    """Every docs/results/<name>/tables.md in the repository is what its summary.csv regenerates."""
    import reports.docs as D

    folders = sorted(p for p in D.ROOT.iterdir() if (p / "tables.md").is_file()) if D.ROOT.is_dir() else []
    if not folders:
        pytest.skip("no docs/results/<name>/ yet (afx-bench report --docs quick --out results/quick)")
    for d in folders:
        assert D.check(d) == "", d


def test_results_without_seed_column_are_one_seed(tmp_path):
    r = _small_results(tmp_path)  # written without a seed column, as runs before it
    assert (r.scores["seed"] == 0).all()
    stats = T.compute_stats(r, {"mrstft": ["set"]})
    assert (stats["n_seeds"] == 1).all() and (stats["n_sources"] == 3).all()
