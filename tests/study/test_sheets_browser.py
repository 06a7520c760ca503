"""The HTML sheets in a real browser: headless Chromium through Playwright, fully offline.

Every paper's page, the index, a Chinese page and the must-know pack (en, zh) must load with no
console error and no request at all, draw every <math> element, show no raw LaTeX, and (zh) draw
Chinese glyphs rather than empty boxes. Screenshots land in the test's temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.lab.doctor import find_browser
from repro.lab.library import Library
from repro.study.plots import save_line_plot
from repro.study.publish import Request, publish

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = find_browser()  # chromium or chromium-browser, as .ci/run looks for it
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium (chromium or chromium-browser; apt-get install chromium; .ci/run does)",
)

VISIBLE_TEXT = """() => {
  const body = document.body.cloneNode(true);
  body.querySelectorAll('math, code, pre, style, script, svg').forEach(e => e.remove());
  return body.textContent;
}"""

EMPTY_MATH = """() => Array.from(document.querySelectorAll('math')).filter(m => {
  const r = m.getBoundingClientRect(); return !(r.width > 0 && r.height > 0);
}).length"""

# Draw characters in the page's own font: two different CJK characters must give different
# pixels (a missing font draws both as the same empty box) and must leave ink.
CJK_DRAWN = """() => {
  const font = getComputedStyle(document.body).fontFamily;
  const canvas = document.createElement('canvas'); canvas.width = 48; canvas.height = 48;
  const g = canvas.getContext('2d');
  const draw = ch => { g.clearRect(0, 0, 48, 48); g.font = '32px ' + font;
    g.fillText(ch, 6, 38); return Array.from(g.getImageData(0, 0, 48, 48).data); };
  const a = draw('注'), b = draw('意'), box = draw('\\u{10FFFD}');
  const ink = px => px.some((v, i) => i % 4 === 3 && v > 0);
  const same = (x, y) => x.every((v, i) => v === y[i]);
  return ink(a) && ink(b) && !same(a, b) && !same(a, box);
}"""


PHONE_DARK = {"index", "lora", "must-know.zh"}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sheets")
    runs = root / "runs"
    run = runs / "lora" / "20260101T000000000000Z"
    run.mkdir(parents=True)
    (run / "claims.json").write_text(json.dumps([]))
    (run / "environment.json").write_text(json.dumps({"git_commit": "0" * 40}))
    save_line_plot(run / "curve.svg", {"lora": ([1, 2, 4], [0.5, 0.8, 0.9])}, "r", "acc", "acc")
    library = Library(REPO / "papers")
    publish(library, runs, Request(all_papers=True, fmt="html", output=root / "site"))
    publish(library, runs, Request(("transformer",), fmt="html", lang="zh",
                                   output=root / "transformer.zh.html"))  # fmt: skip
    for lang in ("en", "zh"):
        publish(library, runs, Request(must_know=True, fmt="html", lang=lang,
                                       output=root / f"must-know.{lang}.html"))  # fmt: skip
    found = {p.stem: p for p in sorted((root / "site").glob("*.html"))}
    found |= {p.name.removesuffix(".html"): p for p in root.glob("*.html")}
    return found


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def test_pages_render_offline_without_raw_latex(browser, pages, tmp_path: Path) -> None:
    assert {"index", "lora", "transformer", "must-know.en", "must-know.zh", "transformer.zh"} <= (
        pages.keys()
    )
    for name, path in pages.items():
        # every page on a desktop in light; a few also on a phone in dark
        looks = [("light", 1100)] + [("dark", 390)] * (name in PHONE_DARK)
        for scheme, width in looks:
            page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
            errors, requests = [], []
            page.on("console", lambda m, e=errors: m.type == "error" and e.append(m.text))
            page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
            page.on("request", lambda r, q=requests: q.append(r.url))
            url = path.as_uri()
            page.goto(url, wait_until="load")
            page.wait_for_timeout(50)
            others = [u for u in requests if u != url]
            assert not errors, f"{name}: console errors {errors}"
            assert not others, f"{name}: requests {others}"
            assert page.evaluate(EMPTY_MATH) == 0, f"{name}: a <math> element has no size"
            text = page.evaluate(VISIBLE_TEXT)
            for raw in ("\\frac", "\\mathrm", "$"):
                assert raw not in text, f"{name}: raw {raw!r} in the visible text"
            if name.endswith(".zh"):
                assert page.evaluate("document.documentElement.lang") == "zh-CN"
                assert page.evaluate(CJK_DRAWN), f"{name}: Chinese text drawn as empty boxes"
            page.screenshot(path=str(tmp_path / f"{name}.{scheme}.png"), full_page=False)
            page.close()
    assert (tmp_path / "must-know.zh.light.png").stat().st_size > 10_000


def test_site_links_resolve(pages) -> None:
    site = pages["index"].parent
    import re

    for path in site.glob("*.html"):
        for href in re.findall(r'href="([^"#:]+\.html)"', path.read_text()):
            assert (site / href).exists(), f"{path.name} links to missing {href}"


def test_inline_plot_is_drawn(browser, pages) -> None:
    page = browser.new_page()
    page.goto(pages["lora"].as_uri())
    box = page.evaluate(
        "() => { const r = document.querySelector('figure.plot svg').getBoundingClientRect();"
        " return [r.width, r.height]; }"
    )
    assert box[0] > 100 and box[1] > 50
    page.close()
