"""Anki export: a real .apkg whose cards keep their GUIDs, so re-importing keeps review history."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
import zipfile
from pathlib import Path

import pytest

from repro.lab.library import Library
from repro.study.anki import (
    Card,
    card_guid,
    cloze_text,
    key_formulas,
    paper_cards,
    render_tsv,
    short_answer,
    word_count,
    write_apkg,
)
from repro.study.publish import Request, publish

REPO = Path(__file__).resolve().parents[2]


def notes_in(apkg: Path, tmp_path: Path) -> list[tuple]:
    """(guid, fields, tags) of every note in the package's SQLite collection."""
    with zipfile.ZipFile(apkg) as z:
        assert "collection.anki2" in z.namelist()
        z.extract("collection.anki2", tmp_path)
    db = sqlite3.connect(tmp_path / "collection.anki2")
    try:
        return db.execute("select guid, flds, tags from notes order by guid").fetchall()
    finally:
        db.close()


def deck_names(tmp_path: Path) -> set[str]:
    """Deck names of the collection `notes_in` extracted to `tmp_path`."""
    db = sqlite3.connect(tmp_path / "collection.anki2")
    try:
        (decks,) = db.execute("select decks from col").fetchone()
    finally:
        db.close()
    return {d["name"] for d in json.loads(decks).values()}


@pytest.fixture
def two_papers(tmp_path: Path) -> Path:
    root = tmp_path / "papers"
    for slug in ("lora", "transformer"):
        shutil.copytree(REPO / "papers" / slug, root / slug)
    return root


def test_apkg_is_a_zip_with_the_expected_notes(two_papers: Path, tmp_path: Path) -> None:
    papers = list(Library(two_papers).papers.values())
    out = tmp_path / "deck.apkg"
    report = write_apkg(papers, out)
    expected = sum(len(paper_cards(p)) for p in papers)
    assert report.count == expected == len(report.guids)
    rows = notes_in(out, tmp_path)
    assert len(rows) == expected
    assert deck_names(tmp_path) >= {"paperlab::en::lora", "paperlab::en::transformer"}
    tags = {tag for _, _, t in rows for tag in t.split()}
    assert {"lora", "transformer", "core", "must-know", "question", "formula"} <= tags
    assert {"lang::en", "paperlab::must-know", "contribution", "cloze"} <= tags
    fields = "\x1f".join(f for _, f, _ in rows)
    assert "\\(W_0\\)" in fields and "\\[" in fields
    assert "$W_0$" not in fields


def test_one_card_per_contribution_and_a_cloze_per_key_formula(two_papers: Path) -> None:
    paper = Library(two_papers).get("lora")
    cards = paper_cards(paper)
    contributions = [c for c in cards if c.kind == "contribution"]
    assert len(contributions) == 3
    assert [c.key for c in contributions] == [
        f"contribution:{c.id}" for c in paper.note.contributions
    ]
    clozes = [c for c in cards if c.kind == "cloze"]
    assert len(clozes) == len(key_formulas(paper)) >= 1
    assert all("{{c1::" in c.front for c in clozes)


def test_cloze_hides_the_right_hand_side() -> None:
    text = cloze_text(r"W = W_0 + \frac{\alpha}{r} B A")
    assert text.startswith(r"\[W = {{c1::")
    assert r"\frac{\alpha}{r} B A}}" in text
    # `}}` inside the formula would end the cloze early: it is spaced out
    assert "}}" not in cloze_text(r"y = \frac{a}{b_{i}}").split("{{c1::")[1][:-4]
    # no top-level `=`: the whole formula is the cloze
    assert cloze_text(r"\sum_{i=1}^n x_i").startswith(r"\[ {{c1::\sum_{i=1}^n")


def test_long_answers_get_a_short_answer_first_and_nothing_is_cut() -> None:
    short = "LoRA adds nothing at inference."
    long = short + " " + "The merged weight has the same shape as the original one. " * 8
    assert word_count(long) > 60
    assert short_answer(long) == short
    assert short_answer(short) == ""
    # a long first sentence stops near 40 words, never inside math
    sentence = " ".join(["word"] * 38) + " $a + b = c$ " + " ".join(["more"] * 40) + "."
    cut = short_answer(sentence)
    assert cut.endswith(" …") and cut.count("$") % 2 == 0 and 38 <= word_count(cut) <= 45
    # Chinese counts two characters a word
    assert word_count("注意力" * 20) == 30


def test_zh_cards_use_the_overlay_and_mark_english(two_papers: Path) -> None:
    paper = Library(two_papers).get("transformer")
    cards = paper_cards(paper, "zh")
    assert cards[0].kind == "contribution" and "缩放点积注意力" in cards[1].back
    english = [c for c in cards if not c.translated]
    assert english and all("【英文原文】" in c.front for c in english)
    only = paper_cards(paper, "zh", only_translated=True)
    assert only and all(c.translated for c in only)
    assert len(only) == len(cards) - len(english)
    # the en and zh decks never share a GUID or a deck
    en = {card_guid("transformer", c.key, "en") for c in paper_cards(paper)}
    zh = {card_guid("transformer", c.key, "zh") for c in cards}
    assert not en & zh


def test_tsv_has_guids_deck_and_mathjax(two_papers: Path) -> None:
    tsv = render_tsv([Library(two_papers).get("lora")], "zh")
    assert tsv.startswith("#separator:tab\n#html:true\n#guid column:1\n")
    assert "\\(W_0\\)" in tsv and "paperlab::zh::lora" in tsv and "lang::zh" in tsv


# --- edits between exports: insert, delete, edit -------------------------------------------

NEW_QUESTION = """    - id: inserted-question
      question: INSERTED What is the rank of BA?
      answer: At most r.
"""


def _edit_lora(note: Path) -> tuple[str, str]:
    """Insert a question at the top, delete the third, edit the second; returns the ids of the
    deleted and the edited question."""
    text = note.read_text(encoding="utf-8")
    starts = [m.start() for m in re.finditer(r"(?m)^    - id: ", text)]
    qs = text.index("  questions:\n") + len("  questions:\n")
    starts = [s for s in starts if s >= qs]
    ids = [re.match(r"    - id: (\S+)", text[s:]).group(1) for s in starts[:4]]
    deleted, edited = ids[2], ids[1]
    text = text[: starts[2]] + text[starts[3] :]  # delete the third question
    answer = text.index("answer: |", starts[1]) + len("answer: |\n")
    text = text[:answer] + "        EDITED first line.\n" + text[answer:]
    text = text[:qs] + NEW_QUESTION + text[qs:]
    note.write_text(text, encoding="utf-8")
    return deleted, edited


