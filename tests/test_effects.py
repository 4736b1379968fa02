import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.effects import EFFECTS, EffectError, ParamSpec, get_effect, probe_signal

BUILTIN = ["peq4", "peq_comp", "compressor", "distortion", "delay", "reverb", "chorus", "phaser", "bitcrush",
           "ladder_filter", "gain"]
SR = 24000


def test_registry_lists_builtins_and_names_unknown():
    assert set(BUILTIN) <= set(EFFECTS.names())
    with pytest.raises(KeyError, match="valid: .*peq4"):
        EFFECTS.get("flanger9000")


@pytest.mark.parametrize("name", BUILTIN)
@settings(max_examples=30, deadline=None)
@given(u=st.floats(0.0, 1.0))
def test_param_normalisation_round_trips(name, u):
    for spec in get_effect(name).params:
        v = spec.to_physical(u)
        assert spec.minimum - 1e-9 <= v <= spec.maximum + 1e-9
        assert abs(spec.to_unit(v) - u) < 1e-9


def test_paramspec_scales():
    lin = ParamSpec("g", -12, 12)
    log = ParamSpec("f", 20, 20000, "log")
    assert lin.to_physical(0.5) == pytest.approx(0.0)
    assert log.to_physical(0.5) == pytest.approx(np.sqrt(20 * 20000))
    assert lin.to_unit(100) == 1.0  # out-of-range physical values clip
    with pytest.raises(ValueError, match="positive minimum"):
        ParamSpec("bad", 0, 1, "log")
    with pytest.raises(ValueError, match="scale"):
        ParamSpec("bad", 0, 1, "cubic")


@pytest.mark.parametrize("name", BUILTIN)
def test_process_is_deterministic_batched_and_stateless(name):
    e = get_effect(name)
    rng = np.random.default_rng(0)
    x = probe_signal(SR, 0.5)
    p1, p2 = e.sample(rng, SR), e.sample(rng, SR)
    y1 = e.process(x, SR, p1)
    assert y1.shape == x.shape and y1.dtype == np.float32 and np.all(np.isfinite(y1))
    # same call twice (no state leaks between calls), batch == singles, threaded batch == serial batch
    assert np.array_equal(y1, e.process(x, SR, p1))
    batch = e.process(np.stack([x, x]), SR, np.stack([p1, p2]))
    assert np.array_equal(batch[0], y1)
    assert np.array_equal(batch[1], e.process(x, SR, p2))
    assert np.array_equal(batch, e.process(np.stack([x, x]), SR, np.stack([p1, p2]), workers=2))


@pytest.mark.parametrize("name", BUILTIN)
def test_sampled_settings_change_the_audio_audibly(name):
    e = get_effect(name)
    rng = np.random.default_rng(1)
    for _ in range(3):
        u = e.sample(rng, SR)
        assert u.shape == (e.n_params,) and np.all((u >= 0) & (u <= 1))
        assert e.acceptable(u, SR)


def test_sample_rejects_settings_that_do_nothing():
    gain = get_effect("gain")
    assert not gain.acceptable(gain.to_unit({"gain_db": 0.0}), SR)
    assert gain.acceptable(gain.to_unit({"gain_db": 9.0}), SR)
    rng = np.random.default_rng(0)
    draws = np.array([gain.sample(rng, SR)[0] for _ in range(50)])
    assert np.all(np.abs(gain.params[0].to_physical(draws)) > 0.5)  # near-0 dB gains never make it into data


def test_bad_params_raise_named_errors():
    e = get_effect("peq4")
    x = probe_signal(SR, 0.1)
    with pytest.raises(EffectError, match="peq4: expected 12 parameters"):
        e.process(x, SR, np.zeros(3))
    with pytest.raises(EffectError, match="non-finite"):
        e.process(x, SR, np.full(12, np.nan))
    with pytest.raises(EffectError, match="2 clips but 3"):
        e.process(np.stack([x, x]), SR, np.zeros((3, 12)))
