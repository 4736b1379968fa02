"""`afx-bench run | report | data | ui | latent | sweep` (also `python -m bench`).

Heavy libraries (torch, mlflow) are imported only inside the commands that need them, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _csv(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="quick", help="smoke | quick | full (default: quick)")
    p.add_argument("--config", help="a TOML file merged over the preset")
    p.add_argument("--out", help="results directory (default: results/<preset>)")
    p.add_argument("--systems", help="comma-separated systems (default: the preset's)")
    p.add_argument("--effects", help="comma-separated effects (default: the preset's seen + unseen sets)")
    p.add_argument("--corpora", help="comma-separated corpora: speech, music, folder:PATH, pairs:PATH")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set tasks.n_test=32 (repeatable)")
    p.add_argument("--params-from", help="a best_params.toml written by `afx-bench sweep`")


def load(args):
    from bench.config import load_config

    sets = list(args.sets)
    if getattr(args, "params_from", None):
        import tomllib

        path = Path(args.params_from)
        if not path.is_file():
            from bench.config import ConfigError

            raise ConfigError(f"--params-from: no such file {path}")
        best = tomllib.loads(path.read_text())
        for system, params in best.get("systems", {}).items():
            for k, v in params.items():
                sets.insert(0, f"systems.{system}.{k}={_toml_value(v)}")
    return load_config(args.preset, file=args.config, sets=sets, systems=_csv(args.systems),
                       effects=_csv(args.effects), corpora=_csv(args.corpora), device=args.device)


def _toml_value(v) -> str:
    import json

    return json.dumps(v) if not isinstance(v, bool) else ("true" if v else "false")


def out_dir(args) -> Path:
    return Path(args.out) if args.out else Path("results") / args.preset


def cmd_run(args) -> int:
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
            path = build_report(out)
            print(f"report: {path}")
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


def cmd_data(args) -> int:
    from bench.runner import Grid

    cfg = load(args)
    grid = Grid.build(cfg)
    for label, corpus in grid.corpora.items():
        man = corpus.manifest()
        n = {s: sum(1 for r in man["sources"] if r["split"] == s) for s in ("train", "valid", "test")}
        print(f"{label}: {n} sources at {corpus.sample_rate} Hz")
    for t in grid.test:
        t.examples(cfg.tasks.n_test, progress=cfg.run.progress)
        print(f"{t.id}: {cfg.tasks.n_test} test examples cached")
    return 0


def cmd_ui(args) -> int:
    import subprocess

    from bench.tracking import default_uri

    out = Path(args.out)
    if not (out / "mlflow.db").exists():
        print(f"no MLflow store at {out / 'mlflow.db'}; run `afx-bench run --out {out}` first", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", default_uri(out),
           "--host", "127.0.0.1", "--port", str(args.port)]
    print(f"MLflow UI on http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    return subprocess.call(cmd)


def cmd_report(args) -> int:
    from reports.build import build_report

    path = build_report(Path(args.out))
    print(f"report: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="afx-bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="train/load every system and evaluate the grid")
    _config_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("data", help="generate and cache the corpora and test examples")
    _config_args(p)
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("ui", help="the MLflow UI for a results directory, on 127.0.0.1")
    p.add_argument("--out", required=True)
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("report", help="build the report from stored results")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)

    for extra in ("bench.sweep", "models.proposed.latent"):  # commands contributed by other parts
        try:
            mod = __import__(extra, fromlist=["add_command"])
        except ImportError:
            continue
        mod.add_command(sub, _config_args)

    args = parser.parse_args(argv)
    from bench.config import ConfigError
    from bench.registry import UnknownName

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