def _export(papers_dir: Path, out: Path) -> tuple[dict[str, str], list[str]]:
    outcome = publish(
        Library(papers_dir), out.parent / "runs", Request(("lora",), fmt="anki", output=out)
    )
    (out.parent / out.stem).mkdir()
    rows = notes_in(out, out.parent / out.stem)
    return {guid: fields for guid, fields, _ in rows}, outcome.removed or []


def test_insert_delete_edit_keep_every_other_card(two_papers: Path, tmp_path: Path) -> None:
    before, removed = _export(two_papers, tmp_path / "a.apkg")
    assert removed == []
    deleted, edited = _edit_lora(two_papers / "lora" / "note.yaml")
    shutil.copy(tmp_path / "a.apkg.cards.json", tmp_path / "b.apkg.cards.json")
    after, removed = _export(two_papers, tmp_path / "b.apkg")
    gone = card_guid("lora", f"question:{deleted}")
    changed = card_guid("lora", f"question:{edited}")
    new = card_guid("lora", "question:inserted-question")
    assert before.keys() - after.keys() == {gone}
    assert after.keys() - before.keys() == {new}
    assert "INSERTED" in after[new] and "EDITED" in after[changed]
    for guid in before.keys() & after.keys() - {changed}:
        assert before[guid] == after[guid], "an untouched card changed"
    (text,) = removed
    assert "LoRA" in text and "?" in text


def test_real_anki_import_keeps_review_history(two_papers: Path, tmp_path: Path) -> None:
    pytest.importorskip("anki", reason="the real Anki library: pip install -e '.[anki]'")
    from anki.collection import Collection, ImportAnkiPackageOptions, ImportAnkiPackageRequest
    from anki.import_export_pb2 import IMPORT_ANKI_PACKAGE_UPDATE_CONDITION_ALWAYS as ALWAYS

    first, _ = _export(two_papers, tmp_path / "a.apkg")
    col = Collection(str(tmp_path / "collection.anki2"))
    try:
        options = ImportAnkiPackageOptions(
            with_scheduling=False,
            merge_notetypes=True,
            update_notes=ALWAYS,
            update_notetypes=ALWAYS,
        )

        def load(path: Path) -> None:
            col.import_anki_package(
                ImportAnkiPackageRequest(package_path=str(path), options=options)
            )

        load(tmp_path / "a.apkg")
        ids = {col.get_note(n).guid: n for n in col.find_notes("")}
        assert ids.keys() == first.keys()
        # review every card once: the history that a position-keyed GUID would move around
        for cid in col.find_cards(""):
            card = col.get_card(cid)
            card.ivl, card.due, card.type, card.queue = 10, 100, 2, 2
            col.update_card(card)
        deleted, edited = _edit_lora(two_papers / "lora" / "note.yaml")
        time.sleep(1.1)  # notes carry a modification time in seconds: a later export is newer
        second, _ = _export(two_papers, tmp_path / "b.apkg")
        load(tmp_path / "b.apkg")
        after = {col.get_note(n).guid: n for n in col.find_notes("")}
        # every old note is still the same Anki note (same id), the inserted one is new;
        # the deleted question's note stays until the user deletes it (the export reports it)
        assert after.keys() == first.keys() | second.keys()
        assert all(after[g] == ids[g] for g in ids)
        for guid in second:
            note = col.get_note(after[guid])
            assert "\x1f".join(note.fields) == second[guid]
            if guid in first:
                assert all(col.get_card(c).ivl == 10 for c in note.card_ids())
        decks = {d.name for d in col.decks.all_names_and_ids()}
        assert "paperlab::en::lora" in decks and not any(
            d.startswith("paperlab::zh") for d in decks
        )
    finally:
        col.close()


# --- what each note carries: GUID, model, fields, tags, deck -------------------------------


def _collection(apkg: Path, tmp_path: Path) -> tuple[list[tuple], dict, dict]:
    """(guid, mid, fields, tags) of every note, the models and the decks, from the package."""
    with zipfile.ZipFile(apkg) as z:
        z.extract("collection.anki2", tmp_path)
    db = sqlite3.connect(tmp_path / "collection.anki2")
    try:
        notes = db.execute("select guid, mid, flds, tags from notes").fetchall()
        models, decks = db.execute("select models, decks from col").fetchone()
    finally:
        db.close()
    return notes, json.loads(models), json.loads(decks)


def test_guids_and_deck_ids_follow_the_stable_recipe(two_papers: Path, tmp_path: Path) -> None:
    """A card's GUID is genanki's hash of ("paperlab", slug, language, key) and a deck's id a
    31-bit SHA-1 prefix of its name, computed here from the recipe: an export that hashed
    anything else (a position, another order of the parts) would orphan every review history."""
    import hashlib

    import genanki

    papers = list(Library(two_papers).papers.values())
    out = tmp_path / "deck.apkg"
    write_apkg(papers, out, "zh")
    notes, _, decks = _collection(out, tmp_path)
    want = {
        genanki.guid_for("paperlab", p.slug, "zh", c.key)
        for p in papers
        for c in paper_cards(p, "zh")
    }
    assert {guid for guid, *_ in notes} == want
    for p in papers:
        name = f"paperlab::zh::{p.slug}"
        deck_id = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) >> 1
        assert decks[str(deck_id)]["name"] == name


