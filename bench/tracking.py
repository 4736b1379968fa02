"""Everything MLflow: the experiment, runs and their names, tags, params, metrics and artifacts.

One experiment per benchmark name; one parent run per invocation; one child run per (system, task) cell, with the
same metric keys across systems so that the MLflow UI compares them side by side; training runs are children
too. Runs are driven through ``MlflowClient`` with explicit run ids and an explicit tracking URI (no global
"active run", no default store in the working directory).

**A results folder is self-contained.** Its own store (``sqlite:///<out>/mlflow.db``, the default) creates the
experiment with the artifact location ``mlflow-artifacts:/``, MLflow's proxied-artifact scheme, which names a path
relative to an artifact root rather than a place on disk: the harness resolves it against ``<out>/mlartifacts``
(:func:`artifact_dir`), and the UI (`afx-bench ui`) serves it with ``--artifacts-destination <out>/mlartifacts``,
so a copied or moved folder keeps its artifacts. With a tracking server (``tracking.uri = http://...``) the server
decides where artifacts go. Every run is tagged with the process that made it (host, pid, start time), so a run
left RUNNING by a process that died is marked KILLED by the next run on the folder (:meth:`Tracker.end_dead_runs`).
The experiment is tagged as MLflow 3 expects of model training (``mlflow.experimentKind``), so the UI opens on its
runs table rather than on GenAI traces.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

PARAM_MAX = 500  # characters of one logged param value
ARTIFACTS = "mlartifacts"  # <out>/mlartifacts: the artifact root of a folder's own store
PROXIED = "mlflow-artifacts:/"  # MLflow's scheme for artifact paths relative to an artifact root
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # MLflow 3's model-training experiments
PROCESS_TAGS = ("afx.host", "afx.pid", "afx.started")  # which process made a run (bench.lock.this_process)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # nothing leaves the machine at run time


def default_uri(out: Path) -> str:
    return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"


def own_store(uri: str, out: Path) -> bool:
    """Is ``uri`` the results folder's own store (its artifacts then live under ``<out>/mlartifacts``)?"""
    return not uri or uri == default_uri(out)


def artifact_dir(artifact_uri: str, out: Path) -> Path | None:
    """The local folder of a run's artifact URI in the folder's own store: ``mlflow-artifacts:/P`` is
    ``<out>/mlartifacts/P``, a ``file:`` URI or plain path itself; None for anything remote."""
    from urllib.parse import unquote, urlparse

    if artifact_uri.startswith(PROXIED):
        return Path(out).resolve() / ARTIFACTS / artifact_uri[len(PROXIED):].lstrip("/")
    u = urlparse(artifact_uri)
    if u.scheme in ("", "file"):
        return Path(unquote(u.path))
    return None


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
        items = _params(params)
        for i in range(0, len(items), 100):
            self.client.log_batch(self.id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._log_metric_items(_metric_items(metrics, step))

    def log_batch(self, metrics: dict[str, float], params: dict, tags: dict) -> None:
        """Metrics (step 0), a few params and tags in one database transaction (MLflow's limits: 100 params, 100
        tags; metrics go in batches of 500, the params and tags with the first)."""
        self._log_metric_items(_metric_items(metrics), params=_params(params), tags=_tags(tags))

    def _log_metric_items(self, items: list, params: list = (), tags: list = ()) -> None:
        """``items`` in batches of 500; ``params`` and ``tags`` (at most 100 each, MLflow's limit) ride with the
        first: one database transaction where there were three."""
        for i in range(0, max(len(items), 1), 500):
            if items[i : i + 500] or params or tags:
                self.client.log_batch(self.id, metrics=items[i : i + 500], params=list(params), tags=list(tags))
            params = tags = ()

    def replay(self, calls: list[tuple[str, tuple, dict]]) -> None:
        """Calls of this class's methods made elsewhere (a training's logged ``(method, args, kwargs)``), in order,
        with consecutive ``log_metrics`` calls merged into batches of 500: a training logs a few values per step,
        and one database transaction per step cost the driver seconds of CPU per training (issue 28)."""
        pending: list = []
        for method, args, kwargs in calls:
            if method == "log_metrics":
                pending += _metric_items(*args, **kwargs)
                continue
            self._log_metric_items(pending)
            pending = []
            getattr(self, method)(*args, **kwargs)
        self._log_metric_items(pending)

    def set_tags(self, tags: dict) -> None:
        self.client.log_batch(self.id, tags=_tags(tags))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        local = self.tracker.local_artifacts(self.id)
        if local is not None:  # the folder's own store: copied in place by MLflow's local artifact repository
            from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

            repo = LocalArtifactRepository(local.as_uri())
            (repo.log_artifacts if path.is_dir() else repo.log_artifact)(str(path), artifact_path)
        elif path.is_dir():
            self.client.log_artifacts(self.id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.id, str(path), artifact_path)

    def log_dict(self, obj: dict, name: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="afx-mlflow-") as tmp:
            p = Path(tmp) / Path(name).name
            p.write_text(json.dumps(obj, indent=1, default=str))
            parent = str(Path(name).parent)
            self.log_artifact(p, None if parent == "." else parent)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.id, status)

    @property
    def uri(self) -> str:
        return f"runs:/{self.id}"


def _params(params: dict) -> list:
    from mlflow.entities import Param

    return [Param(_key(k), v) for k, v in flatten(params).items()]


def _tags(tags: dict) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)[:5000]) for k, v in tags.items()]


