"""`afx-bench latent`: latent-space exploration of a trained controller (the study is the model's own API,
:mod:`models.proposed.latent`; this command fits or loads the system as `run` does and hands it the examples)."""

from __future__ import annotations

from bench.commands import Command, config_args, load, out_dir, register_command


@register_command("latent")
class Latent(Command):
    help = "latent-space exploration of a trained controller for one effect"

    def add_arguments(self, p):
        config_args(p)
        p.add_argument("--system", default="proposed",
                       help="the system to explore: proposed, proposed_paper or a labelled variant (default: proposed)")
        p.add_argument("--hedged", action="store_true",
                       help="decode the hedged answers (as match gives them) instead of the controller before the "
                            "hedge (the default; proposed_paper has no hedge)")
        p.add_argument("--effect", required=True, help="the effect whose controller is explored")
        p.add_argument("--steps", type=int, default=7, help="positions along each path (default: 7)")
        p.add_argument("--axes", type=int, default=4, help="principal axes to walk (default: 4)")
        p.add_argument("--span", type=float, default=2.0, help="axis walk range in standard deviations (default: 2)")
        p.add_argument("--example", type=int, default=0, help="which test example's input is processed (default: 0)")

    def __call__(self, args) -> int:
        from bench.cell import check_sections, prepare_system
        from bench.config import ConfigError
        from bench.plan import Plan
        from models.proposed.latent import ac_features, explore, write

        cfg = load(args)
        names = [n for n, _ in cfg.effect_sets()]
        if args.effect not in names:
            raise ConfigError(f"--effect: {args.effect!r} is not among this config's effects; valid: {', '.join(names)}")
        if args.system not in cfg.system_names():
            cfg.systems["include"] = [*cfg.system_names(), args.system]
        check_sections(cfg)
        out = out_dir(args)
        plan = Plan.build(cfg)
        system = prepare_system(args.system, plan, out)  # the same checkpoint as `afx-bench run --out` uses
        task = next(t for t in plan.test if t.effect.name == args.effect)
        examples = task.examples(plan.n_examples, progress=cfg.run.progress)
        fn, source = ac_features(cfg.run.sample_rate)
        res = explore(system, task.effect, examples, features=fn, feature_source=source, steps=args.steps,
                      axes=args.axes, span=args.span, example=args.example, hedged=args.hedged)
        paths = write(res, out / "latent", cfg.run.sample_rate)
        print(f"explored {res.controller}")
        for a in res.axes:
            print(f"{a['axis']}: {a['explained_variance']:.0%} of the variance; moves {a['main_feature'] or '-'} "
                  f"(selectivity {a['selectivity']:.2f}); main parameter {a['main_param']}")
        for k, p in paths.items():
            print(f"{k}: {p}")
        return 0
