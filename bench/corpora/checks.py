"""What a file-based corpus (``folder:``, ``pairs:``, the public-corpus recipes) checks before it plans a split.

Every file is checked when the corpus is planned, before any split is assigned: it must decode, hold finite
samples, not be silent (RMS at least :data:`bench.audio.SILENCE_DBFS`), hold at least half of the needed length of
audible sound (50 ms frames within :data:`AUDIBLE_DB` of the file's own level), and be long enough for two
segments (``Corpus.required_seconds``). A file that fails is *left out*: named once in a warning with its reason
and listed in the corpus manifest; the others are planned as if it were not there.

Splits depend on a hash of each group's name (:func:`assign_splits`), not on a shuffle of the file list, so leaving
a file out never moves another file to another split. Results of the checks are cached per file (keyed by its
path, size, modification time and the required length) in ``<corpus cache>/checks.json``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import audio as A
from bench.cache import atomic_write_bytes, stable_hash

CHECK_VERSION = 1
AUDIBLE_DB = -35.0  # a 50 ms frame counts as audible within this many dB of the file's RMS
_LOCK = threading.Lock()


@dataclass(frozen=True)
class BadFile:
    path: str  # relative to the corpus root (for a pair: its id)
    reason: str


def file_problem(path: Path, min_seconds: float, sample_rate: int) -> str | None:
    """Why ``path`` cannot be a source (None if it can). ``sample_rate``: the working rate (for the margin)."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # LibsndfileError, RuntimeError, TypeError...
        msg = str(e).replace(f"'{path}'", "the file").replace(str(path), "the file").strip()
        return f"cannot be decoded ({msg or type(e).__name__})"
    if data.size == 0:
        return "empty (no samples)"
    if not np.all(np.isfinite(data)):
        return "contains NaN or Inf samples"
    seconds = len(data) / sr
    need = float(min_seconds) + 2.0 / sample_rate  # resampling may round a sample off
    if min_seconds > 0 and seconds < need:
        return (f"too short: {seconds:.3f} s at {info.samplerate} Hz, need at least {min_seconds:.3f} s "
                "(two segments)")
    mono = data.mean(axis=1).astype(np.float64)
    level = float(A.rms_db(mono, axis=None))
    if level < A.SILENCE_DBFS:
        return f"silent (RMS {level:.1f} dBFS, below {A.SILENCE_DBFS:.0f} dBFS)"
    hop = max(1, int(0.05 * sr))
    n = len(mono) // hop
    if n:
        frames = 10 * np.log10(np.mean(mono[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-20)
        audible = float(np.sum(frames > level + AUDIBLE_DB)) * hop / sr
        if audible < 0.5 * min_seconds:
            return (f"mostly silent: {audible:.2f} s of audible sound, need at least {0.5 * min_seconds:.2f} s "
                    "(one segment)")
    return None


class CheckCache:
    """The outcome of :func:`file_problem` per file, remembered across runs (a JSON file; "" means good)."""

    def __init__(self, path: Path, min_seconds: float, sample_rate: int):
        self.path = Path(path)
        self.min_seconds = float(min_seconds)
        self.sample_rate = int(sample_rate)
        self.dirty = False
        try:
            self.data: dict[str, str] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def problem(self, path: Path) -> str | None:
        return self.lookup([path], "file", lambda: file_problem(path, self.min_seconds, self.sample_rate))

    def lookup(self, paths: list[Path], what: str, compute) -> str | None:
        """The cached outcome of ``compute()`` (a reason or None) for these files as they are now."""
        stamp = []
        for p in paths:
            try:
                st = Path(p).stat()
            except OSError as e:
                return f"{p}: cannot be read ({e.strerror or e})"
            stamp.append([str(p), st.st_size, st.st_mtime_ns])
        key = stable_hash([CHECK_VERSION, what, stamp, self.min_seconds, self.sample_rate])
        if key not in self.data:
            self.data[key] = compute() or ""
            self.dirty = True
        return self.data[key] or None

    def save(self) -> None:
        if not self.dirty:
            return
        with _LOCK:
            try:  # merge with what another process wrote meanwhile
                merged = {**json.loads(self.path.read_text()), **self.data}
            except (OSError, ValueError):
                merged = self.data
            atomic_write_bytes(self.path, json.dumps(merged).encode())
        self.dirty = False


def hash_unit(*parts) -> float:
    """A number in [0, 1) that is a pure function of ``parts`` (the same on every machine)."""
    return int(stable_hash(list(parts)), 16) / 16.0 ** 16


def assign_splits(groups: list[str], proportions: dict[str, float], seed: int, label: str,
                  salt: str = "split") -> dict[str, str]:
    """Each group's split from a hash of (salt, seed, group) cut at the cumulative ``proportions`` (train, valid,
    test order), so a group's split never depends on which other groups exist. Only when a requested split would
    be empty (a small folder) is one group moved there: from the largest split, the one whose hash lies nearest
    that split's interval. Raises CorpusError with fewer groups than requested splits."""
    from bench.corpora import SPLITS, CorpusError

    wanted = [s for s in SPLITS if proportions.get(s, 0) > 0]
    if any(proportions.get(s, 0) < 0 for s in SPLITS):
        raise CorpusError(f"{label}: negative source count in {proportions}")
    if not wanted:
        raise CorpusError(f"{label}: no sources requested (counts {proportions})")
    groups = sorted(set(groups))
    if len(groups) < len(wanted):
        raise CorpusError(f"{label}: {len(groups)} usable group(s) (files, speakers, tracks...), too few for the "
                          f"{len(wanted)} requested splits ({', '.join(wanted)}); need at least one per split")
    total = float(sum(proportions[s] for s in wanted))
    bounds, lo = {}, 0.0
    for s in wanted:
        bounds[s] = (lo, lo + proportions[s] / total)
        lo = bounds[s][1]
    u = {g: hash_unit(salt, seed, g) for g in groups}
    out = {g: next((s for s in wanted if u[g] < bounds[s][1]), wanted[-1]) for g in groups}
    for s in wanted:
        if any(v == s for v in out.values()):
            continue
        sizes = {t: sum(v == t for v in out.values()) for t in wanted}
        donor = max((t for t in wanted if sizes[t] > 1), key=lambda t: (sizes[t], -wanted.index(t)))
        centre = sum(bounds[s]) / 2
        g = min((g for g in groups if out[g] == donor), key=lambda g: (abs(u[g] - centre), g))
        out[g] = s
    return out


def ranked(items: list[str], seed: int, salt: str = "pick") -> list[str]:
    """``items`` in the order of a hash of (salt, seed, item): a selection of the first n never changes when an
    item further down (or a bad one above it) is removed, except that the next one moves up."""
    return sorted(items, key=lambda i: (hash_unit(salt, seed, i), i))
