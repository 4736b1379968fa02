"""The listening test (reports/listening.py, `afx-bench listen`): post-screening, intervals and tests on made-up
ratings, and the export (deterministic for a seed, no absolute paths, loudness-matched and clip-safe)."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from bench.stats import holm
from reports import listening as L


def rows(listener: str, trials: int, hidden: list[float] | None, systems: dict[str, list[float]] | None = None,
         anchor: float | None = 20.0) -> list[dict]:
    """A listener's rows: per trial a hidden-reference rating (None: the listener has none), the anchor and
    each system's rating (per trial)."""
    out = []
    for t in range(trials):
        base = {"listener": listener, "trial": f"t{t + 1:02d}", "task": "speech/peq/test", "example": t}
        if hidden is not None:
            out.append({**base, "condition": L.HIDDEN, "system": "target", "rating": hidden[t]})
        if anchor is not None:
            out.append({**base, "condition": L.ANCHOR, "system": "bypass", "rating": anchor})
        for s, v in (systems or {}).items():
            out.append({**base, "condition": L.SYSTEM, "system": s, "rating": v[t]})
    return out


# --- post-screening -------------------------------------------------------------------------------------------
def test_screening_excludes_more_than_15_percent_of_trials_below_90():
    df = pd.DataFrame(
        rows("at15", 20, [80] * 3 + [100] * 17)  # 3 of 20 = exactly 15 %: kept ("more than 15 %")
        + rows("over15", 20, [80] * 4 + [100] * 16)  # 20 %: excluded
        + rows("seven", 7, [89] + [95] * 6)  # 14.3 %: kept
        + rows("six", 6, [89] + [95] * 5)  # 16.7 %: one miss in six trials is too many
        + rows("at90", 4, [90] * 4)  # 90 is not "below 90"
        + rows("nohidden", 3, None, {"proposed": [50] * 3})  # cannot be screened: excluded
        + rows("blank", 2, [math.nan, math.nan])  # hidden reference never rated: like none
    )
    s = L.screen(df).set_index("listener")
    assert s.loc["at15", ["trials", "below"]].tolist() == [20, 3] and not s.loc["at15", "excluded"]
    assert s.loc["at15", "share"] == pytest.approx(0.15)
    assert s.loc["over15", "excluded"] and "4 of 20" in s.loc["over15", "reason"]
    assert not s.loc["seven", "excluded"] and s.loc["six", "excluded"]
    assert not s.loc["at90", "excluded"]
    for who in ("nohidden", "blank"):
        assert s.loc[who, "excluded"] and s.loc[who, "trials"] == 0 and np.isnan(s.loc[who, "share"])
        assert "cannot be screened" in s.loc[who, "reason"]

    a = L.analyse(df, n_resamples=200)
    assert (a.n_listeners, a.n_excluded) == (7, 4)
    assert "excluded 4 of 7" in L.summary_text(a) and "nohidden (no hidden-reference rating" in L.summary_text(a)
    kept = a.table.set_index("condition").loc[L.HIDDEN]
    assert kept["n_listeners"] == 3  # at15, seven, at90


def test_everyone_excluded_says_so_and_no_ratings_is_plain():
    a = L.analyse(pd.DataFrame(rows("x", 2, [10, 10], {"proposed": [50, 50]})))
    assert a.table.empty and a.focus is None and "All 1 listeners were excluded" in a.notes[0]
    md = L.markdown(a)
    assert "excluded 1 of 1" in md and "| condition |" not in md


