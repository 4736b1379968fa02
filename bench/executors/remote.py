"""What a Ray task runs: a training (checkpoint bytes back), a cell (its tables and audio back) or a sweep worker.

No shared filesystem is assumed: a task gets the config (a pickled :class:`bench.config.Config`) and, for a cell,
the trained system's checkpoint as the bytes of a tar archive; it returns everything the driver writes. Examples
are made on the worker (deterministic from task, seed and index; cached in the worker's ``AFX_BENCH_CACHE``).
A task never raises for its own failure: it returns the exception (with its traceback as a note), so that the
driver records it exactly as the local runner does; only a lost worker or node surfaces as a Ray error, which the
driver retries. Per worker process, the plan and the evaluator of a config are built once, and the last few
loaded systems are kept, as the local runner keeps one of each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import socket
import tarfile
import tempfile
import time
import traceback
from collections import OrderedDict
from pathlib import Path

# --- checkpoints as bytes ---------------------------------------------------------------------------------------


def pack_dir(path: Path) -> bytes:
    """A directory as the bytes of an (uncompressed) tar archive, its paths relative to the directory."""
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


def checkpoint_dir(data: bytes, digest_: str) -> Path:
    """The checkpoint unpacked once per worker machine (a rename makes it appear whole)."""
    root = Path(tempfile.gettempdir()) / f"afx-bench-{os.getuid()}" / "checkpoints"
    d = root / digest_
    if not d.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest_}-", dir=_mkdir(root)))
        unpack(data, tmp)
        try:
            os.replace(tmp, d)
        except OSError:  # another worker got there first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return d


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


# --- results that travel ------------------------------------------------------------------------------------------


def portable(error: BaseException) -> BaseException:
    """The exception itself when it pickles (its traceback kept as a note), else a RuntimeError with its text."""
    tb = "".join(traceback.format_exception(error))[-4000:]
    try:
        pickle.loads(pickle.dumps(error))
        out = error
    except Exception:
        out = RuntimeError(f"{type(error).__name__}: {error}")
    out.__traceback__ = None
    if not any(n.startswith("remote traceback") for n in getattr(out, "__notes__", [])):
        out.add_note(f"remote traceback ({socket.gethostname()}):\n{tb}")
    return out


def where() -> dict:
    info = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        info["node"] = ray.get_runtime_context().get_node_id()[:12]
    except Exception:
        pass
    return info


class Recorder:
    """Stands in for an MLflow run inside a training task: what the system logs is replayed by the driver."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.calls.append(("log_metrics", (dict(metrics),), {"step": step}))

    def log_params(self, params: dict) -> None:
        self.calls.append(("log_params", (dict(params),), {}))

    def set_tags(self, tags: dict) -> None:
        self.calls.append(("set_tags", (dict(tags),), {}))


# --- per-worker state -------------------------------------------------------------------------------------------

_PLANS: OrderedDict = OrderedDict()  # (config hash, device) -> (plan, evaluator, warnings list)
_SYSTEMS: OrderedDict = OrderedDict()  # (config hash, name, seed, checkpoint digest, device) -> system
KEEP_SYSTEMS = 3


def _plan(cfg, device: str):
    from bench.cell import Evaluator, build_metrics
    from bench.plan import Plan

    key = (cfg.hash(), device)
    if key not in _PLANS:
        warnings: list[str] = []
        evaluator = Evaluator(build_metrics(cfg, device), sample_rate=cfg.run.sample_rate, device=device,
                              warn=warnings.append)
        _PLANS[key] = (Plan.build(cfg, device), evaluator, warnings)
        while len(_PLANS) > 2:
            _, (_, ev, _) = _PLANS.popitem(last=False)
            for m in ev.metrics:
                getattr(m, "close", lambda: None)()
    _PLANS.move_to_end(key)
    return _PLANS[key]


def _system(cfg, name: str, seed: int, device: str, ckpt: list | None, ckpt_digest: str | None):
    from bench.cell import build_system

    key = (cfg.hash(), name, seed, ckpt_digest, device)
    if key not in _SYSTEMS:
        system = build_system(name, cfg, device)
        if ckpt is not None:
            import ray

            system.load(checkpoint_dir(ray.get(ckpt[0]), ckpt_digest))
        _SYSTEMS[key] = system
        while len(_SYSTEMS) > KEEP_SYSTEMS:
            _SYSTEMS.popitem(last=False)
    _SYSTEMS.move_to_end(key)
    return _SYSTEMS[key]


