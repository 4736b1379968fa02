"""The latent-space study of a run (``[studies.latent]``; registered as the study ``latent``): `afx-bench run` does
it after the grid and `afx-bench study latent` does one cell of it by hand. What is measured is the model's own
API, :mod:`models.proposed.latent`; this module decides what is studied, on which examples, and stores it.

* ``systems`` are studied where they are in the run, from the grid's checkpoints (first training seed).
* ``train`` are variants trained for the study alone (``proposed_knobs``, the controller with a small
  bottleneck), on the study's effects only, so that they cost the run a fraction of a full training; the run's
  driver trains them (its training job, its checkpoint folder) and their budget is stored with their study.
* The examples are the run's own (its split: ``test`` for the numbers of record) of each study effect on one
  corpus (``corpus``, default the first seen corpus). The effect's own spread, the unit of every feature change,
  comes from the same inputs processed with the true settings of those examples.

Files go to the study's folder, ``<out>/latent/`` (schema: docs/latent.md); a cell whose summary exists under the
same key is skipped, so an interrupted study resumes; a cell that fails is written to ``latent/failures.csv`` and
the others go on. The study never sinks the run that calls it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.cache import atomic_write_bytes, stable_hash
from bench.config import Config, ConfigError
from bench.studies import NotTrained, Study, StudyContext, register_study

BUDGET_KEYS = ("train_seconds", "train_examples", "steps", "train_renders")


@dataclass
class LatentConfig:
    """``[studies.latent]``: empty ``systems`` or ``effects``: nothing is studied."""

    systems: list = field(default_factory=list)  # studied where they are in the run (from the grid's checkpoints)
    train: list = field(default_factory=list)  # variants trained for the study alone, on its effects (proposed_knobs)
    effects: list = field(default_factory=list)  # e.g. an EQ, a time effect and a modulation effect
    corpus: str = ""  # the evaluated corpus whose examples are used ("": the first seen corpus)
    inputs: int = 4  # input clips every walk is repeated on (the CIs are over them)
    references: int = 16  # references whose codes define the axes
    axes: int = 3  # principal axes of the code walked (a bottleneck's knobs are all walked)
    steps: int = 7  # positions along each walk
    span: float = 2.0  # each walk covers +-span standard deviations
    hedged: bool = False  # decode the hedged answers instead of the controller before the hedge

    def validate(self, where: str) -> None:
        for k in ("inputs", "axes", "steps"):
            if getattr(self, k) < 1:
                raise ValueError(f"{where}.{k}: must be at least 1, got {getattr(self, k)}")
        if self.references < 3:
            raise ValueError(f"{where}.references: at least 3 references define the axes, got {self.references}")
        if self.steps < 3:
            raise ValueError(f"{where}.steps: at least 3 positions per walk, got {self.steps}")
        if self.span <= 0:
            raise ValueError(f"{where}.span: must be positive, got {self.span}")


def study_config(cfg: Config, L: LatentConfig) -> Config:
    """The config a study-only variant trains under: the run's, with only the study's effects (each keeping
    its seen/unseen place) and no wild set."""
    c = copy.deepcopy(cfg)
    keep = set(L.effects)
    c.effects.seen = [e for e in cfg.effects.seen if e in keep]
    c.effects.unseen = [e for e in cfg.effects.unseen if e in keep]
    c.effects.wild = []
    return c


def _scope(cfg: Config, L: LatentConfig):
    """What a run's study covers: the grid systems it studies, the variants it trains for itself (not in the grid),
    its effects that the run has (wild ones never), and the test of whether a system has a latent to walk."""
    from bench.systems import SYSTEMS

    def latent_api(name: str) -> bool:
        return hasattr(SYSTEMS.get(cfg.system_base(name)), "predict_from_codes")

    grid = cfg.system_names()
    names = [n for n, es in cfg.effect_sets() if es != "wild"]
    return ([s for s in L.systems if s in grid], [s for s in L.train if s not in grid],
            [e for e in L.effects if e in names], latent_api)


@register_study("latent")
class LatentStudy(Study):
    help = "latent-space study of a trained controller on one effect (what `run` adds to the report)"
    Config = LatentConfig

    def check(self, cfg: Config) -> None:
        from bench.plan import check_system_names, effect_names

        L = self.settings(cfg)
        valid = effect_names(cfg)
        bad = [n for n in L.effects if n not in valid]
        if bad:
            raise ConfigError(f"studies.latent.effects: unknown {bad}; valid: {', '.join(sorted(valid))}")
        check_system_names(cfg, "studies.latent.systems", L.systems)
        check_system_names(cfg, "studies.latent.train", L.train)

    def trainings(self, cfg) -> list:
        """The section's ``train`` variants under :func:`study_config`, when a run studies anything at all (as
        :meth:`run` decides it, from the same :func:`_scope`): the run trains them beside its grid."""
        L = self.settings(cfg)
        studied, trained, eff, latent_api = _scope(cfg, L)
        if not any(map(latent_api, studied)) or not eff:
            return []
        scfg = study_config(cfg, L)
        return [(name, scfg) for name in trained if latent_api(name)]

    def run(self, ctx: StudyContext) -> None:
        """Study every (system, effect) of the section. In a run, nothing is studied (and no variant trained)
        unless one of its ``systems`` is in it; by hand (``ctx.standalone``) that is lifted."""
        from tqdm.auto import tqdm

        from bench.plan import Plan
        from models.proposed.latent import ac_features

        cfg, L, d, warn = ctx.cfg, self.settings(ctx.cfg), ctx.folder, ctx.warn
        studied, trained, eff, latent_api = _scope(cfg, L)
        names = [n for n, es in cfg.effect_sets() if es != "wild"]
        if not (any(map(latent_api, studied)) or (ctx.standalone and trained)) or not eff:
            if L.systems or L.effects:
                ctx.log("latent study: skipped (no studied system or effect of `latent` is in this run)")
            return
        (d / "failures.csv").unlink(missing_ok=True)  # this study's failures only
        for e in L.effects:
            if e not in names:
                warn(f"{e} is not among this run's effects: not studied")
        for name in [s for s in studied + trained if not latent_api(s)]:
            warn(f"{name} has no latent codes (only the proposed model and its variants do): not studied")
            _failure(d, name, "", TypeError(f"{name} has no latent codes"))
        studied = [s for s in studied if latent_api(s)]
        trained = [s for s in trained if latent_api(s)]
        plan = Plan.build(cfg, ctx.device)
        corpus = L.corpus or (cfg.data.seen_corpora or cfg.data.unseen_corpora)[0]
        tasks = {t.effect.name: t for t in plan.test if t.corpus.label == corpus and t.effect.name in eff}
        if not tasks:
            warn(f"no {plan.split} task of corpus {corpus!r} for {eff}: nothing studied")
            return
        loaded: dict[str, tuple] = {}  # name -> (system, key, extra summary columns)
        for name in studied:
            got = _system(ctx, name, "prepared")  # never trains a grid system here
            if got is not None:
                loaded[name] = (got.system, got.key, {"trained_for": "grid"})
        if trained:
            scfg = study_config(cfg, L)
            for name in trained:
                got = _system(ctx, name, "trained for the study", scfg, train=True)
                if got is None:
                    continue
                extra = {"trained_for": "study: " + ", ".join(n for n, _ in scfg.effect_sets())}
                extra.update(_budget_columns(got.budget or _stored_budget(d, name, got.key)))
                _store_budget(d, name, got.key, got.budget)
                loaded[name] = (got.system, got.key, extra)
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
                    study_cell(system, task.effect, examples, d, L, cfg.run, features=features, source=source,
                               extra={**extra, "task": task.id, "split": plan.split}, key=key)
                except KeyboardInterrupt:
                    raise
                except Exception as err:
                    warn(f"{name} on {e}: {type(err).__name__}: {err}")
                    _failure(d, name, e, err)
        finally:
            bar.close()
            getattr(features, "close", lambda: None)()  # the feature extractor's worker processes

    # --- by hand: `afx-bench study latent` ------------------------------------------------------------------
    def add_arguments(self, p) -> None:
        p.add_argument("--system", default="proposed",
                       help="proposed, proposed_paper or a labelled variant such as proposed_knobs (default: proposed)")
        p.add_argument("--effect", required=True, help="the effect whose controller is studied")
        p.add_argument("--hedged", action="store_true",
                       help="decode the hedged answers (as match gives them) instead of the controller before the "
                            "hedge (the default; proposed_paper has no hedge)")
        for key, kind, what in (("steps", int, "positions along each walk"), ("axes", int, "principal axes walked"),
                                ("span", float, "walk range in standard deviations"),
                                ("inputs", int, "input clips each walk is repeated on"),
                                ("references", int, "references that define the axes")):
            p.add_argument(f"--{key}", type=kind, default=None,
                           help=f"{what} (default: the config's studies.latent.{key})")

    def by_hand(self, cfg: Config, args) -> tuple[Config, list[str]]:
        """One (system, effect) cell: the section narrowed to it; a grid system is trained or loaded first (the
        checkpoint `run --out` uses), a variant of ``train`` is trained on the study's effect as the run's study
        does."""
        names = [n for n, es in cfg.effect_sets() if es != "wild"]
        if args.effect not in names:
            raise ConfigError(f"--effect: {args.effect!r} is not among this config's effects; valid: {', '.join(names)}")
        L = self.settings(cfg)
        over = {k: getattr(args, k) for k in ("steps", "axes", "span", "inputs", "references")
                if getattr(args, k) is not None}
        lat = dataclasses.asdict(L) | over | {"effects": [args.effect], "hedged": bool(args.hedged)}
        study_only = args.system in L.train and args.system not in cfg.system_names()
        lat.update(systems=[] if study_only else [args.system], train=[args.system] if study_only else [])
        cfg = copy.deepcopy(cfg)
        cfg.studies = {"latent": lat}
        if not study_only and args.system not in cfg.system_names():
            cfg.systems["include"] = [*cfg.system_names(), args.system]
        return cfg, [] if study_only else [args.system]

    def show(self, ctx: StudyContext, args) -> int:
        import pandas as pd

        from models.proposed.latent import file_slug

        for w in ctx.warnings:
            print(f"warning: {w}")
        d = ctx.folder
        slug = file_slug(args.effect, args.system)
        summary = d / f"{slug}_summary.csv"
        if ctx.warnings or not summary.exists():
            return 1
        s = pd.read_csv(summary).iloc[0]
        print(f"studied {s['controller']} ({s['space']}, {int(s['dims'])} dims) on {args.effect}")
        print(s["verdict"])
        for a in pd.read_csv(d / f"{slug}_axes.csv").itertuples(index=False):
            a = a._asdict()
            print(f"  {a['axis']}: change {a['change']:.2f} spreads; "
                  + (f"moves {a['main_feature']} (selectivity {a['selectivity']:.2f})" if a["moves"] else "moves nothing")
                  + f"; main parameter {a['main_param']}")
        for p in sorted(d.glob(f"{slug}_*")):
            print(f"{p.name}: {p}")
        return 0


def _system(ctx: StudyContext, name: str, what: str, *args, **kwargs):
    """``ctx.system(name, ...)``, or None with a warning (and, but for a system the run did not train, a line in
    the study's failures)."""
    try:
        return ctx.system(name, *args, **kwargs)
    except NotTrained as e:
        ctx.warn(f"{e}: not studied")
    except KeyboardInterrupt:
        raise
    except Exception as e:
        ctx.warn(f"{name}: could not be {what} ({type(e).__name__}: {e})")
        _failure(ctx.folder, name, "", e)
    return None


def study_cell(system, effect, examples: list, d: Path, L: LatentConfig, run, *, features, source: str,
               extra: dict | None = None, key: str = "", space: str = "auto") -> dict[str, Path]:
    """One (system, effect): walk, measure, write; then its key (the cell is done). ``run``: the run's section
    (its sample rate and seed)."""
    from models.proposed.latent import explore, file_slug, write

    res = explore(system, effect, examples, features=features, feature_source=source, steps=L.steps, axes=L.axes,
                  span=L.span, inputs=L.inputs, references=L.references, hedged=L.hedged, space=space,
                  seed=run.seed)
    paths = write(res, d, run.sample_rate, extra=extra)
    if key:
        atomic_write_bytes(d / f".{file_slug(effect.name, res.system)}.key", key.encode())
    return paths


def cell_done(d: Path, system: str, effect: str, key: str) -> bool:
    from models.proposed.latent import file_slug

    slug = file_slug(effect, system)
    marker = d / f".{slug}.key"
    return (d / f"{slug}_summary.csv").exists() and marker.exists() and marker.read_text() == key


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
