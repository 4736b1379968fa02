"""`afx-bench match` on smoke-trained tiny systems and a 30-second 44.1 kHz stereo file."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import soundfile as sf

from bench.commands import COMMANDS
from bench.config import load_config
from bench.runner import run

SR = 44100


SMOKE = load_config("smoke")


def _trained_systems() -> list[str]:
    """Every trainable system of the smoke preset (so a newly registered one is matched too)."""
    from bench.systems import SYSTEMS

    return [n for n in SMOKE.system_names() if getattr(SYSTEMS.get(SMOKE.system_base(n)), "trainable", False)]


TRAINED = _trained_systems()
# fewer steps than smoke: matching needs a checkpoint of each, not a trained model
# keyed by the system's base (a labelled variant such as proposed_ito@8 takes its base's keys, not a name prefix's)
_PROPOSED = ["vae_steps=2", "warmup_steps=10", "spsa_steps=1"]
SHRINK = {"proposed": _PROPOSED, "proposed_paper": _PROPOSED, "deepafx_st_autodiff": ["steps=2"],
          "deepafx_st_spsa": ["steps=2"], "oneshot_eq": ["steps=2"], "constant": ["n_draws=4"], "mean": ["n_draws=4"]}


def _shrink() -> list[str]:
    return [f"systems.{n}.{kv}" for n in TRAINED for kv in SHRINK.get(SMOKE.system_base(n), [])]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("match")
    cfg = load_config("smoke", effects=["peq4"], systems=TRAINED,
                      sets=["run.report=false", "tasks.n_test=1", "tracking.enabled=false",
                            'metrics.include=["mrstft"]', *_shrink()])
    run(cfg, root / "res", log=lambda *_: None)
    t = np.arange(30 * SR) / SR
    rng = np.random.default_rng(0)
    x = np.zeros_like(t)
    for k in range(75):  # plucked harmonic notes, 0.4 s apart
        f = rng.choice([110, 147, 165, 196, 220, 262])
        s, e = int(k * 0.4 * SR), int((k + 1) * 0.4 * SR)
        tt = t[s:e] - t[s]
        x[s:e] = sum(np.sin(2 * np.pi * f * h * tt) / h for h in range(1, 6)) * np.exp(-3 * tt)
    stereo = (0.2 * np.stack([x, 0.8 * np.roll(x, 300)], axis=1)).astype(np.float32)
    sf.write(root / "in.wav", stereo, SR)
    sf.write(root / "ref.wav", np.tanh(4 * stereo[: 8 * SR]) * 0.3, SR)  # a different length, same rate
    return root


def match(root, *extra):
    cmd = COMMANDS.get("match")
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    return cmd(p.parse_args(["--preset", "smoke", "--out", str(root / "res"), "--input", str(root / "in.wav"),
                             "--reference", str(root / "ref.wav"), *extra]))


@pytest.mark.parametrize("system", TRAINED + ["bypass"])
def test_match_every_trained_system(trained, system, capsys):
    out = trained / f"out-{system}.wav"
    assert match(trained, "--system", system, "--effect", "peq4", "--out-file", str(out)) == 0
    y, sr = sf.read(out, always_2d=True)
    x, _ = sf.read(trained / "in.wav", always_2d=True)
    assert sr == SR and y.shape == x.shape and np.all(np.isfinite(y))
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["chunks"] > 50 and info["channels"] == 2
    printed = capsys.readouterr().out
    if "settings" in info:
        assert set(info["settings"]) == {"low_shelf_gain_db", "low_shelf_freq_hz", "low_shelf_q", "peak1_gain_db",
                                         "peak1_freq_hz", "peak1_q", "peak2_gain_db", "peak2_freq_hz", "peak2_q",
                                         "high_shelf_gain_db", "high_shelf_freq_hz", "high_shelf_q"}
        assert " dB" in printed and " Hz" in printed and "median of the chunk estimates" in printed
    else:  # DeepAFx-ST answers with its own EQ + compressor audio
        assert "no settings" in printed and system in ("bypass", "deepafx_st_autodiff", "deepafx_st_spsa")


def test_match_auto_and_bad_input(trained, capsys):
    out = trained / "auto.wav"
    assert match(trained, "--system", "proposed", "--effect", "auto", "--out-file", str(out)) == 0
    info = json.loads(out.with_suffix(".json").read_text())
    assert info["picked"] in {"peq4", "bypass"} and len(info["picked_per_chunk"]) == info["chunks"]
    (trained / "bad.wav").write_bytes(b"RIFFjunk")
    capsys.readouterr()
    cmd = COMMANDS.get("match")
    p = argparse.ArgumentParser()
    cmd.add_arguments(p)
    code = cmd(p.parse_args(["--system", "bypass", "--preset", "smoke", "--input", str(trained / "bad.wav"),
                             "--reference", str(trained / "ref.wav"), "--out-file", str(trained / "x.wav")]))
    printed = capsys.readouterr()
    assert code == 2 and f"error: input {trained / 'bad.wav'}: cannot be decoded" in printed.err  # on stderr
    assert printed.out == "" and "Traceback" not in printed.err and len(printed.err.splitlines()) == 1
    code = cmd(p.parse_args(["--system", "proposed", "--preset", "smoke", "--out", str(trained / "nowhere"),
                             "--input", str(trained / "in.wav"), "--reference", str(trained / "ref.wav"),
                             "--out-file", str(trained / "x.wav")]))
    assert code == 2 and "no trained checkpoint" in capsys.readouterr().err
    code = cmd(p.parse_args(["--system", "mean", "--preset", "smoke", "--out", str(trained / "res"),
                             "--checkpoint", "runs:/0123456789abcdef/checkpoint", "--input", str(trained / "in.wav"),
                             "--reference", str(trained / "ref.wav"), "--out-file", str(trained / "x.wav")]))
    printed = capsys.readouterr().err
    assert code == 2 and "runs:/0123456789abcdef/checkpoint" in printed and len(printed.splitlines()) == 1


def test_match_with_a_runs_uri_needs_only_the_results_folder(tmp_path):
    """A checkpoint given as ``runs:/<id>/checkpoint`` is found in --out's own MLflow store, from another working
    directory, without MLFLOW_TRACKING_URI, and nothing is written to the working directory."""
    import os
    import shutil
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    res = tmp_path / "res"
    cfg = load_config("smoke", effects=["peq4"], systems=["mean"], corpora=["speech"],
                      sets=["run.report=false", "tasks.n_test=1", 'metrics.include=["mrstft"]', "systems.mean.n_draws=4"])
    run(cfg, res, log=lambda *_: None)
    client = MlflowClient(f"sqlite:///{res / 'mlflow.db'}")
    exp = client.get_experiment_by_name("afx-bench")
    [train] = client.search_runs([exp.experiment_id], "tags.kind = 'train'")
    moved = tmp_path / "moved"  # the folder moved: its artifacts are found where it now is
    shutil.move(res, moved)
    sf.write(tmp_path / "in.wav", (0.1 * np.sin(np.arange(SR) / 7)).astype(np.float32), SR)
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    r = subprocess.run([sys.executable, "-m", "bench", "match", "--system", "mean", "--preset", "smoke",
                        "--checkpoint", f"runs:/{train.info.run_id}/checkpoint", "--out", str(moved),
                        "--input", str(tmp_path / "in.wav"), "--reference", str(tmp_path / "in.wav"),
                        "--effect", "peq4", "--out-file", str(tmp_path / "y.wav")],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"runs:/{train.info.run_id}/checkpoint" in json.loads((tmp_path / "y.json").read_text())["checkpoint"]
    assert list(cwd.iterdir()) == []  # no stray mlflow.db, mlruns or anything else
