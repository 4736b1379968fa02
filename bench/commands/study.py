"""`afx-bench study NAME`: one registered study by hand (:mod:`bench.studies`), e.g. `afx-bench study latent
--effect chorus`: what `run` adds after its grid. The study narrows its own section from its options; the grid
systems it needs are trained or loaded first, as `run` would (the same checkpoints under ``--out``)."""

from __future__ import annotations

from bench.commands import Command, config_args, load, out_dir, register_command


@register_command("study")
class StudyCommand(Command):
    help = "run one study by hand (what `run` adds after the grid), e.g. `afx-bench study latent --effect chorus`"

    def add_arguments(self, p):
        from bench.studies import STUDIES, get_study

        sub = p.add_subparsers(dest="study", required=True, metavar="STUDY")
        for name in STUDIES.names():
            study = get_study(name)
            q = sub.add_parser(name, help=study.help, description=study.help)
            config_args(q)
            study.add_arguments(q)

    def __call__(self, args) -> int:
        from bench.runner import Runner
        from bench.studies import get_study

        study = get_study(args.study)
        cfg, grid = study.by_hand(load(args), args)
        return Runner(cfg, out_dir(args)).study_by_hand(args.study, grid, args)
