"""The shared front end of the batched timbral models: checking and preparing clips (loudness normalisation to
-24 LUFS with pyloudnorm, resampling to 44.1 kHz with librosa), the third-octave filter bank and Zwicker loudness
of 4096-sample windows, the batch the models work on, and helpers shared by several models (Butterworth cascades,
Bark-band weights)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import scipy.signal as sps

FS = 44100  # every model works at (at least) 44.1 kHz
WINDOW = 4096  # the loudness models' window


@dataclass
class Clip:
    """One clip, ready for the models: ``a`` at 44.1 kHz normalised to -24 LUFS (what every model but reverb reads),
    ``raw`` at 44.1 kHz without normalisation (what reverb reads); ``cache`` holds intermediate results that several
    models share."""

    a: np.ndarray
    raw: np.ndarray
    cache: dict = field(default_factory=dict)


@dataclass
class Batch:
    """Clips of one length that the models score together: ``a`` stacks their normalised samples (clips x
    samples); ``ops`` does the array work (:mod:`bench.metrics.timbral._ops`); ``cache`` holds what several models
    compute from the whole batch (the STFT of ``a``...)."""

    clips: list[Clip]
    ops: object = None
    cache: dict = field(default_factory=dict)

    def __post_init__(self):
        if len({len(c.a) for c in self.clips}) != 1:
            raise ValueError("timbral: a batch holds clips of one length")
        self.a = np.stack([c.a for c in self.clips])
        if self.ops is None:
            from bench.metrics.timbral._ops import NumpyOps

            self.ops = NumpyOps()

    def __len__(self) -> int:
        return len(self.clips)

    def shared(self, name: str, compute):
        """``compute()``, once per batch."""
        if name not in self.cache:
            self.cache[name] = compute()
        return self.cache[name]


def _loudness_gain(x: np.ndarray, sr: int) -> float:
    """The gain timbral_models applies before analysis: to -24 LUFS (a clip under 0.4 s is measured zero-padded),
    then down to a peak of 1 if that would clip."""
    import pyloudnorm as pyln

    meas = x if len(x) >= sr * 0.4 else np.pad(x, (0, int(sr * 0.4) - len(x)))
    loud = pyln.Meter(sr).integrated_loudness(meas)
    gain = float(np.power(10.0, (-24.0 - loud) / 20.0))
    peak = gain * float(np.max(np.abs(x)))
    if peak > 1.0:
        gain = gain / peak
    return gain


def refusal(x: np.ndarray) -> str | None:
    """Why timbral_models refuses clip ``x`` as a whole (None: it does not); a clip that is not finite and mono is
    an error."""
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("timbral: expects finite mono clips")
    if x.size == 0:
        return "empty clip"
    if not np.any(x):
        return "silent clip"
    return None


def prepare(clips: list[np.ndarray], sample_rate: int) -> tuple[list, list]:
    """Clips of one length (float64, none refused by :func:`refusal`) -> (a :class:`Clip` or None for each, and
    the reason of each None)."""
    import librosa

    if sample_rate > FS:
        raise ValueError(f"timbral: sample rates above {FS} Hz are not supported (got {sample_rate})")
    with np.errstate(all="ignore"):
        gains = np.array([_loudness_gain(x, sample_rate) for x in clips])
    good = np.flatnonzero(np.isfinite(gains))
    out: list = [None] * len(clips)
    reasons: list = ["loudness normalisation failed (clip too quiet)"] * len(clips)
    if len(good):
        block = np.stack([clips[i] for i in good])
        # soxr (HQ) is not exactly linear, so the normalised and the raw clip are resampled separately, as in the
        # reference
        both = np.concatenate([block * gains[good][:, None], block])
        if sample_rate < FS:
            both = librosa.resample(both, orig_sr=sample_rate, target_sr=FS)
        for r, i in enumerate(good):
            out[i] = Clip(a=both[r], raw=both[len(good) + r])
            reasons[i] = None
    return out, reasons


# --- filters ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def butter_ba(order: int, freq: float | tuple, btype: str, fs: float = FS):
    wn = np.asarray(freq, dtype=np.float64) / (0.5 * fs)
    return sps.butter(order, wn, btype)


def cascade(x: np.ndarray, freq: float, btype: str, times: int = 3, fs: float = FS) -> np.ndarray:
    """``times`` (1-3) passes of the same 2nd-order Butterworth filter (the models' steep high/low-pass) along the
    last axis: scipy.signal.lfilter's values, from one fused kernel."""
    from bench.metrics.timbral._libkernels import biquad_cascade

    b, a = butter_ba(2, float(freq), btype, fs)
    x = np.asarray(x, dtype=np.float64)
    return biquad_cascade(b, a, np.ascontiguousarray(x.reshape(-1, x.shape[-1])), times).reshape(x.shape)


@functools.lru_cache(maxsize=4)
def _third_octave_design(fs: float):
    """Band designs of the third-octave bank (25 Hz - 12.5 kHz): 4th-order Butterworth band-passes; the upper four
    bands directly at ``fs``, the rest with the top octave's three designs applied after repeated halving of the
    rate behind a Chebyshev type I anti-aliasing filter."""
    j = np.arange(-16, 12)
    ff = (2.0 ** (j / 3.0)) * 1000.0
    designs = []
    for fc in ff:
        lo = (2.0 ** (-1.0 / 6)) * fc / (fs / 2.0)
        hi = (2.0 ** (1.0 / 6)) * fc / (fs / 2.0)
        if hi >= 1.0:
            hi = 0.9999999999
        designs.append(sps.butter(4, [lo, hi], "bandpass"))
    aa = sps.cheby1(2, 0.1, 0.4)
    return designs, aa


def _level_db(b, a, x: np.ndarray) -> np.ndarray:
    """Level (dB) of each row of ``x`` filtered by (b, a); -inf where the filtered row is nowhere positive."""
    from bench.metrics.timbral._libkernels import band_energy

    ss, top = band_energy(b, a, x)
    with np.errstate(divide="ignore"):
        lv = 20 * np.log10(np.sqrt(ss / x.shape[1]))
    return np.where(top > 0, lv, -np.inf)


def third_octave_levels(win: np.ndarray, fs: float = FS, pref: float = 100.0) -> np.ndarray:
    """Levels (dB re ``pref``) of the 28 third-octave bands of each row of ``win`` (windows x samples)."""
    from bench.metrics.timbral._libkernels import lfilter_rows

    designs, (C, D) = _third_octave_design(float(fs))
    W = win.shape[0]
    P = np.zeros((W, 28))
    k = 23  # 5 kHz: the top band of the decimated part
    for i in range(27, k, -1):
        P[:, i] = _level_db(*designs[i], win)
    x = np.ascontiguousarray(win)
    up, mid, low = designs[k + 3], designs[k + 2], designs[k + 1]
    for i in range(k, 1, -3):
        x = np.ascontiguousarray(lfilter_rows(C, D, x)[:, 1::2])
        P[:, i] = _level_db(*up, x)
        P[:, i - 1] = _level_db(*mid, x)
        P[:, i - 2] = _level_db(*low, x)
    return P + pref


def windows(x: np.ndarray, n: int = WINDOW) -> np.ndarray:
    """``x`` cut into rows of ``n`` samples, zero-padded at the end (always by at least one sample's worth of a
    window: a length that divides evenly gets a whole window of zeros, as in the reference)."""
    pad = n - (len(x) % n)
    return np.pad(x, (0, pad)).reshape(-1, n)


def loudness_windows(clips: list[Clip]) -> None:
    """Zwicker loudness of every 4096-sample window of every clip, computed in one batch and stored in each clip's
    cache: ``N`` (total loudness per window), ``Nspec`` (windows x 240 specific loudness), ``rms`` per window,
    ``loud_ok`` (False when a window's pattern came out incomplete)."""
    from bench.metrics.timbral._zwicker import zwicker

    todo = [c for c in clips if "N" not in c.cache]
    if not todo:
        return
    wins = [windows(c.a) for c in todo]
    allw = np.concatenate(wins)
    P = third_octave_levels(allw)
    N, spec, ok = zwicker(np.ascontiguousarray(P))
    rms = np.sqrt(np.mean(allw * allw, axis=1))
    s = 0
    for c, w in zip(todo, wins, strict=True):
        e = s + len(w)
        c.cache.update(N=N[s:e], Nspec=spec[s:e], rms=rms[s:e], loud_ok=bool(ok[s:e].all()))
        s = e


def normal_weights(lo: int, hi: int) -> np.ndarray:
    """The 240-band weighting the models use to emphasise a Bark region [lo, hi) (a bell over the region, rescaled
    to 0..1; the reference's bell is nearly flat, which is reproduced here)."""
    z = np.arange(lo, hi, dtype=np.float64)
    mean, theta = (lo + hi) / 2.0, 0.01
    y = (1.0 / (theta * np.sqrt(2.0 * np.pi))) * np.exp((-1.0 * ((z - mean) ** 2.0)) / 2.0 * (theta ** 2.0))
    y -= y.min()
    y /= y.max()
    w = np.zeros(240)
    w[lo:hi] = y
    return w
