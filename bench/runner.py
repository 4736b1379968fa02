"""The driver: plan -> jobs -> results. The only writer of a results folder and of MLflow.

A run checks its config (:func:`bench.plan.check`), takes the results folder's lock (a second run on the same
``--out`` stops at once, naming the holder), builds the plan (the data checked), and only then writes the
invocation's config and opens MLflow (runs a dead process left RUNNING are marked KILLED first). Then the grid:
each system that needs training becomes a training job and each unfinished cell a cell job (:mod:`bench.jobs`),
handed to the executor (:mod:`bench.executors`: inline in this process, or Ray tasks). Whatever comes back is
written here, the moment it comes: a checkpoint (to a temporary folder, then renamed), its budget and training
run; a cell's rows (atomic per-cell files), its audio and child run, or its failure. A cell whose stored key
matches the present settings is done, so an interrupted run resumes; a failing system or cell is recorded and the
run goes on. After the grid, each configured study (:mod:`bench.studies`) runs with the run's checkpoints.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from bench import jobs
from bench.cache import stable_hash
from bench.cell import needs_of, seeds_of, system_key
from bench.config import Config, ConfigError
from bench.executors import JobTimeout, make_executor, task_options, uses_ray
from bench.lock import FolderLock, describe
from bench.plan import Plan, check, missing, needs, resolve_device
from bench.results import LOCK_FILE, ResultStore
from bench.studies import NotTrained, Prepared, StudyContext, get_study
from bench.systems import SYSTEMS, SystemError_
from bench.tasks import Task


class Runner:
    def __init__(self, cfg: Config, out: Path, *, log=print, profile=None, after_grid=None):
        check(cfg)  # a bad name or section stops here, before anything is written
        self.cfg, self.out, self.log = cfg, Path(out), log
        self.after_grid = after_grid  # called when every grid cell is on disk, before the studies (if any) run
        self.profile = profile  # a bench.perf.profile.Profile that times the stages and collects the jobs' own
        self.results = ResultStore(self.out)
        # on Ray each job resolves the device where it runs; the driver need not see a GPU
        self.device = cfg.run.device if uses_ray(cfg) else resolve_device(cfg.run.device)
        self.tracker = self.parent = self.executor = None
        self.warnings: list[str] = []
        self.cells = self.failed = 0  # the grid's cells, and those failed (after the run)
        self.ready: dict = {}  # (name, seed) -> checkpoint handle | None (no checkpoint) | BaseException
        self.waiting: dict = {}  # (name, seed) -> cell jobs waiting for the training
        self.blocked: dict = {}  # (name, seed) -> the systems it needs whose trainings have not come back yet
        self.train_runs: dict = {}  # (name, seed) -> its MLflow run
        self.study_trainings: dict = {}  # (name, seed) -> the config a study's variant trains under, beside the grid
        self.study_budgets: dict = {}  # (name, seed) -> what that training cost (the study stores it with its cells)
        self.bad_data: set[str] = set()  # tasks whose examples could not be made (warned once)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"warning: {msg}")

    def common_tags(self) -> dict:
        from bench.tracking import git_sha

        return {"preset": self.cfg.preset, "config_hash": self.cfg.hash(), "git_sha": git_sha()}

    def cell_key(self, name: str, task: Task, seed: int, n: int) -> str:
        """What a stored cell depends on: the system's training key, the task, its size and the metrics."""
        cfg = self.cfg
        return stable_hash([system_key(cfg, name, seed), task.id, n, cfg.metric_names(),
                            {m: cfg.metric_config(m) for m in cfg.metric_names()}])

    # --- a run ----------------------------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        with self._locked():
            return self._run()

    def _locked(self) -> FolderLock:
        lock = FolderLock(self.out / LOCK_FILE).acquire()
        if lock.taken_over:
            self.log(f"note: {self.out} was left locked by a run that ended without releasing it "
                     f"({describe(lock.taken_over)}); taken over")
        return lock

    def stage(self, name: str):
        return self.profile.stage(name) if self.profile is not None else nullcontext()

    def _run(self) -> pd.DataFrame:
        cfg = self.cfg
        with self.stage("plan (corpora made or read)"):
            plan = Plan.build(cfg, self.device)
            self._plan_corpora(plan)
        self.executor = make_executor(cfg, self.log)
        status = "FAILED"
        try:
            self._preflight()
            self.results.write_config(cfg.to_dict(), left_out(plan))  # only now that every check has passed
            with self.stage("tracking start"):
                self._start_tracking()
            with self.stage(f"grid ({self.executor.describe()})"):
                self._grid(plan)
            if self.after_grid is not None and self.cfg.studies:
                self.after_grid()
            with self.stage("studies"):
                self._studies()
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            self.executor.cancel()
            raise
        finally:
            self._end_trainings(status)
            self.executor.close()
            jobs.release()
            with self.stage("tables"):
                summary = self.results.rebuild_tables(final=True)
            self.failed = sum(self.results.failed(name, t, seed) for name in cfg.system_names()
                              for seed in seeds_of(cfg, name) for t in plan.test)
            if self.parent is not None:
                for f in ("summary.csv", "failures.csv"):
                    if (self.out / f).exists():
                        self.parent.log_artifact(self.out / f)
                self.parent.end(status)
        return summary

    def _plan_corpora(self, plan: Plan) -> None:
        """Every corpus plans its sources now (its files checked, those it leaves out listed for corpora.json); one
        that cannot is warned about here, and its cells fail at the stage ``data`` without sinking the run."""
        for label, corpus in plan.corpora.items():
            try:
                corpus.specs()
            except Exception as e:
                self.warn(f"corpus {label}: {type(e).__name__}: {e}")

    def _preflight(self) -> None:
        """On Ray, every node is asked for what the jobs need there (corpus folders, VST3 files, the modules of
        every system, metric and effect), before anything runs: a missing one names the node and the path."""
        if not uses_ray(self.cfg):
            return
        bad = []
        found = self.executor.on_every_node(missing, needs(self.cfg))
        for node, lines in found.items():
            if isinstance(lines, BaseException):
                lines = [f"the preflight check failed: {type(lines).__name__}: {lines}"]
            bad += [f"{node}: {line}" for line in lines]
        if bad:
            raise ConfigError("not every Ray node has what the run needs (each node reads its own disk; give paths "
                              "that exist on every node, e.g. a shared filesystem mounted alike):\n  "
                              + "\n  ".join(bad))
        self.log(f"ray: every node ({len(found)}) has the corpora, plugins and modules the run needs")

    def _start_tracking(self) -> None:
        cfg = self.cfg
        if not cfg.tracking.enabled:
            return
        from bench.tracking import Tracker, environment

        self.tracker = Tracker(self.out, cfg.tracking.uri, cfg.run.name)
        n = self.tracker.end_dead_runs()
        if n:
            self.log(f"MLflow: {n} run(s) left RUNNING by a process that ended are marked KILLED")
        self.parent = self.tracker.start(f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}",
                                         {"kind": "benchmark", "executor": cfg.run.executor, **self.common_tags()})
        self.parent.log_params(cfg.to_dict())
        self.parent.log_dict(cfg.to_dict(), "config.json")
        self.parent.log_dict(environment(self.device), "environment.json")

    def _end_trainings(self, status: str) -> None:
        for run in self.train_runs.values():  # trainings the run did not see end (interrupted, failed start)
            run.set_tags({"error": f"the run ended ({status}) before this training did"})
            run.end("KILLED" if status != "FAILED" else "FAILED")
        self.train_runs.clear()

    # --- the grid -------------------------------------------------------------------------------------------
    def _grid(self, plan: Plan) -> None:
        from tqdm.auto import tqdm

        cfg, n = self.cfg, plan.n_examples
        pairs = [(name, seed) for name in cfg.system_names() for seed in seeds_of(cfg, name)]
        todo = []
        for name, seed in pairs:  # system-major: one system's cells after another (its loaded system is kept)
            for task in plan.test:
                key = self.cell_key(name, task, seed, n)
                if not self.results.done(name, task, key, seed):
                    todo.append((name, seed, task, key))
        self.cells = len(pairs) * len(plan.test)
        n_seeds = len(cfg.training_seeds())
        where = f"executor {cfg.run.executor}" if uses_ray(cfg) else f"device {self.device}, {self.executor.describe()}"
        self.log(f"{self.cells} cells ({self.cells - len(todo)} already done), {len(plan.test)} {plan.split} tasks, "
                 f"{len(cfg.system_names())} systems" + (f" ({n_seeds} training seeds)" if n_seeds > 1 else "")
                 + f", {where}")
        self.bar = tqdm(total=len(todo), desc="cells", disable=not cfg.run.progress)
        try:
            for pair in dict.fromkeys((name, seed) for name, seed, _, _ in todo):
                try:
                    self._prepare(*pair)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:
                    self.warn(f"{pair[0]} (seed {pair[1]}): could not be prepared, its cells are recorded as failed: "
                              f"{e}")
                    self.ready[pair] = e
            self._submit_study_trainings()
            for name, seed, task, key in todo:
                self._submit_cell(name, seed, task, key, n)
            for o in self.executor.outcomes():
                if o.key[0] == "train" and (o.key[1], o.key[2]) in self.study_trainings:
                    self._study_trained(o)
                elif o.key[0] == "train":
                    self._trained(o)
                else:
                    self._cell_done(o)
        finally:
            self.bar.close()

    def _prepare(self, name: str, seed: int) -> None:
        """What the cells of (name, seed) load: a configured checkpoint, this run's, nothing, or a training (after
        the trainings of the systems it needs: ``System.needs``)."""
        cfg = self.cfg
        if (name, seed) in self.ready or (name, seed) in self.waiting:  # prepared already, as another's need
            return
        path = self._existing_checkpoint(name, cfg, seed)
        if path is not None:
            self.ready[name, seed] = self.executor.put(jobs.pack_dir(path))
        elif not getattr(SYSTEMS.get(cfg.system_base(name)), "trainable", False):
            self.ready[name, seed] = None
        else:
            for dep in needs_of(cfg, name):
                self._prepare(dep, seed)
            self.waiting[name, seed] = []
            self.blocked[name, seed] = [d for d in needs_of(cfg, name) if (d, seed) in self.waiting]
            self._unblock()

    def _unblock(self) -> None:
        """Submit every training whose needs have all come back (or fail it when one of them failed)."""
        for (name, seed), deps in list(self.blocked.items()):
            if any((d, seed) in self.waiting for d in deps):
                continue
            del self.blocked[name, seed]
            needed = [self.ready.get((d, seed)) for d in needs_of(self.cfg, name)]
            bad = [d for d, h in zip(needs_of(self.cfg, name), needed, strict=True)
                   if h is None or isinstance(h, BaseException)]
            if bad:
                e = SystemError_(f"{name}: needs the checkpoint of {', '.join(bad)}, which has none (its training "
                                 "failed, or it does not train)")
                self.warn(f"{name} (seed {seed}): could not be prepared, its cells are recorded as failed: {e}")
                self.ready[name, seed] = e
                for cell in self.waiting.pop((name, seed), []):
                    self._submit_cell(*cell)
                continue
            self._submit_training(name, seed, self.cfg, needed=needed)

    def _existing_checkpoint(self, name: str, cfg: Config, seed: int) -> Path | None:
        """The configured checkpoint of ``name``, or the one this run trained under ``cfg``, or None."""
        from bench.tracking import resolve_checkpoint

        given = cfg.system_config(name).get("checkpoint")
        if given:
            self.log(f"{name}: loading {given}")
            return resolve_checkpoint(given, self.out, cfg.tracking.uri)
        if self.results.trained_key(name, seed) == system_key(cfg, name, seed):
            path = self.results.checkpoint_dir(name, seed)
            self.log(f"{name}: loading this run's checkpoint {path}")
            return path
        return None

    def _submit_training(self, name: str, seed: int, cfg: Config, study: bool = False, needed: list = ()) -> None:
        options, retries = task_options(cfg, name, "train")
        ray = uses_ray(cfg)
        if self.tracker is not None:
            self.train_runs[name, seed] = self.tracker.start(
                f"train/{name}/seed-{seed}", {"system": name, "kind": "train", "seed": seed, "executor":
                                              cfg.run.executor, **({"study": "yes"} if study else {}),
                                              **self.common_tags()}, parent=self.parent)
        job = jobs.TrainJob(cfg, name, seed, num_cpus=options.get("num_cpus", 0) if ray else self.executor.cpus_per_job,
                            num_gpus=options.get("num_gpus", 0) if ray else None,
                            progress=cfg.run.progress and not ray, needs=needs_of(cfg, name))
        self.executor.submit(("train", name, seed), jobs.train, job, *needed, name=f"train:{name}:{seed}",
                             options=options if ray else None, retries=retries)

    def _submit_cell(self, name: str, seed: int, task: Task, key: str, n: int) -> None:
        cfg = self.cfg
        if (name, seed) in self.waiting:
            self.waiting[name, seed].append((name, seed, task, key, n))
            return
        ready = self.ready.get((name, seed))
        if isinstance(ready, BaseException):
            e = SystemError_(f"{name}: not prepared ({type(ready).__name__}: {ready})")
            self._record(name, seed, task, jobs.Failed(e, "evaluate"), attempts=0)
            return
        options, retries = task_options(cfg, name, "cell")
        ray = uses_ray(cfg)
        audio = cfg.run.audio_examples if seed == cfg.training_seeds()[0] else 0
        job = jobs.CellJob(cfg, name, seed, task.id, n, key, audio, num_gpus=options.get("num_gpus", 0) if ray
                           else None, num_cpus=options.get("num_cpus", 0) if ray else self.executor.cpus_per_job)
        self.executor.submit(("cell", name, seed, task), jobs.cell, job, ready, name=f"cell:{name}:{task.id}",
                             options=options if ray else None, retries=retries, timeout_s=cfg.run.cell_timeout_s,
                             on_timeout=jobs.release)

    # --- what comes back --------------------------------------------------------------------------------------
    def _measured(self, kind: str, name: str, task: str, value) -> None:
        if self.profile is not None:
            self.profile.job(kind, name, task, getattr(value, "profile", None), remote=uses_ray(self.cfg))

    def _trained(self, o) -> None:
        _, name, seed = o.key
        self._measured("train", name, "", o.value)
        waiting = self.waiting.pop((name, seed), [])
        result = self._write_training(name, seed, self.cfg, o, grid=True)
        self.ready[name, seed] = result if isinstance(result, BaseException) else self.executor.put(result.checkpoint)
        if isinstance(result, BaseException):
            self.warn(f"{name} (seed {seed}): could not be prepared, its cells are recorded as failed: {result}")
        for cell in waiting:
            self._submit_cell(*cell)
        self._unblock()

    def _write_training(self, name: str, seed: int, cfg: Config, o, grid: bool):
        """A training's outcome: its checkpoint written (atomically) and its MLflow run; the Trained, or the error.
        ``grid``: a system of the grid, whose budget goes to budgets.csv (a study's variant keeps its own)."""
        value = o.value
        run = self.train_runs.pop((name, seed), None)
        if isinstance(value, BaseException):
            value = jobs.Failed(value, "train")
        if isinstance(value, jobs.Failed):
            if run is not None:
                run.set_tags({"error": f"{type(value.error).__name__}: {value.error}", "attempts": o.attempts})
                run.end("FAILED")
            return value.error
        ckpt = self.results.write_checkpoint(name, seed, lambda d: jobs.unpack(value.checkpoint, d),
                                             system_key(cfg, name, seed))
        if grid:
            self.results.write_budget(name, seed, value.budget)
        on = f" on {value.where.get('host', '?')}" if uses_ray(cfg) else ""
        self.log(f"{name} (seed {seed}): trained in {value.seconds:.1f} s{on} ({value.device}), checkpoint {ckpt}")
        if run is not None:
            run.log_params({"system": value.settings, "device": value.device, "seed": seed})
            run.replay(value.logged)
            run.log_metrics({"train_seconds": value.seconds})
            run.set_tags({"attempts": o.attempts, "worker": value.where.get("host", "?")})
            run.log_artifact(ckpt, "checkpoint")
            run.end()
        return value

    def _cell_done(self, o) -> None:
        _, name, seed, task = o.key
        value = o.value
        self._measured("cell", name, task.id, value)
        if isinstance(value, JobTimeout):
            value = jobs.Failed(value, "timeout")
        elif isinstance(value, BaseException):
            value = jobs.Failed(value, "evaluate")
        self._record(name, seed, task, value, o.attempts)

    def _record(self, name: str, seed: int, task: Task, value, attempts: int) -> None:
        """Write one cell's outcome: its rows (or its failure), audio, MLflow child run; the tables after."""
        for text in value.warnings:
            self.warn(text)
        run = None
        if self.tracker is not None:
            run = self.tracker.start(f"{name}/{task.id}", {
                "system": name, "kind": "cell", **task.tags(), "seed": seed, **self.common_tags(),
                "executor": self.cfg.run.executor, "attempts": attempts,
                "worker": value.where.get("host", "-")}, parent=self.parent)
        if isinstance(value, jobs.Failed):
            e = value.error
            if value.stage != "data":
                self.warn(f"cell {name} / {task.id} failed: {type(e).__name__}: {e}")
            elif task.id not in self.bad_data:
                self.bad_data.add(task.id)
                self.warn(f"task {task.id}: examples could not be made: {e}")
            self.results.write_failure(name, task, value.stage, e, seed)
            if run is not None:
                run.set_tags({"error": f"{type(e).__name__}: {e}", "stage": value.stage})
                run.end("FAILED")
        else:
            self.results.write_cell(name, task, value.rows, value.params, value.info, seed)
            if value.clips:
                self._save_audio(name, task, value.clips)
            if run is not None:
                from bench.tracking import log_cell

                log_cell(run, value.rows, name, value.not_applicable, value.n_examples,
                         tags={"task_seconds": f"{value.seconds:.2f}"})
        self.results.refresh_tables()
        self.bar.update(1)
        self.bar.set_postfix_str(f"{name} / {task.id}")

    def _save_audio(self, name: str, task: Task, clips: dict) -> None:
        try:
            for answer, ests in clips["answers"].items():
                self.results.save_audio(answer, task, clips["examples"], ests, self.cfg.run.audio_examples)
        except Exception as e:  # the report's audio is a convenience: never lose a cell for it
            self.warn(f"audio of {name} / {task.id} not saved: {e}")

    # --- studies ----------------------------------------------------------------------------------------------
    def _submit_study_trainings(self) -> None:
        """The variants the configured studies will train for themselves, submitted before the grid's cells so
        that they train beside the grid instead of after it, on one core, while the other waits (issue 28)."""
        for study in self.cfg.studies:
            try:
                wanted = get_study(study).trainings(self.cfg)
            except Exception as e:  # the study will say so itself when it runs; the grid goes on
                self.log(f"{study} study: its trainings are left to the study ({type(e).__name__}: {e})")
                continue
            for name, scfg in wanted:
                seed = scfg.training_seeds()[0]
                if (name, seed) in self.study_trainings or self._existing_checkpoint(name, scfg, seed) is not None:
                    continue
                self.study_trainings[name, seed] = scfg
                self._submit_training(name, seed, scfg, study=True)

    def _study_trained(self, o) -> None:
        """A study variant trained beside the grid: its checkpoint (which :meth:`prepare` then loads) and budget.
        A failure is only logged: the study trains it again when it runs, and reports that failure itself."""
        _, name, seed = o.key
        self._measured("train", name, "", o.value)
        result = self._write_training(name, seed, self.study_trainings[name, seed], o, grid=False)
        if isinstance(result, BaseException):
            self.log(f"{name} (seed {seed}): its training for the study failed ({result}); the study retries it")
        else:
            self.study_budgets[name, seed] = result.budget

    def _studies(self, standalone: bool = False) -> list[StudyContext]:
        """Every configured study (``[studies.NAME]``), after the grid; a failing study never sinks the run."""
        done = []
        for name in self.cfg.studies:
            ctx = StudyContext(self.cfg, self.results.study_dir(name), resolve_device(self.cfg.run.device),
                               self.prepare, self.log, standalone)
            try:
                get_study(name).run(ctx)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                ctx.warn(f"failed ({type(e).__name__}: {e}); the grid's results are complete")
            self.warnings += [f"{name} study: {w}" for w in ctx.warnings]
            done.append(ctx)
        return done

    def prepare(self, name: str, cfg: Config, train: bool = False, grid: bool = False) -> Prepared:
        """A system for a study: the configured checkpoint, this run's training under ``cfg``, or (``train``) a
        training job run now, its checkpoint written by this driver. ``grid``: trained as `run` trains it (its
        budget in budgets.csv), not for the study alone."""
        seed = cfg.training_seeds()[0]
        key = system_key(cfg, name, seed)
        device = resolve_device(cfg.run.device)
        path = self._existing_checkpoint(name, cfg, seed)
        if path is not None or not getattr(SYSTEMS.get(cfg.system_base(name)), "trainable", False):
            return Prepared(jobs.load_system(cfg, name, device, path), key,
                            None if grid else self.study_budgets.get((name, seed)))
        if not train:
            raise NotTrained(f"{name}: not trained in this run (its training failed or did not run)")
        self._submit_training(name, seed, cfg, study=not grid)
        for o in self.executor.outcomes():
            self._measured("train", name, "", o.value)
            result = self._write_training(name, seed, cfg, o, grid)
            if isinstance(result, BaseException):
                raise result
            return Prepared(jobs.load_system(cfg, name, device, result.checkpoint), key,
                            None if grid else result.budget)
        raise RuntimeError(f"{name}: its training job never came back")

    def study_by_hand(self, name: str, grid: list[str], args) -> int:
        """`afx-bench study NAME`: train or load the grid systems it studies (as `run` would), then the study."""
        with self._locked():
            self.executor = make_executor(self.cfg, self.log)
            try:
                for system in grid:
                    self.prepare(system, self.cfg, train=True, grid=True)
                ctx = self._studies(standalone=True)[0]
            finally:
                self.executor.close()
                jobs.release()
            return get_study(name).show(ctx, args)


def left_out(plan: Plan) -> dict:
    """``corpora.json``: the files each corpus left out when it was planned (and why), so a run's results say
    which recordings they do not rest on."""
    return {label: {"left_out": [asdict(b) for b in getattr(c, "left_out", [])],
                    "notes": [asdict(b) for b in getattr(c, "notes", [])]} for label, c in plan.corpora.items()}


def run(cfg: Config, out: Path, *, log=print, profile=None) -> pd.DataFrame:
    return Runner(cfg, out, log=log, profile=profile).run()
