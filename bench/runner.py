"""The grid: plan -> systems (fit or load) -> cells -> results, written as they come.

Each cell (one system on one test task) is answered and scored by :class:`bench.cell.Evaluator` and stored by
:class:`bench.results.ResultStore` the moment it finishes; the tables are rebuilt from the finished cells right
after. A rerun with the same ``--out`` skips every cell already finished under the same settings, so an
interrupted run resumes; a cell that fails is recorded with its error and the run goes on.

``run.executor`` picks where the work runs: ``local`` is the loop below, in this process; ``ray`` (or
``ray://HOST:PORT``) hands trainings and cells to Ray tasks (:class:`bench.executors.grid.RayGrid`), with this
process still the only writer of results, through the same store, keys and MLflow runs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from bench.cache import atomic_write_bytes, stable_hash
from bench.cell import Cell, Evaluator, build_metrics, check_sections, prepare_system, seeds_of, system_key
from bench.config import Config
from bench.executors import uses_ray
from bench.plan import Plan, resolve_device
from bench.results import ResultStore, info_rows, param_rows, score_rows
from bench.systems import System, SystemError_
from bench.tasks import Task


class Runner:
    def __init__(self, cfg: Config, out: Path, *, tracker=None, log=print):
        check_sections(cfg)  # a bad system or metric section stops here, before anything is written
        self.cfg = cfg
        self.out = Path(out)
        self.results = ResultStore(self.out)
        self.log = log
        # on Ray each task resolves the device where it runs; the driver need not see a GPU
        self.device = cfg.run.device if uses_ray(cfg) else resolve_device(cfg.run.device)
        self.tracker = tracker
        self.parent = None
        self.warnings: list[str] = []

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"warning: {msg}")

    def common_tags(self) -> dict:
        from bench.tracking import git_sha

        return {"preset": self.cfg.preset, "config_hash": self.cfg.hash(), "git_sha": git_sha()}

    def prepare_system(self, name: str, plan: Plan, seed: int | None = None) -> System:
        return prepare_system(name, plan, self.out, seed=seed, tracker=self.tracker, parent=self.parent,
                              tags=self.common_tags() if self.tracker is not None else None, store=self.results,
                              log=self.log)

    def cell_key(self, name: str, task: Task, seed: int, n: int) -> str:
        """What a stored cell depends on: the system's training key, the task, its size and the metrics."""
        cfg = self.cfg
        return stable_hash([system_key(cfg, name, seed), task.id, n, cfg.metric_names(),
                            {m: cfg.metric_config(m) for m in cfg.metric_names()}])

    # --- the grid -----------------------------------------------------------------------------------------
    def run(self) -> pd.DataFrame:
        cfg = self.cfg
        atomic_write_bytes(self.out / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())
        plan = Plan.build(cfg, self.device)
        evaluator = None
        if not uses_ray(cfg):  # on Ray the metrics live in the cell tasks
            evaluator = Evaluator(build_metrics(cfg, self.device), sample_rate=cfg.run.sample_rate,
                                  device=self.device, warn=self.warn)
        if self.tracker is not None:
            from bench.tracking import environment

            self.parent = self.tracker.start(f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}",
                                             {"kind": "benchmark", **self.common_tags()})
            self.parent.log_params(cfg.to_dict())
            self.parent.log_dict(cfg.to_dict(), "config.json")
            self.parent.log_dict(environment(self.device), "environment.json")
        status = "FINISHED"
        try:
            if evaluator is None:
                from bench.executors.grid import RayGrid

                RayGrid(self, plan).run()
            else:
                self._run(plan, evaluator)
            self._latent_study()
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            self._write_left_out(plan)
            summary = self.results.rebuild_tables(final=True)
            if self.parent is not None:
                for f in ("summary.csv", "failures.csv"):
                    if (self.out / f).exists():
                        self.parent.log_artifact(self.out / f)
                self.parent.end(status)
        return summary

    def _run(self, plan: Plan, evaluator: Evaluator) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        n = plan.n_examples
        systems: dict[tuple[str, int], System | BaseException] = {}  # (name, training seed) -> system
        for name in cfg.system_names():
            for seed in seeds_of(cfg, name):
                try:
                    systems[name, seed] = self.prepare_system(name, plan, seed)
                except KeyboardInterrupt:
                    raise
                except Exception as e:
                    self.warn(f"{name} (seed {seed}): could not be prepared, its cells are recorded as failed: {e}")
                    systems[name, seed] = e
        cells = [(t, s) for t in plan.test for s in systems]
        by_task: dict[str, list] = {}
        for task, (name, seed) in cells:
            key = self.cell_key(name, task, seed, n)
            if not self.results.done(name, task, key, seed):
                by_task.setdefault(task.id, []).append((task, name, seed, key))
        todo = sum(len(g) for g in by_task.values())
        n_seeds = len(cfg.training_seeds())
        self.log(f"{len(cells)} cells ({len(cells) - todo} already done), {len(plan.test)} {plan.split} tasks, "
                 f"{len(cfg.system_names())} systems" + (f" ({n_seeds} training seeds)" if n_seeds > 1 else "")
                 + f", device {self.device}")
        bar = tqdm(total=todo, desc="cells", disable=not cfg.run.progress)
        for group in by_task.values():
            task = group[0][0]
            try:
                examples = task.examples(n, progress=cfg.run.progress)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                self.warn(f"task {task.id}: examples could not be made: {e}")
                for _, name, seed, _ in group:
                    self.results.write_failure(name, task, "data", e, seed)
                    bar.update(1)
                self.results.refresh_tables()
                continue
            for _, name, seed, key in group:
                bar.set_postfix_str(f"{name} / {task.id}" + (f" / seed {seed}" if n_seeds > 1 else ""))
                self.evaluate_cell(name, seed, systems[name, seed], task, examples, evaluator, key)
                bar.update(1)
        bar.close()

    def evaluate_cell(self, name: str, seed: int, system, task: Task, examples: list, evaluator: Evaluator,
                      key: str) -> None:
        run = None
        if self.tracker is not None:
            run = self.tracker.start(f"{name}/{task.id}", {"system": name, "kind": "cell", **task.tags(),
                                                            "seed": seed, **self.common_tags()}, parent=self.parent)
        try:
            if isinstance(system, BaseException):
                raise SystemError_(f"{name}: not prepared ({type(system).__name__}: {system})") from system
            cell = evaluator.evaluate(name, system, task, examples)
            rows = pd.concat([score_rows(n, task, examples, s, key, seed) for n, s in cell.scores.items()],
                             ignore_index=True)
            params = info = None  # a cell that is not applicable has no answers
            if cell.answers:
                params = pd.concat([param_rows(n, task, examples, e, seed) for n, e in cell.answers.items()],
                                   ignore_index=True)
                info = pd.concat([info_rows(n, task, examples, e, seed) for n, e in cell.answers.items()],
                                 ignore_index=True)
        except KeyboardInterrupt:
            if run is not None:
                run.end("KILLED")
            raise
        except Exception as e:
            self.warn(f"cell {name} / {task.id} failed: {type(e).__name__}: {e}")
            self.results.write_failure(name, task, "evaluate", e, seed)
            self.results.refresh_tables()
            if run is not None:
                run.set_tags({"error": f"{type(e).__name__}: {e}"})
                run.end("FAILED")
            return
        self.results.write_cell(name, task, rows, params, info, seed)
        if seed == self.cfg.training_seeds()[0]:  # one seed's audio for the report
            self._save_audio(cell, task)
        self.results.refresh_tables()
        if run is not None:
            self._log_cell(run, cell, rows, name)

    def _latent_study(self) -> None:
        """The latent-space study of ``[latent]`` (bench/latent.py), after the grid; it never sinks the run."""
        from bench.latent import run_study

        cfg = self.cfg
        if not (cfg.latent.systems and cfg.latent.effects):
            return
        try:
            for msg in run_study(cfg, self.out, device=resolve_device(cfg.run.device), log=self.log):
                self.warnings.append(f"latent study: {msg}")
        except KeyboardInterrupt:
            raise
        except Exception as e:
            self.warn(f"latent study failed ({type(e).__name__}: {e}); the grid's results are complete")

    def _write_left_out(self, plan: Plan) -> None:
        """``corpora.json``: the files each corpus left out when it was planned (and why), so a run's results say
        which recordings they do not rest on."""
        from dataclasses import asdict

        rec = {label: {"left_out": [asdict(b) for b in getattr(c, "left_out", [])],
                       "notes": [asdict(b) for b in getattr(c, "notes", [])]} for label, c in plan.corpora.items()}
        atomic_write_bytes(self.out / "corpora.json", json.dumps(rec, indent=1).encode())

    def _save_audio(self, cell: Cell, task: Task) -> None:
        if not self.cfg.run.audio_examples:
            return
        try:
            for n, ests in cell.answers.items():
                self.results.save_audio(n, task, cell.examples, ests, self.cfg.run.audio_examples)
        except Exception as e:  # the report's audio is a convenience: never lose a cell for it
            self.warn(f"audio of {cell.system} / {task.id} not saved: {e}")

    @staticmethod
    def _log_cell(run, cell: Cell, rows: pd.DataFrame, name: str) -> None:
        if cell.not_applicable:
            run.set_tags({"not_applicable": f"{name}: {cell.not_applicable}"})
            run.end()
            return
        means = rows.groupby(["system", "metric"])["value"].mean()
        run.log_metrics({(m if n == name else f"{n[len(name) + 1:]}/{m}"): v for (n, m), v in means.items()})
        run.log_params({"n_examples": len(cell.examples)})
        run.end()


def run(cfg: Config, out: Path, *, log=print) -> pd.DataFrame:
    runner = Runner(cfg, out, log=log)  # checks the config before the MLflow store is created
    if cfg.tracking.enabled:
        from bench.tracking import Tracker

        runner.tracker = Tracker(Path(out), cfg.tracking.uri, cfg.run.name)
    return runner.run()
