"""The run plan: the config resolved into effects, corpora and tasks, and the one place the device is decided.

A :class:`Plan` holds the evaluated tasks, one per (corpus, effect) of the config, on the evaluated split
(``run.split``: ``test``, the set of record, or ``valid`` for development), and the training and validation tasks
the trainable systems learn from (the training corpora x every effect that is not hidden processing). Training
and validation never touch the test split: its sources and examples are drawn with ``data.test_seed``. Its
``device`` is what ``run.device`` resolves to ("auto" becomes "cuda" when torch sees a GPU, else "cpu"); systems
and metrics receive it once, when they are constructed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import Config, ConfigError
from bench.corpora import Corpus, expand_label, get_corpus
from bench.effects import Effect, get_effect
from bench.tasks import Task

SPLITS = ("train", "valid", "test")
PATH_CORPORA = ("folder", "pairs")  # corpora that read a directory given as LABEL:PATH
# a labelled variant's name: letters, digits, _ . -, and optionally one '@' before a suffix (ito_cmaes@64: a system
# at a budget); results folders write it '_' (bench.results.slug), MLflow keys ' at ' (bench.tracking._key)
LABEL = r"[A-Za-z0-9_.-]+(@[A-Za-z0-9_.-]+)?"


def resolve_device(device: str, gpus: float | None = None) -> str:
    """``run.device`` -> a concrete torch device string; a CUDA device torch cannot see is a config error. ``gpus``:
    the GPUs a Ray task was given; there ``auto`` is CUDA only with a GPU, so that Ray's accounting holds."""
    if device == "auto" and gpus is not None and not gpus > 0:
        return "cpu"
    if device != "auto":
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"run.device = {device!r}, but torch sees no CUDA device; valid here: auto, cpu")
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def make_effect(cfg: Config, name: str) -> Effect:
    """An effect of the config by name: a VST3 declared under ``effects.vst3``, else a registered effect."""
    if name in cfg.effects.vst3:
        from bench.effects.vst3 import Vst3Effect

        return Vst3Effect(name=name, **cfg.effects.vst3[name])
    return get_effect(name)


def check_sources(corpus: Corpus, sizes: dict[str, int]) -> None:
    """A split asked for more distinct sources than the corpus can give fails here, at the start of a run, with
    the count (a source is an identity: a voice, a piece; docs/corpora.md)."""
    cap = corpus.capacity() or {}
    for split, n in sizes.items():
        limit = cap.get(split, 0)
        if limit and n > limit:
            raise ConfigError(f"data.{split}_sources = {n}: {corpus.label} can give at most {limit} distinct {split} "
                              f"sources (docs/corpora.md); lower data.{split}_sources to at most {limit}")


@dataclass
class Plan:
    """The resolved objects of a run: device, effects, corpora and the train/valid/test tasks."""

    cfg: Config
    device: str = "cpu"
    effects: dict[str, Effect] = field(default_factory=dict)
    corpora: dict[str, Corpus] = field(default_factory=dict)
    test: list[Task] = field(default_factory=list)  # the evaluated tasks (on run.split)
    train: list[Task] = field(default_factory=list)
    valid: list[Task] = field(default_factory=list)

    @property
    def split(self) -> str:
        return self.cfg.run.split

    @property
    def n_examples(self) -> int:
        """Examples per evaluated task."""
        return self.cfg.tasks.n_test if self.split == "test" else self.cfg.tasks.n_valid

    @classmethod
    def build(cls, cfg: Config, device: str | None = None) -> Plan:
        """The plan of ``cfg``; ``device`` (already resolved) skips resolving ``run.device`` again."""
        p = cls(cfg, device or resolve_device(cfg.run.device))
        for name, _ in cfg.effect_sets():
            p.effects[name] = make_effect(cfg, name)
        d = cfg.data
        sizes = {"train": d.train_sources, "valid": d.valid_sources, "test": d.test_sources}
        # a label may stand for several corpora (idmt_fx:PATH: one per effect class, so a task carries its class)
        evaluated = [(lab, cset) for label, cset in cfg.corpora() for lab in expand_label(label)]
        training = [lab for label in cfg.train_corpora() for lab in expand_label(label)]
        for label in dict.fromkeys([c for c, _ in evaluated] + training):
            p.corpora[label] = get_corpus(label, sample_rate=cfg.run.sample_rate, seed=cfg.run.seed,
                                          test_seed=d.test_seed, sources=sizes, seconds=d.source_seconds,
                                          min_seconds=2 * cfg.run.segment_seconds)  # files too short are left out

        for corpus in p.corpora.values():
            check_sources(corpus, sizes)

        def task(label, name, split, eset, cset):
            seed = d.test_seed if split == "test" else cfg.run.seed
            return Task(p.corpora[label], p.effects[name], split, segment_samples=cfg.segment_samples,
                        seed=seed, effect_set=eset, corpus_set=cset)

        split = cfg.run.split
        for label, cset in evaluated:
            if getattr(p.corpora[label], "paired", False):  # recorded pairs: the recording is the effect
                p.effects.setdefault("recorded", make_effect(cfg, "recorded"))
                p.test.append(task(label, "recorded", split, "wild", cset))
                continue
            for name, eset in cfg.effect_sets():
                if name != "recorded":  # only a paired corpus has recordings
                    p.test.append(task(label, name, split, eset, cset))
        for label in training:
            for name, eset in cfg.effect_sets():
                if eset == "wild":  # hidden processing is never trained on
                    continue
                p.train.append(task(label, name, "train", eset, "seen"))
                p.valid.append(task(label, name, "valid", eset, "seen"))
        return p

    def tasks(self, split: str) -> list[Task]:
        if split not in SPLITS:
            raise ConfigError(f"split: {split!r}; valid: {', '.join(SPLITS)}")
        return {"train": self.train, "valid": self.valid, "test": self.test}[split]


