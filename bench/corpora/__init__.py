"""Corpora: deterministic sources of dry audio, split disjointly by source group (voice, piece, file).

A corpus *plans* its sources (a list of :class:`SourceSpec`, each with the recipe to render it and the split it
belongs to), *renders* each one on first use, and caches the result (resampled to the working rate and
loudness-normalised) under the cache dir, with a manifest of source ids, groups, splits and content hashes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import audio as A
from bench.cache import atomic_write_bytes, cache_dir, stable_hash
from bench.registry import Registry

CORPORA = Registry(
    "corpora",
    {"speech": "bench.corpora.speech", "music": "bench.corpora.music", "folder": "bench.corpora.folder",
     "pairs": "bench.corpora.pairs"},
)
register_corpus = CORPORA.register

SPLITS = ("train", "valid", "test")


class CorpusError(ValueError):
    """A corpus that cannot be built (bad path, too few sources...); the message names the corpus."""


@dataclass(frozen=True)
class SourceSpec:
    source_id: str  # unique within the corpus
    group: str  # the unit splits are disjoint by (voice, piece, file)
    split: str
    recipe: dict = field(default_factory=dict)  # JSON-able: everything needed to render it deterministically


class Corpus:
    """Base class. Subclasses set ``name`` and implement :meth:`plan` and :meth:`render`."""

    name: str = ""
    version: int = 1  # bump when rendering changes, so stale caches are not reused
    loudness_lufs: float = -23.0

    def __init__(self, sample_rate: int = 24000, seed: int = 0, sources: dict[str, int] | None = None,
                 seconds: float = 4.0, cache: Path | None = None, arg: str | None = None,
                 test_seed: int | None = None):
        self.sample_rate = int(sample_rate)
        self.seed = int(seed)
        self.test_seed = self.seed if test_seed is None else int(test_seed)
        self.sources = dict(sources or {"train": 8, "valid": 2, "test": 4})
        self.seconds = float(seconds)
        self.arg = arg  # e.g. the path of folder:PATH
        self.cache = Path(cache) if cache else cache_dir() / "corpora"
        self._plan: list[SourceSpec] | None = None

    # --- to implement -------------------------------------------------------------------------------------
    def plan(self) -> list[SourceSpec]:
        raise NotImplementedError

    def render(self, spec: SourceSpec) -> tuple[np.ndarray, int]:
        """Mono float audio at its native rate, and that rate."""
        raise NotImplementedError

    # --- provided -----------------------------------------------------------------------------------------
    def split_seed(self, split: str) -> int:
        """The seed a split's sources are drawn with: ``test_seed`` for the test split (so the test set can be
        drawn anew without moving a training source), ``seed`` for the others."""
        return self.test_seed if split == "test" else self.seed

    @property
    def label(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name

    def specs(self, split: str | None = None) -> list[SourceSpec]:
        if self._plan is None:
            self._plan = self.plan()
            check_disjoint(self._plan, self.label)
        return [s for s in self._plan if split is None or s.split == split]

    def _key(self, spec: SourceSpec) -> str:
        return stable_hash([self.name, self.version, self.sample_rate, spec.source_id, spec.recipe])

    def _dir(self) -> Path:
        return self.cache / self.name

    def load_source(self, spec: SourceSpec) -> np.ndarray:
        path = self._dir() / f"{self._key(spec)}.npy"
        if path.exists():
            try:
                return np.load(path)
            except (ValueError, OSError):
                path.unlink(missing_ok=True)  # a torn write from an interrupted run: render again
        x, sr = self.render(spec)
        x = A.resample(A.check(x, f"{self.label}/{spec.source_id}"), sr, self.sample_rate)
        x = A.loudness_normalise(x, self.sample_rate, self.loudness_lufs, what=f"{self.label}/{spec.source_id}")
        import io

        buf = io.BytesIO()
        np.save(buf, x)
        atomic_write_bytes(path, buf.getvalue())
        return x

    def split(self, split: str) -> Iterator[tuple[str, np.ndarray]]:
        if split not in SPLITS:
            raise CorpusError(f"{self.label}: unknown split {split!r}; valid: {', '.join(SPLITS)}")
        for spec in self.specs(split):
            yield spec.source_id, self.load_source(spec)

    def manifest(self) -> dict:
        """Source ids, groups, splits and content hashes; written beside the cache and returned."""
        rows = []
        for spec in self.specs():
            x = self.load_source(spec)
            rows.append({**asdict(spec), "seconds": round(len(x) / self.sample_rate, 3), "sha256": A.content_hash(x)})
        man = {"corpus": self.label, "version": self.version, "sample_rate": self.sample_rate, "seed": self.seed,
               "test_seed": self.test_seed, "sources": rows}
        key = stable_hash([r["source_id"] for r in rows] + [self.sample_rate, self.version])
        atomic_write_bytes(self._dir() / f"manifest-{key}.json", json.dumps(man, indent=1).encode())
        return man


def check_disjoint(specs: list[SourceSpec], label: str) -> None:
    seen: dict[str, str] = {}
    ids: set[str] = set()
    for s in specs:
        if s.split not in SPLITS:
            raise CorpusError(f"{label}: source {s.source_id} has unknown split {s.split!r}")
        if s.source_id in ids:
            raise CorpusError(f"{label}: duplicate source id {s.source_id}")
        ids.add(s.source_id)
        if seen.setdefault(s.group, s.split) != s.split:
            raise CorpusError(f"{label}: group {s.group} appears in both {seen[s.group]} and {s.split}")


def get_corpus(label: str, **kwargs) -> Corpus:
    """``speech``, ``music``, ``folder:PATH``, ``pairs:PATH``."""
    name, _, arg = label.partition(":")
    cls = CORPORA.get(name)
    return cls(arg=arg or None, **kwargs)
