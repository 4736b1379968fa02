"""Reading what the runner stores for the report besides the scores (bench/runner.py writes it):

- example audio, for the first ``run.audio_examples`` examples of each test task::

      <out>/audio/<task slug>-<hash>/<example:04d>/input.flac
                                                 /reference.flac
                                                 /target.flac
                                                 /<system slug>.flac      one per evaluated system
                                                 /example.json            the task's tags, example index, source

  (``.wav`` is read too). The task folder is found through ``example.json``'s ``task``; a folder without it is
  matched by its slug.
- the parameter estimates, ``<out>/params.parquet`` (system, task, effect, effect_set, corpus, corpus_set, split,
  example, param, estimate, true; normalised [0, 1] values), or the per-cell ``cells/**/*.params.pq`` files it
  is rebuilt from.

The file names, columns and slug rule come from :mod:`bench.results`, where the results schema is defined once;
nothing else of the harness is imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.results import AUDIO as AUDIO_DIR
from bench.results import CELLS, CLIPS, PARAM_COLUMNS, PARAMS_FILE, slug

AUDIO_EXTS = (".flac", ".wav")
__all__ = ["AUDIO_DIR", "AUDIO_EXTS", "CLIPS", "PARAM_COLUMNS", "AudioIndex", "load_params", "slug"]


class AudioIndex:
    """Which examples of which task have stored audio, and the clip files of each."""

    def __init__(self, out: Path, tasks: list[str] | None = None):
        self.dirs: dict[str, dict[int, Path]] = {}
        root = Path(out) / AUDIO_DIR
        if not root.is_dir():
            return
        by_slug: dict[str, list[str]] = {}
        for t in tasks or []:
            by_slug.setdefault(slug(t), []).append(t)
        for tdir in sorted(p for p in root.iterdir() if p.is_dir()):
            examples = {int(p.name): p for p in tdir.iterdir() if p.is_dir() and p.name.isdigit()}
            if not examples:
                continue
            task = self._task_of(tdir, examples, by_slug)
            if task is not None:
                self.dirs.setdefault(task, {}).update(examples)

    @staticmethod
    def _task_of(tdir: Path, examples: dict[int, Path], by_slug: dict[str, list[str]]) -> str | None:
        for d in examples.values():
            meta = d / "example.json"
            if meta.is_file():
                try:
                    task = json.loads(meta.read_text()).get("task")
                except (OSError, ValueError):
                    continue
                if task:
                    return str(task)
        stem = tdir.name.rsplit("-", 1)[0] if "-" in tdir.name else tdir.name
        cands = by_slug.get(stem, [])
        return cands[0] if len(cands) == 1 else None

    def examples(self, task: str) -> list[int]:
        return sorted(self.dirs.get(task, {}))

    def meta(self, task: str, example: int) -> dict:
        """The example's ``example.json`` (its tags, source, and ``meta`` such as a wild kind's hidden recipe);
        {} when absent or unreadable."""
        d = self.dirs.get(task, {}).get(example)
        try:
            data = json.loads((d / "example.json").read_text()) if d is not None else {}
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def clips(self, task: str, example: int) -> dict[str, Path]:
        """{"input": path, "reference": ..., "target": ..., "<system slug>": path, ...}"""
        d = self.dirs.get(task, {}).get(example)
        found: dict[str, Path] = {}
        if d is None:
            return found
        for p in sorted(d.iterdir()):
            if p.suffix.lower() in AUDIO_EXTS and not p.name.startswith(".") and p.stem not in found:
                found[p.stem] = p
        return found


def load_params(out: Path) -> pd.DataFrame:
    """All stored parameter estimates: ``<out>/params.parquet``, else the per-cell ``*.params.pq`` files."""
    out = Path(out)
    parts = []
    single = out / PARAMS_FILE
    if single.is_file():
        parts.append(pd.read_parquet(single))
    else:
        for p in sorted((out / CELLS).rglob("*.params.pq")):
            try:
                parts.append(pd.read_parquet(p))
            except Exception:
                continue  # a torn file: that cell is left out of the scatter plot
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=PARAM_COLUMNS)
    df = pd.concat(parts, ignore_index=True)
    missing = [c for c in ("system", "effect", "param", "estimate", "true") if c not in df]
    if missing:
        raise ValueError(f"{out}: stored parameter estimates lack columns {missing}")
    return df
