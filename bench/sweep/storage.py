"""Where a study lives: Optuna RDB storages (SQLite, PostgreSQL, MySQL) with heartbeats, or a journal file.

:func:`open_storage` opens ``--storage`` (default ``sqlite:///<out>/optuna.db``) or fails with a clear, password-free
message. RDB storages send a heartbeat for the running trial; when a worker finds another worker's trial stale (its
process died), Optuna fails it and :class:`StaleTrials` marks its MLflow run failed too.
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from pathlib import Path

from bench.config import ConfigError

STORAGE_FORMS = ("sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, mysql+pymysql://..., "
                 "journal:PATH (an Optuna journal file)")
HEARTBEAT_S = 60  # RDB storages: a running trial's heartbeat; stale after GRACE_S without one
GRACE_S = 300


def redact(url: str) -> str:
    """The URL without its password, for logs and tags."""
    if "://" not in url or url.startswith("journal:"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


class StaleTrials:
    """RDB heartbeats: when a worker finds another's trial stale (its process died), that trial is failed in
    Optuna by the storage, and here in MLflow (once :func:`attach_tracker` has given it the tracker)."""

    def __init__(self):
        self.tracker = None

    def __call__(self, study, trial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if self.tracker is None or not run_id:
            return
        from bench.tracking import Run

        with contextlib.suppress(Exception):
            run = Run(self.tracker, run_id)
            run.set_tags({"state": "failed", "error": "stale: its worker stopped sending heartbeats (killed?)"})
            run.end("FAILED")


def attach_tracker(storage, tracker) -> None:
    """Let the storage's stale-trial callback (RDB storages only) mark stale trials' MLflow runs failed."""
    stale = getattr(storage, "afx_stale_trials", None)
    if stale is not None:
        stale.tracker = tracker


def _stale_arg() -> str:
    """Optuna >= 4.9 renamed the callback for trials failed by the heartbeat check."""
    import inspect

    import optuna

    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    return "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"


def open_journal(url: str):
    """``journal:PATH`` (or ``journal:///abs/path``): a JournalStorage on a file (symlink lock)."""
    path = url[len("journal:"):]
    if path.startswith("//"):
        path = path[2:]  # journal:///abs/path
    if not path:
        raise ConfigError(f"--storage {url!r}: journal needs a file, as journal:PATH")
    p = Path(path).expanduser()
    if not p.parent.is_dir():
        raise ConfigError(f"--storage {url!r}: no such directory {p.parent}")
    if p.is_dir():
        raise ConfigError(f"--storage {url!r}: {p} is a directory; name a file, e.g. journal:{p}/optuna.log")
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        return JournalStorage(JournalFileBackend(str(p)))
    except Exception as e:
        raise ConfigError(f"--storage {url!r}: cannot open the journal file: {e}") from e


def open_storage(url: str | None, out: Path):
    """(storage, url): ``journal:PATH`` is a JournalStorage on a file; anything else an Optuna RDB URL; empty
    is ``sqlite:///<out>/optuna.db``. A URL that cannot be opened fails here with a clear message."""
    import optuna

    if not url:
        Path(out).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(Path(out) / 'optuna.db').resolve()}"
    if url.startswith("journal:"):
        return open_journal(url), url
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: not a storage URL; valid forms: {STORAGE_FORMS}")
    stale = StaleTrials()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    last: Exception | None = None
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                                     grace_period=GRACE_S, **{_stale_arg(): stale})
            storage.afx_stale_trials = stale  # the tracker is attached once the MLflow side is set up
            return storage, url
        except ImportError as e:
            raise ConfigError(f"--storage {redact(url)}: the database driver is not installed ({e}); for PostgreSQL "
                              "install psycopg (pip install 'psycopg[binary]'), for MySQL PyMySQL") from e
        except Exception as e:
            last = e
            text = str(e).lower()
            # several workers creating the tables of a fresh database at once: one wins, the others retry
            if attempt < 3 and any(s in text for s in ("already exists", "duplicate", "database is locked")):
                time.sleep(0.5 + attempt)
                continue
            break
    msg = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
    raise ConfigError(f"--storage {redact(url)}: cannot open it: {type(last).__name__}: {msg}. "
                      f"Valid forms: {STORAGE_FORMS}") from last
