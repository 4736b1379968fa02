"""The grid and the sweeps on a real Ray cluster (tox -e cluster), and the gpu preset at reduced sizes (every env).

The cluster tests start a head (one CPU) and a second node (one CPU) on 127.0.0.1 with `ray start --block`, each in
its own process group, so that teardown (and the fault test) stops exactly these processes and never another
session's Ray. The second node runs in a working directory and with a data cache of its own (AFX_BENCH_CACHE), as
another machine would: it makes the examples it needs itself, and a path that exists only where the driver runs is
caught by the preflight. They are skipped where Ray is not installed (`pip install 'afx-bench[ray]'`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from bench.config import load_config

HERE = Path(__file__).resolve().parents[1]
# the smoke preset narrowed: a trained floor (mean), a trained torch model (oneshot_eq), the references, one seen,
# one unseen and one hidden effect on speech and music: 6 tasks x 5 systems = 30 cells
NARROW = ["run", "--preset", "smoke", "--systems", "bypass,random,oracle,mean,oneshot_eq", "--effects", "peq4,delay,room",
          "--set", "run.report=false", "--set", 'metrics.include=["param_mae", "mrstft", "loudness"]']
N_CELLS = 30
KEYS = ["system", "task", "seed", "example", "metric"]


# --- a two-node cluster on 127.0.0.1 ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ports() -> list[str]:
    """Every port a node opens, free ones, so that two nodes (and other sessions' clusters) never collide."""
    out = []
    for flag in ("--node-manager-port", "--object-manager-port", "--metrics-export-port",
                 "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--runtime-env-agent-port"):
        out += [flag, str(free_port())]
    return out


class Cluster:
    def __init__(self):
        self.ray = str(Path(sys.executable).with_name("ray"))
        self.temp = tempfile.mkdtemp(prefix="afxray", dir="/tmp")  # short: Ray's socket paths have a length limit
        # the node's health checks fail fast, so a killed node is declared dead within seconds
        # token authentication (Ray's default) with a token of this cluster's own, given to every client
        self.auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = {**os.environ, **self.auth, "RAY_DISABLE_USAGE_STATS": "1", "RAY_health_check_period_ms": "1000",
                    "RAY_health_check_failure_threshold": "3", "RAY_health_check_initial_delay_ms": "1000",
                    "PYTHONPATH": str(HERE)}
        self.procs: dict[str, subprocess.Popen] = {}
        self.address = f"127.0.0.1:{free_port()}"
        # the head (where the driver runs too) and the second node: a working directory each, and the second node
        # a data cache of its own
        self.dirs = {label: Path(self.temp) / label for label in ("head", "node")}
        for d in self.dirs.values():
            d.mkdir()
        self.node_env = {"AFX_BENCH_CACHE": str(self.dirs["node"] / "cache")}

    def _start(self, label: str, args: list[str], env: dict | None = None) -> None:
        log = open(Path(self.temp) / f"{label}.log", "w")
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", "200000000",
                  "--disable-usage-stats", "--block", *node_ports()]
        self.procs[label] = subprocess.Popen([self.ray, "start", *args, *common], env={**self.env, **(env or {})},
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                             cwd=self.dirs[label])

    def start(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self._start("head", ["--head", "--port", port, "--include-dashboard", "false", "--temp-dir", self.temp])
        self.wait_nodes(1)
        self._start("node", ["--address", self.address], self.node_env)
        self.wait_nodes(2)

    def alive_nodes(self) -> int:
        r = subprocess.run([self.ray, "status", "--address", self.address], capture_output=True, text=True,
                           env=self.env, timeout=60)
        if r.returncode:
            return 0
        active = r.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if "node_" in line)

    def wait_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for label, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"ray {label} exited: {self.log(label)}")
            if self.alive_nodes() >= n:
                return
            time.sleep(1)
        raise RuntimeError(f"the cluster did not reach {n} node(s): {self.log('head')}")

    def log(self, label: str) -> str:
        return (Path(self.temp) / f"{label}.log").read_text()[-3000:]

    def members(self, label: str) -> dict[int, str]:
        """pid -> title of every process of node ``label``: its session (Ray's workers have process groups of
        their own, but stay in the session of the `ray start` that made the node)."""
        sid = self.procs[label].pid
        out = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:
                    out[int(d.name)] = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
        return out

    def task_pids(self, label: str, prefix: str) -> list[int]:
        """Workers of node ``label`` running a task whose name starts with ``prefix`` (Ray titles them ``ray::NAME``)."""
        return [pid for pid, title in self.members(label).items() if title.startswith(f"ray::{prefix}")]

    def _kill_all(self, label: str) -> None:
        for pid in self.members(label):
            with _quiet():
                os.kill(pid, signal.SIGKILL)

    def kill(self, label: str) -> None:
        """The node's raylet, its workers and its `ray start` at once: a machine that dies."""
        self._kill_all(label)
        self.procs.pop(label).wait(30)

    def stop(self) -> None:
        for p in self.procs.values():
            with _quiet():
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.time() + 5
        for label, p in self.procs.items():
            with _quiet():
                p.wait(max(0.1, deadline - time.time()))
            self._kill_all(label)
            with _quiet():
                p.wait(10)
        self.procs.clear()
        shutil.rmtree(self.temp, ignore_errors=True)


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError, subprocess.TimeoutExpired))


