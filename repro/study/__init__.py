"""The study side: sheets, the site, Anki decks, math text, plots, code excerpts and drill."""
