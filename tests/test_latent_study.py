"""The latent-space study: the bottleneck controller (knobs), the probes' statistics on systems whose answer is
known (a latent that moves nothing, one axis that moves one feature), and the study a run adds (models/proposed/study.py):
its files, a failing cell recorded while the others go on, resume, and the study-only variant's budget."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from bench.config import ConfigError, load_config
from bench.effects import get_effect
from models.proposed.controller import Controller
from models.proposed.latent import MOVES, explore

SR = 24000


# --- knobs ------------------------------------------------------------------------------------------------------
def test_a_bottleneck_controller_gives_every_setting_through_its_knobs():
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    net = Controller(10, 3, (16, 8), knobs=2).eval()
    x = torch.randn(64, 10)
    k = net.knobs_of(x)
    assert k.shape == (64, 2) and float(k.abs().max()) <= 1.0
    assert torch.allclose(net(x), net.from_knobs(k), atol=1e-6)
    # the output bias still sets the untrained controller's answer (init_output), through the knob decoder
    net.init_output(torch.tensor([0.2, 0.5, 0.9]))
    assert torch.allclose(net.from_knobs(torch.zeros(1, 2)), torch.tensor([[0.2, 0.5, 0.9]]), atol=0.05)
    with pytest.raises(ValueError, match="no knobs"):
        Controller(10, 3, (16,)).knobs_of(x)
    torch.set_grad_enabled(True)


@pytest.mark.parametrize("value", [-1, 17, 2.5, True])
def test_knobs_config_is_checked(value):
    from bench.plan import check

    cfg = load_config("smoke", sets=[f"systems.proposed.knobs={json.dumps(value)}"])
    with pytest.raises(ConfigError, match="knobs"):
        check(cfg)


# --- the probes on systems with a known answer ------------------------------------------------------------------
class _Example:
    def __init__(self, i, x, r, p):
        self.index, self.input, self.reference, self.true_params01 = i, x, r, p


class _CodeSystem:
    """A stand-in with the proposed model's latent API: the reference's code is (its RMS, noise); the controller
    sets the gain from the first code dimension (``follow``) or answers one constant setting whatever the code."""

    name = "stand_in"
    sample_rate = SR

    def __init__(self, follow: bool):
        self.follow = follow

    def code(self, audio):
        a = np.asarray(audio, dtype=np.float64)
        rng = np.random.default_rng(len(a))
        rms = np.sqrt((a**2).mean(axis=1))
        return torch.as_tensor(np.stack([np.log(rms), rng.standard_normal(len(a)) * 0.01], axis=1),
                               dtype=torch.float32)

    def predict_from_codes(self, effect, code_in, code_ref, hedged=True):
        if not self.follow:
            return np.full((len(code_ref), 1), 0.5)
        g = (code_ref[:, 0] - code_in[:, 0]).numpy().astype(np.float64) * 20 / np.log(10)  # dB
        return np.clip((g + 12) / 24, 0, 1)[:, None]


def _level(clips):
    """Two features: the level (dB), which gain moves, and the zero-crossing rate, which it does not."""
    out = []
    for c in clips:
        c = np.asarray(c, np.float64)
        out.append({"level_db": float(10 * np.log10((c**2).mean() + 1e-12)),
                    "zcr": float(np.mean(np.abs(np.diff(np.sign(c))) > 0))})
    return out


def _examples(n=8):
    rng = np.random.default_rng(0)
    effect = get_effect("gain")
    t = np.arange(SR // 4) / SR
    exs = []
    for i in range(n):
        x = (0.1 * np.sin(2 * np.pi * (220 + 40 * i) * t)).astype(np.float32)
        p = rng.uniform(0, 1, 1)
        exs.append(_Example(i, x, effect.process(x[None], SR, p[None])[0], p))
    return effect, exs


def test_a_latent_that_moves_nothing_is_said_plainly():
    effect, exs = _examples()
    res = explore(_CodeSystem(follow=False), effect, exs, features=_level, steps=5, axes=2, inputs=3)
    assert res.summary["moves_nothing"] and not any(a["moves"] for a in res.axes)
    assert res.summary["verdict"].startswith("The latent moves nothing")
    assert res.summary["coverage"] == pytest.approx(0.0, abs=1e-6)  # the same answer for every reference
    for a in res.axes:
        assert a["slope/level_db"] == pytest.approx(0.0, abs=1e-9) and a["main_feature"] == ""


def test_an_axis_that_moves_one_feature_is_found_with_its_slope_and_selectivity():
    effect, exs = _examples()
    res = explore(_CodeSystem(follow=True), effect, exs, features=_level, steps=5, axes=2, inputs=3)
    pc = {a["axis"]: a for a in res.axes}
    # the code's first dimension (the reference's level) carries the gain; standardised, the two dimensions
    # share the variance, so each principal axis carries half of the level dimension
    moving = [a for a in res.axes if a["moves"]]
    assert moving and all(a["main_feature"] == "level_db" for a in moving)
    for a in moving:
        assert a["selectivity"] > 0.95 and a["change"] >= MOVES
        assert a["slope_low/level_db"] <= a["slope/level_db"] <= a["slope_high/level_db"]
        assert abs(a["slope/zcr"]) < 1e-6 or not np.isfinite(a["slope/zcr"])  # gain leaves the waveform's shape
    # the answers follow the references: their level varies as the effect's own range does, all of it explained
    assert res.summary["coverage"] > 0.5 and res.summary["output_r2"] > 0.95
    assert sum(a["output_r2"] for a in pc.values()) == pytest.approx(res.summary["output_r2"], abs=1e-6)


# --- the study of a run -----------------------------------------------------------------------------------------
TINY = dict(train_examples=12, valid_examples=3, latent=8, width=2, pool_freq=8, pool_time=2, n_fft=512, win=512,
            hop=256, vae_steps=3, vae_batch=8, hidden=[16, 16], warmup_steps=20, spsa_steps=4, batch=4,
            validate_every=2, stft_sizes=[64, 256], match_batch_size=5)


def _sets() -> list[str]:
    sets = [f"systems.proposed.{k}={json.dumps(v)}" for k, v in TINY.items()]
    sets += ['data.seen_corpora=["tones"]', "data.unseen_corpora=[]", "data.source_seconds=1.5",
             "run.segment_seconds=0.25", "tasks.n_test=4", 'metrics.include=["mrstft"]', "run.report=false",
             "tracking.enabled=false", 'studies.latent.systems=["proposed", "bypass"]',
             'studies.latent.train=["proposed_knobs"]', 'studies.latent.effects=["gain", "delay", "chorus"]',
             "studies.latent.inputs=2", "studies.latent.references=4", "studies.latent.steps=3", "studies.latent.axes=1",
             'systems.proposed_knobs.base="proposed"', 'systems.proposed_knobs.knobs=2']
    return sets + ['effects.seen=["gain"]', 'effects.unseen=["delay"]', "effects.wild=[]"]


def _config(tmp_path):
    return load_config("smoke", sets=_sets(), systems=["bypass", "proposed"])


def test_a_run_studies_its_latent_and_resumes(tmp_path):
    from bench.runner import run

    cfg = _config(tmp_path)
    out = tmp_path / "res"
    run(cfg, out, log=lambda m: None)
    d = out / "latent"
    # proposed (from the grid's checkpoint) and proposed_knobs (trained for the study alone) on both effects
    for system in ("proposed", "proposed_knobs"):
        for effect in ("gain", "delay"):
            s = pd.read_csv(d / f"{effect}__{system}_summary.csv").iloc[0]
            assert s["space"] == ("knobs" if system == "proposed_knobs" else "vae")  # proposed: its VAE latent
            assert s["n_inputs"] == 2 and s["n_references"] == 4 and s["split"] == "test"
            assert (d / f"{effect}__{system}_trajectories.png").stat().st_size > 5000
    knobs = pd.read_csv(d / "gain__proposed_knobs_summary.csv").iloc[0]
    assert knobs["trained_for"] == "study: gain, delay" and knobs["dims"] == 2
    assert knobs["train_seconds"] > 0 and knobs["train_steps"] > 0  # its budget, though it is in no table
    assert len(pd.read_csv(d / "gain__proposed_knobs_axes.csv")) == 2  # every knob is walked
    assert not (out / "checkpoints" / "proposed_knobs" / "seed-0" / "TRAINED").read_text() == ""
    # bypass has no latent: its cells fail, are recorded, and the others go on; chorus is not in the run
    fails = pd.read_csv(d / "failures.csv")
    assert fails["system"].tolist() == ["bypass"] and fails["error"].str.contains("no latent codes").all()
    assert not list(d.glob("chorus__*"))
    # the grid's results are complete
    scores = pd.read_parquet(out / "scores.parquet")
    assert set(scores["system"]) >= {"bypass", "proposed"} and "proposed_knobs" not in set(scores["system"])
    # the variant was trained by the run's driver, as a training of its own in the run's checkpoints
    assert not (out / "budgets" / "proposed_knobs-s0.json").exists()  # a study's variant: no row of the grid's
    # resume: nothing is redone (the files keep their times) and the variant's budget is still reported
    stamp = {p.name: p.stat().st_mtime_ns for p in d.glob("*_summary.csv")}
    from bench.runner import Runner

    again = Runner(cfg, out, log=lambda m: None)
    again.run()
    study = [w for w in again.warnings if w.startswith("latent study: ")]
    assert study and all("bypass" in w or "chorus is not among" in w for w in study), again.warnings
    assert {p.name: p.stat().st_mtime_ns for p in d.glob("*_summary.csv")} == stamp
    knobs = pd.read_csv(d / "gain__proposed_knobs_summary.csv").iloc[0]
    assert knobs["train_seconds"] > 0
    # a changed study setting redoes the cells
    cfg.studies["latent"]["steps"] = 4
    run(cfg, out, log=lambda m: None)
    assert len(pd.read_csv(d / "gain__proposed_probes.csv").query("path == 'pc1'")) == 2 * 4


def test_a_run_without_a_studied_system_trains_no_study_variant(tmp_path):
    from bench.runner import Runner

    cfg = _config(tmp_path)
    cfg.systems["include"] = ["bypass"]
    logs = []
    runner = Runner(cfg, tmp_path / "res", log=logs.append)
    runner.run()
    assert not any(w.startswith("latent study") for w in runner.warnings)
    assert any("skipped" in m for m in logs) and not (tmp_path / "res" / "checkpoints").exists()


@pytest.mark.parametrize("sets, message", [
    (['studies.latent.effects=["nope"]'], r"studies.latent.effects: unknown \['nope'\]"),
    (['studies.latent.train=["nope"]'], r"studies.latent.train: unknown \['nope'\]"),
    (["studies.latent.references=2"], "studies.latent.references: at least 3"),
    (["studies.latent.refs=2"], r"studies.latent: unknown key\(s\) \['refs'\]"),
    (["studies.latnet.axes=2"], "studies.latnet: unknown study; valid: latent"),
])
def test_latent_config_is_checked(sets, message):
    from bench.plan import check

    with pytest.raises(ConfigError, match=message):
        check(load_config("smoke", sets=sets))


def test_the_latent_command_trains_a_study_variant_on_the_study_effect(tmp_path, capsys):
    """`afx-bench study latent --system proposed_knobs` trains the variant as the run's study does (on the study's
    effects only) and prints the verdict and each knob."""
    from bench.cli import main

    out = tmp_path / "res"
    argv = ["study", "latent", "--preset", "smoke", "--system", "proposed_knobs", "--effect", "gain", "--out", str(out),
            "--steps", "3", "--inputs", "2", "--references", "3", "--set", 'effects.seen=["gain"]',
            "--set", 'effects.unseen=["delay"]', "--set", "effects.wild=[]", "--set", 'data.seen_corpora=["tones"]',
            "--set", "data.unseen_corpora=[]", "--set", "data.source_seconds=1.5", "--set", "run.segment_seconds=0.25",
            "--set", "tasks.n_test=3", "--set", 'studies.latent.train=["proposed_knobs"]',
            "--set", 'systems.proposed_knobs.base="proposed"', "--set", "systems.proposed_knobs.knobs=2"]
    argv += [x for k, v in TINY.items() for x in ("--set", f"systems.proposed.{k}={json.dumps(v)}")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "studied proposed_knobs" in printed and "(knobs, 2 dims) on gain" in printed and "knob2:" in printed
    s = pd.read_csv(out / "latent" / "gain__proposed_knobs_summary.csv").iloc[0]
    assert s["trained_for"] == "study: gain" and s["train_steps"] > 0
    assert not (out / "checkpoints" / "proposed").exists()  # only the variant was trained


def test_a_run_trains_the_study_variant_beside_its_grid_and_builds_the_report_beside_its_study(tmp_path, capsys):
    """Issue 28: the study's own training is submitted with the grid's (not after it), and `afx-bench run` builds
    the report in a child process while the study goes on; the report still has the study's section."""
    from bench.cli import main
    from bench.runner import Runner

    cfg = _config(tmp_path)
    runner = Runner(cfg, tmp_path / "direct", log=lambda m: None)
    runner.run()
    assert set(runner.study_budgets) == {("proposed_knobs", 0)}  # trained in the grid's loop, budget kept
    knobs = pd.read_csv(tmp_path / "direct" / "latent" / "gain__proposed_knobs_summary.csv").iloc[0]
    assert knobs["train_seconds"] > 0 and knobs["trained_for"] == "study: gain, delay"

    out = tmp_path / "cli"
    argv = ["run", "--preset", "smoke", "--systems", "bypass,proposed", "--out", str(out)]
    for s in [s for s in _sets() if s not in ("run.report=false", "tracking.enabled=false")]:
        argv += ["--set", s]
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = captured.out
    html = (out / "report" / "report.html").read_text()
    assert f"report: {out / 'report' / 'report.html'}" in printed
    assert "report: read" in printed and "building it again" not in captured.err  # the child's build, passed on
    assert "gain__proposed_knobs_trajectories.png" in html  # the study's section, read after the study ended
    assert not list(out.glob(".studies-done-*")) and not list(out.glob(".report-beside-*"))
