"""`afx-bench run` (train or load every system, score the grid, build the report) and `afx-bench data`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.commands import Command, config_args, load, out_dir, register_command


@register_command("run")
class Run(Command):
    help = "train/load every system and evaluate the grid"

    def add_arguments(self, p):
        config_args(p)
        p.add_argument("--strict", action="store_true",
                       help="exit 1 if any cell failed (without it: only if every cell failed)")
        p.add_argument("--profile", action="store_true",
                       help="write OUT/profile.json and print where the run's wall and CPU time went (stages, "
                            "trainings, cells, metrics) and how busy the cores were")

    def __call__(self, args) -> int:
        from contextlib import nullcontext

        from bench.runner import Runner

        cfg = load(args)
        out = out_dir(args)
        print(f"afx-bench run: preset {cfg.preset}, results in {out}")
        profile = None
        if args.profile:
            from bench.perf.profile import Profile

            profile = Profile()
        beside = ReportBeside(out) if cfg.run.report and cfg.studies else None
        runner = Runner(cfg, out, profile=profile, after_grid=beside.start if beside is not None else None)
        try:
            summary = runner.run()
        except BaseException:
            if beside is not None:
                beside.cancel()
            raise
        print_summary(summary, out)
        if cfg.run.report:
            try:
                from reports.build import build_report
            except ImportError:
                pass
            else:
                with profile.stage("report") if profile is not None else nullcontext():
                    if beside is None or not beside.finish():  # never lose the report: build it here instead
                        print(f"report: {build_report(out)}")
        if profile is not None:
            from bench.perf.profile import table, write

            p = profile.finish()
            print(table(p))
            print(f"profile: {write(p, out)}")
        if runner.failed:
            print(f"{runner.failed} of {runner.cells} cell(s) failed; see {out / 'failures.csv'}", file=sys.stderr)
        if runner.cells and runner.failed == runner.cells:
            print("every cell failed", file=sys.stderr)
            return 1
        return 1 if args.strict and runner.failed else 0


class ReportBeside:
    """The report built in a child process while the run's studies go on (issue 28: the studies leave a core idle
    for most of their time, and the report needs them only for its last sections). The child builds everything
    from the grid's tables and waits for ``marker`` (written by :meth:`finish`) before reading the studies'
    folders. A child that fails, or that never started, leaves the report to the driver."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.marker = self.out / f".studies-done-{os.getpid()}"
        self.log = self.out / f".report-beside-{os.getpid()}.log"  # a file, not a pipe: nobody reads it until the end
        self.proc = None

    def start(self) -> None:
        import subprocess

        self.marker.unlink(missing_ok=True)
        try:
            with open(self.log, "w") as log:
                self.proc = subprocess.Popen([sys.executable, "-m", "bench", "report", "--out", str(self.out),
                                              "--after-studies", str(self.marker)], stdout=log, stderr=subprocess.STDOUT)
        except OSError as e:
            print(f"report: could not start beside the studies ({e}); built after them", file=sys.stderr)

    def finish(self) -> bool:
        """Let the child read the studies, wait for it and pass on what it printed; True if it built the report."""
        if self.proc is None:
            return False
        self.marker.touch()
        try:
            self.proc.wait()
            print(self.log.read_text(errors="replace").rstrip())
        finally:
            self.marker.unlink(missing_ok=True)
            self.log.unlink(missing_ok=True)
        if self.proc.returncode != 0:
            print(f"report: the report built beside the studies failed (exit {self.proc.returncode}); building it "
                  "again", file=sys.stderr)
        return self.proc.returncode == 0

    def cancel(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.marker.unlink(missing_ok=True)
        self.log.unlink(missing_ok=True)


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
    help = "generate and cache the corpora and test examples; `data check CORPUS...` lists unusable files"

    def add_arguments(self, p):
        p.add_argument("action", nargs="?", choices=("cache", "check"), default="cache",
                       help="cache (default): render and cache every corpus and test set; check: check the files "
                            "of the named corpora (or the config's) and list those a run leaves out, running nothing")
        p.add_argument("labels", nargs="*", metavar="CORPUS", help="with check: corpora to check, e.g. folder:PATH")
        config_args(p)

    def __call__(self, args) -> int:
        from bench.plan import Plan

        cfg = load(args)
        if args.action == "check":
            return check_corpora(cfg, args.labels)
        plan = Plan.build(cfg)
        for label, corpus in plan.corpora.items():
            man = corpus.manifest()
            n = {s: sum(1 for r in man["sources"] if r["split"] == s) for s in ("train", "valid", "test")}
            print(f"{label}: {n} sources at {corpus.sample_rate} Hz")
        for t in plan.test:
            t.examples(plan.n_examples, progress=cfg.run.progress)
            print(f"{t.id}: {plan.n_examples} {plan.split} examples cached")
        return 0


def check_corpora(cfg, labels: list[str]) -> int:
    """Plan each corpus (which checks its files) and list what is left out and why; 1 if any file is."""
    import warnings

    from bench.corpora import CorpusWarning, expand_label, get_corpus

    d = cfg.data
    labels = labels or list(dict.fromkeys([c for c, _ in cfg.corpora()] + cfg.train_corpora()))
    bad = 0
    for label in [x for lab in labels for x in expand_label(lab)]:
        corpus = get_corpus(label, sample_rate=cfg.run.sample_rate, seed=cfg.run.seed, test_seed=d.test_seed,
                            sources={"train": d.train_sources, "valid": d.valid_sources, "test": d.test_sources},
                            seconds=d.source_seconds, min_seconds=2 * cfg.run.segment_seconds)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CorpusWarning)
            specs = corpus.specs()
        n = {s: sum(x.split == s for x in specs) for s in ("train", "valid", "test")}
        print(f"{label}: {len(specs)} usable ({', '.join(f'{k} {v}' for k, v in n.items())}), "
              f"{len(corpus.left_out)} left out (files must decode, be finite, not silent and last at least "
              f"{corpus.required_seconds:g} s)")
        for b in corpus.left_out:
            print(f"  left out  {b.path}: {b.reason}")
        for b in corpus.notes:
            print(f"  note      {b.path}: {b.reason}")
        for w in caught:
            msg = str(w.message).removeprefix(f"{label}: ")
            if issubclass(w.category, CorpusWarning) and "left out " not in msg[:9]:
                print(f"  layout    {msg}")
        bad += len(corpus.left_out)
    return 1 if bad else 0
