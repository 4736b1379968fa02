"""`afx-bench sweep --executor ray --workers N`: each system's study worked by N Ray tasks sharing one Optuna storage.

Every task is one sweep worker (:func:`bench.executors.remote.sweep_task`, i.e. :class:`bench.sweep.study.Sweep`
as `afx-bench sweep` runs it), with the system's ``resources``; they coordinate through the RDB storage
(PostgreSQL across machines; SQLite or a journal file on one), exactly as N processes started by hand do. The
driver checks everything first, creates the storage's tables, and at the end writes ``best_params.toml`` and the
trials table from the study, so the outcome lands on the driver's machine without a shared filesystem. A task
whose worker is lost is resubmitted (at most ``max_retries`` times); the trial it held is failed by the storage's
heartbeat check. Ctrl-C cancels the tasks, which mark their running trials interrupted, as a local Ctrl-C does.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.executors import connect, lost_worker, task_options
from bench.executors import remote as rm

CANCEL_WAIT_S = 30.0  # after Ctrl-C, how long the driver waits for the workers to leave the study consistent


def sweep_on_ray(cfg, out, sweeps: list, storage_url: str, workers: int, log=print) -> list:
    """Run every sweep's study on ``workers`` Ray tasks each; returns one SweepResult per sweep."""
    from bench.sweep.options import SweepResult
    from bench.sweep.storage import redact

    ray = connect(cfg.run.executor, log)
    pending: dict = {}
    done: dict[str, list] = {s.name: [] for s in sweeps}

    def submit(s, i: int, attempt: int) -> None:
        options, retries = task_options(cfg, s.name, "train")
        fn = ray.remote(rm.sweep_task).options(name=f"sweep:{s.name}:{i}", max_retries=0, **options)
        ref = fn.remote(cfg, str(out), s.name, s.opts, storage_url, i)
        pending[ref] = (s, i, attempt + 1, retries)

    for s in sweeps:
        log(f"sweep {s.name}: {workers} Ray worker(s) on study {s.study_name!r} in {redact(storage_url)}")
        for i in range(workers):
            submit(s, i, 0)
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                s, i, attempt, retries = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:
                    if lost_worker(ray, e) and attempt <= retries:
                        log(f"ray: sweep {s.name} worker {i}: worker lost ({type(e).__name__}); retry "
                            f"{attempt}/{retries}")
                        submit(s, i, attempt)
                        continue
                    result = {"error": e}
                if "error" in result:
                    e = result["error"]
                    log(f"sweep {s.name} worker {i} failed: {type(e).__name__}: {e}")
                else:
                    done[s.name].append(result["result"])
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=False)
        deadline = time.monotonic() + CANCEL_WAIT_S
        while pending and time.monotonic() < deadline:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
            for ref in ready:
                pending.pop(ref, None)
        raise
    results = []
    for s in sweeps:
        study = _load(s)
        best_params = s.write_best(study)
        _trials_table(s, study, out)
        best = s.best(study)
        mine = sum(r.mine for r in done[s.name])
        results.append(SweepResult(s.name, s.study_name, redact(storage_url), s.states(study), mine, best_params,
                                   list(best.values) if best else None, best.number if best else None))
    return results


def _load(s):
    import optuna

    return optuna.load_study(study_name=s.study_name, storage=s.storage)


def _trials_table(s, study, out) -> None:
    from bench.results import atomic_csv, slug

    path = Path(out) / "sweeps" / slug(s.study_name, default="study") / "trials.csv"
    try:
        atomic_csv(study.trials_dataframe(), path)
    except Exception as e:
        s.log(f"warning: trials table not written: {type(e).__name__}: {e}")
