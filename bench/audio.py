"""Audio I/O and the few signal utilities the harness shares.

Everything is float32 numpy, mono unless stated. Bad audio (unreadable, empty, silent, non-finite, too short)
raises :class:`AudioError`, which always names the file or the clip it is about.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SILENCE_DBFS = -60.0  # a clip whose RMS is below this is treated as silent


class AudioError(ValueError):
    """Audio that the harness cannot use; the message names the file or clip."""


def rms_db(x: np.ndarray, axis: int | None = -1) -> np.ndarray | float:
    x = np.asarray(x, dtype=np.float64)
    return 10.0 * np.log10(np.mean(x * x, axis=axis) + 1e-20)


def check(x: np.ndarray, what: str, *, min_samples: int = 1, allow_silent: bool = False) -> np.ndarray:
    """Validate a clip: finite, long enough and (unless allowed) not silent. Returns it as float32."""
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        raise AudioError(f"{what}: empty audio")
    if not np.all(np.isfinite(x)):
        raise AudioError(f"{what}: contains NaN or Inf samples")
    if x.shape[-1] < min_samples:
        raise AudioError(f"{what}: {x.shape[-1]} samples, need at least {min_samples}")
    if not allow_silent and rms_db(x, axis=None) < SILENCE_DBFS:
        raise AudioError(f"{what}: silent (RMS below {SILENCE_DBFS:.0f} dBFS)")
    return x


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """High-quality resampling (soxr) along the last axis."""
    if sr_in == sr_out:
        return np.asarray(x, dtype=np.float32)
    import soxr

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        return soxr.resample(x, sr_in, sr_out).astype(np.float32)
    return np.stack([soxr.resample(c, sr_in, sr_out) for c in x]).astype(np.float32)


def load(path: str | Path, sample_rate: int, *, min_seconds: float = 0.0) -> np.ndarray:
    """Read any file soundfile reads, mix to mono, resample to ``sample_rate`` and validate it."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError... for bad files
        raise AudioError(f"{path}: cannot be decoded ({e})") from e
    mono = data.mean(axis=1)
    check(mono, str(path), min_samples=max(1, int(min_seconds * sr)))
    return resample(mono, sr, sample_rate)


def save(path: str | Path, x: np.ndarray, sample_rate: int) -> Path:
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.asarray(x, dtype=np.float32)
    sf.write(str(path), x.T if x.ndim == 2 else x, sample_rate, subtype="FLOAT")
    return path


def peak_normalise(x: np.ndarray, peak_db: float = -1.0) -> np.ndarray:
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        raise AudioError("cannot peak-normalise a silent clip")
    return (x * (10 ** (peak_db / 20) / peak)).astype(np.float32)


def loudness_normalise(x: np.ndarray, sample_rate: int, lufs: float = -23.0, what: str = "clip") -> np.ndarray:
    """Integrated loudness (ITU-R BS.1770, pyloudnorm) normalised to ``lufs``; peaks kept below 0 dBFS."""
    import pyloudnorm

    x = check(x, what)
    meter = pyloudnorm.Meter(sample_rate, block_size=min(0.4, len(x) / sample_rate))
    loud = meter.integrated_loudness(x.astype(np.float64))
    if not np.isfinite(loud):
        raise AudioError(f"{what}: loudness undefined (too quiet or too short)")
    y = x * 10 ** ((lufs - loud) / 20)
    peak = float(np.max(np.abs(y)))
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y.astype(np.float32)


def segment(x: np.ndarray, start: int, length: int, what: str = "clip") -> np.ndarray:
    if start < 0 or start + length > x.shape[-1]:
        raise AudioError(f"{what}: segment [{start}, {start + length}) outside {x.shape[-1]} samples")
    return np.ascontiguousarray(x[..., start : start + length], dtype=np.float32)


def content_hash(x: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()[:16]
