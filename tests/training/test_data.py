"""Data splits are pure functions of source and text, and synthetic spam never reaches a test set."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from moderation.training import data as D
from moderation.training.synthetic_spam import generate


@given(st.text(min_size=1, max_size=80))
def test_split_depends_only_on_source_and_normalised_text(text: str) -> None:
    first = D.hash_split("sms", text, 0.1, 0.2)
    assert D.hash_split("sms", text, 0.1, 0.2) == first
    assert D.hash_split("sms", f"  {text.upper()}  ", 0.1, 0.2) == D.hash_split("sms", text.upper(), 0.1, 0.2)


def test_split_fractions_are_roughly_as_asked() -> None:
    splits = Counter(D.hash_split("x", f"post number {i}", 0.1, 0.2) for i in range(20_000))
    assert abs(splits["test"] / 20_000 - 0.2) < 0.02
    assert abs(splits["val"] / 20_000 - 0.1) < 0.02


def test_synthetic_spam_is_deterministic_and_never_test() -> None:
    assert generate(seed=13) == generate(seed=13)
    parts: dict = {}
    D.load_synthetic_spam(parts)
    assert {split for (_, split) in parts} <= {"train", "val"}
    labels = Counter(e.target[0] for exs in parts.values() for e in exs)
    assert labels[1] > labels[0] > 0  # spam-heavy, with some hard ham


def test_missing_data_dir_says_what_to_pass(tmp_path) -> None:
    import pytest

    from moderation.core.errors import ConfigError

    with pytest.raises(ConfigError, match="--data-dir"):
        D.load_corpus(tmp_path / "nope")
