"""The latent-space study of a run (``[latent]`` in the config; ``afx-bench run`` does it after the grid and
``afx-bench latent`` does one cell of it by hand). What is measured is the model's own API,
:mod:`models.proposed.latent`; this module decides what is studied, on which examples, and stores it.

* ``latent.systems`` are studied where they are in the run, from the grid's checkpoints (first training seed).
* ``latent.train`` are variants trained for the study alone (``proposed_knobs``, the controller with a small
  bottleneck), on the study's effects only, so that they cost the run a fraction of a full training; their
  budget is stored with their study.
* The examples are the run's own (its split: ``test`` for the numbers of record) of each study effect on one
  corpus (``latent.corpus``, default the first seen corpus). The effect's own spread, the unit of every
  feature change, comes from the same inputs processed with the true settings of those examples.

Files go to ``<out>/latent/`` (schema: docs/latent.md); a cell whose summary exists under the same key is
skipped, so an interrupted study resumes; a cell that fails is written to ``latent/failures.csv`` and the others go
on. The study never sinks the run that calls it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np

from bench.cache import atomic_write_bytes, stable_hash
from bench.config import Config


def study_dir(out: Path) -> Path:
    return Path(out) / "latent"


class _Budget:
    """Stands in for the result store while a study variant trains: keeps its budget for the study's files."""

    def __init__(self):
        self.rows: dict[str, dict] = {}

    def write_budget(self, name: str, seed: int, row: dict) -> None:
        self.rows[name] = row


def study_config(cfg: Config) -> Config:
    """The config a study-only variant trains under: the run's, with only the study's effects (each keeping
    its seen/unseen place) and no wild set."""
    c = copy.deepcopy(cfg)
    keep = set(cfg.latent.effects)
    c.effects.seen = [e for e in cfg.effects.seen if e in keep]
    c.effects.unseen = [e for e in cfg.effects.unseen if e in keep]
    c.effects.wild = []
    return c


def run_study(cfg: Config, out: Path, *, device: str, log=print, standalone: bool = False) -> list[str]:
    """Study every (system, effect) of ``cfg.latent``; returns the warnings. Never raises but KeyboardInterrupt:
    a failure is logged, stored and skipped. In a run, nothing is studied (and no variant trained) unless one of
    ``latent.systems`` is in it; ``standalone`` (``afx-bench latent``) lifts that."""
    from tqdm.auto import tqdm

    from bench.cell import is_trained, prepare_system, system_key
    from bench.plan import Plan
    from bench.systems import SYSTEMS
    from models.proposed.latent import ac_features

    L = cfg.latent
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log(f"latent study: {msg}")

    def latent_api(name: str) -> bool:
        return hasattr(SYSTEMS.get(cfg.system_base(name)), "predict_from_codes")

    grid = cfg.system_names()
    studied = [s for s in L.systems if s in grid]
    trained = [s for s in L.train if s not in grid]
    names = [n for n, es in cfg.effect_sets() if es != "wild"]
    wanted = L.effects
    eff = [e for e in wanted if e in names]
    if not (any(map(latent_api, studied)) or (standalone and trained)) or not eff:
        if L.systems or L.effects:
            log("latent study: skipped (no studied system or effect of `latent` is in this run)")
        return warnings
    d = study_dir(out)
    (d / "failures.csv").unlink(missing_ok=True)  # this study's failures only
    for e in wanted:
        if e not in names:
            warn(f"{e} is not among this run's effects: not studied")
    for name in [s for s in studied + trained if not latent_api(s)]:
        warn(f"{name} has no latent codes (only the proposed model and its variants do): not studied")
        _failure(d, name, "", TypeError(f"{name} has no latent codes"))
    studied = [s for s in studied if latent_api(s)]
    trained = [s for s in trained if latent_api(s)]
    plan = Plan.build(cfg, device)
    corpus = L.corpus or (cfg.data.seen_corpora or cfg.data.unseen_corpora)[0]
    tasks = {t.effect.name: t for t in plan.test if t.corpus.label == corpus and t.effect.name in eff}
    if not tasks:
        warn(f"no {plan.split} task of corpus {corpus!r} for {eff}: nothing studied")
        return warnings
    seed = cfg.training_seeds()[0]
    loaded: dict[str, tuple] = {}  # name -> (system, key, extra summary columns)
    for name in studied:
        base = SYSTEMS.get(cfg.system_base(name))
        trains = getattr(base, "trainable", False) and not cfg.system_config(name).get("checkpoint")
        if trains and not is_trained(cfg, name, out, seed):  # never train a grid system here
            warn(f"{name}: not trained in this run (its training failed or did not run): not studied")
            continue
        try:
            loaded[name] = (prepare_system(name, plan, out, seed=seed, log=log), system_key(cfg, name, seed),
                            {"trained_for": "grid"})
        except KeyboardInterrupt:
            raise
        except Exception as e:
            warn(f"{name}: could not be prepared ({type(e).__name__}: {e})")
            _failure(d, name, "", e)
    if trained:
        scfg = study_config(cfg)
        splan = Plan.build(scfg, device)
        for name in trained:
            budget = _Budget()
            try:
                system = prepare_system(name, splan, out, seed=seed, log=log, store=budget)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                warn(f"{name}: could not be trained for the study ({type(e).__name__}: {e})")
                _failure(d, name, "", e)
                continue
            key = system_key(scfg, name, seed)
            extra = {"trained_for": "study: " + ", ".join(n for n, _ in scfg.effect_sets())}
            extra.update(_budget_columns(budget.rows.get(name) or _stored_budget(d, name, key)))
            _store_budget(d, name, key, budget.rows.get(name))
            loaded[name] = (system, key, extra)
    ac_cfg = cfg.metric_config("ac") if "ac" in cfg.metric_names() else {}
    features, source = ac_features(cfg.run.sample_rate, {k: v for k, v in ac_cfg.items() if k != "max_examples"})
    n = min(plan.n_examples, max(L.references, L.inputs))
    probe = {k: v for k, v in dataclasses.asdict(L).items() if k not in ("systems", "train", "effects")}
    cells = [(name, e) for name in loaded for e in eff if e in tasks]
    bar = tqdm(cells, desc="latent study", disable=not cfg.run.progress)
    try:
        for name, e in bar:
            bar.set_postfix_str(f"{name} / {e}")
            system, skey, extra = loaded[name]
            task = tasks[e]
            key = stable_hash([skey, task.id, n, probe, source])  # what the cell's numbers depend on
            try:
                if cell_done(d, name, e, key):
                    continue
                examples = task.examples(plan.n_examples, progress=False)[:n]
                study_cell(system, task.effect, examples, d, cfg, features=features, source=source,
                           extra={**extra, "task": task.id, "split": plan.split}, key=key)
            except KeyboardInterrupt:
                raise
            except Exception as err:
                warn(f"{name} on {e}: {type(err).__name__}: {err}")
                _failure(d, name, e, err)
    finally:
        bar.close()
        getattr(features, "close", lambda: None)()  # the feature extractor's worker processes
    return warnings