def test_a_listener_saved_twice_counts_once_with_the_later_ratings(tmp_path):
    early = pd.DataFrame(rows("A", 1, [50], {"proposed": [10]})).assign(timestamp="2024-01-01T10:00:00Z")
    late = pd.DataFrame(rows("A", 2, [100, 100], {"proposed": [60, 70]})).assign(timestamp="2024-01-01T10:05:00Z")
    early.to_csv(tmp_path / "part.csv", index=False)
    late.to_csv(tmp_path / "full.csv", index=False)
    df = L.read_ratings([tmp_path / "part.csv", tmp_path / "full.csv"])
    assert len(df) == len(late)
    assert df[(df["system"] == "proposed")]["rating"].tolist() == [60, 70]
    assert not L.screen(df)["excluded"].any()
    (tmp_path / "bad.csv").write_text("listener,trial,condition,system,rating\nA,t01,system,proposed,120\n")
    with pytest.raises(ValueError, match="outside 0-100"):
        L.read_ratings([tmp_path / "bad.csv"])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a ratings file"):
        L.read_ratings([tmp_path / "other.csv"])


# --- intervals and tests ----------------------------------------------------------------------------------------
def test_bootstrap_interval_over_listeners():
    v = np.array([40.0, 55.0, 60.0, 72.0, 90.0])
    lo, hi = L.bootstrap_ci(v, n_resamples=4000, seed=1)
    assert lo < v.mean() < hi and v.min() <= lo and hi <= v.max()
    idx = np.random.default_rng(1).integers(0, v.size, size=(4000, v.size))  # the documented resampling
    assert (lo, hi) == pytest.approx(tuple(np.quantile(v[idx].mean(axis=1), [0.025, 0.975])))
    assert L.bootstrap_ci(v, n_resamples=4000, seed=1) == (lo, hi)  # seeded
    assert L.bootstrap_ci([70.0, 70.0, 70.0]) == (70.0, 70.0)  # all equal: zero width
    assert all(np.isnan(L.bootstrap_ci([70.0])))  # one listener: no interval
    assert all(np.isnan(L.bootstrap_ci([70.0, math.nan])))


def test_paired_tests_on_listener_means_with_holm():
    rng = np.random.default_rng(0)
    df = []
    for i in range(8):
        prop = 70 + 3 * i + rng.uniform(-2, 2, 3)
        df += rows(f"L{i}", 3, [100, 95, 100], {"proposed": list(prop), "oneshot_eq": list(prop - 5 - i),
                                                "deepafx_st_autodiff": list(prop + rng.uniform(-4, 4, 3))},
                   anchor=10.0 + i)
    ratings = pd.DataFrame(df)
    a = L.analyse(ratings, n_resamples=500)
    assert a.focus == "proposed" and a.n_excluded == 0 and a.n_trials == 3
    t = a.table.set_index("system")
    assert list(a.table["system"]) == ["target", "proposed", "deepafx_st_autodiff", "oneshot_eq", "bypass"]
    lm = ratings.groupby(["system", "listener"])["rating"].mean().unstack("listener")
    for s in ("proposed", "oneshot_eq", "target", "bypass"):
        assert t.loc[s, "mean"] == pytest.approx(lm.loc[s].mean())  # mean of listener means
        assert t.loc[s, "ci_low"] <= t.loc[s, "mean"] <= t.loc[s, "ci_high"]
        assert t.loc[s, "n_listeners"] == 8 and t.loc[s, "n_ratings"] == 24
    assert t.loc["proposed", "vs"] == "" and np.isnan(t.loc["proposed", "p"])  # not tested against itself
    ps = []
    for s in ("target", "deepafx_st_autodiff", "oneshot_eq", "bypass"):
        d = lm.loc["proposed"] - lm.loc[s]
        ref = wilcoxon(d)
        assert t.loc[s, "p"] == pytest.approx(ref.pvalue) and t.loc[s, "n_pairs"] == 8
        assert t.loc[s, "mean_diff"] == pytest.approx(d.mean())
        ps.append(ref.pvalue)
    assert t.loc[["target", "deepafx_st_autodiff", "oneshot_eq", "bypass"], "p_holm"].tolist() == pytest.approx(
        list(holm(ps)))
    # every listener: proposed above oneshot_eq and the anchor, below the hidden reference
    assert t.loc["oneshot_eq", "rank_biserial"] == 1.0 and t.loc["bypass", "rank_biserial"] == 1.0
    assert t.loc["target", "rank_biserial"] == -1.0
    assert t.loc["oneshot_eq", "p"] == pytest.approx(2 / 2 ** 8)  # exact: the smallest p with 8 listeners
    assert t.loc["oneshot_eq", "verdict"] == "better" and t.loc["target", "verdict"] == "worse"
    assert t.loc["deepafx_st_autodiff", "verdict"] in ("n.s.", "better", "worse")
    with pytest.raises(ValueError, match="not a rated system"):
        L.analyse(ratings, focus="nope")
    other = L.analyse(ratings, focus="oneshot_eq", n_resamples=100).table.set_index("system")
    assert other.loc["proposed", "verdict"] == "worse"


