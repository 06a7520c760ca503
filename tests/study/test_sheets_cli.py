"""`paperlab sheet`, `show` and `validate` on a temporary library: where output goes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from paperlab import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def invoke(toy_copy):
    toy_copy("toy2", {
        'title: "Toy: a paper for tests"': 'title: "Second toy"',
        "aliases: [toy-alias]": "aliases: []",
        "related: []": "related: [toy, nowhere]",
    })  # fmt: skip
    runner = CliRunner()

    def go(*args: str):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return go


def test_several_papers_to_stdout_ask_for_o(invoke) -> None:
    result = invoke("sheet", "toy", "toy2", "--format", "html")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: 2 papers make 2 documents: give -o DIR/ for a site (index + one page each) "
        "or -o FILE.html for one combined document\n"
    )
    assert result.stdout == ""


def test_several_papers_to_a_file_make_one_document(invoke, tmp_path: Path) -> None:
    out = tmp_path / "two.html"
    assert invoke("sheet", "toy", "toy2", "-o", str(out)).exit_code == 0
    assert out.is_file()
    html = out.read_text()
    assert html.count("<html") == 1 and 'href="#toy"' in html and 'id="toy2"' in html
    assert 'href="#toy">Toy: a paper for tests' in html  # toy2's related link, in the document
    md = tmp_path / "two.md"
    assert invoke("sheet", "toy", "toy2", "-o", str(md)).exit_code == 0
    assert md.read_text().count("](#toy2)") == 1


def test_a_folder_gets_a_site_with_resolving_links(invoke, tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = invoke("sheet", "--all", "--format", "html", "-o", f"{site}/")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in site.iterdir())
    assert names == ["cheatsheet.html", "index.html", "must-know.html", "paperlab-en.apkg",
                     "toy.html", "toy2.html", "zh"]  # fmt: skip
    assert {"index.html", "toy.html", "paperlab-zh.apkg"} <= {
        p.name for p in (site / "zh").iterdir()
    }
    index = (site / "index.html").read_text()
    assert 'href="toy.html"' in index and 'href="toy2.html"' in index
    assert "not yet run" not in index and "Verdicts appear once" in index  # no runs: no counts
    page = (site / "toy2.html").read_text()
    assert 'href="toy.html"' in page and "nowhere" in page and 'href="nowhere' not in page


def test_a_trailing_slash_makes_a_folder_even_with_a_dot_in_its_name(
    invoke, tmp_path: Path
) -> None:
    result = invoke("sheet", "toy", "toy2", "-o", f"{tmp_path / 'notes.v2'}/")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "notes.v2").iterdir()) == [
        "index.md", "toy.md", "toy2.md",
    ]  # fmt: skip
    result = invoke("sheet", "toy", "toy2", "-o", str(tmp_path / "notes.v3"))  # no slash: a file
    assert result.exit_code == 0, result.output
    assert (tmp_path / "notes.v3").is_file()


def test_format_and_suffix_must_agree(invoke, tmp_path: Path) -> None:
    result = invoke("sheet", "toy", "--format", "html", "-o", str(tmp_path / "x.md"))
    assert result.exit_code == 2 and "looks like md, but --format is html" in result.stderr
    assert invoke("sheet", "toy", "-o", str(tmp_path / "y.html")).exit_code == 0
    assert (tmp_path / "y.html").read_text().startswith("<!doctype html>")


def test_anki_needs_a_file_and_writes_a_zip(invoke, tmp_path: Path) -> None:
    result = invoke("sheet", "--format", "anki")
    assert result.exit_code == 2 and "give -o FILE.apkg" in result.stderr
    out = tmp_path / "deck.apkg"
    assert invoke("sheet", "--format", "anki", "-o", str(out)).exit_code == 0
    assert zipfile.is_zipfile(out)
    tsv = invoke("sheet", "toy", "--format", "tsv").stdout
    assert tsv.startswith("#separator:tab") and "paperlab::en::toy" in tsv


def test_must_know_names_the_missing_papers(invoke) -> None:
    result = invoke("sheet", "--must-know")
    assert result.exit_code == 0
    for slug in ("transformer", "bert", "gpt3", "instructgpt", "llama"):
        assert f"note: must-know paper '{slug}' has no note yet" in result.stderr
        assert f"Missing: no note at papers/{slug}/ yet." in result.stdout
    assert invoke("sheet", "toy", "--must-know").exit_code == 2


def test_show_prints_formulas_and_pipes_intact(invoke, library_dir: Path) -> None:
    note = library_dir / "toy" / "note.yaml"
    text = note.read_text()
    text = text.replace("    expected: 4\n", "    expected: 4\n    unit: max |logit|\n", 1)
    text = text.replace("latex: 'TODO'", "latex: '2\\,\\hat{L}_{LoRA}\\, d_{model}'")
    problem = "what: the rank $r$ of $d_{model} \\times r$, $a*b*c$"
    text = text.replace("what: TODO the problem", problem)
    note.write_text(text)
    out = invoke("show", "toy").stdout
    assert "2 L̂_LoRA d_model" in out and "rank r of d_model ×" in out
    assert "a*b*c" in out  # escaped: rich's Markdown does not read the stars as emphasis
    assert "{LoRA}" not in out and "$" not in out
    row = next(line for line in out.splitlines() if "Two plus two" in line)
    assert "max |logit|" in row
    assert "核心问题" in invoke("show", "toy", "--lang", "zh").stdout


def test_validate_reports_math_with_position(invoke, library_dir: Path) -> None:
    note = library_dir / "toy" / "note.yaml"
    note.write_text(note.read_text().replace("what: TODO the problem", "what: see $\\foo{x}$"))
    result = invoke("validate", "toy")
    assert result.exit_code == 2
    line = next(i for i, l in enumerate(note.read_text().splitlines(), 1) if "\\foo" in l)
    assert f"papers/toy/note.yaml:{line}:13: problem.what: cannot convert" in result.stderr


def test_the_whole_library_as_a_site_is_torch_free(tmp_path: Path) -> None:
    """Speed is `paperlab bench`'s business, not a test's: this only checks what is imported."""
    script = (
        "import sys; from paperlab import main; sys.argv = ['paperlab', 'sheet', '--all', "
        f"'--format', 'html', '-o', {str(tmp_path / 'site')!r} + '/']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "site" / "index.html").exists()


def test_show_writes_no_control_characters_from_a_tampered_run(invoke, library_dir: Path) -> None:
    """A run folder is data on disk: its commit, preset, times and measured values reach the
    terminal sheet, never as escape sequences."""
    import json
    import os

    run = Path(os.environ["PAPERLAB_RUNS"]) / "toy" / "20260102T030405000000Z"
    run.mkdir(parents=True)
    claims = [{"paper": "toy", "id": "two-plus-two", "statement": "s", "kind": "derived",
               "expected": 4, "tolerance": "exact", "verdict": "verified", "unit": "\x1b[5m",
               "measured": "\x1b[31m4", "when": "\x1b]0;title\x07"}]  # fmt: skip
    (run / "claims.json").write_text(json.dumps(claims))
    (run / "environment.json").write_text(json.dumps({"git_commit": "\x1b[2J\x1b[31mabc"}))
    (run / "config.json").write_text(json.dumps({"_preset": "\x9b31m\x1bcquick"}))
    for lang in ("en", "zh"):
        result = invoke("show", "toy", "--lang", lang)
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert not any(c in out for c in "\x1b\x07\x9b"), repr(out[:200])
        assert "quick" in out and "abc" in out  # shown, escaped