def _with_workers(cfg, num_cpus: float):
    """``run.workers = 0`` (all cores) means the task's own CPUs on a shared worker machine."""
    if cfg.run.workers or not num_cpus:
        return cfg
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, workers=max(1, int(num_cpus))))


# --- the tasks ----------------------------------------------------------------------------------------------------


def train_task(cfg, name: str, seed: int, options: dict) -> dict:
    """Fit ``name`` with training seed ``seed`` on the plan's training tasks; returns the checkpoint as bytes, the
    budget and what the system logged (or ``error``)."""
    from bench.cell import budget_of, build_system, fit_system
    from bench.executors import worker_device
    from bench.plan import Plan

    t0 = time.perf_counter()
    try:
        device = worker_device(cfg.run.device, options.get("num_gpus", 0))
        cfg = _with_workers(cfg, options.get("num_cpus", 0))
        plan = Plan.build(cfg, device)
        system = build_system(name, cfg, device)
        recorder = Recorder()
        with tempfile.TemporaryDirectory(prefix="afx-train-") as tmp:
            ckpt = Path(tmp) / "checkpoint"  # as the local runner: fit's checkpoint_dir is where it is saved
            seconds = fit_system(system, plan, run=recorder, checkpoint_dir=ckpt, seed=seed, progress=False)
            ckpt.mkdir(parents=True, exist_ok=True)
            system.save(ckpt)
            data = pack_dir(ckpt)
        return {"checkpoint": data, "budget": budget_of(system, seconds, device), "calls": recorder.calls,
                "config": system.config_dict(), "device": device, "seconds": seconds, "where": where(),
                "task_seconds": time.perf_counter() - t0}
    except BaseException as e:  # KeyboardInterrupt too: a cancelled task says so
        return {"error": portable(e), "where": where(), "task_seconds": time.perf_counter() - t0}


def cell_task(cfg, name: str, seed: int, task_id: str, n: int, key: str, options: dict, ckpt: list | None,
              ckpt_digest: str | None, audio: int) -> dict:
    """One cell: make (or read) the task's examples, load the system, answer and score; returns the rows, params and
    info tables, the warnings, and the first ``audio`` examples with every answer's outputs (or ``error`` and its
    ``stage``: data | evaluate)."""
    import pandas as pd

    from bench.cell import Cell
    from bench.executors import worker_device
    from bench.results import info_rows, param_rows, score_rows
    from bench.systems import SystemError_

    t0 = time.perf_counter()
    stage = "evaluate"
    warnings: list[str] = []
    try:
        device = worker_device(cfg.run.device, options.get("num_gpus", 0))
        plan, evaluator, warned = _plan(cfg, device)
        warned.clear()
        task = {t.id: t for t in plan.test}[task_id]
        stage = "data"
        examples = task.examples(n, progress=False)
        stage = "evaluate"
        if ckpt is None and cfg.system_config(name).get("checkpoint"):
            raise SystemError_(f"{name}: its checkpoint did not reach the worker")
        system = _system(cfg, name, seed, device, ckpt, ckpt_digest)
        cell: Cell = evaluator.evaluate(name, system, task, examples)
        warnings = list(warned)
        rows = pd.concat([score_rows(m, task, examples, s, key, seed) for m, s in cell.scores.items()],
                         ignore_index=True)
        params = info = None
        if cell.answers:
            params = pd.concat([param_rows(m, task, examples, e, seed) for m, e in cell.answers.items()],
                               ignore_index=True)
            info = pd.concat([info_rows(m, task, examples, e, seed) for m, e in cell.answers.items()],
                             ignore_index=True)
        clips = None
        if audio and cell.answers:
            clips = {"examples": examples[:audio], "answers": {m: e[:audio] for m, e in cell.answers.items()}}
        return {"rows": rows, "params": params, "info": info, "not_applicable": cell.not_applicable,
                "n_examples": len(examples), "audio": clips, "warnings": warnings, "where": where(),
                "task_seconds": time.perf_counter() - t0}
    except BaseException as e:
        return {"error": portable(e), "stage": stage, "warnings": warnings, "where": where(),
                "task_seconds": time.perf_counter() - t0}


def sweep_task(cfg, out: str, system: str, opts, storage_url: str, worker: int):
    """One sweep worker: join the study in the shared RDB storage and run its trials (:class:`bench.sweep.study.Sweep`)."""
    from bench.sweep.study import Sweep

    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(text)
        print(f"[sweep worker {worker}] {text}", flush=True)

    try:
        result = Sweep(cfg, Path(out), system, opts, storage_url=storage_url, log=log).run()
        return {"result": result, "log": lines, "where": where()}
    except BaseException as e:
        return {"error": portable(e), "log": lines, "where": where()}
