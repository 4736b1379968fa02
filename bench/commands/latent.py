"""`afx-bench latent`: one cell of the latent-space study by hand (bench/latent.py; the study itself is the
model's own API, :mod:`models.proposed.latent`). The system is fitted or loaded as `run` does; a variant listed in
``latent.train`` (proposed_knobs) is trained on the study's effects as the run's study does."""

from __future__ import annotations

from bench.commands import Command, config_args, load, out_dir, register_command


@register_command("latent")
class Latent(Command):
    help = "latent-space study of a trained controller on one effect (what `run` adds to the report)"

    def add_arguments(self, p):
        config_args(p)
        p.add_argument("--system", default="proposed",
                       help="proposed, proposed_paper or a labelled variant such as proposed_knobs (default: proposed)")
        p.add_argument("--effect", required=True, help="the effect whose controller is studied")
        p.add_argument("--hedged", action="store_true",
                       help="decode the hedged answers (as match gives them) instead of the controller before the "
                            "hedge (the default; proposed_paper has no hedge)")
        for key, kind, what in (("steps", int, "positions along each walk"), ("axes", int, "principal axes walked"),
                                ("span", float, "walk range in standard deviations"),
                                ("inputs", int, "input clips each walk is repeated on"),
                                ("references", int, "references that define the axes")):
            p.add_argument(f"--{key}", type=kind, default=None, help=f"{what} (default: the config's latent.{key})")

    def __call__(self, args) -> int:
        import dataclasses

        import pandas as pd

        from bench.cell import check_sections, prepare_system
        from bench.config import ConfigError, parse_section
        from bench.latent import run_study
        from bench.plan import Plan, resolve_device
        from models.proposed.latent import file_slug

        cfg = load(args)
        names = [n for n, es in cfg.effect_sets() if es != "wild"]
        if args.effect not in names:
            raise ConfigError(f"--effect: {args.effect!r} is not among this config's effects; valid: {', '.join(names)}")
        over = {k: getattr(args, k) for k in ("steps", "axes", "span", "inputs", "references")
                if getattr(args, k) is not None}
        lat = dataclasses.asdict(cfg.latent) | over | {"effects": [args.effect], "hedged": bool(args.hedged)}
        study_only = args.system in cfg.latent.train and args.system not in cfg.system_names()
        lat.update(systems=[] if study_only else [args.system], train=[args.system] if study_only else [])
        cfg.latent = parse_section(type(cfg.latent), lat, "latent")
        out = out_dir(args)
        if not study_only:
            if args.system not in cfg.system_names():
                cfg.systems["include"] = [*cfg.system_names(), args.system]
            check_sections(cfg)
            prepare_system(args.system, Plan.build(cfg), out)  # the checkpoint `run --out` uses
        warnings = run_study(cfg, out, device=resolve_device(cfg.run.device), standalone=True)
        for w in warnings:
            print(f"warning: {w}")
        d = out / "latent"
        slug = file_slug(args.effect, args.system)
        summary = d / f"{slug}_summary.csv"
        if warnings or not summary.exists():
            return 1
        s = pd.read_csv(summary).iloc[0]
        print(f"studied {s['controller']} ({s['space']}, {int(s['dims'])} dims) on {args.effect}")
        print(s["verdict"])
        for a in pd.read_csv(d / f"{slug}_axes.csv").itertuples(index=False):
            a = a._asdict()
            print(f"  {a['axis']}: change {a['change']:.2f} spreads; "
                  + (f"moves {a['main_feature']} (selectivity {a['selectivity']:.2f})" if a["moves"] else "moves nothing")
                  + f"; main parameter {a['main_param']}")
        for p in sorted(d.glob(f"{slug}_*")):
            print(f"{p.name}: {p}")
        return 0
