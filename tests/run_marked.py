"""Run one marked suite (slow, browser, perf); "no test selected" (pytest's exit 5) is not a failure."""

import sys

import pytest

if __name__ == "__main__":
    marker, *rest = sys.argv[1:]
    rc = pytest.main(["-q", "-m", marker, "-p", "no:cacheprovider", *rest])
    sys.exit(0 if rc == pytest.ExitCode.NO_TESTS_COLLECTED else int(rc))
