"""Onsets, envelopes and attack times as the timbral models define them (librosa's onset detector refined by
walking back along a sample-and-hold envelope, then pruned by dynamic range, spacing and onset strength)."""

from __future__ import annotations

import functools

import numpy as np

from bench.metrics.timbral import _kernels as K
from bench.metrics.timbral import _libkernels as L


class OnsetError(Exception):
    pass


def envelope(x: np.ndarray, fs: float, decay_time: float = 0.2, hold_time: float = 0.01) -> np.ndarray:
    a = np.abs(x)
    return K.hold_envelope(a, float(a.max() / (decay_time * fs)), float(hold_time * fs))


def power_to_db(power: np.ndarray) -> np.ndarray:
    """librosa.power_to_db with its defaults (ref 1, amin 1e-10, top_db 80), operation for operation (numpy's
    log10; subtracting 10 log10(ref) = 0 changes nothing)."""
    db = 10.0 * np.log10(np.maximum(1e-10, power))
    return np.maximum(db, db.max() - 80.0)


def onset_strengths(mel: np.ndarray, fs: float) -> list[np.ndarray]:
    """librosa's onset strength (its defaults) of each mel power spectrogram (rows x mels x frames, as librosa's
    melspectrogram of a signal), one at a time (librosa's dB conversion limits the range relative to the maximum
    of the whole array it is given): :func:`power_to_db` and :func:`~bench.metrics.timbral._kernels.onset_envelope`,
    librosa's arithmetic without its argument handling (a third of the time; the tests compare them)."""
    return [K.onset_envelope(power_to_db(m)) for m in mel]


def onset_detect(oenv: np.ndarray, fs: float, hop: int = 512) -> np.ndarray:
    """librosa.onset.onset_detect(onset_envelope=oenv, sr=fs, backtrack=True, units="samples") with its defaults:
    the envelope normalised as librosa does it, peak picking and backtracking in one kernel
    (:func:`~bench.metrics.timbral._kernels.peak_backtrack`), the same samples (a tenth of the time: librosa's
    argument handling dominated its calls; the tests compare them). Where librosa raises (an envelope with no peak
    to backtrack from), this raises :class:`OnsetError` with librosa's message: the clip's value is NaN with that
    reason, as timbral_models' is, and the other clips of its batch keep theirs."""
    x = oenv - np.min(oenv, keepdims=True, axis=-1)
    x /= np.max(x, keepdims=True, axis=-1) + np.finfo(x.dtype).tiny
    if not x.any() or not np.all(np.isfinite(x)):
        return np.array([], dtype=int)
    frames = K.peak_backtrack(x, *_peak_params(float(fs), hop))
    if not len(frames):
        raise OnsetError("Attempting to match empty event list")  # librosa's backtracking's message
    return frames * hop


