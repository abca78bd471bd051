"""Tokenize → bucket-padded int64 arrays for the ONNX models.

Batches are padded to the smallest configured *length bucket* that fits their longest post rather
than to the longest post itself: ONNX Runtime plans and caches memory per input shape, so a handful
of shapes keeps its arena (and its latency) stable, while padding everything to ``max_length``
would waste most of the compute on short posts.

The HF tokenizer.json shipped with all-MiniLM-L6-v2 pads every encoding to a fixed 128; that is
switched off here and padding is done in numpy.

Every text goes through :func:`prepare_text` first (emoji → their English names as words): the
uncased BERT vocabulary has no tokens for most emoji, so "I would love to 🔪 some 👳🏾" would reach the
model as "... love to [UNK] some [UNK]". The model build calls the same function on its training texts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import emoji
import numpy as np
from tokenizers import Tokenizer

from moderation.core.errors import ModelError


def _char_class(chars: Iterable[str]) -> str:
    """A regex class of ``chars`` as code-point ranges: ``re`` tests astral literals one by one,
    ranges in one step (the 1,448 emoji characters fold into 158 ranges)."""
    ranges: list[list[int]] = []
    for cp in sorted({ord(c) for c in chars}):
        if ranges and cp == ranges[-1][1] + 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return "[" + "".join(f"\\U{a:08x}-\\U{b:08x}" for a, b in ranges) + "]"


# Every emoji sequence the ``emoji`` package knows is a run of these characters - the non-ASCII
# characters of all of them - after at most one ASCII keycap base ("1️⃣" is "1" U+FE0F U+20E3).
# Only such runs go through the package's pure-Python scan (26 ms for 20,000 characters): texts
# without one, most non-English posts, are returned as they are, and a long post with one emoji
# pays for that emoji alone. A match never spans a character outside a run, so the output is the
# same as the package's on the whole text.
_EMOJI_RUN = re.compile("[#*0-9]?" + _char_class(c for seq in emoji.EMOJI_DATA for c in seq if not c.isascii()) + "+")
# "_medium-dark_skin_tone" and friends: dropped from names (see prepare_text).
_SKIN_TONE = re.compile(r"[_:](?:light|medium-light|medium|medium-dark|dark)_skin_tone(?=[_:])")


def _emoji_name(chars: str, data: dict[str, str]) -> str:
    name = data.get("en")
    if not name:
        return chars
    words = _SKIN_TONE.sub("", name).strip(":").replace("_", " ")
    return f" {words} " if words else " "


def prepare_text(text: str) -> str:
    """Model input text for ``text``: each emoji replaced by its English CLDR name, between spaces.

    ``"love to 🔪 some 👳🏾"`` → ``"love to  kitchen knife  some  person wearing turban "``. ZWJ sequences
    become one name (``"👨‍👩‍👧"`` → ``" family man woman girl "``), flags their country ("🇫🇷" →
    ``" France "``). Skin-tone modifiers are dropped ("👍🏿" → ``" thumbs up "``): they would cost up to
    five tokens of the length budget each, and a model learning a correlation between "dark skin
    tone" and a harm label would flag people for depicting themselves; the emoji's meaning is kept.

    Serving (``TextTokenizer``) and the model build both call this: keep them on the same function,
    and rebuild the model when its output changes. Pure, thread-safe, and never raises: should the
    ``emoji`` package fail on some input, the text is returned unchanged (scored as before).
    Texts without emoji - ASCII ones above all - are returned as they are (the same object).
    """
    if text.isascii() or _EMOJI_RUN.search(text) is None:
        return text
    try:
        return _EMOJI_RUN.sub(_run_to_words, text)
    except Exception:  # a bug in the emoji package must not lose the post
        return text


def _run_to_words(run: re.Match[str]) -> str:
    return emoji.replace_emoji(run[0], replace=_emoji_name)


# emoji builds its search tree on first use, in place: a thread racing that build could see half a
# tree and miss emoji. Build it now, while importing is single-threaded.
prepare_text("\N{HOCHO}")


class Batch(NamedTuple):
    """Model inputs for one ORT call: both int64 ``[batch, bucket]``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


