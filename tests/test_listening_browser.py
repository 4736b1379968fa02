"""The listening test in a real browser: headless Chromium opens an exported test (index.html over file://),
three listeners play and rate every condition of its two trials, the ratings are read from the page's Blob
download link, and `afx-bench listen analyze` turns them into the report's listening section.

Run with ``python tests/run_marked.py browser tests/test_listening_browser.py``. Needs Debian's ``chromium`` (or
``$AFX_CHROMIUM``); skipped without it. The screenshot of a trial is saved beside the test (and copied to
``$AFX_SCREENSHOT_DIR`` when set).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from reports.browser import Chromium, check_report, find_chromium

pytestmark = pytest.mark.browser

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium not found: install Debian's `chromium` package (apt-get install chromium) "
                             "or point AFX_CHROMIUM at a Chromium/Chrome binary")

# what each listener gives each kind of condition; "L3" misses the hidden reference in every trial
RATINGS = {"L1": {"hidden_reference": 100, "anchor": 10, "proposed": 75},
           "L2": {"hidden_reference": 95, "anchor": 20, "proposed": 65},
           "L3": {"hidden_reference": 60, "anchor": 50, "proposed": 40}}
OTHER = 45  # every other system
SHOWN = ("(() => { const s = afxListen.state, t = window.AFX_LISTEN.trials[s.trial.index];"  # the trial on screen
         " return {id: t.id, conds: s.conds[s.trial.index].map(i => t.conditions[i])}; })()")


class Page:
    """One tab of a headless Chromium, driven over the DevTools protocol (reports.browser.Chromium)."""

    def __init__(self, b: Chromium):
        self.b = b
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.send(f"{domain}.enable", session=self.s)
        b.send("Emulation.setDeviceMetricsOverride", {"width": 1100, "height": 760, "deviceScaleFactor": 1,
                                                      "mobile": False}, session=self.s)

    def open(self, url: str) -> None:
        with self.b._cv:
            self.b.events.clear()
        nav = self.b.send("Page.navigate", {"url": url}, session=self.s)
        assert not nav.get("errorText"), nav
        self.b.wait_event("Page.loadEventFired", self.s, 30)

    def js(self, expr: str, *, gesture: bool = False):
        out = self.b.send("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True,
                                               "userGesture": gesture}, session=self.s, timeout=30)
        assert "exceptionDetails" not in out, out["exceptionDetails"]
        return out["result"].get("value")

    def click(self, element_id: str) -> None:  # a user gesture, as a listener's click (audio may play)
        self.js(f"document.getElementById({json.dumps(element_id)}).click()", gesture=True)

    def until(self, cond: str, timeout_ms: int = 15000) -> bool:
        return self.js(f"new Promise(res => {{ const t0 = Date.now(); (function poll() {{ if ({cond}) return res(true);"
                       f" if (Date.now() - t0 > {timeout_ms}) return res(false); setTimeout(poll, 20); }})(); }})")

    def problems(self) -> list[str]:
        with self.b._cv:
            events = [e for e in self.b.events if e.get("sessionId") == self.s]
        out = []
        for e in events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console error: {p.get('args')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(f"log error: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                out.append(f"request failed: {p.get('errorText')}")
        return out

    def screenshot(self, path: Path) -> None:
        shot = self.b.send("Page.captureScreenshot", {"format": "png"}, session=self.s)
        path.write_bytes(base64.b64decode(shot["data"]))


def take_test(page: Page, index: Path, listener: str, shot: Path | None = None) -> tuple[str, list]:
    """Open the test as ``listener``, play and rate every condition of every trial, finish and return the CSV
    behind the page's save link, with the order the listener saw (trial, labels -> condition/system)."""
    page.open(index.as_uri() + f"?listener={listener}")
    assert page.js("!document.getElementById('start').hidden")
    page.click("start-button")
    assert page.js("!document.getElementById('trial').hidden")
    n = page.js("window.AFX_LISTEN.trials.length")
    seen = []
    for pos in range(n):
        trial = page.js(SHOWN)
        seen.append(trial)
        assert page.js("document.getElementById('next').disabled"), "Next must wait until every condition played"
        page.click("play-reference")
        assert page.until("document.getElementById('play-reference').getAttribute('aria-pressed') === 'true'")
        for k, cond in enumerate(trial["conds"]):
            label = "ABCDEFGHIJ"[k]
            if k == len(trial["conds"]) - 1:  # one left: still cannot go on
                page.click("next")
                assert page.js(f"afxListen.state.pos === {pos}")
                assert "not played yet: " + label in page.js("document.getElementById('status').textContent")
            page.click(f"play-{label}")
            assert page.until(f"afxListen.state.trial.played.has({k})"), f"{label} never played"
            kind = cond["condition"] if cond["condition"] != "system" else cond["system"]
            value = RATINGS[listener].get(kind, OTHER)
            page.js(f"(() => {{ const s = document.getElementById('rate-{label}'); s.value = {value};"
                    " s.dispatchEvent(new Event('input', {bubbles: true})); })()")
            assert page.js(f"document.getElementById('rate-{label}').getAttribute('aria-valuetext')").startswith(
                f"{value} (")
        assert not page.js("document.getElementById('next').disabled")
        if shot is not None and pos == 0:
            page.js("document.getElementById('play-A').click()", gesture=True)  # one condition playing
            page.until("document.getElementById('play-A').getAttribute('aria-pressed') === 'true'")
            page.screenshot(shot)
        page.click("next")
    assert page.until("!document.getElementById('done').hidden")
    href = page.js("document.getElementById('save').getAttribute('href')")
    assert href.startswith("blob:") and page.js("document.getElementById('save').download").startswith(
        f"ratings-{listener}-")
    text = page.js("fetch(document.getElementById('save').href).then(r => r.text())")
    return text, seen


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from reports.listening import export
    from reports.synthetic import make_results

    root = tmp_path_factory.mktemp("listen")
    results = make_results(root / "results", n=4, n_audio=2, latent=False)
    export(results, root / "test", n=2, seed=3)
    return results, root / "test"


