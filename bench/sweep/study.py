"""One system's Optuna study as one worker process sees it (:class:`Sweep`): open or join the study, run trials
(each a nested MLflow run, :mod:`bench.sweep.tracking`), keep ``best_params.toml`` and the trials table current.

A trial builds the system with the search space's overrides, fits it on the training tasks and scores it on the
validation tasks with the runner's own code (:mod:`bench.cell`): :func:`~bench.cell.build_system`,
:func:`~bench.cell.fit_system` and :class:`~bench.cell.Evaluator`. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.config import Config, ConfigError
from bench.sweep.best import write_best_params
from bench.sweep.interrupt import check_stop
from bench.sweep.objectives import check_unique, parse_objectives, resolve_key
from bench.sweep.options import SweepOptions, SweepResult, study_key, sweepable, trainable_systems
from bench.sweep.samplers import make_pruner, make_sampler
from bench.sweep.storage import open_storage, redact
from bench.sweep.tracking import SweepTracking, short_error

READY_WAIT_S = 120.0  # how long a joining worker waits for the creating worker to finish setting the study up


def release_memory(failed: bool) -> None:
    """Between trials on a GPU, or after a failure (whose traceback cycles hold tensors), free what is held."""
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available()
    if failed or cuda:
        gc.collect()
    if cuda:
        torch.cuda.empty_cache()


class Sweep(SweepTracking):
    """One system's study, as seen by one worker process."""

    def __init__(self, cfg: Config, out: Path, system: str, opts: SweepOptions, *, storage=None,
                 storage_url: str | None = None, plan=None, log=print):
        from bench.cell import build_metrics
        from bench.config import parse_section
        from bench.plan import Plan
        from bench.systems import SYSTEMS

        opts.check()
        self.cfg, self.out, self.name, self.opts, self.log = cfg, Path(out), system, opts, log
        self.cls = SYSTEMS.get(system)
        if not sweepable(self.cls):
            raise ConfigError(f"sweep: {system!r} is not a trainable system with a search space; sweepable: "
                              f"{', '.join(trainable_systems()) or 'none'}")
        base = cfg.system_settings(system)  # a sweep trains every trial; Ray's task options are not the system's
        parse_section(self.cls.Config, base, f"systems.{system}")
        self.plan = plan or Plan.build(cfg)
        self.objectives = parse_objectives(opts.objectives, opts.directions, self.plan.valid)
        self.seed = cfg.run.seed if opts.seed is None else opts.seed
        self.study_name = opts.study or f"{system}-{cfg.preset}"
        self._examples: dict[str, list] = {}
        self.metrics = build_metrics(cfg, self.plan.device, list(dict.fromkeys(o.metric for o in self.objectives)))
        self._evaluators: dict[tuple, object] = {}
        self._warnings: list[str] = []  # the metrics' warnings during the current trial's scoring
        self.check_objectives()
        self.storage, self.storage_url = storage, storage_url or ""  # opened in run() unless given
        self.key = study_key(cfg, system, self.objectives)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.tracker = self.parent = None
        self.common: dict = {}
        self.mine = 0

    # --- start-up checks ----------------------------------------------------------------------------------
    def examples(self, task) -> list:
        if task.id not in self._examples:
            self._examples[task.id] = task.examples(self.cfg.tasks.n_valid)
        return self._examples[task.id]

    def check_objectives(self) -> None:
        """Parameter metrics need an effect the system controls; every score key must exist (checked by scoring a
        do-nothing estimate on one validation example). A bare metric name that is not one of its metric's
        scores stands for the metric's summary (``ac`` -> ``ac_mean``)."""
        import numpy as np

        from bench.systems import Estimate

        metrics = {m.name: m for m in self.metrics}
        controls = getattr(self.cls, "controls", set())
        for o in self.objectives:
            if "params" in metrics[o.metric].needs and controls != "any":
                if not any(t.effect.name in controls for t in o.tasks):
                    raise ConfigError(
                        f"--objective {o.label!r}: {o.metric} needs parameter estimates, and {self.name} controls "
                        f"none of its tasks' effects ({', '.join(sorted({t.effect.name for t in o.tasks}))}); "
                        f"{self.name} controls: {', '.join(sorted(controls)) or 'nothing'}")
            ex = self.examples(o.tasks[0])[0]
            keys = metrics[o.metric].score_batch([Estimate(None, np.asarray(ex.input, dtype=np.float32))], [ex])[0]
            key = resolve_key(o, keys)
            if key is None:
                raise ConfigError(f"--objective {o.label!r}: metric {o.metric} has no score {o.key!r}; "
                                  f"its scores: {', '.join(sorted(keys))}")
            o.key = key
        check_unique(self.objectives)

    # --- study set-up -------------------------------------------------------------------------------------
    def _open_study(self):
        import optuna

        directions = [o.direction for o in self.objectives]
        self.sampler = make_sampler(self.opts.sampler, self.seed, self.opts.fix)
        pruner = make_pruner(self.opts.pruner, self.opts.pruner_startup, len(self.objectives))
        try:
            study = optuna.create_study(storage=self.storage, sampler=self.sampler, pruner=pruner,
                                        study_name=self.study_name, directions=directions)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                      pruner=pruner)
            created = False
        if created:
            return study, True
        if [d.name.lower() for d in study.directions] != directions:
            raise ConfigError(f"--study {self.study_name}: the study exists with directions "
                              f"{[d.name.lower() for d in study.directions]}, this sweep has {directions}; "
                              "use another --study name")
        deadline = time.monotonic() + READY_WAIT_S
        while ("afx_ready" not in study.user_attrs and not study.get_trials(deepcopy=False)
               and time.monotonic() < deadline):
            time.sleep(0.5)  # the creating worker is still setting the study up
        attrs = study.user_attrs
        if "afx_key" not in attrs:
            self.log(f"warning: study {self.study_name} was not created by afx-bench sweep (no settings recorded)")
        elif attrs.get("afx_system") != self.name:
            raise ConfigError(f"--study {self.study_name}: the study belongs to system {attrs.get('afx_system')!r}, "
                              f"not {self.name!r}; use another --study name")
        elif attrs.get("afx_key") != self.key:
            raise ConfigError(
                f"--study {self.study_name}: the study was created with other settings (objectives "
                f"{attrs.get('afx_objectives')}, config {attrs.get('afx_config_hash')}); its trials would not "
                "compare with this sweep's. Use the same config and objectives, or another --study name")
        return study, False

    # --- one trial ----------------------------------------------------------------------------------------
    def _reporter(self, trial, run):
        import optuna

        sign = -1.0 if self.objectives[0].direction == "maximize" else 1.0
        single = len(self.objectives) == 1

        def report(step: int, value: float) -> None:
            """Intermediate values are the system's own validation loss (lower is better)."""
            check_stop()
            if run is not None:
                run.log_metrics({"intermediate": value}, step=int(step))
            if single and math.isfinite(value):
                trial.report(sign * float(value), int(step))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step} (intermediate value {value:.6g})")

        return report

    def evaluator(self, names: tuple):
        """A :class:`bench.cell.Evaluator` with the named metrics of the objectives (those a task needs)."""
        from bench.cell import Evaluator

        if names not in self._evaluators:
            self._evaluators[names] = Evaluator([m for m in self.metrics if m.name in names],
                                                sample_rate=self.cfg.run.sample_rate, device=self.plan.device,
                                                warn=self._warn)
        return self._evaluators[names]

    def _warn(self, text: str) -> None:
        self._warnings.append(text)
        self.log(f"warning: {text}")

    def _why(self) -> str:
        return f" ({' / '.join(self._warnings)})" if self._warnings else ""

    def evaluate(self, system) -> tuple[list[float], dict[str, float]]:
        """The objectives on the validation tasks: per task, the mean over the examples with a finite value (the
        first ``max_examples`` of its metric); then the mean over the tasks with one. A metric that fails on a
        task fails the trial, so that no trial is compared with the others on fewer tasks or examples."""
        from bench.systems import SystemError_

        self._warnings = []
        metrics = {m.name: m for m in self.metrics}
        per_task: dict[tuple[str, str], float] = {}
        tasks = {t.id: t for o in self.objectives for t in o.tasks}
        for tid, task in tasks.items():
            wanted = [o for o in self.objectives if any(t.id == tid for t in o.tasks)]
            names = tuple(dict.fromkeys(o.metric for o in wanted))
            cell = self.evaluator(names).evaluate(self.name, system, task, self.examples(task))
            scores = cell.scores[self.name]
            for o in wanted:
                scored = scores[:metrics[o.metric].limit(len(scores))]
                if not cell.not_applicable and any(o.key not in s for s in scored):
                    raise SystemError_(f"{self.name}: metric {o.metric} gave no {o.key} on {tid}"
                                       f"{self._why()}")
                finite = [v for v in (float(s.get(o.key, math.nan)) for s in scored) if math.isfinite(v)]
                per_task[(o.key, tid)] = sum(finite) / len(finite) if finite else math.nan
        values = []
        for o in self.objectives:
            finite = [v for v in (per_task[(o.key, t.id)] for t in o.tasks) if math.isfinite(v)]
            if not finite:
                raise SystemError_(f"{self.name}: objective {o.label} is NaN on every selected validation task "
                                   f"(not applicable there, or the system's output is broken){self._why()}")
            values.append(sum(finite) / len(finite))
        details = {f"valid/{k}/{tid}": v for (k, tid), v in per_task.items()}
        return values, details

    def objective(self, trial):
        from bench.cell import build_system, fit_system

        t0 = time.perf_counter()
        run = system = None
        self.mine += 1
        try:
            check_stop()
            trial.set_user_attr("worker", self.worker)
            run = self._start_trial_run(trial)
            overrides = dict(self.cls.search_space(trial))
            trial.set_user_attr("config", json.loads(json.dumps(overrides, default=str)))
            if run is not None:
                run.log_params({**trial.params, **overrides, "trial": trial.number})
            system = build_system(self.name, self.cfg, self.plan.device, overrides)
            with tempfile.TemporaryDirectory(prefix=f"afx-trial{trial.number}-") as tmp:
                fit_system(system, self.plan, run=run, checkpoint_dir=Path(tmp), report=self._reporter(trial, run),
                           progress=False)
            t_fit = time.perf_counter() - t0
            values, details = self.evaluate(system)
            seconds = time.perf_counter() - t0
            if run is not None:
                run.log_metrics({**{f"objective/{o.label}": v for o, v in zip(self.objectives, values, strict=True)},
                                 **details, "fit_seconds": t_fit, "trial_seconds": seconds})
                run.set_tags({"state": "complete"})
                run.end()
            shown = ", ".join(f"{o.label} {v:.5g}" for o, v in zip(self.objectives, values, strict=True))
            self.log(f"[{self.study_name}] trial {trial.number}: complete, {shown} ({seconds:.1f} s) {overrides}")
            return values if len(values) > 1 else values[0]
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                trial.set_user_attr("interrupted", True)
            self._end_run(run, "KILLED", {"state": "interrupted", "error": "KeyboardInterrupt (Ctrl-C or SIGTERM)"})
            raise
        except Exception as e:
            import optuna

            if isinstance(e, optuna.TrialPruned):
                self._end_run(run, "FINISHED", {"state": "pruned"}, {"trial_seconds": time.perf_counter() - t0})
                self.log(f"[{self.study_name}] trial {trial.number}: {e}")
                raise
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", short_error(e))
            self._end_run(run, "FAILED", {"state": "failed", "error": short_error(e),
                                          "traceback": "".join(traceback.format_exception(e))[-4000:]},
                          {"trial_seconds": time.perf_counter() - t0})
            self.log(f"[{self.study_name}] trial {trial.number}: failed, {short_error(e)}")
            raise
        finally:
            del system
            release_memory(failed=sys.exc_info()[0] is not None)

    # --- the loop -----------------------------------------------------------------------------------------
    def _counted(self, study) -> int:
        return sum(1 for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("interrupted"))

    def _after_trial(self, study, trial) -> None:
        check_stop()
        if self.opts.max_trials and self._counted(study) >= self.opts.max_trials:
            study.stop()
        if trial.state.name == "COMPLETE":
            self.write_best(study)

    def best(self, study):
        """The best finished trial: for several objectives, the Pareto-optimal trial best on the first."""
        from optuna.trial import TrialState

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return None
        if len(self.objectives) == 1:
            return study.best_trial
        sign = 1.0 if self.objectives[0].direction == "minimize" else -1.0
        return min(study.best_trials, key=lambda t: (sign * t.values[0], t.number))

    def write_best(self, study) -> dict | None:
        best = self.best(study)
        if best is None:
            return None
        params = best.user_attrs.get("config")
        if params is None:  # a trial from before config overrides were recorded: derive them again
            import optuna

            params = dict(self.cls.search_space(optuna.trial.FixedTrial(best.params)))
        provenance = {"study": self.study_name, "trial": best.number, "storage": redact(self.storage_url),
                      "objectives": [o.label for o in self.objectives],
                      "directions": [o.direction for o in self.objectives], "values": list(best.values),
                      "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_best_params(self.out / "best_params.toml", self.name, params, provenance)
        return params

    def _fail_leftovers(self, study) -> None:
        """After an interrupt: any trial this process asked for and left RUNNING is failed (and marked), so the
        study holds no orphan and resumes cleanly."""
        from optuna.trial import TrialState

        for tid in getattr(self.sampler, "asked", []):
            with contextlib.suppress(Exception):
                if self.storage.get_trial(tid).state == TrialState.RUNNING:
                    self.storage.set_trial_user_attr(tid, "interrupted", True)
                    self.storage.set_trial_state_values(tid, TrialState.FAIL)

    def run(self) -> SweepResult:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            self.storage, self.storage_url = open_storage(self.storage_url, self.out)
        study, created = self._open_study()
        if created:
            for k, v in {"afx_system": self.name, "afx_key": self.key, "afx_config_hash": self.cfg.hash(),
                         "afx_objectives": [o.label for o in self.objectives], "afx_preset": self.cfg.preset}.items():
                study.set_user_attr(k, v)
        self._start_tracking(study, created)
        where = redact(self.storage_url)
        n_before = len(study.trials)
        self.log(f"sweep {self.name}: study {self.study_name!r} in {where} ({'new' if created else f'{n_before} trials'}"
                 f"), objectives {', '.join(f'{o.label} ({o.direction})' for o in self.objectives)} on "
                 f"{len({t.id for o in self.objectives for t in o.tasks})} validation task(s)")
        status = "FINISHED"
        try:
            if self.opts.max_trials and self._counted(study) >= self.opts.max_trials:
                self.log(f"sweep {self.name}: the study already holds {self._counted(study)} trials "
                         f"(--max-trials {self.opts.max_trials}); nothing to do")
            else:
                study.optimize(self.objective, n_trials=self.opts.trials, timeout=self.opts.timeout,
                               catch=(Exception,), callbacks=[self._after_trial])
        except KeyboardInterrupt:
            status = "KILLED"
            self._fail_leftovers(study)
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            best_params = self.write_best(study)
            self._finish(study, status)
            self.close()
        best = self.best(study)
        return SweepResult(self.name, self.study_name, where, self.states(study), self.mine, best_params,
                           list(best.values) if best else None, best.number if best else None)

    def close(self) -> None:
        """Stop what the metrics hold (AudioCommons' worker pool)."""
        for m in self.metrics:
            with contextlib.suppress(Exception):
                getattr(m, "close", lambda: None)()

    @staticmethod
    def states(study) -> dict:
        out: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            s = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
            out[s] = out.get(s, 0) + 1
        return out

    def _finish(self, study, status: str) -> None:
        """Trials table under <out>/sweeps/<study>/, best values and counts on the parent run."""
        from bench.results import atomic_csv, slug

        path = self.out / "sweeps" / slug(self.study_name, default="study") / "trials.csv"
        try:
            atomic_csv(study.trials_dataframe(), path)
        except Exception as e:
            self.log(f"warning: trials table not written: {short_error(e)}")
        self._finish_parent(study, status, path)


def sweep(cfg: Config, out: Path, system: str, opts: SweepOptions | None = None, *, storage: str | None = None,
          log=print) -> SweepResult:
    """Run (or join) the study of ``system``: the Python entry point of ``afx-bench sweep``."""
    return Sweep(cfg, out, system, opts or SweepOptions(), storage_url=storage, log=log).run()