def test_analysis_files_and_the_report_section(tmp_path):
    df = pd.DataFrame(rows("A", 2, [100, 100], {"proposed": [60, 70]}) + rows("B", 2, [95, 100], {"proposed": [50,
                                                                                                            80]}))
    a = L.analyse(df, n_resamples=100)
    written = L.write_analysis(a, tmp_path / "analysis")
    assert [p.name for p in written] == list(L.FILES) and all(p.is_file() for p in written)
    md = (tmp_path / "analysis" / "listening.md").read_text()
    assert "excluded 0 of 2" in md and "| hidden reference (target) |" in md and "nothing here can be" in md
    results = tmp_path / "results"
    report = tmp_path / "report"
    report.mkdir(parents=True)
    (report / "tables.md").write_text("# tables\n")
    assert L.report_section(results, report) is None  # no ratings: no section
    L.copy_to_results(tmp_path / "analysis", results)
    sec = L.report_section(results, report)
    assert sec["focus"] == "proposed" and [r["label"] for r in sec["rows"]] == [
        "hidden reference (target)", "proposed", "anchor (bypass: the input)"]
    assert sec["files"]["listening.csv"] == "listening/listening.csv" and (report / "listening/listening.csv").is_file()
    assert "## Listening test" in (report / "tables.md").read_text()

    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("reports", "templates"), undefined=jinja2.StrictUndefined,
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    tpl = env.get_template("listen/section.html.j2")
    assert 'id="listening-none"' in tpl.render(listening=None) and "no ratings" in tpl.render(listening=None)
    html = tpl.render(listening=sec)
    assert 'id="listening-table"' in html and "excluded 0 of 2" in html


# --- export ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    from reports.synthetic import make_results

    return make_results(tmp_path_factory.mktemp("listen") / "results", n=3, n_audio=2, latent=False)


