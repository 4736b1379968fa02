"""The metric suite: each metric against an independent computation on generated audio, 0 for identical audio,
growing with a known distortion, and a clear error or a documented NaN on NaN/Inf or silent audio."""

from __future__ import annotations

import importlib.util
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest

from bench.metrics import METRICS, get_metric
from bench.systems import Estimate
from bench.tasks import Example

SR = 24000
DATA = Path(__file__).parent / "data"
ALL = ["param_mae", "mrstft", "mel_dist", "mfcc_dist", "centroid_err", "loudness", "rms_err", "crest_err", "pesq",
       "ac"]


# --- generated audio ------------------------------------------------------------------------------------------


def tone(seconds=1.0, f0=220.0, seed=0, sr=SR):
    """A harmonic tone with a syllable-like envelope and a little noise: broadband, non-stationary."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = f0 * (1 + 0.05 * np.sin(2 * np.pi * 2.5 * t))
    phase = 2 * np.pi * np.cumsum(f) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.55 + 0.45 * np.sin(2 * np.pi * 3.0 * t))
    x = x + 0.02 * rng.standard_normal(t.size)
    return (0.25 * x / np.max(np.abs(x))).astype(np.float32)


def noisy(x, snr_db, seed=1):
    rng = np.random.default_rng(seed)
    n = rng.standard_normal(x.size)
    n *= np.sqrt(np.mean(x.astype(np.float64) ** 2) / np.mean(n**2)) * 10 ** (-snr_db / 20)
    return (x + n).astype(np.float32)


def lowpass(x, cutoff, sr=SR):
    from scipy.signal import butter, sosfilt

    return sosfilt(butter(4, cutoff, fs=sr, output="sos"), x).astype(np.float32)


def sine(f, seconds=1.0, amp=0.5, sr=SR):
    return (amp * np.sin(2 * np.pi * f * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def ex(target, i=0, task="speech/peq4/test", params=None, names=()):
    return Example(task, i, f"src{i}", target, target, np.asarray(target, dtype=np.float32), params, {}, names)


def est(output, params=None):
    return Estimate(params, np.asarray(output, dtype=np.float32))


def score(name, outputs, targets, config=None, task="speech/peq4/test"):
    m = get_metric(name, config, sample_rate=SR)
    return m.score_batch([est(o) for o in outputs], [ex(t, i, task) for i, t in enumerate(targets)])


# --- registry -------------------------------------------------------------------------------------------------


def test_every_metric_is_registered_and_constructs():
    assert set(ALL) <= set(METRICS.names())
    for name in ALL:
        m = get_metric(name, sample_rate=SR)
        assert m.name == name
    assert get_metric("pesq").higher_is_better and not get_metric("mrstft").higher_is_better
    with pytest.raises(ValueError, match="unknown key"):
        get_metric("mrstft", {"fft_size": 5})
    with pytest.raises(ValueError, match="same, non-zero length"):
        get_metric("mrstft", {"fft_sizes": [256, 512]})


# --- param_mae --------------------------------------------------------------------------------------------------


def test_param_mae_against_hand_computation_and_not_applicable():
    m = get_metric("param_mae")
    names = ("gain", "freq", "q")
    true = np.array([0.2, 0.5, 0.9], dtype=np.float32)
    e = ex(tone(0.1), params=true, names=names)
    r = m.score(est(None, params=np.array([0.3, 0.5, 1.4])), e)  # 1.4 is clipped to 1
    assert r["param_mae"] == pytest.approx((0.1 + 0.0 + 0.1) / 3, abs=1e-7)
    assert r["param_mae/gain"] == pytest.approx(0.1, abs=1e-7) and r["param_mae/freq"] == pytest.approx(0, abs=1e-7)
    assert m.score(est(None, params=true), e)["param_mae"] == 0.0
    # not applicable: the same keys, NaN (never 0), for a system without estimates and for hidden settings
    for r in (m.score(est(None, params=None), e), m.score(est(None, params=true), ex(tone(0.1), names=names))):
        assert set(r) == {"param_mae", "param_mae/gain", "param_mae/freq", "param_mae/q"}
        assert all(math.isnan(v) for v in r.values())
    with pytest.raises(ValueError, match="non-finite"):
        m.score(est(None, params=np.array([0.1, np.nan, 0.2])), e)
    with pytest.raises(ValueError, match="2 parameters"):
        m.score(est(None, params=np.array([0.1, 0.2])), e)


# --- mrstft -----------------------------------------------------------------------------------------------------


def _auraloss_mrstft(y, t):
    import auraloss
    import torch

    loss = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[256, 1024, 4096], hop_sizes=[64, 256, 1024],
                                                 win_lengths=[256, 1024, 4096])
    return float(loss(torch.from_numpy(y)[None, None], torch.from_numpy(t)[None, None]))


def test_mrstft_batched_equals_auraloss_on_single_clips():
    import auraloss
    import torch

    targets = [tone(1.0, 220, 0), 0.05 * tone(1.0, 330, 1), tone(1.0, 110, 2)]
    outputs = [noisy(targets[0], 20), noisy(targets[1], 5), lowpass(targets[2], 2000)]
    got = [r["mrstft"] for r in score("mrstft", outputs, targets)]
    want = [_auraloss_mrstft(y, t) for y, t in zip(outputs, targets, strict=True)]
    np.testing.assert_allclose(got, want, rtol=2e-5)
    # auraloss on the stacked batch is not the per-example mean (its spectral convergence spans the batch)
    batch = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[256, 1024, 4096], hop_sizes=[64, 256, 1024],
                                                  win_lengths=[256, 1024, 4096])(
        torch.from_numpy(np.stack(outputs))[:, None], torch.from_numpy(np.stack(targets))[:, None])
    assert abs(float(batch) - np.mean(want)) > 1e-3


def test_mrstft_zero_for_identical_and_grows_with_noise():
    t = tone()
    vals = [r["mrstft"] for r in score("mrstft", [t, noisy(t, 30), noisy(t, 10), noisy(t, 0)], [t] * 4)]
    assert vals[0] == pytest.approx(0.0, abs=1e-6)
    assert vals[0] < vals[1] < vals[2] < vals[3]


def test_mrstft_config_lin_mag_and_short_clips():
    t = tone(0.5)
    y = noisy(t, 10)
    got = score("mrstft", [y], [t], {"w_sc": 0.0, "w_log_mag": 0.0, "w_lin_mag": 1.0, "fft_sizes": [512],
                                     "hop_sizes": [128], "win_lengths": [512]})[0]["mrstft"]
    import torch

    Y = torch.stft(torch.from_numpy(y), 512, 128, 512, torch.hann_window(512), return_complex=True).abs()
    T = torch.stft(torch.from_numpy(t), 512, 128, 512, torch.hann_window(512), return_complex=True).abs()
    assert got == pytest.approx(float((Y - T).abs().mean()), rel=1e-3)
    with pytest.raises(ValueError, match="too short for an FFT of 4096"):
        score("mrstft", [t[:1500]], [t[:1500]])


# --- mel_dist -----------------------------------------------------------------------------------------------------


def test_mel_dist_equals_auraloss_mel_stft_loss():
    import auraloss
    import torch

    m = get_metric("mel_dist", sample_rate=SR)
    t = tone(1.0)  # 24000 samples: the 65536 window shrinks to 16384
    assert m.window_for(t.size) == 16384 and m.window_for(131072) == 65536
    outs = [noisy(t, 10), lowpass(t, 1500)]
    got = [r["mel_dist"] for r in m.score_batch([est(o) for o in outs], [ex(t), ex(t, 1)])]
    ref = auraloss.freq.MelSTFTLoss(SR, fft_size=16384, hop_size=16384, win_length=16384, w_sc=0, w_log_mag=1,
                                    w_lin_mag=1, n_mels=128)
    want = [float(ref(torch.from_numpy(o)[None, None], torch.from_numpy(t)[None, None])) for o in outs]
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_mel_dist_zero_for_identical_and_grows_with_lowpass():
    t = tone(1.0)
    vals = [r["mel_dist"] for r in score("mel_dist", [t, lowpass(t, 6000), lowpass(t, 2000), lowpass(t, 500)],
                                         [t] * 4)]
    assert vals[0] == pytest.approx(0.0, abs=1e-6)
    assert vals[0] < vals[1] < vals[2] < vals[3]


# --- mfcc_dist ----------------------------------------------------------------------------------------------------


def _librosa_mfcc_dist(y, t):
    import librosa

    a = librosa.feature.mfcc(y=y.astype(np.float64), sr=SR, n_mfcc=20)
    b = librosa.feature.mfcc(y=t.astype(np.float64), sr=SR, n_mfcc=20)
    return float(np.abs(a[1:] - b[1:]).sum(axis=0).mean())


def test_mfcc_dist_equals_librosa_per_clip_even_in_a_mixed_batch():
    # a loud and a very quiet clip in one batch: librosa on the (B, n) array would floor the quiet one at 80 dB
    # below the loud one; per clip (what we compute) each has its own floor
    targets = [tone(1.0, 220, 0), 1e-4 * tone(1.0, 150, 1)]
    outputs = [lowpass(targets[0], 3000), noisy(targets[1], 10)]
    got = [r["mfcc_dist"] for r in score("mfcc_dist", outputs, targets)]
    want = [_librosa_mfcc_dist(y, t) for y, t in zip(outputs, targets, strict=True)]
    np.testing.assert_allclose(got, want, rtol=2e-3)


def test_mfcc_dist_zero_for_identical_and_grows_with_noise():
    t = tone(1.0)
    vals = [r["mfcc_dist"] for r in score("mfcc_dist", [t, noisy(t, 30), noisy(t, 10), noisy(t, 0)], [t] * 4)]
    assert vals[0] == pytest.approx(0.0, abs=1e-4)
    assert vals[0] < vals[1] < vals[2] < vals[3]


# --- centroid_err --------------------------------------------------------------------------------------------------


def test_centroid_err_against_librosa_and_pure_tones():
    import librosa

    def ref_centroid(x):
        S = np.abs(librosa.stft(x.astype(np.float64), n_fft=2048, hop_length=512))
        c = librosa.feature.spectral_centroid(S=S, sr=SR)[0]
        w = S.sum(axis=0)
        return float((c * w).sum() / w.sum())

    t = tone(1.0)
    outs = [lowpass(t, 1000), noisy(t, 0)]
    got = [r["centroid_err"] for r in score("centroid_err", outs, [t, t])]
    np.testing.assert_allclose(got, [abs(ref_centroid(o) - ref_centroid(t)) for o in outs], rtol=1e-4)
    # a 1 kHz and a 2 kHz sine: about 1000 Hz apart
    r = score("centroid_err", [sine(2000), sine(1000)], [sine(1000), sine(1000)])
    assert r[0]["centroid_err"] == pytest.approx(1000, rel=0.02) and r[1]["centroid_err"] == 0.0


# --- level metrics ---------------------------------------------------------------------------------------------------


def test_loudness_against_bs1770_sine_and_gain():
    m = get_metric("loudness", sample_rate=SR)
    full = sine(997, 2.0, amp=1.0)
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads -3.01 LKFS (EBU Tech 3341 allows +-0.1 LU)
    assert m.value(full) == pytest.approx(-3.01, abs=0.1)
    r = m.score_batch([est(full * 0.5), est(full), est(np.zeros_like(full))], [ex(full), ex(full, 1), ex(full, 2)])
    assert r[0]["loudness"] == pytest.approx(20 * np.log10(2), abs=0.01)
    assert r[1]["loudness"] == 0.0
    assert r[2]["loudness"] == pytest.approx(70 - 3.01, abs=0.1)  # silence counts as -70 LUFS: large, finite
    with pytest.raises(ValueError, match="shorter than one gating block"):
        m.score(est(full[:4000]), ex(full[:4000]))


def test_rms_and_crest_errors_against_closed_forms():
    s = sine(440, 1.0, amp=0.5)
    square = (0.5 * np.sign(s)).astype(np.float32)
    clipped = np.clip(s, -0.1, 0.1).astype(np.float32)
    rms = score("rms_err", [s * 0.25, s, np.zeros_like(s)], [s, s, s])
    assert rms[0]["rms_err"] == pytest.approx(20 * np.log10(4), abs=1e-4) and rms[1]["rms_err"] == 0.0
    assert rms[2]["rms_err"] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)) + 120, abs=1e-4)  # silence: -120 dBFS
    crest = score("crest_err", [square, clipped, s, np.zeros_like(s)], [s, s, s, s])
    assert crest[0]["crest_err"] == pytest.approx(10 * np.log10(2), abs=1e-3)  # sine 3.01 dB, square 0 dB
    assert 0 < crest[1]["crest_err"] < 10 * np.log10(2)  # clipping flattens peaks
    assert crest[2]["crest_err"] == 0.0
    assert math.isnan(crest[3]["crest_err"])  # silence: undefined crest factor


# --- silence, NaN/Inf: every audio metric --------------------------------------------------------------------------


AUDIO = ["mrstft", "mel_dist", "mfcc_dist", "centroid_err", "loudness", "rms_err", "crest_err", "pesq"]


@pytest.mark.parametrize("name", AUDIO)
def test_nan_or_inf_audio_raises_a_clear_error(name):
    t = tone(0.5)
    bad = t.copy()
    bad[100] = np.nan
    with pytest.raises(ValueError, match=rf"{name}: NaN or Inf samples in the output of speech/peq4/test#0"):
        score(name, [bad], [t])
    bad[100] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf samples in the target"):
        score(name, [t], [bad])


@pytest.mark.parametrize("name", ["mrstft", "mel_dist", "mfcc_dist", "centroid_err", "loudness", "rms_err",
                                  "crest_err"])
def test_silent_audio_gives_finite_or_documented_nan(name):
    t, z = tone(0.5), np.zeros(12000, np.float32)
    r = score(name, [z, t, z], [t, z, z])
    nan_for_silence = {"centroid_err", "crest_err"}  # undefined for silence (docs/metrics.md)
    for d in r:
        (v,) = d.values()
        assert math.isnan(v) if name in nan_for_silence else math.isfinite(v)
    if name not in nan_for_silence:
        assert r[2][name] == pytest.approx(0.0, abs=1e-6)  # silence vs silence
        assert r[0][name] > 0


# --- pesq -------------------------------------------------------------------------------------------------------------


def test_pesq_is_nan_when_not_applicable():
    from bench.metrics.speech import corpus_label, pesq_available

    t = tone(1.0)
    assert corpus_label("folder:/data/daps/clean/peq4/test") == "folder:/data/daps/clean"
    assert math.isnan(score("pesq", [t], [t], task="music/peq4/test")[0]["pesq"])
    if not pesq_available():
        assert math.isnan(score("pesq", [t], [t])[0]["pesq"])


@pytest.mark.skipif(importlib.util.find_spec("pesq") is None, reason="the optional pesq package is not installed")
def test_pesq_against_the_pesq_package():
    import pesq

    from bench.audio import resample

    t = tone(2.0, 140)
    outs = [t, noisy(t, 20), noisy(t, 0), np.zeros_like(t)]
    got = [r["pesq"] for r in score("pesq", outs, [t] * 4)]
    want = [pesq.pesq(16000, resample(t, SR, 16000), resample(o, SR, 16000), "wb") for o in outs[:3]]
    np.testing.assert_allclose(got[:3], want, rtol=1e-6)
    assert got[0] > 4.0 and got[0] > got[1] > got[2]
    assert got[3] == pytest.approx(1.043)  # silent output: the scale's floor
    assert score("pesq", [t], [t], {"speech_corpora": ["folder"]}, task="folder:/x/peq4/test")[0]["pesq"] > 4


# --- AudioCommons -------------------------------------------------------------------------------------------------------


@pytest.fixture
def ac_cache(tmp_path, monkeypatch):
    from bench.metrics import audiocommons

    monkeypatch.setenv("AFX_BENCH_CACHE", str(tmp_path))
    audiocommons.clear_memory_cache()
    yield tmp_path
    audiocommons.clear_memory_cache()


def _load_reference_script():
    spec = importlib.util.spec_from_file_location("make_ac_ref", DATA / "make_audiocommons_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ac_adapter_reproduces_recorded_features():
    """Features recorded by tests/data/make_audiocommons_reference.py (memoisation off) are reproduced (on)."""
    from bench.metrics.audiocommons import timbral_features

    ref = json.loads((DATA / "audiocommons_reference.json").read_text())
    clips = _load_reference_script().clips()
    assert set(clips) == set(ref["features"])
    for name, x in clips.items():
        feats, errors = timbral_features(x, ref["sample_rate"])
        assert errors == {}
        for f, want in ref["features"][name].items():
            assert feats[f] == pytest.approx(want, abs=1e-3), (name, f, ref["provenance"]["versions"])


def test_ac_adapter_leaves_numpy_and_librosa_alone():
    import librosa
    import scipy.signal
    import timbral_models.Timbral_Hardness as hardness_mod
    import timbral_models.timbral_util as util

    from bench.metrics.timbral_ref import _memoised, timbral_compat

    real_detect = librosa.onset.onset_detect
    assert util.np is np and util.librosa is librosa and util.butter is scipy.signal.butter
    with timbral_compat() as tm:
        assert tm.timbral_util is util
        assert util.np is not np and util.np.lib.pad is np.pad and util.np.sum is np.sum
        assert hardness_mod.librosa is not librosa
        # everyone else's view is unchanged, even inside the block
        assert not hasattr(np.lib, "pad") and librosa.onset.onset_detect is real_detect
        with pytest.raises(TypeError):
            librosa.onset.onset_detect(np.zeros(4096, np.float32), 22050)
    assert util.np is np and hardness_mod.librosa is librosa and util.butter is scipy.signal.butter
    # restored after an exception, too
    with pytest.raises(RuntimeError, match="boom"), timbral_compat():
        raise RuntimeError("boom")
    assert util.np is np and util.scipy is scipy
    # memoised filter design gives the same arrays as scipy, as fresh copies
    memo = _memoised("butter")
    for _ in range(2):
        b, a = memo(2, [0.1, 0.2], "bandpass")
        b2, a2 = scipy.signal.butter(2, [0.1, 0.2], "bandpass")
        assert np.array_equal(b, b2) and np.array_equal(a, a2)
        b[:] = 0  # the cached arrays are not the returned ones


def test_ac_adapter_is_thread_safe():
    import timbral_models.timbral_util as util

    from bench.metrics.timbral_ref import timbral_compat

    barrier = threading.Barrier(2)
    seen = []

    def use(wait_first):
        with timbral_compat():
            barrier.wait()
            if wait_first:
                barrier.wait()  # the other thread has left; the shims must still be installed for this one
            seen.append(util.np is not np)
            if not wait_first:
                barrier.wait()

    threads = [threading.Thread(target=use, args=(w,)) for w in (True, False)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert seen == [True, True] and util.np is np


def test_ac_prefetch_gives_the_same_scores_and_computes_each_clip_once(ac_cache):
    from bench.metrics import audiocommons

    ref = _load_reference_script().clips()
    targets = [ref["pluck"], ref["bursts"]]
    exs = [ex(t, i) for i, t in enumerate(targets)]
    outs = [est(lowpass(targets[0], 2000)), est(lowpass(targets[1], 1500))]
    m = get_metric("ac", {"workers": 2, "disk_cache": False}, sample_rate=SR)
    try:
        m.prefetch(outs, exs)  # the four clips go to the pool in the background
        assert len(m._pending) == 4
        m.prefetch(outs, exs)  # asking again submits nothing new
        assert len(m._pending) == 4
        early = m.score_batch(outs, exs)
        assert m.stats["computed"] == 4 and not m._pending
    finally:
        m.close()
    audiocommons.clear_memory_cache()
    plain = get_metric("ac", {"workers": 1, "disk_cache": False}, sample_rate=SR)  # no pool, no prefetch
    plain.prefetch(outs, exs)
    assert not plain._pending
    for a, b in zip(plain.score_batch(outs, exs), early, strict=True):
        assert a == pytest.approx(b)


def test_ac_metric_pool_cache_and_values(ac_cache):
    from bench.metrics import audiocommons

    ref = _load_reference_script().clips()
    targets = [ref["pluck"], ref["bursts"]]
    m = get_metric("ac", {"workers": 2}, sample_rate=SR)
    try:
        exs = [ex(t, i) for i, t in enumerate(targets)]
        # system A: identical output for example 0, low-passed for example 1 (4 distinct clips -> 3 computed)
        dull = lowpass(targets[1], 1500)
        ra = m.score_batch([est(targets[0]), est(dull)], exs)
        assert m.stats["computed"] == 3
        assert all(v == 0.0 for v in ra[0].values())
        assert ra[1]["ac/brightness"] > 10 and ra[1]["ac_signed/brightness"] < -10  # duller
        assert ra[1]["ac_signed/sharpness"] < 0
        d = ra[1]
        assert d["ac_mean"] == pytest.approx(np.mean([d[f"ac/{f}"] for f in audiocommons.CONTINUOUS]))
        assert set(d) == ({f"ac/{f}" for f in audiocommons.FEATURES} | {"ac_mean"}
                          | {f"ac_signed/{f}" for f in audiocommons.FEATURES})
        # system B on the same examples: the targets' features come from memory, only its outputs are computed
        rb = m.score_batch([est(0.5 * targets[0]), est(np.zeros_like(targets[1]))], exs)
        assert m.stats["computed"] == 5  # the two new outputs (silence is answered without timbral_models)
        assert all(v == pytest.approx(0.0, abs=1e-6) for v in rb[0].values())  # blind to gain (loudness-normalised)
        assert all(math.isnan(v) for v in rb[1].values())  # silent output: NaN (timbral_models refuses silence)
    finally:
        m.close()
    # a new run: everything from the disk cache, nothing computed
    audiocommons.clear_memory_cache()
    m2 = get_metric("ac", {"workers": 2}, sample_rate=SR)
    r2 = m2.score_batch([est(targets[0]), est(dull)], exs)
    assert m2.stats["computed"] == 0 and m2.stats["disk_hits"] == 3
    assert r2[1] == pytest.approx(ra[1])
    assert any((ac_cache / "audiocommons").rglob("*.json"))
    bad = targets[0].copy()
    bad[5] = np.inf
    with pytest.raises(ValueError, match="ac: NaN or Inf samples in the output"):
        m2.score_batch([est(bad)], exs[:1])


def _task_examples(n=3):
    """A task's examples: inputs (tones) and targets (their low-passed versions), distinct clips."""
    from bench.tasks import Example

    inputs = [tone(0.5, f0=150.0 + 40 * i, seed=i) for i in range(n)]
    return [Example("music/peq4/test", i, f"src{i}", x, x, lowpass(x, 1200), np.full(4, 0.5), {}, ())
            for i, x in enumerate(inputs)]


