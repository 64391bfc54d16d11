"""The HTML report in a real headless Chromium (the Debian package, /usr/bin/chromium):
the page renders offline, its script runs (it fills the count of shown decisions and
marks <body data-ready="1">), a filter given in the URL fragment hides the other
decisions, markup from the log stays text, the Content-Security-Policy stops a planted
script and planted loads (a control run without it shows they would happen), and a screenshot is kept in artifacts/ (git-ignored) for a
person to look at. Chromium missing is a failure that says how to install it, never a
skip: .ci/run installs it first."""

from __future__ import annotations

import os
import re
import struct
import sys
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

import reportcases
from engine import cli, load_policy
from engine.policy import AuditSettings

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
INSTALL = "apt-get update && apt-get install -y --no-install-recommends chromium"
ARTIFACTS = ROOT / "artifacts"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         # Chromium still pings its update and sign-in services: no name (or address) resolves,
         # so nothing leaves the machine
         "--host-resolver-rules=MAP * ~NOTFOUND")
#: loads and a script a forger might plant in the page; the CSP must stop every one
PLANTED = ('<script>document.body.setAttribute("data-pwned","inline");fetch("http://127.0.0.1:9/planted-fetch")'
           '</script><img src="http://127.0.0.1:9/planted.png"><link rel=stylesheet '
           'href="http://127.0.0.1:9/planted.css"></body>')


def chromium() -> Path:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: the HTML report is tested in a real browser; install the Debian "
                    f"package with `{INSTALL}` (as root; .ci/run does this before the tests)", pytrace=False)
    return CHROMIUM


def browse(url: str, profile: Path, *extra: str) -> str:
    """Chromium's output for ``url`` (with --dump-dom: the DOM after the scripts ran)."""
    done = subprocess.run([str(chromium()), *FLAGS, f"--user-data-dir={profile}", *extra, url],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    text: str = ""


class Dom(HTMLParser):
    """The elements of a dumped DOM, each with its own direct text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[Element] = []
        self.stack: list[Element] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, dict(attrs))
        self.elements.append(el)
        if tag not in ("meta", "input", "br", "img", "line", "rect", "link"):
            self.stack.append(el)

    def handle_endtag(self, tag: str) -> None:
        while self.stack and self.stack.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.stack[-1].text += data

    def by_id(self, ident: str) -> Element:
        return next(e for e in self.elements if e.attrs.get("id") == ident)

    @property
    def body(self) -> Element:
        return next(e for e in self.elements if e.tag == "body")

    def visible(self, tag: str, marker: str) -> list[str | None]:
        """``id`` (cards) or ``data-ref`` (rows) of the elements with ``marker`` not hidden."""
        return [e.attrs.get("id") or e.attrs.get("data-ref") for e in self.elements
                if e.tag == tag and marker in e.attrs and "hidden" not in e.attrs]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The signed test log's report, written with paths relative to its folder (so the
    screenshot names no folder of this machine)."""
    folder = tmp_path_factory.mktemp("browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        policy = load_policy("policies/support-assistant.yaml").replace(audit=AuditSettings(store_content=True))
        made = reportcases.build(folder, policy)
        mp.chdir(folder)
        code = cli.main(["audit", "report", "logs/decisions.jsonl", "--out", "report.html",
                         "--key", str(made.public_key)])
    assert code == 6  # the tampered record
    yield folder / "report.html"


def test_the_report_renders_offline_and_its_script_runs(report: Path, tmp_path: Path) -> None:
    dom = Dom(browse(report.as_uri(), tmp_path / "profile", "--dump-dom"))
    body = dom.body.attrs
    assert body["data-ready"] == "1" and body["data-shown"] == "6" and body["data-filter"] == ""
    assert dom.by_id("shown").text == "6"  # "?" in the file: the script filled it
    assert "data-pwned" not in body  # neither the tampered record's <script> nor the <img onerror> ran
    assert [e.tag for e in dom.elements].count("script") == 1 and not any(e.tag == "img" for e in dom.elements)
    ids = [e.text for e in dom.elements if e.tag == "a" and e.attrs.get("class") == "id"]
    assert reportcases.SCRIPT_ID in ids  # the forged id, shown as the text it is
    cells = [e.text for e in dom.elements if e.tag == "td" and e.attrs.get("class") == "id"]
    assert reportcases.IMG_ID in cells and "kb#<U+202E>txt.exe" in cells
    tampered = dom.by_id("d-5")
    assert tampered.attrs["data-checks"] == "failed" and tampered.attrs["data-sig"] == "unsigned"


@pytest.mark.parametrize(("fragment", "cards", "active"), [
    ("#status=fallback", ["d-3"], "status=fallback"),
    ("#sig=unsigned&reason=source_cap", ["d-4", "d-5"], "reason=source_cap&sig=unsigned"),
    ("#q=crm%23ticket-991&sig=signed", ["d-0"], "sig=signed&q=crm#ticket-991"),
])
def test_a_filter_in_the_url_fragment_hides_the_other_decisions(report: Path, tmp_path: Path, fragment: str,
                                                               cards: list[str], active: str) -> None:
    dom = Dom(browse(report.as_uri() + fragment, tmp_path / "profile", "--dump-dom"))
    assert dom.visible("section", "data-decision") == cards
    assert dom.visible("tr", "data-ref") == cards  # the index table follows the cards
    assert dom.body.attrs["data-shown"] == str(len(cards)) and dom.by_id("shown").text == str(len(cards))
    assert dom.body.attrs["data-filter"] == active  # read from the fragment, decoded


def planted(report: Path, tmp_path: Path, *, csp: bool) -> tuple[dict[str, str | None], str]:
    """(body attributes, network log) of the report with :data:`PLANTED` in it (and its
    Content-Security-Policy meta removed when ``csp`` is false)."""
    html = report.read_text(encoding="utf-8").replace("</body>", PLANTED)
    if not csp:
        html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    page = tmp_path / "planted.html"
    page.write_text(html, encoding="utf-8")
    netlog = tmp_path / "netlog.json"
    dom = Dom(browse(page.as_uri(), tmp_path / "profile", "--dump-dom", f"--log-net-log={netlog}"))
    return dom.body.attrs, netlog.read_text(encoding="utf-8")


def test_the_csp_stops_a_planted_script_and_every_planted_load(report: Path, tmp_path: Path) -> None:
    body, netlog = planted(report, tmp_path, csp=True)
    assert body["data-ready"] == "1"  # the page's own script ran (its hash is in the CSP)
    assert "data-pwned" not in body  # not run
    assert not [u for u in ("planted.png", "planted.css", "planted-fetch") if u in netlog]  # not even requested


def test_without_its_csp_the_planted_page_would_run_and_load(report: Path, tmp_path: Path) -> None:
    """The control: the check above can fail."""
    body, netlog = planted(report, tmp_path, csp=False)
    assert body.get("data-pwned") == "inline"
    assert "planted.png" in netlog and "planted.css" in netlog and "planted-fetch" in netlog


def test_screenshot_for_a_person_to_look_at(report: Path, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    browse(report.as_uri(), tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000",
           "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", data[16:24]) == (1280, 2000)
    assert len(data) > 50_000  # a page, not a blank
    print(f"report screenshot: {shot}")


def test_chromium_missing_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", Path("/nonexistent/chromium"))
    with pytest.raises(pytest.fail.Exception) as failed:
        chromium()
    assert str(failed.value) == ("/nonexistent/chromium is missing: the HTML report is tested in a real browser; "
                                 f"install the Debian package with `{INSTALL}` (as root; .ci/run does this before "
                                 "the tests)")
