"""Where the grid's work runs: ``local`` (the runner's own loop, in this process) or ``ray`` (tasks on a Ray cluster).

``run.executor`` (``--executor``) is ``local`` (the default), ``ray`` (the cluster at ``RAY_ADDRESS``, else a
local one started for the run) or ``ray://HOST:PORT`` (a remote head, through Ray Client). On Ray every training is
a task with its system's ``resources`` and every cell a task with its ``cell_resources`` (both tables of the
system's config section, stripped before the system's own ``Config`` sees it; see :func:`task_options`). The
driver stays the only writer of results (:mod:`bench.executors.grid`); what runs in the tasks is
:mod:`bench.executors.remote`. Nothing here imports ray until a run asks for it. See docs/scaling.md.
"""

from __future__ import annotations

import os
import re

from bench.config import Config, ConfigError

EXECUTORS = "local | ray | ray://HOST:PORT"
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "accelerator_type", "resources", "max_retries")
DEFAULT_RETRIES = 3  # resubmissions of a task whose worker or node was lost (per system: resources.max_retries)


def check_executor(value: str) -> None:
    if value in ("local", "ray") or re.fullmatch(r"ray://[^\s/:]+:\d+", value or ""):
        return
    raise ConfigError(f"run.executor: {value!r}; valid: {EXECUTORS} (ray joins the cluster at RAY_ADDRESS or starts "
                      "a local one)")


def uses_ray(cfg: Config) -> bool:
    return cfg.run.executor != "local"


def check_resources(cfg: Config, name: str) -> None:
    """``systems.NAME.resources`` / ``cell_resources``: tables of Ray task options (see :data:`RESOURCE_KEYS`)."""
    conf = cfg.system_config(name)
    for key in ("resources", "cell_resources"):
        table = conf.get(key)
        if table is None:
            continue
        where = f"systems.{name}.{key}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table such as {{num_gpus = 1, num_cpus = 4}}, got {table!r}")
        bad = sorted(set(table) - set(RESOURCE_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; valid: {list(RESOURCE_KEYS)}")
        for k in ("num_cpus", "num_gpus", "memory", "max_retries"):
            v = table.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ConfigError(f"{where}.{k}: expected a number >= 0, got {v!r}")
        if "resources" in table and not isinstance(table["resources"], dict):
            raise ConfigError(f"{where}.resources: expected a table of custom Ray resources, got {table['resources']!r}")


def task_options(cfg: Config, name: str, kind: str) -> tuple[dict, int]:
    """(Ray options, retries) of ``kind`` ("train" or "cell") tasks of system ``name``. Training uses
    ``resources`` (default one CPU, plus one GPU when ``run.device`` names CUDA); cells use ``cell_resources``
    (default one CPU, plus a quarter GPU when ``run.device`` names CUDA). ``max_retries`` (default
    :data:`DEFAULT_RETRIES`) bounds the resubmissions after a lost worker; the driver does them, not Ray."""
    conf = cfg.system_config(name)
    cuda = cfg.run.device.startswith("cuda")
    if kind == "train":
        table = dict(conf.get("resources") or {})
        defaults = {"num_cpus": 1, **({"num_gpus": 1} if cuda else {})}
    else:
        table = dict(conf.get("cell_resources") or {})
        defaults = {"num_cpus": 1, **({"num_gpus": 0.25} if cuda else {})}
    retries = int(table.pop("max_retries", DEFAULT_RETRIES))
    opts = {**defaults, **table}
    return opts, retries


def worker_device(configured: str, num_gpus: float) -> str:
    """The device a task uses: ``auto`` is CUDA only for a task that was given a GPU (so Ray's accounting holds)."""
    if configured != "auto":
        return configured
    if num_gpus and num_gpus > 0:
        from bench.plan import resolve_device

        return resolve_device("auto")
    return "cpu"


def connect(executor: str, log=print):
    """Join (or start) the Ray cluster ``executor`` names; returns the ``ray`` module."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"run.executor = {executor!r} needs Ray: pip install 'afx-bench[ray]' ({e})") from e
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    address = executor if executor.startswith("ray://") else os.environ.get("RAY_ADDRESS") or None
    kwargs = {"logging_level": "warning", "log_to_driver": True}
    if address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:
        raise ConfigError(f"run.executor = {executor!r}: cannot join the Ray cluster at "
                          f"{address or 'a new local cluster'}: {type(e).__name__}: {e}") from e
    res = ray.cluster_resources()
    log(f"ray: {'joined ' + address if address else 'started a local cluster'}: {len(ray.nodes())} node(s), "
        f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return ray


def lost_worker(ray, error: BaseException) -> bool:
    """True for the errors of a lost worker or node (retried), false for a task's own failure or a cancel."""
    ex = ray.exceptions
    if isinstance(error, (ex.RayTaskError, ex.TaskCancelledError)):
        return False
    return isinstance(error, ex.RayError)
