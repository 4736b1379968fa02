"""proposed_timbre (issue 30): controller axes tied to the AudioCommons features, and `afx-bench match --adjust`."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from bench.commands import COMMANDS
from bench.commands.match import AdjustError, parse_adjust
from bench.config import load_config
from models.proposed.timbre import masked_mse

SR = 24000


def test_parse_adjust_reads_signed_changes_and_refuses_what_it_cannot_meet():
    assert parse_adjust("brightness=+10, depth=-5") == {"brightness": 10.0, "depth": -5.0}
    assert parse_adjust("Warmth=2.5") == {"warmth": 2.5}
    for bad, why in (("loudness=+3", "FEATURE=CHANGE"), ("brightness", "FEATURE=CHANGE"),
                     ("brightness=up", "number"), ("depth=nan", "finite"), (",", "nothing asked")):
        with pytest.raises(AdjustError, match=why):
            parse_adjust(bad)


def test_masked_mse_ignores_unlabelled_entries():
    pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    target = torch.tensor([[0.0, float("nan")], [float("nan"), 6.0]])
    loss = masked_mse(pred, target)
    assert loss.item() == pytest.approx((1.0 + 4.0) / 2)
    loss.backward()
    assert pred.grad[0, 1] == 0 and pred.grad[1, 0] == 0  # no gradient through an unlabelled entry
    nothing = masked_mse(pred, torch.full((2, 2), float("nan")))
    assert nothing.item() == 0.0


def _write_clips(root):
    """A 3-s harmonic input and a brighter reference (a different clip of the same kind)."""
    rng = np.random.default_rng(1)
    t = np.arange(3 * SR) / SR
    x = np.zeros_like(t)
    for k in range(12):
        f = rng.choice([110, 147, 196, 262])
        s, e = int(k * 0.25 * SR), int((k + 1) * 0.25 * SR)
        tt = t[s:e] - t[s]
        x[s:e] = sum(np.sin(2 * np.pi * f * h * tt) / h for h in range(1, 8)) * np.exp(-4 * tt)
    x = (0.15 * x + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
    sf.write(root / "in.wav", x, SR)
    sf.write(root / "ref.wav", np.roll(x, SR // 3), SR)


def _match(root, out, *extra):
    cmd = COMMANDS.get("match")
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    return cmd(p.parse_args(["--preset", "smoke", "--out", str(root / "res"), "--input", str(root / "in.wav"),
                             "--reference", str(root / "ref.wav"), "--out-file", str(root / out), *extra]))


def test_adjust_on_a_system_without_timbre_axes_is_a_one_line_error(tmp_path, capsys):
    _write_clips(tmp_path)
    for extra, why in ((["--system", "bypass", "--effect", "peq4", "--adjust", "brightness=+10"],
                        "bypass has no timbre axes"),
                       (["--system", "bypass", "--effect", "peq4", "--adjust", "loudness=+10"], "FEATURE=CHANGE"),
                       (["--system", "bypass", "--adjust", "brightness=+10"], "name the effect")):
        assert _match(tmp_path, "y.wav", *extra) == 2
        printed = capsys.readouterr()
        assert why in printed.err and len(printed.err.splitlines()) == 1 and "Traceback" not in printed.err
        assert not (tmp_path / "y.wav").exists()


# --- on a real quick-trained checkpoint ----------------------------------------------------------------------
def _write_speech(root, cfg) -> None:
    """Three valid-split speech inputs of peq4 in a row, and three other examples' references (never the test
    split: this is where the adjustment was developed)."""
    from bench.plan import Plan

    plan = Plan.build(cfg)
    [task] = [t for t in plan.test if t.effect.name == "peq4"]
    ex = task.examples(6, progress=False)
    sf.write(root / "in.wav", np.concatenate([e.input for e in ex[:3]]), cfg.run.sample_rate)
    sf.write(root / "ref.wav", np.concatenate([e.reference for e in ex[3:6]]), cfg.run.sample_rate)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """proposed_timbre trained at quick's sizes on peq4 alone (speech): a few minutes of CPU."""
    from bench.runner import run

    root = tmp_path_factory.mktemp("timbre")
    cfg = load_config("quick", effects=["peq4"], systems=["proposed_timbre"], corpora=["speech"], split="valid",
                      sets=["run.report=false", "tasks.n_test=6", "tracking.enabled=false",
                            'metrics.include=["mrstft"]', "studies.latent.systems=[]", "studies.latent.train=[]"])
    run(cfg, root / "res", log=lambda *_: None)
    _write_speech(root, cfg)
    return root