def normalize_buckets(buckets: Iterable[int], max_length: int) -> tuple[int, ...]:
    """Sorted, positive buckets no longer than ``max_length``, always ending at ``max_length``.

    Ending at ``max_length`` guarantees every truncated post fits some bucket.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    kept = {b for b in buckets if 0 < b < max_length}
    return (*sorted(kept), max_length)


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket that holds ``length`` tokens (``buckets`` sorted ascending)."""
    for bucket in buckets:
        if length <= bucket:
            return bucket
    raise ValueError(f"sequence of {length} tokens is longer than the largest bucket {buckets[-1]}")


def pad_batch(sequences: Sequence[Sequence[int]], buckets: Sequence[int], pad_id: int = 0) -> Batch:
    """Right-pad token id lists to the bucket of the longest; an empty batch gets the smallest bucket."""
    longest = max((len(s) for s in sequences), default=0)
    width = bucket_for(longest, buckets)
    input_ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        n = len(seq)
        input_ids[row, :n] = seq
        attention_mask[row, :n] = 1
    return Batch(input_ids, attention_mask)


def group_by_bucket(lengths: Sequence[int], buckets: Sequence[int]) -> dict[int, list[int]]:
    """Row indices per bucket, so a few long posts don't make a whole batch pay for their padding."""
    groups: dict[int, list[int]] = {}
    for row, n in enumerate(lengths):
        groups.setdefault(bucket_for(n, buckets), []).append(row)
    return dict(sorted(groups.items()))


class TextTokenizer:
    """HF ``tokenizers`` wrapper: truncation on, padding off, bucketed numpy output.

    Thread-safe: each thread gets its own ``Tokenizer`` (built from the same JSON), so concurrent
    inference threads never share the Rust object's internal state.
    """

    def __init__(
        self, path: Path, max_length: int, buckets: Iterable[int] = (16, 32, 64, 128), *, emoji_to_words: bool = True
    ) -> None:
        """``emoji_to_words``: apply :func:`prepare_text` (what the model was trained with; a model built
        before it existed says so in its manifest and gets the raw text)."""
        self.path = Path(path)
        self.emoji_to_words = emoji_to_words
        try:
            self._json = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ModelError(
                f"cannot read tokenizer {self.path}: {exc}; restore it with `git checkout -- {self.path}` "
                "or rebuild the model with `moderation models build`"
            ) from exc
        self.max_length = max_length
        self.buckets = normalize_buckets(buckets, max_length)
        self._local = threading.local()
        # Fail fast on a corrupt file, in the constructing thread; read the pad id before padding is off.
        shipped = self._load()
        pad_id = (shipped.padding or {}).get("pad_id")
        if pad_id is None:
            pad_id = shipped.token_to_id("[PAD]")
        self.pad_id = int(pad_id or 0)

    def _load(self) -> Tokenizer:
        try:
            return Tokenizer.from_str(self._json)
        except Exception as exc:  # the Rust side raises plain Exception on bad JSON
            raise ModelError(
                f"tokenizer {self.path} is not a valid tokenizers JSON file ({exc}); restore it with "
                f"`git checkout -- {self.path}` or rebuild the model with `moderation models build`"
            ) from exc

    def _tokenizer(self) -> Tokenizer:
        tok: Tokenizer | None = getattr(self._local, "tok", None)
        if tok is None:
            tok = self._load()
            tok.no_padding()
            tok.enable_truncation(max_length=self.max_length)
            self._local.tok = tok
        return tok

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Truncated, unpadded ids (special tokens included) for each text, after :func:`prepare_text`."""
        if not texts:
            return []
        inputs = [prepare_text(t) for t in texts] if self.emoji_to_words else list(texts)
        return [enc.ids for enc in self._tokenizer().encode_batch(inputs)]

    def vocabulary(self) -> dict[str, int]:
        return self._tokenizer().get_vocab()

    def encode(self, texts: Sequence[str]) -> Batch:
        """One batch padded to the bucket of its longest post."""
        return pad_batch(self.token_ids(texts), self.buckets, self.pad_id)
