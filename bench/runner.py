"""The grid: fit or load each system, evaluate every (system, task) cell, write results as they come.

Per-example scores go to ``<out>/cells/<system>/<task>.parquet`` the moment a cell finishes, and
``<out>/scores.parquet`` (one row per system x example x metric) and ``<out>/summary.csv`` are rebuilt from the
finished cells right after. A rerun with the same ``--out`` skips every cell already finished under the same
settings, so an interrupted run resumes; a cell that fails is recorded with its error and the run goes on.
"""

from __future__ import annotations

import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.cache import atomic_write_bytes, stable_hash
from bench.config import Config
from bench.corpora import Corpus, get_corpus
from bench.effects import Effect, default_workers, get_effect
from bench.metrics import Metric, get_metric
from bench.systems import Estimate, FitContext, System, SystemError_, get_system
from bench.tasks import Task

KEYS = ["system", "task", "effect", "effect_set", "corpus", "corpus_set", "split"]
PARAM_COLUMNS = KEYS + ["example", "param", "estimate", "true"]
INFO_COLUMNS = KEYS + ["example", "key", "value"]


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _save_wav(path: Path, x: np.ndarray, sample_rate: int) -> None:
    """32-bit float WAV, unscaled, so the report keeps the clips' relative levels."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.wav")
    sf.write(str(tmp), np.asarray(x, dtype=np.float32), sample_rate, subtype="FLOAT")
    os.replace(tmp, path)
    path.with_suffix(".flac").unlink(missing_ok=True)  # a stale copy from an older run


def param_rows(system: str, task: Task, examples: list, estimates: list[Estimate]) -> pd.DataFrame:
    """Estimated vs true normalised parameters, one row per example x parameter (for scatter plots)."""
    tags = task.tags()
    rows = []
    for ex, est in zip(examples, estimates, strict=True):
        if est.params01 is None or ex.true_params01 is None:
            continue
        for name, e, t in zip(task.effect.param_names, est.params01, ex.true_params01, strict=True):
            rows.append({"system": system, **{k: tags[k] for k in KEYS[1:]}, "example": ex.index, "param": name,
                         "estimate": float(e), "true": float(t)})
    return pd.DataFrame(rows, columns=PARAM_COLUMNS)


def info_rows(system: str, task: Task, examples: list, estimates: list[Estimate]) -> pd.DataFrame:
    """The non-numeric per-example extras of estimates (a picked controller, a guessed recipe), as text (JSON for
    anything but a string); numeric extras are scores (``cost/<key>``)."""
    tags = task.tags()
    rows = []
    for ex, est in zip(examples, estimates, strict=True):
        for k, v in est.info.items():
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                continue
            rows.append({"system": system, **{t: tags[t] for t in KEYS[1:]}, "example": ex.index, "key": k,
                         "value": v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)})
    return pd.DataFrame(rows, columns=INFO_COLUMNS)


def resolve_device(device: str) -> str:
    if device != "auto":
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise SystemError_(f"run.device = {device!r} but torch sees no CUDA device")
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:80]


@dataclass
class Grid:
    """The resolved objects of a run: effects, corpora and the train/valid/test tasks."""

    cfg: Config
    effects: dict[str, Effect] = field(default_factory=dict)
    corpora: dict[str, Corpus] = field(default_factory=dict)
    test: list[Task] = field(default_factory=list)
    train: list[Task] = field(default_factory=list)
    valid: list[Task] = field(default_factory=list)

    @classmethod
    def build(cls, cfg: Config) -> Grid:
        g = cls(cfg)
        for name, _ in cfg.effect_sets():
            g.effects[name] = make_effect(cfg, name)
        d = cfg.data
        sizes = {"train": d.train_sources, "valid": d.valid_sources, "test": d.test_sources}
        for label in dict.fromkeys([c for c, _ in cfg.corpora()] + cfg.train_corpora()):
            g.corpora[label] = get_corpus(label, sample_rate=cfg.run.sample_rate, seed=cfg.run.seed,
                                          sources=sizes, seconds=d.source_seconds)

        def task(label, name, split, eset, cset):
            return Task(g.corpora[label], g.effects[name], split, segment_samples=cfg.segment_samples,
                        seed=cfg.run.seed, effect_set=eset, corpus_set=cset)

        for label, cset in cfg.corpora():
            if getattr(g.corpora[label], "paired", False):  # recorded pairs: the recording is the effect
                g.effects.setdefault("recorded", make_effect(cfg, "recorded"))
                g.test.append(task(label, "recorded", "test", "wild", cset))
                continue
            for name, eset in cfg.effect_sets():
                if name != "recorded":  # only a paired corpus has recordings
                    g.test.append(task(label, name, "test", eset, cset))
        for label in cfg.train_corpora():
            for name, eset in cfg.effect_sets():
                if eset == "wild":  # hidden processing is never trained on
                    continue
                g.train.append(task(label, name, "train", eset, "seen"))
                g.valid.append(task(label, name, "valid", eset, "seen"))
        return g


def make_effect(cfg: Config, name: str) -> Effect:
    if name in cfg.effects.vst3:
        from bench.effects.vst3 import Vst3Effect

        return Vst3Effect(name=name, **cfg.effects.vst3[name])
    return get_effect(name)


class Results:
    """The results directory: finished cells, failures, and the tables rebuilt from the cells."""

    def __init__(self, out: Path):
        self.out = Path(out)
        (self.out / "cells").mkdir(parents=True, exist_ok=True)
        self._read_cache: dict[Path, tuple[float, pd.DataFrame]] = {}

    def _read_all(self, pattern: str) -> list[pd.DataFrame]:
        """Every file matching ``pattern`` under cells/, each read once until it changes."""
        out = []
        for p in sorted((self.out / "cells").rglob(pattern)):
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

    def cell_path(self, system: str, task: Task) -> Path:
        return self.out / "cells" / _slug(system) / f"{_slug(task.id)}-{stable_hash(task.id)[:6]}.parquet"

    def done(self, system: str, task: Task, key: str) -> bool:
        p = self.cell_path(system, task)
        if not p.exists():
            return False
        try:
            meta = pd.read_parquet(p, columns=["cell_key"])
        except Exception:
            return False  # a torn file: the cell runs again
        return bool(len(meta)) and meta["cell_key"].iloc[0] == key

    def write_cell(self, system: str, task: Task, rows: pd.DataFrame, params: pd.DataFrame | None = None,
                   info: pd.DataFrame | None = None) -> None:
        p = self.cell_path(system, task)
        p.parent.mkdir(parents=True, exist_ok=True)
        for suffix, table in ((".params.pq", params), (".info.pq", info)):
            if table is not None and len(table):
                _atomic_parquet(table, p.with_suffix(suffix))
            else:
                p.with_suffix(suffix).unlink(missing_ok=True)
        _atomic_parquet(rows, p)  # last: its presence marks the cell finished
        self.clear_failure(system, task)

    def audio_dir(self, task: Task, index: int) -> Path:
        return self.out / "audio" / f"{_slug(task.id)}-{stable_hash(task.id)[:6]}" / f"{index:04d}"

    def save_audio(self, system: str, task: Task, examples: list, estimates: list[Estimate], k: int) -> None:
        """Input, reference, target and this system's output for the first ``k`` examples (for the report)."""

        for ex, est in list(zip(examples, estimates, strict=True))[:k]:
            d = self.audio_dir(task, ex.index)
            for name, x in (("input", ex.input), ("reference", ex.reference), ("target", ex.target)):
                if not (d / f"{name}.wav").exists():
                    _save_wav(d / f"{name}.wav", x, task.sample_rate)
            _save_wav(d / f"{_slug(system)}.wav", est.output, task.sample_rate)
            meta = d / "example.json"
            if not meta.exists():
                atomic_write_bytes(meta, json.dumps({**task.tags(), "example": ex.index, "source_id": ex.source_id,
                                                     "meta": ex.meta}, indent=1, default=str).encode())

    # failures: one JSON file per failed cell, removed when the cell later succeeds
    def _failure_path(self, system: str, task: Task) -> Path:
        return self.out / "failures" / f"{_slug(system)}__{_slug(task.id)}-{stable_hash(task.id)[:6]}.json"

    def write_failure(self, system: str, task: Task, stage: str, error: BaseException) -> None:
        rec = {"system": system, **task.tags(), "stage": stage, "error": f"{type(error).__name__}: {error}",
               "traceback": "".join(traceback.format_exception(error))[-4000:], "time": time.time()}
        atomic_write_bytes(self._failure_path(system, task), json.dumps(rec, indent=1).encode())

    def clear_failure(self, system: str, task: Task) -> None:
        self._failure_path(system, task).unlink(missing_ok=True)

    def failures(self) -> list[dict]:
        d = self.out / "failures"
        return [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] if d.exists() else []

    def scores(self) -> pd.DataFrame:
        parts = self._read_all("*.parquet")  # cells; their params files end in .params.pq
        if not parts:
            return pd.DataFrame(columns=KEYS + ["example", "source_id", "metric", "value"])
        return pd.concat(parts, ignore_index=True).drop(columns=["cell_key"])

    def params(self) -> pd.DataFrame:
        parts = self._read_all("*.params.pq")
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PARAM_COLUMNS)

    def info(self) -> pd.DataFrame:
        parts = self._read_all("*.info.pq")
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=INFO_COLUMNS)

    def rebuild_tables(self) -> pd.DataFrame:
        _atomic_parquet(self.params(), self.out / "params.parquet")
        _atomic_parquet(self.info(), self.out / "info.parquet")
        scores = self.scores()
        _atomic_parquet(scores, self.out / "scores.parquet")
        summary = summarise(scores)
        tmp = self.out / f".summary.csv.{os.getpid()}.tmp"
        summary.to_csv(tmp, index=False)
        os.replace(tmp, self.out / "summary.csv")
        fails = self.failures()
        pd.DataFrame(fails, columns=["system", "task", "effect", "effect_set", "corpus", "corpus_set", "split",
                                     "stage", "error"]).to_csv(self.out / "failures.csv", index=False)
        return summary


