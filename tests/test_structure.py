"""The house rules of the renovation: targets never reach a system, arrows point one way, one schema, one plan.

Static checks read the source (imports, sizes); the behavioural ones run real systems through the harness.
"""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config import load_config
from bench.runner import run
from bench.systems import Estimate, System, register_system

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_models_and_baselines_never_import_the_harness_face():
    forbidden = ("bench.cli", "bench.commands", "bench.runner", "bench.sweep", "bench.cell", "bench.jobs",
                 "bench.executors")
    bad = {}
    for path in [*(ROOT / "models").rglob("*.py"), *(ROOT / "baselines").rglob("*.py")]:
        hits = sorted(n for n in _imports(path) if n.startswith(forbidden))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    assert not bad, f"models/baselines reach up into the harness: {bad}"


def test_reports_read_stored_results_only():
    # the schema (and what it is built on), the metric registry's metadata (which direction is better), and the
    # config's schema (to read a run's config.json: the primary family its [analysis] section declared)
    allowed = ("bench.results", "bench.stats", "bench.cache", "bench.metrics", "bench.config")
    bad = {}
    for path in (ROOT / "reports").rglob("*.py"):
        if path.name == "synthetic.py":  # writes a synthetic results directory (with an MLflow store) for tests
            continue
        hits = sorted(n for n in _imports(path) if n.startswith("bench") and not n.startswith(allowed))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    assert not bad, bad


def test_no_module_imports_another_modules_private_helpers():
    """A private name (``_x``) is imported by no other module; a private module (``pkg/_x.py``) only from inside
    its own package."""
    bad = []
    for path in [*(ROOT / "bench").rglob("*.py"), *(ROOT / "models").rglob("*.py"),
                 *(ROOT / "baselines").rglob("*.py"), *(ROOT / "reports").rglob("*.py")]:
        package = ".".join(path.relative_to(ROOT).parent.parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module
                    and node.module.split(".")[0] in ("bench", "models", "baselines", "reports")):
                continue
            parts = node.module.split(".")
            private_mod = [i for i, p in enumerate(parts) if p.startswith("_") and not p.startswith("__")]
            if private_mod and ".".join(parts[:private_mod[0]]) != package:
                bad.append(f"{path.relative_to(ROOT)}: {node.module}")
            own_module = node.module == package  # `from pkg import _mod`: a private module of its own package
            bad += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                    and not (own_module and (ROOT.joinpath(*parts) / f"{a.name}.py").is_file())]
    assert not bad, bad


def test_the_core_imports_nothing_from_models_or_baselines():
    """The harness finds systems and studies through registries (module names as strings, imported lazily): no
    module of bench/ imports models/ or baselines/."""
    bad = {str(p.relative_to(ROOT)): hits for p in (ROOT / "bench").rglob("*.py")
           if (hits := sorted(n for n in _imports(p) if n.split(".")[0] in ("models", "baselines")))}
    assert not bad, bad


def test_config_only_parses():
    """bench/config.py imports no registry (systems, metrics, effects, corpora, studies), no executor and no plan:
    names are checked by the plan (bench.plan.check)."""
    hits = sorted(n for n in _imports(ROOT / "bench" / "config.py") if n.startswith("bench"))
    assert hits == ["bench.cache", "bench.cache.stable_hash"], hits


def test_executors_know_neither_the_runner_nor_anyones_private_parts():
    """The executors import neither the runner nor private names, build no stand-ins (SimpleNamespace) and call no
    private method or attribute of anything but themselves."""
    bad = []
    for path in (ROOT / "bench" / "executors").rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        names = _imports(path)
        bad += [f"{rel}: imports {n}" for n in names if n.startswith("bench.runner") or n == "types.SimpleNamespace"]
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                bad.append(f"{rel}:{node.lineno}: .{node.attr}")
    assert not bad, bad


