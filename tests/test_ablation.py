"""The ablations of the proposed model (issue 18): the labelled variants of bench/presets/ablation.toml (every one
trains, saves and loads at tiny sizes), the config that `tox -e ablation` runs, and the report's ablation section
(generated from stored scores: tables with intervals and Holm-adjusted paired tests, one sentence per departure,
no section without variants)."""

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config import load_config
from bench.corpora import get_corpus
from bench.effects import get_effect
from bench.systems import FitContext, get_system
from bench.tasks import Task

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "bench" / "presets" / "ablation.toml"
SR = 24000
SEG = 6000
TINY = dict(train_examples=12, valid_examples=3, latent=8, width=2, pool_freq=8, pool_time=2, n_fft=512, win=512,
            hop=256, vae_steps=3, vae_batch=8, hidden=[16, 16], spsa_steps=3, batch=4, stft_sizes=[64, 256],
            match_batch_size=5, hedge_candidates=4)
STEPS = {"warmup_steps": 10, "spsa_steps": 3, "validate_every": 2, "valid_examples": 3}  # caps on a variant's keys


def variants() -> dict[str, dict]:
    systems = tomllib.loads(ABLATION.read_text())["systems"]
    return {k: v for k, v in systems.items() if isinstance(v, dict) and "base" in v}


def tiny(section: dict) -> tuple[str, dict]:
    """The variant's base and its own keys over TINY, its step counts capped (seconds, not minutes)."""
    keys = {k: v for k, v in section.items() if k != "base"}
    conf = {**TINY, **(dict(warmup_steps=10) if section["base"] == "proposed" else {}), **keys}
    for k, cap in STEPS.items():
        if conf.get(k, 0) > cap:
            conf[k] = cap
    return section["base"], conf


def _tasks(effects, split):
    corpus = get_corpus("tones", sample_rate=SR, seed=0, sources={"train": 3, "valid": 1, "test": 2}, seconds=1.5)
    sets = {"gain": "seen"}
    return [Task(corpus, get_effect(e), split, segment_samples=SEG, seed=0, effect_set=sets.get(e, "unseen"))
            for e in effects]


# --- the config ---------------------------------------------------------------------------------------------


def test_the_ablation_config_merges_over_quick_with_every_variant_valid():
    from bench.plan import check

    cfg = load_config("quick", file=ABLATION)
    labels = variants()
    assert set(labels) <= set(cfg.system_names())
    assert {"proposed", "proposed_paper", "bypass"} <= set(cfg.system_names())
    for label, sec in labels.items():
        assert ":" not in label and cfg.system_base(label) == sec["base"]
        own = cfg.system_config(label)
        assert all(own[k] == v for k, v in sec.items() if k != "base")  # its keys over the base's quick section
        assert own["vae_steps"] == cfg.systems[sec["base"]]["vae_steps"]
    check(cfg)  # every key is one of its base's Config
    assert not cfg.effects.wild
    # both directions of every departure are there
    assert {"proposed-no_desc", "proposed-no_param", "proposed-no_hedge", "proposed-no_spsa", "paper-with_desc",
            "paper-with_param", "paper-with_hedge", "paper-with_select"} <= set(labels)
    tox = (ROOT / "tox.ini").read_text()
    assert "[testenv:ablation]" in tox and "--config bench/presets/ablation.toml --out results/ablation" in tox


# --- every variant trains, saves and loads ------------------------------------------------------------------


@pytest.mark.parametrize("label", ["proposed_paper", *variants()])
def test_every_variant_trains_and_round_trips_through_a_checkpoint(label, tmp_path):
    base, conf = ("proposed_paper", dict(TINY)) if label == "proposed_paper" else tiny(variants()[label])
    system = get_system(base, conf, sample_rate=SR, device="cpu")
    system.name = label  # as bench.cell.build_system names a labelled variant
    ctx = FitContext(valid_tasks=_tasks(["gain", "delay"], "valid"), workers=2, progress=False, seed=0)
    system.fit(_tasks(["gain", "delay"], "train"), ctx)
    system.save(tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "meta.json").read_text())["system"] == label
    other = get_system(base, conf, sample_rate=SR, device="cpu")
    other.name = label
    other.load(tmp_path / "ckpt")
    task = _tasks(["delay"], "test")[0]
    ex = task.examples(4)
    a = system.match_examples([e.query() for e in ex], task.effect)
    b = other.match_examples([e.query() for e in ex], task.effect)
    for ea, eb in zip(a, b, strict=True):
        assert np.array_equal(ea.params01, eb.params01) and np.array_equal(ea.output, eb.output)
    for k, v in system.heads.state_dict().items():
        assert np.array_equal(v.cpu().numpy(), other.heads.state_dict()[k].cpu().numpy()), k


