"""The protocol of record: training and sweeps never load a test example; the test set is drawn with its own seed;
`--split valid` for development; training seeds; the constant floors; budgets."""

import numpy as np
import pandas as pd
import pytest

from bench.config import load_config
from bench.runner import run
from bench.tasks import Task

TRAINABLE = ["mean", "constant", "proposed", "deepafx_st_autodiff", "deepafx_st_spsa", "oneshot_eq"]


def _tones(*sets, **kw):
    base = ['data.seen_corpora=["tones"]', "data.unseen_corpora=[]", "run.progress=false", "run.report=false",
            "tasks.n_test=3", 'metrics.include=["param_mae", "mrstft"]', "run.audio_examples=0",
            "tracking.enabled=false"]
    return load_config("smoke", sets=[*base, *sets], **kw)


@pytest.fixture
def no_test_examples(monkeypatch):
    """Any attempt to make or read an example of the test split fails the test."""
    example, examples = Task.example, Task.examples

    def guard(method):
        def wrapped(self, *a, **k):
            if self.split == "test":
                raise AssertionError(f"a test example of {self.id} was loaded")
            return method(self, *a, **k)

        return wrapped

    monkeypatch.setattr(Task, "example", guard(example))
    monkeypatch.setattr(Task, "examples", guard(examples))


@pytest.mark.parametrize("name", TRAINABLE)
def test_fit_never_loads_a_test_example(no_test_examples, name, tmp_path):
    from bench.cell import build_system, fit_system
    from bench.plan import Plan

    cfg = _tones(effects=["peq4", "gain"], systems=[name])
    plan = Plan.build(cfg)
    system = build_system(name, cfg, plan.device)
    fit_system(system, plan, checkpoint_dir=tmp_path, progress=False)
    assert system.budget()  # and it says what it spent


def test_a_sweep_never_loads_a_test_example(no_test_examples, tmp_path):
    from bench.sweep import SweepOptions, sweep

    cfg = _tones(effects=["peq4"], systems=["oneshot_eq"])
    res = sweep(cfg, tmp_path, "oneshot_eq", SweepOptions(trials=1, objectives=["mrstft"]), log=lambda *_: None)
    assert res.best_trial == 0


def test_the_test_set_has_its_own_seed_and_training_data_does_not_move():
    from bench.plan import Plan

    a = Plan.build(load_config("smoke", sets=["data.test_seed=0"]))
    b = Plan.build(load_config("smoke"))
    for label in ("speech", "music"):
        ca, cb = a.corpora[label], b.corpora[label]
        for split in ("train", "valid"):
            assert [s.recipe for s in ca.specs(split)] == [s.recipe for s in cb.specs(split)]
        assert [s.recipe for s in ca.specs("test")] != [s.recipe for s in cb.specs("test")]
    ta, tb = a.test[0], b.test[0]
    assert ta.seed == 0 and tb.seed == b.cfg.data.test_seed != 0
    assert not np.array_equal(ta.example(0).input, tb.example(0).input)


def test_split_valid_evaluates_the_validation_tasks(tmp_path):
    summary = run(_tones(systems=["bypass", "oracle"], effects=["gain"], split="valid"), tmp_path,
                  log=lambda *_: None)
    assert set(summary["split"]) == {"valid"}
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert scores["example"].nunique() == 2  # tasks.n_valid in smoke


def test_seeds_train_each_trainable_system_once_per_seed(tmp_path):
    cfg = _tones("run.seeds=[0, 1]", systems=["bypass", "mean", "constant"], effects=["gain", "peq4"])
    summary = run(cfg, tmp_path, log=lambda *_: None)
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    seeds = scores.groupby("system")["seed"].unique().map(sorted).to_dict()
    assert seeds == {"bypass": [0], "mean": [0, 1], "constant": [0, 1]}
    row = summary.query("system == 'constant' and effect == 'peq4' and metric == 'mrstft'").iloc[0]
    assert row["n_seeds"] == 2 and row["n"] == 2 * 3
    budgets = pd.read_csv(tmp_path / "budgets.csv")
    assert sorted(zip(budgets["system"], budgets["seed"], strict=True)) == [
        ("constant", 0), ("constant", 1), ("mean", 0), ("mean", 1)]
    assert (budgets.query("system == 'constant'")["train_renders"] > 0).all()
    assert (budgets["train_seconds"] >= 0).all()
    lines = []
    run(cfg, tmp_path, log=lines.append)  # resumes: every (system, task, seed) cell is done
    assert any("(10 already done)" in str(m) for m in lines)


def test_constant_is_at_least_as_good_as_mean_on_validation(tmp_path):
    """The constant is searched from the mean (among other candidates) on validation, so on the same validation
    examples it cannot be worse than the mean."""
    cfg = _tones(systems=["mean", "constant"], effects=["peq4"], split="valid")
    summary = run(cfg, tmp_path, log=lambda *_: None)
    mean = summary.query("metric == 'mrstft'").set_index("system")["mean"]
    assert mean["constant"] <= mean["mean"] + 1e-9
    params = pd.read_parquet(tmp_path / "params.parquet")
    per = params.groupby(["system", "param"])["estimate"].nunique()
    assert (per == 1).all()  # one setting, whatever the reference


def test_a_matched_budget_sets_each_systems_own_step_counts(tmp_path):
    import math

    from bench.cell import build_system, fit_system
    from bench.plan import Plan

    cfg = _tones("run.budget.train_examples=96", effects=["peq4"], systems=["oneshot_eq", "deepafx_st_autodiff",
                                                                           "proposed", "bypass"])
    one = build_system("oneshot_eq", cfg, "cpu")
    assert one.cfg.steps == math.ceil(96 / one.cfg.batch_size)
    dafx = build_system("deepafx_st_autodiff", cfg, "cpu")
    assert dafx.cfg.steps == math.ceil(96 / dafx.cfg.batch_size)
    prop = build_system("proposed", cfg, "cpu")
    c = prop.cfg
    seen = c.vae_steps * c.vae_batch + 1 * (c.warmup_steps + c.spsa_steps) * c.batch  # one effect (peq4)
    assert abs(seen - 96) <= c.vae_batch + c.batch  # rounding of the scaled step counts
    fit_system(one, Plan.build(cfg), checkpoint_dir=tmp_path, progress=False)
    assert one.budget()["train_examples"] == one.cfg.steps * one.cfg.batch_size  # what it spent, as asked
    with pytest.warns(UserWarning, match="cannot be matched to run.budget"):  # no pedalboard renders to match
        build_system("deepafx_st_autodiff", _tones("run.budget.train_renders=500", effects=["peq4"]), "cpu")
    from bench.config import ConfigError

    with pytest.raises(ConfigError, match="run.budget: unknown key"):
        _tones("run.budget.steps=3")
