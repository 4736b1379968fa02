"""`python -m bench.perf --json OUT`: how fast is each stage of the harness on this machine?

Measures, per stage: corpus generation (seconds of audio per second), effect rendering per effect (real-time
factor with 1 thread and with all cores), example generation and the training DataLoader (examples per second),
each metric (clips per second, on the CPU and the GPU when there is one), training throughput of every trainable
system (examples per second, as its training loop logs it), and end-to-end wall time and peak memory of
`afx-bench run` on a preset (in a child process). Results are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _timeit(fn, min_seconds: float = 0.5, max_reps: int = 50) -> float:
    """Seconds per call (median of repeated calls, at least ``min_seconds`` of work)."""
    fn()  # warm-up
    times = []
    t_end = time.perf_counter() + min_seconds
    while len(times) < max_reps and (time.perf_counter() < t_end or len(times) < 3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def machine() -> dict:
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def bench_corpora(sr: int, seconds: float) -> dict:
    from bench.corpora import get_corpus

    out = {}
    with tempfile.TemporaryDirectory() as d:
        for name in ("speech", "music"):
            c = get_corpus(name, sample_rate=sr, seed=0, sources={"train": 4, "valid": 1, "test": 1},
                           seconds=seconds, cache=Path(d))
            c.load_source(c.specs("valid")[0])  # warm-up: imports, library start-up
            specs = c.specs("train")
            t0 = time.perf_counter()
            for s in specs:
                c.load_source(s)
            dt = time.perf_counter() - t0
            out[name] = {"audio_seconds_per_second": len(specs) * seconds / dt, "sources": len(specs)}
    return out


def bench_effects(sr: int, seconds: float, workers: int) -> dict:
    from bench.effects import EFFECTS, get_effect, probe_signal

    x = probe_signal(sr, seconds)
    batch = np.stack([x] * max(2, 2 * workers))
    out = {}
    for name in EFFECTS.names():
        e = get_effect(name)
        if e.n_params == 0:  # hidden processing: one drawn recipe, one clip at a time
            setting = e.draw_setting(np.random.default_rng(0), sr)
            t1 = _timeit(lambda e=e, st=setting: e.apply(x, sr, st))
            out[name] = {"rtf_1_thread": seconds / t1}
            continue
        rng = np.random.default_rng(0)
        ps = np.stack([e.sample(rng, sr) for _ in range(len(batch))])
        t1 = _timeit(lambda e=e, p=ps: e.process(x, sr, p[0]))
        tn = _timeit(lambda e=e, p=ps: e.process(batch, sr, p, workers=workers))
        out[name] = {"rtf_1_thread": seconds / t1, "rtf_all_cores": len(batch) * seconds / tn,
                     "speedup": (t1 * len(batch)) / tn}
    return out


def bench_examples(sr: int, seconds: float, workers: int) -> dict:
    from bench.corpora import get_corpus
    from bench.effects import get_effect
    from bench.tasks import Task
    from bench.torchdata import loader

    c = get_corpus("speech", sample_rate=sr, seed=0, sources={"train": 8, "valid": 1, "test": 1},
                   seconds=max(4.0, 3 * seconds))
    tasks = [Task(c, get_effect(e), "train", segment_samples=int(seconds * sr)) for e in ("peq4", "reverb")]
    for t in tasks:
        t.example(0)  # sources cached
    n = 32
    t0 = time.perf_counter()
    for i in range(n):
        tasks[i % 2].example(1000 + i)
    serial = n / (time.perf_counter() - t0)
    res = {"examples_per_second_1_process": serial}
    for w in sorted({0, workers}):
        dl = loader(tasks, 4 * n, batch_size=8, workers=w, offset=5000)
        t0 = time.perf_counter()
        count = sum(len(b["input"]) for b in dl)
        res[f"dataloader_examples_per_second_workers_{w}"] = count / (time.perf_counter() - t0)
    return res


def bench_metrics(sr: int, seconds: float, device: str, n: int = 16) -> dict:
    from bench.effects import get_effect, probe_signal
    from bench.metrics import METRICS, get_metric
    from bench.systems import Estimate
    from bench.tasks import Example

    x = probe_signal(sr, seconds)
    e = get_effect("peq4")
    rng = np.random.default_rng(0)
    exs, ests = [], []
    for i in range(n):
        p, q = e.sample(rng, sr), e.sample(rng, sr)
        tgt = e.process(x, sr, p)
        exs.append(Example("speech/peq4/test", i, "s", x, tgt, tgt, p, {}, tuple(e.param_names)))
        ests.append(Estimate(q, e.process(x, sr, q)))
    out = {}
    for name in METRICS.names():
        try:
            m = get_metric(name, sample_rate=sr, device=device)
        except Exception as err:  # e.g. an optional package missing
            out[name] = {"error": str(err)}
            continue
        k = 4 if name == "ac" else n
        dt = _timeit(lambda m=m, k=k: m.score_batch(ests[:k], exs[:k]), min_seconds=0.3, max_reps=5)
        out[name] = {"clips_per_second": k / dt, "device": device}
    return out


class _Capture:
    """A stand-in for an MLflow run that keeps what a training loop logs."""

    def __init__(self):
        self.metrics: dict[str, float] = {}

    def log_metrics(self, metrics, step=None):
        self.metrics.update(metrics)


def bench_training(preset: str, device: str, workers: int) -> dict:
    from bench.cell import build_system, fit_system
    from bench.config import load_config
    from bench.plan import Plan
    from bench.systems import SYSTEMS

    cfg = load_config(preset, sets=["run.progress=false", f"run.workers={workers}"],
                      effects=["peq_comp", "peq4", "delay"])
    plan = Plan.build(cfg, device)
    out = {}
    for name in SYSTEMS.names():
        try:
            cls = SYSTEMS.get(name)
        except Exception as err:
            out[name] = {"error": str(err)}
            continue
        if not getattr(cls, "trainable", False):
            continue
        try:
            system = build_system(name, cfg, plan.device)
            cap = _Capture()
            wall = fit_system(system, plan, run=cap, progress=False)
        except Exception as err:
            out[name] = {"error": f"{type(err).__name__}: {err}"}
            continue
        eps = {k: v for k, v in cap.metrics.items() if k.endswith(("examples_per_second", "effect_fraction"))}
        out[name] = {"fit_seconds": wall, **eps}
    return out


def bench_end_to_end(preset: str, workers: int, cold: bool = False) -> dict:
    """``afx-bench run --preset P`` in a subprocess; ``cold``: with an empty cache dir, as on a fresh machine
    (corpora, examples and AudioCommons features all made anew), else with the user's cache."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "bench", "run", "--preset", preset, "--out", d, "--set", "run.progress=false"]
        env = dict(os.environ, AFX_BENCH_CACHE=str(Path(d) / "cache")) if cold else None
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        fails = 0
        f = Path(d) / "failures.csv"
        if f.exists():
            fails = max(0, len(f.read_text().strip().splitlines()) - 1)
    return {"preset": preset, "cold_cache": cold, "wall_seconds": wall, "peak_rss_mib": peak_kib / 1024, "returncode": proc.returncode,
            "failed_cells": fails, "stderr_tail": proc.stderr[-500:] if proc.returncode else ""}