def test_each_note_has_its_model_fields_and_tags(two_papers: Path, tmp_path: Path) -> None:
    """Cloze cards use the cloze note type (and only they do); the fields are front, back, the
    paper's title (escaped) and the source; the tags name the paper, its priority, the kind and
    the language, and `paperlab::must-know` only on a must-know paper's cards."""
    from html import escape

    note = two_papers / "lora" / "note.yaml"
    text = note.read_text(encoding="utf-8")
    title = re.search(r"(?m)^title: (.*)$", text).group(1).strip("\"'")
    note.write_text(text.replace(title, title + " <b> & co", 1), encoding="utf-8")
    library = Library(two_papers)
    papers = list(library.papers.values())
    out = tmp_path / "deck.apkg"
    write_apkg(papers, out)
    notes, models, _ = _collection(out, tmp_path)
    by_guid = {
        card_guid(p.slug, c.key): (p, c) for p in papers for c in paper_cards(p)
    }  # the recipe itself is pinned by the test above
    assert len(by_guid) == len(notes)
    priorities = {p.note.priority for p in papers}
    assert "must-know" in priorities and len(priorities) > 1, "both kinds of paper are needed"
    for guid, mid, flds, tags in notes:
        paper, card = by_guid[guid]
        model = models[str(mid)]
        assert (model["type"] == 1) == (card.kind == "cloze"), card.key
        assert flds.split("\x1f") == [card.front, card.back, escape(paper.note.title), card.source]
        tags = set(tags.split())
        assert {paper.slug, paper.note.priority, card.kind, "lang::en"} <= tags
        assert ("paperlab::must-know" in tags) == (paper.note.priority == "must-know")
        assert "untranslated" not in tags
    lora = library.get("lora")
    assert "&lt;b&gt; &amp; co" in escape(lora.note.title)


def test_tsv_columns_are_guid_front_back_deck_tags(two_papers: Path) -> None:
    """The TSV's header names its GUID, deck and tags columns; every row must put them there."""
    import csv
    import io

    import genanki

    paper = Library(two_papers).get("transformer")
    tsv = render_tsv([paper], "zh")
    lines = tsv.split("\n", 5)
    assert lines[:5] == [
        "#separator:tab", "#html:true", "#guid column:1", "#deck column:4", "#tags column:5"
    ]  # fmt: skip
    rows = list(csv.reader(io.StringIO(lines[5]), delimiter="\t"))
    cards = paper_cards(paper, "zh")
    assert len(rows) == len(cards)
    for row, card in zip(rows, cards, strict=True):
        assert len(row) == 5
        guid, front, back, deck, tags = row
        assert guid == genanki.guid_for("paperlab", "transformer", "zh", card.key)
        assert (front, back, deck) == (card.front, card.back, "paperlab::zh::transformer")
        tagset = set(tags.split())
        assert {"transformer", card.kind, "lang::zh"} <= tagset
        assert ("untranslated" in tagset) == (not card.translated)


def test_real_anki_shows_cloze_cards_as_clozes(two_papers: Path, tmp_path: Path) -> None:
    """Opened by the real Anki library: a cloze card's question hides its answer behind
    `[...]` (a basic note type would show the `{{c1::…}}` markup), every other card shows its
    front, and each card sits in its paper's deck."""
    pytest.importorskip("anki", reason="the real Anki library: pip install -e '.[anki]'")
    from anki.collection import Collection, ImportAnkiPackageOptions, ImportAnkiPackageRequest

    out = tmp_path / "deck.apkg"
    write_apkg(list(Library(two_papers).papers.values()), out)
    col = Collection(str(tmp_path / "collection.anki2"))
    try:
        col.import_anki_package(
            ImportAnkiPackageRequest(package_path=str(out), options=ImportAnkiPackageOptions())
        )
        kinds = set()
        for cid in col.find_cards(""):
            card = col.get_card(cid)
            note = card.note()
            slug = next(t for t in note.tags if t in ("lora", "transformer"))
            assert col.decks.name(card.did) == f"paperlab::en::{slug}"
            question = card.question()
            if "cloze" in note.tags:
                kinds.add("cloze")
                assert note.note_type()["type"] == 1
                assert "[...]" in question and "{{c1::" not in question
            else:
                kinds.add("basic")
                assert note.note_type()["type"] == 0 and note.fields[0] in question
        assert kinds == {"cloze", "basic"}
    finally:
        col.close()


def test_tsv_rows_carry_what_the_apkg_notes_carry(two_papers: Path, tmp_path: Path) -> None:
    """The two exports of the same cards agree: for every GUID, the TSV's front, back, deck and
    tags are the package's note fields, the deck of its card and its tags."""
    import csv
    import io

    papers = list(Library(two_papers).papers.values())
    out = tmp_path / "deck.apkg"
    write_apkg(papers, out)
    notes, _, decks = _collection(out, tmp_path)
    db = sqlite3.connect(tmp_path / "collection.anki2")
    try:
        deck_of = dict(
            db.execute("select notes.guid, cards.did from cards join notes on nid = notes.id")
        )
    finally:
        db.close()
    apkg = {g: (flds.split("\x1f"), set(tags.split()), decks[str(deck_of[g])]["name"])
            for g, _, flds, tags in notes}  # fmt: skip
    rows = list(csv.reader(io.StringIO(render_tsv(papers).split("\n", 5)[5]), delimiter="\t"))
    assert len(rows) == len(apkg)
    for guid, front, back, deck, tags in rows:
        fields, tagset, deck_name = apkg[guid]
        assert fields[:2] == [front, back]
        assert set(tags.split()) == tagset and deck == deck_name


def test_card_text_is_escaped_html_and_math_keeps_its_characters(two_papers: Path) -> None:
    """A field is HTML: `<` and `&` of a formula or a question become entities (Anki shows
    them as characters, MathJax reads them back), raw tags in a note never reach a card, and a
    cloze's own `}}` and `::` are spaced out so Anki's parser does not end the cloze early."""
    from repro.study.anki import anki_math

    assert anki_math("a<b & c>d", False) == r"\(a&lt;b &amp; c&gt;d\)"
    assert anki_math("x", True) == r"\[x\]"
    cloze = cloze_text(r"p = a < b \;\text{if}\; k::v")
    assert cloze == r"\[p = {{c1::a &lt; b \;\text{if}\; k: :v}}\]"
    note = two_papers / "lora" / "note.yaml"
    text = note.read_text(encoding="utf-8")
    hostile = NEW_QUESTION.replace("INSERTED", "<script>x()</script> & <b>")
    note.write_text(text.replace("  questions:\n", "  questions:\n" + hostile, 1), "utf-8")
    card = next(
        c
        for c in paper_cards(Library(two_papers).get("lora"))
        if c.key == "question:inserted-question"
    )
    assert "<script>" not in card.front and "<b>" not in card.front
    assert "&lt;script&gt;" in card.front and "&amp;" in card.front


# --- the paths the real exports take: zh decks, numbering, key formulas, hostile text ----------

TOY = REPO / "tests" / "fixtures" / "library" / "toy"
HOSTILE = '<script>alert(1)</script> <img src=x onerror="alert(2)"> & "q" \'s\''


