"""`afx-bench check system|effect|metric NAME` (the contract a plugin must keep) and `afx-bench check ac` (the
batched AudioCommons features against timbral_models). The checks themselves live in :mod:`bench.checks`."""

from __future__ import annotations

from bench.commands import Command, register_command


@register_command("check")
class CheckCommand(Command):
    help = "check a system, effect or metric against the harness's contract (or the AudioCommons features)"

    def add_arguments(self, p):
        from bench.checks import MODULES, get_check

        sub = p.add_subparsers(dest="what", required=True)
        for name in MODULES:
            try:
                check = get_check(name)
            except (ImportError, KeyError, AttributeError) as e:  # a check not written yet, or missing a package
                q = sub.add_parser(name, help=f"(unavailable: {e})")
                q.set_defaults(check=_unavailable(name, e))
                continue
            q = sub.add_parser(name, help=check.help, description=check.help)
            check.add_arguments(q)
            q.set_defaults(check=check)

    def __call__(self, args) -> int:
        return args.check(args)


def _unavailable(name, error):
    def fail(args) -> int:
        import sys

        print(f"afx-bench check {name}: unavailable: {error}", file=sys.stderr)
        return 2

    return fail
