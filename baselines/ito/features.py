"""Style features: statistics over time that describe *how* a clip was processed, not *what* it contains.

The input and the reference of an example are different segments of one source, so a distance between
waveforms or between frame-aligned spectrograms would mostly measure the content mismatch. Every feature here is
a statistic pooled over time (per mel band, per MFCC, or of the temporal envelope), so two segments of the same
source processed the same way land close together while a different setting of the effect moves them apart.

Two families, chosen by name:

``mel``   (default) per-band statistics of a log-mel spectrogram in dBFS, plus the temporal envelope:
          * ``level``   the long-term average spectrum, 10 log10 of each band's mean power (EQ, gain, tone,
                        distortion's harmonics); dominated by active frames, so pauses barely move it,
          * ``crest``   each band's peak-to-average ratio (compression, reverb and delay smearing peaks),
          * ``fill``    how far the quiet frames sit below the average (reverb tails, delays and noise filling
                        the gaps; bitcrush),
          * ``flux``    mean absolute frame-to-frame change of each band (reverb smears, modulation wobbles),
          * ``echo``    autocorrelation of the onset envelope at lags up to ``max_lag_s`` (delay time and feedback),
          * ``modulation`` how band envelopes' fluctuation splits over modulation rates (chorus/phaser rate).
          Frame levels are floored ``rel_floor_db`` below each band's long-term level before the frame
          statistics, so pauses (whose share differs between segments) count only as far as the effect fills them.
``mfcc``  mean and standard deviation over time of MFCCs of the same log-mel spectrogram (librosa's definition:
          the orthonormal DCT-II of the dB mel bands; the filters equal ``librosa.filters.mel``).

The distance is a weighted mean absolute difference: each group is averaged over its own elements and then
weighted, so a group's weight does not depend on how many bands it has. Spectral groups are in dB; the envelope
groups are unitless and scaled so that their typical range is comparable to a few dB.

Everything is numpy (scipy's FFT and one 2-D matmul per batch, both of which release the GIL), so the system
can compute features inside the same worker threads that render the effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft

KINDS = ("mel", "mfcc")

# default weights per group (distance units: roughly "dB" for all of them)
MEL_WEIGHTS = {"level": 1.0, "crest": 1.0, "fill": 0.5, "flux": 1.0, "echo": 20.0, "modulation": 10.0}
MFCC_WEIGHTS = {"mfcc_mean": 1.0, "mfcc_std": 1.0}


@dataclass
class FeatureSpec:
    kind: str = "mel"
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 48
    n_mfcc: int = 20
    fmin: float = 30.0
    max_lag_s: float = 0.55
    floor_db: float = -100.0
    rel_floor_db: float = 50.0
    temporal_weight: float = 1.0  # multiplies the echo/flux/modulation groups (sweepable)


def hz_to_mel(f):
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0), lin)


def mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular filters on the Slaney mel scale, unnormalised: (n_fft // 2 + 1, n_mels), float32.

    The same filters as ``librosa.filters.mel(..., norm=None)``, written out so that the features do not import
    librosa (whose import costs seconds)."""
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    lower = (freqs[:, None] - edges[None, :-2]) / np.diff(edges)[None, :-1]
    upper = (edges[None, 2:] - freqs[:, None]) / np.diff(edges)[None, 1:]
    return np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)