def _toy_paper(tmp_path: Path, edit, slug: str = "toy"):
    """The toy note with `edit(note_dict)` applied, loaded through a real Library."""
    import yaml

    note = yaml.safe_load((TOY / "note.yaml").read_text(encoding="utf-8"))
    edit(note)
    folder = tmp_path / "lib" / slug
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOY / "repro.py", folder / "repro.py")
    (folder / "note.yaml").write_text(yaml.safe_dump(note, allow_unicode=True), encoding="utf-8")
    return Library(tmp_path / "lib").get(slug)


def _three_contributions(note: dict) -> None:
    note["short_title"] = "Toy & <Co>"
    note["contributions"] = [
        {"id": "c-one", "text": "Low-rank update: freeze $W_0$ and learn $BA$."},
        {"id": "c-two", "text": "Update $W_0 + BA$: merged after training, no latency."},
        {"id": "c-three", "text": "A very long opening clause that runs on for more than eight "
                                  "words: the rest."},
    ]  # fmt: skip
    note["zh"] = {
        "short_title": "玩具 <论文>",
        "contributions": ["低秩增量：冻结权重", "合并权重：推理无延迟", "子空间分析：秩很小也够"],
    }


def test_contribution_cards_number_name_and_cue_in_each_language(tmp_path: Path) -> None:
    """A contribution card's front: `[display name] label i/n: cue …?`, the name the zh short
    title in Chinese (escaped), the separator a full-width colon in Chinese, the cue the words
    before the first colon (or the first five words, math elided, when that is long or math)."""
    paper = _toy_paper(tmp_path, _three_contributions)
    en = [c.front for c in paper_cards(paper) if c.kind == "contribution"]
    assert en == [
        "[Toy &amp; &lt;Co&gt;] Three contributions 1/3: Low-rank update …?",
        "[Toy &amp; &lt;Co&gt;] Three contributions 2/3: Update …: merged after training, …?",
        "[Toy &amp; &lt;Co&gt;] Three contributions 3/3: A very long opening clause …?",
    ]
    zh = [c for c in paper_cards(paper, "zh") if c.kind == "contribution"]
    assert [c.front for c in zh] == [
        "[玩具 &lt;论文&gt;] 核心贡献 1/3：低秩增量 …?",
        "[玩具 &lt;论文&gt;] 核心贡献 2/3：合并权重 …?",
        "[玩具 &lt;论文&gt;] 核心贡献 3/3：子空间分析 …?",
    ]
    assert [c.back for c in zh] == ["<p>低秩增量：冻结权重</p>", "<p>合并权重：推理无延迟</p>",
                                    "<p>子空间分析：秩很小也够</p>"]  # fmt: skip
    assert all(c.translated and c.source == "核心贡献" for c in zh)
    # the other zh cards name the paper the same way and use the zh labels
    by_kind = {c.kind: c for c in paper_cards(paper, "zh")}
    assert "[玩具 &lt;论文&gt;] 深度技术细节：" in by_kind["deep-dive"].front
    assert "[玩具 &lt;论文&gt;] 回答框架" in by_kind["outline"].front


def test_chinese_answers_are_shortened_at_a_chinese_full_stop() -> None:
    """A long Chinese answer (no spaces, counted two characters a word) starts with its first
    sentence, cut after `。`, `！` or `？`; odd counts of characters round up."""
    first = "低秩增量只改变很少的参数。"
    rest = "训练时冻结原始权重，只学习两个小矩阵，推理时把它们合并回原权重，因此没有额外延迟。" * 4
    assert word_count(first + rest) > 60
    assert short_answer(first + rest) == first
    assert short_answer("真的吗？" + rest) == "真的吗？"
    assert short_answer("当然！" + rest) == "当然！"
    assert word_count("注意力") == 2 and word_count("注") == 1 and word_count("LoRA 低秩适配") == 3
    assert word_count("a b c") == 3 and word_count("") == 0


def test_a_long_answer_card_shows_the_short_answer_then_all_of_it(tmp_path: Path) -> None:
    """The back of a long answer's card: the first sentence in `.short`, then the whole answer
    in `.full` (nothing cut); a short answer is the whole answer alone."""
    long_answer = "It adds nothing at inference. " + "The merged weight has one shape. " * 12

    def edit(note: dict) -> None:
        note["interview"]["questions"] = [
            {"id": "long", "question": "Why no latency?", "answer": long_answer},
            {"id": "short", "question": "Rank?", "answer": "At most r."},
            {
                "id": "zh-long",
                "question": "为什么？",
                "answer": "因为合并了。" + "推理时没有额外的计算量。" * 10,
            },
        ]

    cards = {c.key: c for c in paper_cards(_toy_paper(tmp_path, edit))}
    back = cards["question:long"].back
    assert back.startswith('<div class="short">It adds nothing at inference.</div>')
    full = back[back.index('<div class="full">') :]
    assert full.count("The merged weight has one shape.") == 12
    assert cards["question:short"].back == "<p>At most r.</p>"
    assert cards["question:zh-long"].back.startswith('<div class="short">因为合并了。</div>')


def _formulas(note: dict, codes: tuple) -> None:
    note["formulas"] = [
        {"id": f"f{n}", "name": f"Formula {n}", "latex": f"y_{n} = a + {n}",
         "meaning": f"meaning {n}", **({"code": code} if code else {})}
        for n, code in enumerate(codes, 1)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("codes", "keys"),
    [
        ((None, "repro/nn/lora.py::merge_lora", None, "repro/nn/lora.py::LoRALinear"),
         ["cloze:f2", "cloze:f4"]),
        ((None, None, None), ["cloze:f1"]),
    ],
)  # fmt: skip
def test_a_cloze_per_formula_that_names_its_code_else_the_first(
    tmp_path: Path, codes: tuple, keys: list
) -> None:
    paper = _toy_paper(tmp_path, lambda note: _formulas(note, codes))
    clozes = [c for c in paper_cards(paper) if c.kind == "cloze"]
    assert [c.key for c in clozes] == keys
    for card in clozes:
        n = int(card.key.removeprefix("cloze:f"))
        assert card.front == f"[TOY] Formula {n}<br>\\[y_{n} = {{{{c1::a + {n}}}}}\\]".replace(
            "[TOY]", "[Toy: a paper for tests]"
        )
        code = codes[n - 1]
        assert card.back == f"<p>meaning {n}</p>" + (f"<p><code>{code}</code></p>" if code else "")
    assert [c.key for c in paper_cards(paper) if c.kind == "formula"] == [
        f"formula:f{n}" for n in range(1, len(codes) + 1)
    ]


