"""`afx-bench <command>` (also `python -m bench`): the commands come from the registry in :mod:`bench.commands`.

Heavy libraries (torch, mlflow) are imported only inside the commands that need them, so `--help` is instant. A
bad config key or value, or an unknown name, is a one-line error naming the key and what is allowed (exit 2),
never a traceback; Ctrl-C leaves a resumable run (exit 130).
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


def main(argv: list[str] | None = None) -> int:
    from bench.config import ConfigError
    from bench.registry import UnknownName

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, UnknownName) as e:
        print(f"afx-bench: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are saved; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
