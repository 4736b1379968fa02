import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bench.config import load_config
from bench.runner import Runner, run
from bench.systems import Estimate, System, register_system

ALL_EFFECTS = ["peq4", "peq_comp", "compressor", "distortion", "delay", "reverb", "chorus", "phaser", "bitcrush",
               "ladder_filter", "gain"]


def tones_config(**kw):
    sets = ['data.seen_corpora=["tones"]', "data.unseen_corpora=[]", "run.progress=false", "run.report=false",
            "tasks.n_test=3", 'metrics.include=["param_mae", "mrstft"]', *kw.pop("sets", [])]
    return load_config("smoke", sets=sets, **kw)


@register_system("broken")
class Broken(System):
    name = "broken"

    def match(self, input, reference, effect):
        raise RuntimeError("deliberately broken")


@register_system("nan_out")
class NaNOut(System):
    name = "nan_out"
    controls = "any"

    @dataclass
    class Config:
        pass

    def match(self, input, reference, effect):
        return Estimate(effect.default01(), np.full_like(input, np.nan))


@register_system("halves")
class Halves(System):
    """Half the input, with a labelled variant (the input itself) and a text extra."""

    name = "halves"

    def match(self, input, reference, effect):
        return Estimate(None, input * 0.5, {"picked": "half", "renders": 2},
                        variants={"whole": Estimate(None, input.copy(), {"picked": "whole"})})


def test_variants_are_scored_as_labelled_systems_and_text_extras_kept(tmp_path):
    cfg = tones_config(systems=["halves", "bypass"], effects=["gain"])
    summary = run(cfg, tmp_path, log=lambda *_: None)
    mean = summary.set_index(["system", "metric"])["mean"]
    assert mean["halves:whole", "mrstft"] == pytest.approx(mean["bypass", "mrstft"])  # the same audio, scored alike
    assert mean["halves", "mrstft"] != mean["bypass", "mrstft"]
    assert mean["halves", "cost/renders"] == 2
    info = pd.read_parquet(tmp_path / "info.parquet")
    assert set(zip(info["system"], info["key"], info["value"], strict=True)) == {("halves", "picked", "half"),
                                                                               ("halves:whole", "picked", "whole")}
    assert len(info) == 2 * 3  # per example (tasks.n_test = 3)
    assert any((tmp_path / "audio").rglob("halves_whole.wav"))
    assert len(list((tmp_path / "cells").rglob("*.parquet"))) == 2  # one cell per system x task: variants ride along
    lines = []
    run(cfg, tmp_path, log=lines.append)  # resumed: nothing recomputed, the variant's rows kept
    assert any("2 already done" in str(m) for m in lines)
    assert "halves:whole" in set(pd.read_parquet(tmp_path / "scores.parquet")["system"])


def test_oracle_is_the_lower_bound_on_every_effect(tmp_path):
    cfg = tones_config(systems=["bypass", "random", "oracle"], effects=ALL_EFFECTS)
    summary = run(cfg, tmp_path, log=lambda *_: None)
    mean = summary.set_index(["system", "effect", "metric"])["mean"]
    for eff in ALL_EFFECTS:
        assert mean["oracle", eff, "param_mae"] == 0.0
        assert np.isnan(mean["bypass", eff, "param_mae"])  # not applicable, never 0
        assert mean["random", eff, "param_mae"] > 0
        assert mean["oracle", eff, "mrstft"] < mean["bypass", eff, "mrstft"], eff
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert {"system", "example", "effect", "effect_set", "corpus", "split", "metric", "value"} <= set(scores.columns)
    assert not scores.duplicated(["system", "task", "example", "metric"]).any()
    params = pd.read_parquet(tmp_path / "params.parquet")
    assert set(params["system"]) == {"random", "oracle"}
    assert (params.query("system == 'oracle'")["estimate"] == params.query("system == 'oracle'")["true"]).all()
    assert any((tmp_path / "audio").rglob("oracle.wav"))


def test_a_failing_system_does_not_sink_the_run(tmp_path):
    cfg = tones_config(systems=["broken", "nan_out", "bypass"], effects=["gain", "peq4"])
    summary = run(cfg, tmp_path, log=lambda *_: None)
    fails = pd.read_csv(tmp_path / "failures.csv")
    assert set(fails["system"]) == {"broken", "nan_out"} and len(fails) == 4
    assert fails["error"].str.contains("deliberately broken").any()
    assert fails["error"].str.contains("NaN/Inf in its output").any()
    assert set(summary["system"]) == {"bypass"}


def test_mlflow_runs_compare_side_by_side(tmp_path):
    import mlflow

    cfg = tones_config(systems=["bypass", "oracle"], effects=["gain"])
    run(cfg, tmp_path, log=lambda *_: None)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(cfg.run.name)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "benchmark"]
    cells = [r for r in runs if r.data.tags.get("kind") == "cell"]
    assert len(parents) == 1 and len(cells) == 2
    for r in cells:
        assert r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        for tag in ("system", "effect", "effect_set", "corpus", "corpus_set", "split", "preset", "config_hash",
                    "git_sha"):
            assert tag in r.data.tags
    assert set(cells[0].data.metrics) == set(cells[1].data.metrics) >= {"mrstft"}
    assert "run.seed" in parents[0].data.params


def test_rerun_skips_finished_cells(tmp_path):
    cfg = tones_config(systems=["bypass", "random"], effects=["gain"])
    run(cfg, tmp_path, log=lambda *_: None)
    before = pd.read_parquet(tmp_path / "scores.parquet")
    lines = []
    Runner(cfg, tmp_path, log=lines.append).run()
    assert "(2 already done)" in lines[0]
    pd.testing.assert_frame_equal(before, pd.read_parquet(tmp_path / "scores.parquet"))


@pytest.fixture
def wav_folder(tmp_path):
    d = tmp_path / "wavs"
    d.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(24000 * 2) / 24000
    for i in range(8):
        x = 0.3 * np.sin(2 * np.pi * 100 * (i + 1) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        sf.write(d / f"f{i}.wav", (x + 0.03 * rng.standard_normal(len(t))).astype(np.float32), 24000)
    return d


def _cli(folder, out):
    return [sys.executable, "-m", "bench", "run", "--preset", "smoke", "--out", str(out),
            "--systems", "bypass,random,oracle", "--effects", "gain,peq4,delay,chorus",
            "--set", f'data.seen_corpora=["folder:{folder}"]', "--set", "data.unseen_corpora=[]",
            "--set", "run.report=false", "--set", "tasks.n_test=3",
            "--set", 'metrics.include=["param_mae", "mrstft"]']


def test_resume_after_the_process_is_killed(tmp_path, wav_folder):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cli(wav_folder, ref), check=True, env=env, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(wav_folder, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "cells").rglob("*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "cells").rglob("*.parquet")))
    assert 3 <= done_before < 12, "the kill should land mid-run"
    result = subprocess.run(_cli(wav_folder, out), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"({done_before} already done)" in result.stdout or "already done" in result.stdout
    a = pd.read_parquet(ref / "scores.parquet")
    b = pd.read_parquet(out / "scores.parquet")
    keys = ["system", "task", "example", "metric"]
    assert not b.duplicated(keys).any()
    merged = a.merge(b, on=keys, suffixes=("_ref", "_resumed"), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), "rows lost or added by the resume"
    ok = merged[~merged["metric"].str.startswith("cost/")]
    np.testing.assert_allclose(ok["value_ref"], ok["value_resumed"], rtol=1e-6, equal_nan=True)