def test_zh_formula_cards_are_marked_unless_their_text_is_chinese(tmp_path: Path) -> None:
    """Formulas are never translated: a zh formula card counts as translated only when its
    name or meaning is written in Chinese; the others carry 【英文原文】 and the tag, or are left
    out with only_translated — in the package and the TSV alike."""

    def edit(note: dict) -> None:
        _formulas(note, (None, None, None))
        note["formulas"][1]["name"] = "缩放点积注意力"
        note["formulas"][2]["meaning"] = "每个符号的含义"

    paper = _toy_paper(tmp_path, edit)
    cards = {c.key: c for c in paper_cards(paper, "zh")}
    assert not cards["formula:f1"].translated and cards["formula:f1"].front.startswith(
        '<span class="untranslated">【英文原文】</span> '
    )
    assert cards["formula:f2"].translated and cards["formula:f3"].translated
    assert "【英文原文】" not in cards["formula:f2"].front + cards["formula:f3"].front
    assert all(c.translated for c in paper_cards(paper, "en"))
    only = {c.key for c in paper_cards(paper, "zh", only_translated=True)}
    assert "formula:f2" in only and "formula:f3" in only and "formula:f1" not in only
    assert only == {k for k, c in cards.items() if c.translated}


def test_only_translated_reaches_the_package_and_the_tsv(two_papers: Path, tmp_path: Path) -> None:
    """`--only-translated` (Request.only_translated) leaves the untranslated zh cards out of
    both exports: the package's notes and the TSV's rows are exactly the translated cards."""
    import csv
    import io

    papers = [Library(two_papers).get("transformer")]
    every = paper_cards(papers[0], "zh")
    kept = [c for c in every if c.translated]
    assert 0 < len(kept) < len(every), "the paper needs both kinds of card"
    want = {card_guid("transformer", c.key, "zh") for c in kept}
    out = tmp_path / "zh.apkg"
    report = write_apkg(papers, out, "zh", only_translated=True)
    rows = notes_in(out, tmp_path)
    assert {g for g, _, _ in rows} == want == set(report.guids)
    assert not any("untranslated" in tags.split() for _, _, tags in rows)
    tsv = render_tsv(papers, "zh", only_translated=True).split("\n", 5)[5]
    assert {r[0] for r in csv.reader(io.StringIO(tsv), delimiter="\t")} == want
    # through publish, as `paperlab sheet --format anki --lang zh --only-translated` does
    target = tmp_path / "p.apkg"
    request = Request(("transformer",), fmt="anki", lang="zh", output=target, only_translated=True)
    publish(Library(two_papers), tmp_path / "runs", request)
    (tmp_path / "p").mkdir()
    assert {g for g, _, _ in notes_in(target, tmp_path / "p")} == want


def _hostile_everywhere(note: dict) -> None:
    """Every text field of the note that a card shows holds markup and a script."""
    note["title"] = "Title " + HOSTILE
    note["short_title"] = "Short " + HOSTILE
    note["contributions"] = [
        {"id": f"c{n}", "text": f"Part {n}: {HOSTILE} [x](javascript:alert(3))"} for n in range(3)
    ]
    note["formulas"] = [
        {"id": "f", "name": "Name " + HOSTILE, "latex": r"a<b \;\&\; c>d = \text{</span>}",
         "meaning": "Meaning " + HOSTILE, "code": "repro/nn/lora.py::merge_lora"}
    ]  # fmt: skip
    iv = note["interview"]
    iv["questions"] = [
        {"id": "q1", "question": "Q " + HOSTILE, "answer": "A " + HOSTILE},
        {"id": "q2", "question": "Q2", "answer": ("Long. " + HOSTILE + " ") * 12},
    ]
    iv["deep_dive"] = {"topic": "Topic " + HOSTILE, "explanation": "Expl " + HOSTILE}
    iv["answer_outline"] = {
        "background": "B " + HOSTILE, "innovation": "I " + HOSTILE, "details": "D " + HOSTILE,
        "impact": "M " + HOSTILE, "follow_ups": ["F " + HOSTILE, "<b onclick=x()>bold</b>"],
    }  # fmt: skip
    note["zh"] = {
        "short_title": "中文 " + HOSTILE,
        "contributions": [f"贡献 {n}：{HOSTILE}" for n in range(3)],
        "interview": {
            "questions": [{"id": "q1", "question": "问 " + HOSTILE, "answer": "答 " + HOSTILE},
                          {"id": "q2", "question": "问二", "answer": "答二"}],
            "deep_dive": {"topic": "题 " + HOSTILE, "explanation": "释 " + HOSTILE},
        },
    }  # fmt: skip


def _markup(html: str) -> tuple[set[str], list[tuple[str, str]]]:
    """The element names and (attribute, value) pairs of an HTML fragment, as a browser's
    parser sees them."""
    from html.parser import HTMLParser

    tags: set[str] = set()
    attrs: list[tuple[str, str]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, a):
            tags.add(tag)
            attrs.extend((k, v or "") for k, v in a)

    parser = P()
    parser.feed(html)
    parser.close()
    return tags, attrs


SAFE_CARD_TAGS = {"p", "div", "span", "b", "br", "ol", "ul", "li", "code", "em", "strong", "a"}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_hostile_note_text_reaches_no_card_field_as_markup(tmp_path: Path, lang: str) -> None:
    """Every field of every card, in the package and the TSV: only the cards' own tags, no
    `on*` attribute, no `javascript:` link; the hostile text is still there, as text."""
    import csv
    import io

    paper = _toy_paper(tmp_path, _hostile_everywhere)
    out = tmp_path / "h.apkg"
    write_apkg([paper], out, lang)
    fields = [f for _, flds, _ in notes_in(out, tmp_path) for f in flds.split("\x1f")]
    tsv = render_tsv([paper], lang).split("\n", 5)[5]
    fields += [cell for row in csv.reader(io.StringIO(tsv), delimiter="\t") for cell in row[1:3]]
    assert len(fields) > 40
    for field in fields:
        tags, attrs = _markup(field)
        assert tags <= SAFE_CARD_TAGS, (tags, field)
        assert all(not k.startswith("on") for k, _ in attrs), field
        assert all("javascript" not in v.lower() for _, v in attrs), field
    joined = "\n".join(fields)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in joined and "onerror" in joined
    assert "\\[a&lt;b \\;\\&amp;\\; c&gt;d" in joined  # the formula's own `<`, escaped


