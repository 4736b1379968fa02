"""One-shot EQ baseline: discretisation, shapes, checkpoints, training guards, and its place in the harness."""

import json

import numpy as np
import pytest
import torch

from baselines.oneshot_eq.model import (
    class_centres,
    decode,
    from_classes,
    soft_targets,
    to_classes,
)
from baselines.oneshot_eq.system import OneShotEQ, PoolBatches
from bench.effects import get_effect
from bench.systems import CheckpointError, FitContext, get_system
from bench.tasks import Task
from models.nn import DivergedError

SR = 24000
D = 21
# a small network and short training, so that every test here stays fast on a CPU
TINY = {"channels": 4, "conv_layers": 2, "hidden": 32, "steps": 3, "batch_size": 4, "loader_workers": 0,
        "valid_examples": 2, "n_mels": 32}


def tasks_of(corpus, effect="peq4", split="train", seconds=0.25):
    return [Task(corpus, get_effect(effect), split, segment_samples=int(seconds * SR), seed=0)]


def ctx(corpus, **kw):
    return FitContext(valid_tasks=tasks_of(corpus, split="valid"), progress=False, **kw)


# --- discretisation -----------------------------------------------------------------------------------------


def test_class_centres_span_the_unit_interval():
    c = class_centres(D)
    assert len(c) == D and c[0] == 0.0 and c[-1] == 1.0
    assert torch.allclose(c[1:] - c[:-1], torch.full((D - 1,), 1 / (D - 1)))


def test_discretisation_round_trip():
    # every class centre survives to_classes -> from_classes exactly
    centres = class_centres(D)
    assert torch.equal(to_classes(centres, D), torch.arange(D))
    assert torch.allclose(from_classes(to_classes(centres, D), D), centres)
    # any value comes back within half a class width, and out-of-range values clip to the ends
    u = torch.rand(1000, 12, generator=torch.Generator().manual_seed(0))
    back = from_classes(to_classes(u, D), D)
    assert (back - u).abs().max() <= 0.5 / (D - 1) + 1e-6
    assert to_classes(torch.tensor([-0.3, 1.7]), D).tolist() == [0, D - 1]


@pytest.mark.parametrize("how", ["argmax", "expected", "median"])
def test_confident_logits_decode_to_their_class(how):
    classes = torch.randint(0, D, (5, 12), generator=torch.Generator().manual_seed(1))
    logits = 50.0 * torch.nn.functional.one_hot(classes, D).float()
    assert torch.allclose(decode(logits, how), from_classes(classes, D), atol=1e-5)


def test_decodings_differ_as_they_should():
    # a skewed distribution: 0.6 on class 0, 0.4 spread at the top -> argmax and median 0, expected in between
    p = torch.zeros(D)
    p[0], p[-1], p[-2] = 0.6, 0.2, 0.2
    logits = torch.log(p + 1e-12)[None, None]
    assert decode(logits, "argmax").item() == 0.0
    assert decode(logits, "median").item() == 0.0
    assert decode(logits, "expected").item() == pytest.approx(0.2 * 1 + 0.2 * (D - 2) / (D - 1), abs=1e-5)
    with pytest.raises(ValueError, match="unknown decoding"):
        decode(logits, "mode")


def test_soft_targets_are_distributions_peaking_at_the_nearest_class():
    u = torch.tensor([[0.0, 0.33, 0.5, 1.0]])
    for sigma in (0.0, 1.0):
        t = soft_targets(u, D, sigma)
        assert t.shape == (1, 4, D)
        assert torch.allclose(t.sum(-1), torch.ones(1, 4))
        assert torch.equal(t.argmax(-1), to_classes(u, D))