@needs_chromium
def test_three_listeners_take_the_test_and_the_report_shows_it(exported):
    from bench.cli import main
    from reports.build import build_report

    results, test = exported
    shot = test / "screenshot-trial.png"
    csvs, orders = {}, {}
    with Chromium(CHROMIUM) as b:
        page = Page(b)
        for listener in RATINGS:
            csvs[listener], orders[listener] = take_test(page, test / "index.html", listener,
                                                         shot if listener == "L1" else None)
            assert page.problems() == [], page.problems()
        again = Page(b)  # the same listener id again: the same order
        again.open((test / "index.html").as_uri() + "?listener=L2")
        again.click("start-button")
        assert again.js("afxListen.state.order.map(i => window.AFX_LISTEN.trials[i].id)") == [
            t["id"] for t in orders["L2"]]
        assert again.js(SHOWN) == orders["L2"][0]
    assert shot.stat().st_size > 5_000
    if os.environ.get("AFX_SCREENSHOT_DIR"):
        dst = Path(os.environ["AFX_SCREENSHOT_DIR"])
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, dst / "listening-trial.png")
    assert orders["L1"] != orders["L2"], "the order is randomised per listener"

    spec = json.loads((test / "test.json").read_text())
    n_cond = len(spec["trials"][0]["conditions"])
    for listener, text in csvs.items():
        df = pd.read_csv(io.StringIO(text))
        assert list(df.columns) == ["listener", "trial", "position", "task", "example", "condition", "system",
                                    "label", "rating", "played", "plays", "order", "timestamp", "test_id"]
        assert len(df) == 2 * n_cond and set(df["listener"]) == {listener}
        assert (df["played"] == 1).all() and (df["plays"] >= 1).all() and (df["test_id"] == spec["test_id"]).all()
        hidden = df[df["condition"] == "hidden_reference"]["rating"]
        assert (hidden == RATINGS[listener]["hidden_reference"]).all()
        assert sorted(df[df["trial"] == df["trial"].iloc[0]]["order"]) == list(range(1, n_cond + 1))
        (test / "ratings" / f"ratings-{listener}.csv").write_text(text)

    rc = main(["listen", "analyze", *map(str, sorted((test / "ratings").glob("*.csv"))), "--results", str(results)])
    assert rc == 0
    table = pd.read_csv(results / "listening" / "listening.csv")
    row = table.set_index("system").loc["proposed"]
    assert row["mean"] == pytest.approx(70) and row["n_listeners"] == 2  # L3 screened out
    assert table.set_index("condition").loc["hidden_reference", "mean"] == pytest.approx(97.5)
    md = (test / "analysis" / "listening.md").read_text()
    assert "excluded 1 of 3" in md and "L3 (hidden reference below 90 in 2 of 2 trials)" in md

    html = build_report(results, n_resamples=200, max_mel=0)
    page_text = html.read_text()
    assert 'id="listening"' in page_text and "excluded 1 of 3" in page_text
    assert "## Listening test" in (html.parent / "tables.md").read_text()
    res = check_report(html, binary=CHROMIUM)
    assert res.ok, "problems in the report:\n" + "\n".join(res.problems)
    assert any(link.startswith("listening/") for link in res.links)