class StyleFeatures:
    """``features(audio (B, n)) -> (B, D)``; ``distance(F (B, D), ref (D,)) -> (B,)``."""

    def __init__(self, sample_rate: int, spec: FeatureSpec | None = None):
        self.sample_rate = int(sample_rate)
        self.spec = spec or FeatureSpec()
        s = self.spec
        if s.kind not in KINDS:
            raise ValueError(f"unknown feature kind {s.kind!r}; valid: {', '.join(KINDS)}")
        self.window = np.hanning(s.n_fft + 1)[:-1].astype(np.float32)
        # power of a full-scale sine in one bin, so levels read in dBFS whatever the FFT size
        self.norm = float((self.window.sum() / 2) ** 2)
        fmax = min(0.5 * self.sample_rate, 16000.0)
        self.melfb = mel_filterbank(self.sample_rate, s.n_fft, s.n_mels, s.fmin, fmax)  # (F, M)
        self.melfb /= np.maximum(self.melfb.sum(axis=0, keepdims=True), 1e-8)  # each band = mean bin power
        self._layouts: dict[int, tuple[dict[str, slice], np.ndarray]] = {}  # feature size -> (groups, weights)

    # --- the spectrogram ---------------------------------------------------------------------------------
    def logmel(self, audio: np.ndarray) -> np.ndarray:
        """(B, n) -> (B, T, M) in dBFS, floored at ``floor_db`` (frames inside the clip only, no padding)."""
        s = self.spec
        x = np.asarray(audio, dtype=np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.shape[1] < s.n_fft + s.hop:
            x = np.pad(x, ((0, 0), (0, s.n_fft + s.hop - x.shape[1])))
        view = np.lib.stride_tricks.sliding_window_view(x, s.n_fft, axis=-1)[:, :: s.hop]
        floor = 10.0 ** (s.floor_db / 10.0)
        out = np.empty((x.shape[0], view.shape[1], self.melfb.shape[1]), np.float32)
        for i in range(x.shape[0]):  # clip by clip: a whole batch's frames would fall out of the CPU caches
            X = scipy.fft.rfft(view[i] * self.window, axis=-1)
            power = (X.real**2 + X.imag**2) @ self.melfb
            out[i] = 10.0 * np.log10(power * (1.0 / self.norm) + floor)
        return out

    # --- groups ------------------------------------------------------------------------------------------
    def groups(self, audio: np.ndarray, db: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Named feature groups, each (B, d)."""
        db = self.logmel(audio) if db is None else db
        if self.spec.kind == "mfcc":  # librosa's definition: orthonormal DCT-II of the dB mel bands
            mfcc = scipy.fft.dct(db, type=2, norm="ortho", axis=-1)[..., : self.spec.n_mfcc]  # (B, T, C)
            return {"mfcc_mean": mfcc.mean(axis=1), "mfcc_std": mfcc.std(axis=1)}
        power = 10.0 ** (db / 10.0)
        level = 10.0 * np.log10(power.mean(axis=1) + 1e-12)  # long-term average spectrum: robust to pauses
        # frame levels floored ``rel_floor_db`` below each band's long-term level, so pauses (which differ
        # between segments) weigh in only as far as the effect fills them
        rel = np.maximum(db, level[:, None, :] - self.spec.rel_floor_db)
        return {
            "level": level,
            "crest": 5.0 * np.log10((power**2).mean(axis=1) + 1e-24) - level,  # peak-to-average per band
            "fill": rel.mean(axis=1) - level,  # how far the quiet frames sit below the average
            "flux": np.abs(np.diff(rel, axis=1)).mean(axis=1),
            "echo": self._echo(rel),
            "modulation": self._modulation(rel),
        }

    def _echo(self, db: np.ndarray) -> np.ndarray:
        """Normalised autocorrelation of the onset envelope (positive spectral flux averaged over bands)."""
        onset = np.maximum(np.diff(db, axis=1), 0.0).mean(axis=2)  # (B, T-1)
        onset = onset - onset.mean(axis=1, keepdims=True)
        T = onset.shape[1]
        lags = max(1, min(T - 2, int(round(self.spec.max_lag_s * self.sample_rate / self.spec.hop))))
        spec = np.fft.rfft(onset, n=2 * T, axis=1)
        ac = np.fft.irfft(spec.real**2 + spec.imag**2, n=2 * T, axis=1)  # linear (not circular) correlation
        return ac[:, 1 : lags + 1] / (ac[:, :1] + 1e-9)

    def _modulation(self, db: np.ndarray) -> np.ndarray:
        """How 6 coarse band envelopes fluctuate: the share of each envelope's variance in octave-wide
        modulation bands from 1 to 32 Hz (a distribution, so it stays stable when an envelope barely moves)."""
        B, T, M = db.shape
        coarse = db[:, :, : M - M % 6].reshape(B, T, 6, -1).mean(axis=3)  # (B, T, 6)
        coarse = coarse - coarse.mean(axis=1, keepdims=True)
        spec = np.fft.rfft(coarse * self._taper(T)[None, :, None], axis=1)
        power = spec.real**2 + spec.imag**2  # (B, T//2+1, 6)
        bands = np.einsum("bft,fk->bkt", power, self._mod_pool(T))  # (B, 5, 6)
        share = bands / (bands.sum(axis=1, keepdims=True) + 1e-6)
        return share.reshape(B, -1)

    @lru_cache(maxsize=8)  # noqa: B019 - a handful of frame counts per instance
    def _taper(self, T: int) -> np.ndarray:
        return np.hanning(T)

    @lru_cache(maxsize=8)  # noqa: B019
    def _mod_pool(self, T: int) -> np.ndarray:
        """(T//2+1, 5): which modulation-frequency bins fall in each octave band 1-2, 2-4, ..., 16-32 Hz."""
        fr = np.fft.rfftfreq(T, self.spec.hop / self.sample_rate)
        edges = [1, 2, 4, 8, 16, 32]
        return np.stack([(fr >= lo) & (fr < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)],
                        axis=1).astype(np.float64)

    # --- flat vector and distance ------------------------------------------------------------------------
    def __call__(self, audio: np.ndarray) -> np.ndarray:
        return self.analyse(audio)[0]

    def analyse(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The feature vectors (B, D) and the log-mel spectrograms (B, T, M) they were computed from.

        D depends on the clip length (the echo lags are capped by the number of frames); clips compared with
        each other must have the same length."""
        db = self.logmel(audio)
        g = self.groups(audio, db)
        flat = np.concatenate(list(g.values()), axis=1).astype(np.float64)
        if flat.shape[1] not in self._layouts:
            self._layouts[flat.shape[1]] = self._layout(g)
        return flat, db

    def _layout(self, g: dict[str, np.ndarray]) -> tuple[dict[str, slice], np.ndarray]:
        base = MFCC_WEIGHTS if self.spec.kind == "mfcc" else MEL_WEIGHTS
        temporal = {"echo", "flux", "modulation"}
        slices, weights, start = {}, [], 0
        for k, v in g.items():
            d = v.shape[1]
            slices[k] = slice(start, start + d)
            w = base[k] * (self.spec.temporal_weight if k in temporal else 1.0)
            weights.append(np.full(d, w / d / len(g)))
            start += d
        return slices, np.concatenate(weights)

    def _weights(self, dim: int) -> tuple[dict[str, slice], np.ndarray]:
        if dim not in self._layouts:
            raise ValueError(f"no feature layout of size {dim}: compute the features with this object first")
        return self._layouts[dim]

    def distance(self, feats: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Weighted mean absolute difference between each row of ``feats`` and ``ref``."""
        feats = np.atleast_2d(feats)
        ref = np.asarray(ref)
        if feats.shape[1] != ref.shape[-1]:
            raise ValueError(f"features of {feats.shape[1]} and {ref.shape[-1]} values: clips of different lengths")
        return np.abs(feats - ref[None]) @ self._weights(feats.shape[1])[1]

    def breakdown(self, feats: np.ndarray, ref: np.ndarray) -> dict[str, float]:
        """Each group's weighted contribution to the distance of one clip (for diagnostics)."""
        f = np.atleast_2d(feats)[0]
        slices, w = self._weights(len(f))
        d = np.abs(f - np.asarray(ref)) * w
        return {k: float(d[s].sum()) for k, s in slices.items()}
