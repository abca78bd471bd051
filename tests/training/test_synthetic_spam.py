"""Synthetic comment spam: video self-promotion and its hard-negative hams are both generated."""

from __future__ import annotations

from moderation.training import synthetic_spam as S
from moderation.training.data import dedupe_key


def test_generates_promo_spam_and_video_ham_without_near_duplicates() -> None:
    out = S.generate()
    texts = [t.lower() for t, _ in out]
    assert len({dedupe_key(t) for t, _ in out}) == len(out)
    spam = [t.lower() for t, label in out if label == "spam"]
    ham = [t.lower() for t, label in out if label == "ham"]
    for phrase in ("sub4sub", "my channel", "listen on my page", "watch my latest vlog", "first"):
        assert any(phrase in t for t in spam), phrase
    for phrase in ("just subscribed", "for your channel", "made me laugh"):
        assert any(phrase in t for t in ham), phrase
    assert sum("subscri" in t or "channel" in t for t in ham) >= 50  # hard negatives, not a handful
    assert len(texts) == len(set(texts))


def test_every_fill_key_is_defined() -> None:
    import re

    templates = S.SPAM_TEMPLATES + S.PROMO_TEMPLATES + S.HAM_TEMPLATES + S.VIDEO_HAM_TEMPLATES
    keys = {k for t in templates for k in re.findall(r"{(\w+)}", t)}
    assert keys <= set(S.FILL)
    assert len(S.PROMO_TEMPLATES) >= 30 and len(S.VIDEO_HAM_TEMPLATES) >= 25
