"""`afx-bench power` (sources needed and the smallest detectable effect, per primary comparison of a run) and
`afx-bench compare` (two runs side by side, per cell and per primary comparison). Both read stored results only."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.commands import Command, register_command


@register_command("power")
class Power(Command):
    help = "per primary comparison of a (pilot) run: sources needed for the power asked and the smallest detectable effect"
    description = ("Reads RESULTS/primary.csv (or computes it from RESULTS/scores.parquet) and prints, per primary "
                   "comparison, the observed difference and standardised effect d_z, the sources needed to detect "
                   "that effect with the asked power at alpha / m (Holm's first level over the m comparisons "
                   "tested), and the smallest difference the run's own sources could detect (docs/report.md).")

    def add_arguments(self, p):
        p.add_argument("--out", required=True, help="the results directory of a (pilot) run")
        p.add_argument("--power", type=float, help="the power asked for (default: the run's analysis.power, 0.8)")
        p.add_argument("--alpha", type=float, help="the family-wise alpha (default: the run's analysis.alpha)")
        p.add_argument("--csv", help="also write the table to this CSV file")

    def __call__(self, args) -> int:
        import pandas as pd

        from reports import primary as P
        from reports.results import ReportError

        try:
            table, config = P.load(Path(args.out))
        except ReportError as e:
            print(f"power: {e}", file=sys.stderr)
            return 2
        a = P.analysis_of(config)
        power = args.power if args.power is not None else a.power
        alpha = args.alpha if args.alpha is not None else a.alpha
        if not (0 < power < 1 and 0 < alpha < 0.5):
            print(f"power: --power in (0, 1) and --alpha in (0, 0.5), got {power}, {alpha}", file=sys.stderr)
            return 2
        t = P.needed_sources(table, alpha=alpha, power=power)
        if t.empty:
            print("power: no primary comparison was tested in this run (see its primary.csv notes)", file=sys.stderr)
            return 1
        if args.csv:
            t.to_csv(args.csv, index=False)
        m = len(t)
        print(f"{args.out}: {m} primary comparisons tested; power {power:.0%} at alpha {alpha} / {m} = "
              f"{alpha / m:.2g} (Holm's first level). d_z = mean / sd of the per-source differences; "
              "'sources needed' assumes the run's sd and its observed d_z; 'detectable' is the smallest difference "
              "(in the metric's units) its own sources detect with that power.\n")
        show = pd.DataFrame({
            "comparison": t["comparison"], "effects": t["effect_set"], "metric": t["metric"],
            "diff": t["diff"].map("{:+.4g}".format), "d_z": t["effect_size"].map("{:+.3g}".format),
            "sources": t["n_sources"].astype(int), "seeds": t["n_seeds"].astype(int),
            "sources needed": t["sources_needed"].map(_count), "detectable": t["detectable"].map("{:.4g}".format),
            "verdict": t["verdict"]})
        with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_colwidth", 40):
            print(show.to_string(index=False))
        return 0


def _count(x: float) -> str:
    if x != x:  # NaN
        return "n/a"
    return "unbounded (d_z = 0)" if x == float("inf") else f"{int(x)}"


@register_command("compare")
class Compare(Command):
    help = "two runs side by side: cells and primary comparisons that differ beyond their intervals"
    description = ("Compares RESULTS_A and RESULTS_B per cell (system x task x metric of summary.csv, main metrics "
                   "only: no cost counter) and per primary comparison (primary.csv): identical, within the "
                   "intervals (they overlap), or differs (they do not; a changed verdict; a cell without an "
                   "interval whose mean changed; in one run only). Exit status 1 when anything differs, so a rerun "
                   "can be checked in a script (docs/report.md).")

    def add_arguments(self, p):
        p.add_argument("a", metavar="RESULTS_A")
        p.add_argument("b", metavar="RESULTS_B")
        p.add_argument("--all", action="store_true", help="list every differing cell (default: the first 40)")
        p.add_argument("--csv", metavar="PREFIX", help="also write PREFIX_cells.csv and PREFIX_primary.csv")

    def __call__(self, args) -> int:
        from reports.compare import compare_runs, report
        from reports.results import ReportError

        try:
            c = compare_runs(Path(args.a), Path(args.b))
        except (ReportError, OSError, ValueError) as e:
            print(f"compare: {e}", file=sys.stderr)
            return 2
        if args.csv:
            c.cells.to_csv(f"{args.csv}_cells.csv", index=False)
            c.primary.to_csv(f"{args.csv}_primary.csv", index=False)
        print(report(c, Path(args.a), Path(args.b), limit=10**9 if args.all else 40))
        return 1 if c.flagged else 0
