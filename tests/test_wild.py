"""The `wild` set (room, pedal_chain, lofi, recorded) and the pairs:DIR corpus of recorded dry/wet pairs."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bench.config import load_config
from bench.corpora import CorpusError, CorpusWarning, get_corpus
from bench.corpora.pairs import MAX_LAG_MS, estimate_lag
from bench.effects import HiddenEffect, get_effect, probe_signal
from bench.effects import wild as W
from bench.metrics import get_metric
from bench.runner import run
from bench.systems import get_system
from bench.tasks import Task

SR = 24000
KINDS = ["room", "pedal_chain", "lofi", "recorded"]
RT60_TOLERANCE = 0.2  # relative: |measured - requested| <= 20 % of requested (observed: 95 % of draws within 4 %)


# --- the synthetic kinds ------------------------------------------------------------------------------------

def test_room_measured_rt60_matches_the_requested_one():
    room = get_effect("room")
    requested = []
    for i in range(10):
        recipe = room.draw(np.random.default_rng([7, i]), SR)
        req, meas = recipe["rt60_requested_s"], recipe["rt60_measured_s"]
        assert W.ROOM_RT60[0] <= req <= W.ROOM_RT60[1]
        assert abs(meas - req) <= RT60_TOLERANCE * req, recipe
        # measured again on the response itself, not only as recorded
        h = W.room_impulse_response(recipe, SR)
        assert np.sum(h.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-4)
        assert abs(W.measure_rt60(h, SR) - req) <= RT60_TOLERANCE * req
        pre = W.ROOM_PRE_SAMPLES  # the direct sound's peak sits there (or a sample later): no propagation delay
        assert int(np.argmax(np.abs(h[: pre + 2]))) in (pre, pre + 1)
        assert recipe["absorption"] <= W.ROOM_MAX_ABSORPTION
        requested.append(req)
    assert max(requested) - min(requested) > 0.5  # the draws span the range


@pytest.mark.parametrize("kind", KINDS)
def test_every_wild_kind_is_deterministic(kind):
    e = get_effect(kind)
    assert isinstance(e, HiddenEffect) and e.n_params == 0 and e.params == []
    x = probe_signal(SR)
    r1 = e.draw(np.random.default_rng([3, 1]), SR)
    r2 = e.draw(np.random.default_rng([3, 1]), SR)
    assert r1 == r2
    r_json = json.loads(json.dumps(r1))  # JSON-able, and the JSON copy renders the same
    y1 = e.render(x, SR, r1)
    W._RIRS = W._LRU(64)  # no cached room response: the simulation itself must repeat
    y2 = e.render(x, SR, r_json)
    assert y1.dtype == np.float32 and y1.shape == x.shape and np.all(np.isfinite(y1))
    assert np.array_equal(y1, y2)
    assert not np.allclose(y1, x, atol=1e-3)  # it does something
    other = e.draw(np.random.default_rng([3, 2]), SR)
    assert other != r1


def test_pedal_chain_reuses_the_builtin_effects():
    e = get_effect("pedal_chain")
    for i in range(5):
        r = e.draw(np.random.default_rng([5, i]), SR)
        names = [s["effect"] for s in r["chain"]]
        assert 2 <= len(names) <= 4 and len(set(names)) == len(names) and set(names) <= set(W.PEDALS)
        for stage in r["chain"]:
            eff = get_effect(stage["effect"])
            assert stage["values"] == pytest.approx(eff.to_physical(np.asarray(stage["params01"])), rel=1e-3)
        assert abs(r["trim_db"]) < 60


def test_lofi_band_limits():
    e = get_effect("lofi")
    x = probe_signal(SR)
    for i in range(4):
        r = e.draw(np.random.default_rng([6, i]), SR)
        y = e.render(x, SR, r).astype(np.float64)
        spec = np.abs(np.fft.rfft(y)) ** 2
        f = np.fft.rfftfreq(len(y), 1 / SR)
        above = spec[f > r["lowpass_hz"] * 1.5].sum() / spec.sum()
        assert above < 0.05, r  # little energy left well above the band
        assert abs(A_rms_db(y) - A_rms_db(x)) < 6, r  # make-up gain keeps the level


def A_rms_db(x):
    return 10 * math.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20)


def test_wild_tasks_are_deterministic_and_param_mae_is_nan(tones):
    mae = get_metric("param_mae")
    rnd = get_system("random", sample_rate=SR)
    for kind in ("room", "pedal_chain", "lofi"):
        task = Task(tones, get_effect(kind), "test", segment_samples=SR // 2, seed=0, effect_set="wild")
        a, b = task.example(0), task.example(0)
        assert a.true_params01 is None and a.meta["recipe"]["kind"] == kind
        assert a.meta == b.meta and np.array_equal(a.reference, b.reference) and np.array_equal(a.target, b.target)
        for est in rnd.match_examples([a], task.effect) + get_system("bypass").match_examples([a], task.effect):
            scores = mae.score(est, a)
            assert math.isnan(scores["param_mae"])  # not applicable, never 0
        assert len({json.dumps(task.example(i).meta["recipe"], sort_keys=True) for i in range(3)}) == 3


# --- config -------------------------------------------------------------------------------------------------

def test_effects_wild_expands_to_the_wild_set():
    cfg = load_config("smoke", effects=["wild"])
    assert cfg.effects.wild == ["room", "pedal_chain", "lofi"] and not cfg.effects.seen and not cfg.effects.unseen
    assert [s for _, s in cfg.effect_sets()] == ["wild"] * 3
    cfg = load_config("smoke", effects=["peq4", "room", "recorded"])
    assert cfg.effects.seen == ["peq4"] and cfg.effects.wild == ["room", "recorded"]
    cfg = load_config("smoke", effects=["wild"], sets=['effects.wild=["lofi"]'])
    assert cfg.effects.wild == ["lofi"]


# --- recorded pairs -----------------------------------------------------------------------------------------

def _tone(seconds, sr, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 * (1 + seed % 5)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8)) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t) ** 2)
    return (0.2 * x / np.max(np.abs(x)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _wet(x):
    """A 'recorded' processing: soft clipping and a short causal smoothing filter (well under a sample of lag)."""
    y = np.tanh(4 * x) * 0.3
    return np.convolve(y, [0.5, 0.3, 0.2])[: len(x)].astype(np.float32)


def make_pairs(root, n=4, sr=SR, seconds=2.0, **broken):
    """n dry/wet pairs; ``broken`` names a pair's defect: missing_wet, extra_wet, rate, lag (samples), longer_wet."""
    for i in range(n):
        name = f"take{i}"
        sub = "a" if i % 2 else "b"
        x = _tone(seconds, sr, i)
        y = _wet(x)
        wet_sr = sr
        if broken.get("rate") == name:
            wet_sr = 16000
            y = _wet(_tone(seconds, wet_sr, i))
        if broken.get("lag_pair") == name:
            y = np.concatenate([np.zeros(broken["lag"], np.float32), y])[: len(x)]
        if broken.get("longer_wet") == name:
            y = np.concatenate([y, 0.01 * np.ones(sr // 2, np.float32)])
        (root / "dry" / sub).mkdir(parents=True, exist_ok=True)
        (root / "wet" / sub).mkdir(parents=True, exist_ok=True)
        sf.write(root / "dry" / sub / f"{name}.wav", x, sr)
        if broken.get("missing_wet") != name:
            sf.write(root / "wet" / sub / f"{name}.flac", y, wet_sr)
    if broken.get("extra_wet"):
        sf.write(root / "wet" / "orphan.wav", _tone(seconds, sr, 9), sr)
    return root


def pairs_corpus(root, cache, **kw):
    return get_corpus(f"pairs:{root}", sample_rate=SR, seed=0, sources={"train": 1, "valid": 1, "test": 2},
                      cache=cache, **kw)


def test_pairs_tasks_use_dry_a_wet_b_wet_a(tmp_path):
    root = make_pairs(tmp_path / "p")
    c = pairs_corpus(root, tmp_path / "cache")
    specs = c.specs()
    assert {s.source_id for s in specs} == {"a/take1", "a/take3", "b/take0", "b/take2"}
    assert c.specs("test") and all(s.split == "test" for s in c.specs("test"))
    task = Task(c, get_effect("recorded"), "test", segment_samples=SR // 2, seed=0, effect_set="wild")
    assert task.paired
    for i in range(3):
        ex = task.example(i)
        dry, wet = c.load_pair(next(s for s in specs if s.source_id == ex.source_id))
        a, b = ex.meta["start_a"], ex.meta["start_b"]
        L = SR // 2
        assert np.array_equal(ex.input, dry[a : a + L])
        assert np.array_equal(ex.target, wet[a : a + L])
        assert np.array_equal(ex.reference, wet[b : b + L])
        assert ex.true_params01 is None and ex.meta["recipe"] == {"kind": "recorded", "pair": ex.source_id}
        # one shared gain: the processing's level change survives loudness normalisation
        assert A_rms_db(wet) - A_rms_db(dry) == pytest.approx(A_rms_db(_wet(_tone(2.0, SR, 0))) - A_rms_db(
            _tone(2.0, SR, 0)), abs=3)
    assert np.array_equal(task.example(1).target, task.example(1).target)
    # other effects on a paired corpus process its dry side
    room = Task(c, get_effect("room"), "test", segment_samples=SR // 2, seed=0)
    ex = room.example(0)
    dry, _ = c.load_pair(next(s for s in specs if s.source_id == ex.source_id))
    assert np.array_equal(ex.input, dry[ex.meta["start_a"] : ex.meta["start_a"] + SR // 2])


def test_recorded_needs_a_paired_corpus(tones):
    task = Task(tones, get_effect("recorded"), "test", segment_samples=SR // 2)
    with pytest.raises(CorpusError, match="pairs:DIR"):
        task.example(0)


def test_pairs_missing_partner(tmp_path):
    c = pairs_corpus(make_pairs(tmp_path / "p", missing_wet="take2"), tmp_path / "cache")
    with pytest.raises(CorpusError, match=r"1 dry file\(s\) without a wet partner: b/take2.wav"):
        c.specs()
    c = pairs_corpus(make_pairs(tmp_path / "q", extra_wet=True), tmp_path / "cache")
    with pytest.raises(CorpusError, match=r"wet file\(s\) without a dry partner: orphan.wav"):
        c.specs()
    (tmp_path / "r" / "dry").mkdir(parents=True)
    with pytest.raises(CorpusError, match="no wet/ folder"):
        pairs_corpus(tmp_path / "r", tmp_path / "cache").specs()


def test_pairs_wrong_sample_rate(tmp_path):
    """A pair whose sides differ in rate is left out when the corpus is planned, named in one warning."""
    c = pairs_corpus(make_pairs(tmp_path / "p", rate="take1"), tmp_path / "cache")
    with pytest.warns(CorpusWarning, match="left out a/take1: dry is 24000 Hz but wet is 16000 Hz"):
        ids = {s.source_id for s in c.specs()}
    assert "a/take1" not in ids and len(ids) == 3


def test_pairs_alignment_tolerance(tmp_path):
    tol = int(MAX_LAG_MS * SR / 1000)  # 120 samples at 24 kHz
    ok = pairs_corpus(make_pairs(tmp_path / "ok", lag_pair="take0", lag=tol - 4), tmp_path / "cache")
    spec = next(s for s in ok.specs() if s.source_id == "b/take0")
    dry, wet = ok.load_pair(spec)  # within the tolerance: accepted as it is
    assert dry.shape == wet.shape
    bad = pairs_corpus(make_pairs(tmp_path / "bad", lag_pair="take0", lag=2 * tol), tmp_path / "cache")
    with pytest.warns(CorpusWarning, match=r"left out b/take0: wet is 240 samples \(10.00 ms\) behind dry.*within 5 ms"):
        ids = {s.source_id for s in bad.specs()}
    assert "b/take0" not in ids
    x = _tone(1.0, SR, 3)
    for lag in (-100, 0, 37):
        y = np.roll(_wet(x), lag)
        # on a steady tone a shift may be read one pitch period off, but always within the tolerance
        assert abs(estimate_lag(x, y, SR)[0] - lag) <= tol


def test_pairs_different_lengths_are_cut_to_the_shorter(tmp_path):
    c = pairs_corpus(make_pairs(tmp_path / "p", longer_wet="take3"), tmp_path / "cache")
    spec = next(s for s in c.specs() if s.source_id == "a/take3")
    dry, wet = c.load_pair(spec)
    assert len(dry) == len(wet) == 2 * SR


def test_pairs_corpus_runs_end_to_end(tmp_path):
    root = make_pairs(tmp_path / "p", n=4)
    cfg = load_config("smoke", corpora=[f"pairs:{root}"], effects=["recorded"], systems=["bypass", "random"],
                      sets=["run.progress=false", "run.report=false", "tasks.n_test=2", "tracking.enabled=false",
                            "data.train_sources=1", "data.valid_sources=1", "data.test_sources=2",
                            'metrics.include=["param_mae", "mrstft"]'])
    summary = run(cfg, tmp_path / "out", log=lambda *_: None)
    assert not (pd.read_csv(tmp_path / "out" / "failures.csv")).shape[0]
    rows = summary[(summary.effect == "recorded") & (summary.metric == "mrstft")]
    assert set(rows.system) == {"bypass", "random"} and set(rows.effect_set) == {"wild"}
    assert summary[summary.metric == "param_mae"]["mean"].isna().all()


def test_pairs_corpus_runs_every_registered_system(tmp_path):
    """Every registered system on recorded pairs: trainable ones learn on the pairs' dry side processed by the
    smoke preset's seen effects, then all of them meet the recorded processing (scored, never failed)."""
    root = make_pairs(tmp_path / "p", n=6)
    systems = load_config("smoke").system_names()  # every system this project registers
    cfg = load_config("smoke", corpora=[f"pairs:{root}"], effects=["recorded", "peq4", "peq_comp"], systems=systems,
                      sets=["run.report=false", "tasks.n_test=2", "tracking.enabled=false", "data.train_sources=3",
                            "data.valid_sources=1", "data.test_sources=2", 'metrics.include=["param_mae", "mrstft"]'])
    summary = run(cfg, tmp_path / "out", log=lambda *_: None)
    fails = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert fails.empty, fails.to_string()
    rec = summary[(summary.effect == "recorded") & (summary.metric == "mrstft")]
    assert set(systems) - {"oracle"} <= set(rec.system)
    assert rec[rec.system != "oracle"]["mean"].notna().all()
    assert rec[rec.system == "oracle"]["mean"].isna().all()  # no oracle exists for recorded processing
    assert summary[(summary.effect == "recorded") & (summary.metric == "param_mae")]["mean"].isna().all()