# --- the report's section -----------------------------------------------------------------------------------

SHIFT = {"proposed_paper": 0.5, "proposed-no_desc": 0.4, "paper-with_hedge": 0.5}  # added to proposed's mrstft


@pytest.fixture(scope="module")
def ablation_results(tmp_path_factory):
    """The synthetic results of reports.synthetic, plus proposed_paper and two variants: proposed-no_desc (worse
    than proposed by 0.4 on every example: the descriptors matter) and paper-with_hedge (exactly
    proposed_paper: no difference to detect)."""
    from reports.synthetic import make_results

    out = make_results(tmp_path_factory.mktemp("abl") / "results", n=10, n_audio=1, latent=False, seeds=(0,),
                       budgets=False)
    scores = pd.read_parquet(out / "scores.parquet")
    prop = scores[(scores["system"] == "proposed") & (scores["effect_set"] != "wild")]
    rng = np.random.default_rng(0)
    extra = []
    for name, shift in SHIFT.items():
        rows = prop.copy()
        rows["system"] = name
        mr = rows["metric"] == "mrstft"
        noise = 0.0 if name == "paper-with_hedge" else rng.normal(0, 0.02, int(mr.sum()))
        rows.loc[mr, "value"] = rows.loc[mr, "value"] + shift + noise
        extra.append(rows)
    paper = extra[0]
    extra[2] = paper.assign(system="paper-with_hedge")  # the very same scores as proposed_paper
    pd.concat([scores, *extra], ignore_index=True).to_parquet(out / "scores.parquet", index=False)
    config = json.loads((out / "config.json").read_text())
    config["systems"]["include"] += list(SHIFT)
    config["systems"]["proposed-no_desc"] = {"base": "proposed", "features": "latent"}
    config["systems"]["paper-with_hedge"] = {"base": "proposed_paper", "hedge": True, "valid_examples": 32}
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_the_ablation_section_compares_each_variant_with_both_references(ablation_results):
    from reports import ablation as A
    from reports.results import load_results

    r = load_results(ablation_results)
    sec = A.build(r, n_resamples=200)
    assert [d.label for d in sec.departures] == ["proposed-no_desc", "paper-with_hedge"]
    assert [d.name for d in sec.departures] == ["the descriptors", "the hedge"]  # valid_examples only supports it
    t = sec.table
    mr = t[t["metric"] == "mrstft"]
    cells = set(map(tuple, mr[["effect_set", "corpus_set"]].drop_duplicates().to_numpy()))
    assert cells == {("seen", "seen"), ("seen", "unseen"), ("unseen", "seen"), ("unseen", "unseen")}  # no wild
    pairs = set(map(tuple, mr[["variant", "reference"]].drop_duplicates().to_numpy()))
    assert pairs == {("proposed-no_desc", "proposed"), ("proposed-no_desc", "proposed_paper"),
                     ("paper-with_hedge", "proposed"), ("paper-with_hedge", "proposed_paper"), ("proposed", "proposed_paper")}
    row = mr[(mr["variant"] == "proposed-no_desc") & (mr["reference"] == "proposed")].iloc[0]
    assert row["diff"] == pytest.approx(0.4, abs=0.03) and row["diff_low"] <= row["diff"] <= row["diff_high"]
    assert row["variant_low"] <= row["variant_mean"] <= row["variant_high"]
    assert row["n_sources"] == 9  # examples 0 and 1 share a source: 10 examples, 9 sources
    # Holm within a family (one variant vs one reference over the cells): the adjusted p is the step-down of the 4
    fam = mr[(mr["variant"] == "proposed-no_desc") & (mr["reference"] == "proposed")]
    from bench.stats import holm
    assert np.allclose(fam["p_holm"].to_numpy(), holm(fam["p"].to_numpy()))
    same = mr[(mr["variant"] == "paper-with_hedge") & (mr["reference"] == "proposed_paper")]
    assert (same["diff"] == 0).all() and (same["p"] == 1).all() and (same["verdict"] == "no difference detected").all()
    assert np.isfinite(same["mde"]).all()  # what 9 sources could detect: 0 here, the two are identical
    text = "\n".join(sec.sentences)
    assert len(sec.sentences) == 3  # one per departure, and proposed vs proposed_paper
    first = sec.sentences[0]
    assert first.startswith("The descriptors (proposed against proposed-no_desc, mrstft, lower is better")
    # 9 sources, every one better: p = 2/2^9 per cell, x4 at most after Holm over the 4 cells
    assert ": a significant gain on seen effects, seen audio: -0.4" in first and "p(Holm) = 0.016" in first
    assert row["verdict"] == "worse"  # proposed-no_desc against proposed
    hedge = sec.sentences[1]
    assert hedge.startswith("The hedge (paper-with_hedge against proposed_paper") and "no difference detected" in hedge
    assert "smallest detectable" in hedge and "nothing" not in hedge and "bought" not in hedge
    assert "Every departure together (proposed against proposed_paper" in text


