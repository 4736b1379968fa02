"""The report in a real browser: headless Chromium loads report.html, and every table, figure and audio element
must load without errors (reports/browser.py drives Chromium over the DevTools protocol on a pipe).

Run with ``pytest -m browser tests/test_report_browser.py``. Needs Debian's ``chromium`` (or ``$AFX_CHROMIUM``);
skipped without it. By default it checks a report built from a synthetic results directory; set
``AFX_REPORT_OUT=<results dir>`` to check a real run's report instead (built first if missing). The screenshots
are saved beside the report (``report/screenshot.png`` and ``report/screenshot-full.png``) and, when
``AFX_SCREENSHOT_DIR`` is set, copied there too.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from reports.browser import check_report, find_chromium

pytestmark = pytest.mark.browser

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not found: install Debian's `chromium` package (apt-get install chromium) "
                             "or point AFX_CHROMIUM at a Chromium/Chrome binary")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from reports.build import build_report

    real = os.environ.get("AFX_REPORT_OUT")
    if real:
        out = Path(real)
        html = out / "report" / "report.html"
        return html if html.is_file() else build_report(out)
    from reports.synthetic import make_results

    out = make_results(tmp_path_factory.mktemp("results"), n=6, n_audio=3)
    return build_report(out, max_mel=3)


@needs_chromium
def test_report_loads_cleanly_in_chromium(report):
    shot = report.parent / "screenshot.png"
    res = check_report(report, screenshot=shot, binary=CHROMIUM)
    assert res.ok, "problems in the page:\n" + "\n".join(res.problems)
    figures = sorted(p.name for p in (report.parent / "figures").glob("*.png"))
    shown = {i["src"].split("/")[-1] for i in res.images if i["src"].startswith("figures/")}
    assert shown == set(figures)  # every figure is on the page, and loaded
    wavs = list((report.parent / "audio").rglob("*.wav"))
    assert len(res.audio) == len(wavs) and all(a["duration"] > 0 for a in res.audio)
    assert res.tables and all(t["rows"] > 0 for t in res.tables)
    cells = [c for t in res.tables for c in t["cells"]]
    assert cells and not any(c in ("", "nan", "NaN") for c in cells)
    assert shot.stat().st_size > 10_000 and res.screenshots[1].stat().st_size > shot.stat().st_size
    if os.environ.get("AFX_SCREENSHOT_DIR"):
        dst = Path(os.environ["AFX_SCREENSHOT_DIR"])
        dst.mkdir(parents=True, exist_ok=True)
        for p in res.screenshots:
            shutil.copy2(p, dst / p.name)


@needs_chromium
def test_the_check_catches_a_broken_page(report, tmp_path):
    broken = tmp_path / "report"
    shutil.copytree(report.parent, broken)
    png = next((broken / "figures").glob("*.png"))
    png.unlink()
    png.with_suffix(".pdf").unlink()  # linked from the figure
    wav = next((broken / "audio").rglob("*.wav"), None)
    if wav is not None:
        wav.write_bytes(b"not audio")
    html = broken / "report.html"
    html.write_text(html.read_text().replace("</body>", "<script>console.error('boom'); undefined_fn();</script>"
                                                       "</body>"))
    res = check_report(html, binary=CHROMIUM)
    text = "\n".join(res.problems)
    assert f"image did not load: figures/{png.name}" in text
    assert f"broken link: figures/{png.stem}.pdf" in text
    assert "console error: boom" in text and "JavaScript exception" in text
    if wav is not None:
        assert "audio did not load" in text
