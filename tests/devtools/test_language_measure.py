"""python -m moderation.devtools.languages: the figures it reports, on the team's posts and on given English texts."""

from __future__ import annotations

from pathlib import Path

import pytest

from moderation.devtools import languages as M
from moderation.pipeline.language import Languages


def test_the_sample_spans_languages_and_scripts_and_is_measured_per_set() -> None:
    posts = M.language_posts()
    assert {p["set"] for p in posts} == {"dev", "heldout", "romanized"}
    assert all(p["lang"] != "en" and p["text"].strip() for p in posts)
    got = M.measure_posts(Languages(), posts)
    dev, held = got["dev"], got["heldout"]
    assert dev["languages"] >= 6 and dev["scripts"] >= 6 and held["languages"] >= 20 and held["scripts"] >= 10
    assert dev["flagged"] == dev["posts"] == sum(v["posts"] for v in dev["by_language"].values())
    assert held["flagged"] == held["posts"] - len(held["missed"])
    assert all(m["lang"] in held["by_language"] for m in held["missed"])


def test_english_false_positives_are_counted_per_source() -> None:
    texts = {"mine": ["I can't believe the bus was late again today", "Wir fahren am Wochenende an den See", "ok"]}
    got, seconds = M.measure_english(Languages(), texts, batch=2)
    assert got["mine"]["posts"] == 3 and got["mine"]["flagged"] == 1 and got["mine"]["as"] == {"de": 1}
    assert len(seconds) == 2 and all(s > 0 for s in seconds)  # per post, for each batch


def test_a_missing_data_dir_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert M.main(["--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0] and "--data-dir" in err[0]
