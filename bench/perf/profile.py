"""Where a run's time goes (``afx-bench run --profile``): wall and CPU seconds by stage, and how busy the cores were.

The driver times its own stages (planning the corpora, the grid, each study, the tables, the report) with
:meth:`Profile.stage`; every job measures itself where it runs (:func:`measure`: wall seconds and the CPU seconds
of its process, its threads and the child processes it waited for) and breaks a cell down into its parts (the
examples, the system's answers, each metric). The run's total CPU time is read once, at the end, from the
kernel's accounts of the driver since it started and of every process it started (``getrusage`` for those waited
for, /proc for those still running or not yet reaped: exact, whatever ran where), so ``cores busy = total CPU /
wall / cores`` is always right; what no job
measured (metric worker pools kept between jobs, the driver's writing) is its own line, never spread over the
others. A sampled timeline (every ``SAMPLE_S`` seconds, the CPU of the driver's process tree from ``/proc``) shows
when cores stood idle.

Job CPU includes the threads of the job's process; a job that ran while another shared its process (never: one
job per process at a time) would be over-counted, so the figures hold for the inline and the process-pool
executors. Ray jobs run on other machines: their CPU is theirs, not this machine's, and is reported apart.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

SAMPLE_S = 2.0


def cpu_seconds(children: bool = True) -> float:
    """CPU seconds (user + system) of this process, all its threads, and (``children``) every child process it
    has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    t = own.ru_utime + own.ru_stime
    if children:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        t += ch.ru_utime + ch.ru_stime
    return t


def n_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Clock:
    """Wall and CPU seconds since it was made (:meth:`lap`: since the last lap)."""

    def __init__(self):
        self.wall0, self.cpu0 = time.perf_counter(), cpu_seconds()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, cpu_seconds() - self.cpu0


class Parts:
    """A job's breakdown: part name -> [wall, cpu] seconds, accumulated (a part may be timed several times)."""

    def __init__(self):
        self.parts: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])

    @contextmanager
    def part(self, name: str):
        c = Clock()
        try:
            yield
        finally:
            w, u = c.read()
            self.parts[name][0] += w
            self.parts[name][1] += u

    def as_dict(self) -> dict:
        return {k: {"wall_s": round(w, 4), "cpu_s": round(u, 4)} for k, (w, u) in self.parts.items()}


def _tree_cpu(pid: int, descendants_only: bool = False) -> float:
    """CPU seconds of the process ``pid`` and of its descendants not yet waited for (running, or ended and not
    reaped), each with the children it waited for, from /proc (0 where there is none). ``descendants_only``: without
    ``pid``'s own."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    children: dict[int, list[int]] = defaultdict(list)
    cpu: dict[int, float] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0.0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        p = int(name)
        children[int(fields[1])].append(p)
        # utime, stime of the process, and cutime, cstime of the children it waited for
        cpu[p] = sum(int(f) for f in fields[11:15]) / tick
    total, todo = 0.0, list(children.get(pid, [])) if descendants_only else [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo += children.get(p, [])
    return total


def run_cpu() -> float:
    """CPU seconds of this process and every process it started: those waited for (``getrusage``) and those still
    running or not yet reaped (/proc), so that a worker pool shut down without waiting is still counted."""
    return cpu_seconds() + _tree_cpu(os.getpid(), descendants_only=True)


def process_age() -> float:
    """Wall seconds since this process started (Linux: /proc; else 0)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


