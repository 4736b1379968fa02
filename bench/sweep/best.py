"""``best_params.toml``: the best trial's config overrides per swept system (what ``afx-bench run --params-from``
applies) and where they come from. A tiny TOML writer, since the standard library only reads TOML."""

from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path

HEADER = ("Best hyper-parameters found by `afx-bench sweep`; apply with `afx-bench run --params-from FILE`.\n"
          "[systems.NAME] holds config overrides; [sweep.NAME] says which study and trial they come from.")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if hasattr(v, "item"):  # numpy scalars
        return toml_value(v.item())
    raise TypeError(f"cannot write {v!r} ({type(v).__name__}) as a TOML value")


def dump_toml(tables: dict[str, dict[str, dict]], header: str = "") -> str:
    """``{"systems": {"proposed": {"lr": 1e-3}}}`` -> TOML with one ``[top.name]`` table per entry."""
    lines = [f"# {h}" for h in header.splitlines()] + ([""] if header else [])
    for top, entries in tables.items():
        for name, values in entries.items():
            lines.append(f"[{_toml_key(top)}.{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items()]
            lines.append("")
    return "\n".join(lines)


def write_best_params(path: Path, system: str, params: dict, provenance: dict) -> None:
    """Set ``[systems.<system>]`` (what ``--params-from`` applies) and ``[sweep.<system>]`` (where it came
    from) in ``path``, keeping the other systems' tables."""
    import tomllib

    from bench.cache import atomic_write_bytes

    path = Path(path)
    old: dict = {}
    if path.is_file():
        with contextlib.suppress(tomllib.TOMLDecodeError, OSError):
            old = tomllib.loads(path.read_text())
    tables = {"systems": dict(old.get("systems", {})), "sweep": dict(old.get("sweep", {}))}
    tables["systems"][system] = dict(params)
    tables["sweep"][system] = dict(provenance)
    atomic_write_bytes(path, dump_toml(tables, HEADER).encode())