# --- the checks: every name of the config against its registry, every section against its parser ---------------


def _variant(cfg: Config, name: str) -> bool:
    """A labelled variant: ``[systems.LABEL] base = "<system>"``."""
    return isinstance(cfg.systems.get(name), dict) and "base" in cfg.systems[name]


def check_system_names(cfg: Config, key: str, names: list[str]) -> None:
    """``names`` are registered systems or labelled variants of them (``key`` names where they were given)."""
    from bench.systems import SYSTEMS

    bad = [n for n in names if n not in SYSTEMS and not _variant(cfg, n)]
    if bad:
        raise ConfigError(f"{key}: unknown {bad}; valid: {', '.join(SYSTEMS.names())} (or a labelled variant: "
                          f"[systems.LABEL] with base = \"<system>\")")


def effect_names(cfg: Config) -> set[str]:
    """Every effect a config may name: the registered ones and its VST3 plugins."""
    from bench.effects import EFFECTS

    return set(EFFECTS.names()) | set(cfg.effects.vst3)


def check(cfg: Config) -> None:
    """Every name of ``cfg`` (systems, metrics, effects, corpora and their paths, studies, the executor) against
    its registry, and every system's, metric's and study's section against its own parser, before anything runs:
    a :class:`ConfigError` naming the key and the valid values."""
    from bench.config import parse_section
    from bench.corpora import CORPORA
    from bench.executors import check_executor, check_resources
    from bench.metrics import METRICS
    from bench.studies import STUDIES
    from bench.systems import SYSTEMS

    check_executor(cfg.run.executor)
    if not cfg.system_names():
        raise ConfigError(f"systems.include: empty; valid: {', '.join(SYSTEMS.names())}")
    check_system_names(cfg, "systems.include", cfg.system_names())
    if not cfg.metric_names():
        raise ConfigError(f"metrics.include: empty; valid: {', '.join(METRICS.names())}")
    bad = [n for n in cfg.metric_names() if n not in METRICS]
    if bad:
        raise ConfigError(f"metrics.include: unknown {bad}; valid: {', '.join(METRICS.names())}")
    for label, section in cfg.systems.items():
        base = section.get("base") if isinstance(section, dict) else None
        if base is not None:
            if not isinstance(base, str) or base not in SYSTEMS:
                raise ConfigError(f"systems.{label}.base: {base!r}; valid: {', '.join(SYSTEMS.names())}")
            if label in SYSTEMS or not re.fullmatch(LABEL, label):
                raise ConfigError(f"systems.{label}: a labelled variant needs a name of its own, of letters, digits "
                                  "and _ . - with at most one '@' before a suffix, as ito_cmaes@64 (':' marks report "
                                  "variants; MLflow refuses '+' and others in keys)")
    from bench.results import slug

    slugs: dict[str, str] = {}
    for name in cfg.system_names():  # results folders and file names are slugs: two systems must not share one
        other = slugs.setdefault(slug(name), name)
        if other != name:
            raise ConfigError(f"systems.include: {other!r} and {name!r} would share the results folder "
                              f"{slug(name)!r}; rename one")
    valid_effects = effect_names(cfg)
    names = [n for n, _ in cfg.effect_sets()]
    bad = [n for n in names if n not in valid_effects]
    if bad:
        raise ConfigError(f"effects: unknown {bad}; valid: {', '.join(sorted(valid_effects))}")
    if not names:
        raise ConfigError(f"effects: no effect selected; valid: {', '.join(sorted(valid_effects))}")
    if not cfg.corpora():
        raise ConfigError(f"corpora: none selected; valid: {', '.join(CORPORA.names())}")
    for label in [c for c, _ in cfg.corpora()] + cfg.train_corpora():
        name, _, arg = label.partition(":")
        if name not in CORPORA:
            raise ConfigError(f"corpora: unknown corpus {label!r}; valid: {', '.join(CORPORA.names())} "
                              "(folder and pairs take a path: folder:PATH)")
        if name in PATH_CORPORA:
            if not arg:
                raise ConfigError(f"corpora: {name} needs a path, as {name}:PATH")
            if not Path(arg).is_dir():
                raise ConfigError(f"corpora: {label}: no such directory {arg}")
    from bench.cell import needs_of

    def walk(path: list[str]) -> None:  # what a system builds on must be a system, and never itself in the end
        for dep in needs_of(cfg, path[-1]):
            check_system_names(cfg, f"systems.{path[0]} (needs)", [dep])
            if dep in path:
                raise ConfigError(f"systems.{path[0]}: a cycle of needs: {' -> '.join([*path, dep])}")
            walk([*path, dep])

    for name in cfg.system_names():
        walk([name])
    for name in cfg.system_names():  # the sections, parsed now: a bad key stops the run before any training
        check_resources(cfg, name)  # the Ray task options (resources, cell_resources) are the harness's
        parse_section(SYSTEMS.get(cfg.system_base(name)).Config, cfg.system_settings(name), f"systems.{name}")
    for name in cfg.metric_names():
        parse_section(METRICS.get(name).Config, cfg.metric_config(name), f"metrics.{name}")
    for name in cfg.studies:
        if name not in STUDIES:
            raise ConfigError(f"studies.{name}: unknown study; valid: {', '.join(STUDIES.names())}")
        STUDIES.get(name).check(cfg)


