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


PAPER = "() => !!document.querySelector('article.paper')"
PAGE_WIDTH = "() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
FIRST_SECTION = """() => { const s = document.querySelector('article.paper > section');
  return s ? s.className + ' ' + s.querySelector('h2').textContent : ''; }"""
LINKS = """() => ({ index: !!document.querySelector('a.to-index[href="index.html"]'),
  prev: !!document.querySelector('a[rel=prev]'), next: !!document.querySelector('a[rel=next]') })"""


DESKTOP_DARK = {"index", "lora", "must-know.zh", "zh/transformer", "flashattention"}


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
    found |= {f"zh/{p.stem}": p for p in sorted((root / "site" / "zh").glob("*.html"))}
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
    """Every page on a phone (390 px, light): no console error, no request, every <math>
    drawn, no raw LaTeX, Chinese glyphs drawn, no wider than the screen (formulas and code
    scroll in their own box, tables become cards); every paper page opens with the revision
    card and links to the index and a neighbour. A few pages also on a desktop in dark."""
    assert {"index", "lora", "transformer", "must-know.en", "must-know.zh", "transformer.zh"} <= (
        pages.keys()
    )
    papers = 0
    views: dict[tuple[str, int], object] = {}  # one tab per look, reused page after page
    errors: list[str] = []
    requests: list[str] = []
    for name, path in pages.items():
        looks = [("light", 390)] + [("dark", 1280)] * (name in DESKTOP_DARK)
        for scheme, width in looks:
            page = views.get((scheme, width))
            if page is None:
                page = browser.new_page(
                    viewport={"width": width, "height": 900}, color_scheme=scheme
                )
                page.on("console", lambda m: m.type == "error" and errors.append(m.text))
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("request", lambda r: requests.append(r.url))
                views[(scheme, width)] = page
            errors.clear()
            requests.clear()
            url = path.as_uri()
            page.goto(url, wait_until="load")
            others = [u for u in requests if u != url]
            assert not errors, f"{name}: console errors {errors}"
            assert not others, f"{name}: requests {others}"
            assert page.evaluate(EMPTY_MATH) == 0, f"{name}: a <math> element has no size"
            text = page.evaluate(VISIBLE_TEXT)
            for raw in ("\\frac", "\\mathrm", "$"):
                assert raw not in text, f"{name}: raw {raw!r} in the visible text"
            if name.endswith(".zh") or name.startswith("zh/"):
                assert page.evaluate("document.documentElement.lang") == "zh-CN"
                assert page.evaluate(CJK_DRAWN), f"{name}: Chinese text drawn as empty boxes"
            wide = page.evaluate(PAGE_WIDTH)
            assert wide <= width, f"{name}: {wide} px wide at {width} px"
            site_page = path.parent.name in ("site", "zh")
            if width == 390 and site_page and page.evaluate(PAPER):
                papers += 1
                first = page.evaluate(FIRST_SECTION)
                assert first.startswith("revision "), f"{name}: first section {first!r}"
                links = page.evaluate(LINKS)
                assert links["index"] and (links["prev"] or links["next"]), f"{name}: {links}"
            if name in DESKTOP_DARK or name.startswith("must-know"):
                shot = name.replace("/", "-")
                page.screenshot(path=str(tmp_path / f"{shot}.{scheme}.png"), full_page=False)
    for page in views.values():
        page.close()
    assert papers >= 2 * 16
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


def test_questions_fold_and_print_open(browser, pages) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(pages["transformer"].as_uri())
    answer = page.locator("details.qa .a").first
    assert not answer.is_visible()  # folded: answer first, then check
    page.locator("details.qa summary").first.click()
    assert answer.is_visible()
    page.emulate_media(media="print")
    page.reload()
    assert page.locator("details.qa .a").first.is_visible(), "answers print open"
    assert not page.locator(".navlinks").first.is_visible(), "navigation is left out of print"
    page.close()
