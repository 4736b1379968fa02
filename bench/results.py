"""The results schema and store: what a run writes, where, and how it resumes. Defined here once.

The layout of a results folder is defined here: cells, failures, audio, budgets, the checkpoints a run trained
(``checkpoints/<system>/seed-<s>/``, each with its ``TRAINED`` key), the config of every invocation
(``configs/``, the latest also as ``config.json``) and a study's own folder (``<out>/<study>/``).

Per-example scores go to ``<out>/cells/<system>/<task>-<hash>.parquet`` the moment a cell finishes (with the
cell's parameter estimates and text extras beside it, ``.params.pq`` and ``.info.pq``), and ``<out>/scores.parquet``
(one row per system x example x metric), ``params.parquet``, ``info.parquet``, ``summary.csv`` and
``failures.csv`` are rebuilt from the finished cells right after. Every write is atomic (a temporary file, then a
rename), so a killed run never leaves a torn table; a cell whose stored key matches the current settings is done,
so a rerun resumes. The runner, the sweeps and ``reports/`` import the column names and :func:`slug` from here.

This module imports neither torch nor the rest of the harness: the report reads stored results with it.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench.cache import atomic_write_bytes, stable_hash

if TYPE_CHECKING:  # only for annotations: this module never imports the harness's heavy parts
    from bench.systems import Estimate
    from bench.tasks import Example, Task

# --- the schema ------------------------------------------------------------------------------------------------

TASK_KEYS = ["task", "effect", "effect_set", "corpus", "corpus_set", "split"]  # a task's tags, in column order
KEYS = ["system", *TASK_KEYS, "seed"]  # what identifies a cell: a system (trained with seed) on a task
SCORE_COLUMNS = [*KEYS, "example", "source_id", "metric", "value"]  # scores.parquet (cells add cell_key)
PARAM_COLUMNS = [*KEYS, "example", "param", "estimate", "true"]  # params.parquet: normalised [0, 1] values
INFO_COLUMNS = [*KEYS, "example", "key", "value"]  # info.parquet: text extras (JSON for anything but a string)
SUMMARY_GROUP = ["system", "effect", "effect_set", "corpus", "corpus_set", "split", "metric"]  # over seeds
SUMMARY_COLUMNS = [*SUMMARY_GROUP, "mean", "std", "n", "ci_low", "ci_high", "n_sources", "n_seeds"]  # summary.csv
BUDGET_COLUMNS = ["system", "seed", "train_examples", "steps", "train_renders", "train_seconds", "device",
                  "device_seconds", "parameters"]  # budgets.csv: what each trained system spent (NaN: not recorded)
FAILURE_COLUMNS = [*KEYS, "stage", "error"]  # failures.csv
CELL_KEY = "cell_key"  # the settings a stored cell was computed under (resume skips it only if they match)

# file names inside a results directory
CELLS, AUDIO, FAILURES, CHECKPOINTS = "cells", "audio", "failures", "checkpoints"
SCORES_FILE, PARAMS_FILE, INFO_FILE = "scores.parquet", "params.parquet", "info.parquet"
SUMMARY_FILE, FAILURES_FILE, CONFIG_FILE = "summary.csv", "failures.csv", "config.json"
BUDGETS_FILE, CORPORA_FILE, CONFIGS = "budgets.csv", "corpora.json", "configs"  # configs/: every invocation's
LOCK_FILE = ".afx-bench.lock"  # held by the run writing the folder (bench.lock)
TRAINED = "TRAINED"  # in a checkpoint folder: the key of the settings it was trained under
CLIPS = ("input", "reference", "target")  # the clips stored beside each system's output


def slug(s: str, default: str = "") -> str:
    """A file-name-safe form of a system, task or study name (at most 80 characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)).strip("_")[:80] or default


def task_slug(task_id: str) -> str:
    """A task's folder name: its slug plus a short hash, so two ids with one slug never share a folder."""
    return f"{slug(task_id)}-{stable_hash(task_id)[:6]}"


# --- rows --------------------------------------------------------------------------------------------------