def _metric_items(metrics: dict[str, float], step: int | None = None) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    # NaN (not applicable) is logged too, so every system's run has the same metric keys
    return [Metric(_key(k), float(v), now, step or 0) for k, v in metrics.items() if v is not None]


def _key(k: str) -> str:
    """MLflow keys allow alphanumerics, _ - . space : / only: a labelled variant's '@' (ito_cmaes@64) is written
    ' at ', which no label holds, so two labels never share a key; anything else becomes '_'."""
    return "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in k.replace("@", " at "))


class Tracker:
    def __init__(self, out: Path, uri: str = "", experiment: str = "afx-bench"):
        from mlflow.tracking import MlflowClient

        self.out = Path(out)
        self.uri = uri or default_uri(self.out)
        self.own = own_store(uri, self.out)
        self.client = MlflowClient(self.uri)
        self._artifact_uris: dict[str, str] = {}
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=PROXIED if self.own
                                                               else None, tags={KIND_TAG: KIND})
        else:
            self.experiment_id = exp.experiment_id
            if exp.tags.get(KIND_TAG) != KIND:
                self.client.set_experiment_tag(self.experiment_id, KIND_TAG, KIND)

    def start(self, name: str, tags: dict | None = None, parent: Run | None = None) -> Run:
        from bench.lock import this_process

        me = this_process()
        t = {"mlflow.runName": name, **{k: str(v) for k, v in (tags or {}).items()},
             **dict(zip(PROCESS_TAGS, (me["host"], str(me["pid"]), me["started"]), strict=True))}
        if parent is not None:
            t["mlflow.parentRunId"] = parent.id
        run = self.client.create_run(self.experiment_id, tags=t, run_name=name)
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        return Run(self, run.info.run_id)

    def local_artifacts(self, run_id: str) -> Path | None:
        """Where a run's artifacts go on this disk when the store is the folder's own (else None: MLflow's)."""
        if not self.own:
            return None
        if run_id not in self._artifact_uris:
            self._artifact_uris[run_id] = self.client.get_run(run_id).info.artifact_uri
        return artifact_dir(self._artifact_uris[run_id], self.out)

    def end_dead_runs(self) -> int:
        """Mark KILLED every run of the experiment left RUNNING by a process of this host that has ended (a run
        killed with SIGKILL, or a machine that went down); returns how many."""
        import socket

        from bench.lock import alive

        host, n = socket.gethostname(), 0
        for r in self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=5000):
            tags = r.data.tags
            proc = dict(zip(("host", "pid", "started"), (tags.get(k) for k in PROCESS_TAGS), strict=True))
            if proc["host"] == host and proc["pid"] and not alive(proc):
                self.client.set_tag(r.info.run_id, "error", f"its process (pid {proc['pid']}) ended while it ran")
                self.client.set_terminated(r.info.run_id, "KILLED")
                n += 1
        return n


def log_cell(run: Run, rows, name: str, not_applicable: str, n_examples: int, tags: dict | None = None) -> None:
    """A cell's child run: the mean of each score over its examples (answers ``<name>:<label>`` as
    ``<label>/<metric>``, so every system's run has the same keys), with ``tags``, in one batch; then ended."""
    tags = dict(tags or {})
    if not_applicable:
        run.set_tags({**tags, "not_applicable": f"{name}: {not_applicable}"})
        run.end()
        return
    means = rows.groupby(["system", "metric"])["value"].mean()
    run.log_batch({(m if n == name else f"{n[len(name) + 1:]}/{m}"): v for (n, m), v in means.items()},
                  params={"n_examples": n_examples}, tags=tags)
    run.end()


def resolve_checkpoint(spec: str, out: Path | None = None, uri: str = "") -> Path:
    """A local folder for a checkpoint given as a path, a ``runs:/RUN_ID/PATH`` URI (resolved against the tracking
    store ``uri``, else the results folder ``out``'s own) or another MLflow URI (``models:/...``: downloaded to a
    temporary folder). Nothing is written to the working directory."""
    import tempfile

    from bench.systems import CheckpointError

    if not spec.startswith(("runs:/", "models:/", "mlflow-artifacts:/")):
        p = Path(spec)
        if not p.exists():
            raise CheckpointError(f"checkpoint {p} does not exist")
        return p
    if out is None and not uri:
        raise CheckpointError(f"checkpoint {spec}: give the results folder (--out) whose MLflow store holds it, or "
                              "its tracking URI (--tracking-uri)")
    tracking = uri or default_uri(out)
    if not uri and not (Path(out) / "mlflow.db").is_file():
        raise CheckpointError(f"checkpoint {spec}: no MLflow store at {Path(out) / 'mlflow.db'}")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        if spec.startswith("runs:/"):
            run_id, _, path = spec[len("runs:/"):].partition("/")
            client = MlflowClient(tracking)
            local = artifact_dir(client.get_run(run_id).info.artifact_uri, out) if own_store(uri, out) else None
            if local is not None:
                found = local / path
                if not found.exists():
                    raise CheckpointError(f"checkpoint {spec}: run {run_id} has no artifact {path!r} ({found})")
                return found
            return Path(client.download_artifacts(run_id, path, dst_path=tempfile.mkdtemp(prefix="afx-ckpt-")))
        import mlflow

        return Path(mlflow.artifacts.download_artifacts(artifact_uri=spec, tracking_uri=tracking,
                                                        dst_path=tempfile.mkdtemp(prefix="afx-ckpt-")))
    except MlflowException as e:
        raise CheckpointError(f"checkpoint {spec}: {e.message.splitlines()[0]} (MLflow store {tracking})") from e
