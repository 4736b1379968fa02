"""The frontier section of the report (reports/frontier.py): known answers on a hand-made score table."""

import numpy as np
import pandas as pd

from reports import frontier as Fr
from reports.results import Results

# mean MR-STFT per system (the same on every example up to small noise), and renders per example
MEANS = {"proposed": 1.0, "ito_cmaes@4": 1.4, "ito_cmaes@16": 0.9, "proposed_ito@4": 0.95, "proposed_ito@16": 0.8,
         "bypass": 2.0, "oracle": 0.0}
RENDERS = {"ito_cmaes@4": 4, "ito_cmaes@16": 16, "proposed_ito@4": 4, "proposed_ito@16": 16}


def scores(n_sources=8, tasks=("speech/peq/test", "speech/delay/test")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for task in tasks:
        effect = task.split("/")[1]
        eset = "seen" if effect == "peq" else "unseen"
        for i in range(n_sources):
            for system, m in MEANS.items():
                base = dict(system=system, task=task, effect=effect, effect_set=eset, corpus="speech",
                            corpus_set="seen", split="test", example=i, source_id=f"v{i}", seed=0)
                rows.append({**base, "metric": "mrstft", "value": m + rng.normal(0, 0.01)})
                if system in RENDERS:
                    rows.append({**base, "metric": "cost/renders", "value": float(RENDERS[system])})
    return pd.DataFrame(rows)


def results() -> Results:
    return Results(out=__import__("pathlib").Path("."), scores=scores(), systems=list(MEANS), focus="proposed")


def test_points_families_and_renders():
    f = Fr.build(results(), n_resamples=200)
    p = f.points[(f.points["corpus_set"] == "all") & (f.points["effect_set"] == "seen")].set_index("system")
    assert "oracle" not in p.index  # never on the plane
    assert p.loc["proposed", "renders"] == 1.0 and p.loc["ito_cmaes@16", "renders"] == 16.0
    assert p.loc["ito_cmaes@4", "family"] == "ito_cmaes"
    assert abs(p.loc["proposed_ito@16", "mean"] - 0.8) < 0.01
    assert (p["ci_low"] <= p["mean"]).all() and (p["mean"] <= p["ci_high"]).all()


def test_reach_cells_tests_and_paragraph():
    f = Fr.build(results(), n_resamples=200)
    reach = f.reach[f.reach["effect_set"] == "seen"].set_index("family")
    assert reach.loc["ito_cmaes", "renders_needed"] == 16  # 1.4 at 4 renders, 0.9 <= 1.0 at 16
    assert reach.loc["proposed_ito", "renders_needed"] == 4
    cells = f.cells.set_index(["a", "b", "effect_set"])
    assert cells.loc[("proposed_ito@16", "ito_cmaes@16", "seen"), "a_better"] == 1
    assert cells.loc[("proposed_ito@4", "proposed", "unseen"), "cells"] == 1
    t = f.tests[(f.tests["a"] == "proposed_ito@16") & (f.tests["b"] == "ito_cmaes@16")
                & (f.tests["effect_set"] == "seen")].iloc[0]
    assert t["n_sources"] == 8 and t["p"] < 0.05 and t["q"] >= t["p"] and t["diff"] < 0
    text = " ".join(f.paragraph)
    assert "at 4 renders, proposed_ito@4" in text and "at 16 renders, proposed_ito@16" in text
    assert "then ito_cmaes@16 (0.9" in text and "paired p = " in text  # the next best at 16 renders, tested
    md = Fr.markdown(f)
    assert "Renders per example needed to reach proposed" in md and "| seen | ito_cmaes |" in md


def test_no_frontier_without_a_search():
    r = results()
    r.scores = r.scores[r.scores["metric"] != "cost/renders"]
    assert Fr.build(r, n_resamples=0) is None
