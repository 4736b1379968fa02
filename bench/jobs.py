"""The two jobs of a run: a training and a cell. Pure functions of their inputs that return what they made and write
nothing (but caches: examples, unpacked checkpoints), wherever they run: inline in the driver's process or as Ray
tasks on another machine (:mod:`bench.executors`). The driver (:mod:`bench.runner`) writes what they return.

* :func:`train` fits one system with one training seed on the plan's training tasks and returns a
  :class:`Trained`: the checkpoint as bytes (a tar of the folder ``save`` filled), the budget, what the system
  logged to its tracker (replayed into MLflow by the driver) and where and how long it ran.
* :func:`cell` makes (or reads) a task's examples, loads the system from its checkpoint's bytes, has it answer and
  scores the answers (:class:`bench.cell.Evaluator`); it returns a :class:`CellResult`: the score, parameter and
  info tables, the first examples' audio for the report, the warnings.

A job never raises for its own failure: it returns :class:`Failed` with the exception (its traceback kept as a
note, so it pickles back from a Ray worker) and the stage (``train``, ``data`` or ``evaluate``). Per process, the
plan and the evaluator of a config are built once and the last few loaded systems kept (:func:`release` frees them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import socket
import tarfile
import time
import traceback
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import Config

# --- checkpoints as bytes ---------------------------------------------------------------------------------------


def pack_dir(path: Path) -> bytes:
    """A folder as the bytes of an (uncompressed) tar archive, its paths relative to the folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(Path(path).rglob("*")):
            tar.add(p, arcname=str(p.relative_to(path)), recursive=False)
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")
    return dest


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def unpacked(data: bytes) -> Path:
    """The checkpoint ``data`` unpacked once per machine, in the cache (a rename makes it appear whole)."""
    import shutil
    import tempfile

    from bench.cache import cache_dir

    root = cache_dir() / "checkpoints"
    d = root / digest(data)
    if not d.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}-", dir=root))
        unpack(data, tmp)
        try:
            os.replace(tmp, d)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return d


# --- what travels back ------------------------------------------------------------------------------------------


def portable(error: BaseException) -> BaseException:
    """The exception itself when it pickles (its traceback kept as a note), else a RuntimeError with its text."""
    tb = "".join(traceback.format_exception(error))[-4000:]
    try:
        pickle.loads(pickle.dumps(error))
        out = error
    except Exception:
        out = RuntimeError(f"{type(error).__name__}: {error}")
    out.__traceback__ = None
    if not any(n.startswith("traceback") for n in getattr(out, "__notes__", [])):
        out.add_note(f"traceback ({socket.gethostname()}, pid {os.getpid()}):\n{tb}")
    return out


def where() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


class Recorder:
    """Stands in for an MLflow run while a system trains: what it logs is replayed by the driver."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.calls.append(("log_metrics", (dict(metrics),), {"step": step}))

    def log_params(self, params: dict) -> None:
        self.calls.append(("log_params", (dict(params),), {}))

    def set_tags(self, tags: dict) -> None:
        self.calls.append(("set_tags", (dict(tags),), {}))


@dataclass
class Failed:
    """A job's own failure: the exception and the stage it failed in (train | data | evaluate | timeout)."""

    error: BaseException
    stage: str
    warnings: list[str] = field(default_factory=list)
    where: dict = field(default_factory=dict)


# --- per-process state ------------------------------------------------------------------------------------------

_PLANS: OrderedDict = OrderedDict()  # (config hash, device, cpus) -> (plan, evaluator, warnings list)
_SYSTEMS: OrderedDict = OrderedDict()  # (config hash, name, seed, checkpoint digest, device) -> system
KEEP_SYSTEMS = 3


def _plan(cfg: Config, device: str, cpus: float = 0):
    from bench.cell import Evaluator, build_metrics

    key = (cfg.hash(), device, cpus)
    if key not in _PLANS:
        warnings: list[str] = []
        metrics = build_metrics(cfg, device)
        for m in metrics:  # a metric with its own worker processes (AudioCommons) keeps to the job's share
            if cpus and hasattr(m, "workers") and not getattr(m.cfg, "workers", 1):
                m.workers = max(1, int(cpus))
        evaluator = Evaluator(metrics, sample_rate=cfg.run.sample_rate, device=device, warn=warnings.append)
        _PLANS[key] = (quiet_plan(cfg, device), evaluator, warnings)
        while len(_PLANS) > 2:
            _close(_PLANS.popitem(last=False)[1][1])
    _PLANS.move_to_end(key)
    return _PLANS[key]


