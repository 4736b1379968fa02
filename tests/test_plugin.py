"""Plugins (issue 22): the contract check (`afx-bench check system|effect|metric`), `afx-bench list`, and the
example package in examples/plugin installed into a fresh environment and run beside the built-in systems."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from bench.checks import get_check
from bench.metrics import Metric, register_metric
from bench.systems import Estimate, System, register_system

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "plugin"

# tiny trainings: every code path of each built-in system in seconds
TINY = {
    "proposed": ["vae_steps=2", "warmup_steps=4", "spsa_steps=1", "train_examples=8", "valid_examples=2",
                 "vae_batch=4", "batch=4"],
    "deepafx_st_autodiff": ["steps=2", "train_examples=8"],
    "deepafx_st_spsa": ["steps=2", "train_examples=8"],
    "oneshot_eq": ["steps=2", "train_examples=8"],
    "ito_cmaes": ["renders=8"],
    "proposed_ito": ["renders=8", "valid_examples=2"],
}


def check(kind, *argv):
    """Run `afx-bench check KIND ARGV...` in this process; (exit code, printed lines, failed rules)."""
    c = get_check(kind)
    p = argparse.ArgumentParser()
    c.add_arguments(p)
    lines = []
    rc = c(p.parse_args(list(argv)), out=lines.append)
    failed, tag = [], ""
    for ln in lines[1:-1]:  # between the title and the verdict: rules, and the titles of their sections
        status, _, rest = ln.strip().partition("  ")
        if status not in ("PASS", "FAIL", "n/a"):
            tag = ln.strip().split(":")[0] if ":" in ln else ""
        elif status == "FAIL":
            rule = rest.strip().split("  ")[0]
            failed.append(f"{rule} [{tag}]" if tag else rule)
    return rc, lines, failed


# --- deliberately broken systems ---------------------------------------------------------------------------


class _Broken(System):
    controls = {"peq4"}

    def match(self, input, reference, effect):
        return Estimate(np.full(effect.n_params, 0.5, np.float32) if self.can_control(effect) else None,
                        input.copy())


@register_system("contract_short")
class Short(_Broken):
    name = "contract_short"

    def match(self, input, reference, effect):
        est = super().match(input, reference, effect)
        est.output = est.output[: len(input) // 2]
        return est


@register_system("contract_nan")
class NaNs(_Broken):
    name = "contract_nan"

    def match(self, input, reference, effect):
        est = super().match(input, reference, effect)
        est.output[::100] = np.nan
        return est


@register_system("contract_peek")
class Peek(_Broken):
    """Reads the target, which a Query does not have; and tries the true settings quietly, swallowing the error."""

    name = "contract_peek"

    def match_examples(self, queries, effect):
        truth = [getattr(q, "true_params01", None) for q in queries]  # noqa: F841 - the attempt is the bug
        return [Estimate(None, q.target.copy()) for q in queries]


@register_system("contract_range")
class OutOfRange(_Broken):
    """Parameters outside [0, 1], and parameters for an effect it does not control."""

    name = "contract_range"

    def match(self, input, reference, effect):
        return Estimate(np.linspace(-0.5, 1.5, effect.n_params).astype(np.float32), input.copy())


@register_system("contract_moody")
class Moody(_Broken):
    """Different answers every time: unseeded randomness."""

    name = "contract_moody"

    def match(self, input, reference, effect):
        return Estimate(None, (input * np.random.default_rng().uniform(0.5, 1.0)).astype(np.float32))


FAST = ["--examples", "2", "--effects", "peq4,delay"]


@pytest.mark.parametrize("name, rules, reason", [
    ("contract_short", ["length [peq4]", "harness accepts [peq4]", "length [delay]"], "has shape (6000,), the input (12000,)"),
    ("contract_nan", ["finite [peq4]", "finite [delay]"], "NaN/Inf samples"),
    ("contract_peek", ["no target access [peq4]", "answers [peq4]", "no target access [delay]"],
     "tried to read target, true_params01 of a Query"),
    ("contract_range", ["params [peq4]", "uncontrolled effect [delay]", "params [delay]"], "outside [0, 1]: low_shelf_gain_db=-0.5"),
    ("contract_moody", ["determinism", "determinism (fresh instance)"], "asked twice: the answers differ by"),
])
def test_a_broken_system_fails_the_check_naming_each_broken_rule(name, rules, reason):
    rc, lines, failed = check("system", name, *FAST)
    assert rc == 1
    assert lines[-1].startswith("FAILED:")
    assert set(rules) <= set(failed), failed
    text = "\n".join(lines)
    assert reason in text, text


@pytest.mark.parametrize("name", ["bypass", "random", "mean", "constant", "oneshot_eq", "ito_cmaes",
                                  "deepafx_st_autodiff", "deepafx_st_spsa", "proposed", "proposed_paper",
                                  "proposed_ito"])
def test_every_builtin_system_passes_the_check(name):
    needs = {"proposed_ito": ["proposed"]}.get(name, [])  # trained first, at its tiny size too
    sets = [x for n in [name, *needs] for s in TINY.get(n, []) for x in ("--set", f"systems.{n}.{s}")]
    rc, lines, failed = check("system", name, "--examples", "2", *sets)
    assert rc == 0 and not failed, "\n".join(lines)
    text = "\n".join(lines)
    assert "PASS    hidden settings" in text  # room: audio with params None
    if name not in ("random", "mean", "constant", "ito_cmaes", "proposed", "proposed_paper", "proposed_ito"):  # any
        assert "PASS    uncontrolled effect" in text


def test_the_oracle_is_answered_by_the_harness_not_checked():
    rc, lines, failed = check("system", "oracle")
    assert rc == 0 and not failed
    assert "answered by the harness" in "\n".join(lines)


def test_unknown_names_are_one_line_errors(capsys):
    from bench.cli import main

    assert main(["check", "system", "no_such_system"]) == 2
    err = capsys.readouterr().err
    assert "unknown systems 'no_such_system'" in err and "bypass" in err and "Traceback" not in err
    assert main(["check", "effect", "nope"]) == 2
    assert main(["list", "gizmos"]) == 2
    assert "valid: systems, effects" in capsys.readouterr().err


def test_effect_and_metric_checks_pass_on_builtins():
    for kind, name in (("effect", "peq4"), ("effect", "room"), ("metric", "mrstft"), ("metric", "param_mae")):
        rc, lines, failed = check(kind, name, "--examples", "2")
        assert rc == 0 and not failed, "\n".join(lines)


@register_metric("contract_zero_na")
class ZeroWhenNA(Metric):
    """Scores 0 where the parameters are missing (n/a must be NaN)."""

    name = "contract_zero_na"
    needs = frozenset({"params"})

    def score(self, estimate, example):
        if estimate.params01 is None or example.true_params01 is None:
            return {"contract_zero_na": 0.0}
        return {"contract_zero_na": -float(np.mean(np.abs(estimate.params01 - example.true_params01)))}


@register_metric("contract_upside_down")
class UpsideDown(Metric):
    """A distance to the target that claims higher is better."""

    name = "contract_upside_down"
    higher_is_better = True

    def score(self, estimate, example):
        return {"contract_upside_down": float(np.mean(np.abs(estimate.output - example.target)))}


def test_a_broken_metric_fails_the_check():
    rc, lines, failed = check("metric", "contract_zero_na", "--examples", "2", "--effects", "peq4")
    assert rc == 1 and failed == ["not applicable [peq4]"]
    assert "an estimate without params01 scored a number, not NaN" in "\n".join(lines)
    rc, lines, failed = check("metric", "contract_upside_down", "--examples", "2", "--effects", "peq4,room")
    assert rc == 1 and failed == ["target scores best [peq4]", "target scores best [room]"]


# --- afx-bench list --------------------------------------------------------------------------------------------


def test_list_names_where_everything_comes_from(capsys):
    from bench.cli import main
    from bench.commands.listing import describe, origin

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("systems", "effects", "metrics", "corpora", "commands", "checks"):
        assert f"\n{kind} (" in "\n" + out
    assert any(ln.split()[:3] == ["bypass", "built-in", "bench.systems"] for ln in out.splitlines())
    assert any(ln.split()[:3] == ["proposed", "built-in", "models.proposed.system"] for ln in out.splitlines())
    assert origin("corpora", "tones") == "registered at run time: registered by conftest"  # tests/conftest.py
    assert describe("systems", "contract_short")["source"] == "run time"
    assert main(["list", "systems", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"systems"} and data["systems"]["oracle"] == {"source": "built-in", "where": "bench.systems"}


def test_list_reads_entry_points(monkeypatch):
    """An entry point is reported with its distribution; one that a built-in name shadows is flagged."""
    from importlib.metadata import EntryPoint

    import bench.commands.listing as listing

    class Dist:
        name, version = "afx-bench-mine", "1.2"

    def eps(group):
        if group != "afx_bench.systems":
            return []
        out = []
        for name, value in (("mine", "mine_pkg:Mine"), ("bypass", "mine_pkg:Bypass")):
            ep = EntryPoint(name, value, group)
            object.__setattr__(ep, "dist", Dist())
            out.append(ep)
        return out

    monkeypatch.setattr(listing, "entry_points", lambda group: eps(group))
    assert listing.origin("systems", "mine") == "plugin: afx-bench-mine 1.2 (mine_pkg:Mine)"
    assert listing.describe("systems", "bypass") == {
        "source": "built-in", "where": "bench.systems", "note": "shadows the entry point of afx-bench-mine 1.2"}


# --- the example package, installed into a fresh environment ----------------------------------------------------


def fresh_env(tmp_path) -> Path:
    """A new virtual environment that sees this environment's packages (torch, afx-bench...) but has its own
    site-packages, into which the example plugin is installed as a user would (pip, from a copy of the source)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # a venv made from a venv sees the *base* interpreter's packages, not this environment's: add ours after its own
    parent = sysconfig.get_paths()["purelib"]
    (Path(site) / "_afx_parent_env.pth").write_text(f"import site; site.addsitedir({parent!r})\n")
    src = tmp_path / "plugin-src"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    # this environment's pip and setuptools, no network: --no-deps (afx-bench, numpy, scipy are already there)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", str(src)], check=True, cwd=tmp_path)
    return python


