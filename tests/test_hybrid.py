"""Compute-matched comparison (issue 29): systems at render budgets as labelled variants, ``proposed_ito`` (the
proposed model's answer refined by CMA-ES) and the training dependency that hands it the model, the Gaussian
prior of ``ito_cmaes``."""

import dataclasses
import json
import zlib

import numpy as np
import pytest

from baselines.ito.hybrid import ProposedIto
from baselines.ito.prior import GaussianPrior, read_presets
from baselines.ito.system import ItoCmaes
from bench.checks.contract import GuardedQuery, guarded
from bench.config import ConfigError, load_config
from bench.effects import get_effect
from bench.systems import FitContext, SystemError_
from bench.tasks import Task
from tests.test_ito import OnePeak, pair

SR = 24000


def with_systems(cfg, sections: dict, include: list[str]):
    systems = {**cfg.systems, **sections, "include": include}
    return dataclasses.replace(cfg, systems=systems)


# --- budgets as labelled variants -----------------------------------------------------------------------------


def test_labels_take_one_at_suffix_and_never_share_a_folder_or_an_mlflow_key():
    from bench.plan import check
    from bench.tracking import _key

    cfg = load_config("smoke")
    ok = with_systems(cfg, {"ito_cmaes@16": {"base": "ito_cmaes", "renders": 16}}, ["bypass", "ito_cmaes@16"])
    check(ok)  # accepted
    bad = with_systems(cfg, {"a@b@c": {"base": "ito_cmaes"}}, ["a@b@c"])
    with pytest.raises(ConfigError, match="at most one '@'"):
        check(bad)
    clash = with_systems(cfg, {"ito_cmaes@16": {"base": "ito_cmaes"}, "ito_cmaes_16": {"base": "ito_cmaes"}},
                         ["ito_cmaes@16", "ito_cmaes_16"])
    with pytest.raises(ConfigError, match="share the results folder"):
        check(clash)
    assert _key("systems.ito_cmaes@16.renders") == "systems.ito_cmaes at 16.renders"
    assert _key("systems.ito_cmaes@16.renders") != _key("systems.ito_cmaes_16.renders")