@pytest.mark.parametrize(
    ("latex", "cloze"),
    [
        (r"a <= b = c", r"\[a &lt;= b = {{c1::c}}\]"),
        (r"p >= q = r", r"\[p &gt;= q = {{c1::r}}\]"),
        (r"x != y = z", r"\[x != y = {{c1::z}}\]"),
        (r"f_{i=1} = \sum_{j=0}^{n} g_j", r"\[f_{i=1} = {{c1::\sum_{j=0}^{n} g_j}}\]"),
        ("L   =\n  -\\log p", r"\[L = {{c1::-\log p}}\]"),
        (r"= x", r"\[ {{c1::= x}}\]"),
        (r"\{a\} = b", r"\[\{a\} = {{c1::b}}\]"),
    ],
)
def test_the_cloze_hides_what_follows_the_first_top_level_equals(latex: str, cloze: str) -> None:
    """`<=`, `>=` and `!=` are relations, not the `=` to split at; an `=` inside braces is a
    subscript's; whitespace is collapsed; a formula opening with `=` is hidden whole."""
    assert cloze_text(latex) == cloze


def test_short_answer_limits_at_their_edges() -> None:
    """60 words are read whole; from 61 on, the first sentence (it ends before a capital)
    leads — whole up to 40 words, else cut after the 40th word and marked with `…`."""
    words = [f"w{i}" for i in range(80)]
    assert short_answer(" ".join(words[:60])) == ""
    forty = " ".join(words[:40]) + "."
    assert short_answer(forty + " More " + " ".join(words[40:61])) == forty
    fifty = " ".join(words[:50]) + "."
    assert short_answer(fifty + " More " + " ".join(words[50:70])) == " ".join(words[:40]) + " …"
    # a trailing comma or dash before the cut is dropped
    comma = " ".join(words[:39]) + " w39, " + " ".join(words[40:70]) + "."
    assert short_answer(comma) == " ".join(words[:40]) + " …"


@pytest.mark.parametrize("priority", ["must-know", "core", "further"])
def test_only_a_must_know_papers_cards_carry_the_must_know_tag(
    tmp_path: Path, priority: str
) -> None:
    import csv
    import io

    def edit(note: dict) -> None:
        note["priority"] = priority

    paper = _toy_paper(tmp_path, edit)
    rows = list(csv.reader(io.StringIO(render_tsv([paper]).split("\n", 5)[5]), delimiter="\t"))
    assert len(rows) == len(paper_cards(paper)) >= 5
    for row in rows:
        tags = row[4].split()
        assert tags[:2] == ["toy", priority]
        assert ("paperlab::must-know" in tags) == (priority == "must-know")


def test_both_note_types_carry_the_styles_the_card_html_uses(tmp_path: Path) -> None:
    """Every class a field or template uses (`short`, `full`, `untranslated`, `meta`) is
    styled in both note types, with the CJK fonts: the package carries the stylesheet."""

    def edit(note: dict) -> None:
        note["interview"]["questions"] = [
            {"id": "long", "question": "Why?", "answer": "It is so. " + "More words here. " * 20},
            {"id": "short", "question": "How?", "answer": "Briefly."},
        ]

    paper = _toy_paper(tmp_path, edit)
    out = tmp_path / "deck.apkg"
    write_apkg([paper], out, "zh")
    notes, models, _ = _collection(out, tmp_path)
    html = "".join(flds for _, _, flds, _ in notes)
    html += "".join(t["afmt"] for m in models.values() for t in m["tmpls"])
    used = set(re.findall(r'class="([\w-]+)"', html))
    assert used >= {"short", "full", "untranslated", "meta"}
    assert {m["type"] for m in models.values()} == {0, 1}
    for model in models.values():
        css = model["css"]
        assert all(re.search(rf"\.{name}\s*\{{", css) for name in used), model["name"]
        assert "PingFang SC" in css and "Noto Sans CJK SC" in css


def test_tsv_lines_end_with_a_bare_newline(tmp_path: Path) -> None:
    """Anki's importer reads the header lines and rows split on `\\n`; a `\\r` would end up
    in the last column (the tags)."""
    paper = _toy_paper(tmp_path, lambda note: None)
    tsv = render_tsv([paper])
    assert "\r" not in tsv and tsv.endswith("\n")
    assert len(tsv.splitlines()) == 5 + len(paper_cards(paper))


def test_real_anki_renders_front_then_back_then_the_paper_and_source(tmp_path: Path) -> None:
    """What the real Anki library shows: the card's stylesheet, then for a basic card the front
    alone as the question and front, rule, back and `paper · source` as the answer; for a cloze
    card the text with `[...]` for the hidden part as the question, and the whole text, the
    back extra and `paper · source` as the answer."""
    pytest.importorskip("anki", reason="the real Anki library: pip install -e '.[anki]'")
    from anki.collection import Collection, ImportAnkiPackageOptions, ImportAnkiPackageRequest

    paper = _toy_paper(tmp_path, lambda note: None)
    out = tmp_path / "deck.apkg"
    write_apkg([paper], out)
    col = Collection(str(tmp_path / "collection.anki2"))
    try:
        col.import_anki_package(
            ImportAnkiPackageRequest(package_path=str(out), options=ImportAnkiPackageOptions())
        )
        kinds = []
        for cid in col.find_cards(""):
            card = col.get_card(cid)
            front, back, title, source = card.note().fields
            style, question = card.question().split("</style>", 1)
            assert style.startswith("<style>") and ".short {" in style and ".full {" in style
            answer = card.answer().split("</style>", 1)[1]
            meta = f'<div class="meta">{title} · {source}</div>'
            if "cloze" in card.note().tags:
                kinds.append("cloze")
                cloze = re.compile(r"\{\{c1::(.*?)\}\}")  # inside MathJax: shown as text
                assert question == cloze.sub("[...]", front)
                assert answer == cloze.sub(r"\1", front) + f"<br>{back}{meta}"
            else:
                kinds.append("basic")
                assert question == front
                assert answer == f'{front}<hr id="answer">{back}{meta}'
        assert kinds.count("cloze") == len(key_formulas(paper)) and "basic" in kinds
    finally:
        col.close()


