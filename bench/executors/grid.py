"""The grid on a Ray cluster: trainings and cells as tasks, the driver the only writer of results.

The driver (this process) builds the plan, decides what each system needs (a configured checkpoint, this run's
earlier training, a training task, or nothing), and submits one task per training and per unfinished cell
(:mod:`bench.executors.remote`). A training task returns its checkpoint as bytes, which the driver writes under
``<out>/checkpoints/<name>/seed-<s>/`` (with its budget and ``TRAINED`` marker, as the local runner does) and puts
in the object store once for that system's cells; a cell task returns its tables, which the driver writes through
the same :class:`bench.results.ResultStore` (atomic per-cell files, failures, resume by cell key). MLflow stays on
the driver: a training's logged metrics are replayed into its run, each cell gets its child run with the same
keys as a local run's, plus ``attempts`` and ``worker`` tags.

Faults: a task whose worker or node is lost is resubmitted, at most ``max_retries`` times (per system:
``resources.max_retries``, default 3), with a log line and the attempt count in the cell's MLflow tags; results
are keyed by cell, and a cell already written is never written again. Ctrl-C cancels what is pending and leaves
every finished cell and checkpoint in place, so the same command resumes.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

from bench.cell import local_checkpoint, seeds_of, system_key
from bench.executors import connect, lost_worker, task_options
from bench.executors import remote as rm
from bench.results import slug
from bench.systems import SYSTEMS, SystemError_


class RayGrid:
    """One run of the grid on Ray, driven by a :class:`bench.runner.Runner` (its store, tracker, log and keys)."""

    def __init__(self, runner, plan):
        self.r, self.plan, self.cfg = runner, plan, runner.cfg
        self.ray = None
        self.pending: dict = {}  # ObjectRef -> job (a SimpleNamespace)
        self.written: set = set()  # cells written by this driver (never twice)
        self.ckpt: dict = {}  # (name, seed) -> ([ObjectRef], digest) | None (no checkpoint) | BaseException
        self.waiting: dict = {}  # (name, seed) -> [cell jobs waiting for the training]
        self.retried = 0

    # --- submission -------------------------------------------------------------------------------------------
    def submit(self, job) -> None:
        ray = self.ray
        job.attempt += 1
        if job.kind == "train":
            fn = ray.remote(rm.train_task).options(name=f"train:{job.name}:{job.seed}", max_retries=0, **job.options)
            ref = fn.remote(self.cfg, job.name, job.seed, job.options)
        else:
            ck = self.ckpt.get((job.name, job.seed))
            refs, dig = ck if isinstance(ck, tuple) else (None, None)
            fn = ray.remote(rm.cell_task).options(name=f"cell:{job.name}:{job.task.id}", max_retries=0,
                                                  **job.options)
            ref = fn.remote(self.cfg, job.name, job.seed, job.task.id, self.plan.n_examples, job.key, job.options,
                            refs, dig, job.audio)
        self.pending[ref] = job

    def put_checkpoint(self, name: str, seed: int, data: bytes) -> None:
        self.ckpt[name, seed] = ([self.ray.put(data)], rm.digest(data))

    def prepare(self, name: str, seed: int) -> None:
        """What the cells of (name, seed) load: a configured checkpoint, this run's checkpoint, or a training."""
        cfg, r = self.cfg, self.r
        checkpoint = cfg.system_config(name).get("checkpoint")
        if checkpoint:
            r.log(f"{name}: loading {checkpoint}")
            self.put_checkpoint(name, seed, rm.pack_dir(local_checkpoint(checkpoint)))
            return
        if not getattr(SYSTEMS.get(cfg.system_base(name)), "trainable", False):
            self.ckpt[name, seed] = None
            return
        ckpt = self.ckpt_dir(name, seed)
        marker = ckpt / "TRAINED"
        if marker.exists() and marker.read_text().strip() == system_key(cfg, name, seed):
            r.log(f"{name}: loading this run's checkpoint {ckpt}")
            self.put_checkpoint(name, seed, rm.pack_dir(ckpt))
            return
        options, retries = task_options(cfg, name, "train")
        run = None
        if r.tracker is not None:
            run = r.tracker.start(f"train/{name}/seed-{seed}", {"system": name, "kind": "train", "seed": seed,
                                                                 "executor": cfg.run.executor, **r.common_tags()},
                                  parent=r.parent)
        self.waiting[name, seed] = []
        self.submit(SimpleNamespace(kind="train", name=name, seed=seed, options=options, retries=retries, attempt=0,
                                    run=run, t0=time.time()))

    def ckpt_dir(self, name: str, seed: int) -> Path:
        return self.r.out / "checkpoints" / slug(name) / f"seed-{seed}"

    # --- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        from tqdm.auto import tqdm

        cfg, r, plan = self.cfg, self.r, self.plan
        self.ray = connect(cfg.run.executor, r.log)
        n = plan.n_examples
        keys = [(name, seed) for name in cfg.system_names() for seed in seeds_of(cfg, name)]
        cells, todo = 0, []
        first_seed = cfg.training_seeds()[0]
        for name, seed in keys:  # system-major: concurrent cells make different tasks' examples
            options, retries = task_options(cfg, name, "cell")
            for task in plan.test:
                cells += 1
                key = r.cell_key(name, task, seed, n)
                if not r.results.done(name, task, key, seed):
                    todo.append(SimpleNamespace(kind="cell", name=name, seed=seed, task=task, key=key, attempt=0,
                                                options=options, retries=retries,
                                                audio=cfg.run.audio_examples if seed == first_seed else 0))
        n_seeds = len(cfg.training_seeds())
        r.log(f"{cells} cells ({cells - len(todo)} already done), {len(plan.test)} {plan.split} tasks, "
              f"{len(cfg.system_names())} systems" + (f" ({n_seeds} training seeds)" if n_seeds > 1 else "")
              + f", executor {cfg.run.executor}")
        needed = {(j.name, j.seed) for j in todo}
        self.bar = tqdm(total=len(todo), desc="cells", disable=not cfg.run.progress)
        try:
            for name, seed in keys:
                if (name, seed) not in needed:
                    continue
                try:
                    self.prepare(name, seed)
                except Exception as e:
                    r.warn(f"{name} (seed {seed}): could not be prepared, its cells are recorded as failed: {e}")
                    self.ckpt[name, seed] = e
            for job in todo:
                if (job.name, job.seed) in self.waiting:
                    self.waiting[job.name, job.seed].append(job)
                elif isinstance(self.ckpt.get((job.name, job.seed)), BaseException):
                    self.not_prepared(job)
                else:
                    self.submit(job)
            self.loop()
        except KeyboardInterrupt:
            self.cancel()
            raise
        finally:
            self.bar.close()
        if self.retried:
            r.log(f"ray: {self.retried} task(s) resubmitted after a lost worker")

    def loop(self) -> None:
        ray = self.ray
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=None)
            for ref in ready:
                job = self.pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as e:
                    if lost_worker(ray, e) and job.attempt <= job.retries:
                        self.retried += 1
                        what = f"training {job.name} (seed {job.seed})" if job.kind == "train" else \
                            f"cell {job.name} / {job.task.id}"
                        self.r.log(f"ray: {what}: worker lost ({type(e).__name__}); retry {job.attempt}/{job.retries}")
                        self.submit(job)
                        continue
                    result = {"error": e, "stage": "evaluate", "where": {}}
                if job.kind == "train":
                    self.trained(job, result)
                else:
                    self.cell_done(job, result)

    def cancel(self) -> None:
        for ref, job in list(self.pending.items()):
            try:
                self.ray.cancel(ref, force=False)
            except Exception:
                pass
            if job.kind == "train" and job.run is not None:
                job.run.set_tags({"error": "KeyboardInterrupt (the driver was interrupted)"})
                job.run.end("KILLED")
        self.pending.clear()

    # --- results ----------------------------------------------------------------------------------------------
    def trained(self, job, result: dict) -> None:
        r, cfg = self.r, self.cfg
        waiting = self.waiting.pop((job.name, job.seed), [])
        if "error" in result:
            e = result["error"]
            r.warn(f"{job.name} (seed {job.seed}): could not be prepared, its cells are recorded as failed: {e}")
            self.ckpt[job.name, job.seed] = e
            if job.run is not None:
                job.run.set_tags({"error": f"{type(e).__name__}: {e}", "attempts": job.attempt})
                job.run.end("FAILED")
            for cell in waiting:
                self.not_prepared(cell)
            return
        ckpt = self.ckpt_dir(job.name, job.seed)
        tmp = ckpt.with_name(f".{ckpt.name}.incoming")
        shutil.rmtree(tmp, ignore_errors=True)
        rm.unpack(result["checkpoint"], tmp)
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)
        r.results.write_budget(job.name, job.seed, result["budget"])
        (ckpt / "TRAINED").write_text(system_key(cfg, job.name, job.seed))
        w = result.get("where", {})
        r.log(f"{job.name} (seed {job.seed}): trained in {result['seconds']:.1f} s on {w.get('host', '?')} "
              f"({result['device']}), checkpoint {ckpt}")
        if job.run is not None:
            run = job.run
            run.log_params({"system": result["config"], "device": result["device"], "seed": job.seed})
            for method, args, kwargs in result["calls"]:
                getattr(run, method)(*args, **kwargs)
            run.log_metrics({"train_seconds": result["seconds"]})
            run.set_tags({"attempts": job.attempt, "worker": w.get("host", "?"), "ray_node": w.get("node", "")})
            run.log_artifact(ckpt, "checkpoint")
            run.end()
        self.put_checkpoint(job.name, job.seed, result["checkpoint"])
        for cell in waiting:
            self.submit(cell)

    def not_prepared(self, job) -> None:
        e = self.ckpt[job.name, job.seed]
        err = SystemError_(f"{job.name}: not prepared ({type(e).__name__}: {e})")
        self.cell_done(job, {"error": err, "stage": "evaluate", "where": {}}, submitted=False)

    def cell_done(self, job, result: dict, submitted: bool = True) -> None:
        r, name, task, seed = self.r, job.name, job.task, job.seed
        cell_id = (name, task.id, seed)
        if cell_id in self.written:  # a duplicate answer (never expected): the first one stands
            r.log(f"ray: cell {name} / {task.id} answered twice; the second answer is ignored")
            return
        self.written.add(cell_id)
        for text in result.get("warnings", []):
            r.warn(text)
        run = None
        w = result.get("where", {})
        if r.tracker is not None:
            run = r.tracker.start(f"{name}/{task.id}", {"system": name, "kind": "cell", **task.tags(), "seed": seed,
                                                        **r.common_tags(), "executor": self.cfg.run.executor,
                                                        "attempts": job.attempt, "worker": w.get("host", "-")},
                                  parent=r.parent)
        if "error" in result:
            e = result["error"]
            stage = result.get("stage", "evaluate")
            if stage == "data":
                r.warn(f"task {task.id}: examples could not be made: {e}")
            else:
                r.warn(f"cell {name} / {task.id} failed: {type(e).__name__}: {e}")
            r.results.write_failure(name, task, stage, e, seed)
            r.results.refresh_tables()
            if run is not None:
                run.set_tags({"error": f"{type(e).__name__}: {e}"})
                run.end("FAILED")
        else:
            rows = result["rows"]
            r.results.write_cell(name, task, rows, result["params"], result["info"], seed)
            if result.get("audio"):
                clip = result["audio"]
                r._save_audio(SimpleNamespace(system=name, examples=clip["examples"], answers=clip["answers"]), task)
            r.results.refresh_tables()
            if run is not None:
                run.set_tags({"ray_node": w.get("node", ""), "task_seconds": f"{result.get('task_seconds', 0):.2f}"})
                r._log_cell(run, SimpleNamespace(not_applicable=result["not_applicable"],
                                                 examples=range(result["n_examples"])), rows, name)
        self.bar.update(1)
        self.bar.set_postfix_str(f"{name} / {task.id}")
