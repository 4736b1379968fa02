import numpy as np
import pytest
import soundfile as sf

from bench import audio as A


def test_load_mixes_resamples_and_names_bad_files(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1) * 0.5
    sf.write(tmp_path / "ok.wav", stereo, sr)
    x = A.load(tmp_path / "ok.wav", 24000)
    assert x.ndim == 1 and abs(len(x) - 24000) <= 1 and x.dtype == np.float32
    assert np.max(np.abs(x)) == pytest.approx(0.5, abs=0.02)

    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(A.AudioError, match="corrupt.wav: cannot be decoded"):
        A.load(tmp_path / "corrupt.wav", 24000)
    with pytest.raises(A.AudioError, match="missing.wav: no such file"):
        A.load(tmp_path / "missing.wav", 24000)
    sf.write(tmp_path / "silent.wav", np.zeros(sr), sr)
    with pytest.raises(A.AudioError, match="silent.wav: silent"):
        A.load(tmp_path / "silent.wav", 24000)
    sf.write(tmp_path / "empty.wav", np.zeros(0), sr)
    with pytest.raises(A.AudioError, match="empty.wav"):
        A.load(tmp_path / "empty.wav", 24000)
    sf.write(tmp_path / "short.wav", stereo[:100], sr)
    with pytest.raises(A.AudioError, match="short.wav: 100 samples"):
        A.load(tmp_path / "short.wav", 24000, min_seconds=0.5)
    nan = stereo.copy().astype(np.float32)
    nan[10] = np.nan
    sf.write(tmp_path / "nan.wav", nan, sr, subtype="FLOAT")
    with pytest.raises(A.AudioError, match="nan.wav: contains NaN"):
        A.load(tmp_path / "nan.wav", 24000)


def test_loudness_and_peak_normalise():
    sr = 24000
    rng = np.random.default_rng(0)
    x = (0.01 * rng.standard_normal(sr * 2)).astype(np.float32)
    y = A.loudness_normalise(x, sr, -23.0)
    import pyloudnorm

    assert pyloudnorm.Meter(sr).integrated_loudness(y.astype(np.float64)) == pytest.approx(-23.0, abs=0.1)
    assert np.max(np.abs(A.peak_normalise(x, -6.0))) == pytest.approx(10 ** (-6 / 20), rel=1e-5)
    with pytest.raises(A.AudioError, match="silent"):
        A.peak_normalise(np.zeros(10, np.float32))


def test_segment_bounds_and_hash():
    x = np.arange(100, dtype=np.float32)
    assert np.array_equal(A.segment(x, 10, 5), x[10:15])
    with pytest.raises(A.AudioError, match="outside 100 samples"):
        A.segment(x, 98, 5, what="clip")
    assert A.content_hash(x) == A.content_hash(x.copy()) != A.content_hash(x + 1)
