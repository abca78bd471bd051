"""Stage 2 — dedupe: identical posts (after normalisation) are scored once.

Spam waves repeat the same text thousands of times; a bounded LRU keyed by a hash of the normalised
text turns each wave into one inference. Normalisation only removes differences the uncased model
cannot see anyway (Unicode compatibility forms, case, runs of whitespace), so a cache hit returns
exactly the scores the model would have produced.
"""

from __future__ import annotations

import hashlib
import re
import struct
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


_NUMBER = struct.Struct("<H")  # layout number: one per model's label set, so a handful at most
Layout = tuple[tuple[str, tuple[str, ...]], ...]  # (task, its labels in order), in order


class ScoreCache:
    """Bounded, thread-safe LRU of text key → scores. ``maxsize=0`` disables caching.

    An entry is stored packed: one ``bytes`` of a layout number and the scores as doubles (lossless),
    the task/label names once per layout. As dicts of floats an entry cost ~1.25 KB and the default
    50,000 entries ~61 MiB, which a worker's RSS climbed to over hours as distinct texts trickled in;
    packed it is ~0.3 KB (see tests/pipeline/test_dedupe.py). A hit returns fresh dicts, equal to what
    was put.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._layouts: list[Layout] = []
        self._layout_ids: dict[Layout, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> Scores | None:
        with self._lock:
            packed = self._data.get(key)
            if packed is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
        return self._unpack(packed)

    def put(self, key: bytes, scores: Scores) -> None:
        if self.maxsize <= 0:
            return
        packed = self._pack(scores)
        with self._lock:
            self._data[key] = packed
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def _pack(self, scores: Scores) -> bytes:
        layout = tuple((task, tuple(labels)) for task, labels in scores.items())
        number = self._layout_ids.get(layout)
        if number is None:
            with self._lock:
                number = self._layout_ids.setdefault(layout, len(self._layouts))
                if number == len(self._layouts):
                    self._layouts.append(layout)
        values = [v for labels in scores.values() for v in labels.values()]
        return _NUMBER.pack(number) + struct.pack(f"<{len(values)}d", *values)

    def _unpack(self, packed: bytes) -> Scores:
        layout = self._layouts[_NUMBER.unpack_from(packed)[0]]
        values = iter(struct.unpack_from(f"<{(len(packed) - _NUMBER.size) // 8}d", packed, _NUMBER.size))
        return {task: {label: next(values) for label in labels} for task, labels in layout}


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
