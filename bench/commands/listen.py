"""`afx-bench listen export|analyze`: a MUSHRA listening test (ITU-R BS.1534-3) of a run's stored audio.

    afx-bench listen export --out DIR [--results RESULTS_DIR] [--systems a,b] [--n N] [--seed S]
    afx-bench listen analyze DIR/ratings/*.csv [--results RESULTS_DIR] [--focus SYSTEM] [--report]

`export` writes a self-contained test into DIR (open DIR/index.html in any browser, no server); `analyze` screens
the listeners, writes DIR/analysis/listening.{csv,md} and, with --results, copies them to RESULTS_DIR/listening/
where the report shows them. The work is in :mod:`reports.listening`; docs/listening.md describes both.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.commands import Command, csv_list, register_command


@register_command("listen")
class Listen(Command):
    help = "a MUSHRA listening test of stored audio: `listen export --out DIR`, `listen analyze CSV...`"

    def add_arguments(self, p):
        sub = p.add_subparsers(dest="action", required=True)
        e = sub.add_parser("export", help="write a self-contained browser test (index.html) into --out")
        e.add_argument("--out", required=True, help="the test's folder (created; ratings/ in it is kept)")
        e.add_argument("--results", default="results/quick",
                       help="results directory whose stored audio is tested (default: results/quick)")
        e.add_argument("--systems", help="comma-separated systems rated (default: every stored system that is "
                                         "not a floor, the oracle or a labelled variant)")
        e.add_argument("--n", type=int, default=10, help="trials: stored examples, spread over tasks (default: 10)")
        e.add_argument("--seed", type=int, default=0, help="which examples, and the files' names (default: 0)")
        e.add_argument("--lufs", type=float, default=-23.0,
                       help="common integrated loudness of a trial's clips, lowered when a clip would clip "
                            "(default: -23)")
        a = sub.add_parser("analyze", help="post-screen the ratings, per-condition means with CIs, paired tests")
        a.add_argument("ratings", nargs="+", help="the CSV files the page saved (or folders of them)")
        a.add_argument("--dir", help="the test's folder; analysis/ is written there (default: the folder above "
                                     "ratings/, else the first CSV's folder)")
        a.add_argument("--results", help="also copy listening.csv/.md into RESULTS_DIR/listening/ for the report")
        a.add_argument("--focus", help="the system tested against every other condition (default: proposed, "
                                       "else the first rated system that is not a floor)")
        a.add_argument("--report", action="store_true", help="rebuild RESULTS_DIR/report/ afterwards")

    def __call__(self, args) -> int:
        from reports import listening as L

        if args.action == "export":
            if args.n < 1:
                print("listen export: --n must be at least 1", file=sys.stderr)
                return 2
            try:
                spec = L.export(Path(args.results), Path(args.out), systems=csv_list(args.systems), n=args.n,
                                seed=args.seed, level=args.lufs)
            except (ValueError, OSError) as e:
                print(f"listen export: {e}", file=sys.stderr)
                return 2
            trials = spec["trials"]
            print(f"listening test: {len(trials)} trials x {len(trials[0]['conditions'])} conditions "
                  f"(hidden reference, anchor, {', '.join(spec['systems'])}); open {Path(args.out) / 'index.html'}")
            if len(trials) < args.n:
                print(f"note: only {len(trials)} stored examples have every clip (asked for {args.n})")
            return 0
        paths = []
        for r in map(Path, args.ratings):
            paths += sorted(r.glob("*.csv")) if r.is_dir() else [r]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing or not paths:
            print(f"listen analyze: no such ratings file: {', '.join(missing) or args.ratings}", file=sys.stderr)
            return 2
        first = paths[0].resolve().parent
        test_dir = Path(args.dir) if args.dir else (first.parent if first.name == "ratings" else first)
        try:
            analysis = L.analyse(L.read_ratings(paths), focus=args.focus)
        except (ValueError, OSError) as e:
            print(f"listen analyze: {which_file(e, paths, L.read_ratings)}", file=sys.stderr)
            return 2
        written = L.write_analysis(analysis, test_dir / "analysis")
        print(L.summary_text(analysis))
        for n in analysis.notes:
            print(n)
        print(f"written: {', '.join(str(p) for p in written)}")
        if args.results:
            dst = L.copy_to_results(test_dir / "analysis", Path(args.results))
            print(f"copied to {dst}: the report shows it (afx-bench report --out {args.results})")
            if args.report:
                from reports.build import build_report

                print(f"report: {build_report(Path(args.results))}")
        elif args.report:
            print("listen analyze: --report needs --results", file=sys.stderr)
            return 2
        return 0


def which_file(error: Exception, paths: list, read) -> str:
    """The error as one line that names the ratings file it came from (read alone, the culprit fails again)."""
    text = " ".join(str(error).split())
    if any(str(p) in text or p.name in text for p in paths):
        return text
    for p in paths:
        try:
            read([p])
        except (ValueError, OSError) as e:
            return f"{p}: {' '.join(str(e).split())}"
    return text
