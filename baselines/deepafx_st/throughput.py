"""Training throughput of the two DeepAFx-ST systems with a preset's settings (BENCHMARKS.md).

    python -m baselines.deepafx_st.throughput [--preset quick] [--steps 20] [--device cpu]

Builds the preset's ``peq_comp`` training task on its first seen corpus, renders a pool of two batches, then times
``steps`` optimisation steps (after two warm-up steps) through the same ``train_loop`` the systems use. Reports
examples per second of wall time and the process's CPU seconds per step (a figure that a busy machine inflates
less than wall time).
"""

from __future__ import annotations

import argparse
import json
import time


def measure(preset: str = "quick", steps: int = 20, device: str = "cpu") -> dict:
    import torch

    from bench.config import load_config
    from bench.corpora import get_corpus
    from bench.effects import get_effect
    from bench.systems import FitContext, get_system
    from bench.tasks import Task

    cfg = load_config(preset, systems=["deepafx_st_autodiff", "deepafx_st_spsa"])
    d = cfg.data
    corpus = get_corpus(cfg.train_corpora()[0], sample_rate=cfg.run.sample_rate, seed=cfg.run.seed,
                        sources={"train": d.train_sources, "valid": d.valid_sources, "test": d.test_sources},
                        seconds=d.source_seconds)
    task = Task(corpus, get_effect("peq_comp"), "train", segment_samples=cfg.segment_samples, seed=cfg.run.seed)
    out = {"preset": preset, "device": device, "segment_samples": cfg.segment_samples,
           "torch_threads_default": torch.get_num_threads()}
    for name in ("deepafx_st_autodiff", "deepafx_st_spsa"):
        conf = cfg.system_settings(name)
        b = int(conf.get("batch_size", 6))
        conf.update(steps=2, valid_examples=0, train_examples=2 * b)  # a tiny pool: the loop, not the data, is timed
        warm = get_system(name, conf, sample_rate=cfg.run.sample_rate, device=device)
        warm.fit([task], FitContext(workers=1, progress=False, seed=cfg.run.seed))  # compiles, caches, warms up
        conf["steps"] = steps
        s = get_system(name, conf, sample_rate=cfg.run.sample_rate, device=device)
        cpu0 = time.process_time()
        s.fit([task], FitContext(workers=1, progress=False, seed=cfg.run.seed))
        cpu = time.process_time() - cpu0
        st = s.train_stats
        out[name] = {"batch_size": b, "steps": st["steps"], "loop_seconds": round(st["seconds"], 2),
                     "examples_per_second": round(st["examples_per_second"], 2),
                     "cpu_seconds_per_step": round(cpu / steps, 3), "torch_threads": s.cfg.torch_threads}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    print(json.dumps(measure(a.preset, a.steps, a.device), indent=1))


if __name__ == "__main__":
    main()
