"""Tasks: (corpus, effect, split) -> deterministic example pairs.

An example holds ``input`` (segment A of a source), ``reference`` (segment B of the same source processed with
the true settings), ``target`` (segment A processed with the same settings), ``true_params01`` and ids; its
``source_id`` is the source's identity (a voice, a piece: :attr:`bench.corpora.SourceSpec.identity`). The
sources take turns, in an order seeded per task, so each gives an equal share of a task's examples. Example
``i`` of a task depends only on (task id, seed, i): it is the same on every machine and in every process, so
test sets are cached on disk and training sets are rendered on the fly by DataLoader workers. With recorded pairs
(a corpus with ``paired = True`` and an effect with ``recorded = True``) nothing is rendered: input is the dry
recording's segment A, reference the wet recording's segment B and target the wet segment A.
"""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from bench import audio as A
from bench.cache import atomic_write_bytes, cache_dir, stable_hash
from bench.corpora import Corpus, CorpusError
from bench.effects import Effect

EXAMPLES_VERSION = 3  # bump when example generation changes, so cached test sets are rebuilt
# test sets this process made (rather than read from the cache), by task id: a job reports its share, and a run's
# profile sums them to show that each task's test set was made once however many systems, seeds and processes use it
MADE: dict[str, int] = {}
MIN_SEGMENT_DB = -45.0  # segments quieter than this are redrawn


@dataclass
class Example:
    task_id: str
    index: int
    source_id: str
    input: np.ndarray
    reference: np.ndarray
    target: np.ndarray
    true_params01: np.ndarray | None  # None for effects with hidden settings
    meta: dict = field(default_factory=dict)
    param_names: tuple[str, ...] = ()

    @property
    def example_id(self) -> str:
        return f"{self.task_id}#{self.index}"

    def query(self) -> Query:
        """What a system may see of this example: input and reference, never the target or true settings."""
        return Query(self.task_id, self.index, self.source_id, self.input, self.reference, self.param_names)


@dataclass(frozen=True)
class Query:
    """The view of an example a system is given to match: its ids, input and reference. The target, the true
    settings and the meta (which may hold a hidden recipe) stay with the harness."""

    task_id: str
    index: int
    source_id: str
    input: np.ndarray
    reference: np.ndarray
    param_names: tuple[str, ...] = ()

    @property
    def example_id(self) -> str:
        return f"{self.task_id}#{self.index}"


