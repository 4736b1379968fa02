"""Seeds and reproducibility: the same command on the same commit gives bit-identical scores (all but the cost
counters, which time the machine); `afx-bench compare` passes two such runs and flags a planted difference; `afx-bench
power` reads a run."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from bench.cli import main

# the smoke preset, narrowed to a trained floor, the proposed model (SPSA renders on a thread pool), ITO (CMA-ES) and
# random draws, on a seen effect and a wild kind, both corpora
ARGS = ["--preset", "smoke", "--systems", "random,constant,proposed,ito_cmaes", "--effects", "peq4,room",
        "--set", 'metrics.include=["param_mae", "mrstft"]', "--set", "run.report=false",
        "--set", "tracking.enabled=false"]
KEYS = ["system", "task", "seed", "example", "metric"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    outs = [tmp_path_factory.mktemp("rerun") / f"run{i}" for i in (1, 2)]
    for out in outs:
        assert main(["run", *ARGS, "--out", str(out)]) == 0
    return outs


def _scores(out) -> pd.DataFrame:
    s = pd.read_parquet(out / "scores.parquet")
    return s.sort_values(KEYS).reset_index(drop=True)


def test_the_same_command_gives_bit_identical_scores(two_runs):
    a, b = (_scores(o) for o in two_runs)
    cost = a["metric"].str.startswith("cost/")
    assert cost.any() and len(a) == len(b) and (a[KEYS] == b[KEYS]).all().all()
    va, vb = a.loc[~cost, "value"].to_numpy(), b.loc[~cost, "value"].to_numpy()
    assert np.array_equal(va, vb, equal_nan=True)  # bit for bit, NaN (not applicable) where NaN
    assert set(a["system"]) == {"random", "constant", "proposed", "proposed:best_pick", "ito_cmaes"} and np.isfinite(va).sum() > 100
    assert a["source_id"].equals(b["source_id"]) and a["seed"].notna().all()  # seeds in every record


def test_compare_passes_two_identical_runs(two_runs, capsys):
    assert main(["compare", str(two_runs[0]), str(two_runs[1])]) == 0
    out = capsys.readouterr().out
    assert "no difference beyond the intervals" in out and "primary comparisons:" in out


def test_compare_flags_a_planted_difference(two_runs, tmp_path, capsys):
    from bench.results import SUMMARY_FILE, summarise

    planted = tmp_path / "planted"
    shutil.copytree(two_runs[1], planted)
    s = pd.read_parquet(planted / "scores.parquet")
    hit = (s["system"] == "proposed") & (s["effect"] == "peq4") & (s["metric"] == "mrstft")
    s.loc[hit, "value"] += 1.0  # a shift far beyond the spread between its sources
    s.to_parquet(planted / "scores.parquet", index=False)
    summarise(s).to_csv(planted / SUMMARY_FILE, index=False)
    assert main(["compare", str(two_runs[0]), str(planted), "--csv", str(tmp_path / "cmp")]) == 1
    out = capsys.readouterr().out
    cells = pd.read_csv(tmp_path / "cmp_cells.csv")
    flagged = cells[cells["status"] != "identical"]
    assert set(flagged["system"]) == {"proposed"} and set(flagged["effect"]) == {"peq4"}
    assert set(flagged["metric"]) == {"mrstft"} and (flagged["status"] == "differs").all()
    prim = pd.read_csv(tmp_path / "cmp_primary.csv").set_index(["comparison", "effect_set", "metric"])
    assert prim.loc[("proposed vs constant", "seen", "mrstft"), "status"].startswith("differs")
    assert prim.loc[("proposed vs constant", "wild", "mrstft"), "status"] == "identical"
    assert "proposed / peq4 / speech / mrstft" in out and "difference(s) beyond the intervals" in out


def test_power_reads_a_run(two_runs, tmp_path, capsys):
    assert main(["power", "--out", str(two_runs[0]), "--csv", str(tmp_path / "power.csv")]) == 0
    out = capsys.readouterr().out
    assert "sources needed" in out and "proposed vs constant" in out
    t = pd.read_csv(tmp_path / "power.csv")
    assert {"sources_needed", "detectable", "effect_size", "n_sources"} <= set(t.columns)
    assert (t["n_sources"] == 4).all()  # 2 voices and 2 pieces, each met in every task of the set, counted once
    assert main(["power", "--out", str(tmp_path / "none")]) == 2