def _tags(system: str, task: Task, seed: int) -> dict:
    tags = task.tags()
    return {"system": system, **{k: tags[k] for k in TASK_KEYS}, "seed": int(seed)}


def score_rows(system: str, task: Task, examples: list[Example], per_example: list[dict[str, float]],
               key: str, seed: int = 0) -> pd.DataFrame:
    """One row per example x score key, tagged with the cell's key."""
    head = _tags(system, task, seed)
    rows = [{**head, "example": ex.index, "source_id": ex.source_id, "metric": metric, "value": float(value),
             CELL_KEY: key}
            for ex, d in zip(examples, per_example, strict=True) for metric, value in d.items()]
    return pd.DataFrame(rows, columns=[*SCORE_COLUMNS, CELL_KEY])


def param_rows(system: str, task: Task, examples: list[Example], estimates: list[Estimate],
               seed: int = 0) -> pd.DataFrame:
    """Estimated vs true normalised parameters, one row per example x parameter (for scatter plots)."""
    head = _tags(system, task, seed)
    rows = [{**head, "example": ex.index, "param": name, "estimate": float(e), "true": float(t)}
            for ex, est in zip(examples, estimates, strict=True)
            if est.params01 is not None and ex.true_params01 is not None
            for name, e, t in zip(task.effect.param_names, est.params01, ex.true_params01, strict=True)]
    return pd.DataFrame(rows, columns=PARAM_COLUMNS)


def is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def info_rows(system: str, task: Task, examples: list[Example], estimates: list[Estimate],
              seed: int = 0) -> pd.DataFrame:
    """The non-numeric per-example extras of estimates (a picked controller, a guessed recipe), as text (JSON for
    anything but a string); numeric extras are scores (``cost/<key>``)."""
    head = _tags(system, task, seed)
    rows = [{**head, "example": ex.index, "key": k,
             "value": v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)}
            for ex, est in zip(examples, estimates, strict=True) for k, v in est.info.items() if not is_number(v)]
    return pd.DataFrame(rows, columns=INFO_COLUMNS)


def summarise(scores: pd.DataFrame, *, ci: bool = True) -> pd.DataFrame:
    """One row per system x task x metric over seeds and examples (NaN = not applicable, not 0), with the
    hierarchical bootstrap interval of :func:`bench.stats.summarise` (seeds, sources, examples) for the main
    metrics when ``ci``; without it the interval columns are NaN (the quick summary written after every cell)."""
    from bench.stats import main_metric
    from bench.stats import summarise as summarise_scores

    return summarise_scores(scores, SUMMARY_GROUP, ci=main_metric if ci else False)[SUMMARY_COLUMNS]


# --- files -------------------------------------------------------------------------------------------------