def summarise(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per system x task x metric: mean, std and n over examples (NaN = not applicable, not 0)."""
    cols = ["system", "effect", "effect_set", "corpus", "corpus_set", "split", "metric"]
    if scores.empty:
        return pd.DataFrame(columns=cols + ["mean", "std", "n"])
    g = scores.groupby(cols, sort=True, dropna=False)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    return out


def cell_rows(system: str, task: Task, examples: list, estimates: list[Estimate], metrics: list[Metric],
              seconds: float, key: str, warn) -> pd.DataFrame:
    per_example: list[dict[str, float]] = [{} for _ in examples]
    for m in metrics:  # slow metrics (AudioCommons' worker pool) start now and run while the others score
        k = getattr(m, "max_examples", 0) or len(examples)
        try:
            m.prefetch(estimates[:k], examples[:k])
        except Exception as e:  # score_batch will meet the same problem and record it
            warn(f"metric {m.name} could not start early on {system} / {task.id}: {type(e).__name__}: {e}")
    for m in metrics:
        k = getattr(m, "max_examples", 0) or len(examples)
        try:
            scored = m.score_batch(estimates[:k], examples[:k])
        except Exception as e:  # one metric failing must not lose the others
            warn(f"metric {m.name} failed on {system} / {task.id}: {type(e).__name__}: {e}")
            continue
        for d, s in zip(per_example[:k], scored, strict=True):
            d.update(s)
    for d, est in zip(per_example, estimates, strict=True):
        d.setdefault("cost/seconds", est.info.get("seconds", seconds / max(1, len(examples))))
        for k, v in est.info.items():
            if k != "seconds" and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                d[f"cost/{k}"] = float(v)
    tags = task.tags()
    rows = []
    for ex, d in zip(examples, per_example, strict=True):
        for metric, value in d.items():
            rows.append({"system": system, **{k: tags[k] for k in KEYS[1:]}, "example": ex.index,
                         "source_id": ex.source_id, "metric": metric, "value": float(value), "cell_key": key})
    return pd.DataFrame(rows)


def check_estimates(system: str, estimates: list[Estimate], examples: list, effect: Effect) -> None:
    if len(estimates) != len(examples):
        raise SystemError_(f"{system}: returned {len(estimates)} estimates for {len(examples)} examples")
    for est, ex in zip(estimates, examples, strict=True):
        out = np.asarray(est.output)
        if out.shape != ex.input.shape:
            raise SystemError_(f"{system}: output shape {out.shape} for {ex.example_id}, expected {ex.input.shape}")
        if not np.all(np.isfinite(out)):
            raise SystemError_(f"{system}: NaN/Inf in its output audio for {ex.example_id}")
        if est.params01 is not None:
            p = np.asarray(est.params01)
            if p.shape != (effect.n_params,) or not np.all(np.isfinite(p)):
                raise SystemError_(f"{system}: bad parameter estimate {p.tolist()} for {ex.example_id} "
                                   f"(expected {effect.n_params} finite values)")


class Runner:
    def __init__(self, cfg: Config, out: Path, *, tracker=None, log=print):
        self.cfg = cfg
        self.out = Path(out)
        self.results = Results(self.out)
        self.log = log
        self.device = resolve_device(cfg.run.device)
        self.workers = cfg.run.workers or default_workers()
        self.tracker = tracker
        self.parent = None
        self.warnings: list[str] = []

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"warning: {msg}")

    # --- systems ------------------------------------------------------------------------------------------
    def system_key(self, name: str) -> str:
        c = self.cfg
        return stable_hash([name, c.system_config(name), c.run.seed, c.run.sample_rate, c.segment_samples,
                            c.to_dict()["data"], [e for e, _ in c.effect_sets()]])

    def prepare_system(self, name: str, grid: Grid) -> System:
        """Construct, then load (a checkpoint, or this run's earlier training) or fit."""
        conf = self.cfg.system_config(name)
        checkpoint = conf.pop("checkpoint", None)
        system = get_system(name, conf, sample_rate=self.cfg.run.sample_rate, device=self.device)
        if checkpoint:
            self.log(f"{name}: loading {checkpoint}")
            system.load(_local_checkpoint(checkpoint))
            return system
        if not system.trainable:
            return system
        ckpt = self.out / "checkpoints" / _slug(name)
        key = self.system_key(name)
        marker = ckpt / "TRAINED"
        if marker.exists() and marker.read_text().strip() == key:
            self.log(f"{name}: loading this run's checkpoint {ckpt}")
            system.load(ckpt)
            return system
        run = None
        if self.tracker is not None:
            run = self.tracker.start(f"train/{name}", {"system": name, "kind": "train", **self.common_tags()},
                                     parent=self.parent)
            run.log_params({"system": system.config_dict(), "device": self.device})
        ctx = FitContext(valid_tasks=grid.valid, tracker=run, device=self.device, seed=self.cfg.run.seed,
                         workers=self.workers, progress=self.cfg.run.progress, checkpoint_dir=ckpt)
        t0 = time.perf_counter()
        try:
            system.fit(grid.train, ctx)
            ckpt.mkdir(parents=True, exist_ok=True)
            system.save(ckpt)
            marker.write_text(key)
        except BaseException as e:
            if run is not None:
                run.set_tags({"error": f"{type(e).__name__}: {e}"})
                run.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        if run is not None:
            run.log_metrics({"train_seconds": time.perf_counter() - t0})
            run.log_artifact(ckpt, "checkpoint")
            run.end()
        return system

    def common_tags(self) -> dict:
        from bench.tracking import git_sha

        return {"preset": self.cfg.preset, "config_hash": self.cfg.hash(), "git_sha": git_sha()}

    # --- the grid -----------------------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        cfg = self.cfg
        atomic_write_bytes(self.out / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())
        grid = Grid.build(cfg)
        metrics = []
        for n in cfg.metric_names():
            conf = cfg.metric_config(n)
            limit = conf.pop("max_examples", 0)  # expensive metrics may score only the first N examples per cell
            m = get_metric(n, conf, sample_rate=cfg.run.sample_rate, device=self.device)
            m.max_examples = int(limit)
            metrics.append(m)
        if self.tracker is not None:
            from bench.tracking import environment

            self.parent = self.tracker.start(f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}",
                                             {"kind": "benchmark", **self.common_tags()})
            self.parent.log_params(cfg.to_dict())
            self.parent.log_dict(cfg.to_dict(), "config.json")
            self.parent.log_dict(environment(self.device), "environment.json")
        status = "FINISHED"
        try:
            self._run(grid, metrics)
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            summary = self.results.rebuild_tables()
            if self.parent is not None:
                for f in ("summary.csv", "failures.csv"):
                    if (self.out / f).exists():
                        self.parent.log_artifact(self.out / f)
                self.parent.end(status)
        return summary

    def _run(self, grid: Grid, metrics: list[Metric]) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        systems: dict[str, System | BaseException] = {}
        for name in cfg.system_names():
            try:
                systems[name] = self.prepare_system(name, grid)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                self.warn(f"{name}: could not be prepared, its cells are recorded as failed: {e}")
                systems[name] = e
        cells = [(t, s) for t in grid.test for s in systems]
        todo = []
        for task, name in cells:
            key = stable_hash([self.system_key(name), task.id, cfg.tasks.n_test, cfg.metric_names(),
                               {m: cfg.metric_config(m) for m in cfg.metric_names()}])
            if self.results.done(name, task, key):
                continue
            todo.append((task, name, key))
        self.log(f"{len(cells)} cells ({len(cells) - len(todo)} already done), {len(grid.test)} tasks, "
                 f"{len(systems)} systems, device {self.device}")
        bar = tqdm(total=len(todo), desc="cells", disable=not cfg.run.progress)
        by_task: dict[str, list] = {}
        for task, name, key in todo:
            by_task.setdefault(task.id, []).append((task, name, key))
        for group in by_task.values():
            task = group[0][0]
            try:
                examples = task.examples(cfg.tasks.n_test, progress=cfg.run.progress)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                self.warn(f"task {task.id}: examples could not be made: {e}")
                for _, name, _ in group:
                    self.results.write_failure(name, task, "data", e)
                    bar.update(1)
                self.results.rebuild_tables()
                continue
            for _, name, key in group:
                bar.set_postfix_str(f"{name} / {task.id}")
                self.evaluate_cell(name, systems[name], task, examples, metrics, key)
                bar.update(1)
        bar.close()

    def evaluate_cell(self, name, system, task, examples, metrics, key) -> None:
        run = None
        if self.tracker is not None:
            run = self.tracker.start(f"{name}/{task.id}", {"system": name, "kind": "cell", **task.tags(),
                                                            **self.common_tags()}, parent=self.parent)
        try:
            if isinstance(system, BaseException):
                raise SystemError_(f"{name}: not prepared ({type(system).__name__}: {system})") from system
            if task.effect.hidden and not system.hidden_ok:
                self._not_applicable(name, task, examples, metrics, key, run)
                return
            t0 = time.perf_counter()
            estimates = system.match_examples(examples, task.effect)
            seconds = time.perf_counter() - t0
            check_estimates(name, estimates, examples, task.effect)
            answers = {name: estimates}  # the system's own, and its labelled variants (scored the same way)
            for v in estimates[0].variants if estimates else ():
                if any(v not in e.variants for e in estimates):
                    raise SystemError_(f"{name}: variant {v!r} is missing from some of its estimates")
                answers[f"{name}:{v}"] = [e.variants[v] for e in estimates]
                check_estimates(f"{name}:{v}", answers[f"{name}:{v}"], examples, task.effect)
            rows = pd.concat([cell_rows(n, task, examples, ests, metrics, seconds, key, self.warn)
                              for n, ests in answers.items()], ignore_index=True)
            params = pd.concat([param_rows(n, task, examples, ests) for n, ests in answers.items()],
                               ignore_index=True)
            info = pd.concat([info_rows(n, task, examples, ests) for n, ests in answers.items()], ignore_index=True)
        except KeyboardInterrupt:
            if run is not None:
                run.end("KILLED")
            raise
        except Exception as e:
            self.warn(f"cell {name} / {task.id} failed: {type(e).__name__}: {e}")
            self.results.write_failure(name, task, "evaluate", e)
            self.results.rebuild_tables()
            if run is not None:
                run.set_tags({"error": f"{type(e).__name__}: {e}"})
                run.end("FAILED")
            return
        self.results.write_cell(name, task, rows, params, info)
        if self.cfg.run.audio_examples:
            try:
                for n, ests in answers.items():
                    self.results.save_audio(n, task, examples, ests, self.cfg.run.audio_examples)
            except Exception as e:  # the report's audio is a convenience: never lose a cell for it
                self.warn(f"audio of {name} / {task.id} not saved: {e}")
        self.results.rebuild_tables()
        if run is not None:
            means = rows.groupby(["system", "metric"])["value"].mean()
            run.log_metrics({(m if n == name else f"{n[len(name) + 1:]}/{m}"): v for (n, m), v in means.items()})
            run.log_params({"n_examples": len(examples)})
            run.end()


    def _not_applicable(self, name, task, examples, metrics, key, run) -> None:
        """A finished cell of NaN rows (not applicable), e.g. the oracle on hidden processing."""
        tags = task.tags()
        rows = pd.DataFrame([{"system": name, **{k: tags[k] for k in KEYS[1:]}, "example": ex.index,
                              "source_id": ex.source_id, "metric": m.name, "value": float("nan"), "cell_key": key}
                             for ex in examples for m in metrics])
        self.results.write_cell(name, task, rows)
        self.results.rebuild_tables()
        if run is not None:
            run.set_tags({"not_applicable": f"{name} is undefined on hidden effects"})
            run.end()


def _local_checkpoint(checkpoint: str) -> Path:
    if checkpoint.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        from bench.tracking import download

        return download(checkpoint)
    p = Path(checkpoint)
    if not p.exists():
        from bench.systems import CheckpointError

        raise CheckpointError(f"checkpoint {p} does not exist")
    return p


def run(cfg: Config, out: Path, *, log=print) -> pd.DataFrame:
    tracker = None
    if cfg.tracking.enabled:
        from bench.tracking import Tracker

        tracker = Tracker(Path(out), cfg.tracking.uri, cfg.run.name)
    return Runner(cfg, out, tracker=tracker, log=log).run()
