"""Speed of ``ito_cmaes``: seconds per example and renders per second, per effect and thread count.

    python -m baselines.ito.perf --corpus speech --examples 8 --renders 128 --workers 1,2

Examples come from the named corpus's test split exactly as the harness makes them (1-s segments at 24 kHz by
default). Wall and CPU seconds are both reported, with the load average before and after, because a shared
machine's wall clock says more about its other tenants than about this code.
"""

from __future__ import annotations

import argparse
import os
import time

DEFAULT_EFFECTS = ("gain", "peq4", "peq_comp", "compressor", "distortion", "delay", "reverb", "chorus", "phaser",
                   "bitcrush", "ladder_filter")


def main(argv: list[str] | None = None) -> None:
    from bench.corpora import get_corpus
    from bench.effects import get_effect
    from bench.systems import get_system
    from bench.tasks import Task

    ap = argparse.ArgumentParser(prog="python -m baselines.ito.perf", description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="speech")
    ap.add_argument("--effects", default=",".join(DEFAULT_EFFECTS))
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--renders", type=int, default=128)
    ap.add_argument("--workers", default="1,2", help="thread counts to compare, comma-separated")
    ap.add_argument("--segment", type=float, default=1.0, help="seconds per clip")
    ap.add_argument("--sample-rate", type=int, default=24000)
    ap.add_argument("--components", action="store_true",
                    help="also time the parts of one candidate (CPU ms): render, features, CMA-ES step")
    a = ap.parse_args(argv)

    sr = a.sample_rate
    corpus = get_corpus(a.corpus, sample_rate=sr, seed=0, sources={"train": 24, "valid": 4, "test": 8},
                        seconds=max(4.0, 4 * a.segment))
    tasks = [Task(corpus, get_effect(e), "test", segment_samples=int(a.segment * sr)) for e in a.effects.split(",")]
    data = {t.effect.name: t.examples(a.examples) for t in tasks}
    load0 = os.getloadavg()[0]
    print(f"{a.corpus}, {a.examples} examples x {len(tasks)} effects, {a.segment:g} s at {sr} Hz, "
          f"{a.renders} renders per example, {os.cpu_count()} CPUs, load average {load0:.1f}\n")
    print("| effect | workers | s/example (wall) | CPU s/example | renders/s (wall) |")
    print("| --- | --- | --- | --- | --- |")
    totals = {}
    for w in [int(v) for v in a.workers.split(",")]:
        system = get_system("ito_cmaes", {"renders": a.renders, "workers": w}, sample_rate=sr)
        first = data[tasks[0].effect.name][0]  # warm-up: imports (cma, scipy.stats) and the thread pool
        get_system("ito_cmaes", {"renders": 16, "workers": w}, sample_rate=sr).match(first.input, first.reference,
                                                                                      tasks[0].effect)
        wall = cpu = renders = n = 0.0
        for t in tasks:
            exs = data[t.effect.name]
            system._prior(t.effect)  # the per-effect prior pool is drawn once per run; not part of the per-example rate
            t0 = time.perf_counter()
            est = system.match_examples(exs, t.effect)
            dt = time.perf_counter() - t0
            c = sum(e.info["cpu_seconds"] for e in est)
            r = sum(e.info["renders"] for e in est)
            print(f"| {t.effect.name} | {w} | {dt / len(exs):.3f} | {c / len(exs):.3f} | {r / dt:.0f} |")
            wall, cpu, renders, n = wall + dt, cpu + c, renders + r, n + len(exs)
        totals[w] = (wall / n, cpu / n, renders / wall)
    for w, (s, c, r) in totals.items():
        print(f"| **all** | {w} | {s:.3f} | {c:.3f} | {r:.0f} |")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")
    if a.components:
        components(tasks, data, sr)


def components(tasks, data, sr: int, reps: int = 64) -> None:
    """CPU milliseconds of one candidate's parts, one thread (BLAS held to one thread, as in ``match``)."""
    import numpy as np

    from baselines.ito.features import StyleFeatures
    from baselines.ito.system import one_blas_thread

    feats = StyleFeatures(sr)
    print("\n| part | CPU ms |")
    print("| --- | --- |")
    with one_blas_thread():
        x = data[tasks[0].effect.name][0].input
        batch = np.stack([x] * 8)
        feats.analyse(batch)
        c = time.process_time()
        for _ in range(reps // 8):
            feats.analyse(batch)
        print(f"| features of one clip (batches of 8) | {(time.process_time() - c) / reps * 1e3:.2f} |")
        for t in tasks:
            rng = np.random.default_rng(0)
            ps = rng.uniform(size=(reps, t.effect.n_params))
            t.effect.process_one(x, sr, ps[0])
            c = time.process_time()
            for p in ps:
                t.effect.process_one(x, sr, p)
            print(f"| render: {t.effect.name} | {(time.process_time() - c) / reps * 1e3:.2f} |")
        import cma

        for dim in (3, 12, 23):
            es = cma.CMAEvolutionStrategy(np.full(dim, 0.5), 0.25, {"bounds": [0, 1], "verbose": -9,
                                                                    "verb_log": 0, "verb_disp": 0, "seed": 1})
            c, n = time.process_time(), 0
            for _ in range(20):
                X = es.ask()
                es.tell(X, [float(np.sum(np.square(v))) for v in X])
                n += 1
            print(f"| CMA-ES ask + tell, P = {dim} (popsize {es.popsize}), per generation | "
                  f"{(time.process_time() - c) / n * 1e3:.2f} |")


if __name__ == "__main__":
    main()