class Task:
    """One cell's data: a corpus split processed by one effect."""

    def __init__(self, corpus: Corpus, effect: Effect, split: str, *, segment_samples: int, seed: int = 0,
                 effect_set: str = "seen", corpus_set: str = "seen"):
        self.corpus = corpus
        self.effect = effect
        self.split = split
        self.segment_samples = int(segment_samples)
        self.seed = int(seed)
        self.effect_set = effect_set
        self.corpus_set = corpus_set
        self._sources: dict[str, np.ndarray] = {}

    @property
    def id(self) -> str:
        return f"{self.corpus.label}/{self.effect.name}/{self.split}"

    @property
    def sample_rate(self) -> int:
        return self.corpus.sample_rate

    def tags(self) -> dict[str, str]:
        return {"effect": self.effect.name, "effect_set": self.effect_set, "corpus": self.corpus.label,
                "corpus_set": self.corpus_set, "split": self.split, "task": self.id}

    def __repr__(self) -> str:
        return f"<Task {self.id} ({self.effect_set} effect, {self.corpus_set} audio)>"

    @cached_property
    def _specs(self):
        specs = self.corpus.specs(self.split)
        if not specs:
            raise CorpusError(f"{self.corpus.label}: no sources in split {self.split!r}")
        return specs

    @cached_property
    def _source_order(self) -> np.ndarray:
        """The order examples take the sources in: a permutation seeded by (seed, task), so example ``i`` is cut
        from source ``order[i % n]`` and every source gives as many examples as any other, give or take one."""
        return np.random.default_rng([self.seed, zlib.crc32(self.id.encode()), 0x50]).permutation(len(self._specs))

    @cached_property
    def paired(self) -> bool:
        """Whether examples come from recorded dry/wet pairs rather than from rendering the effect."""
        if not getattr(self.effect, "recorded", False):
            return False
        if not getattr(self.corpus, "paired", False):
            raise CorpusError(f"{self.id}: effect {self.effect.name} is the wet side of recorded pairs and needs a "
                              "paired corpus (pairs:DIR)")
        return True

    def _source(self, spec) -> np.ndarray:
        """The source, ``(n,)``; for recorded pairs ``(2, n)``: dry and wet."""
        if spec.source_id not in self._sources:
            x = np.stack(self.corpus.load_pair(spec)) if self.paired else self.corpus.load_source(spec)
            if x.shape[-1] < 2 * self.segment_samples:
                raise CorpusError(
                    f"{self.corpus.label}/{spec.source_id}: {x.shape[-1]} samples, too short for two segments of "
                    f"{self.segment_samples}; raise data.source_seconds or lower run.segment_seconds")
            self._sources[spec.source_id] = x
        return self._sources[spec.source_id]

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(self.id.encode()), int(index)])

    def example(self, index: int) -> Example:
        """Example ``index``: a deterministic function of (task id, seed, index)."""
        rng = self.rng(index)
        L, sr = self.segment_samples, self.sample_rate
        order = self._source_order
        for attempt in range(50):  # a source without two audible segments gives its turn to the next one
            spec = self._specs[int(order[(index + attempt // 10) % len(order)])]
            x = self._source(spec)
            a = int(rng.integers(0, x.shape[-1] - 2 * L + 1))
            b = int(rng.integers(a + L, x.shape[-1] - L + 1))
            if rng.random() < 0.5:
                a, b = b, a  # either order: B may come before A in the source
            seg_a, seg_b = A.segment(x, a, L), A.segment(x, b, L)
            if min(np.min(A.rms_db(seg_a)), np.min(A.rms_db(seg_b))) > MIN_SEGMENT_DB:
                break
        else:
            raise CorpusError(f"{self.id}: could not find two audible segments for example {index}")
        meta = {"start_a": a, "start_b": b}
        if self.paired:
            seg_a, reference, target = seg_a[0], seg_b[1], seg_a[1]
            params = None
            meta["recipe"] = {"kind": self.effect.name, "pair": spec.source_id}
        else:  # a setting drawn from the effect's data distribution: parameters, or a hidden recipe
            setting = self.effect.draw_setting(rng, sr)
            reference, target = self.effect.apply(np.stack([seg_b, seg_a]), sr, setting)
            params = setting.params01
            if setting.recipe is not None:
                meta["recipe"] = setting.recipe
        return Example(self.id, int(index), spec.identity, seg_a, reference, target, params, meta,
                       tuple(self.effect.param_names))

    # --- cached evaluation sets ---------------------------------------------------------------------------
    def cache_key(self, n: int) -> str:
        specs = [(s.source_id, s.recipe) for s in self._specs]
        return stable_hash([EXAMPLES_VERSION, self.id, self.seed, n, self.segment_samples, self.sample_rate,
                            self.corpus.version, specs, self.effect.identity()])

    def examples(self, n: int, *, cache: bool = True, progress: bool = False) -> list[Example]:
        """The first ``n`` examples, cached on disk (one .npz per task and size)."""
        path = cache_dir() / "examples" / f"{self.cache_key(n)}.npz"
        if not cache:
            return self._make(n, progress)
        cached = self._cached(path)
        if cached is not None:
            return cached
        # one process makes a test set; the others (cells of the same task in other worker processes) wait for it
        # and read it. An flock, which the kernel drops when its holder ends however it ends
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                cached = self._cached(path)
                if cached is not None:
                    return cached
                out = self._make(n, progress)
                self._write(path, out)
                MADE[self.id] = MADE.get(self.id, 0) + 1
                return out
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _cached(self, path) -> list[Example] | None:
        if not path.exists():
            return None
        try:
            return self._read(path)
        except (ValueError, OSError, KeyError):
            path.unlink(missing_ok=True)
            return None

    def _make(self, n: int, progress: bool) -> list[Example]:
        it = range(n)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc=f"examples {self.id}", leave=False)
        return [self.example(i) for i in it]

    def _write(self, path, examples: list[Example]) -> None:
        buf = io.BytesIO()
        P = self.effect.n_params
        np.savez(
            buf,
            input=np.stack([e.input for e in examples]),
            reference=np.stack([e.reference for e in examples]),
            target=np.stack([e.target for e in examples]),
            params=np.stack([e.true_params01 if e.true_params01 is not None else np.full(P, np.nan, np.float32)
                             for e in examples]) if P else np.zeros((len(examples), 0), np.float32),
            index=np.array([e.index for e in examples]),
            source=np.array([e.source_id for e in examples]),
            meta=np.array([json.dumps(e.meta) for e in examples]),
        )
        atomic_write_bytes(path, buf.getvalue())

    def _read(self, path) -> list[Example]:
        with np.load(path) as npz:  # each array once: indexing the NpzFile re-reads the whole array every time
            z = {k: npz[k] for k in npz.files}
        P = self.effect.n_params
        return [
            Example(self.id, int(z["index"][i]), str(z["source"][i]), z["input"][i], z["reference"][i],
                    z["target"][i], z["params"][i] if P else None, json.loads(str(z["meta"][i])),
                    tuple(self.effect.param_names))
            for i in range(len(z["index"]))
        ]


def example_dataset(tasks: list[Task], length: int, offset: int = 0):
    """A torch Dataset over several tasks: item ``i`` is example ``offset + i // len(tasks)`` of task
    ``i % len(tasks)``, rendered on the fly (DataLoader workers render effects in parallel). Items are dicts of
    float tensors: input, reference, target, params (NaN-padded to the largest effect's count, NaN when
    hidden), and the task index."""
    from bench.torchdata import ExampleDataset

    return ExampleDataset(tasks, length, offset)
