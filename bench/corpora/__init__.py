"""Corpora: deterministic sources of dry audio, split disjointly by source group (voice, piece, file).

A corpus *plans* its sources (a list of :class:`SourceSpec`, each with the recipe to render it and the split it
belongs to), *renders* each one on first use, and caches the result (resampled to the working rate and
loudness-normalised) under the cache dir, with a manifest of source ids, groups, splits and content hashes.
File-based corpora check every file when they are planned and leave bad ones out (:mod:`bench.corpora.checks`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bench import audio as A
from bench.cache import atomic_write_bytes, cache_dir, stable_hash
from bench.registry import Registry

CORPORA = Registry(
    "corpora",
    {"speech": "bench.corpora.speech", "music": "bench.corpora.music", "folder": "bench.corpora.folder",
     "pairs": "bench.corpora.pairs", "vctk": "bench.corpora.public", "daps": "bench.corpora.public",
     "libritts": "bench.corpora.public", "musdb": "bench.corpora.public", "daps_pairs": "bench.corpora.recorded",
     "idmt_fx": "bench.corpora.recorded"},
)
register_corpus = CORPORA.register

SPLITS = ("train", "valid", "test")


class CorpusError(ValueError):
    """A corpus that cannot be built (bad path, too few sources...); the message names the corpus."""


class CorpusWarning(UserWarning):
    """A file left out of a corpus (unreadable, silent, too short...); the message names it and says why."""


@dataclass(frozen=True)
class SourceSpec:
    source_id: str  # unique within the corpus
    group: str  # the unit splits are disjoint by (a voice family, a piece, a speaker, a file)
    split: str
    recipe: dict = field(default_factory=dict)  # JSON-able: everything needed to render it deterministically
    # the source's identity, what statistics count once (a voice, a piece, a speaker): every example cut from this
    # source carries it as its source_id. Empty: the group.
    identity: str = ""

    def __post_init__(self):
        if not self.identity:
            object.__setattr__(self, "identity", self.group)


class Corpus:
    """Base class. Subclasses set ``name`` and implement :meth:`plan` and :meth:`render`."""

    name: str = ""
    version: int = 1  # bump when rendering changes, so stale caches are not reused
    loudness_lufs: float = -23.0

    def __init__(self, sample_rate: int = 24000, seed: int = 0, sources: dict[str, int] | None = None,
                 seconds: float = 4.0, cache: Path | None = None, arg: str | None = None,
                 test_seed: int | None = None, min_seconds: float | None = None):
        self.sample_rate = int(sample_rate)
        self.seed = int(seed)
        self.test_seed = self.seed if test_seed is None else int(test_seed)
        self.sources = dict(sources or {"train": 8, "valid": 2, "test": 4})
        self.seconds = float(seconds)
        self.arg = arg  # e.g. the path of folder:PATH
        self.cache = Path(cache) if cache else cache_dir() / "corpora"
        # the shortest usable file: two segments (the plan passes 2 x run.segment_seconds); None: no length check
        self.min_seconds = None if min_seconds is None else float(min_seconds)
        self._plan: list[SourceSpec] | None = None
        self.left_out: list = []  # checks.BadFile: files left out when planning, with the reason
        self.notes: list = []  # checks.BadFile: usable files worth a word (e.g. a native rate below the working one)
        self._missing: dict[str, str] = {}  # split -> why it has no sources (a subset missing from the layout)
        self._checks = None

    # --- to implement -------------------------------------------------------------------------------------
    def plan(self) -> list[SourceSpec]:
        raise NotImplementedError

    def render(self, spec: SourceSpec) -> tuple[np.ndarray, int]:
        """Mono float audio at its native rate, and that rate."""
        raise NotImplementedError

    def capacity(self) -> dict[str, int] | None:
        """How many distinct sources each split can give (0: no limit), for a check before a run starts; None when
        the corpus cannot say without planning (files are only counted when planned)."""
        return None

    # --- provided -----------------------------------------------------------------------------------------
    def split_seed(self, split: str) -> int:
        """The seed a split's sources are drawn with: ``test_seed`` for the test split (so the test set can be
        drawn anew without moving a training source), ``seed`` for the others."""
        return self.test_seed if split == "test" else self.seed

    @property
    def label(self) -> str:
        return f"{self.name}:{self.arg}" if self.arg else self.name

    @property
    def required_seconds(self) -> float:
        """The shortest file a source may be: ``min_seconds`` when the plan gave it (two segments), else 0 (then
        files are checked for everything but their length)."""
        return self.min_seconds if self.min_seconds is not None else 0.0

    def specs(self, split: str | None = None) -> list[SourceSpec]:
        if self._plan is None:
            self._plan = self.plan()
            check_disjoint(self._plan, self.label)
            if self._checks is not None:
                self._checks.save()
        out = [s for s in self._plan if split is None or s.split == split]
        if split is not None and not out and split in self._missing:
            raise CorpusError(f"{self.label}: no sources in split {split!r}: {self._missing[split]}")
        return out

    # --- file checks (folder, pairs, recipes) --------------------------------------------------------------
    def problem(self, path: Path) -> str | None:
        """Why the file at ``path`` cannot be a source (None if it can); cached per file."""
        from bench.corpora.checks import CheckCache

        if self._checks is None:
            self._checks = CheckCache(self._dir() / "checks.json", self.required_seconds, self.sample_rate)
        return self._checks.problem(Path(path))

    def leave_out(self, rel: str, reason: str) -> None:
        """Record a bad file (listed in the manifest) and name it once in a warning."""
        from bench.corpora.checks import BadFile

        self.left_out.append(BadFile(rel, reason))
        warnings.warn(f"{self.label}: left out {rel}: {reason}", CorpusWarning, stacklevel=3)

    def good_files(self, root: Path, rels: Iterable[str]) -> list[str]:
        """The files of ``rels`` (relative to ``root``) that pass the checks; the others are left out."""
        good = []
        for rel in rels:
            why = self.problem(root / rel)
            if why:
                self.leave_out(rel, why)
            else:
                good.append(rel)
                self.note_rate(root / rel, rel)
        return good

    def note_rate(self, path: Path, rel: str) -> None:
        import soundfile as sf

        try:
            sr = int(sf.info(str(path)).samplerate)
        except Exception:
            return
        if sr < 0.75 * self.sample_rate:  # far below the working rate: a band-limited source, say so
            from bench.corpora.checks import BadFile

            self.notes.append(BadFile(rel, f"native rate {sr} Hz, below the working {self.sample_rate} Hz: "
                                           f"upsampled, nothing above {sr // 2} Hz"))

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
               "test_seed": self.test_seed, "sources": rows,
               "left_out": [asdict(b) for b in self.left_out], "notes": [asdict(b) for b in self.notes]}
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


def expand_label(label: str) -> list[str]:
    """The corpora a label stands for: itself, or for a corpus class with ``expand`` (``idmt_fx:PATH``: one
    corpus per effect class, ``idmt_fx:PATH@Chorus``...) the labels it expands to (when its layout is there)."""
    name, _, arg = label.partition(":")
    expand = getattr(CORPORA.get(name), "expand", None)
    return expand(arg) if expand is not None else [label]


def get_corpus(label: str, **kwargs) -> Corpus:
    """``speech``, ``music``, ``folder:PATH``, ``pairs:PATH``, and the recipes ``vctk:PATH``, ``daps:PATH``,
    ``daps_pairs:PATH``, ``libritts:PATH``, ``musdb:PATH``, ``idmt_fx:PATH[@CLASS]`` (docs/corpora.md)."""
    name, _, arg = label.partition(":")
    cls = CORPORA.get(name)
    return cls(arg=arg or None, **kwargs)