def _digest(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def test_export_is_deterministic_self_contained_and_loudness_matched(results, tmp_path):
    import soundfile as sf

    a = L.export(results, tmp_path / "a", n=4, seed=5)
    L.export(results, tmp_path / "b", n=4, seed=5)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")  # byte for byte
    c = L.export(results, tmp_path / "c", n=4, seed=6)
    assert c["test_id"] != a["test_id"]
    d = tmp_path / "a"
    assert sorted(p.name for p in d.iterdir()) == ["audio", "index.html", "listen.css", "listen.js", "ratings",
                                                   "test.json", "trials.js"]
    js = (d / "trials.js").read_text()
    assert json.loads(js[js.index("{"): js.rindex("}") + 1]) == json.loads((d / "test.json").read_text()) == a
    for p in d.rglob("*"):  # no absolute path anywhere, every clip relative and inside the test
        if p.suffix in (".json", ".js", ".html", ".css", ".txt"):
            text = p.read_text()
            for bad in (str(results.resolve()), str(tmp_path), "/tmp/", "/work/", "file:", str(Path.home())):
                assert bad not in text, f"{p.name} contains {bad}"
    assert a["systems"] == ["proposed", "oneshot_eq", "deepafx_st_autodiff"]  # not floors, oracle, variants
    assert len(a["trials"]) == 4 and len({t["task"] for t in a["trials"]}) == 4  # spread over tasks
    for t in a["trials"]:
        kinds = [c["condition"] for c in t["conditions"]]
        assert kinds.count(L.HIDDEN) == 1 and kinds.count(L.ANCHOR) == 1 and kinds.count(L.SYSTEM) == 3
        assert sorted(c["id"] for c in t["conditions"]) == [f"c{i}" for i in range(1, 6)]
        assert t["level_lufs"] <= L.LEVEL_LUFS
        clips = [t["reference"], *t["conditions"]]
        for c in clips:
            assert not c["src"].startswith("/") and (d / c["src"]).resolve().is_relative_to(d.resolve())
            x, sr = sf.read(str(d / c["src"]), always_2d=True)
            assert sr == t["sample_rate"] and np.max(np.abs(x)) <= L.HEADROOM + 1e-3  # clip-safe
            assert L._loudness(x, sr) == pytest.approx(t["level_lufs"], abs=0.3)  # matched
            assert c["loudness_lufs"] + c["gain_db"] == pytest.approx(t["level_lufs"], abs=0.02)


def test_trial_gains_lower_the_common_level_when_a_clip_would_clip():
    sr = 8000
    t = np.arange(sr) / sr
    quiet = (0.01 * np.sin(2 * np.pi * 440 * t))[:, None]
    spiky = 0.02 * np.sin(2 * np.pi * 440 * t)
    spiky[100] = 0.9  # a peak far above its loudness
    level, g = L.trial_gains({"quiet": quiet, "spiky": spiky[:, None]}, sr)
    assert level < L.LEVEL_LUFS
    assert 0.9 * 10 ** (g["spiky"]["gain_db"] / 20) == pytest.approx(L.HEADROOM, abs=0.01)
    for k in g:
        assert g[k]["loudness_lufs"] + g[k]["gain_db"] == pytest.approx(level, abs=0.02)
    level, g = L.trial_gains({"silent": np.zeros((sr, 1)), "quiet": quiet}, sr)
    assert g["silent"] == {"gain_db": 0.0, "loudness_lufs": None} and level == L.LEVEL_LUFS


def test_the_command(results, tmp_path, capsys):
    from bench.cli import main

    out = tmp_path / "test"
    assert main(["listen", "export", "--out", str(out), "--results", str(results), "--systems", "proposed,oracle",
                 "--n", "50", "--seed", "1"]) == 0
    said = capsys.readouterr().out
    assert "hidden reference, anchor, proposed, oracle" in said and "only" in said  # fewer examples than asked
    spec = json.loads((out / "test.json").read_text())
    assert {t["task"].split("/")[1] for t in spec["trials"]} == {"peq", "delay"}  # the oracle has no wild output
    assert main(["listen", "export", "--out", str(out), "--results", str(results), "--systems", "nope"]) == 2
    assert "nope not in" in capsys.readouterr().err
    ratings = out / "ratings"
    pd.DataFrame(rows("A", 2, [100, 100], {"proposed": [60, 70], "oracle": [90, 95]})).to_csv(ratings / "A.csv")
    pd.DataFrame(rows("B", 2, [70, 100], {"proposed": [50, 80], "oracle": [90, 90]})).to_csv(ratings / "B.csv")
    assert main(["listen", "analyze", str(ratings / "A.csv"), str(ratings / "B.csv"),
                 "--results", str(results)]) == 0
    said = capsys.readouterr().out
    assert "excluded 1 of 2: B (hidden reference below 90 in 1 of 2 trials)" in said
    assert (out / "analysis" / "listening.csv").is_file() and (results / "listening" / "listening.md").is_file()
    assert main(["listen", "analyze", str(ratings / "missing.csv")]) == 2
