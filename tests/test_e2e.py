"""The smoke preset end to end, through the CLI, on the embedded corpora: what `tox -e bench` does, small."""

import pandas as pd

from bench.cli import main
from bench.config import load_config


def test_smoke_preset_end_to_end(tmp_path, capsys):
    out = tmp_path / "smoke"
    assert main(["run", "--preset", "smoke", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean over tasks" in printed and "mrstft" in printed
    cfg = load_config("smoke")
    scores = pd.read_parquet(out / "scores.parquet")
    summary = pd.read_csv(out / "summary.csv")
    fails = pd.read_csv(out / "failures.csv")
    assert fails.empty, fails.to_string()
    n_tasks = len(cfg.corpora()) * len(cfg.effect_sets())
    own = scores[~scores["system"].str.contains(":")]
    assert set(own["system"]) == set(cfg.system_names())
    assert own.groupby("system")["task"].nunique().eq(n_tasks).all()
    assert {"speech", "music"} == set(scores["corpus"])
    assert {"seen", "unseen", "wild"} == set(scores["effect_set"])
    # the wild set: no parameters anywhere, no oracle, the proposed model's picks and its labelled upper bound
    wild = scores[scores["effect_set"] == "wild"]
    assert wild[wild["metric"] == "param_mae"]["value"].isna().all()
    assert wild[wild["system"] == "oracle"]["value"].isna().all()
    assert set(wild["system"]) == set(cfg.system_names()) | {"proposed:best_pick"}
    info = pd.read_parquet(out / "info.parquet")
    picks = info[(info["system"] == "proposed") & (info["key"] == "picked") & (info["effect_set"] == "wild")]
    assert len(picks) == 3 * 2 * cfg.tasks.n_test  # every example of 3 kinds x 2 corpora
    assert set(picks["value"]) <= set(cfg.effects.seen) | set(cfg.effects.unseen) | {"bypass"}
    searched = info[(info["system"] == "ito_cmaes") & (info["key"] == "searched")]
    assert set(searched["value"]) == {"peq4+compressor+delay+reverb"}
    assert not scores.duplicated(["system", "task", "example", "metric"]).any()
    assert {"system", "effect", "effect_set", "corpus", "corpus_set", "split", "metric", "mean", "std", "n"} <= set(
        summary.columns)
    # the oracle is the floor; parameter error of bypass is n/a, never 0
    m = summary.groupby(["system", "metric"])["mean"].mean()
    assert m["oracle", "mrstft"] == 0 and m["oracle", "param_mae"] == 0
    assert pd.isna(m["bypass", "param_mae"])
    assert (out / "mlflow.db").exists() and (out / "config.json").exists()
    if (out / "report").exists():
        assert (out / "report" / "report.html").exists()
        primary = pd.read_csv(out / "primary.csv")  # the headline, written with the report
        assert not primary["against"].isin(["oracle", "proposed:best_pick"]).any()
        assert (primary.loc[primary["verdict"] != "not tested", "n_sources"] == 4).all()  # 2 voices + 2 pieces