def test_the_results_folder_layout_is_defined_once():
    """Only bench/results.py builds paths inside a results folder's checkpoints (no second builder of
    ``checkpoints/<system>/seed-<s>``), and the runner alone writes them."""
    builders = [str(p.relative_to(ROOT)) for p in [*(ROOT / "bench").rglob("*.py"), *(ROOT / "models").rglob("*.py")]
                if 'f"seed-{' in p.read_text() or "TRAINED\"" in p.read_text()]
    assert builders == ["bench/results.py"], builders


def test_jobs_write_nothing_but_caches(tmp_path, monkeypatch):
    """A training job and a cell job return what they made; the working directory and the results folder stay
    untouched (only the cache, AFX_BENCH_CACHE, gains examples and unpacked checkpoints)."""
    from bench import jobs

    cfg = _tones('effects.seen=["gain"]', "effects.unseen=[]", "effects.wild=[]", 'systems.include=["mean"]',
                 "systems.mean.n_draws=4")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    trained = jobs.train(jobs.TrainJob(cfg, "mean", 0))
    assert isinstance(trained, jobs.Trained) and trained.checkpoint and trained.budget["train_seconds"] >= 0
    done = jobs.cell(jobs.CellJob(cfg, "mean", 0, "tones/gain/test", 3, "key", audio=1), trained.checkpoint)
    assert isinstance(done, jobs.CellResult), done
    assert set(done.rows["system"]) == {"mean"} and len(done.clips["examples"]) == 1
    assert (done.rows["cell_key"] == "key").all()
    failed = jobs.cell(jobs.CellJob(cfg, "mean", 0, "tones/nope/test", 3, "key"), trained.checkpoint)
    assert isinstance(failed, jobs.Failed) and failed.stage == "evaluate"
    assert list(work.iterdir()) == []
    jobs.release()


def test_no_harness_module_is_a_second_house():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "bench").rglob("*.py")}
    big = {p: n for p, n in sizes.items() if n > 600}  # "about 500": past 600 a module is split
    assert not big, f"modules over ~500 lines: {big}"


def test_the_results_schema_is_defined_once():
    import bench.results as R
    from reports import results as report_results
    from reports import store

    assert report_results.SCORE_COLUMNS is R.SCORE_COLUMNS
    assert store.PARAM_COLUMNS is R.PARAM_COLUMNS
    assert store.slug is R.slug
    for path in [*(ROOT / "bench").rglob("*.py"), *(ROOT / "reports").rglob("*.py")]:
        if path.name == "results.py" and path.parent.name == "bench":
            continue
        text = path.read_text()
        assert 'def _slug' not in text and "def slug" not in text, f"{path} defines a slug of its own"


# --- targets never reach a system -------------------------------------------------------------------------


SEEN: list = []


@register_system("peeker")
class Peeker(System):
    """Records what the harness hands it, and answers with the input."""

    name = "peeker"
    controls = "any"

    def match_examples(self, queries, effect):
        SEEN.extend(queries)
        return [Estimate(None, np.asarray(q.input, dtype=np.float32)) for q in queries]


@register_system("chooser")
class Chooser(System):
    """Answers with the input, and offers two labelled candidates: the input and silence-ish (a tenth of it)."""

    name = "chooser"

    def match(self, input, reference, effect):
        return Estimate(None, input.copy(), {"picked": "dry"},
                        candidates={"dry": input.copy(), "quiet": 0.1 * input})


def _tones(*extra, **kw):
    sets = ['data.seen_corpora=["tones"]', "data.unseen_corpora=[]", "run.progress=false", "run.report=false",
            "tasks.n_test=3", 'metrics.include=["param_mae", "mrstft"]', "run.audio_examples=0", *extra]
    return load_config("smoke", sets=sets, **kw)


def test_systems_see_input_and_reference_only(tmp_path):
    SEEN.clear()
    run(_tones(systems=["peeker"], effects=["peq4", "room"]), tmp_path, log=lambda *_: None)
    assert len(SEEN) == 6  # 3 examples x 2 tasks
    names = {f.name for f in dataclasses.fields(SEEN[0])}
    assert {"input", "reference"} <= names
    assert not names & {"target", "true_params01", "meta"}, names  # meta holds a hidden recipe
    for q in SEEN:
        assert not hasattr(q, "target") and not hasattr(q, "true_params01")


