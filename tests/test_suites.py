"""Every test suite is run by something: CI (`.ci/run`) or a command the README names with when to run it.

A marked suite that no check runs rots unseen (the slow suite did, issue 31). These tests read the project's own
files: the pytest markers declared in pyproject.toml and the ones the tests use, the tox environments and what their
commands select, the environments `.ci/run` calls, and the README's table of suites CI does not run.
"""

from __future__ import annotations

import configparser
import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_DIRS = ("tests", "bench/perf")


def declared_markers() -> dict[str, str]:
    """pyproject's markers -> their descriptions."""
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    return dict(m.split(":", 1) for m in ini["markers"])


def default_deselected() -> set[str]:
    """The markers that pyproject's addopts leaves out of a plain `pytest` (`-m 'not slow and not ...'`)."""
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    args = shlex.split(ini.get("addopts", ""))
    expr = args[args.index("-m") + 1] if "-m" in args else ""
    return set(re.findall(r"not\s+(\w+)", expr))


def used_markers() -> set[str]:
    """Every custom marker a test file applies (`pytest.mark.<name>`, builtin ones left out)."""
    builtin = {"parametrize", "skip", "skipif", "xfail", "usefixtures", "filterwarnings"}
    found = set()
    for d in TEST_DIRS:
        for f in (ROOT / d).rglob("*.py"):
            found |= set(re.findall(r"pytest\.mark\.(\w+)", f.read_text()))
    return found - builtin


def tox_envs() -> dict[str, str]:
    """tox env -> its commands (the bare [testenv]'s are inherited by an env that sets none)."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT / "tox.ini")
    base = cp.get("testenv", "commands", fallback="")
    envs = {"py": base}
    for section in cp.sections():
        if section.startswith("testenv:"):
            envs[section.split(":", 1)[1]] = cp.get(section, "commands", fallback=base)
    return envs


def runs_tests(commands: str) -> bool:
    return "pytest" in commands or "run_marked.py" in commands


def selected_markers(commands: str) -> set[str]:
    """The markers an env's commands select: `run_marked.py MARKER` or `pytest -m MARKER`."""
    return set(re.findall(r"run_marked\.py\s+(\w+)", commands)) | set(re.findall(r"-m\s+['\"]?(\w+)", commands))


def ci_envs() -> set[str]:
    text = (ROOT / ".ci" / "run").read_text()
    return set(re.findall(r"tox\s+-e\s+(\w+)", text))


def readme_not_in_ci() -> dict[str, str]:
    """The README's "Suites CI does not run" table: tox env -> when to run it."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"^### Suites CI does not run\n(.*?)(?=^#|\Z)", text, re.S | re.M)
    assert m, "README.md has no '### Suites CI does not run' section"
    rows = {}
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        env = re.search(r"`tox -e (\w+)", cells[0]) if len(cells) >= 3 else None
        if env:
            rows[env.group(1)] = cells[-1]
    return rows


def test_every_marker_a_test_uses_is_declared():
    missing = used_markers() - set(declared_markers())
    assert not missing, f"markers used by tests but not declared in pyproject.toml: {sorted(missing)}"


def test_every_test_env_is_run_by_ci_or_documented():
    ci, documented = ci_envs(), readme_not_in_ci()
    assert "py" in ci, ".ci/run must run the README's test command (tox -e py)"
    for env, commands in tox_envs().items():
        if runs_tests(commands):
            assert env in ci or env in documented, (
                f"tox -e {env} runs tests, but neither .ci/run nor the README's 'Suites CI does not run' names it")
    for env, when in documented.items():
        assert env in tox_envs(), f"the README names tox -e {env}, which tox.ini does not define"
        assert when, f"the README names tox -e {env} without saying when to run it"


def test_every_deselected_marker_has_a_suite_that_runs():
    """A marker that a plain `pytest` leaves out must be selected by an env CI runs, or a documented one."""
    envs, ci, documented = tox_envs(), ci_envs(), readme_not_in_ci()
    for marker in default_deselected():
        runners = [e for e, c in envs.items() if marker in selected_markers(c)]
        assert runners, f"tests marked {marker!r} are left out by default and no tox env selects them"
        assert any(e in ci or e in documented for e in runners), (
            f"tests marked {marker!r} run only in {runners}, which neither .ci/run nor the README names")


def test_the_slow_suite_runs_in_ci():
    assert "slow" in ci_envs(), ".ci/run must run tox -e slow (issue 31: the slow suite rotted when nothing ran it)"


def test_the_readers_see_what_they_claim():
    """The checks above would pass vacuously if the parsers found nothing: they must see the known suites."""
    assert {"slow", "browser", "perf"} <= default_deselected()
    assert {"slow", "browser", "perf"} <= set(declared_markers())
    assert selected_markers(tox_envs()["slow"]) == {"slow"}
    assert {"py", "lint"} <= ci_envs()
    assert "perf" in readme_not_in_ci()