def quiet_plan(cfg: Config, device: str):
    """The plan, its corpora planned without their warnings: the files a corpus leaves out are the driver's to
    report (it planned the same corpora first); a corpus that cannot be planned fails its cells at ``data``."""
    import warnings

    from bench.corpora import CorpusWarning
    from bench.plan import Plan

    plan = Plan.build(cfg, device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        for corpus in plan.corpora.values():
            try:
                corpus.specs()
            except Exception:
                pass
    return plan


def _close(evaluator) -> None:
    for m in evaluator.metrics:
        getattr(m, "close", lambda: None)()


def release() -> None:
    """Free what this process keeps between jobs (the metrics' worker processes, the loaded systems)."""
    while _PLANS:
        _close(_PLANS.popitem()[1][1])
    _SYSTEMS.clear()


def load_system(cfg: Config, name: str, device: str, checkpoint: bytes | Path | None = None):
    """``name`` built from its section on ``device`` and, given a checkpoint (its folder, or the folder's bytes),
    loaded from it."""
    from bench.cell import build_system

    system = build_system(name, cfg, device)
    if checkpoint is not None:
        system.load(checkpoint if isinstance(checkpoint, Path) else unpacked(checkpoint))
    return system


def _system(cfg: Config, name: str, seed: int, device: str, checkpoint: bytes | None):
    key = (cfg.hash(), name, seed, digest(checkpoint) if checkpoint is not None else None, device)
    if key not in _SYSTEMS:
        _SYSTEMS[key] = load_system(cfg, name, device, checkpoint)
        while len(_SYSTEMS) > KEEP_SYSTEMS:
            _SYSTEMS.popitem(last=False)
    _SYSTEMS.move_to_end(key)
    return _SYSTEMS[key]


@contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` while a job runs (0: left as they are)."""
    if not n:
        yield
        return
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _with_workers(cfg: Config, num_cpus: float) -> Config:
    """``run.workers = 0`` (all cores) means the task's own CPUs on a shared worker machine."""
    if cfg.run.workers or not num_cpus:
        return cfg
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, workers=max(1, int(num_cpus))))


# --- the training -------------------------------------------------------------------------------------------------


@dataclass
class TrainJob:
    cfg: Config
    name: str
    seed: int
    num_cpus: float = 0  # the CPUs a Ray task was given (0: inline, all of them)
    num_gpus: float | None = None  # the GPUs a Ray task was given (None: inline, run.device decides)
    progress: bool = False  # a progress bar on this process's terminal
    needs: list = field(default_factory=list)  # the systems it builds on: their checkpoints follow the job


@dataclass
class Trained:
    checkpoint: bytes  # the folder the system saved, as a tar
    budget: dict
    logged: list  # what the system logged while it trained: (method, args, kwargs)
    settings: dict  # the system's resolved config
    device: str
    seconds: float
    where: dict = field(default_factory=where)
    profile: dict = field(default_factory=dict)  # what the job measured where it ran (bench.perf.profile.measure)


def measured(fn):
    """A job that measures itself where it runs (wall, CPU, and the shared data it made: test sets, AudioCommons
    clips) into its result's ``profile``; cheap (a few system calls), so always on."""
    import functools

    @functools.wraps(fn)
    def run(job, *args):
        from bench import tasks
        from bench.perf.profile import Parts, measure

        made0, ac0 = dict(tasks.MADE), _ac_computed()
        parts = Parts()
        prof: dict = {}
        with measure(prof):
            result = fn(job, *args, parts=parts)
        prof["parts"] = parts.as_dict()
        made = {k: v - made0.get(k, 0) for k, v in tasks.MADE.items() if v - made0.get(k, 0)}
        if made:
            prof["examples_made"] = made
        prof["ac_computed"] = max(0, _ac_computed() - ac0)
        result.profile = prof
        return result

    return run


def _ac_computed() -> int:
    """AudioCommons clips computed in this process so far, by the metrics of the plans it keeps."""
    return sum(int(getattr(m, "stats", {}).get("computed", 0)) for _, ev, _ in _PLANS.values() for m in ev.metrics)


@measured
def train(job: TrainJob, *needed: bytes, parts=None) -> Trained | Failed:
    """Fit ``job.name`` with training seed ``job.seed`` on the plan's training tasks (validation tasks in its
    context; ``needed``: the checkpoints of ``job.needs``, in that order); returns the checkpoint as bytes, the
    budget and what the system logged."""
    import tempfile

    from bench.cell import budget_of, build_system, fit_system
    from bench.plan import resolve_device

    try:
        device = resolve_device(job.cfg.run.device, job.num_gpus)
        cfg = _with_workers(job.cfg, job.num_cpus)
        plan = quiet_plan(cfg, device)
        system = build_system(job.name, cfg, device)
        recorder = Recorder()
        with tempfile.TemporaryDirectory(prefix="afx-train-") as tmp, torch_threads(cfg.run.torch_threads):
            ckpt = Path(tmp) / "checkpoint"
            if len(needed) != len(job.needs):
                raise RuntimeError(f"{job.name}: its training needs the checkpoints of {job.needs}, given "
                                   f"{len(needed)}")
            deps = {n: unpacked(b) for n, b in zip(job.needs, needed, strict=True)}
            seconds = fit_system(system, plan, run=recorder, checkpoint_dir=ckpt, seed=job.seed,
                                 progress=job.progress, dependencies=deps)
            ckpt.mkdir(parents=True, exist_ok=True)
            system.save(ckpt)
            data = pack_dir(ckpt)
        return Trained(data, budget_of(system, seconds, device), recorder.calls, system.config_dict(), device, seconds)
    except Exception as e:
        return Failed(portable(e), "train", where=where())


# --- a cell -------------------------------------------------------------------------------------------------------


@dataclass
class CellJob:
    cfg: Config
    name: str
    seed: int
    task_id: str
    n: int  # examples
    key: str  # the cell's key (bench.runner.cell_key), stored with its rows
    audio: int = 0  # the first examples whose clips come back for the report
    num_gpus: float | None = None
    num_cpus: float = 0  # the cores the job may take (0: all of this machine's): its metrics' worker processes


@dataclass
class CellResult:
    rows: Any  # scores (bench.results.score_rows)
    params: Any  # parameter estimates, or None
    info: Any  # text extras, or None
    not_applicable: str  # why the system is undefined on the task ("" if it is defined)
    n_examples: int
    clips: dict | None  # {"examples": [...], "answers": {answer: [Estimate]}} for the report's audio
    warnings: list[str]
    seconds: float
    where: dict = field(default_factory=where)
    profile: dict = field(default_factory=dict)  # what the job measured where it ran (bench.perf.profile.measure)


@measured
def cell(job: CellJob, checkpoint: bytes | None = None, parts=None) -> CellResult | Failed:
    """One cell: the task's examples, the system (from ``checkpoint``'s bytes if it was trained or given one),
    its answers and their scores."""
    import pandas as pd

    from bench.plan import resolve_device
    from bench.results import info_rows, param_rows, score_rows

    t0 = time.perf_counter()
    stage, warnings = "evaluate", []
    try:
        cfg = job.cfg
        device = resolve_device(cfg.run.device, job.num_gpus)
        plan, evaluator, warned = _plan(cfg, device, job.num_cpus)
        warned.clear()
        task = {t.id: t for t in plan.test}[job.task_id]
        stage = "data"
        with parts.part("examples"):
            examples = task.examples(job.n, progress=False)
        stage = "evaluate"
        with parts.part("load system"):
            system = _system(cfg, job.name, job.seed, device, checkpoint)
        evaluator.parts = parts
        try:
            with torch_threads(cfg.run.torch_threads):
                result = evaluator.evaluate(job.name, system, task, examples)
        finally:
            evaluator.parts = None
        warnings = list(warned)
        rows = pd.concat([score_rows(m, task, examples, s, job.key, job.seed) for m, s in result.scores.items()],
                         ignore_index=True)
        params = info = clips = None  # a cell that is not applicable has no answers
        if result.answers:
            params = pd.concat([param_rows(m, task, examples, e, job.seed) for m, e in result.answers.items()],
                               ignore_index=True)
            info = pd.concat([info_rows(m, task, examples, e, job.seed) for m, e in result.answers.items()],
                             ignore_index=True)
            if job.audio:
                clips = {"examples": examples[: job.audio],
                         "answers": {m: e[: job.audio] for m, e in result.answers.items()}}
        return CellResult(rows, params, info, result.not_applicable, len(examples), clips, warnings,
                          time.perf_counter() - t0)
    except Exception as e:
        return Failed(portable(e), stage, warnings, where())