@functools.lru_cache(maxsize=4)
def _peak_params(sr: float, hop: int) -> tuple:
    """onset_detect's peak-picking settings, as librosa computes and rounds them (30, 0, 100, 100 and 30 ms; its
    compiled peak picker takes the threshold 0.07 as a float32)."""
    def ceil(v):
        return int(np.ceil(v))

    return (ceil(0.03 * sr // hop), ceil(0.00 * sr // hop + 1), ceil(0.10 * sr // hop), ceil(0.10 * sr // hop + 1),
            float(np.float32(0.07)), ceil(0.03 * sr // hop))


def onsets(env: np.ndarray, oenv: np.ndarray, fs: float, nperseg: int = 512) -> list[int]:
    """Refined onset positions (samples) of one signal, from its envelope ``env`` and onset strength ``oenv``;
    ``[0]`` when there are none."""
    det = onset_detect(oenv, fs)
    time_thresh = int(20 * 0.001 * fs)
    hyst_samples = int(300 * fs * 0.001)
    dyn = float(env.max() - env.min())
    hyst_thresh = dyn * 10 * 0.01
    if not np.size(det):
        return [0]
    found: list[int] = []
    for o in det:
        o = int(o)
        if o > 0:
            if not found or o + 511 < len(env):
                if o <= 1:
                    raise OnsetError("onset at the first samples")
                found.append(int(K.look_back(o, env, time_thresh, hyst_thresh, hyst_samples, nperseg)))
        else:
            found.append(0)
    # zeros are dropped, except one in first place; then repeats
    kept = [v for q, v in enumerate(found) if v != 0 or q == 0]
    uniq: list[int] = []
    for v in kept:
        if v not in uniq:
            uniq.append(v)
    c = uniq
    if len(c) > 1:  # drop onsets whose segment rises by less than 10 % of the envelope's range
        thr = 10 * dyn * 0.01
        for i in reversed(range(len(c))):
            seg = env[c[i]:] if c[i] == c[-1] else env[c[i]:c[i + 1]]
            if len(seg) > 1:
                pk = int(np.argmax(seg))
                if pk > 0 and seg.max() - seg[:pk].min() >= thr:
                    continue
            del c[i]
    if len(c) > 1:  # at least 100 ms apart
        sep = fs * 0.001 * 100
        while len(c) > 1 and np.min(np.diff(c)) < sep:
            drop = {i + 1 for i in range(len(c) - 1) if abs(c[i + 1] - c[i]) < sep}
            c = [v for q, v in enumerate(c) if q not in drop]
    out = []
    st = [int(v / 512) for v in c]
    for i in reversed(range(len(c))):
        cur = st[i]
        seg = oenv[cur:] if cur == st[-1] else oenv[cur:st[i + 1]]
        if seg.size == 0:
            raise OnsetError("empty onset-strength segment")
        if seg.max() < 3:
            del st[i]
        else:
            out.append(c[i])
    out.sort()
    return out if out else [0]


_LEVELS = np.linspace(0.1, 0.9, 9)


def attack_time(env: np.ndarray, fs: float, *, fixed: bool = False, max_attack: float = -1.0):
    """(log10 attack time, start index) of an envelope segment: from the lowest point before its peak to the peak,
    by CUIDADO's minimum-effort thresholds (or fixed 20 %/90 % thresholds); None when the peak is the first sample.
    One kernel call (:func:`~bench.metrics.timbral._kernels.attack`; ten per clip made this numpy bookkeeping a
    noticeable share of hardness)."""
    status, t, start = K.attack(np.ascontiguousarray(env, dtype=np.float64), float(fs), fixed, float(max_attack),
                                _LEVELS)
    if status == 0:
        return None
    if status == 1:
        raise OnsetError("attack end outside the segment")
    return float(np.log10(t)), start


def attack_time_numpy(env: np.ndarray, fs: float, *, fixed: bool = False, max_attack: float = -1.0):
    """:func:`attack_time` in numpy (the definition the kernel follows; the tests compare them)."""
    env = env / float(env.max())
    peak = int(np.argmax(env))
    if peak == 0:
        return None
    pre = env[:peak]
    minpre = int(np.where(pre == pre.min())[0][-1])
    env = env[minpre:peak + 1]
    lo = env.min()
    dyn = env.max() - lo
    if fixed:
        s = int(np.argmax(env >= 0.2 * dyn + lo))
        e = int(np.argmax(env[s:] >= 0.9 * dyn + lo)) + s
    else:
        levels = np.linspace(0.1, 0.9, 9) * dyn + lo
        idxs = np.argmax(env[None, :] >= levels[:, None], axis=1).astype(float)
        effort = np.diff(idxs)
        thr = effort.mean() * 3
        a = int(np.argmax(effort <= thr))
        b = int(np.argmax(effort[a:] >= thr))
        if b == 0:
            b = len(effort[a:]) - 1
        b += a
        s, e = idxs[a], idxs[b]
        if s == e:
            s, e = idxs[0], idxs[-1]
    t = 1.0 / fs if s == e else (e - s + 1.0) / fs
    if max_attack > 0 and t > max_attack:
        e = s + int(fs * max_attack)
        t = (e - s + 1.0) / fs
    if int(e) >= len(env):
        raise OnsetError("attack end outside the segment")
    return float(np.log10(t)), int(s + minpre)


def rms_envelope(x: np.ndarray, step: int, hop: int) -> np.ndarray:
    """RMS of ``step``-sample windows every ``hop`` samples while a whole window fits before the last sample,
    then of the rest (NaN if nothing is left): numpy's means, to the bit."""
    return L.rms_windows(np.ascontiguousarray(x, dtype=np.float64), step, hop)
