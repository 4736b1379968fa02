"""Training throughput of ``oneshot_eq`` with a preset's settings (BENCHMARKS.md, "One-shot EQ").

    python -m baselines.oneshot_eq.throughput [--preset quick] [--steps 100] [--render 256] [--device cpu]

Two figures, each through the system's own ``fit`` on the preset's ``peq4`` training task (first seen corpus):
rendering training examples (the fixed pool, by DataLoader worker processes: examples/s of wall time), and the
optimisation loop alone (a pool of one batch, ``steps`` steps after a warm-up fit: examples/s of wall time and the
process's CPU seconds per step, the steadier figure on a shared machine). The loop is timed with the preset's
``torch_threads`` and with torch's default thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def measure(preset: str = "quick", steps: int = 100, render: int = 256, device: str = "cpu") -> dict:
    import torch

    from bench.config import load_config
    from bench.corpora import get_corpus
    from bench.effects import default_workers, get_effect
    from bench.systems import FitContext, get_system
    from bench.tasks import Task

    cfg = load_config(preset, systems=["oneshot_eq"])
    d = cfg.data
    corpus = get_corpus(cfg.train_corpora()[0], sample_rate=cfg.run.sample_rate, seed=cfg.run.seed,
                        sources={"train": d.train_sources, "valid": d.valid_sources, "test": d.test_sources},
                        seconds=d.source_seconds)
    task = Task(corpus, get_effect("peq4"), "train", segment_samples=cfg.segment_samples, seed=cfg.run.seed)
    workers = cfg.run.workers or default_workers()
    base = {**cfg.system_settings("oneshot_eq"), "valid_examples": 0}
    threads = int(base.get("torch_threads", 0))
    out = {"preset": preset, "device": device, "segment_samples": cfg.segment_samples, "workers": workers,
           "load_average_before": os.getloadavg()[0]}

    def fit(**over):
        s = get_system("oneshot_eq", {**base, **over}, sample_rate=cfg.run.sample_rate, device=device)
        cpu0 = time.process_time()
        s.fit([task], FitContext(workers=workers, progress=False, seed=cfg.run.seed))
        return s.train_info, time.process_time() - cpu0

    b = int(base.get("batch_size", 16))
    fit(steps=2, train_examples=b)  # sources rendered and cached, kernels warm
    info, _ = fit(steps=1, train_examples=render)
    out["render"] = {"examples": render, "seconds": info["render_seconds"],
                     "examples_per_second": round(render / info["render_seconds"], 1)}
    for label, n in (("preset_threads", threads), ("default_threads", 0)):
        info, cpu = fit(steps=steps, train_examples=b, torch_threads=n)
        out[label] = {"torch_threads": n or torch.get_num_threads(), "batch_size": b, "steps": steps,
                      "loop_seconds": info["loop_seconds"], "examples_per_second": info["examples_per_second"],
                      "cpu_seconds_per_step": round(cpu / steps, 4)}
    out["load_average_after"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--render", type=int, default=256, help="training examples rendered for the render figure")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    print(json.dumps(measure(a.preset, a.steps, a.render, a.device), indent=1))


if __name__ == "__main__":
    main()
