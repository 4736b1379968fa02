import os
import shutil
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
        assert float(r.data.tags["task_seconds"]) > 0 and int(r.data.params["n_examples"]) == cfg.tasks.n_test
        assert r.info.status == "FINISHED"
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


def _mlflow_runs(out):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("afx-bench").experiment_id], max_results=1000)


def test_a_killed_run_locks_resumes_and_reports_every_cell(tmp_path, wav_folder):
    """While a run goes, a second one on its folder stops at once naming the holder; after a SIGKILL the report reads
    every cell on disk, and the rerun takes the lock over, marks the dead run's MLflow runs KILLED and resumes to the
    scores of an uninterrupted run."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ref = tmp_path / "ref"
    subprocess.run(_cli(wav_folder, ref), check=True, env=env, capture_output=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(wav_folder, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "cells").rglob("*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGSTOP)  # paused mid-run: alive, holding the folder, for as long as the second takes
    second = subprocess.run(_cli(wav_folder, out), env=env, capture_output=True, text=True, timeout=120)
    first_still_there = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert second.returncode == 3, second.stderr
    assert first_still_there, "the second run should stop while the first still holds the folder"
    assert f"pid {proc.pid}" in second.stderr and "is in use by another afx-bench run" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    done_before = len(list((out / "cells").rglob("*.parquet")))
    assert 3 <= done_before < 12, "the kill should land mid-run"
    left = [r for r in _mlflow_runs(out) if r.info.status == "RUNNING"]
    assert left and all(r.data.tags["afx.pid"] == str(proc.pid) for r in left)  # the parent at least
    report = subprocess.run([sys.executable, "-m", "bench", "report", "--out", str(out)], env=env,
                            capture_output=True, text=True)
    assert report.returncode == 0, report.stderr[-3000:]
    assert f"read {done_before} cell(s)" in report.stdout
    on_disk = pd.concat([pd.read_parquet(p) for p in (out / "cells").rglob("*.parquet")])
    assert len(pd.read_parquet(out / "scores.parquet")) == len(on_disk)  # the merged table holds every cell
    result = subprocess.run(_cli(wav_folder, out), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"({done_before} already done)" in result.stdout
    assert f"pid {proc.pid}" in result.stdout and "taken over" in result.stdout
    assert f"{len(left)} run(s) left RUNNING by a process that ended are marked KILLED" in result.stdout
    status = {r.info.run_id: r.info.status for r in _mlflow_runs(out)}
    assert all(status[r.info.run_id] == "KILLED" for r in left)
    assert len(list((out / "configs").glob("*.json"))) == 2  # each invocation's config kept (not the refused one)
    a = pd.read_parquet(ref / "scores.parquet")
    b = pd.read_parquet(out / "scores.parquet")
    keys = ["system", "task", "example", "metric"]
    assert not b.duplicated(keys).any()
    merged = a.merge(b, on=keys, suffixes=("_ref", "_resumed"), how="outer", indicator=True)
    assert (merged["_merge"] == "both").all(), "rows lost or added by the resume"
    ok = merged[~merged["metric"].str.startswith("cost/")]
    np.testing.assert_allclose(ok["value_ref"], ok["value_resumed"], rtol=1e-6, equal_nan=True)


def test_exit_codes_tell_whether_cells_failed(tmp_path, capsys):
    from bench.cli import main

    args = ["run", "--preset", "smoke", "--effects", "gain", "--set", 'data.seen_corpora=["tones"]',
            "--set", "data.unseen_corpora=[]", "--set", "run.report=false", "--set", "tasks.n_test=2",
            "--set", 'metrics.include=["mrstft"]', "--set", "tracking.enabled=false"]
    assert main([*args, "--out", str(tmp_path / "a"), "--systems", "broken"]) == 1  # every cell failed
    assert "every cell failed" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--systems", "broken,bypass"]) == 0  # one of two failed
    assert "1 of 2 cell(s) failed" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "b"), "--systems", "broken,bypass", "--strict"]) == 1
    assert main([*args, "--out", str(tmp_path / "b"), "--systems", "bypass", "--strict"]) == 0


def test_a_hung_cell_is_ended_and_recorded(tmp_path):
    """``run.cell_timeout_s`` ends a cell that runs too long (ITO with a render budget it would need hours for and no early stop):
    it is recorded as failed at the stage ``timeout`` and the other cells go on."""
    cfg = tones_config(systems=["ito_cmaes", "bypass"], effects=["gain", "peq4"],
                       sets=["run.cell_timeout_s=2", "systems.ito_cmaes.renders=100000000", "systems.ito_cmaes.tolx=0",
                             "tracking.enabled=false"])
    t0 = time.monotonic()
    summary = run(cfg, tmp_path, log=lambda *_: None)
    assert time.monotonic() - t0 < 120
    fails = pd.read_csv(tmp_path / "failures.csv")
    assert set(fails["system"]) == {"ito_cmaes"} and set(fails["stage"]) == {"timeout"} and len(fails) == 2
    assert fails["error"].str.contains("run.cell_timeout_s = 2 s").all()
    assert set(summary["system"]) == {"bypass"} and len(summary.query("metric == 'mrstft'")) == 2


def test_a_copied_results_folder_keeps_its_artifacts(tmp_path):
    """Artifacts live under the folder (MLflow's proxied scheme, resolved against <out>/mlartifacts): a copy keeps
    the original's, a run in the copy writes into the copy, and the original is never touched."""
    import shutil

    from bench.tracking import resolve_checkpoint

    cfg = tones_config(systems=["mean"], effects=["gain"], sets=["systems.mean.n_draws=4"])
    a, b = tmp_path / "a", tmp_path / "b"
    run(cfg, a, log=lambda *_: None)
    shutil.copytree(a, b)
    [train] = [r for r in _mlflow_runs(b) if r.data.tags["kind"] == "train"]
    assert train.info.artifact_uri.startswith("mlflow-artifacts:/")  # no absolute path in the store
    before = sorted(p.relative_to(a) for p in (a / "mlartifacts").rglob("*"))
    shutil.rmtree(a / "mlartifacts")  # the copy does not need the original's
    assert (resolve_checkpoint(f"runs:/{train.info.run_id}/checkpoint", b) / "TRAINED").read_text()
    cfg2 = tones_config(systems=["mean"], effects=["gain"], sets=["systems.mean.n_draws=4", "run.seeds=[0, 1]"])
    run(cfg2, b, log=lambda *_: None)
    new = [r for r in _mlflow_runs(b) if r.data.tags["kind"] == "train" and r.data.tags["seed"] == "1"]
    assert new and (b / "mlartifacts" / new[0].info.run_id / "artifacts" / "checkpoint").is_dir()
    assert not (a / "mlartifacts").exists() and before  # nothing written to the original


def test_a_folder_of_bad_files_warns_one_line_each(tmp_path, wav_folder):
    bad = tmp_path / "mixed"
    shutil.copytree(wav_folder, bad)
    (bad / "corrupt.wav").write_bytes(b"RIFFjunk")
    sf.write(bad / "silent.wav", np.zeros(48000, np.float32), 24000)
    r = subprocess.run([sys.executable, "-m", "bench", "data", "--preset", "smoke", "--corpora", f"folder:{bad}",
                        "--systems", "bypass", "--effects", "gain", "--set", "tasks.n_test=2"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if "left out" in line]
    assert len(lines) == 2 and all(line.startswith("warning: folder:") for line in lines), r.stderr
    assert "warnings.warn" not in r.stderr and "CorpusWarning" not in r.stderr


def test_a_trainings_logged_calls_replay_into_mlflow_in_batches(tmp_path):
    """Run.replay: what a training logged, in order, into a real MLflow store; consecutive log_metrics calls are
    merged into one batch (a training logs per step), and every step's value is kept, a repeated value too."""
    from bench.tracking import Tracker

    tracker = Tracker(tmp_path)
    run = tracker.start("train/x/seed-0", {"kind": "train"})
    batches = []
    log_batch = tracker.client.log_batch
    tracker.client.log_batch = lambda *a, **k: (batches.append(k), log_batch(*a, **k))[1]
    calls = [("log_metrics", ({"loss": 1.0 / (s + 1), "lr": 0.1},), {"step": s}) for s in range(1200)]
    calls += [("log_metrics", ({"loss": 0.5},), {"step": 1}),  # a value logged twice at one step
              ("set_tags", ({"phase": "controller"},), {}),
              ("log_metrics", ({"valid": 0.25},), {"step": 7})]
    run.replay(calls)
    run.end()
    assert len(batches) == 7  # 2,401 values in 5 batches of at most 500, the tag, then the last value
    client = tracker.client
    loss = sorted((m.step, m.value) for m in client.get_metric_history(run.id, "loss"))
    assert len(loss) == 1201 and loss[0] == (0, 1.0) and (1, 0.5) in loss and loss[-1] == (1199, 1 / 1200)
    assert len(client.get_metric_history(run.id, "lr")) == 1200
    assert [(m.step, m.value) for m in client.get_metric_history(run.id, "valid")] == [(7, 0.25)]
    assert client.get_run(run.id).data.tags["phase"] == "controller"
