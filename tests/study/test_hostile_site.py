"""A site built from hostile notes, opened in the real browser: no note can run code in a page.

Every text field of a few notes (title, the passes, formulas' `latex` and `meaning`, the
interview block, related links …) holds a payload: markup inside `\\text{}`, `\\href`, raw HTML,
`javascript:` links, forged math placeholders. The site (index + pages) and a combined document
are rendered and opened in headless Chromium. The marker `window.pwned` must stay undefined, and
no element may carry an `on*` attribute or a `javascript:` URL.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import pytest

from repro.lab.library import Library
from repro.study.publish import Request, publish

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "fixtures" / "library" / "toy"
CHROMIUM = next(
    (p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None
)
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium binary (apt-get install chromium; .ci/run does)"
)

MARK = "window.pwned=1"
PAYLOADS = [
    f'$\\text{{<img/src=x/onerror="{MARK}">}}$ and more',
    f"$\\text{{<script>{MARK}</script>}}$",
    "$\\text{<style>*{display:none}}$ after",
    f"$\\href{{javascript:{MARK}}}{{x}}$",
    f"$\\text{{</math><img src=x onerror={MARK}>}}$",
    f'<img src=x onerror="{MARK}"> raw',
    f"<script>{MARK}</script>",
    f'<svg onload="{MARK}"></svg>',
    f"[click](javascript:{MARK}) and ![x](javascript:{MARK})",
    f'[a](http://e.x/$y$ "t $z$") <a href="javascript:{MARK}">b</a>',
    "\ue0000\ue001 and \ue0007\ue001 and $x$ \ue0001\ue001",
    f"</title><script>{MARK}</script>",
    f"$\\style{{background:url(javascript:{MARK})}}{{x}}$ $\\class{{c}}{{y}}$",
    f"$\\url{{javascript:{MARK}}}$ `<b>$code$</b>` $$\\text{{<b onmouseover={MARK}>}}$$",
]
LATEX = [
    f'\\text{{<img/src=x/onerror="{MARK}">}}',
    f"\\href{{javascript:{MARK}}}{{y}}",
    "\\text{<style>*{display:none}}",
    f"\\text{{<script>{MARK}</script>}}",
]

# A line holding a text value of the toy note: `key: TODO …` or `- TODO …`
TEXT_LINE = re.compile(r"(?m)^(\s*(?:- )?[a-z_]+: |\s*- )(TODO[^\n]*)$")


def hostile_note(n: int) -> str:
    text = (TOY / "note.yaml").read_text(encoding="utf-8")
    payloads = itertools.cycle(PAYLOADS[n:] + PAYLOADS[:n])
    text = TEXT_LINE.sub(lambda m: m.group(1) + json.dumps(next(payloads)), text)
    text = text.replace('title: "Toy: a paper for tests"', f"title: {json.dumps(PAYLOADS[n])}")
    text = re.sub(r"(?m)^(\s*latex: ).*$", lambda m: m.group(1) + json.dumps(LATEX[n % 4]), text)
    text = text.replace("priority: core", "priority: must-know")  # in the pack and cheatsheet too
    others = [f"hostile-{(n + 1) % 3}", f"hostile-{n}", "nowhere"]
    return re.sub(r"(?m)^related: .*$", f"related: {json.dumps(others)}", text)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("hostile")
    for n in range(3):
        folder = root / "papers" / f"hostile-{n}"
        folder.mkdir(parents=True)
        shutil.copy(TOY / "repro.py", folder / "repro.py")
        (folder / "note.yaml").write_text(hostile_note(n), encoding="utf-8")
    library = Library(root / "papers")
    for paper in library.papers.values():
        paper.note  # noqa: B018 - every hostile note loads: the payloads are all printable
    runs = root / "runs"
    publish(library, runs, Request(all_papers=True, fmt="html", output=root / "site"))
    publish(library, runs, Request(all_papers=True, fmt="html", output=root / "all.html"))
    found = sorted((root / "site").glob("*.html")) + [root / "all.html"]
    assert len(found) >= 5  # index, three pages, the combined document (and any others)
    return found


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


ACTIVE = """() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      const v = a.value.replace(/[\\s\\u0000-\\u001f]/g, '').toLowerCase();
      if (a.name.toLowerCase().startsWith('on')) bad.push(el.tagName + ' ' + a.name);
      if (v.includes('javascript:')) bad.push(el.tagName + ' ' + a.name + '=' + a.value);
    }
  }
  for (const el of document.body.querySelectorAll('script, style, iframe, object, embed, img'))
    bad.push('body contains <' + el.tagName.toLowerCase() + '>');
  return bad;
}"""


def test_hostile_notes_run_nothing_in_the_browser(browser, pages) -> None:
    for path in pages:
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d, seen=dialogs: (seen.append(d.message), d.dismiss()))
        page.goto(path.as_uri(), wait_until="load")
        page.mouse.move(200, 200)  # hover handlers, if any survived
        page.wait_for_timeout(100)
        assert page.evaluate("typeof window.pwned") == "undefined", f"{path.name}: script ran"
        assert page.evaluate(ACTIVE) == [], path.name
        assert not dialogs
        if path.stem.startswith(("hostile-", "index", "all")):
            # the payloads are still there, as text the reader can see
            assert "onerror" in page.evaluate("document.body.textContent"), path.name
        page.close()


def test_the_marker_would_be_seen(browser, tmp_path: Path) -> None:
    """The check can fail: the same marker in a page that does run it is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(f'<!doctype html><body><img src=x onerror="{MARK}"></body>')
    page = browser.new_page()
    page.goto(bad.as_uri(), wait_until="load")
    page.wait_for_timeout(100)
    assert page.evaluate("window.pwned") == 1
    assert page.evaluate(ACTIVE)
    page.close()
