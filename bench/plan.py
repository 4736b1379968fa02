"""The run plan: the config resolved into effects, corpora and tasks, and the one place the device is decided.

A :class:`Plan` holds the evaluated tasks, one per (corpus, effect) of the config, on the evaluated split
(``run.split``: ``test``, the set of record, or ``valid`` for development), and the training and validation tasks
the trainable systems learn from (the training corpora x every effect that is not hidden processing). Training
and validation never touch the test split: its sources and examples are drawn with ``data.test_seed``. Its
``device`` is what ``run.device`` resolves to ("auto" becomes "cuda" when torch sees a GPU, else "cpu"); systems
and metrics receive it once, when they are constructed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import Config, ConfigError
from bench.corpora import Corpus, expand_label, get_corpus
from bench.effects import Effect, get_effect
from bench.tasks import Task

SPLITS = ("train", "valid", "test")


def resolve_device(device: str) -> str:
    """``run.device`` -> a concrete torch device string; a CUDA device torch cannot see is a config error."""
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
