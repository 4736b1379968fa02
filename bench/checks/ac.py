"""`afx-bench check ac`: the batched AudioCommons features (metric ``ac``, :mod:`bench.metrics.timbral`) against
timbral_models 0.4.0 (metric ``ac_ref``), on at least 200 clips.

Clips come from a finished run (``--out DIR``: every stored ``<DIR>/audio/**.wav``, i.e. inputs, references,
targets and each system's outputs of every task kept for the report) or are generated through the harness
(``--preset NAME``: the inputs, references and targets of the preset's test tasks, every corpus and effect set).
When there are more than ``--clips``, an evenly spaced selection over the sorted paths keeps every task and system
represented. The reference's features come through ``ac_ref``'s cache (a rerun costs only the batched side).

Per feature it writes (CSV and Markdown, to ``--report``, default ``<out>/checks`` or ``results/checks``): the
clips compared, mean and max absolute difference, Pearson correlation, for ``reverb`` the agreement rate of the
0/1 decision, and how many clips one side scored and the other refused; and per task (``ac_validation_tasks``)
the largest difference over the seven 0-100 features and the reverb agreement. Targets: mean |diff| <= 0.5
points, r >= 0.99, reverb agreement >= 97 %, and NaN in the same places. Exit status 1 if a feature that ``ac``
computes itself (not listed in ``metrics.ac.reference_features``) misses a target, 2 on a usage error, else 0.

``--speed`` also measures both implementations per core in one worker process set up as the metric's workers are
(spawned; BLAS/OpenMP, numba and torch limited to one thread; the allocator tuned, see ``timbral.tune_allocator``),
as that process's CPU time (``time.process_time``): the batched code on every clip compared (numpy backend, 64
clips per call as the metric, its kernels compiled beforehand) and timbral_models (through ``ac_ref``'s adapter, one
clip at a time, as its workers run it) on ``--speed-clips`` of them, spread evenly over the clips (every corpus and
effect set, as the batched side's). The two alternate in :data:`SPEED_ROUNDS` rounds (a quarter of each side's clips
per round), so that a change in the machine's speed during the measurement (this shared VM's moves by +-25 % from
minute to minute) weighs on both rates alike. The last line printed is
``speed: X clips/s per core, timbral_models Y clips/s, Zx``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from bench.checks import Check

MEAN_ABS_MAX = 0.5
CORR_MIN = 0.99
REVERB_AGREE_MIN = 0.97
SPEED_ROUNDS = 4  # alternations of the two sides in --speed


def _stored_clips(out: Path) -> list[tuple[str, np.ndarray, int]]:
    import soundfile as sf

    paths = sorted((out / "audio").rglob("*.wav"))
    clips = []
    for p in paths:
        x, sr = sf.read(str(p), dtype="float32", always_2d=True)
        clips.append((str(p.relative_to(out)), x.mean(axis=1), int(sr)))
    return clips


def generated_clips(preset: str, per_task: int, sets: list[str]) -> list[tuple[str, np.ndarray, int]]:
    """(name, clip, rate) of the input, reference and target of the first ``per_task`` examples of every test task
    of ``preset``, named ``<task id>/<index>/<kind>``."""
    from bench.config import load_config
    from bench.plan import Plan

    cfg = load_config(preset, sets=sets or None)
    plan = Plan.build(cfg, device="cpu")
    clips = []
    for task in plan.test:
        for ex in task.examples(per_task):
            for kind in ("input", "reference", "target"):
                clips.append((f"{task.id}/{ex.index:04d}/{kind}", np.asarray(getattr(ex, kind), np.float32),
                              int(task.sample_rate)))
    return clips


def _task_of(name: str) -> str:
    """The task a clip belongs to: ``<task id>/<index>/<kind>`` for generated clips, the folder for stored ones."""
    parts = name.split("/")
    return "/".join(parts[:-2]) if len(parts) > 2 and parts[-2].isdigit() else str(Path(name).parent)


def per_task(names: list[str], new: np.ndarray, ref: np.ndarray, features) -> list[dict]:
    """Per task: clips, the largest |diff| over the 0-100 features, reverb agreement, NaN mismatches."""
    rows = []
    tasks = [_task_of(n) for n in names]
    cont = [j for j, f in enumerate(features) if f != "reverb"]
    rv = list(features).index("reverb") if "reverb" in features else None
    for task in dict.fromkeys(tasks):
        idx = [i for i, t in enumerate(tasks) if t == task]
        a, b = new[idx], ref[idx]
        both = np.isfinite(a) & np.isfinite(b)
        d = np.abs(np.where(both, a - b, 0.0))[:, cont]
        row = {"task": task, "clips": len(idx), "max_abs_diff": float(d.max()) if d.size else math.nan,
               "nan_mismatch": int((np.isfinite(a) != np.isfinite(b)).sum())}
        if rv is not None:
            ok = both[:, rv]
            row["reverb_agreement"] = float(np.mean(a[ok, rv] == b[ok, rv])) if ok.any() else math.nan
        rows.append(row)
    return rows


def select_evenly(clips: list, n: int) -> list:
    """``n`` of ``clips`` evenly spaced over the list (all of them for ``n`` <= 0), so that every task keeps some."""
    if n <= 0 or len(clips) <= n:
        return clips
    idx = np.unique(np.linspace(0, len(clips) - 1, n).round().astype(int))
    return [clips[i] for i in idx]


def compare(new: np.ndarray, ref: np.ndarray, features) -> list[dict]:
    """Per-feature agreement of two (clips x features) arrays."""
    rows = []
    for j, f in enumerate(features):
        a, b = new[:, j], ref[:, j]
        both = np.isfinite(a) & np.isfinite(b)
        d = np.abs(a[both] - b[both])
        row = {"feature": f, "clips": int(both.sum()), "nan_mismatch": int((np.isfinite(a) != np.isfinite(b)).sum()),
               "mean_abs_diff": float(d.mean()) if d.size else math.nan,
               "max_abs_diff": float(d.max()) if d.size else math.nan}
        if f == "reverb":
            row["pearson_r"] = math.nan
            row["agreement"] = float(np.mean(a[both] == b[both])) if both.any() else math.nan
            ok = row["agreement"] >= REVERB_AGREE_MIN
        else:
            if both.sum() > 2 and np.std(a[both]) > 0 and np.std(b[both]) > 0:
                row["pearson_r"] = float(np.corrcoef(a[both], b[both])[0, 1])
            else:  # constant values: agreement is exactness
                row["pearson_r"] = 1.0 if both.any() and np.all(d == 0) else math.nan
            row["agreement"] = math.nan
            ok = row["mean_abs_diff"] <= MEAN_ABS_MAX and row["pearson_r"] >= CORR_MIN
        row["passed"] = bool(ok and row["nan_mismatch"] == 0 and row["clips"] > 0)
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4g}"
    return str(v)


FEATURE_COLUMNS = ["feature", "source", "clips", "mean_abs_diff", "max_abs_diff", "pearson_r", "agreement",
                   "nan_mismatch", "passed"]
TASK_COLUMNS = ["task", "clips", "max_abs_diff", "reverb_agreement", "nan_mismatch"]


def _markdown(rows: list[dict], cols: list[str]) -> list[str]:
    return (["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            + ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows])


def write_tables(rows: list[dict], path: Path, header: str, tasks: list[dict] | None = None) -> tuple[Path, Path]:
    """``ac_validation.csv`` (and ``ac_validation_tasks.csv`` with ``tasks``) and one Markdown file of both."""
    import csv

    path.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = path / "ac_validation.csv", path / "ac_validation.md"
    tables = [(csv_path, rows, FEATURE_COLUMNS)] + ([(path / "ac_validation_tasks.csv", tasks, TASK_COLUMNS)]
                                                   if tasks else [])
    for p, rs, cols in tables:
        with open(p, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in rs:
                w.writerow({c: r.get(c) for c in cols})
    lines = [header, ""] + _markdown(rows, FEATURE_COLUMNS)
    if tasks:
        lines += ["", "Per task (largest |diff| over the seven 0-100 features):", ""] + _markdown(tasks, TASK_COLUMNS)
    md_path.write_text("\n".join(lines) + "\n")
    return csv_path, md_path


class AcCheck(Check):
    help = "compare the batched AudioCommons features (ac) with timbral_models (ac_ref) on >= 200 clips"

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        src = p.add_mutually_exclusive_group()
        src.add_argument("--out", type=Path, help="a run's results directory: compare on its stored audio")
        src.add_argument("--preset", default="quick",
                         help="generate clips from this preset's test tasks (default: quick)")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="config override for --preset (repeatable)")
        p.add_argument("--clips", type=int, default=240, help="clips to compare (at least 200; default 240)")
        p.add_argument("--per-task", type=int, default=4,
                       help="with --preset: examples per test task (x3 clips: input, reference, target)")
        p.add_argument("--report", type=Path, help="where to write ac_validation.csv/.md")
        p.add_argument("--workers", type=int, default=0, help="reference processes (0: one per core)")
        p.add_argument("--allow-few", action="store_true", help="accept fewer than 200 clips (for tests)")
        p.add_argument("--speed", action="store_true",
                       help="also measure clips per second per core of both implementations (CPU time, one thread)")
        p.add_argument("--speed-clips", type=int, default=24,
                       help="with --speed: clips timed with timbral_models, spread over the tasks")

    def __call__(self, args: argparse.Namespace) -> int:
        from bench.metrics.audiocommons import FEATURES, AudioCommonsRef
        from bench.metrics.timbral import extract, warm

        if args.out is not None:
            if not (args.out / "audio").is_dir():
                print(f"afx-bench check ac: no stored audio under {args.out / 'audio'}", file=sys.stderr)
                return 2
            clips = _stored_clips(args.out)
            source = f"the stored audio of {args.out}"
        else:
            clips = generated_clips(args.preset, args.per_task, args.sets)
            source = f"the test tasks of preset {args.preset} ({args.per_task} examples x input/reference/target)"
        clips = select_evenly(clips, args.clips)
        if len(clips) < 200 and not args.allow_few:
            print(f"afx-bench check ac: only {len(clips)} clips (at least 200 needed; more examples per task, or "
                  f"--allow-few)", file=sys.stderr)
            return 2
        ref_features = _reference_features(args)
        n = len(clips)
        new = np.full((n, len(FEATURES)), np.nan)
        ref = np.full((n, len(FEATURES)), np.nan)
        by_rate: dict[int, list[int]] = {}
        for i, (_, _, sr) in enumerate(clips):
            by_rate.setdefault(sr, []).append(i)
        warm()
        t_new = t_ref = 0.0
        for sr, idx in by_rate.items():
            xs = [clips[i][1] for i in idx]
            t0 = time.perf_counter()
            for s in range(0, len(xs), 64):
                v, _ = extract([np.asarray(x, np.float64) for x in xs[s:s + 64]], sr)
                new[idx[s:s + 64]] = v
            t_new += time.perf_counter() - t0
            m = AudioCommonsRef({"workers": args.workers}, sample_rate=sr)
            try:
                t0 = time.perf_counter()
                recs = m.features(xs)
                t_ref += time.perf_counter() - t0
            finally:
                m.close()
            for i, rec in zip(idx, recs, strict=True):
                ref[i] = [rec["features"][f] if math.isfinite(rec["features"][f]) else np.nan for f in FEATURES]
        rows = compare(new, ref, FEATURES)
        for r in rows:
            r["source"] = "timbral_models (reference_features)" if r["feature"] in ref_features else "batched"
        header = (f"# `afx-bench check ac`: batched AudioCommons features vs timbral_models 0.4.0\n\n"
                  f"{n} clips from {source}. Targets: mean |diff| <= {MEAN_ABS_MAX} points, Pearson r >= "
                  f"{CORR_MIN}, reverb agreement >= {REVERB_AGREE_MIN:.0%}, NaN in the same places. Batched: "
                  f"{t_new:.1f} s; reference: {t_ref:.1f} s (wall, including any cached reference features).")
        both = np.isfinite(new) & np.isfinite(ref)
        cont = [j for j, f in enumerate(FEATURES) if f != "reverb"]
        largest = float(np.abs(np.where(both, new - ref, 0.0))[:, cont].max())
        header += f" Largest |diff| over the 0-100 features and all clips: {largest:.3g} points."
        report = args.report or ((args.out / "checks") if args.out is not None else Path("results") / "checks")
        tasks = per_task([c[0] for c in clips], new, ref, FEATURES)
        csv_path, md_path = write_tables(rows, report, header, tasks)
        print(md_path.read_text())
        print(f"written: {csv_path}, {md_path}")
        failed = [r["feature"] for r in rows if not r["passed"] and r["feature"] not in ref_features]
        if failed:
            print(f"FAIL: {', '.join(failed)} (computed by the batched code) missed a target", file=sys.stderr)
        if args.speed:
            speed = measure_speed(clips, max(1, args.speed_clips), per_feature=True)
            print(f"CPU ms per clip, one feature at a time (each with the shared front end, {speed['front']:.1f} ms): "
                  + ", ".join(f"{f} {ms:.1f}" for f, ms in speed["features"].items()))
            print(speed_line(speed["batched"], speed["reference"]))
        return 1 if failed else 0


def one_thread():
    """A context in which BLAS/OpenMP, numba and torch (if imported) use one thread: per-core timing."""
    import contextlib

    from threadpoolctl import threadpool_limits

    stack = contextlib.ExitStack()
    stack.enter_context(threadpool_limits(1))
    for name in ("numba", "torch"):
        mod = sys.modules.get(name)
        if mod is not None:
            stack.callback(mod.set_num_threads, mod.get_num_threads())
            mod.set_num_threads(1)
    return stack


def measure_speed(clips: list, reference_clips: int, per_feature: bool = False) -> dict:
    """Clips per CPU-second of the batched code (``batched``, every clip) and of timbral_models (``reference``,
    ``reference_clips`` spread evenly over ``clips``), the two alternating in one worker process set up as the
    metric's (:func:`bench.metrics.audiocommons.init_worker`); with ``per_feature``, also each feature's CPU milliseconds
    per clip computed alone (``features``; each includes the shared front end, ``front``: loudness normalisation
    and resampling)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from bench.metrics.audiocommons import init_worker

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=init_worker) as pool:
        return pool.submit(_speeds, clips, reference_clips, per_feature).result()


