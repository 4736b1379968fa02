"""Everything MLflow: the experiment, runs and their names, tags, params, metrics and artifacts.

One experiment per benchmark name; one parent run per invocation; one child run per (system, task) cell, with the
same metric keys across systems so that the MLflow UI compares them side by side; training runs are children
too. Runs are driven through ``MlflowClient`` with explicit run ids (no global "active run" state).
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

PARAM_MAX = 500  # characters of one logged param value


def default_uri(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def git_sha() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=5).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def environment(device: str) -> dict:
    """Package versions, Python, platform and the compute device, for reproducibility."""
    from importlib.metadata import PackageNotFoundError, version

    pkgs = {}
    for p in ("afx-bench", "numpy", "scipy", "torch", "pedalboard", "auraloss", "librosa", "mlflow", "optuna",
              "pandas", "soundfile", "soxr", "pyloudnorm", "timbral_models", "tinysoundfont", "espeakng-loader"):
        try:
            pkgs[p] = version(p)
        except PackageNotFoundError:
            pass
    env = {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
           "device": device, "packages": pkgs, "git_sha": git_sha()}
    import os

    env["cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device.startswith("cuda"):
        try:
            import torch

            env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        except Exception as e:
            env["gpu"] = f"unavailable ({e})"
    return env


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            s = json.dumps(v) if not isinstance(v, str) else v
            out[key] = s if len(s) <= PARAM_MAX else s[: PARAM_MAX - 3] + "..."
    return out


class Run:
    """One MLflow run, addressed by id."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker = tracker
        self.id = run_id

    @property
    def client(self):
        return self.tracker.client

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        # NaN (not applicable) is logged too, so every system's run has the same metric keys
        items = [Metric(_key(k), float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.id, metrics=items[i : i + 500])

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.id, str(path), artifact_path)

    def log_dict(self, obj: dict, name: str) -> None:
        self.client.log_dict(self.id, obj, name)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.id, status)

    @property
    def uri(self) -> str:
        return f"runs:/{self.id}"


def _key(k: str) -> str:
    """MLflow keys allow alphanumerics, _ - . space : / only."""
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in k)


class Tracker:
    def __init__(self, out: Path, uri: str = "", experiment: str = "afx-bench"):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.out = Path(out)
        self.uri = uri or default_uri(self.out)
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            artifacts = (self.out / "mlartifacts").resolve()
            artifacts.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts.as_uri())
        else:
            self.experiment_id = exp.experiment_id

    def start(self, name: str, tags: dict | None = None, parent: Run | None = None) -> Run:
        t = {"mlflow.runName": name, **{k: str(v) for k, v in (tags or {}).items()}}
        if parent is not None:
            t["mlflow.parentRunId"] = parent.id
        run = self.client.create_run(self.experiment_id, tags=t, run_name=name)
        return Run(self, run.info.run_id)


def download(uri: str) -> Path:
    """A local path for a ``runs:/...`` (or any MLflow artifact) URI."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
