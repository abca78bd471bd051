"""Stage 2 — dedupe: identical posts (after normalisation) are scored once.

Spam waves repeat the same text thousands of times; a bounded LRU keyed by a hash of the normalised
text turns each wave into one inference. Normalisation only removes differences the uncased model
cannot see anyway (Unicode compatibility forms, case, runs of whitespace), so a cache hit returns
exactly the scores the model would have produced.
"""

from __future__ import annotations

import hashlib
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence

from moderation.pipeline.records import Scores

_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_key(text: str) -> bytes:
    """Stable 16-byte digest of the normalised text (keeps the cache small; never stores text)."""
    return hashlib.blake2b(normalize_text(text).encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ScoreCache:
    """Bounded, thread-safe LRU of text key → scores. ``maxsize=0`` disables caching."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, Scores] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> Scores | None:
        with self._lock:
            scores = self._data.get(key)
            if scores is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return scores

    def put(self, key: bytes, scores: Scores) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = scores
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)


def plan_inference(
    texts: Sequence[str], cache: ScoreCache
) -> tuple[list[bytes], dict[bytes, Scores], dict[bytes, str]]:
    """Split a batch into cached scores and the unique texts that still need the model.

    Returns (key per input text, cached scores by key, text to score by key); duplicates inside
    one batch collapse to a single entry in the last mapping.
    """
    keys = [text_key(t) for t in texts]
    cached: dict[bytes, Scores] = {}
    todo: dict[bytes, str] = {}
    for key, text in zip(keys, texts, strict=True):
        if key in cached or key in todo:
            continue
        hit = cache.get(key)
        if hit is not None:
            cached[key] = hit
        else:
            todo[key] = text
    return keys, cached, todo