def needs(cfg: Config) -> dict[str, list]:
    """What the tasks of ``cfg`` need on the machine that runs them: corpus folders, VST3 files, and the
    registered names whose modules must import there (a plugin installed on one machine only)."""
    labels = [c for c, _ in cfg.corpora()] + cfg.train_corpora()
    return {"folders": [c for c in dict.fromkeys(labels) if c.partition(":")[2]],  # corpora read from a path
            "files": [(f"effects.vst3.{n}.path", str(spec.get("path", ""))) for n, spec in cfg.effects.vst3.items()],
            "systems": sorted({cfg.system_base(n) for n in cfg.system_names()}),
            "metrics": cfg.metric_names(),
            "effects": sorted({n for n, _ in cfg.effect_sets() if n not in cfg.effects.vst3})}


def missing(need: dict[str, list]) -> list[str]:
    """What of :func:`needs` this machine lacks, one line each (run on every node before a Ray run)."""
    import os

    from bench.effects import EFFECTS
    from bench.metrics import METRICS
    from bench.systems import SYSTEMS

    out = []
    for label in need["folders"]:
        path = Path(label.partition(":")[2].split("@")[0])  # idmt_fx:PATH@CLASS names a class inside PATH
        if not path.is_dir():
            out.append(f"corpus {label}: no directory {path.resolve() if not path.is_absolute() else path}"
                       + ("" if path.is_absolute() else f" (relative to {os.getcwd()})"))
    for key, path in need["files"]:
        if not Path(path).is_file():
            out.append(f"{key}: no file {path}")
    for kind, names, registry in (("system", need["systems"], SYSTEMS), ("metric", need["metrics"], METRICS),
                                  ("effect", need["effects"], EFFECTS)):
        for name in names:
            try:
                registry.get(name)
            except Exception as e:  # an ImportError or an unknown name: the plugin is not installed here
                out.append(f"{kind} {name}: {type(e).__name__}: {e}")
    return out