class Profile:
    """The profile of one run: the driver's stages, every job's own measurement, the run's total CPU and a
    sampled timeline of how many cores were busy."""

    def __init__(self, sample_s: float = SAMPLE_S):
        self.clock = Clock()
        self.cores = n_cores()
        # the whole process counts, from its start: the imports and the config before this profile was made too
        age, cpu = process_age(), cpu_seconds()
        self.clock.wall0 -= age
        self.clock.cpu0 = 0.0
        self.stages: list[dict] = [{"stage": "start (imports, config)", "wall_s": round(age, 3), "cpu_s": round(cpu, 3)}]
        self.jobs: list[dict] = []
        self.timeline: list[tuple[float, float]] = []  # (seconds since start, cores busy over the last interval)
        self._stop = threading.Event()
        self._sampler = None
        if sample_s > 0 and os.path.isdir("/proc"):
            self._sampler = threading.Thread(target=self._sample, args=(sample_s,), daemon=True)
            self._sampler.start()

    def _sample(self, every: float) -> None:
        pid = os.getpid()
        last_t, last_cpu = time.perf_counter(), _tree_cpu(pid)
        while not self._stop.wait(every):
            t, cpu = time.perf_counter(), _tree_cpu(pid)
            # a child that ended and was reaped moves its CPU into its parent's account: the sum stays continuous
            self.timeline.append((round(t - self.clock.wall0, 2), round(max(0.0, cpu - last_cpu) / (t - last_t), 3)))
            last_t, last_cpu = t, cpu

    @contextmanager
    def stage(self, name: str):
        """Time a stage of the driver (its wall; its CPU: the driver's and the children it waited for meanwhile)."""
        c = Clock()
        try:
            yield
        finally:
            w, u = c.read()
            self.stages.append({"stage": name, "wall_s": round(w, 3), "cpu_s": round(u, 3)})

    def job(self, kind: str, system: str, task: str, measured: dict | None, remote: bool = False) -> None:
        """What a job measured where it ran (:func:`measure`'s dict), under ``kind`` (train | cell)."""
        if not measured:
            return
        self.jobs.append({"kind": kind, "system": system, "task": task, "remote": remote, **measured})

    def finish(self) -> dict:
        """The whole profile (call after every worker pool has closed, so that their CPU is counted)."""
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        wall = time.perf_counter() - self.clock.wall0
        cpu = run_cpu()
        local = [j for j in self.jobs if not j["remote"]]
        rows: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        for j in local:
            if j["kind"] == "train":
                add(rows, f"train {j['system']}", j["wall_s"], j["cpu_s"])
            else:
                add(rows, f"cells {j['system']}", j["wall_s"], j["cpu_s"])
                for part, v in j.get("parts", {}).items():
                    add(rows, f"cell part: {part}", v["wall_s"], v["cpu_s"])
        job_cpu = sum(j["cpu_s"] for j in local)
        out = {
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "cores": self.cores,
            "cores_busy": round(cpu / wall / self.cores, 3) if wall > 0 else 0.0,
            "load_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "stages": self.stages,
            "by": [{"what": k, "n": int(n), "wall_s": round(w, 2), "cpu_s": round(u, 2),
                    "cpu_share": round(u / cpu, 4) if cpu > 0 else 0.0} for k, (w, u, n) in rows.items()],
            "jobs_cpu_s": round(job_cpu, 2),
            # the driver's own work outside jobs (planning, writing, MLflow, studies, report) and metric worker
            # pools that outlive a job: total CPU less what the jobs measured
            "not_in_jobs_cpu_s": round(cpu - job_cpu, 2),
            "remote_jobs_cpu_s": round(sum(j["cpu_s"] for j in self.jobs if j["remote"]), 2),
            "counts": counts(self.jobs),
            "timeline": self.timeline,
            "jobs": self.jobs,
        }
        return out


def add(rows, key, wall, cpu) -> None:
    r = rows[key]
    r[0] += wall
    r[1] += cpu
    r[2] += 1


def counts(jobs: list[dict]) -> dict:
    """How often each piece of shared data was computed in the run (de-duplication's evidence): test sets made
    per task (rather than read from the cache) and AudioCommons clips computed, summed over jobs."""
    made: dict[str, int] = defaultdict(int)
    ac = 0
    for j in jobs:
        for task, n in j.get("examples_made", {}).items():
            made[task] += n
        ac += j.get("ac_computed", 0)
    return {"examples_made": dict(made), "ac_computed": ac}


@contextmanager
def measure(into: dict):
    """Measure a job where it runs: ``into`` gets ``wall_s``, ``cpu_s`` (this process, its threads, and the children
    it waited for meanwhile) and ``where`` (pid)."""
    c = Clock()
    try:
        yield
    finally:
        w, u = c.read()
        into.update(wall_s=round(w, 4), cpu_s=round(u, 4), pid=os.getpid())


def table(p: dict) -> str:
    """The profile as a plain-text table: the run, the driver's stages, then where the CPU went (largest first)."""
    lines = [f"profile: wall {p['wall_s']:.1f} s, CPU {p['cpu_s']:.1f} s on {p['cores']} cores: "
             f"{p['cores_busy']:.0%} of the cores busy"
             + (f" (load average at the end {p['load_at_end'][0]:.2f})" if p.get("load_at_end") else "")]
    lines.append(f"{'stage (driver)':<44}{'wall s':>9}{'CPU s':>9}")
    for s in p["stages"]:
        lines.append(f"{s['stage']:<44}{s['wall_s']:>9.1f}{s['cpu_s']:>9.1f}")
    lines.append(f"{'where the CPU went (jobs)':<44}{'n':>5}{'wall s':>9}{'CPU s':>9}{'share':>8}")
    for r in sorted(p["by"], key=lambda r: -r["cpu_s"]):
        lines.append(f"{r['what']:<44}{r['n']:>5}{r['wall_s']:>9.1f}{r['cpu_s']:>9.1f}{r['cpu_share']:>8.1%}")
    other = p["not_in_jobs_cpu_s"]
    lines.append(f"{'not in any job (driver, metric pools)':<44}{'':>5}{'':>9}{other:>9.1f}"
                 f"{(other / p['cpu_s'] if p['cpu_s'] else 0):>8.1%}")
    c = p["counts"]
    if c["examples_made"]:
        lines.append(f"test sets made: {sum(c['examples_made'].values())} for {len(c['examples_made'])} tasks; "
                     f"AudioCommons clips computed: {c['ac_computed']}")
    return "\n".join(lines)


def write(p: dict, out: Path) -> Path:
    path = Path(out) / "profile.json"
    path.write_text(json.dumps(p, indent=1))
    return path