def test_the_oracle_is_the_harness_and_undefined_without_true_settings(tmp_path):
    summary = run(_tones(systems=["oracle"], effects=["peq4", "room"]), tmp_path, log=lambda *_: None)
    mean = summary.set_index(["effect", "metric"])["mean"]
    assert mean["peq4", "mrstft"] == 0.0 and mean["peq4", "param_mae"] == 0.0
    assert np.isnan(mean["room", "mrstft"])  # not applicable: recorded as NaN, not as a failure
    assert pd.read_csv(tmp_path / "failures.csv").empty


def test_best_pick_is_chosen_by_the_harness_with_the_target(tmp_path):
    summary = run(_tones(systems=["chooser", "bypass"], effects=["gain"]), tmp_path, log=lambda *_: None)
    mean = summary.set_index(["system", "metric"])["mean"]
    # the target is the gained input: whichever of dry / quiet is nearer it, the pick is never worse than either
    assert mean["chooser:best_pick", "mrstft"] <= mean["chooser", "mrstft"] + 1e-12
    info = pd.read_parquet(tmp_path / "info.parquet")
    picks = info[info["key"] == "best_pick"]
    assert set(picks["system"]) == {"chooser", "chooser:best_pick"}  # recorded on both answers, per example
    assert len(picks) == 2 * 3 and set(picks["value"]) <= {"dry", "quiet"}


# --- hidden processing is a type, met where tasks are made --------------------------------------------------


def test_hidden_effects_draw_and_apply_a_recipe_like_any_setting():
    from bench.effects import HiddenEffect, get_effect

    rng = np.random.default_rng(0)
    x = (0.1 * np.sin(np.arange(12000) / 10)).astype(np.float32)
    room, eq = get_effect("room"), get_effect("peq4")
    assert isinstance(room, HiddenEffect) and not isinstance(eq, HiddenEffect)
    s = room.draw_setting(rng, 24000)
    assert s.params01 is None and s.recipe["kind"] == "room"
    y = room.apply(np.stack([x, x]), 24000, s)
    assert y.shape == (2, x.size) and np.array_equal(y[0], room.render(x, 24000, s.recipe))
    s = eq.draw_setting(rng, 24000)
    assert s.recipe is None and s.params01.shape == (eq.n_params,)
    assert np.array_equal(eq.apply(x, 24000, s), eq.process(x, 24000, s.params01))
    assert room.identity()[-1] == room.version  # cached examples follow the recipe's version


@pytest.mark.parametrize("device", ["cuda:0"])
def test_an_unavailable_device_is_a_config_error(device):
    import torch

    from bench.config import ConfigError
    from bench.plan import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="torch sees no CUDA device"):
        resolve_device(device)


def test_a_labelled_variant_is_its_base_with_its_own_keys(tmp_path):
    from bench.cell import build_system
    from bench.config import ConfigError

    cfg = _tones('systems.include=["bypass", "random_b"]', 'systems.random_b.base="random"',
                 "systems.random.seed=7", "systems.random_b.seed=8", 'effects.seen=["gain"]', "effects.unseen=[]",
                 "effects.wild=[]")
    system = build_system("random_b", cfg, "cpu")
    assert system.name == "random_b" and system.cfg.seed == 8 and type(system).__name__ == "RandomSettings"
    summary = run(cfg, tmp_path, log=lambda *_: None)
    assert {"random_b", "bypass"} <= set(summary["system"])
    from bench.plan import check

    with pytest.raises(ConfigError, match="systems.random_b.base: 'nope'"):
        check(_tones('systems.include=["random_b"]', 'systems.random_b.base="nope"'))
    with pytest.raises(ConfigError, match=r"systems.random_b: unknown key\(s\) \['sed'\]"):
        check(_tones('systems.include=["random_b"]', 'systems.random_b.base="random"', "systems.random_b.sed=1"))