def test_a_powerless_comparison_is_read_from_its_interval():
    """With too few sources for any test to pass Holm, a difference whose interval excludes 0 is reported as
    such, never as "nothing", and no difference comes with the smallest detectable one."""
    from reports import ablation as A

    rows = [{"metric": "mrstft", "effect_set": "seen", "corpus_set": c, "variant": "proposed-no_hedge",
             "base": "proposed", "reference": "proposed", "n_sources": 3, "n_examples": 9, "variant_mean": 1.2,
             "variant_low": 1.1, "variant_high": 1.3, "reference_mean": 1.0, "reference_low": 0.9,
             "reference_high": 1.1, "diff": d, "diff_low": lo, "diff_high": hi, "statistic": 0.0, "p": 0.25,
             "p_holm": 0.5, "rank_biserial": -1.0, "sd": 0.1, "mde": 0.3, "verdict": "no difference detected"}
            for c, d, lo, hi in (("seen", 0.2, 0.1, 0.3), ("unseen", 0.05, -0.1, 0.2))]
    sec = A.Section([A.Departure("the hedge", "proposed-no_hedge", "proposed", {"hedge": False})], ["mrstft"],
                    [("seen", "seen"), ("seen", "unseen")], pd.DataFrame(rows, columns=A.COLUMNS), [])
    text = A.sentences(sec)[0]
    assert ": a gain whose interval excludes 0 but whose paired test is not significant after Holm on seen " \
           "effects, seen audio: -0.2 [-0.3, -0.1], p(Holm) = 0.500" in text
    assert "no difference detected (the interval includes 0" in text
    assert "seen effects, unseen audio: -0.05 [-0.2, 0.1], p(Holm) = 0.500, smallest detectable 0.3" in text
    assert "can reach" in " ".join(A.notes(sec))  # 3 sources: the note says no test can pass


def test_the_report_has_the_ablation_section_only_with_variants(ablation_results, tmp_path):
    from reports.build import build_report
    from reports.synthetic import make_results

    page = build_report(ablation_results, n_resamples=100, max_mel=0).read_text()
    assert '<section id="ablation">' in page and 'href="#ablation"' in page
    assert "What each departure changed" in page and "paper-with_hedge" in page
    md = (ablation_results / "report" / "ablation.md").read_text()
    assert md.startswith("# Ablations") and "| proposed-no_desc | proposed | the descriptors |" in md
    csv = pd.read_csv(ablation_results / "report" / "tables" / "ablation.csv")
    assert {"diff_low", "diff_high", "p_holm", "mde", "verdict"} <= set(csv.columns)

    plain = make_results(tmp_path / "plain", n=3, n_audio=1, latent=False, seeds=(0,), budgets=False)
    page = build_report(plain, n_resamples=50, max_mel=0).read_text()
    assert '<section id="ablation">' not in page and not (plain / "report" / "ablation.md").exists()