def _atomic(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    _atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def atomic_csv(df: pd.DataFrame, path: Path) -> None:
    _atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def save_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    """32-bit float WAV, unscaled, so the report keeps the clips' relative levels."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
    sf.write(str(tmp), np.asarray(x, dtype=np.float32), sample_rate, subtype="FLOAT")
    os.replace(tmp, path)
    path.with_suffix(".flac").unlink(missing_ok=True)  # a stale copy from an older run


class ResultStore:
    """A results directory: finished cells, failures, audio, and the tables rebuilt from the cells."""

    REFRESH_SECONDS = 30.0  # while a run goes, the merged tables are rebuilt at most this often (refresh_tables)

    def __init__(self, out: Path):
        self.out = Path(out)
        self._read_cache: dict[Path, tuple[int, pd.DataFrame]] = {}
        self._rebuilt = float("-inf")

    def _read_all(self, pattern: str) -> list[pd.DataFrame]:
        """Every file matching ``pattern`` under cells/, each read once until it changes."""
        out = []
        for p in sorted((self.out / CELLS).rglob(pattern)) if (self.out / CELLS).is_dir() else []:
            try:
                mtime = p.stat().st_mtime_ns
                hit = self._read_cache.get(p)
                if hit is None or hit[0] != mtime:
                    hit = (mtime, pd.read_parquet(p))
                    self._read_cache[p] = hit
                out.append(hit[1])
            except Exception:
                continue  # a torn or vanished file: that cell counts as not done
        return out

    # --- cells ----------------------------------------------------------------------------------------------
    def cell_path(self, system: str, task: Task, seed: int = 0) -> Path:
        return self.out / CELLS / slug(system) / f"{task_slug(task.id)}-s{int(seed)}.parquet"

    def done(self, system: str, task: Task, key: str, seed: int = 0) -> bool:
        p = self.cell_path(system, task, seed)
        if not p.exists():
            return False
        try:
            meta = pd.read_parquet(p, columns=[CELL_KEY])
        except Exception:
            return False  # a torn file: the cell runs again
        return bool(len(meta)) and meta[CELL_KEY].iloc[0] == key

    def write_cell(self, system: str, task: Task, rows: pd.DataFrame, params: pd.DataFrame | None = None,
                   info: pd.DataFrame | None = None, seed: int = 0) -> None:
        p = self.cell_path(system, task, seed)
        for suffix, table in ((".params.pq", params), (".info.pq", info)):
            if table is not None and len(table):
                atomic_parquet(table, p.with_suffix(suffix))
            else:
                p.with_suffix(suffix).unlink(missing_ok=True)
        atomic_parquet(rows, p)  # last: its presence marks the cell finished
        self.clear_failure(system, task, seed)

    def n_cells(self) -> int:
        """Finished cells on disk (what the merged tables are rebuilt from)."""
        d = self.out / CELLS
        return sum(1 for p in d.rglob("*.parquet")) if d.is_dir() else 0

    # --- checkpoints: written whole under a temporary name, then renamed ---------------------------------
    def checkpoint_dir(self, system: str, seed: int) -> Path:
        """Where a run keeps the checkpoint it trained of ``system`` with training seed ``seed``."""
        return self.out / CHECKPOINTS / slug(system) / f"seed-{int(seed)}"

    def trained_key(self, system: str, seed: int) -> str | None:
        """The key of the settings this folder's checkpoint of (system, seed) was trained under (None: none)."""
        try:
            return (self.checkpoint_dir(system, seed) / TRAINED).read_text().strip()
        except OSError:
            return None

    def write_checkpoint(self, system: str, seed: int, unpack, key: str) -> Path:
        """``unpack(folder)`` fills a temporary folder beside the checkpoint's, which gets its ``TRAINED`` key and
        then replaces the old one by a rename: a reader sees the old checkpoint or the new one, never a part."""
        import shutil

        final = self.checkpoint_dir(system, seed)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.incoming")
        old = final.with_name(f".{final.name}.{os.getpid()}.old")
        for d in (tmp, old):
            shutil.rmtree(d, ignore_errors=True)
        unpack(tmp)
        atomic_write_bytes(tmp / TRAINED, key.encode())
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    # --- what each invocation ran with ------------------------------------------------------------------
    def write_config(self, config: dict, corpora: dict) -> Path:
        """The invocation's resolved config, kept as ``configs/<time>-<pid>.json`` beside every earlier one, and as
        ``config.json`` (the latest, which the report reads); the corpora's left-out files as ``corpora.json``."""
        text = json.dumps(config, indent=1).encode()
        kept = self.out / CONFIGS / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
        atomic_write_bytes(kept, text)
        atomic_write_bytes(self.out / CONFIG_FILE, text)
        atomic_write_bytes(self.out / CORPORA_FILE, json.dumps(corpora, indent=1).encode())
        return kept

    def study_dir(self, study: str) -> Path:
        """A study's own folder (``<out>/<study>/``), which the study writes and the report reads."""
        return self.out / slug(study)

    # --- audio ----------------------------------------------------------------------------------------------
    def audio_dir(self, task: Task, index: int) -> Path:
        return self.out / AUDIO / task_slug(task.id) / f"{index:04d}"

    def save_audio(self, system: str, task: Task, examples: list[Example], estimates: list[Estimate],
                   k: int) -> None:
        """Input, reference, target and this system's output for the first ``k`` examples (for the report)."""
        for ex, est in list(zip(examples, estimates, strict=True))[:k]:
            d = self.audio_dir(task, ex.index)
            for name in CLIPS:
                if not (d / f"{name}.wav").exists():
                    save_wav(d / f"{name}.wav", getattr(ex, name), task.sample_rate)
            save_wav(d / f"{slug(system)}.wav", est.output, task.sample_rate)
            meta = d / "example.json"
            if not meta.exists():
                atomic_write_bytes(meta, json.dumps({**task.tags(), "example": ex.index, "source_id": ex.source_id,
                                                     "meta": ex.meta}, indent=1, default=str).encode())

    # --- failures: one JSON file per failed cell, removed when the cell later succeeds -------------------
    def _failure_path(self, system: str, task: Task, seed: int) -> Path:
        return self.out / FAILURES / f"{slug(system)}__{task_slug(task.id)}-s{int(seed)}.json"

    def write_failure(self, system: str, task: Task, stage: str, error: BaseException, seed: int = 0) -> None:
        rec = {"system": system, **task.tags(), "seed": int(seed), "stage": stage,
               "error": f"{type(error).__name__}: {error}",
               "traceback": "".join(traceback.format_exception(error))[-4000:], "time": time.time()}
        atomic_write_bytes(self._failure_path(system, task, seed), json.dumps(rec, indent=1).encode())

    def failed(self, system: str, task: Task, seed: int = 0) -> bool:
        return self._failure_path(system, task, seed).exists()

    def clear_failure(self, system: str, task: Task, seed: int = 0) -> None:
        self._failure_path(system, task, seed).unlink(missing_ok=True)

    def failures(self) -> list[dict]:
        d = self.out / FAILURES
        return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.exists() else []

    # --- tables ---------------------------------------------------------------------------------------------
    def scores(self) -> pd.DataFrame:
        parts = self._read_all("*.parquet")  # cells; their params files end in .params.pq
        if not parts:
            return pd.DataFrame(columns=SCORE_COLUMNS)
        return pd.concat(parts, ignore_index=True).drop(columns=[CELL_KEY])

    def params(self) -> pd.DataFrame:
        parts = self._read_all("*.params.pq")
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PARAM_COLUMNS)

    def info(self) -> pd.DataFrame:
        parts = self._read_all("*.info.pq")
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INFO_COLUMNS)

    def write_budget(self, system: str, seed: int, budget: dict) -> None:
        """What one trained system spent (one JSON per system and seed; ``budgets.csv`` is rebuilt from them)."""
        rec = {"system": system, "seed": int(seed), **budget}
        atomic_write_bytes(self.out / "budgets" / f"{slug(system)}-s{int(seed)}.json",
                           json.dumps(rec, indent=1, default=float).encode())

    def budgets(self) -> pd.DataFrame:
        d = self.out / "budgets"
        recs = [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.exists() else []
        return pd.DataFrame(recs, columns=BUDGET_COLUMNS)

    def refresh_tables(self) -> None:
        """Rebuild the merged tables if the last rebuild is ``REFRESH_SECONDS`` old: each cell is on disk the
        moment it finishes (what resume reads), so the merged tables may lag it by that much while a run goes
        (rebuilding them after every cell cost a quick run about 45 s). The run's end rebuilds them in any case."""
        if time.monotonic() - self._rebuilt >= self.REFRESH_SECONDS:
            self.rebuild_tables()

    def rebuild_tables(self, *, final: bool = False) -> pd.DataFrame:
        """Every table from the finished cells; ``final`` adds the confidence intervals to the summary (a second
        or so on a quick-sized run, so once at the end rather than after every cell)."""
        self._rebuilt = time.monotonic()
        atomic_parquet(self.params(), self.out / PARAMS_FILE)
        atomic_parquet(self.info(), self.out / INFO_FILE)
        scores = self.scores()
        atomic_parquet(scores, self.out / SCORES_FILE)
        summary = summarise(scores, ci=final)
        atomic_csv(summary, self.out / SUMMARY_FILE)
        atomic_csv(pd.DataFrame(self.failures(), columns=FAILURE_COLUMNS), self.out / FAILURES_FILE)
        atomic_csv(self.budgets(), self.out / BUDGETS_FILE)
        return summary
