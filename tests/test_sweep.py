"""Sweeps on real storages (SQLite, a journal file, PostgreSQL started from the system's binaries) and a real MLflow
store, with a tiny but real trainable system registered here (so the tests do not wait for the big ones)."""

import argparse
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bench.config import ConfigError, load_config
from bench.systems import Estimate, System, register_system

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
NAME = "sweep_gain"


@register_system(NAME)
class SweepGain(System):
    """A linear controller on (input level, reference level) that predicts the ``gain`` effect's setting, trained
    by gradient descent through a differentiable gain: the level of the input after the predicted gain against
    the target's level (levels in dB add, so the render is exact on levels)."""

    name = NAME
    controls = {"gain"}
    trainable = True

    @dataclass
    class Config:
        lr: float = 0.05
        steps: int = 20
        batch: int = 8
        train_examples: int = 16  # per training task
        validate_every: int = 5
        diverge_above_lr: float = 0.0  # > 0: the loss turns NaN when lr is above it (a diverging trial)
        step_seconds: float = 0.0  # a pause per step, to make a trial last (interrupt tests)
        interrupt_file: str = ""  # when this file exists, a step removes it and sends this process SIGINT

    @classmethod
    def search_space(cls, trial) -> dict:
        return {"lr": trial.suggest_float("lr", 1e-3, 0.5, log=True),
                "steps": trial.suggest_int("steps", 10, 20, step=5)}

    @staticmethod
    def _levels(clips):
        from bench.audio import rms_db

        return np.asarray(rms_db(np.asarray(clips)), dtype=np.float32)

    def _gain01(self, feats):
        import torch

        return torch.sigmoid(self.model(feats)[:, 0])

    def _features(self, inputs, references):
        import torch

        return torch.as_tensor(np.stack([self._levels(inputs), self._levels(references)], -1) / 20.0)

    def fit(self, tasks, ctx):
        import torch

        from models.nn import train_loop

        c = self.cfg
        torch.manual_seed(ctx.seed)
        self.model = torch.nn.Linear(2, 1)
        exs = [e for t in tasks if t.effect.name == "gain" for e in t.examples(c.train_examples)]
        if not exs:
            raise ValueError(f"{NAME}: no gain training task")
        feats = self._features([e.input for e in exs], [e.reference for e in exs])
        in_db = torch.as_tensor(self._levels([e.input for e in exs]))
        target_db = torch.as_tensor(self._levels([e.target for e in exs]))
        valid = [e for t in ctx.valid_tasks if t.effect.name == "gain" for e in t.examples(2)]
        g = torch.Generator().manual_seed(ctx.seed)

        def batches():
            while True:
                idx = torch.randint(len(exs), (c.batch,), generator=g)
                yield {"f": feats[idx], "in": in_db[idx], "t": target_db[idx]}

        def step(b):
            if c.step_seconds:
                time.sleep(c.step_seconds)
            if c.interrupt_file and os.path.exists(c.interrupt_file):
                os.remove(c.interrupt_file)
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, delivered to this process
                time.sleep(5)
            gain_db = -12.0 + 24.0 * self._gain01(b["f"])  # the gain effect's range
            loss = ((b["in"] + gain_db - b["t"]) ** 2).mean() / 100.0
            if c.diverge_above_lr and c.lr > c.diverge_above_lr:
                loss = loss * float("nan")
            return {"loss": loss}

        def validate():
            p = self.predict(np.stack([e.input for e in valid]), np.stack([e.reference for e in valid]))
            return float(np.mean(np.abs(p[:, 0] - np.stack([e.true_params01 for e in valid])[:, 0])))

        train_loop(name=NAME, params=self.model.parameters(), step=step, batches=_Cycle(batches), steps=c.steps,
                   lr=c.lr, ctx=ctx, validate=validate if valid else None, validate_every=c.validate_every)

    def predict(self, inputs, references):
        import torch

        with torch.no_grad():
            return self._gain01(self._features(inputs, references)).numpy()[:, None].astype(np.float32)

    def match_batch(self, inputs, references, effect):
        if effect.name != "gain":
            return [Estimate(None, np.asarray(x, dtype=np.float32)) for x in inputs]
        p = self.predict(inputs, references)
        return [Estimate(q, y) for q, y in zip(p, effect.process(inputs, self.sample_rate, p), strict=True)]