def test_variants_at_two_budgets_record_the_renders_they_spent(tones):
    """Two labels of ito_cmaes, built from the config as a run builds them, each spend at most their own budget,
    and the larger spends more: the cost/renders and cost/seconds rows the frontier reads."""
    from bench.cell import Evaluator, build_system
    from bench.metrics import get_metric
    from bench.plan import check

    cfg = load_config("smoke")
    cfg = with_systems(cfg, {"ito_cmaes@8": {"base": "ito_cmaes", "renders": 8, "workers": 1},
                             "ito_cmaes@40": {"base": "ito_cmaes", "renders": 40, "workers": 1}},
                       ["ito_cmaes@8", "ito_cmaes@40"])
    check(cfg)
    task = Task(tones, get_effect("gain"), "test", segment_samples=SR // 2)
    examples = task.examples(2, cache=False)
    ev = Evaluator([get_metric("mrstft", sample_rate=SR)], sample_rate=SR, device="cpu")
    spent = {}
    for name in cfg.system_names():
        system = build_system(name, cfg, "cpu")
        assert system.name == name
        scores = ev.evaluate(name, system, task, examples).scores[name]
        spent[name] = [s["cost/renders"] for s in scores]
        assert all(s["cost/seconds"] > 0 and np.isfinite(s["mrstft"]) for s in scores)
    assert all(1 <= r <= 8 for r in spent["ito_cmaes@8"]), spent
    assert all(8 < r <= 40 for r in spent["ito_cmaes@40"]), spent


# --- proposed_ito --------------------------------------------------------------------------------------------


class TruthModel:
    """A stand-in for the proposed model whose answer is the truth: it knows each reference's settings (given by
    the test, which holds them), and looks them up by the reference's bytes."""

    def __init__(self):
        self.truth: dict[bytes, np.ndarray] = {}
        self.effects = {}

    def know(self, effect, examples):
        self.effects[effect.name] = {"n_params": effect.n_params}
        for ex in examples:
            self.truth[zlib.crc32(np.asarray(ex.reference, np.float32).tobytes())] = np.asarray(ex.true_params01,
                                                                                                  np.float64)

    def predict(self, effect, inputs, references, hedged=True):
        return np.stack([self.truth[zlib.crc32(np.asarray(r, np.float32).tobytes())] for r in references])

    def budget(self):
        return {"train_renders": 123}


def hybrid(model, **conf):
    system = ProposedIto({"workers": 1, **conf}, sample_rate=SR)
    system._load_model = lambda path: setattr(system, "model", model)  # the stand-in instead of a checkpoint
    return system


def test_proposed_ito_starts_from_the_models_answer(tones, tmp_path):
    """With a model whose answer is the truth, 8 renders leave the parameter error near zero, where ITO from
    scratch at the same budget is far off; its step sizes come from the model's validation error (0 here, so
    sigma_min)."""
    eff = OnePeak()
    valid = Task(tones, eff, "valid", segment_samples=SR // 2)
    test = Task(tones, eff, "test", segment_samples=SR // 2, seed=1128)
    vex, tex = valid.examples(4, cache=False), test.examples(3, cache=False)
    model = TruthModel()
    model.know(eff, vex + tex)
    system = hybrid(model, renders=8, valid_examples=4)
    system.fit([], FitContext(valid_tasks=[valid], dependencies={"proposed": tmp_path}))
    assert system.steps == {eff.name: [0.02, 0.02]} and system.valid_error == {eff.name: [0.0, 0.0]}
    assert system.budget() == {"train_renders": 123}  # its training is the model's

    GuardedQuery.touched = []
    ests = system.match_examples(guarded(tex), eff)
    assert GuardedQuery.touched == []  # nothing of a test example but its ids, input and reference
    err = np.mean([np.abs(e.params01 - ex.true_params01).mean() for e, ex in zip(ests, tex, strict=True)])
    assert err < 0.03, err  # a step of 0.02 around the truth, the truth itself among the candidates
    assert all(1 < e.info["renders"] <= 8 and e.info["seconds"] > 0 for e in ests)
    scratch = ItoCmaes({"workers": 1, "renders": 8}, sample_rate=SR).match_examples(guarded(tex), eff)
    err0 = np.mean([np.abs(e.params01 - ex.true_params01).mean() for e, ex in zip(scratch, tex, strict=True)])
    assert err0 > 3 * err, (err0, err)


def test_proposed_ito_reads_validation_only_and_needs_the_model(tones, tmp_path):
    eff = get_effect("gain")
    model = TruthModel()
    system = hybrid(model)
    with pytest.raises(SystemError_, match="needs the checkpoint of 'proposed'"):
        system.fit([], FitContext(valid_tasks=[]))
    test = Task(tones, eff, "test", segment_samples=SR // 2)
    with pytest.raises(SystemError_, match="validation tasks only"):
        system.fit([], FitContext(valid_tasks=[test], dependencies={"proposed": tmp_path}))
    with pytest.raises(SystemError_, match="not fitted"):
        ProposedIto({}, sample_rate=SR).match(*pair(eff, [0.5]), eff)
    with pytest.raises(ConfigError, match="not this system's"):
        ProposedIto({"prior": "gaussian"}, sample_rate=SR)


def test_a_system_that_needs_another_is_trained_after_it_with_its_checkpoint(tmp_path):
    """The runner trains ``proposed`` first (it is not even in the grid) and hands its checkpoint to
    ``proposed_ito``, whose cells are written; its key follows the model's, so a changed model retrains it."""
    import pandas as pd

    from bench.cell import system_key
    from bench.runner import run

    cfg = load_config("smoke", systems=["proposed_ito"], effects=["gain", "room"], corpora=["speech"],
                      sets=["systems.proposed_ito.renders=6", "tasks.n_test=2", "run.report=false",
                            "tracking.enabled=false", "systems.proposed.spsa_steps=1", "systems.proposed.vae_steps=2"])
    out = tmp_path / "run"
    run(cfg, out, log=lambda *_: None)
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["system"]) == {"proposed_ito"} and not (out / "failures.csv").exists() or \
        pd.read_csv(out / "failures.csv").empty
    renders = scores[scores["metric"] == "cost/renders"]["value"]
    assert len(renders) == 4 and (renders <= 6).all() and (renders >= 1).all()
    assert (out / "checkpoints" / "proposed").is_dir() and (out / "checkpoints" / "proposed_ito").is_dir()
    steps = json.loads((out / "checkpoints" / "proposed_ito" / "seed-0" / "steps.json").read_text())
    assert set(steps["steps"]) == {"gain"}
    other = dataclasses.replace(cfg, systems={**cfg.systems, "proposed": {**cfg.systems["proposed"],
                                                                          "spsa_steps": 2}})
    assert system_key(other, "proposed_ito", 0) != system_key(cfg, "proposed_ito", 0)


# --- the Gaussian prior --------------------------------------------------------------------------------------


def test_gaussian_prior_penalty_and_presets(tmp_path):
    eff = OnePeak()
    g = GaussianPrior.fit(np.array([[0.2, 0.4], [0.4, 0.6], [0.3, 0.5], [0.25, 0.55]]))
    assert g.penalty(g.mean, 2.0)[0] == pytest.approx(0.0)
    assert g.penalty(np.array([0.9, 0.1]), 1.0)[0] > g.penalty(np.array([0.35, 0.5]), 1.0)[0]
    (tmp_path / "a.json").write_text(json.dumps([{"effect": "one_peak", "params01": {"gain_db": 0.8}},
                                                 {"effect": "other", "params01": [0.1]}]))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.json").write_text(json.dumps({"effect": "one_peak", "params01": [0.7, 0.3]}))
    got = read_presets(tmp_path, eff)
    assert got.shape == (2, 2) and got[0, 0] == 0.8 and got[1].tolist() == [0.7, 0.3]
    (tmp_path / "c.json").write_text(json.dumps({"effect": "one_peak", "params01": {"q": 0.1}}))
    with pytest.raises(ValueError, match="unknown parameter"):
        read_presets(tmp_path, eff)
    with pytest.raises(ValueError, match="only read with prior"):
        ItoCmaes({"prior_presets": str(tmp_path)}, sample_rate=SR)


def test_a_concentrated_preset_prior_helps_a_small_budget(tmp_path):
    """Presets clustered near the true setting (a producer's habits): maximum a posteriori at 16 renders lands
    nearer the truth than the default search from the data distribution."""
    eff = OnePeak()
    true = eff.to_unit({"gain_db": 7.0, "freq_hz": 900.0})
    rng = np.random.default_rng(0)
    presets = [{"effect": "one_peak", "params01": np.clip(true + rng.normal(0, 0.05, 2), 0, 1).tolist()}
               for _ in range(12)]
    (tmp_path / "bank.json").write_text(json.dumps(presets))
    errs = {"sample": [], "gaussian": []}
    for seed in range(3):
        x, ref = pair(eff, true, seed=seed)
        for prior in errs:
            conf = {"prior": prior, "prior_presets": str(tmp_path)} if prior == "gaussian" else {}
            est = ItoCmaes({"workers": 1, "renders": 16, "select": "best", **conf}, sample_rate=SR).match(x, ref, eff)
            errs[prior].append(np.abs(est.params01 - true).mean())
            assert est.info["renders"] <= 16
    assert np.mean(errs["gaussian"]) < np.mean(errs["sample"]), errs
