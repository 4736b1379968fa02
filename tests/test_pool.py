"""The process-pool executor and the run's profile: the same results as inline, both worker processes used, shared
data (test sets, AudioCommons features) computed once per run across processes, systems and seeds, and a profile
whose accounts add up."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.config import ConfigError, load_config
from bench.executors import Executor, local_processes, make_executor
from bench.executors.pool import PoolExecutor
from bench.perf.profile import Profile, table

# the smoke preset narrowed: trained floors and a torch model under two training seeds, the references, a seen, an
# unseen and a hidden effect on speech and music; torch pinned to one thread so that float sums match inline
NARROW = ["run", "--preset", "smoke", "--systems", "bypass,random,oracle,mean,oneshot_eq", "--effects",
          "peq4,delay,room", "--set", "run.report=false", "--set", "run.torch_threads=1", "--set", "run.seeds=[0, 1]"]
N_TASKS = 6
N_CELLS = N_TASKS * (3 + 2 * 2)  # bypass, random, oracle once; mean and oneshot_eq per training seed
KEYS = ["system", "task", "seed", "example", "metric"]


def afx(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AFX_BENCH_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def non_cost(out: Path) -> pd.DataFrame:
    s = pd.read_parquet(out / "scores.parquet")
    return s[~s["metric"].str.startswith("cost/")].sort_values(KEYS).reset_index(drop=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The narrowed run inline and in two worker processes, each on its own cold cache, the pool run with AudioCommons
    and a profile."""
    root = tmp_path_factory.mktemp("pool")
    metrics = ["--set", 'metrics.include=["param_mae", "mrstft", "loudness", "ac"]']
    inline = afx([*NARROW, *metrics, "--set", "run.processes=1", "--out", str(root / "inline")], root / "cache-inline")
    assert inline.returncode == 0, inline.stderr[-3000:]
    pool = afx([*NARROW, *metrics, "--set", "run.processes=2", "--profile", "--out", str(root / "pool")],
               root / "cache-pool")
    assert pool.returncode == 0, pool.stderr[-3000:]
    return root, inline, pool


def test_the_pool_gives_the_inline_results(runs):
    root, _, pool = runs
    a, b = non_cost(root / "inline"), non_cost(root / "pool")
    assert len(b) and not b.duplicated(KEYS).any(), "a cell landed twice"
    pd.testing.assert_frame_equal(a[KEYS], b[KEYS])
    np.testing.assert_array_equal(a["value"].to_numpy(), b["value"].to_numpy())
    assert pd.read_csv(root / "pool" / "failures.csv").empty
    assert "2 worker processes x 1 threads" in pool.stdout


def test_the_profile_accounts_for_the_run(runs):
    root, _, pool = runs
    p = json.loads((root / "pool" / "profile.json").read_text())
    assert "where the CPU went" in pool.stdout and "cores busy" in pool.stdout
    cells = [j for j in p["jobs"] if j["kind"] == "cell"]
    trainings = [j for j in p["jobs"] if j["kind"] == "train"]
    assert len(cells) == N_CELLS and len(trainings) == 4  # mean, oneshot_eq x 2 seeds
    assert len({j["pid"] for j in p["jobs"]}) == 2, "the jobs did not run in both worker processes"
    assert os.getpid() not in {j["pid"] for j in p["jobs"]}
    # the run's CPU (driver + every reaped worker) holds every job's own CPU; the cores' share follows from it
    assert 0 < p["jobs_cpu_s"] <= p["cpu_s"] * 1.02
    assert p["cores_busy"] == pytest.approx(p["cpu_s"] / p["wall_s"] / p["cores"], abs=2e-3)
    by = {r["what"]: r for r in p["by"]}
    for what in ("train oneshot_eq", "cells oracle", "cell part: examples", "cell part: answers",
                 "cell part: metric ac", "cell part: metric mrstft"):
        assert by[what]["cpu_s"] >= 0 and by[what]["n"] >= 1, what
    assert by["cells mean"]["n"] == 2 * N_TASKS
    stages = [s["stage"] for s in p["stages"]]
    assert stages[:2] == ["start (imports, config)", "plan (corpora made or read)"]
    assert any(s.startswith("grid (2 worker processes") for s in stages)


def test_shared_data_is_computed_once_per_run(runs):
    """Every task's test set made once, though 7 cells (5 systems, 2 training seeds) in 2 processes read it; every
    AudioCommons clip (the targets, and outputs that equal them or the inputs) computed once: as many computations
    as records in the cold cache."""
    root, _, _ = runs
    p = json.loads((root / "pool" / "profile.json").read_text())
    made = p["counts"]["examples_made"]  # the test sets, and the validation sets the trainings made
    assert len([t for t in made if t.endswith("/test")]) == N_TASKS and set(made.values()) == {1}, made
    records = list((root / "cache-pool" / "audiocommons").rglob("*.json"))
    assert records and p["counts"]["ac_computed"] == len(records)


def test_processes_config():
    cfg = load_config("smoke")
    assert local_processes(cfg)[0] == 1 and type(make_executor(cfg)) is Executor
    cfg = load_config("smoke", sets=["run.processes=2"])
    ex = make_executor(cfg)
    try:
        assert isinstance(ex, PoolExecutor) and ex.processes == 2 and ex.cpus_per_job >= 1
    finally:
        ex.close()
    cfg = load_config("quick")
    assert cfg.run.processes == 0  # one per core
    with pytest.raises(ConfigError, match="run.processes"):
        load_config("smoke", sets=["run.processes=-1"])


def _square(x):
    return x * x


def _die(_):
    os._exit(3)


def test_a_lost_worker_is_replaced_and_its_job_retried_or_reported():
    ex = PoolExecutor(2, 1, log=lambda *_: None)
    try:
        for i in range(4):
            ex.submit(("cell", i), _square, i, retries=1)
        ex.submit(("cell", "dies"), _die, 0, retries=1)
        got = {o.key[1]: o for o in ex.outcomes()}
    finally:
        ex.close()
    assert {k: o.value for k, o in got.items() if k != "dies"} == {0: 0, 1: 1, 2: 4, 3: 9}
    assert isinstance(got["dies"].value, RuntimeError) and got["dies"].attempts == 2


def test_the_profile_table_of_an_empty_run():
    p = Profile(sample_s=0.05)
    with p.stage("nothing"):
        sum(range(10**5))
    out = p.finish()
    assert out["stages"][-1]["stage"] == "nothing" and out["cpu_s"] > 0 and out["jobs"] == []
    assert "nothing" in table(out)