@pytest.fixture(scope="module")
def cluster():
    pytest.importorskip("ray")
    c = Cluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def wav_folder(tmp_path):
    d = tmp_path / "wavs"
    d.mkdir()
    t = np.arange(24000 * 2) / 24000
    for i in range(8):
        sf.write(d / f"f{i}.wav", (0.3 * np.sin(2 * np.pi * 100 * (i + 1) * t)).astype(np.float32), 24000)
    return d


def afx(args: list[str], env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, timeout=600, **kw)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The narrowed smoke run on the local executor: what every Ray run must reproduce."""
    pytest.importorskip("ray")
    out = tmp_path_factory.mktemp("local")
    r = afx([*NARROW, "--out", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def on_ray(cluster) -> dict:
    return {"RAY_ADDRESS": cluster.address, **cluster.auth}


def same_results(ref: Path, out: Path) -> None:
    """summary.csv identical but for the cost/* timing keys; every score row present once, with equal values."""
    a, b = pd.read_csv(ref / "summary.csv"), pd.read_csv(out / "summary.csv")
    a, b = (x[~x["metric"].str.startswith("cost/")].reset_index(drop=True) for x in (a, b))
    pd.testing.assert_frame_equal(a, b)  # mean and n, and the rest (std, intervals) too
    s, t = pd.read_parquet(ref / "scores.parquet"), pd.read_parquet(out / "scores.parquet")
    assert not t.duplicated(KEYS).any(), "a cell landed twice"
    m = s.merge(t, on=KEYS, how="outer", suffixes=("_ref", "_ray"), indicator=True)
    assert (m["_merge"] == "both").all(), "rows lost or added"
    ok = m[~m["metric"].str.startswith("cost/")]
    np.testing.assert_array_equal(ok["value_ref"].to_numpy(), ok["value_ray"].to_numpy())
    assert len(list((out / "cells").rglob("*-s0.parquet"))) == N_CELLS
    fails = pd.read_csv(out / "failures.csv")
    assert fails.empty, fails.to_string()


def mlflow_runs(out: Path, kind: str | None = None) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("afx-bench")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if kind is None or r.data.tags.get("kind") == kind]


# --- the tests --------------------------------------------------------------------------------------------------


def test_ray_executor_gives_the_local_results(cluster, reference, tmp_path):
    out = tmp_path / "ray"
    t0 = time.time()
    r = afx([*NARROW, "--out", str(out), "--executor", "ray"], env=on_ray(cluster))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    print(f"ray run: {time.time() - t0:.1f} s")
    assert "2 node(s)" in r.stdout and "executor ray" in r.stdout and "every node (2) has" in r.stdout
    same_results(reference, out)
    workers = {c.data.tags["worker"] for c in mlflow_runs(out, "cell")}
    assert workers  # the cells ran as Ray tasks (the host's name: both nodes are this machine)
    assert (cluster.dirs["node"] / "cache" / "examples").is_dir(), "the second node made its own examples"
    assert (out / "checkpoints" / "oneshot_eq" / "seed-0" / "TRAINED").exists()
    assert set(pd.read_csv(out / "budgets.csv")["system"]) == {"mean", "oneshot_eq"}
    cells = mlflow_runs(out, "cell")
    assert len(cells) == N_CELLS and all(c.data.tags["executor"] == "ray" for c in cells)
    assert {c.data.tags["attempts"] for c in cells} == {"1"}
    local_audio = sorted(p.relative_to(reference) for p in (reference / "audio").rglob("*.wav"))
    assert local_audio == sorted(p.relative_to(out) for p in (out / "audio").rglob("*.wav"))


def test_a_sweep_on_two_nodes_refuses_file_storages(cluster, tmp_path):
    """SQLite or a journal file would be a separate study on each node's disk: refused before any trial runs."""
    base = ["sweep", "--preset", "smoke", "--system", "oneshot_eq", "--effects", "peq4", "--trials", "1",
            "--workers", "2", "--executor", "ray", "--out", str(tmp_path / "sweep")]
    for extra, what in (([], "--storage sqlite:"), (["--storage", f"journal:{tmp_path / 'j.log'}"], "--storage journal:")):
        r = afx([*base, *extra], env=on_ray(cluster))
        assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
        assert what in r.stderr and "each of the 2 nodes" in r.stderr and "postgresql://" in r.stderr, r.stderr


def test_two_worker_sweep_on_ray(cluster, tmp_path, postgres_url):
    """Two sweep workers, one on each node, share one study in PostgreSQL (the storage every node reaches); an
    MLflow store in a file (the default) is refused first, as the storages are."""
    out = tmp_path / "sweep"
    args = ["sweep", "--preset", "smoke", "--system", "oneshot_eq", "--effects", "peq4", "--trials", "2",
            "--workers", "2", "--executor", "ray", "--pruner", "none", "--set", "systems.oneshot_eq.steps=3",
            "--set", "systems.oneshot_eq.train_examples=8", "--storage", postgres_url, "--out", str(out)]
    r = afx(args, env=on_ray(cluster))
    assert r.returncode == 2 and "tracking.uri" in r.stderr and "tracking server" in r.stderr, r.stderr
    r = afx([*args, "--set", "tracking.enabled=false"], env=on_ray(cluster))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    import optuna

    study = optuna.load_study(study_name="oneshot_eq-smoke", storage=postgres_url)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.user_attrs["worker"] for t in trials}) == 2, "two workers shared the study"
    assert (out / "best_params.toml").exists() and "oneshot_eq" in (out / "best_params.toml").read_text()
    assert "4 complete" in r.stdout and "4 by this worker" in r.stdout


def test_the_preflight_names_the_node_that_lacks_a_path(cluster, tmp_path, wav_folder):
    """A folder corpus given relative to the driver's working directory exists on the head (the driver's machine)
    but not in the second node's working directory: the run stops before anything runs, naming that node and the
    path, and writes no config and no MLflow store."""
    here = cluster.dirs["head"] / "wavs"
    shutil.copytree(wav_folder, here)
    out = tmp_path / "preflight"
    try:
        r = afx(["run", "--preset", "smoke", "--systems", "bypass", "--effects", "gain", "--corpora", "folder:wavs",
                 "--set", "run.report=false", "--out", str(out), "--executor", "ray"], env=on_ray(cluster),
                cwd=cluster.dirs["head"])
    finally:
        shutil.rmtree(here)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-3000:]
    problems = [line for line in r.stderr.splitlines() if "corpus folder:wavs: no directory" in line]
    assert len(problems) == 1, r.stderr  # the second node only
    assert str(cluster.dirs["node"] / "wavs") in problems[0] and problems[0].lstrip().startswith("node ")
    assert not (out / "config.json").exists() and not (out / "mlflow.db").exists()


def test_a_hung_cell_on_ray_is_ended_and_recorded(cluster, tmp_path):
    """ITO with a render budget it would need hours for is ended by run.cell_timeout_s inside its Ray task and
    recorded; bypass's cell (a cold worker: imports, and examples made in the node's own cache) is not."""
    out = tmp_path / "hung"
    r = afx(["run", "--preset", "smoke", "--systems", "bypass,ito_cmaes", "--effects", "peq4", "--corpora", "speech",
             "--set", "run.report=false", "--set", 'metrics.include=["mrstft"]', "--set", "run.cell_timeout_s=40",
             "--set", "systems.ito_cmaes.renders=100000000", "--set", "systems.ito_cmaes.tolx=0", "--out", str(out),
             "--executor", "ray"],
            env=on_ray(cluster))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    fails = pd.read_csv(out / "failures.csv")
    assert fails[["system", "stage"]].values.tolist() == [["ito_cmaes", "timeout"]], r.stdout[-2000:] + r.stderr[-3000:]
    assert len(list((out / "cells").rglob("*.parquet"))) == 1  # bypass


def test_interrupted_ray_run_resumes(cluster, reference, tmp_path):
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "bench", *NARROW, "--out", str(out), "--executor", "ray"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **on_ray(cluster)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "cells").rglob("*.parquet"))) < 4 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    text = proc.communicate(timeout=120)[0]
    done = len(list((out / "cells").rglob("*-s0.parquet")))
    assert proc.returncode == 130, text[-3000:]
    assert 4 <= done < N_CELLS, "the interrupt should land mid-run"
    r = afx([*NARROW, "--out", str(out), "--executor", "ray"], env=on_ray(cluster))
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"({done} already done)" in r.stdout
    same_results(reference, out)


def test_a_lost_node_loses_nothing(cluster, reference, tmp_path):
    """The second node dies (its raylet and workers killed at once) while it runs a cell: the cell is retried on the
    head, and the run completes with every cell once and the local scores."""
    out = tmp_path / "fault"
    cmd = [sys.executable, "-m", "bench", *NARROW, "--out", str(out), "--executor", "ray"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **on_ray(cluster)}
    log = open(tmp_path / "driver.log", "w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    busy: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        busy = cluster.task_pids("node", "cell:")
        if busy:
            break
        time.sleep(0.01)
    assert busy, "the second node never ran a cell"
    cluster.kill("node")
    proc.wait(timeout=400)
    log.seek(0)
    text = log.read()
    assert proc.returncode == 0, text[-4000:]
    print("\n".join(line for line in text.splitlines() if line.startswith("ray:")))
    assert "worker lost" in text and "retry 1/3" in text, text[-4000:]
    same_results(reference, out)
    retried = [r for r in mlflow_runs(out, "cell") if r.data.tags["attempts"] != "1"]
    assert retried and all(r.data.tags["attempts"] == "2" for r in retried), "the retry is in the cell's tags"


# --- the gpu preset, at reduced sizes on the CPU (every env) ------------------------------------------------------


def test_gpu_preset_parses_and_runs_reduced_on_the_cpu(tmp_path):
    from bench.cell import system_key
    from bench.executors import task_options
    from bench.plan import check
    from bench.runner import run

    cfg = load_config("gpu", device="cpu")
    check(cfg)  # every system section, with its Ray resources stripped, parses
    assert cfg.segment_samples == 131072 and cfg.tasks.n_test >= 100  # the paper's clip length
    options, retries = task_options(cfg, "proposed", "train")
    assert options["num_gpus"] > 0 and retries >= 1
    small = load_config("gpu", device="cpu", systems=["bypass", "mean", "oneshot_eq"], effects=["peq4", "delay"],
                        corpora=["speech"], sets=[
        "run.segment_seconds=0.5", "data.source_seconds=1.5", "data.train_sources=3", "data.valid_sources=1",
        "data.test_sources=2", "tasks.n_test=2", "tasks.n_valid=2", "run.report=false", "run.progress=false",
        'metrics.include=["param_mae", "mrstft"]', "systems.oneshot_eq.steps=2", "systems.oneshot_eq.train_examples=8",
        "systems.oneshot_eq.valid_examples=2", "systems.oneshot_eq.batch_size=4", "systems.mean.n_draws=8",
        "tracking.enabled=false"])
    summary = run(small, tmp_path, log=lambda *_: None)
    assert set(summary["system"]) == {"bypass", "mean", "oneshot_eq"}
    assert pd.read_csv(tmp_path / "failures.csv").empty
    # the Ray task options are not part of what a trained system depends on
    plain = load_config("gpu", device="cpu", sets=["systems.proposed.resources={num_cpus = 1}"])
    assert system_key(plain, "proposed") == system_key(cfg, "proposed")
