"""`afx-bench report` (the report from stored results) and `afx-bench ui` (the MLflow UI of a results dir)."""

from __future__ import annotations

import sys
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
        from reports.build import build_report

        print(f"report: {build_report(Path(args.out))}")
        return 0


@register_command("ui")
class UI(Command):
    help = "the MLflow UI for a results directory, on 127.0.0.1"

    def add_arguments(self, p):
        p.add_argument("--out", required=True)
        p.add_argument("--port", type=int, default=5000)

    def __call__(self, args) -> int:
        import subprocess

        from bench.tracking import default_uri

        out = Path(args.out)
        if not (out / "mlflow.db").exists():
            print(f"no MLflow store at {out / 'mlflow.db'}; run `afx-bench run --out {out}` first", file=sys.stderr)
            return 2
        cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", default_uri(out),
               "--host", "127.0.0.1", "--port", str(args.port)]
        print(f"MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
        return subprocess.call(cmd)
