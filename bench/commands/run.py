"""`afx-bench run` (train or load every system, score the grid, build the report) and `afx-bench data`."""

from __future__ import annotations

from pathlib import Path

from bench.commands import Command, config_args, load, out_dir, register_command


@register_command("run")
class Run(Command):
    help = "train/load every system and evaluate the grid"

    def add_arguments(self, p):
        config_args(p)

    def __call__(self, args) -> int:
        import pandas as pd

        from bench.runner import run

        cfg = load(args)
        out = out_dir(args)
        print(f"afx-bench run: preset {cfg.preset}, results in {out}")
        summary = run(cfg, out)
        print_summary(summary, out)
        if cfg.run.report:
            try:
                from reports.build import build_report
            except ImportError:
                pass
            else:
                print(f"report: {build_report(out)}")
        fails = pd.read_csv(out / "failures.csv") if (out / "failures.csv").exists() else None
        if fails is not None and len(fails):
            print(f"{len(fails)} cell(s) failed; see {out / 'failures.csv'}")
        return 0


def print_summary(summary, out: Path) -> None:
    import pandas as pd

    if summary.empty:
        print("no results")
        return
    main = summary[~summary["metric"].str.contains("/")]
    table = main.groupby(["effect_set", "metric", "system"])["mean"].mean().unstack("system")
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print("\nmean over tasks (lower is better unless the metric says otherwise; NaN = not applicable):")
        print(table.to_string())
    print(f"\nscores:  {out / 'scores.parquet'}\nsummary: {out / 'summary.csv'}\n"
          f"MLflow:  afx-bench ui --out {out}")


@register_command("data")
class Data(Command):
    help = "generate and cache the corpora and test examples"

    def add_arguments(self, p):
        config_args(p)

    def __call__(self, args) -> int:
        from bench.plan import Plan

        cfg = load(args)
        plan = Plan.build(cfg)
        for label, corpus in plan.corpora.items():
            man = corpus.manifest()
            n = {s: sum(1 for r in man["sources"] if r["split"] == s) for s in ("train", "valid", "test")}
            print(f"{label}: {n} sources at {corpus.sample_rate} Hz")
        for t in plan.test:
            t.examples(plan.n_examples, progress=cfg.run.progress)
            print(f"{t.id}: {plan.n_examples} {plan.split} examples cached")
        return 0
