"""`afx-bench sweep --executor ray --workers N`: each system's study worked by N Ray tasks sharing one Optuna storage.

Every task is one sweep worker (:func:`sweep_worker`, i.e. :class:`bench.sweep.study.Sweep` as `afx-bench sweep`
runs it), with the system's ``resources``; they coordinate through the RDB storage, exactly as N processes started
by hand do. On a cluster of more than one node the storage must be a database every node reaches (PostgreSQL): a
SQLite or journal file would be a separate file on each node's disk, each node running a study of its own, so the
driver refuses them before any trial runs (and, for the same reason, an MLflow store in a file). The driver checks
everything first, creates the storage's tables, and at the end writes ``best_params.toml`` and the trials table
from the study, so the outcome lands on the driver's machine. A task whose worker is lost is resubmitted (at most
``max_retries`` times); the trial it held is failed by the storage's heartbeat check. Ctrl-C cancels the tasks,
which mark their running trials interrupted, as a local Ctrl-C does.
"""

from __future__ import annotations

from pathlib import Path

from bench.config import ConfigError
from bench.executors import task_options

CANCEL_WAIT_S = 30.0  # after Ctrl-C, how long the driver waits for the workers to leave the study consistent
FILE_STORES = ("sqlite:", "journal:")  # stores that live in one machine's file


def sweep_worker(cfg, out: str, system: str, opts, storage_url: str, worker: int) -> dict:
    """One sweep worker: join the study in the shared storage and run its trials; returns the result and log."""
    from bench.jobs import portable, where
    from bench.sweep.study import Sweep

    lines: list[str] = []

    def log(text: str) -> None:
        lines.append(text)
        print(f"[sweep worker {worker}] {text}", flush=True)

    try:
        result = Sweep(cfg, Path(out), system, opts, storage_url=storage_url, log=log).run()
        return {"result": result, "log": lines, "where": where()}
    except Exception as e:
        return {"error": portable(e), "log": lines, "where": where()}


def check_shared_stores(cfg, storage_url: str, n_nodes: int) -> None:
    """On more than one node, the Optuna storage and the MLflow store must be servers every node reaches."""
    if n_nodes <= 1:
        return
    from bench.sweep.storage import redact

    if storage_url.startswith(FILE_STORES):
        raise ConfigError(f"--storage {redact(storage_url)}: a file on each node's own disk, so each of the "
                          f"{n_nodes} nodes of this Ray cluster would run a study of its own; give a database every "
                          "node reaches, e.g. --storage postgresql://USER:PASSWORD@HOST:5432/DB (docs/scaling.md)")
    uri = cfg.tracking.uri
    if cfg.tracking.enabled and (not uri or uri.startswith(("sqlite:", "file:", "/", "."))):
        raise ConfigError(f"tracking.uri = {uri or 'sqlite:///<out>/mlflow.db'}: a file on each node's own disk, "
                          f"so the trials of the {n_nodes} nodes would be logged apart; give a tracking server "
                          "(--tracking-uri http://HOST:5000) or --set tracking.enabled=false (docs/scaling.md)")


def sweep_on_ray(cfg, out, sweeps: list, storage_url: str, workers: int, log=print) -> list:
    """Run every sweep's study on ``workers`` Ray tasks each; returns one SweepResult per sweep."""
    from bench.executors.cluster import RayExecutor, nodes
    from bench.sweep.options import SweepResult
    from bench.sweep.storage import redact

    executor = RayExecutor(cfg.run.executor, log)
    check_shared_stores(cfg, storage_url, len(nodes(executor.ray)))
    done: dict[str, list] = {s.name: [] for s in sweeps}
    for s in sweeps:
        log(f"sweep {s.name}: {workers} Ray worker(s) on study {s.study_name!r} in {redact(storage_url)}")
        options, retries = task_options(cfg, s.name, "train")
        for i in range(workers):
            executor.submit((s.name, i), sweep_worker, cfg, str(out), s.name, s.opts, storage_url, i,
                            name=f"sweep:{s.name}:{i}", options=options, retries=retries)
    try:
        for o in executor.outcomes():
            (name, i), result = o.key, o.value
            if isinstance(result, BaseException):
                result = {"error": result}
            if "error" in result:
                e = result["error"]
                log(f"sweep {name} worker {i} failed: {type(e).__name__}: {e}")
            else:
                done[name].append(result["result"])
    except KeyboardInterrupt:
        executor.cancel(wait_s=CANCEL_WAIT_S)
        raise
    finally:
        executor.close()
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