STAGES = ("corpora", "effects", "examples", "metrics", "training", "e2e")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write results here")
    p.add_argument("--stages", default=",".join(STAGES[:-1]), help=f"comma-separated from {', '.join(STAGES)}")
    p.add_argument("--preset", default="smoke", help="preset for training throughput and the end-to-end run")
    p.add_argument("--sample-rate", type=int, default=24000)
    p.add_argument("--seconds", type=float, default=3.0, help="clip length for effects and metrics")
    p.add_argument("--device", default="auto")
    p.add_argument("--cold", action="store_true", help="e2e: start from an empty cache dir, as a fresh machine does")
    args = p.parse_args(argv)
    from bench.effects import default_workers
    from bench.plan import resolve_device

    device = resolve_device(args.device)
    workers = default_workers()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        p.error(f"unknown stage(s) {bad}; valid: {', '.join(STAGES)}")
    results = {"machine": machine(), "device": device, "workers": workers, "args": vars(args)}
    for s in stages:
        t0 = time.perf_counter()
        if s == "corpora":
            results[s] = bench_corpora(args.sample_rate, 4.0)
        elif s == "effects":
            results[s] = bench_effects(args.sample_rate, args.seconds, workers)
        elif s == "examples":
            results[s] = bench_examples(args.sample_rate, 1.0, workers)
        elif s == "metrics":
            results[s] = {"cpu": bench_metrics(args.sample_rate, args.seconds, "cpu")}
            if device.startswith("cuda"):
                results[s]["cuda"] = bench_metrics(args.sample_rate, args.seconds, device, n=256)
        elif s == "training":
            results[s] = bench_training(args.preset, device, workers)
        elif s == "e2e":
            results[s] = bench_end_to_end(args.preset, workers, cold=args.cold)
        print(f"{s} ({time.perf_counter() - t0:.1f} s):\n{json.dumps(results[s], indent=1)}", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
