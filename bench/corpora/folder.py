"""``folder:PATH``: every audio file under a directory tree.

The plan is the sorted list of files (relative POSIX paths) with a known audio suffix, case-insensitive:
``.wav .flac .mp3 .ogg`` (hidden files and folders skipped). Every file is checked first
(:mod:`bench.corpora.checks`: decodes, finite, not silent, long enough for two segments); a bad one is left out,
named in a warning and listed in the manifest. One good file is one source, and its group is its relative path.
Each file's split comes from a hash of (seed, its relative path) cut in proportion to the requested source
counts (the default counts 8/2/4 give 57/14/29% on average), so removing or adding a file never moves another;
every file is used, and each split asked for gets at least one file. A source is the whole file, mixed to mono.
The recipe holds the folder's resolved path and each file's size and modification time, so an edited file is
rendered again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench import audio as A
from bench.cache import stable_hash
from bench.corpora import SPLITS, Corpus, CorpusError, SourceSpec, register_corpus
from bench.corpora.checks import assign_splits

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")


def find_audio(root: Path) -> list[str]:
    """Sorted relative POSIX paths of the audio files under ``root`` (hidden entries skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(AUDIO_SUFFIXES):
                found.append((Path(dirpath) / f).relative_to(root).as_posix())
    return sorted(found)


def allocate(n: int, counts: dict[str, int], label: str) -> dict[str, int]:
    """Split ``n`` files in proportion to ``counts`` (largest remainder), at least one per requested split."""
    wanted = [s for s in SPLITS if counts.get(s, 0) > 0]
    if any(counts.get(s, 0) < 0 for s in SPLITS):
        raise CorpusError(f"{label}: negative source count in {counts}")
    if not wanted:
        raise CorpusError(f"{label}: no sources requested (counts {counts})")
    if n < len(wanted):
        raise CorpusError(f"{label}: {n} audio file(s), too few for the {len(wanted)} requested splits "
                          f"({', '.join(wanted)}); need at least one file per split")
    total = sum(counts[s] for s in wanted)
    exact = {s: n * counts[s] / total for s in wanted}
    alloc = {s: max(1, int(exact[s])) for s in wanted}
    # Hand out what is left by largest remainder (ties in split order), then take back from the largest splits.
    for s in sorted(wanted, key=lambda s: (-(exact[s] - int(exact[s])), SPLITS.index(s))):
        if sum(alloc.values()) >= n:
            break
        alloc[s] += 1
    while sum(alloc.values()) > n:
        s = max((s for s in wanted if alloc[s] > 1), key=lambda s: (alloc[s] - exact[s], alloc[s]))
        alloc[s] -= 1
    return {s: alloc.get(s, 0) for s in SPLITS}


@register_corpus("folder")
class FolderCorpus(Corpus):
    name = "folder"
    version = 1

    def _root(self) -> Path:
        if not self.arg:
            raise CorpusError("folder: no path given; use folder:PATH (a directory of wav/flac/mp3/ogg files)")
        root = Path(self.arg).expanduser()
        if not root.exists():
            raise CorpusError(f"folder:{self.arg}: no such directory")
        if not root.is_dir():
            raise CorpusError(f"folder:{self.arg}: not a directory")
        return root.resolve()

    def _dir(self) -> Path:  # keep each folder's cache apart
        return self.cache / self.name / stable_hash(str(self._root()))

    def plan(self) -> list[SourceSpec]:
        root = self._root()
        files = find_audio(root)
        if not files:
            raise CorpusError(f"{self.label}: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}")
        good = self.good_files(root, files)
        if not good:
            raise CorpusError(f"{self.label}: none of the {len(files)} audio files is usable (see the warnings)")
        split_of = assign_splits(good, self.sources, self.seed, self.label, salt="folder-split")
        specs = []
        for rel in good:  # sorted order
            st = (root / rel).stat()
            recipe = {"root": str(root), "path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            specs.append(SourceSpec(source_id=rel, group=rel, split=split_of[rel], recipe=recipe))
        return specs

    def render(self, spec: SourceSpec) -> tuple[np.ndarray, int]:
        path = Path(spec.recipe["root"]) / spec.recipe["path"]
        return A.load(path, self.sample_rate), self.sample_rate
