"""The batched AudioCommons features (bench.metrics.timbral, metric ``ac``) against timbral_models (``ac_ref``).

The clips are synthetic and varied (plucked harmonics, noise bursts, chirps, reverberant tails, filtered noise),
made in milliseconds; the reference's features go through ``ac_ref``'s disk cache, so only the first run of a
cache directory pays timbral_models' cost (about 0.3-0.8 CPU-s per clip, in a pool of one process per core)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.metrics import get_metric
from bench.systems import Estimate
from bench.tasks import Example

pytest.importorskip("timbral_models")

SR = 24000
N_CLIPS = 20


def _clip(kind: str, rng: np.random.Generator, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "pluck":
        f0 = rng.uniform(70, 500)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k ** rng.uniform(0.7, 2) for k in range(1, 14))
        x = x * np.exp(-rng.uniform(2, 10) * (t % rng.uniform(0.2, 0.6)))
    elif kind == "bursts":
        x = rng.standard_normal(t.size) * (np.sin(2 * np.pi * rng.uniform(2, 6) * t) > 0.3)
    elif kind == "chirp":
        f = np.cumsum(np.geomspace(rng.uniform(60, 200), rng.uniform(2000, 9000), t.size)) / SR
        x = np.sin(2 * np.pi * f) * np.hanning(t.size)
    elif kind == "reverb":
        dry = np.zeros(t.size)
        dry[rng.integers(0, SR // 4, 3)] = 1.0
        tail = rng.standard_normal(int(SR * 0.9)) * np.exp(-6.9 * np.arange(int(SR * 0.9)) / (SR * rng.uniform(0.6, 1.5)))
        x = np.convolve(dry, tail)[: t.size]
    else:  # filtered noise
        import scipy.signal as sps

        b, a = sps.butter(2, rng.uniform(300, 6000) / (SR / 2), rng.choice(["low", "high"]))
        x = sps.lfilter(b, a, rng.standard_normal(t.size))
    x = x + 1e-3 * rng.standard_normal(t.size)
    return (rng.uniform(0.05, 0.9) * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(16)
    kinds = ["pluck", "bursts", "chirp", "reverb", "noise"]
    return [_clip(kinds[i % len(kinds)], rng) for i in range(N_CLIPS)]


@pytest.fixture(scope="module")
def reference(clips) -> np.ndarray:
    from bench.metrics.audiocommons import FEATURES

    m = get_metric("ac_ref", {"workers": 0}, sample_rate=SR)
    try:
        recs = m.features(clips)
    finally:
        m.close()
    return np.array([[r["features"][f] for f in FEATURES] for r in recs])


def test_matches_timbral_models_on_varied_clips(clips, reference):
    from bench.checks.ac import compare
    from bench.metrics.timbral import FEATURES, extract

    values, reasons = extract(clips, SR)
    assert not any(reasons), reasons
    rows = compare(values, reference, FEATURES)
    failed = [r for r in rows if not r["passed"]]
    assert not failed, failed


def test_batch_equals_one_by_one(clips):
    from bench.metrics.timbral import extract

    some = clips[:5] + [clips[5][: SR // 2]]  # one of another length: its own group
    batch, _ = extract(some, SR)
    single = np.concatenate([extract([x], SR)[0] for x in some])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-9)


def test_refused_clips_are_nan_with_a_reason_as_in_the_reference():
    from bench.metrics.audiocommons import FEATURES, timbral_features
    from bench.metrics.timbral import extract

    silent = np.zeros(SR, np.float32)
    rng = np.random.default_rng(0)
    tiny = _clip("pluck", rng, seconds=0.02)  # 480 samples: shorter than one of librosa's STFT frames at 44.1 kHz
    values, reasons = extract([silent, np.zeros(0, np.float32), tiny], SR)
    assert np.all(np.isnan(values[:2]))
    assert set(reasons[0]) == set(FEATURES) and set(reasons[0].values()) == {"silent clip"}
    assert set(reasons[1].values()) == {"empty clip"}
    ref_feats, ref_errors = timbral_features(silent, SR)
    assert all(math.isnan(v) for v in ref_feats.values()) and set(ref_errors.values()) == {"silent clip"}
    # too short for timbral_models' harmonic/percussive split: hardness is NaN with its reason; the others are
    # the reference's values, where the reference has them, or NaN with a reason where it fails
    ref_feats, ref_errors = timbral_features(tiny, SR)
    j = FEATURES.index("hardness")
    assert math.isnan(values[2, j]) and "shorter" in reasons[2]["hardness"]
    for k, f in enumerate(FEATURES):
        if f == "hardness":
            continue
        if math.isfinite(ref_feats[f]):
            assert values[2, k] == pytest.approx(ref_feats[f], abs=1e-6), f
        else:
            assert math.isnan(values[2, k]) and f in reasons[2], f
    assert np.all(np.isfinite(values[~np.isnan(values)]))


def test_metric_keys_nan_and_cache(clips, tmp_path, monkeypatch):
    from bench.metrics import audiocommons

    monkeypatch.setenv("AFX_BENCH_CACHE", str(tmp_path))
    audiocommons.clear_memory_cache()
    targets = clips[:2]
    exs = [Example("speech/peq4/test", i, f"s{i}", t, t, t, None) for i, t in enumerate(targets)]
    outs = [Estimate(None, 0.5 * targets[0]), Estimate(None, np.zeros_like(targets[1]))]
    m = get_metric("ac", {"workers": 1}, sample_rate=SR)
    ref_m = get_metric("ac_ref", {"workers": 1}, sample_rate=SR)
    r = m.score_batch(outs, exs)
    keys = {f"ac/{f}" for f in audiocommons.FEATURES} | {"ac_mean"} | {f"ac_signed/{f}" for f in audiocommons.FEATURES}
    assert set(r[0]) == keys
    assert set(ref_m.score_batch(outs[:1], exs[:1])[0]) == {k.replace("ac", "ac_ref", 1) for k in keys}
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in r[0].values())  # blind to gain
    assert all(math.isnan(v) for v in r[1].values())  # a silent output: NaN, never Inf
    assert m.stats["nan"]["hardness"] == 1
    audiocommons.clear_memory_cache()
    m2 = get_metric("ac", {"workers": 1}, sample_rate=SR)
    m2.score_batch(outs[:1], exs[:1])
    assert m2.stats["computed"] == 0 and m2.stats["disk_hits"] == 2


def test_reference_features_come_from_timbral_models(clips, reference):
    from bench.metrics import audiocommons
    from bench.metrics.timbral import FEATURES

    audiocommons.clear_memory_cache()
    m = get_metric("ac", {"workers": 1, "disk_cache": False, "reference_features": ["reverb"]}, sample_rate=SR)
    try:
        recs = m.features(clips[:2])
    finally:
        m.close()
    j = FEATURES.index("reverb")
    assert [r["features"]["reverb"] for r in recs] == list(reference[:2, j])
    with pytest.raises(Exception, match="unknown"):
        get_metric("ac", {"reference_features": ["loudness"]}, sample_rate=SR)


def test_check_module_contract():
    from bench.checks import Check, get_check

    check = get_check("ac")
    assert isinstance(check, Check) and check.help


# --- the parts of the batched implementation ------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(clips):
    from bench.metrics.timbral import _front

    ready, refused = _front.prepare([x.astype(np.float64) for x in clips[:8]], SR)
    assert not any(refused)
    return np.stack([c.a for c in ready])


def test_stft_istft_and_hpss_are_librosas_to_the_bit(prepared):
    import librosa

    from bench.metrics.timbral import _ops

    x = prepared[:3]
    D = _ops.stft(x)
    ref = librosa.stft(x)
    assert np.array_equal(D, ref.transpose(0, 2, 1))
    assert np.array_equal(_ops.istft(D), librosa.istft(ref))
    _, P = librosa.decompose.hpss(ref)
    assert np.array_equal(_ops.percussive_stft(D, np.abs(D)), P.transpose(0, 2, 1))


def test_median_filter_equals_scipy():
    import scipy.ndimage as ndi

    from bench.metrics.timbral._libkernels import median_filter

    rng = np.random.default_rng(3)
    for n, lanes in ((87, 200), (31, 5), (10, 70), (1025, 3)):  # sequences shorter than the window too
        x = np.abs(rng.standard_normal((n, lanes))) * np.exp(rng.standard_normal((n, lanes)))
        x[n // 2] = x[n // 3]  # ties
        out = np.empty_like(x)
        median_filter(x, out, 31)
        assert np.array_equal(out, ndi.median_filter(x, size=(31, 1), mode="reflect"))
        out_t = np.empty_like(x.T)
        median_filter(x.T.copy().T, out_t.T, 31)  # transposed views
        assert np.array_equal(out_t.T, out)


@pytest.mark.parametrize("transform", ["default", "scipy"])
def test_float32_bandwidth_is_the_float64_one_to_the_bit(clips, prepared, transform, monkeypatch):
    """Whichever float32 transform the first pass uses (torch's where installed, scipy's otherwise)."""
    from bench.metrics.timbral import _ops

    if transform == "scipy":
        monkeypatch.setattr(_ops, "_rfft32", lambda: _ops.rfft32_scipy)
    thresh = 10 ** (-75 / 20.0)
    signals = [np.pad(a, (4097, 0)) for a in prepared]
    signals.append(np.pad(np.r_[np.zeros(20000), prepared[0][:30000]], (4097, 0)))  # silence, then sound
    for x in signals:
        assert np.array_equal(_ops.bandwidth(x, thresh), _ops.bandwidth(x, thresh, exact=True))


def _envelopes(rng, n_cases):
    """Onset-strength-like series: noise, ties (rounded values), random walks, sparse spikes, ramps and steps, some
    starting with zeros, 1-120 frames long."""
    for trial in range(n_cases):
        n = int(rng.integers(1, 120))
        kind = trial % 5
        if kind == 0:
            o = rng.random(n) * 5
        elif kind == 1:
            o = np.round(rng.random(n) * 3, 1)
        elif kind == 2:
            o = np.abs(np.cumsum(rng.standard_normal(n)))
        elif kind == 3:
            o = np.zeros(n)
            o[rng.integers(0, n, 3)] = rng.random(3) * 10
        else:
            o = np.sort(rng.random(n)) if trial % 2 else rng.integers(0, 3, n).astype(float)
        if trial % 7 == 0:
            o[:3] = 0
        yield o


def test_onset_strength_and_detection_are_librosas():
    """The onset strength of mel power spectrograms and the onset detection with backtracking, as the models call
    librosa: the same arrays (values, signs of zeros, dtype), and librosa's error message where it raises, as the
    per-clip OnsetError (so that one such clip does not cost its batch the feature)."""
    import librosa
    from librosa.util.exceptions import ParameterError

    from bench.metrics.timbral import _onsets as O

    rng = np.random.default_rng(3)
    for trial in range(200):
        m = rng.random((int(rng.choice([1, 2, 128])), int(rng.integers(1, 200)))) ** 6 * 10 ** rng.uniform(-12, 3)
        if trial % 4 == 0:
            m[:, :rng.integers(0, m.shape[1] + 1)] = 0
        want = librosa.onset.onset_strength(S=librosa.power_to_db(m), sr=44100)
        got = O.onset_strengths(m[None], 44100)[0]
        assert np.array_equal(got, want) and np.array_equal(np.signbit(got), np.signbit(want))

    def outcome(detect, o, error):
        try:
            return detect(o.copy())
        except error as e:
            return str(e)

    errors = 0
    for o in _envelopes(np.random.default_rng(5), 6000):
        want = outcome(lambda e: librosa.onset.onset_detect(onset_envelope=e, sr=44100, backtrack=True,
                                                            units="samples"), o, ParameterError)
        got = outcome(lambda e: O.onset_detect(e, 44100), o, O.OnsetError)
        if isinstance(want, str):
            errors += 1
            assert got == want
        else:
            assert np.array_equal(got, want) and got.dtype == want.dtype, o
    assert errors > 0  # the cases where librosa's backtracking raises are covered


def test_numba_kernels_reload_from_their_cache():
    """Another process loads the kernels this one compiled from numba's on-disk cache and gets the same values (a
    recursive kernel once crashed the process that loaded it)."""
    import subprocess
    import sys

    from bench.metrics.timbral import extract, warm

    warm()
    x = np.sin(np.arange(SR) / 7.0) * np.exp(-np.arange(SR) / 4000.0)
    code = ("import numpy as np; from bench.metrics.timbral import extract; "
            f"x = np.sin(np.arange({SR}) / 7.0) * np.exp(-np.arange({SR}) / 4000.0); "
            f"print(repr(extract([x], {SR})[0].tolist()))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == repr(extract([x], SR)[0].tolist())


def test_torch_backend_agrees_with_numpy(clips):
    pytest.importorskip("torch")
    from bench.metrics.timbral import extract

    some = [clips[i] for i in (0, 1, 2, 3, 4)] + [clips[5][: SR // 3]]
    a, ra = extract(some, SR)
    b, rb = extract(some, SR, backend="torch")
    assert [set(r) for r in ra] == [set(r) for r in rb]
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-9)


def test_attack_time_kernel_equals_numpy():
    from bench.metrics.timbral import _onsets as O

    rng = np.random.default_rng(5)
    for trial in range(1500):
        n = int(rng.integers(1, 300))
        env = np.abs(rng.standard_normal(n))
        if trial % 3 == 1:
            env = np.round(env * 3) / 3  # ties
        elif trial % 3 == 2:
            env = np.cumsum(env)
        if trial % 100 == 0:
            env = np.zeros(n)
        for fixed, fs in ((True, 44100 / 128.0), (False, 44100)):
            got = []
            for f in (O.attack_time_numpy, O.attack_time):
                try:
                    with np.errstate(all="ignore"):
                        got.append(f(env, fs, fixed=fixed, max_attack=0.1))
                except O.OnsetError:
                    got.append("error")
            assert got[0] == got[1]


def test_pairwise_sum_is_numpys_sum():
    """numpy's pairwise summation, to the bit, through the unrolled halvings (up to 122,888 values) and the stack
    beyond them."""
    from bench.metrics.timbral._libkernels import pairwise_sum

    rng = np.random.default_rng(5)
    a = rng.standard_normal(200000) * 10.0 ** rng.uniform(-5, 5, 200000)
    for n in [*range(0, 1100), 1929, 3849, 3850, 4096, 7689, 8192, 122888, 122889, 199000]:
        lo = int(rng.integers(0, a.size - n + 1))
        assert pairwise_sum(a, lo, n) == np.sum(a[lo:lo + n]), n


def test_band_energy_equals_scipy():
    import scipy.signal as sps

    from bench.metrics.timbral._front import _third_octave_design
    from bench.metrics.timbral._libkernels import band_energy

    rng = np.random.default_rng(7)
    designs, _ = _third_octave_design(44100.0)
    for rows in (1, 2, 5):  # pairs of rows and an odd one out
        x = rng.standard_normal((rows, 4096))
        for b, a in (designs[25], designs[3], sps.butter(2, 0.1)):
            y = sps.lfilter(b, a, x, axis=-1)
            ss, top = band_energy(b, a, x)
            assert np.array_equal(ss, np.sum(y ** 2, axis=-1)) and np.array_equal(top, y.max(axis=-1))


def test_blockwise_mel_spectrogram_equals_mel_of_stft():
    from bench.metrics.timbral import _ops

    rng = np.random.default_rng(11)
    x = np.pad(rng.standard_normal((2, 30000)), ((0, 0), (4097, 0)))
    ops = _ops.NumpyOps()
    whole = ops.mel(ops.stft(x))
    assert np.array_equal(_ops.mel_spectrogram(x), whole)
    assert np.array_equal(_ops.mel_spectrogram(x, skip=7, block=5), whole)  # frames 0-6 lie in the zeros