def study_cell(system, effect, examples: list, d: Path, cfg: Config, *, features, source: str,
               extra: dict | None = None, key: str = "", space: str = "auto") -> dict[str, Path]:
    """One (system, effect): walk, measure, write; then its key (the cell is done)."""
    from models.proposed.latent import explore, file_slug, write

    L = cfg.latent
    res = explore(system, effect, examples, features=features, feature_source=source, steps=L.steps, axes=L.axes,
                  span=L.span, inputs=L.inputs, references=L.references, hedged=L.hedged, space=space,
                  seed=cfg.run.seed)
    paths = write(res, d, cfg.run.sample_rate, extra=extra)
    if key:
        atomic_write_bytes(d / f".{file_slug(effect.name, res.system)}.key", key.encode())
    return paths


def cell_done(d: Path, system: str, effect: str, key: str) -> bool:
    from models.proposed.latent import file_slug

    slug = file_slug(effect, system)
    marker = d / f".{slug}.key"
    return (d / f"{slug}_summary.csv").exists() and marker.exists() and marker.read_text() == key


BUDGET_KEYS = ("train_seconds", "train_examples", "steps", "train_renders")


def _budget_columns(row: dict | None) -> dict:
    row = row or {}
    return {("train_steps" if k == "steps" else k): float(row.get(k, np.nan)) for k in BUDGET_KEYS}


def _store_budget(d: Path, name: str, key: str, row: dict | None) -> None:
    """A freshly trained study variant's budget, kept beside its checkpoint's key (a rerun loads the checkpoint
    and still reports what training it cost)."""
    if row is None:
        return
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(d / f".{name}.budget.json", json.dumps({"key": key, "budget": row}, default=float).encode())


def _stored_budget(d: Path, name: str, key: str) -> dict | None:
    p = d / f".{name}.budget.json"
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return rec["budget"] if rec.get("key") == key else None


def _failure(d: Path, system: str, effect: str, err: BaseException) -> None:
    import pandas as pd

    d.mkdir(parents=True, exist_ok=True)
    p = d / "failures.csv"
    old = pd.read_csv(p) if p.exists() else pd.DataFrame(columns=["system", "effect", "error"])
    row = pd.DataFrame([{"system": system, "effect": effect, "error": f"{type(err).__name__}: {err}"}])
    atomic_write_bytes(p, pd.concat([old, row], ignore_index=True).to_csv(index=False).encode())