def test_ac_features_of_inputs_and_targets_are_computed_once_per_task(ac_cache, monkeypatch):
    """Every system and seed that scores a task's examples shares one computation of each input and target (bypass
    answers with the inputs, the oracle with the targets): counted clip by clip at the batched extractor."""
    from bench.metrics import audiocommons, timbral

    computed: list[bytes] = []
    real = timbral.extract

    def counting(clips, *a, **kw):
        computed.extend(np.asarray(x, np.float32).tobytes() for x in clips)
        return real(clips, *a, **kw)

    monkeypatch.setattr(timbral, "extract", counting)
    exs = _task_examples()
    systems = {"bypass": [est(e.input) for e in exs], "oracle": [est(e.target) for e in exs],
               "gain": [est(0.5 * e.input) for e in exs], "dull": [est(lowpass(e.input, 600)) for e in exs]}
    for seed in range(2):  # each seed's run of the grid: its own metric, the same task
        m = get_metric("ac", {"workers": 1}, sample_rate=SR)
        for name, ests in systems.items():
            m.prefetch(ests, exs)
            scores = m.score_batch(ests, exs)
            assert all(math.isfinite(s["ac_mean"]) for s in scores), name
        assert m.stats["computed"] == (12 if seed == 0 else 0)
    distinct = {np.asarray(c, np.float32).tobytes() for e in exs for c in (e.input, e.target)}
    distinct |= {np.asarray(s.output, np.float32).tobytes() for k in ("gain", "dull") for s in systems[k]}
    assert len(computed) == len(distinct) == 12 and set(computed) == distinct  # each clip once, nothing twice
    audiocommons.clear_memory_cache()  # a later run: everything from the disk cache
    m = get_metric("ac", {"workers": 1}, sample_rate=SR)
    m.score_batch(systems["dull"], exs)
    assert m.stats["computed"] == 0 and len(computed) == 12


