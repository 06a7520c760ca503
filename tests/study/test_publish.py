"""Where `publish` puts each kind of output, and what the pages inside a folder link to."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from repro.lab.errors import BadOption
from repro.lab.library import Library
from repro.study.publish import Request, publish, resolve_format

REPO = Path(__file__).resolve().parents[2]
TOY_URL = "https://arxiv.org/abs/2106.09685"  # the toy note's url


@pytest.fixture
def lib(library_dir: Path, toy_copy) -> Library:
    """toy, and toy2 which names toy and a paper that is nowhere as related."""
    toy_copy("toy2", {
        'title: "Toy: a paper for tests"': 'title: "Second toy"',
        "aliases: [toy-alias]": "aliases: []",
        "related: []": "related: [toy, nowhere]",
        'arxiv: "2106.09685"': 'arxiv: "2106.00002"',
        "url: https://arxiv.org/abs/2106.09685": "url: https://arxiv.org/abs/2106.00002",
    })  # fmt: skip
    return Library(library_dir)


def _names(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_a_markdown_folder_has_a_page_each_and_an_index_linking_siblings(
    lib: Library, tmp_path: Path
) -> None:
    out = tmp_path / "md"
    outcome = publish(lib, tmp_path / "runs", Request(("toy", "toy2"), fmt="md", output=out))
    assert _names(out) == {"toy.md", "toy2.md", "index.md"}
    assert sorted(outcome.written) == sorted(out / n for n in _names(out))
    page = (out / "toy2.md").read_text(encoding="utf-8")
    assert "- [Toy: a paper for tests](toy.md)" in page  # a sibling page
    assert "- nowhere (not in this library)" in page
    index = (out / "index.md").read_text(encoding="utf-8")
    assert "toy.md" in index and "toy2.md" in index
    # a related paper in the library but not in the selection: its own page, on arXiv
    alone = tmp_path / "alone"
    publish(lib, tmp_path / "runs", Request(("toy2",), fmt="md", output=alone))
    assert f"- [Toy: a paper for tests]({TOY_URL})" in (alone / "toy2.md").read_text()


def test_a_site_of_some_papers_has_no_second_language_pack_or_deck(
    lib: Library, tmp_path: Path
) -> None:
    out = tmp_path / "site"
    outcome = publish(lib, tmp_path / "runs", Request(("toy2",), fmt="html", output=out))
    assert _names(out) == {"toy2.html", "index.html"}
    assert sorted(outcome.written) == [out / "index.html", out / "toy2.html"]
    page = (out / "toy2.html").read_text(encoding="utf-8")
    assert f'href="{TOY_URL}"' in page  # toy is not in this site: its arXiv page
    assert 'href="zh/' not in page and "paperlab-en.apkg" not in (out / "index.html").read_text()
    # --all: both languages, each page linked to its counterpart
    full = tmp_path / "full"
    publish(lib, tmp_path / "runs", Request(all_papers=True, fmt="html", output=full))
    assert {"zh/toy2.html", "zh/index.html", "paperlab-en.apkg", "zh/paperlab-zh.apkg",
            "must-know.html", "cheatsheet.html"} <= _names(full)  # fmt: skip
    assert 'href="zh/toy2.html"' in (full / "toy2.html").read_text()
    zh = (full / "zh" / "toy2.html").read_text(encoding="utf-8")
    assert 'href="../toy2.html"' in zh and 'href="toy.html"' in zh and "基本信息" in zh


@pytest.mark.parametrize(
    ("request_", "name"),
    [
        (Request(("toy",), fmt="tsv"), "paperlab.tsv"),
        (Request(("toy",), fmt="anki"), "paperlab.apkg"),
        (Request(must_know=True, fmt="md"), "must-know.md"),
        (Request(must_know=True, fmt="html"), "must-know.html"),
        (Request(("toy", "toy2"), fmt="cheatsheet"), "cheatsheet.html"),
    ],
)
def test_a_folder_gets_one_named_file_per_kind(
    lib: Library, tmp_path: Path, request_: Request, name: str
) -> None:
    out = tmp_path / "out"
    publish(lib, tmp_path / "runs", dataclasses.replace(request_, output=Path(f"{out}/")))
    assert name in _names(out)
    if name.endswith(".apkg"):
        assert zipfile.is_zipfile(out / name)


PACK_ALONE = "--must-know picks its own five papers; give no paper names or --all"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request(("toy",), must_know=True), PACK_ALONE),
        (Request(all_papers=True, must_know=True), PACK_ALONE),
        (Request(("toy",), must_know=True, fmt="anki"), PACK_ALONE),
        (Request(("toy",), all_papers=True), "give paper names or --all, not both"),
    ],
)
def test_a_contradictory_selection_is_refused_before_anything_is_written(
    lib: Library, tmp_path: Path, request_: Request, message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(BadOption) as info:
        publish(lib, tmp_path / "runs", dataclasses.replace(request_, output=out))
    assert str(info.value) == message
    assert not out.exists()


def test_a_site_folder_is_made_with_its_parents_and_may_already_exist(
    lib: Library, tmp_path: Path
) -> None:
    out = tmp_path / "a" / "b" / "site"
    for _ in range(2):  # the second export finds the folder there
        publish(lib, tmp_path / "runs", Request(("toy", "toy2"), fmt="md", output=out))
        assert _names(out) == {"toy.md", "toy2.md", "index.md"}
    blocker = tmp_path / "a-file"
    blocker.write_text("x", encoding="utf-8")
    with pytest.raises(BadOption) as info:
        publish(lib, tmp_path / "runs", Request(("toy",), fmt="md", output=blocker / "site"))
    assert str(info.value) == f"cannot create {blocker / 'site'}: Not a directory"


def test_the_card_manifest_is_readable_utf8_one_card_a_line(lib: Library, tmp_path: Path) -> None:
    """The manifest beside a deck (the cards of the last export) is for people too: no \\u
    escapes for Chinese fronts, one card per line; one that is not a JSON object, or that
    cannot be written, costs only the report of dropped cards."""
    out = tmp_path / "deck.apkg"
    publish(lib, tmp_path / "runs", Request(("toy",), fmt="anki", lang="zh", output=out))
    manifest = tmp_path / "deck.apkg.cards.json"
    text = manifest.read_text(encoding="utf-8")
    cards = json.loads(text)
    lines = text.splitlines()
    assert (lines[0], lines[-1]) == ("{", "}") and len(lines) == len(cards) + 2
    assert all(line.startswith('"') for line in lines[1:-1])  # no indentation
    assert "\\u" not in text and any("\u4e00" <= ch <= "\u9fff" for ch in text)
    manifest.write_text("[1, 2]\n", encoding="utf-8")  # JSON, but not the manifest's object
    again = publish(lib, tmp_path / "runs", Request(("toy",), fmt="anki", lang="zh", output=out))
    assert again.removed == [] and json.loads(manifest.read_text(encoding="utf-8")) == cards
    manifest.unlink()
    manifest.mkdir()  # cannot be written: the deck is still exported
    third = publish(lib, tmp_path / "runs", Request(("toy",), fmt="anki", lang="zh", output=out))
    assert third.removed == [] and third.written == [out] and manifest.is_dir()


@pytest.fixture
def pack_lib(library_dir: Path, toy_copy) -> Library:
    """toy, and toy2 standing in for LLaMA (by alias) in the must-know pack."""
    toy_copy("toy2", {"aliases: [toy-alias]": "aliases: [llama]"})
    return Library(library_dir)


def test_the_pack_in_every_format_holds_the_notes_it_has_and_names_the_rest(
    pack_lib: Library, tmp_path: Path
) -> None:
    """The pack shows toy2's Chinese page, its cards go to the table, and the other four of
    the five are reported missing."""
    lib, runs = pack_lib, tmp_path / "runs"
    four = ["transformer", "bert", "gpt3", "instructgpt"]
    pack = publish(lib, runs, Request(must_know=True, lang="zh"))
    assert pack.missing == four
    assert "Toy: a paper for tests" in pack.stdout and "5分钟口述总结" in pack.stdout
    table = publish(lib, runs, Request(must_know=True, fmt="tsv", lang="zh"))
    assert table.missing == four and "paperlab::zh::toy2" in table.stdout
    assert "paperlab::zh::toy\t" not in table.stdout  # toy is no must-know paper


def test_a_cheatsheet_of_chosen_papers_is_their_sheets_in_its_language(
    lib: Library, tmp_path: Path
) -> None:
    from repro.study.sheets import PackEntry, paper_sheet, render_cheatsheet

    runs = tmp_path / "runs"
    got = publish(lib, runs, Request(("toy2", "toy"), fmt="cheatsheet", lang="zh"))
    entries = [PackEntry(s, paper_sheet(lib.get(s), runs, "zh", lib)) for s in ("toy2", "toy")]
    assert got.stdout == render_cheatsheet(entries, "zh") and got.missing is None
    assert got.stdout.index('id="toy2"') < got.stdout.index('id="toy"')
    assert render_cheatsheet(entries, "en") != got.stdout  # the language shows


def test_the_pack_as_a_cheatsheet_on_stdout_names_what_it_lacks(
    pack_lib: Library, tmp_path: Path
) -> None:
    pack = publish(pack_lib, tmp_path / "runs", Request(must_know=True, fmt="cheatsheet"))
    assert pack.missing == ["transformer", "bert", "gpt3", "instructgpt"] and "<html" in pack.stdout


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("md", "pack.md"), ("html", "pack.html"), ("tsv", "pack.tsv"), ("anki", "pack.apkg"),
     ("cheatsheet", "pack.html")],
)  # fmt: skip
def test_the_pack_to_a_file_reports_what_it_wrote_and_what_it_lacks(
    pack_lib: Library, tmp_path: Path, fmt: str, name: str
) -> None:
    target = tmp_path / name
    outcome = publish(pack_lib, tmp_path / "runs", Request(must_know=True, fmt=fmt, output=target))
    assert outcome.written == [target] and target.is_file()
    assert outcome.missing == ["transformer", "bert", "gpt3", "instructgpt"]
    assert outcome.stdout == ""


def test_a_deck_needs_a_file_and_keeps_no_manifest_beside_a_device(
    lib: Library, tmp_path: Path
) -> None:
    with pytest.raises(BadOption) as info:
        publish(lib, tmp_path / "runs", Request(("toy",), fmt="anki"))
    assert str(info.value) == "--format anki writes a binary .apkg: give -o FILE.apkg"
    beside = Path(os.devnull + ".cards.json")
    assert not beside.exists()
    try:
        outcome = publish(lib, tmp_path / "runs", Request(("toy",), fmt="anki", output=os.devnull))
        assert outcome.removed == [] and outcome.written == [Path(os.devnull)]
        assert not beside.exists()
    finally:
        beside.unlink(missing_ok=True)


def test_only_translated_reaches_the_deck(tmp_path: Path) -> None:
    library, runs = Library(REPO / "papers"), tmp_path / "runs"
    sizes = []
    for only in (False, True):
        deck = tmp_path / f"{only}.apkg"
        publish(library, runs, Request(("lora",), fmt="anki", lang="zh", output=deck,
                                       only_translated=only))  # fmt: skip
        sizes.append(len(json.loads(Path(f"{deck}.cards.json").read_text(encoding="utf-8"))))
    assert 0 < sizes[1] < sizes[0]


def test_only_translated_leaves_out_the_cards_still_in_english(tmp_path: Path) -> None:
    library, runs = Library(REPO / "papers"), tmp_path / "runs"
    every = publish(library, runs, Request(("lora",), fmt="tsv", lang="zh")).stdout
    chosen = publish(library, runs, Request(("lora",), fmt="tsv", lang="zh", only_translated=True))
    assert "【英文原文】" in every and "【英文原文】" not in chosen.stdout
    assert set(chosen.stdout.splitlines()) < set(every.splitlines())


def test_a_folder_is_known_by_the_separator_as_typed(tmp_path: Path) -> None:
    from repro.study.publish import is_folder

    assert is_folder(f"{tmp_path}/site.v2/") and is_folder(f"{tmp_path}/site.v2{os.sep}")
    assert not is_folder(tmp_path / "site.v2/")  # a Path has dropped the separator already
    assert is_folder(tmp_path / "site") and is_folder(tmp_path)  # no suffix, or a folder
    (tmp_path / "made").write_text("x", encoding="utf-8")
    assert not is_folder(tmp_path / "made")  # a file without a suffix
    assert resolve_format(Request(fmt="md", output=f"{tmp_path}/site.html/")) == "md"
    with pytest.raises(BadOption, match="looks like html"):
        resolve_format(Request(fmt="md", output=f"{tmp_path}/site.html"))


@pytest.mark.parametrize(("fmt", "lang"), [("md", "en"), ("html", "zh"), ("md", "zh")])
def test_one_paper_on_stdout_is_its_sheet_with_related_papers_on_arxiv(
    lib: Library, tmp_path: Path, fmt: str, lang: str
) -> None:
    from repro.study.sheets import paper_sheet, render_sheet

    runs = tmp_path / "runs"
    got = publish(lib, runs, Request(("toy2",), fmt=fmt, lang=lang))
    sheet = paper_sheet(lib.get("toy2"), runs, lang, lib, lambda other: other.note.url)
    assert got.stdout == render_sheet(sheet, fmt, lang) and not got.written
    assert TOY_URL in got.stdout  # toy, found in the library, linked to its arXiv page


def test_several_papers_on_stdout_are_refused_with_the_two_ways_out(
    lib: Library, tmp_path: Path
) -> None:
    for fmt, ext in (("md", ".md"), ("html", ".html")):
        with pytest.raises(BadOption) as info:
            publish(lib, tmp_path / "runs", Request(("toy", "toy2"), fmt=fmt))
        assert str(info.value) == (
            "2 papers make 2 documents: give -o DIR/ for a site (index + one page each) "
            f"or -o FILE{ext} for one combined document"
        )


@pytest.mark.parametrize(("fmt", "lang"), [("md", "zh"), ("html", "en")])
def test_every_file_output_is_its_rendering_with_links_for_where_it_lands(
    lib: Library, library_dir: Path, toy_copy, tmp_path: Path, fmt: str, lang: str
) -> None:
    """One paper to a file, several to one document, several to a folder: each file is the
    sheet, document or index rendered in the request's language, with each related paper
    linked where the reader will find it (an anchor, a sibling page, else its arXiv page)."""
    from repro.study.sheets import paper_sheet, render_combined, render_index, render_sheet

    # toy3 relates to toy, which the selections below leave out, and to toy2
    toy_copy("toy3", {"aliases: [toy-alias]": "aliases: []", "related: []": "related: [toy, toy2]"})
    lib, runs, ext = Library(library_dir), tmp_path / "runs", f".{fmt}"

    def sheets(slugs, link):
        return [paper_sheet(lib.get(s), runs, lang, lib, link) for s in slugs]

    def read(path: Path) -> str:
        return path.read_text(encoding="utf-8")

    one = tmp_path / f"one{ext}"
    got = publish(lib, runs, Request(("toy2",), fmt=fmt, lang=lang, output=one))
    assert got.written == [one]
    [sheet] = sheets(["toy2"], lambda other: other.note.url)
    assert read(one) == render_sheet(sheet, fmt, lang) and TOY_URL in read(one)

    pair, inside = ("toy2", "toy3"), {"toy2", "toy3"}
    both = tmp_path / f"both{ext}"
    assert publish(lib, runs, Request(pair, fmt=fmt, lang=lang, output=both)).written == [both]
    expected = sheets(pair, lambda o: f"#{o.slug}" if o.slug in inside else o.note.url)
    assert read(both) == render_combined(expected, fmt, lang) and TOY_URL in read(both)
    assert "#toy2" in read(both)  # toy3 finds toy2 in the same document

    folder = tmp_path / "site"
    md_site = publish(lib, runs, Request(("toy", "toy2"), fmt="md", lang=lang, output=folder))
    assert md_site.written == [folder / "toy.md", folder / "toy2.md", folder / "index.md"]
    linked = sheets(("toy", "toy2"), lambda o: f"{o.slug}.md")
    for sheet in linked:
        assert read(folder / f"{sheet.slug}.md") == render_sheet(sheet, "md", lang)
    assert read(folder / "index.md") == render_index(linked, "md", lang)


def test_every_output_carries_the_note_in_the_requested_language(tmp_path: Path) -> None:
    """The toy's Chinese overlay is thin; LoRA's and the Transformer's contributions are in
    Chinese, so each way out shows whether the request's language reached the note (English
    must not show the Chinese text, Chinese must)."""
    root = tmp_path / "papers"
    for slug in ("lora", "transformer"):
        shutil.copytree(REPO / "papers" / slug, root / slug)
    lib, runs = Library(root), tmp_path / "runs"
    lora, transformer = "冻结预训练权重", "完全基于注意力的 encoder-decoder 架构"
    both = ("lora", "transformer")
    for lang in ("en", "zh"):
        out = tmp_path / lang
        out.mkdir()
        shown = {
            "stdout": publish(lib, runs, Request(("lora",), lang=lang)).stdout,
            "cheatsheet": publish(lib, runs, Request(both, fmt="cheatsheet", lang=lang)).stdout,
            "pack": publish(lib, runs, Request(must_know=True, lang=lang)).stdout,
        }
        for name, request in (
            ("one.md", Request(("lora",), lang=lang)),
            ("both.md", Request(both, lang=lang)),
            ("site", Request(both, fmt="md", lang=lang)),
        ):
            publish(lib, runs, dataclasses.replace(request, output=out / name))
        shown["file"] = (out / "one.md").read_text(encoding="utf-8")
        shown["combined"] = (out / "both.md").read_text(encoding="utf-8")
        shown["folder"] = (out / "site" / "lora.md").read_text(encoding="utf-8")
        for where, text in shown.items():
            marker = transformer if where == "pack" else lora
            assert (marker in text) == (lang == "zh"), (lang, where)
        assert (transformer in shown["combined"]) == (lang == "zh")


def test_dash_is_standard_output(lib: Library, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    for request in (Request(("toy",)), Request(("toy",), fmt="tsv"), Request(must_know=True)):
        to_stdout = publish(lib, runs, request)
        dash = publish(lib, runs, dataclasses.replace(request, output=Path("-")))
        assert dash.stdout == to_stdout.stdout != "" and not dash.written
    assert not Path("-").exists()


def test_the_chinese_combined_document_and_tsv(lib: Library, tmp_path: Path) -> None:
    out = tmp_path / "both.md"
    publish(lib, tmp_path / "runs", Request(("toy", "toy2"), lang="zh", output=out))
    text = out.read_text(encoding="utf-8")
    assert "目录" in text and text.count("基本信息") == 2 and "资料库中暂无" in text
    tsv = publish(lib, tmp_path / "runs", Request(("toy",), fmt="tsv", lang="zh")).stdout
    assert "paperlab::zh::toy" in tsv and "lang::zh" in tsv and "paperlab::en::" not in tsv


def test_cheatsheet_format_goes_with_html_or_no_suffix_only(tmp_path: Path) -> None:
    assert resolve_format(Request(fmt="cheatsheet", output=tmp_path / "c.html")) == "cheatsheet"
    assert resolve_format(Request(fmt="cheatsheet", output=tmp_path / "dir/")) == "cheatsheet"
    assert resolve_format(Request(fmt="cheatsheet")) == "cheatsheet"
    with pytest.raises(BadOption, match="looks like md"):
        resolve_format(Request(fmt="cheatsheet", output=tmp_path / "c.md"))
    assert resolve_format(Request(output=tmp_path / "x.HTM")) == "html"
    assert resolve_format(Request(output=tmp_path / "x.tsv")) == "tsv"
    assert resolve_format(Request()) == "md"
    assert resolve_format(Request(fmt="md", output=tmp_path / "site/")) == "md"


def test_a_smaller_export_reports_every_card_it_drops(tmp_path: Path) -> None:
    """Export two papers, then one, to the same file: the report names the other paper's cards
    (by their fronts), and only those; an export of the same cards reports nothing."""
    root = tmp_path / "papers"
    for slug in ("lora", "transformer"):
        shutil.copytree(REPO / "papers" / slug, root / slug)
    library, runs, out = Library(root), tmp_path / "runs", tmp_path / "deck.apkg"
    first = publish(library, runs, Request(("lora", "transformer"), fmt="anki", output=out))
    assert first.removed == []
    manifest = json.loads((tmp_path / "deck.apkg.cards.json").read_text(encoding="utf-8"))
    again = publish(library, runs, Request(("lora", "transformer"), fmt="anki", output=out))
    assert again.removed == []
    second = publish(library, runs, Request(("lora",), fmt="anki", output=out))
    transformer = [front for front in manifest.values() if front.startswith("[Transformer]")]
    assert len(transformer) >= 10 and len(transformer) < len(manifest)
    assert sorted(second.removed) == sorted(transformer)
    assert all("<" not in front for front in second.removed)  # plain text, not the HTML
    # a damaged manifest reports nothing and is written afresh
    (tmp_path / "deck.apkg.cards.json").write_text("[not json", encoding="utf-8")
    assert publish(library, runs, Request(("lora",), fmt="anki", output=out)).removed == []
    assert json.loads((tmp_path / "deck.apkg.cards.json").read_text(encoding="utf-8"))


def test_a_related_paper_whose_note_is_broken_is_named_not_linked(
    lib: Library, library_dir: Path, tmp_path: Path
) -> None:
    from repro.study.sheets import paper_sheet, render_sheet

    ok = paper_sheet(lib.get("toy2"), tmp_path / "runs", "zh", lib)
    assert [(r.slug, r.title, r.href) for r in ok.related] == [
        ("toy", "Toy: a paper for tests", TOY_URL), ("nowhere", "", ""),
    ]  # fmt: skip
    alone = paper_sheet(lib.get("toy2"), tmp_path / "runs", "zh")  # no library to look in
    assert [(r.slug, r.title, r.href) for r in alone.related] == [
        ("toy", "", ""), ("nowhere", "", ""),
    ]  # fmt: skip
    assert "- nowhere (资料库中暂无)" in render_sheet(ok, "md", "zh")
    (library_dir / "toy" / "note.yaml").write_text("title: [unclosed\n", encoding="utf-8")
    broken = Library(library_dir)
    sheet = paper_sheet(broken.get("toy2"), tmp_path / "runs", "en", broken)
    assert [(r.slug, r.title, r.href) for r in sheet.related] == [
        ("toy", "", ""), ("nowhere", "", ""),
    ]  # fmt: skip
    md = render_sheet(sheet, "md")
    assert "- toy (not in this library)" in md and "- nowhere (not in this library)" in md
