"""`afx-bench <command>` (also `python -m bench`): the commands come from the registry in :mod:`bench.commands`.

Heavy libraries (torch, mlflow) are imported only inside the commands that need them, so `--help` is instant. A
bad config key or value, or an unknown name, is a one-line error naming the key and what is allowed (exit 2),
never a traceback; the harness's own warnings (a file a corpus leaves out...) are one line each.

Exit codes: 0 done; 1 cells failed (every one, or any with `run --strict`); 2 bad input; 3 the results folder is
in use by another run (the message names it); 130 interrupted (Ctrl-C leaves a resumable run).
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from bench.commands import COMMANDS

    parser = argparse.ArgumentParser(prog="afx-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS.names():
        try:
            cmd = COMMANDS.get(name)
        except ImportError as e:  # a command whose extra dependencies are missing: list it, explain on use
            p = sub.add_parser(name, help=f"(unavailable: {e})")
            p.set_defaults(func=_unavailable(name, e))
            continue
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(func=cmd)
    return parser


def _unavailable(name: str, error: Exception):
    def fail(args) -> int:
        print(f"afx-bench {name}: unavailable: {error}", file=sys.stderr)
        return 2

    return fail


OWN = ("bench", "models", "baselines", "reports")  # the packages whose warnings are printed as one line


def one_line_warnings() -> None:
    """Print the harness's warnings as ``warning: MESSAGE`` (one line), not Python's two (file:line, source)."""
    import warnings

    show = warnings.showwarning
    if getattr(show, "one_line", False):
        return

    def own(message, category, filename, lineno, file=None, line=None):
        if category.__module__.split(".")[0] in OWN or any(f"/{p}/" in filename for p in OWN):
            print(f"warning: {message}", file=file or sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    own.one_line = True
    warnings.showwarning = own


def main(argv: list[str] | None = None) -> int:
    from bench.config import ConfigError
    from bench.lock import Locked
    from bench.registry import UnknownName

    args = build_parser().parse_args(argv)
    one_line_warnings()
    try:
        return args.func(args)
    except (ConfigError, UnknownName) as e:
        print(f"afx-bench: config error: {e}", file=sys.stderr)
        return 2
    except Locked as e:
        print(f"afx-bench: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
