"""`afx-bench report` (the report from stored results) and `afx-bench ui` (the MLflow UI of a results dir)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench.commands import Command, register_command


@register_command("report")
class Report(Command):
    help = "build the report from stored results; --docs NAME: copy its tables to docs/results/NAME instead"

    def add_arguments(self, p):
        p.add_argument("--out", help="results directory (required, except with --docs: default results/NAME)")
        p.add_argument("--docs", metavar="NAME",
                       help="copy the run's summary.csv, budgets.csv and config.json to docs/results/NAME/ with a "
                            "SOURCE.md (command, preset, seeds, commit) and generate tables.md from the CSV; "
                            "builds no report")
        p.add_argument("--after-studies", metavar="FILE", help=argparse.SUPPRESS)  # `run`'s: see bench/commands/run.py

    def __call__(self, args) -> int:
        if args.docs:
            import shlex

            from reports.docs import write_docs
            from reports.results import ReportError

            out = Path(args.out) if args.out else Path("results") / args.docs
            command = "afx-bench report --docs " + shlex.quote(args.docs) + (
                f" --out {shlex.quote(args.out)}" if args.out else "")
            try:
                dest = write_docs(out, args.docs, command=command)
            except (ReportError, ValueError) as e:
                print(f"report --docs: {e}", file=sys.stderr)
                return 2
            print(f"docs: {dest} (tables.md, SOURCE.md, summary.csv)")
            return 0
        if not args.out:
            print("report: --out is required (the results directory)", file=sys.stderr)
            return 2
        from bench.results import CELLS, SCORES_FILE, ResultStore
        from reports.build import build_report

        out = Path(args.out)
        store = ResultStore(out)
        n = store.n_cells()
        if n:
            store.rebuild_tables(final=True)  # every cell on disk, whatever state the run that wrote them ended in
            print(f"report: read {n} cell(s) from {out / CELLS} ({len(store.failures())} failed cell(s) recorded)")
        elif (out / SCORES_FILE).is_file():
            print(f"report: no cell files in {out / CELLS}; the merged tables as stored")
        else:
            print(f"report: no results in {out}; run `afx-bench run --out {out}` first", file=sys.stderr)
            return 2
        wait = _waiter(Path(args.after_studies)) if args.after_studies else None
        print(f"report: {build_report(out, before_studies=wait)}")
        return 0


def _waiter(marker: Path):
    """For a report that `run` starts beside its studies: wait until the run writes ``marker`` (its studies are
    done); a run that is gone before that (interrupted, killed) ends this report with an error."""
    parent = os.getppid()

    def wait() -> None:
        from reports.results import ReportError

        while not marker.exists():
            if os.getppid() != parent:
                raise ReportError("the run that started this report ended before its studies did")
            time.sleep(0.2)

    return wait


@register_command("ui")
class UI(Command):
    help = "the MLflow UI for a results directory, on 127.0.0.1, opened on the runs table; Ctrl-C stops it"

    def add_arguments(self, p):
        p.add_argument("--out", required=True)
        p.add_argument("--port", type=int, default=5000)
        p.add_argument("--experiment", help="the experiment to open (default: the run's, run.name in config.json)")
        p.add_argument("--no-browser", action="store_true", help="print the address only, open no browser")

    def __call__(self, args) -> int:
        return serve_ui(Path(args.out), args.port, args.experiment, browser=not args.no_browser)


def serve_ui(out: Path, port: int, experiment: str | None = None, browser: bool = True) -> int:
    """``mlflow ui`` on the folder's own store and artifacts (``--artifacts-destination``, so a copied folder
    shows its own), with telemetry off, run from inside the folder (nothing lands in the working directory);
    prints and opens the experiment's runs table. The server is its own process group, stopped with this
    command, whatever stops it (Ctrl-C, SIGTERM, SIGHUP), and told to stop if this process dies."""
    import json
    import os
    import signal
    import subprocess

    from bench.tracking import ARTIFACTS, KIND, KIND_TAG, default_uri

    out = out.resolve()
    if not (out / "mlflow.db").exists():
        print(f"ui: no MLflow store at {out / 'mlflow.db'}; run `afx-bench run --out {out}` first", file=sys.stderr)
        return 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_uri(out))
    if experiment is None:
        try:
            experiment = json.loads((out / "config.json").read_text())["run"]["name"]
        except (OSError, ValueError, KeyError):
            experiment = "afx-bench"
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        print(f"ui: no experiment {experiment!r} in {out / 'mlflow.db'}; valid: {', '.join(names)}", file=sys.stderr)
        return 2
    if exp.tags.get(KIND_TAG) != KIND:  # a store from before the tag: the UI would open on GenAI traces
        client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
    # the runs table, in the UI's model-training mode (its GenAI/Model training switch, set by workflowType)
    url = f"http://127.0.0.1:{port}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", default_uri(out), "--artifacts-destination",
           str(out / ARTIFACTS), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(cmd, cwd=out, env=env, start_new_session=True, preexec_fn=_die_with_parent)

    def stop(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
    try:
        if _wait_for_port(port, server):
            print(f"MLflow UI: {url}\n(the runs of {experiment!r} in {out}; Ctrl-C stops it)", flush=True)
            if browser:
                import webbrowser

                webbrowser.open(url)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        _stop_group(server)


def _die_with_parent() -> None:
    """In the server's process: be sent SIGTERM when the process that started it dies (Linux), even by SIGKILL."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _wait_for_port(port: int, server, timeout: float = 120.0) -> bool:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def _stop_group(server) -> None:
    """SIGTERM to the server's whole process group (its workers and job runner too), SIGKILL if it lingers."""
    import os
    import signal
    import subprocess

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the group may outlive its leader for a moment
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