class _Cycle:
    def __init__(self, make):
        self.make = make

    def __iter__(self):
        return self.make()


SETS = ['data.seen_corpora=["tones"]', "data.unseen_corpora=[]", 'effects.seen=["gain"]', "effects.unseen=[]",
        "run.progress=false", "run.workers=1"]
EXPERIMENT = "afx-bench-sweeps"


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One MLflow store for the module (creating one costs seconds); tests tell their runs apart by study."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def config(uri, *sets, effects=None):
    return load_config("smoke", sets=[*SETS, f"tracking.uri={uri!r}", *sets], systems=[NAME], effects=effects)


def cli_args(out, uri, *extra, sets=()):
    args = ["--preset", "smoke", "--out", str(out), "--system", NAME]
    for s in [*SETS, f"tracking.uri={uri!r}", *sets]:
        args += ["--set", s]
    return args + [str(a) for a in extra]


def sweep_main(argv) -> int:
    from bench.sweep import main

    return main([str(a) for a in argv])


WORKER = ("import sys; sys.path[:0] = [{tests!r}, {root!r}]; import conftest, test_sweep; "
          "from bench.sweep import main; sys.exit(main(sys.argv[1:]))")


def worker(argv, stdout=subprocess.PIPE) -> subprocess.Popen:
    """`afx-bench sweep` in its own process, with this file's test system and corpus registered."""
    code = WORKER.format(tests=str(TESTS), root=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", code, *map(str, argv)], stdout=stdout,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def load_study(storage, name):
    import optuna

    from bench.sweep import open_storage

    st, _ = open_storage(storage, Path("."))
    return optuna.load_study(study_name=name, storage=st)


def mlflow_runs(uri, study):
    """(parent runs, trial runs) of one study."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], f"tags.study = '{study}'", max_results=1000)
    return ([r for r in runs if r.data.tags.get("kind") == "sweep"],
            [r for r in runs if r.data.tags.get("kind") == "trial"])


# --- fast unit checks ---------------------------------------------------------------------------------------


def test_objectives_are_checked_at_start(mlflow_uri):
    from bench.plan import Plan
    from bench.sweep import parse_objectives

    plan = Plan.build(config(mlflow_uri, effects=["gain", "peq4"]))
    (o,) = parse_objectives([], [], plan.valid)
    assert (o.key, o.direction, [t.id for t in o.tasks]) == ("mrstft", "minimize", ["tones/gain/valid"])
    a, b = parse_objectives(["param_mae/gain_db:gain", "mrstft:peq4|gain"], ["max", "minimize"], plan.valid)
    assert (a.metric, a.direction, len(a.tasks), b.label, len(b.tasks)) == ("param_mae", "maximize", 1,
                                                                           "mrstft:peq4|gain", 2)
    for specs, dirs, match in [
        (["nope"], [], "unknown metric 'nope'.*valid: .*mrstft"),
        (["mrstft:delay"], [], "selects no validation task.*tones/gain/valid"),
        (["mrstft", "param_mae"], ["minimize"], "one per objective"),
        (["mrstft"], ["sideways"], "valid: minimize, maximize"),
        (["mrstft", "mrstft"], [], "named twice"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_objectives(specs, dirs, plan.valid)


def test_unknown_objective_and_bad_storage_fail_before_any_trial(tmp_path, mlflow_uri, capsys):
    rc = sweep_main(cli_args(tmp_path, mlflow_uri, "--objective", "mrstfx", "--trials", 1))
    assert rc == 2 and "unknown metric 'mrstfx'" in capsys.readouterr().err
    rc = sweep_main(cli_args(tmp_path, mlflow_uri, "--objective", "param_mae/nope:gain", "--trials", 1))
    assert rc == 2 and "has no score 'param_mae/nope'" in capsys.readouterr().err
    rc = sweep_main(cli_args(tmp_path, mlflow_uri, "--system", "bypass", "--trials", 1))
    assert rc == 2 and "'bypass' is not a trainable system" in capsys.readouterr().err
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    for url, match in [
        ("optuna.db", "not a storage URL"),
        ("pg://somewhere/db", "cannot open it"),
        (f"sqlite:///{tmp_path}/no/such/dir/optuna.db", "cannot open it"),
        (f"journal:{tmp_path}/no/such/dir/optuna.log", "no such directory"),
        (f"postgresql+psycopg://u:secret@127.0.0.1:{closed}/db", "cannot open it|driver is not installed"),
    ]:
        rc = sweep_main(cli_args(tmp_path, mlflow_uri, "--storage", url, "--trials", 1))
        err = capsys.readouterr().err
        assert rc == 2, url
        assert "--storage" in err and re.search(match, err), err
        assert "secret" not in err  # passwords are never printed
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "best_params.toml").exists()


def test_toml_writer_round_trips_and_run_reads_it(tmp_path):
    from bench.commands import config_args, load
    from bench.sweep import write_best_params

    path = tmp_path / "best_params.toml"
    values = {"lr": 1.5e-05, "steps": 30, "flag": True, "mode": 'a "quoted"\nname é', "sizes": [8, 16], "big": 1e300}
    write_best_params(path, "other", {"x": 1}, {"study": "s1", "trial": 0, "values": [math.inf]})
    write_best_params(path, NAME, values, {"study": "s2", "trial": 3, "values": [0.5]})
    back = tomllib.loads(path.read_text())
    assert back["systems"][NAME] == values and back["systems"]["other"] == {"x": 1}
    assert back["sweep"][NAME]["trial"] == 3 and back["sweep"]["other"]["values"] == [math.inf]
    write_best_params(path, NAME, {"lr": 0.01, "steps": 20}, {"study": "s2", "trial": 4})
    assert tomllib.loads(path.read_text())["systems"][NAME] == {"lr": 0.01, "steps": 20}  # replaced, not merged
    # `afx-bench run --params-from` applies it
    write_best_params(tmp_path / "only.toml", NAME, {"lr": 0.01, "steps": 20}, {"study": "s", "trial": 1})
    p = argparse.ArgumentParser()
    config_args(p)
    cfg = load(p.parse_args(["--preset", "smoke", "--systems", NAME, "--params-from", str(tmp_path / "only.toml")]))
    assert cfg.system_config(NAME) == {"lr": 0.01, "steps": 20}


def test_samplers_are_seeded_per_trial_number_and_pruners_chosen():
    import optuna

    from bench.sweep import make_pruner, make_sampler

    assert isinstance(make_pruner("median", 3, 1), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("hyperband", 3, 1), optuna.pruners.HyperbandPruner)
    assert isinstance(make_pruner("median", 3, 2), optuna.pruners.NopPruner)  # multi-objective: no pruning
    with pytest.raises(ConfigError, match="valid: median, hyperband, none"):
        make_pruner("asha", 3, 1)

    def params(seed, n=4):
        study = optuna.create_study(sampler=make_sampler("tpe", seed))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
        return [t.params["x"] for t in study.trials]

    a, b, c = params(0), params(0), params(1)
    assert a == b and a != c and len(set(a)) == len(a)  # reproducible, seed-dependent, and trials differ
    fixed = optuna.create_study(sampler=make_sampler("random", 0, {"x": 0.25}))
    fixed.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("y", 0, 1), n_trials=2)
    assert [t.params["x"] for t in fixed.trials] == [0.25, 0.25]


# --- sweeps -------------------------------------------------------------------------------------------------


def test_sweep_logs_nested_trials_and_writes_best_params(tmp_path, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from bench.sweep import SweepOptions, sweep

    cfg = config(mlflow_uri)
    res = sweep(cfg, tmp_path, NAME, SweepOptions(trials=3, pruner="none", study="basic"), log=lambda *_: None)
    assert (tmp_path / "optuna.db").is_file()  # the default storage
    assert res.states == {"complete": 3} and res.mine == 3
    best = tomllib.loads((tmp_path / "best_params.toml").read_text())
    assert set(best["systems"][NAME]) == {"lr", "steps"}
    assert best["sweep"][NAME]["trial"] == res.best_trial and best["sweep"][NAME]["values"] == res.best_values
    study = load_study(f"sqlite:///{tmp_path}/optuna.db", "basic")
    assert study.best_trial.user_attrs["config"] == best["systems"][NAME]
    assert (tmp_path / "sweeps" / "basic" / "trials.csv").is_file()

    parents, trials = mlflow_runs(mlflow_uri, "basic")
    assert len(parents) == 1 and len(trials) == 3
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["best_trial"] == str(res.best_trial)
    assert parent.data.metrics["trials/complete"] == 3
    for r in trials:
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["state"] == "complete" and r.info.status == "FINISHED"
        assert {"lr", "steps", "trial"} <= set(r.data.params)
        assert {"objective/mrstft", "valid/mrstft/tones/gain/valid", "intermediate", f"{NAME}/loss"} <= set(
            r.data.metrics)
    assert sorted(int(r.data.tags["trial"]) for r in trials) == [0, 1, 2]
    hist = MlflowClient(mlflow_uri).get_metric_history(trials[0].info.run_id, "intermediate")
    assert sorted(m.step for m in hist)[:2] == [5, 10]  # every validate_every steps

    # a rerun resumes the same study; a study made with other settings or directions is refused
    res2 = sweep(cfg, tmp_path, NAME, SweepOptions(trials=1, pruner="none", study="basic"), log=lambda *_: None)
    assert res2.states == {"complete": 4} and res2.mine == 1
    with pytest.raises(ConfigError, match="created with other settings"):
        sweep(config(mlflow_uri, "tasks.n_valid=3"), tmp_path, NAME, SweepOptions(trials=1, study="basic"))
    with pytest.raises(ConfigError, match="directions"):
        sweep(cfg, tmp_path, NAME, SweepOptions(trials=1, study="basic", directions=["maximize"]))
    assert len(load_study(f"sqlite:///{tmp_path}/optuna.db", "basic").trials) == 4


def test_failing_and_pruned_trials_are_recorded_and_the_study_continues(tmp_path, mlflow_uri):
    from bench.sweep import SweepOptions, sweep

    cfg = config(mlflow_uri, f"systems.{NAME}.diverge_above_lr=0.03")
    opts = SweepOptions(trials=6, pruner_startup=1, study="flaky", objectives=["param_mae:gain"])
    res = sweep(cfg, tmp_path, NAME, opts, log=lambda *_: None)
    assert res.states.get("fail", 0) >= 1 and res.states.get("complete", 0) >= 1, res.states
    assert res.states.get("pruned", 0) >= 1, res.states  # the median pruner, after one finished trial
    assert sum(res.states.values()) == 6
    study = load_study(f"sqlite:///{tmp_path}/optuna.db", "flaky")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert all(t.params["lr"] > 0.03 and "DivergedError" in t.user_attrs["error"] for t in failed)
    _, trials = mlflow_runs(mlflow_uri, "flaky")
    by_state: dict = {}
    for r in trials:
        by_state.setdefault(r.data.tags["state"], []).append(r)
    assert len(by_state["failed"]) == len(failed)
    assert all(r.info.status == "FAILED" and "DivergedError" in r.data.tags["error"] for r in by_state["failed"])
    assert len(by_state.get("pruned", [])) == res.states.get("pruned", 0)
    assert tomllib.loads((tmp_path / "best_params.toml").read_text())["systems"][NAME]["lr"] <= 0.03


def test_multi_objective_study(tmp_path, mlflow_uri):
    from bench.sweep import SweepOptions, sweep

    opts = SweepOptions(trials=2, objectives=["mrstft", "param_mae:gain"], sampler="nsga2", pruner="hyperband",
                        study="multi")
    res = sweep(config(mlflow_uri), tmp_path, NAME, opts, log=lambda *_: None)
    assert res.states == {"complete": 2} and len(res.best_values) == 2
    study = load_study(f"sqlite:///{tmp_path}/optuna.db", "multi")
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    _, trials = mlflow_runs(mlflow_uri, "multi")
    assert all({"objective/mrstft", "objective/param_mae:gain"} <= set(r.data.metrics) for r in trials)
    assert set(tomllib.loads((tmp_path / "best_params.toml").read_text())["systems"][NAME]) == {"lr", "steps"}


# --- objectives of every kind, scored by the runner's Evaluator ---------------------------------------------

# tones count as speech for PESQ; AudioCommons in this process (a worker pool costs seconds to start)
# and PESQ on the first example only: the metric option that once broke the sweep (max_examples) stays covered
FAST = ["tracking.enabled=false", 'metrics.pesq.speech_corpora=["tones"]', "metrics.ac.workers=1",
        "metrics.pesq.max_examples=1"]
KINDS = [  # --objective, the objectives as the study records them, their directions
    ("mrstft", ["mrstft"], ["minimize"]),
    ("param_mae/gain_db:gain", ["param_mae/gain_db:gain"], ["minimize"]),  # a metric's sub-key
    ("ac/brightness", ["ac/brightness"], ["minimize"]),
    ("pesq", ["pesq"], ["maximize"]),  # with metrics.pesq.max_examples (FAST)
    ("ac", ["ac_mean"], ["minimize"]),  # a metric with no score of its own name: its summary
    ("mrstft:peq4", ["mrstft:peq4"], ["minimize"]),  # a task filter (peq4 is an unseen effect here)
    ("mrstft,param_mae:gain", ["mrstft", "param_mae:gain"], ["minimize", "minimize"]),  # multi-objective
]


def run_command(argv) -> int:
    """`afx-bench sweep ARGV` through the command registry, as the CLI runs it."""
    from bench.commands import COMMANDS

    cmd = COMMANDS.get("sweep")
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    return cmd(p.parse_args([str(a) for a in argv]))


@pytest.mark.parametrize(("spec", "labels", "directions"), KINDS, ids=[k[0] for k in KINDS])
def test_every_kind_of_objective_completes_a_trial(tmp_path, spec, labels, directions, capsys):
    argv = cli_args(tmp_path, "", "--effects", "gain,peq4", "--objective", spec, "--trials", 1, "--pruner", "none",
                    "--study", "kind", sets=FAST)
    assert run_command(argv) == 0
    out = capsys.readouterr().out
    assert "trial 0: complete" in out and "warning" not in out, out
    (trial,) = load_study(f"sqlite:///{tmp_path}/optuna.db", "kind").trials
    assert trial.state.name == "COMPLETE" and len(trial.values) == len(labels)
    assert all(math.isfinite(v) for v in trial.values)
    best = tomllib.loads((tmp_path / "best_params.toml").read_text())["sweep"][NAME]
    assert (best["objectives"], best["directions"], best["values"]) == (labels, directions, trial.values)


def test_objective_is_the_mean_over_finite_examples_then_tasks(tmp_path):
    """The sweep scores with bench.cell.Evaluator: a metric's max_examples limits the examples scored, NaN
    examples and tasks are left out, and an objective is the mean over its tasks of the per-task means."""
    from bench.cell import fit_system
    from bench.metrics import get_metric
    from bench.sweep import Sweep, SweepOptions
    from bench.systems import SystemError_, get_system

    def per_example(s, metric, task, system):
        exs = s.examples(task)
        ests = system.match_examples([e.query() for e in exs], task.effect)
        conf = s.cfg.metric_config(metric) | {"max_examples": 0}
        return [d[metric] for d in get_metric(metric, conf, sample_rate=s.cfg.run.sample_rate).score_batch(ests, exs)]

    system = None
    for limit in (1, 0):
        cfg = config("", *FAST, f"metrics.pesq.max_examples={limit}", effects=["gain", "peq4"])
        s = Sweep(cfg, tmp_path, NAME, SweepOptions(objectives=["pesq:*", "param_mae:*"]))
        if system is None:
            system = get_system(NAME, {"steps": 10}, sample_rate=cfg.run.sample_rate)
            fit_system(system, s.plan, progress=False)
        gain, peq4 = sorted(s.objectives[0].tasks, key=lambda t: t.effect.name)
        values, details = s.evaluate(system)
        task_means = []
        for task in (gain, peq4):
            vals = per_example(s, "pesq", task, system)
            assert len(vals) == cfg.tasks.n_valid == 2
            task_means.append(np.mean(vals[:limit or None]))
            assert details[f"valid/pesq/{task.id}"] == pytest.approx(task_means[-1])
        assert values[0] == pytest.approx(np.mean(task_means))
        if limit == 1:
            first, second = per_example(s, "pesq", peq4, system)
            assert first != second  # so the limit shows
        # param_mae is NaN where the system estimates no settings (peq4): that task is left out
        assert math.isnan(details[f"valid/param_mae/{peq4.id}"])
        assert values[1] == pytest.approx(np.mean(per_example(s, "param_mae", gain, system)))
    # NaN on every selected task (tones are no speech for PESQ by default): the trial fails, saying why
    s = Sweep(config("", "tracking.enabled=false", effects=["gain", "peq4"]), tmp_path, NAME,
              SweepOptions(objectives=["pesq", "mrstft:*"]))
    with pytest.raises(SystemError_, match="objective pesq is NaN on every selected validation task"):
        s.evaluate(system)
    # a metric that fails on one task fails the trial (not an objective over fewer tasks), with the metric's error
    mrstft = next(m for m in s.metrics if m.name == "mrstft")
    real = mrstft.score_batch

    def flaky(estimates, examples):
        if "peq4" in examples[0].task_id:
            raise RuntimeError("boom")
        return real(estimates, examples)

    mrstft.score_batch = flaky
    with pytest.raises(SystemError_, match=r"metric mrstft gave no mrstft on tones/peq4/valid \(.*boom"):
        s.evaluate(system)


def test_the_command_imports_nothing_heavy_and_is_registered():
    code = ("import sys, bench.sweep, bench.sweep.command; from bench.sweep import SweepOptions, main; "
            "from bench.commands import COMMANDS; assert type(COMMANDS.get('sweep')).__name__ == 'SweepCommand'; "
            "print(sorted(m for m in ('optuna', 'torch', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_ctrl_c_leaves_the_study_consistent_and_resumable(tmp_path, mlflow_uri, capsys):
    storage = f"journal:{tmp_path / 'optuna.log'}"
    trigger = tmp_path / "interrupt-now"
    argv = cli_args(tmp_path, mlflow_uri, "--storage", storage, "--study", "stop", "--pruner", "none",
                    "--objective", "param_mae:gain",
                    sets=[f"systems.{NAME}.interrupt_file={str(trigger)!r}"])
    assert sweep_main([*argv, "--trials", 1]) == 0
    trigger.touch()  # the next trial gets a SIGINT in the middle of its training
    assert sweep_main([*argv, "--trials", 5]) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err
    study = load_study(storage, "stop")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL"]
    assert study.trials[1].user_attrs["interrupted"] is True
    _, runs = mlflow_runs(mlflow_uri, "stop")
    killed = [r for r in runs if r.data.tags["state"] == "interrupted"]
    assert len(killed) == 1 and killed[0].info.status == "KILLED" and killed[0].data.tags["trial"] == "1"
    assert sweep_main([*argv, "--trials", 1]) == 0  # resumes: the interrupted trial stays failed, a new one runs
    assert [t.state.name for t in load_study(storage, "stop").trials] == ["COMPLETE", "FAIL", "COMPLETE"]


def check_shared_study(storage, study_name, uri, procs, per_worker):
    for p in procs:
        text, _ = p.communicate(timeout=300)
        assert p.returncode == 0, text[-3000:]
    trials = load_study(storage, study_name).trials
    n = per_worker * len(procs)
    assert sorted(t.number for t in trials) == list(range(n)), "lost or duplicated trials"
    assert all(t.state.name == "COMPLETE" for t in trials)
    workers: dict = {}
    for t in trials:
        workers.setdefault(t.user_attrs["worker"], []).append(t.number)
    assert sorted(len(v) for v in workers.values()) == [per_worker] * len(procs), workers  # each contributed
    assert len({t.params["lr"] for t in trials}) == n  # workers do not propose the same settings
    parents, runs = mlflow_runs(uri, study_name)
    assert len(parents) == 1, "the workers log under one study run"
    assert sorted(int(r.data.tags["trial"]) for r in runs) == list(range(n))
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert {r.data.tags["worker"] for r in runs} == set(workers)


def test_two_worker_processes_share_a_journal_study(tmp_path, mlflow_uri):
    storage = f"journal:{tmp_path / 'optuna.log'}"
    argv = cli_args(tmp_path, mlflow_uri, "--storage", storage, "--study", "journal2", "--trials", 3,
                    "--pruner", "none", "--objective", "param_mae:gain")
    check_shared_study(storage, "journal2", mlflow_uri, [worker(argv) for _ in range(2)], 3)


@pytest.mark.slow
def test_sigint_from_outside_stops_a_worker_cleanly(tmp_path):
    """Ctrl-C from the terminal: a separate worker process, its own MLflow store, SIGINT mid-trial."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"journal:{tmp_path / 'optuna.log'}"
    argv = cli_args(tmp_path, uri, "--storage", storage, "--study", "outside", "--trials", 20, "--pruner", "none",
                    sets=[f"systems.{NAME}.step_seconds=0.05"])
    log = tmp_path / "worker.log"
    with open(log, "w") as f:
        p = worker(argv, stdout=f)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and p.poll() is None and "trial 0: complete" not in log.read_text():
            time.sleep(0.2)
        time.sleep(0.5)  # into the next trial
        p.send_signal(signal.SIGINT)
        p.wait(timeout=120)
    out = log.read_text()
    assert p.returncode == 130, out[-3000:]
    assert "rerun the same command to resume" in out
    study = load_study(storage, "outside")
    assert "RUNNING" not in {t.state.name for t in study.trials}
    assert sum(bool(t.user_attrs.get("interrupted")) for t in study.trials) <= 1
    _, runs = mlflow_runs(uri, "outside")
    assert "RUNNING" not in {r.info.status for r in runs}


# --- PostgreSQL -------------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_two_worker_processes_share_a_postgresql_study(tmp_path, mlflow_uri, postgres_url):
    argv = cli_args(tmp_path, mlflow_uri, "--storage", postgres_url, "--study", "postgres2", "--trials", 3,
                    "--pruner", "none", "--objective", "param_mae:gain")
    check_shared_study(postgres_url, "postgres2", mlflow_uri, [worker(argv) for _ in range(2)], 3)