def test_the_example_plugin_installs_passes_the_check_and_joins_a_run(tmp_path):
    python = fresh_env(tmp_path)
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)

    def bench(*argv, timeout=300):
        r = subprocess.run([str(python), "-m", "bench", *argv], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=timeout)
        return r.returncode, r.stdout + r.stderr

    # the harness was not told about it: the entry point is the only link
    rc, out = bench("list", "systems", "--plugins")
    assert rc == 0 and "specmatch_eq  plugin    afx-bench-specmatch 0.1.0 (afx_specmatch:SpectralMatchEQ)" in out, out
    rc, out = bench("check", "system", "specmatch_eq", "--examples", "2")
    assert rc == 0, out
    assert "FAIL" not in out and "PASS    params" in out and "variants ['curve']" in out
    results = tmp_path / "results"
    rc, out = bench("run", "--preset", "smoke", "--systems", "specmatch_eq,bypass,oracle", "--effects", "peq4,delay",
                    "--corpora", "speech", "--out", str(results), "--set", "tasks.n_test=2",
                    "--set", 'metrics.include=["param_mae", "mrstft"]', "--set", "run.audio_examples=1")
    assert rc == 0, out
    import pandas as pd

    scores = pd.read_parquet(results / "scores.parquet")
    assert {"specmatch_eq", "specmatch_eq:curve", "bypass", "oracle"} <= set(scores["system"])
    mine = scores.query("system == 'specmatch_eq'")
    assert np.isfinite(mine.query("metric == 'param_mae' and effect == 'peq4'")["value"]).all()
    assert mine.query("metric == 'param_mae' and effect == 'delay'")["value"].isna().all()  # not controlled: n/a
    html = (results / "report" / "report.html").read_text()
    assert "specmatch_eq" in html and "bypass" in html