@pytest.mark.parametrize(
    ("latex", "cloze"),
    [
        (r"x_{a_{i}} = y", r"\[x_{a_{i}} = {{c1::y}}\]"),  # nested braces close back to the top
        (r"a \= b = c", r"\[a \= b = {{c1::c}}\]"),  # an escaped `=` is not the split
        (r"L=\sum_i x_i", r"\[L= {{c1::\sum_i x_i}}\]"),  # the `=` right after one character
        (r"y = \frac{a}{b_{i}}", r"\[y = {{c1::\frac{a}{b_{i} }}}\]"),  # `}}` spaced, once
        (r"s = \text{it's \"q\"}", r"\[s = {{c1::\text{it's \"q\"}}}\]"),  # quotes stay as is
    ],
)
def test_the_cloze_splits_at_the_top_level_and_keeps_quotes(latex: str, cloze: str) -> None:
    assert cloze_text(latex) == cloze


@pytest.mark.parametrize(
    ("head", "cue"),
    [
        ("one two three four five six seven eight", "one two three four five six seven eight"),
        ("one two three four five six seven eight nine", "one two three four five"),
    ],
)
def test_a_cue_is_the_head_up_to_eight_words(tmp_path: Path, head: str, cue: str) -> None:
    def edit(note: dict) -> None:
        note["contributions"] = [
            {"id": f"c{n}", "text": f"{head}: and then the rest {n}"} for n in range(3)
        ]

    cards = [c for c in paper_cards(_toy_paper(tmp_path, edit)) if c.kind == "contribution"]
    assert cards[0].front.endswith(f" 1/3: {cue} …?")


def test_a_cut_short_answer_keeps_the_letters_of_its_last_word() -> None:
    """Only punctuation and spaces are dropped before the `…`, never a letter (here an X)."""
    words = [f"w{i}" for i in range(70)]
    words[39] = "MAX"
    assert short_answer(" ".join(words) + ".") == " ".join(words[:40]) + " …"


def test_an_item_without_an_id_is_keyed_by_its_text_not_its_place(tmp_path: Path) -> None:
    """Until it gets an id, a question's key is the first 10 hex digits of its text's SHA-1:
    inserting another question before it changes neither its key nor its GUID."""
    import hashlib

    def questions(*texts: str):
        def edit(note: dict) -> None:
            note["interview"]["questions"] = [{"question": t, "answer": "a"} for t in texts]

        return edit

    digest = hashlib.sha1(b"Why a low rank?").hexdigest()[:10]
    keys = [c.key for c in paper_cards(_toy_paper(tmp_path, questions("Why a low rank?", "B?")))]
    assert f"question:text-{digest}" in keys
    again = _toy_paper(tmp_path, questions("Inserted?", "Why a low rank?", "B?"))
    assert f"question:text-{digest}" in [c.key for c in paper_cards(again)]


def test_the_report_names_each_card_by_its_front_as_plain_text(tmp_path: Path) -> None:
    """The deck report (and the list of removed cards built from it) shows each front with its
    tags taken out and its spaces collapsed, the zh marker included."""

    def edit(note: dict) -> None:
        note["interview"]["questions"] = [
            {"id": "q1", "question": "What is **bold**   here?", "answer": "a"},
            {"id": "q2", "question": "Plain?", "answer": "b"},
        ]

    paper = _toy_paper(tmp_path, edit)
    report = write_apkg([paper], tmp_path / "deck.apkg", "zh")
    fronts = {card_guid("toy", c.key, "zh"): c.front for c in paper_cards(paper, "zh")}
    assert report.guids.keys() == fronts.keys()
    q1 = card_guid("toy", "question:q1", "zh")
    assert report.guids[q1] == "【英文原文】 [Toy: a paper for tests] What is bold here?"
    for guid, text in report.guids.items():
        assert "<" not in text and "  " not in text and text == text.strip()
        assert text.replace(" ", "") == re.sub(r"<[^>]+>|\s", "", fronts[guid])


def test_inline_and_display_math_keep_their_quotes() -> None:
    from repro.study.anki import anki_math

    assert anki_math('\\text{it\'s "q"}', False) == '\\(\\text{it\'s "q"}\\)'
    assert anki_math('\\text{it\'s "q"} < 1', True) == '\\[\\text{it\'s "q"} &lt; 1\\]'


def test_a_deck_and_a_guid_are_english_unless_told() -> None:
    import genanki

    from repro.study.anki import deck_name

    assert deck_name("lora") == "paperlab::en::lora" and deck_name("lora", "zh") == (
        "paperlab::zh::lora"
    )
    assert card_guid("lora", "question:q1") == genanki.guid_for("paperlab", "lora", "en",
                                                                "question:q1")  # fmt: skip


def test_zh_contribution_cards_without_an_overlay_are_marked_and_id_less_ones_keyed_by_text(
    tmp_path: Path,
) -> None:
    import hashlib

    def edit(note: dict) -> None:
        note["contributions"] = [{"text": f"Contribution number {n}: more"} for n in range(3)]
        note["zh"] = {"short_title": "玩具"}  # no contributions in Chinese

    paper = _toy_paper(tmp_path, edit)
    cards = [c for c in paper_cards(paper, "zh") if c.kind == "contribution"]
    assert len(cards) == 3 and not any(c.translated for c in cards)
    assert all(c.front.startswith('<span class="untranslated">') for c in cards)
    keys = [c.key for c in paper_cards(paper) if c.kind == "contribution"]
    assert keys == [
        "contribution:text-"
        + hashlib.sha1(f"Contribution number {n}: more".encode()).hexdigest()[:10]
        for n in range(3)
    ]


def _dive_and_outline(zh: dict):
    def edit(note: dict) -> None:
        note["short_title"] = "Toy & <Co>"
        note["interview"]["deep_dive"] = {
            "topic": "Why rank <r> & scale",
            "explanation": "Because the update is low-rank.",
        }
        note["interview"]["answer_outline"] = {
            "background": "Tuning <all> weights", "innovation": "Freeze & add BA",
            "details": "r is 8", "impact": "Cheap adapters",
            "follow_ups": ["Why is B zero at start?", "Which <layers>?", "Merge cost?"],
        }  # fmt: skip
        note["zh"] = {"short_title": "玩具 <论文>", "interview": zh}

    return edit


