"""The public-corpus recipes on tiny trees in each published layout, and a smoke run on two of them."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bench.config import load_config
from bench.corpora import SPLITS, CorpusError, CorpusWarning, expand_label, get_corpus
from bench.runner import run

SR = 16000


def tone(seconds=1.6, sr=SR, f=220.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * (np.sin(2 * np.pi * 3 * t) > 0)) + 0.05 * rng.standard_normal(len(t))
    return (0.2 * x).astype(np.float32)


def write(path, x, sr=SR, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, sr, **kw)


def corpus(label, tmp_path, **kw):
    kw.setdefault("sources", {"train": 2, "valid": 1, "test": 2})
    return get_corpus(label, sample_rate=SR, seed=0, cache=tmp_path / "cache", min_seconds=1.0, **kw)


def splits(c):
    return {s: [x.source_id for x in c.specs(s)] for s in SPLITS}


def vctk_tree(root, speakers=("p225", "p226", "p227", "p228", "p229", "p230"), n=3):
    for i, spk in enumerate(speakers):
        for k in range(1, n + 1):
            write(root / "wav48_silence_trimmed" / spk / f"{spk}_{k:03d}_mic1.flac", tone(f=150 + 30 * i, seed=k),
                  format="FLAC")
            write(root / "wav48_silence_trimmed" / spk / f"{spk}_{k:03d}_mic2.flac", tone(seed=k), format="FLAC")
        (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
    (root / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION\n")
    return root


def musdb_tree(root):
    for folder, names in {"train": ["Actions - One Minute Smile", "A - One", "B - Two", "C - Three"],
                          "test": ["D - Four", "E - Five"]}.items():
        for i, name in enumerate(names):
            stereo = np.stack([tone(2.0, 44100, 200 + 40 * i), tone(2.0, 44100, 300 + 40 * i)], axis=1)
            write(root / folder / name / "mixture.wav", stereo, 44100)
            write(root / folder / name / "vocals.wav", stereo, 44100)
    return root


def test_vctk(tmp_path):
    root = vctk_tree(tmp_path / "VCTK-Corpus-0.92")
    with pytest.warns(CorpusWarning, match="6 of the 110 published speakers"):
        c = corpus(f"vctk:{root}", tmp_path)
        sp = splits(c)
    assert all(sp[s] for s in SPLITS)
    assert all(p.endswith("_mic1.flac") for s in SPLITS for p in sp[s])
    spk = {s: {x.group for x in c.specs(s)} for s in SPLITS}
    assert not (spk["train"] & spk["test"]) and not (spk["train"] & spk["valid"])  # speaker-disjoint
    assert len(sp["train"]) == 2 and len(sp["test"]) == 2
    x = c.load_source(c.specs("test")[0])
    assert x.ndim == 1 and len(x) == pytest.approx(1.6 * SR, abs=2)
    with pytest.raises(CorpusError, match="neither wav48_silence_trimmed/"):
        corpus(f"vctk:{tmp_path}", tmp_path).specs()


def test_vctk_080_layout_and_bad_file(tmp_path):
    root = tmp_path / "VCTK-Corpus"
    for spk in ("p225", "p226", "p227", "p228"):
        for k in (1, 2, 3):
            write(root / "wav48" / spk / f"{spk}_{k:03d}.wav", tone(seed=k))
    silent = root / "wav48" / "p225" / "p225_004.wav"
    write(silent, np.zeros(SR * 2, np.float32))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = corpus(f"vctk:{root}", tmp_path, sources={"train": 50, "valid": 50, "test": 50})
        c.specs()
    assert "wav48/p225/p225_004.wav" not in {s.source_id for s in c.specs()}
    assert sum("p225_004.wav: silent" in str(m.message) for m in w) == 1
    assert len(c.specs()) == 12


def test_daps(tmp_path):
    root = tmp_path / "daps"
    for spk in ("f1", "m1", "f8", "f9", "m10"):
        for k in (1, 2):
            write(root / "clean" / f"{spk}_script{k}_clean.wav", tone(seed=k))
    with pytest.warns(CorpusWarning, match="90 of the 100 published files missing"):
        c = corpus(f"daps:{root}", tmp_path, sources={"train": 9, "valid": 9, "test": 9})
        sp = splits(c)
    assert {c.specs("test")[i].group for i in range(len(sp["test"]))} == {"f9", "m10"}
    assert {s.group for s in c.specs("valid")} == {"f8"} and {s.group for s in c.specs("train")} == {"f1", "m1"}
    with pytest.raises(CorpusError, match="no clean/ folder"):
        corpus(f"daps:{tmp_path / 'cache'}", tmp_path).specs()


def test_daps_pairs(tmp_path):
    root = tmp_path / "daps"
    for spk in ("f1", "m2", "f8", "f9"):
        x = tone(2.0, 44100, seed=len(spk))
        write(root / "clean" / f"{spk}_script1_clean.wav", x, 44100)
        write(root / "produced" / f"{spk}_script1_produced.wav", np.tanh(3 * x) * 0.5, 44100)
    c = corpus(f"daps_pairs:{root}", tmp_path)
    assert c.paired and splits(c) == {"train": ["f1_script1", "m2_script1"], "valid": ["f8_script1"],
                                      "test": ["f9_script1"]}
    dry, wet = c.load_pair(c.specs("test")[0])
    assert dry.shape == wet.shape


def test_libritts(tmp_path):
    root = tmp_path / "LibriTTS"
    for sub, spks in {"train-clean-100": ("19", "26"), "dev-clean": ("84",), "test-clean": ("121", "237")}.items():
        for spk in spks:
            for u in range(2):
                write(root / sub / spk / "198" / f"{spk}_198_000000_00000{u}.wav", tone(seed=u))
                (root / sub / spk / "198" / f"{spk}_198_000000_00000{u}.normalized.txt").write_text("x")
    write(root / "test-clean" / "121" / "198" / "121_198_000001_000000.wav", tone(0.3))  # too short
    c = corpus(f"libritts:{root}", tmp_path, sources={"train": 9, "valid": 9, "test": 9})
    with pytest.warns(CorpusWarning, match="1 file\\(s\\) shorter than 1 s"):
        sp = splits(c)
    assert all(p.startswith("test-clean/") for p in sp["test"]) and len(sp["test"]) == 4
    assert all(p.startswith("dev-clean/") for p in sp["valid"]) and len(sp["train"]) == 4
    assert any("121_198_000001" in b.path for b in c.left_out)
    only_test = tmp_path / "only-test"
    write(only_test / "test-clean" / "121" / "198" / "121_198_000000_000000.wav", tone())
    c = corpus(f"libritts:{only_test}", tmp_path)
    assert len(c.specs("test")) == 1
    with pytest.raises(CorpusError, match="no train-clean-100/ or train-clean-360/"):
        c.specs("train")


def test_musdb(tmp_path):
    root = musdb_tree(tmp_path / "musdb18hq")
    with pytest.warns(CorpusWarning, match="published"):
        c = corpus(f"musdb:{root}", tmp_path, sources={"train": 9, "valid": 9, "test": 9})
        sp = splits(c)
    assert sp["valid"] == ["train/Actions - One Minute Smile/mixture.wav"]
    assert len(sp["train"]) == 3 and all(p.startswith("test/") for p in sp["test"])
    stem = tmp_path / "musdb18" / "train"
    stem.mkdir(parents=True)
    (stem / "A - B.stem.mp4").write_bytes(b"\0")
    with pytest.raises(CorpusError, match="ffmpeg"):
        corpus(f"musdb:{stem.parent}", tmp_path).specs()


def idmt_tree(root):
    notes = ["40100", "41101", "42102", "43103", "44104", "45200"]
    for inst, code in (("Gitarre monophon", "G61"), ("Bass monophon", "B11")):
        for i, note in enumerate(notes):
            x = tone(1.5, 44100, 110 * (1 + i % 3), seed=i)
            write(root / inst / "Samples" / "NoFX" / f"{code}-{note}-1111-{100 + i}.wav", x, 44100)
            write(root / inst / "Samples" / "Distortion" / f"{code}-{note}-4411-{200 + i}.wav", np.tanh(8 * x) / 3,
                  44100)
            y = np.convolve(x, np.r_[1.0, np.zeros(300), 0.5])[: len(x)] * 0.7
            write(root / inst / "Samples" / "FeedbackDelay" / f"{code}-{note}-2131-{300 + i}.wav", y, 44100)
        (root / inst / "Lists").mkdir(parents=True, exist_ok=True)
    write(root / "Gitarre monophon" / "Samples" / "Chorus" / "G61-99999-3111-999.wav", tone(1.5, 44100), 44100)
    return root


def test_idmt_fx(tmp_path):
    from bench.corpora.recorded import pick_matches, true_class

    root = idmt_tree(tmp_path / "IDMT-SMT-AUDIO-EFFECTS")
    labels = expand_label(f"idmt_fx:{root}")
    assert labels == [f"idmt_fx:{root}@{c}" for c in ("Chorus", "Distortion", "FeedbackDelay")]
    c = corpus(f"idmt_fx:{root}@distortion", tmp_path, sources={"train": 20, "valid": 20, "test": 20})
    specs = c.specs()
    assert len(specs) == 12 and c.paired
    assert all(true_class(s.source_id) == "Distortion" and s.recipe["fx_class"] == "Distortion" for s in specs)
    assert all(s.recipe["dry"].split("/")[2] == "NoFX" for s in specs)
    assert pick_matches(specs[0].source_id, "distortion") and not pick_matches(specs[0].source_id, "delay")
    both = corpus(f"idmt_fx:{root}", tmp_path, sources={"train": 40, "valid": 40, "test": 40})
    with pytest.warns(CorpusWarning, match="1 processed note\\(s\\) without a NoFX partner"):
        assert len(both.specs()) == 24
    groups = {}
    for s in both.specs():  # a note and its processed versions share a split
        assert groups.setdefault(s.group, s.split) == s.split
    dry, wet = both.load_pair(both.specs("test")[0])
    assert dry.shape == wet.shape
    with pytest.raises(CorpusError, match="unknown effect class 'Wah'"):
        corpus(f"idmt_fx:{root}@Wah", tmp_path).specs()


def test_smoke_run_on_vctk_and_musdb(tmp_path):
    vctk = vctk_tree(tmp_path / "VCTK-Corpus-0.92")
    musdb = musdb_tree(tmp_path / "musdb18hq")
    cfg = load_config("smoke", corpora=[f"vctk:{vctk}", f"musdb:{musdb}"], effects=["peq4"], systems=["bypass"],
                      sets=["run.report=false", "tasks.n_test=2", "tracking.enabled=false",
                            'metrics.include=["mrstft"]'])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        summary = run(cfg, tmp_path / "out", log=lambda *_: None)
    fails = pd.read_csv(tmp_path / "out" / "failures.csv")
    assert fails.empty, fails.to_string()
    rows = summary[summary.metric == "mrstft"]
    assert {f"vctk:{vctk}", f"musdb:{musdb}"} <= set(rows.corpus)
    assert rows["mean"].notna().all()
