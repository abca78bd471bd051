"""Benchmark inputs: realistic post texts, reproducibly.

Posts come from the committed demo sample when it exists (real text, real length mix); otherwise
they are synthesised from the model's own WordPiece vocabulary with social-media lengths and
texture (see ``synthesize``), which exercises the same tokenizer paths and length buckets as real
traffic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from moderation.core.settings import PACKAGE_DIR
from moderation.pipeline.tokenize import TextTokenizer, bucket_for

DEMO_DATA_DIR = PACKAGE_DIR / "devtools" / "demo_data"
_WORD = re.compile(r"^[a-z]{2,14}$")


def sample_texts(directory: Path | None = None) -> list[str]:
    """Texts of the valid ``*.jsonl`` posts in ``directory`` (field ``text``), or [] if there are none."""
    directory = DEMO_DATA_DIR if directory is None else directory
    texts: list[str] = []
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        for line in path.read_bytes().splitlines():
            try:  # the demo file holds deliberately broken lines (bad UTF-8, bad JSON) for the DLQ
                record = json.loads(line)
            except ValueError:
                continue
            text = record.get("text") if isinstance(record, dict) else None
            if isinstance(text, str) and text.strip():
                texts.append(text)
    return texts


def vocabulary_words(tokenizer: TextTokenizer) -> list[str]:
    """Whole lower-case words of the tokenizer's vocabulary (no ``##`` pieces, no specials)."""
    vocab = tokenizer.vocabulary()
    words = sorted(w for w in vocab if _WORD.match(w))
    if len(words) < 50:
        raise ValueError(f"tokenizer has only {len(words)} whole-word entries; cannot synthesise posts")
    return words


_PUNCT = (",", ".", "!", "?", "...", ":)", "!!")
_URLS = ("https://t.co/x7Gq2LpZ", "http://bit.ly/3kPz9", "www.example.com/deal?id=42")


def synthesize(words: Sequence[str], n: int, *, min_words: int = 3, max_words: int = 90, seed: int = 0) -> list[str]:
    """``n`` posts of social-media length and texture.

    Word counts are log-normal (median 16, long tail to ``max_words``); words are Zipf-distributed
    over the vocabulary; punctuation, @mentions, #hashtags and the odd URL are sprinkled in since
    they are what makes real posts tokenize to ~1.3 tokens per word.
    """
    rng = np.random.default_rng(seed)
    counts = np.clip(np.round(rng.lognormal(np.log(16), 0.7, n)), min_words, max_words).astype(int)
    weights = 1.0 / np.arange(1, len(words) + 1)
    weights /= weights.sum()
    order = rng.permutation(len(words))  # the vocabulary's alphabetical order says nothing of frequency
    posts = []
    for count in counts:
        out: list[str] = []
        for i in order[rng.choice(len(words), size=count, p=weights)]:
            r = rng.random()
            word = words[i]
            if r < 0.03:
                word = "@" + word + str(int(rng.integers(10, 999)))
            elif r < 0.06:
                word = "#" + word.capitalize()
            out.append(word)
            if rng.random() < 0.12:
                out[-1] += _PUNCT[int(rng.integers(len(_PUNCT)))]
        if rng.random() < 0.1:
            out.append(_URLS[int(rng.integers(len(_URLS)))])
        text = " ".join(out)
        posts.append(text[0].upper() + text[1:])
    return posts


def resample(pool: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    picks = rng.choice(len(pool), size=n, replace=len(pool) < n)
    return [pool[i] for i in picks]


def workloads(tokenizer: TextTokenizer, n: int, *, seed: int = 0) -> dict[str, tuple[list[str], str]]:
    """Named benchmark workloads of ``n`` posts each, with where the posts came from.

    ``short``: synthetic posts of at most 64 tokens (the performance bar's workload); ``mixed``:
    the full synthetic length mix up to ``max_length``; ``demo``: the committed demo sample, if any.
    """
    rng = np.random.default_rng(seed)
    synthetic = synthesize(vocabulary_words(tokenizer), max(2 * n, 1024), seed=seed)
    lengths = [len(ids) for ids in tokenizer.token_ids(synthetic)]
    short = [t for t, length in zip(synthetic, lengths, strict=True) if length <= 64]
    source = "synthetic: tokenizer vocabulary, 3-90 words, social-media texture"
    result = {
        "short": (resample(short, n, rng), source + ", <= 64 tokens"),
        "mixed": (resample(synthetic, n, rng), source),
    }
    sample = sample_texts()
    if sample:
        result["demo"] = (resample(sample, n, rng), f"{len(sample)} valid posts of {DEMO_DATA_DIR.name}/*.jsonl")
    return result


def length_profile(tokenizer: TextTokenizer, texts: Sequence[str]) -> dict[str, object]:
    """Token-length percentiles and the share of posts per bucket, to say what was measured."""
    lengths = np.array([len(ids) for ids in tokenizer.token_ids(texts)])
    buckets: dict[int, int] = {}
    for n in lengths:
        b = bucket_for(int(n), tokenizer.buckets)
        buckets[b] = buckets.get(b, 0) + 1
    return {
        "posts": len(texts),
        "tokens_p50": int(np.percentile(lengths, 50)),
        "tokens_p90": int(np.percentile(lengths, 90)),
        "tokens_max": int(lengths.max()),
        "bucket_share": {str(b): round(c / len(texts), 3) for b, c in sorted(buckets.items())},
    }