@pytest.mark.slow
def test_adjust_moves_the_asked_feature_more_than_any_other(trained, capsys):
    out = trained / "adjusted.wav"
    cmd = COMMANDS.get("match")
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    assert cmd(p.parse_args(["--preset", "quick", "--out", str(trained / "res"), "--input", str(trained / "in.wav"),
                             "--reference", str(trained / "ref.wav"), "--out-file", str(out), "--system",
                             "proposed_timbre", "--effect", "peq4", "--adjust", "brightness=+8"])) == 0
    printed = capsys.readouterr().out
    info = json.loads(out.with_suffix(".json").read_text())
    units = info["adjust"]["units"]
    # in the axes' unit, the effect's spread of each feature (AudioCommons points are not comparable across
    # features: sharpness's range is wider than brightness's)
    got = {f: v / units[f] for f, v in info["adjust"]["achieved"].items() if v is not None and units.get(f)}
    assert "asked" in printed and "achieved" in printed and "brightness" in printed
    assert max(got, key=lambda f: abs(got[f])) == "brightness" and got["brightness"] > 0, got
    assert info["params01"] != info["adjust"]["params01_unadjusted"]
    y, sr = sf.read(out)
    assert sr == SR and np.all(np.isfinite(y))


@pytest.mark.slow
def test_timbre_axes_on_a_one_control_stand_in_are_walked_and_measured(tmp_path):
    """bitcrush (one control, bit depth) as the stand-in: proposed_timbre trained on it at smoke sizes; the latent
    study walks its eight named axes with the real AudioCommons features. Every axis that moves a feature moves it
    through the one control, and each axis's share of its own feature is stored with its interval.

    What this cannot show is a high selectivity: in units of the effect's own spread of each feature, one control
    moves every feature it touches by about one spread over the control's range, so every walk of a one-control
    effect has shares near 1/k over the k features it touches (measured on harmonic clips: a high shelf, a low
    shelf, a reverb's wet level and a distortion's drive each give shares of 0.13-0.16 on all seven graded
    features). Selectivity needs effects with several controls that move the features apart (docs/latent.md)."""
    import pandas as pd

    from bench.jobs import load_system
    from bench.plan import Plan
    from bench.results import ResultStore
    from bench.runner import run
    from models.proposed.latent import AC_FEATURES, ac_features, explore

    cfg = load_config("smoke", effects=["bitcrush"], systems=["proposed_timbre"], corpora=["speech"],
                      sets=["run.report=false", "tasks.n_test=6", "tracking.enabled=false", 'metrics.include=["mrstft"]',
                            "effects.seen=[\"bitcrush\"]", "effects.unseen=[]",
                            "systems.proposed_timbre.train_examples=32", "systems.proposed_timbre.timbre_examples=32"])
    run(cfg, tmp_path / "res", log=lambda *_: None)
    plan = Plan.build(cfg)
    system = load_system(cfg, "proposed_timbre", plan.device)
    system.load(ResultStore(tmp_path / "res").checkpoint_dir("proposed_timbre", 0))
    [task] = [t for t in plan.test if t.effect.name == "bitcrush"]
    features, source = ac_features(cfg.run.sample_rate, {"workers": 1})
    try:
        res = explore(system, task.effect, task.examples(6, progress=False), features=features,
                      feature_source=source, steps=5, inputs=3)
    finally:
        features.close()
    axes = pd.DataFrame(res.axes)
    assert res.space == "timbre" and list(axes["axis"]) == [f"{f}_axis" for f in AC_FEATURES]
    assert set(axes["own_feature"]) == set(AC_FEATURES)
    moving = axes[axes["moves"]]
    assert len(moving) >= 1 and set(moving["main_param"]) == {"bit_depth"}
    ok = axes["own_share"].notna()
    assert ok.any() and ((axes.loc[ok, "own_share_low"] <= axes.loc[ok, "own_share"] + 1e-9)
                         & (axes.loc[ok, "own_share"] <= axes.loc[ok, "own_share_high"] + 1e-9)).all()
    assert "own_selective" in res.summary