def _speeds(clips: list, reference_clips: int, per_feature: bool) -> dict:
    from bench.metrics.audiocommons import FEATURES, timbral_features
    from bench.metrics.timbral import extract, warm

    def cpu(batches, features=FEATURES) -> float:
        c0 = time.process_time()
        for sr, xs in batches:
            extract(xs, sr, features)
        return time.process_time() - c0

    def reference_cpu(some) -> float:
        c0 = time.process_time()
        for _, x, sr in some:
            timbral_features(np.asarray(x, np.float64), sr)
        return time.process_time() - c0

    by_rate: dict[int, list] = {}
    for _, x, sr in clips:
        by_rate.setdefault(sr, []).append(np.asarray(x, np.float64))
    batches = [(sr, xs[s:s + 64]) for sr, xs in by_rate.items() for s in range(0, len(xs), 64)]
    rounds = min(SPEED_ROUNDS, len(batches))
    some = select_evenly(clips, reference_clips)
    warm()
    out: dict = {}
    with one_thread():
        extract(batches[0][1][:2], batches[0][0])  # first calls: imports, caches
        timbral_features(np.asarray(some[0][1], np.float64), some[0][2])
        t_new = t_ref = 0.0
        for r in range(rounds):  # alternating, so that both sides see the same machine
            t_new += cpu(batches[r::rounds])
            t_ref += reference_cpu(some[r::rounds])
        out["batched"] = len(clips) / t_new
        out["reference"] = len(some) / t_ref
        if per_feature:
            out["front"] = 1000 * cpu(batches, ()) / len(clips)
            out["features"] = {f: 1000 * cpu(batches, (f,)) / len(clips) for f in FEATURES}
    return out


def speed_line(batched: float, reference: float) -> str:
    return f"speed: {batched:.1f} clips/s per core, timbral_models {reference:.2f} clips/s, {batched / reference:.1f}x"


def _reference_features(args) -> set[str]:
    """The features the configured ``ac`` takes from timbral_models (metrics.ac.reference_features)."""
    try:
        from bench.config import load_config

        cfg = load_config(args.preset if args.out is None else "quick", sets=args.sets or None)
        sec = cfg.metrics.get("ac", {}) if isinstance(getattr(cfg, "metrics", None), dict) else {}
        return set(sec.get("reference_features", []))
    except Exception:
        return set()


CHECKS = {"ac": AcCheck()}
