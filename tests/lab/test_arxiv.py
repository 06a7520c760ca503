"""`paperlab new --arxiv`: metadata from a recorded API answer, never the network."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from paperlab import cli
from repro.lab import arxiv
from repro.lab.arxiv import arxiv_metadata, first_sentence, parse_atom

RECORDED = Path(__file__).parents[1] / "fixtures" / "arxiv"


def _recorded(name: str):
    def fetch(url: str, timeout: float) -> bytes:
        assert url.endswith("id_list=2401.99999") or name == "empty.xml", url
        assert timeout <= 10
        return (RECORDED / name).read_bytes()

    return fetch


def _offline(url: str, timeout: float) -> bytes:
    raise urllib.error.URLError("no route to host")


def test_the_recorded_answer_gives_title_authors_year_and_first_sentence() -> None:
    meta = parse_atom((RECORDED / "2401.99999.xml").read_bytes(), "2401.99999")
    assert meta.title == "Tiny Models, e.g. Toys: A Study of Made-Up Results"
    assert meta.authors == ["Ada Example", "Bo Zhang", "Chloé O'Neil"]
    assert meta.year == 2024  # the first version's year, not the update's
    assert meta.first_sentence == "We study e.g. toy models on Fig. 2 of nothing."


def test_first_sentence_skips_abbreviations_and_decimals() -> None:
    assert first_sentence("A is 3.5 times B. Then C.") == "A is 3.5 times B."
    assert first_sentence("See Fig. 3 and Eq. 2 here. Next.") == "See Fig. 3 and Eq. 2 here."
    assert first_sentence("no full stop at all") == "no full stop at all"


def test_unknown_ids_and_no_network_are_reasons_not_exceptions() -> None:
    assert arxiv_metadata("2401.00000", _recorded("empty.xml")) == (
        None, "arXiv has no paper 2401.00000",
    )  # fmt: skip
    meta, why = arxiv_metadata("2401.99999", _offline)
    assert meta is None and "could not be reached" in why


def test_new_fills_the_note_from_arxiv(library_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(arxiv, "_fetch", _recorded("2401.99999.xml"))
    monkeypatch.setattr(arxiv.arxiv_metadata, "__defaults__", (arxiv._fetch,))
    result = CliRunner().invoke(cli, ["new", "tiny", "--arxiv", "2401.99999"])
    assert result.exit_code == 0, result.output
    note = yaml.safe_load((library_dir / "tiny" / "note.yaml").read_text(encoding="utf-8"))
    assert note["title"] == "Tiny Models, e.g. Toys: A Study of Made-Up Results"
    assert note["authors"] == ["Ada Example", "Bo Zhang", "Chloé O'Neil"]
    assert note["year"] == 2024 and note["url"] == "https://arxiv.org/abs/2401.99999"
    text = (library_dir / "tiny" / "note.yaml").read_text(encoding="utf-8")
    assert "# The abstract opens (arXiv): We study e.g. toy models" in text
    assert CliRunner().invoke(cli, ["validate", "tiny"]).exit_code == 0


def test_new_offline_keeps_the_url_and_leaves_the_year_to_do(library_dir: Path, monkeypatch):
    monkeypatch.setattr(arxiv.arxiv_metadata, "__defaults__", (_offline,))
    result = CliRunner().invoke(cli, ["new", "tiny", "--arxiv", "2401.99999", "--title", "T"])
    assert result.exit_code == 0, result.output
    assert "could not be reached" in result.stderr
    note = yaml.safe_load((library_dir / "tiny" / "note.yaml").read_text(encoding="utf-8"))
    assert note["year"] is None and note["url"] == "https://arxiv.org/abs/2401.99999"
    strict = CliRunner().invoke(cli, ["validate", "--strict", "tiny"])
    assert strict.exit_code == 1 and "year: the year of publication is missing" in strict.stderr


def test_new_without_a_title_or_arxiv_is_one_error(library_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["new", "tiny"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: give the paper's --title (or --arxiv ID to fill it from arXiv)"
    )


@pytest.mark.parametrize("template", ["derived", "experiment", "align"])
def test_every_template_is_valid_wired_and_verifies(library_dir: Path, template: str) -> None:
    slug = f"ex-{template}"
    made = CliRunner().invoke(cli, ["new", slug, "--title", "Ex", "--year", "2024",
                                    "--template", template])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert CliRunner().invoke(cli, ["validate", slug]).exit_code == 0
    strict = CliRunner().invoke(cli, ["validate", "--strict", slug])
    assert strict.exit_code == 1 and "TODO left" in strict.stderr
    checked = CliRunner().invoke(cli, ["check", slug, "--json", "--no-save"])
    assert checked.exit_code == 0, checked.output
    assert '"verdict": "verified"' in checked.stdout