def test_the_deep_dive_and_outline_cards_in_full_in_each_language(tmp_path: Path) -> None:
    """Both cards keyed by their kind (their GUIDs never move); the outline's back lists the
    four timed parts with their labels and budgets, then the follow-ups; each card is marked
    untranslated in zh exactly when its own part of the zh overlay is missing."""
    zh_dive = {"topic": "为什么秩 <r> 够用", "explanation": "因为增量是低秩的。"}
    paper = _toy_paper(tmp_path, _dive_and_outline({"deep_dive": zh_dive}))
    en = {c.kind: c for c in paper_cards(paper)}
    topic = "Why rank &lt;r&gt; &amp; scale"
    assert en["deep-dive"] == Card(
        "deep-dive", "deep-dive", f"[Toy &amp; &lt;Co&gt;] Deep dive: {topic}",
        "<p>Because the update is low-rank.</p>", topic, True,
    )  # fmt: skip
    follow = "<li>Why is B zero at start?</li><li>Which &lt;layers&gt;?</li><li>Merge cost?</li>"
    assert en["outline"] == Card(
        "outline", "outline", "[Toy &amp; &lt;Co&gt;] Answer framework",
        "<ol><li><b>Background (30 s)</b> Tuning &lt;all&gt; weights</li>"
        "<li><b>Core innovation (1 min)</b> Freeze &amp; add BA</li>"
        "<li><b>Technical details (1–2 min)</b> r is 8</li>"
        "<li><b>Impact (30 s)</b> Cheap adapters</li>"
        f"<li><b>Likely follow-ups</b><ul>{follow}</ul></li></ol>",
        "Answer framework", True,
    )  # fmt: skip
    zh = {c.kind: c for c in paper_cards(paper, "zh")}
    zh_topic = "为什么秩 &lt;r&gt; 够用"
    assert zh["deep-dive"] == Card(
        "deep-dive", "deep-dive", f"[玩具 &lt;论文&gt;] 深度技术细节：{zh_topic}",
        "<p>因为增量是低秩的。</p>", zh_topic, True,
    )  # fmt: skip
    assert zh["outline"] == Card(
        "outline", "outline",
        '<span class="untranslated">【英文原文】</span> [玩具 &lt;论文&gt;] 回答框架',
        "<ol><li><b>【背景】 （30秒）</b> Tuning &lt;all&gt; weights</li>"
        "<li><b>【核心创新】 （1分钟）</b> Freeze &amp; add BA</li>"
        "<li><b>【技术细节】 （1-2分钟）</b> r is 8</li>"
        "<li><b>【影响】 （30秒）</b> Cheap adapters</li>"
        f"<li><b>【准备追问】</b><ul>{follow}</ul></li></ol>",
        "回答框架", False,
    )  # fmt: skip
    kinds = [c.kind for c in paper_cards(paper, "zh", only_translated=True)]
    assert "deep-dive" in kinds and "outline" not in kinds
    # the other way round: a zh outline and no zh deep dive
    zh_outline = {"background": "背景", "innovation": "创新", "details": "细节", "impact": "影响",
                  "follow_ups": ["追问一", "追问二"]}  # fmt: skip
    other = _toy_paper(tmp_path, _dive_and_outline({"answer_outline": zh_outline}), "other")
    flags = {c.kind: c.translated for c in paper_cards(other, "zh")}
    assert (flags["deep-dive"], flags["outline"]) == (False, True)


def test_a_formula_card_names_the_formula_and_an_id_less_one_is_keyed_by_its_name(
    tmp_path: Path,
) -> None:
    import hashlib

    def edit(note: dict) -> None:
        note["short_title"] = "Toy"
        _formulas(note, (None, None))
        note["formulas"][1]["name"] = "Scaled <dot> & product"
        del note["formulas"][1]["id"]

    cards = [c for c in paper_cards(_toy_paper(tmp_path, edit)) if c.kind == "formula"]
    digest = hashlib.sha1(b"Scaled <dot> & product").hexdigest()[:10]
    assert [c.key for c in cards] == ["formula:f1", f"formula:text-{digest}"]
    assert [c.front for c in cards] == [
        "[Toy] Key formulas: Formula 1",
        "[Toy] Key formulas: Scaled &lt;dot&gt; &amp; product",
    ]
    assert [c.source for c in cards] == ["Formula 1", "Scaled &lt;dot&gt; &amp; product"]
    # the back: the display formula, then the meaning as a paragraph
    assert [c.back for c in cards] == [
        "\\[y_1 = a + 1\\]<p>meaning 1</p>",
        "\\[y_2 = a + 2\\]<p>meaning 2</p>",
    ]
    [cloze] = [c for c in paper_cards(_toy_paper(tmp_path, edit)) if c.kind == "cloze"]
    assert cloze == Card(
        "cloze:f1", "cloze", "[Toy] Formula 1<br>\\[y_1 = {{c1::a + 1}}\\]", "<p>meaning 1</p>",
        "Formula 1", True,
    )  # fmt: skip


def test_an_id_less_cloze_is_keyed_by_its_name_and_marked_in_zh_unless_chinese(
    tmp_path: Path,
) -> None:
    import hashlib

    def edit(note: dict) -> None:
        note["short_title"] = "Toy"
        _formulas(note, ("repro/nn/lora.py::merge_lora", "repro/nn/lora.py::LoRALinear"))
        del note["formulas"][0]["id"]
        note["formulas"][1]["meaning"] = "合并后的权重"

    paper = _toy_paper(tmp_path, edit)
    zh = [c for c in paper_cards(paper, "zh") if c.kind == "cloze"]
    digest = hashlib.sha1(b"Formula 1").hexdigest()[:10]
    assert [(c.key, c.translated, c.source) for c in zh] == [
        (f"cloze:text-{digest}", False, "Formula 1"), ("cloze:f2", True, "Formula 2"),
    ]  # fmt: skip
    assert zh[0].front.startswith('<span class="untranslated">【英文原文】</span> [Toy] Formula 1')
    assert all(c.translated for c in paper_cards(paper) if c.kind == "cloze")


def test_a_sentence_end_inside_math_does_not_end_the_short_answer() -> None:
    words = [f"w{i}" for i in range(80)]
    first = "Here $a. B$ " + " ".join(words[:20]) + "."
    assert short_answer(first + " Next " + " ".join(words[20:70])) == first


def test_a_mark_that_opens_the_answer_is_its_first_sentence() -> None:
    # the first sentence end wherever it is, even one character in (nothing before it is cut)
    words = [f"w{i}" for i in range(80)]
    assert short_answer("? W0 " + " ".join(words[1:70])) == "?"
    assert short_answer("？" + " ".join(words[:70])) == "？"