# --- shapes and matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize("linear", [False, True])
def test_shapes(linear):
    s = OneShotEQ({**TINY, "n_mels": 128, "linear_mel": linear}, sample_rate=SR)
    x = torch.randn(3, SR // 2) * 0.1
    spec = s.model.features(x)
    hop = round(SR * 0.003)
    assert spec.shape == (3, 1, 128, SR // 2 // hop + 1)  # 128 mel bands, 3 ms hop
    assert s.model.features.mel.win == round(SR * 0.020)  # 20 ms window
    assert s.model.embed(x).shape == (3, 1, 128)  # 1 x F per clip
    assert s.model(x, x).shape == (3, 12, D)
    # input and reference may differ in length
    assert s.model(x, torch.randn(3, SR // 3) * 0.1).shape == (3, 12, D)


def test_linear_flag_switches_the_features():
    x = torch.randn(2, SR // 4) * 0.1
    db_net = OneShotEQ(TINY, sample_rate=SR).model.features
    lin_net = OneShotEQ({**TINY, "linear_mel": True}, sample_rate=SR).model.features
    db, lin = db_net(x), lin_net(x)
    # the same mel magnitudes, in decibels or linear (each with its fixed scaling)
    assert torch.allclose(db * 20 - 40, 20 * torch.log10(lin * 2), atol=1e-3)
    # a fixed scaling shared by input and reference: a 2x (+6.02 dB) level change shows as such in both
    assert torch.allclose(db_net(2 * x) - db, torch.full_like(db, 20 * np.log10(2) / 20), atol=1e-3)
    assert torch.allclose(lin_net(2 * x), 2 * lin, rtol=1e-4)


def test_match_on_peq4_and_on_other_effects(tones):
    s = OneShotEQ(TINY, sample_rate=SR)
    exs = tasks_of(tones, split="test")[0].examples(3, cache=False)
    peq4 = get_effect("peq4")
    ests = s.match_examples(exs, peq4)
    assert len(ests) == 3
    for est, ex in zip(ests, exs, strict=True):
        assert est.params01.shape == (12,) and np.all((est.params01 >= 0) & (est.params01 <= 1))
        assert est.output.shape == ex.input.shape and np.all(np.isfinite(est.output))
        assert np.allclose(est.output, peq4.process(ex.input, SR, est.params01))  # rendered with the harness's peq4
    # another effect: the same peq4 output, but no parameter estimate
    other = s.match_examples(exs, get_effect("delay"))
    assert all(o.params01 is None for o in other)
    assert all(np.array_equal(o.output, e.output) for o, e in zip(other, ests, strict=True))
    single = s.match(exs[0].input, exs[0].reference, peq4)
    assert np.allclose(single.params01, ests[0].params01, atol=1e-5)


def test_registered_and_controls_peq4_only():
    s = get_system("oneshot_eq", TINY, sample_rate=SR)
    assert isinstance(s, OneShotEQ) and s.trainable
    assert s.can_control(get_effect("peq4")) and not s.can_control(get_effect("peq_comp"))


def test_search_space_gives_valid_configs():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        over = OneShotEQ.search_space(study.ask())
        assert {"lr", "loss", "decode", "label_sigma"} <= set(over)
        OneShotEQ({**TINY, **over}, sample_rate=SR)  # every draw is a valid config


def test_config_is_checked_by_name():
    with pytest.raises(ValueError, match="decode"):
        OneShotEQ({"decode": "mode"})
    with pytest.raises(ValueError, match="loss"):
        OneShotEQ({"loss": "mse"})
    with pytest.raises(ValueError, match="unknown key"):
        OneShotEQ({"n_bins": 3})


# --- training -----------------------------------------------------------------------------------------------


def test_fit_trains_on_peq4_tasks(tones):
    s = OneShotEQ(TINY, sample_rate=SR)
    before = [p.detach().clone() for p in s.model.parameters()]
    s.fit(tasks_of(tones) + tasks_of(tones, "delay"), ctx(tones))
    info = s.train_info
    assert info["steps"] == 3 and info["examples"] == 12 and info["examples_per_second"] > 0
    assert np.isfinite(info["loss"]) and 0 <= info["mae"] <= 1
    assert any(not torch.equal(a, b) for a, b in zip(before, s.model.parameters(), strict=True))


def test_a_fixed_pool_of_training_examples(tones):
    threads = torch.get_num_threads()
    s = OneShotEQ({**TINY, "train_examples": 6, "steps": 4, "torch_threads": 1}, sample_rate=SR)
    s.fit(tasks_of(tones), FitContext(progress=False))
    assert torch.get_num_threads() == threads  # restored after fitting
    assert s.train_info["train_examples"] == 6 and s.train_info["examples"] == 16
    # batches come only from the pool, drawn reproducibly from the seed
    pool = {"input": torch.arange(6.0)[:, None].repeat(1, 3), "params": torch.arange(6.0)[:, None]}
    a, b = iter(PoolBatches(pool, 4, seed=1)), iter(PoolBatches(pool, 4, seed=1))
    for _ in range(5):
        x, y = next(a), next(b)
        assert torch.equal(x["input"], y["input"]) and x["input"].shape == (4, 3)
        assert torch.equal(x["input"][:, 0], x["params"][:, 0]) and set(x["params"][:, 0].tolist()) <= set(range(6))


def test_peq4_tasks_are_built_when_no_training_task_uses_peq4(tones):
    s = OneShotEQ(TINY, sample_rate=SR)
    built = s.peq4_tasks(tasks_of(tones, "delay") + tasks_of(tones, "distortion"), "train")
    assert len(built) == 1  # one per corpus
    (t,) = built
    assert t.effect.name == "peq4" and t.split == "train" and t.corpus is tones
    assert t.segment_samples == int(0.25 * SR)
    assert t.example(0).true_params01.shape == (12,)


@pytest.mark.parametrize("loss", ["expected_l1", "ce+l1"])
def test_other_losses_train(tones, loss):
    s = OneShotEQ({**TINY, "steps": 2, "loss": loss, "label_sigma": 1.0}, sample_rate=SR)
    s.fit(tasks_of(tones), FitContext(progress=False))
    assert np.isfinite(s.train_info["loss"]) and "l1" in s.train_info


def test_diverging_training_names_the_step(tones):
    s = OneShotEQ({**TINY, "lr": float("inf")}, sample_rate=SR)
    with pytest.raises(DivergedError, match=r"oneshot_eq: loss is nan at step 2"):
        s.fit(tasks_of(tones), FitContext(progress=False))


def test_no_validation_when_asked_for_none(tones):
    seen = []
    s = OneShotEQ({**TINY, "valid_examples": 0}, sample_rate=SR)
    s.fit(tasks_of(tones), ctx(tones, report=lambda step, value: seen.append(value)))
    assert s.trained and seen == []


def test_validation_reports_for_pruning(tones):
    seen = []
    s = OneShotEQ({**TINY, "steps": 4, "validate_every": 2}, sample_rate=SR)
    s.fit(tasks_of(tones), ctx(tones, report=lambda step, value: seen.append((step, value))))
    assert [st for st, _ in seen] == [2, 4] and all(0 <= v <= 1 for _, v in seen)


# --- checkpoints --------------------------------------------------------------------------------------------


def test_save_load_round_trip(tones, tmp_path):
    s = OneShotEQ(TINY, sample_rate=SR)
    s.fit(tasks_of(tones), FitContext(progress=False))
    s.save(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert meta["system"] == "oneshot_eq" and meta["sample_rate"] == SR and len(meta["param_names"]) == 12
    torch.load(tmp_path / "ck" / "model.pt", weights_only=True)  # plain tensors only
    t = OneShotEQ(TINY, sample_rate=SR)
    t.load(tmp_path / "ck")
    exs = tasks_of(tones, split="test")[0].examples(2, cache=False)
    x, r = np.stack([e.input for e in exs]), np.stack([e.reference for e in exs])
    assert torch.equal(s.logits(x, r), t.logits(x, r))
    assert t.train_info["steps"] == 3


def test_load_failures_name_the_file_and_the_system(tmp_path):
    s = OneShotEQ(TINY, sample_rate=SR)
    with pytest.raises(CheckpointError, match=r"oneshot_eq: no checkpoint at .*nowhere"):
        s.load(tmp_path / "nowhere")
    s.save(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=r"oneshot_eq: checkpoint .*ck was trained with channels=4"):
        OneShotEQ({**TINY, "channels": 8}, sample_rate=SR).load(tmp_path / "ck")
    with pytest.raises(CheckpointError, match=r"oneshot_eq: checkpoint .*ck was trained at 24000 Hz"):
        OneShotEQ(TINY, sample_rate=16000).load(tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    (tmp_path / "ck" / "meta.json").write_text(json.dumps({**meta, "system": "proposed"}))
    with pytest.raises(CheckpointError, match=r"oneshot_eq: .*ck is a checkpoint of 'proposed'"):
        s.load(tmp_path / "ck")
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "ck" / "model.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"oneshot_eq: cannot read .*model.pt"):
        s.load(tmp_path / "ck")


def test_a_checkpoint_with_foreign_tensors_is_refused(tmp_path):
    s = OneShotEQ(TINY, sample_rate=SR)
    s.save(tmp_path / "ck")
    state = torch.load(tmp_path / "ck" / "model.pt", weights_only=True)
    state["ffn2.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "ck" / "model.pt")
    with pytest.raises(CheckpointError, match=r"oneshot_eq: checkpoint .*ck does not fit"):
        s.load(tmp_path / "ck")


# --- slower: it learns, and the harness runs it -------------------------------------------------------------


@pytest.mark.slow
def test_it_learns_better_than_guessing_the_middle(tones):
    quick = {"hop_ms": 10.0, "channels": 8, "conv_layers": 2, "time_stride": 4, "loss": "ce+l1", "label_sigma": 1.0,
             "lr": 3e-3, "steps": 300, "batch_size": 16, "train_examples": 600, "torch_threads": 1}
    s = OneShotEQ(quick, sample_rate=SR)
    s.fit(tasks_of(tones, seconds=0.5), FitContext(progress=False))
    exs = tasks_of(tones, split="test", seconds=0.5)[0].examples(48, cache=False)
    p = s.predict(np.stack([e.input for e in exs]), np.stack([e.reference for e in exs]))
    true = np.stack([e.true_params01 for e in exs])
    mae, middle = np.abs(p - true).mean(), np.abs(0.5 - true).mean()
    gains = [0, 3, 6, 9]  # the four bands' gains are the most audible parameters
    assert mae < middle, (mae, middle)
    assert np.abs(p - true)[:, gains].mean() < 0.8 * np.abs(0.5 - true)[:, gains].mean()


@pytest.mark.slow
def test_runs_in_the_harness(tmp_path):
    import pandas as pd

    from bench.config import load_config
    from bench.runner import run

    cfg = load_config("smoke", sets=['data.seen_corpora=["tones"]', "data.unseen_corpora=[]", "run.progress=false",
                                     "run.report=false", "tracking.enabled=false",
                                     "systems.oneshot_eq={steps=5, batch_size=4, loader_workers=0}"],
                      systems=["oneshot_eq"], effects=["peq4", "delay"])
    from bench.results import ResultStore

    run(cfg, tmp_path, log=lambda *_: None)
    assert (ResultStore(tmp_path).checkpoint_dir("oneshot_eq", cfg.training_seeds()[0]) / "model.pt").exists()
    mean = pd.read_csv(tmp_path / "summary.csv").set_index(["effect", "metric"])["mean"]
    assert 0 < mean["peq4", "param_mae"] < 1
    assert np.isnan(mean["delay", "param_mae"]) and np.isfinite(mean["delay", "mrstft"])