_SCORE_IN_A_PROCESS = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_metrics import _task_examples, est, SR
from bench.metrics import get_metric
go = Path({go!r})
while not go.exists():
    time.sleep(0.01)
exs = _task_examples()
m = get_metric("ac", {{"workers": 1}}, sample_rate=SR)
m.score_batch([est(e.input) for e in exs], exs)
print(json.dumps(m.stats["computed"]))
"""


def test_ac_processes_sharing_a_cache_compute_each_clip_once(ac_cache):
    """Two processes (say, two cells of one task in worker processes) score the same inputs and targets at the same
    time: the claims on the disk cache let each clip be computed by one of them only."""
    import os
    import subprocess
    import sys

    from bench.metrics.timbral import warm

    warm()  # compile once here, so that both processes load the kernels from numba's cache
    go = ac_cache / "go"
    code = _SCORE_IN_A_PROCESS.format(tests=str(Path(__file__).parent), go=str(go))
    env = {**os.environ, "AFX_BENCH_CACHE": str(ac_cache)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert sum(json.loads(o.strip().splitlines()[-1]) for o, _ in outs) == 6  # 3 inputs + 3 targets, once each
    assert not list((ac_cache / "audiocommons").rglob("*.claim"))  # every claim released


def test_ac_claims_of_gone_processes_are_taken_over(ac_cache):
    import os
    import socket
    import subprocess
    import sys

    from bench.metrics.audiocommons import _Claims, _start_time

    claims = _Claims(lambda key: ac_cache / "audiocommons" / f"{key}.json")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(dead.stdout)
    path = ac_cache / "audiocommons" / "k1.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{socket.gethostname()}:{gone}:123")  # its process has exited
    assert claims.take("k1")
    path.write_text(f"{socket.gethostname()}:{os.getppid()}:{_start_time(os.getppid())}")  # a live process
    assert not claims.take("k1")
    path.write_text(f"{socket.gethostname()}:{os.getppid()}:1")  # that id, but another start: reused
    assert claims.take("k1")
    claims.release("k1")
    assert not path.exists()
