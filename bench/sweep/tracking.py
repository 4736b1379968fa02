"""The MLflow side of a sweep: one parent run per study, shared by every worker (its id is kept in the study), and
one nested run per trial. :class:`SweepTracking` is a mixin of :class:`bench.sweep.study.Sweep`: it reads the
sweep's config, names, objectives and storage, and sets ``tracker``, ``parent`` and ``common`` on it."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from bench.sweep.storage import attach_tracker, redact


def short_error(e: BaseException) -> str:
    """The exception's type and the first line of its message, at most 500 characters."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


@contextlib.contextmanager
def file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class SweepTracking:
    """Sets ``tracker`` (a :class:`bench.tracking.Tracker`; None while tracking is off), ``parent`` (the study's
    run) and ``common`` (the tags of every run of the sweep)."""

    def _start_tracking(self, study, created: bool) -> None:
        cfg = self.cfg
        if not cfg.tracking.enabled:
            if created:
                study.set_user_attr("afx_ready", True)
            return
        from bench.tracking import Run, Tracker, default_uri, git_sha

        uri = cfg.tracking.uri or default_uri(self.out)
        db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        lock = file_lock(Path(db + ".lock")) if db and Path(db).parent.is_dir() else contextlib.nullcontext()
        for attempt in range(3):
            try:
                with lock:  # two workers creating one fresh MLflow SQLite store at once would collide
                    self.tracker = Tracker(self.out, cfg.tracking.uri, f"{cfg.run.name}-sweeps")
                break
            except Exception:  # e.g. another worker created the experiment between our lookup and create
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
        attach_tracker(self.storage, self.tracker)
        self.common = {"system": self.name, "study": self.study_name, "preset": cfg.preset,
                       "config_hash": cfg.hash(), "git_sha": git_sha(), "optuna_storage": redact(self.storage_url)}
        parent_id = study.user_attrs.get("mlflow_parent_run_id")
        if parent_id:
            try:
                self.tracker.client.get_run(parent_id)
                self.parent = Run(self.tracker, parent_id)
                self.tracker.client.update_run(parent_id, status="RUNNING")
            except Exception:  # a worker logging to another MLflow store than the creator's
                self.parent = None
        if self.parent is None:
            self.parent = self.tracker.start(
                f"sweep/{self.study_name}",
                {"kind": "sweep", **self.common, "objectives": ", ".join(o.label for o in self.objectives),
                 "directions": ", ".join(o.direction for o in self.objectives), "sampler": self.opts.sampler,
                 "pruner": self.opts.pruner if len(self.objectives) == 1 else "none (multi-objective)"})
            self.parent.log_params({"config": cfg.to_dict(), "sweep": {
                "system": self.name, "study": self.study_name, "storage": redact(self.storage_url),
                "objectives": [o.label for o in self.objectives], "directions": [o.direction for o in self.objectives],
                "sampler": self.opts.sampler, "pruner": self.opts.pruner, "pruner_startup": self.opts.pruner_startup,
                "seed": self.seed, "fixed": self.opts.fix,
                "valid_tasks": sorted({t.id for o in self.objectives for t in o.tasks})}})
            if created:
                study.set_user_attr("mlflow_parent_run_id", self.parent.id)
        if created:
            study.set_user_attr("afx_ready", True)

    def _start_trial_run(self, trial):
        """The trial's nested run (None when tracking is off); its id is kept on the trial."""
        if self.tracker is None:
            return None
        run = self.tracker.start(f"trial-{trial.number:04d}", {"kind": "trial", **self.common, "trial": trial.number,
                                                               "worker": self.worker, "state": "running"},
                                 parent=self.parent)
        trial.set_user_attr("mlflow_run_id", run.id)
        return run

    @staticmethod
    def _end_run(run, status: str, tags: dict, metrics: dict | None = None) -> None:
        if run is None:
            return
        try:  # MLflow trouble must not hide the trial's own error
            if metrics:
                run.log_metrics(metrics)
            run.set_tags(tags)
            run.end(status)
        except Exception as e:
            print(f"warning: MLflow: could not record the trial's end: {short_error(e)}", file=sys.stderr)

    def _finish_parent(self, study, status: str, trials_csv: Path) -> None:
        """Best values and trial counts on the study's run, with best_params.toml and the trials table."""
        if self.parent is None:
            return
        try:
            states = self.states(study)
            metrics = {f"trials/{k}": v for k, v in states.items()}
            best = self.best(study)
            if best is not None:
                metrics.update({f"best/{o.label}": v for o, v in zip(self.objectives, best.values, strict=True)})
                self.parent.set_tags({"best_trial": best.number})
            self.parent.log_metrics(metrics)
            if (self.out / "best_params.toml").is_file():
                self.parent.log_artifact(self.out / "best_params.toml")
            if trials_csv.is_file():
                self.parent.log_artifact(trials_csv)
            self.parent.end(status)
        except Exception as e:
            self.log(f"warning: MLflow: the sweep's run was not updated: {short_error(e)}")
