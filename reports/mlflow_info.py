"""Run metadata from the MLflow store of a results directory: the benchmark (parent) runs, one run per
(system, task) cell, the training runs, and the environment.json artifact of the newest benchmark run.

MLflow takes seconds to import, so the report reads the store in a child process
(``python -m reports.mlflow_info OUT`` prints JSON) while it draws figures. A missing store is not an error: the
report says so and builds without links.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

UI = "http://127.0.0.1:5000"  # where `afx-bench ui --out DIR` serves the store


def run_link(experiment_id: str, run_id: str) -> str:
    return f"{UI}/#/experiments/{experiment_id}/runs/{run_id}"


def read_store(out: Path) -> dict:
    """Everything the report shows about the runs, as plain JSON-able data."""
    out = Path(out)
    db = out / "mlflow.db"
    if not db.is_file():
        return {"available": False, "reason": f"no MLflow store at {db}"}
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
    exps = client.search_experiments()
    info: dict = {"available": True, "uri": f"sqlite:///{db.resolve()}", "ui": UI,
                  "experiments": [{"id": e.experiment_id, "name": e.name} for e in exps],
                  "benchmark": [], "cells": [], "train": [], "environment": None}
    runs = []
    token = None
    ids = [e.experiment_id for e in exps]
    while ids:
        page = client.search_runs(ids, max_results=1000, page_token=token, order_by=["attributes.start_time DESC"])
        runs += list(page)
        token = page.token
        if not token:
            break
    for run in runs:
        tags = run.data.tags
        rec = {"id": run.info.run_id, "experiment": run.info.experiment_id, "name": tags.get("mlflow.runName", ""),
               "status": run.info.status, "start": run.info.start_time, "end": run.info.end_time,
               "link": run_link(run.info.experiment_id, run.info.run_id),
               "parent": tags.get("mlflow.parentRunId", ""), "system": tags.get("system", ""),
               "task": tags.get("task", ""), "git_sha": tags.get("git_sha", ""), "preset": tags.get("preset", ""),
               "error": tags.get("error", "")}
        kind = tags.get("kind", "")
        if kind == "benchmark":
            info["benchmark"].append(rec)
        elif kind == "cell":
            info["cells"].append(rec)
        elif kind == "train":
            info["train"].append(rec)
    for rec in info["benchmark"]:  # newest first
        env = _environment(client, out, rec["id"])
        if env is not None:
            info["environment"] = {"run": rec["id"], "data": env}
            break
    return info


def _environment(client, out: Path, run_id: str):
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as tmp:
            p = client.download_artifacts(run_id, "environment.json", tmp)
            return json.loads(Path(p).read_text())
    except Exception:
        pass
    for p in (out / "mlartifacts").glob(f"**/{run_id}/artifacts/environment.json"):  # the store was moved
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            continue
    return None


class Reader:
    """``read_store`` in a child process: start early, ``result()`` later."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.proc = None
        if (self.out / "mlflow.db").is_file():
            self.proc = subprocess.Popen([sys.executable, "-m", "reports.mlflow_info", str(self.out)],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                         text=True)

    def result(self, timeout: float = 120) -> dict:
        if self.proc is None:
            return {"available": False, "reason": f"no MLflow store at {self.out / 'mlflow.db'}"}
        try:
            stdout, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {"available": False, "reason": f"reading the MLflow store took over {timeout:.0f} s"}
        if self.proc.returncode != 0:
            tail = (stderr or "").strip().splitlines()[-1:] or ["no message"]
            return {"available": False, "reason": f"the MLflow store could not be read: {tail[0]}"}
        try:
            return json.loads(stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"available": False, "reason": "the MLflow store reader printed no result"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m reports.mlflow_info OUT", file=sys.stderr)
        return 2
    info = read_store(Path(argv[0]))
    sys.stdout.write("\n" + json.dumps(info, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
