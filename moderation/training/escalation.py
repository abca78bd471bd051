"""The escalation budget: how much traffic the SLM tier settles, how well, and bands fitted to a target.

The design document wants the SLM tier to settle ~95 % of traffic and send the rest up (LLM review,
humans). Three questions, answered on real held-out posts with the real policy (``decide``):

1. **What share does a model escalate, and how accurate is what it decides alone?** On the *reference
   traffic mix* (:data:`REFERENCE_MIX`, drawn from test splits only) with the shipped policy.
2. **What does a wider or narrower review band buy?** The coverage–accuracy curve: every label's review
   band is scaled around its decision point (:func:`scale_band`) from 0 (no band: block or allow) to
   wide, and for each scale we report coverage (share decided without escalation) and the accuracy of
   the decided posts. Several models share one curve.
3. **Which band sends ~X % to review?** :func:`fit_band` fits per-label review/block thresholds on the
   *calibration* mix (the same strata from the **val** splits, weighted to the reference shares) for a
   target escalation rate, maximising the accuracy of the rest. ``moderation models bands`` writes them
   into the manifest (``review_bands``); ``MODERATION_ESCALATION_TARGET`` makes the worker use one
   (``moderation.pipeline.policy.PolicyStore.from_settings``).

Definitions (used everywhere below):

- **Correct action** of a post (its ground truth): ``block`` if its gold labels say toxic or hateful
  (any annotated positive of ``toxic``/``hate``) or spam; ``allow`` if it is benign: annotated not toxic
  (and not hateful where annotated), ham, or a news/topic post. ``targeted`` is ignored (the policy does
  not act on it). Posts whose gold labels cannot settle it are never drawn: HatEval's and Stormfront's
  "not hate" posts have no toxic annotation (they may still be offensive), and HateCheck is a
  hand-written functional test suite, not traffic.
- **Escalated**: the post leaves the SLM tier: its action is ``review`` (human/LLM review topic) *or* an
  escalation trigger fired (LLM-review topic), exactly what the worker does (``pipeline/emit.py``).
- **Decided**: not escalated; its action is ``allow`` or ``block``. **Coverage** = decided share;
  **decided accuracy** = share of decided posts whose action is their correct action.

Everything here except :func:`run_bands`, :func:`for_eval` and :func:`plot_curve` is a pure function of
arrays; scores are ``task → [n_posts, n_labels]`` arrays in :data:`moderation.training.data.LABELS` order,
rows in mix order (what ``OnnxEngine.score_arrays`` returns).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from moderation.core.errors import ConfigError, ModelError
from moderation.pipeline.injection import looks_like_injection
from moderation.pipeline.language import LanguageRule, assess_language
from moderation.pipeline.policy import (
    Policy,
    Thresholds,
    apply_band,
    band_key,
    decide,
    odd_char_ratio,
    override_key,
)
from moderation.pipeline.records import Post
from moderation.training import data as D

Gold = Literal["allow", "block"]
Kind = Literal["benign", "spam", "toxic"]
ScoreArrays = Mapping[str, np.ndarray]
LABELS: dict[str, tuple[str, ...]] = {str(task): labels for task, labels in D.LABELS.items()}

ALLOW, REVIEW, BLOCK = 0, 1, 2  # action codes of the vectorised policy
_CODE = {"allow": ALLOW, "review": REVIEW, "block": BLOCK}

DEFAULT_TARGETS = (0.02, 0.05, 0.10)
CURVE_SCALES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
CURVE_NAME = "escalation_curve.png"
SLM_TIER_TARGET = 0.95  # the design document: the SLM tier settles ~95 % of traffic


# --------------------------------------------------------------------------------------------------
# The reference traffic mix
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stratum:
    """``n`` posts of one source whose correct action is ``gold`` (and, if set, whose ``group`` matches)."""

    name: str
    source: str
    gold: Gold
    n: int
    group: str = ""


@dataclass(frozen=True)
class MixSpec:
    """A traffic mix: strata drawn without replacement (texts unique across the mix) with a fixed seed."""

    name: str
    seed: int
    size: int
    strata: tuple[Stratum, ...]

    def __post_init__(self) -> None:
        total = sum(s.n for s in self.strata)
        if total != self.size:
            raise ValueError(f"mix {self.name}: strata add up to {total} posts, size says {self.size}")

    def scaled(self, factor: float) -> MixSpec:
        """Every stratum shrunk by ``factor`` (at least one post each): smoke tests, ``--quick``."""
        strata = tuple(replace(s, n=max(1, round(s.n * factor))) for s in self.strata)
        return MixSpec(f"{self.name} x{factor:g}", self.seed, sum(s.n for s in strata), strata)


REFERENCE_MIX = MixSpec(
    name="reference-2026.11",
    seed=2026,
    size=4000,
    strata=(
        # benign: 3,400 posts = 85 % (tweets, X and Instagram posts, comments, SMS ham, news) ---------------
        Stratum("olid_not_offensive", "olid", "allow", 500),  # OffensEval official test, NOT
        Stratum("hatexplain_normal", "hatexplain", "allow", 500, group="normal"),  # tweets and Gab posts
        Stratum("davidson_neither", "davidson", "allow", 250, group="neither"),
        Stratum("detox_normal", "detox", "allow", 450),  # Jigsaw-derived comment sentences
        Stratum("jigsaw_not_toxic", "jigsaw", "allow", 300),
        Stratum("surge_not_toxic", "surge", "allow", 80),
        Stratum("tweet_topic", "tweet_topic", "allow", 200),  # ordinary tweets on every topic
        Stratum("janitr_ham", "janitr", "allow", 350),  # X posts
        Stratum("scamspot_ham", "scamspot", "allow", 250),  # Instagram comments
        Stratum("sms_ham", "sms", "allow", 250),
        Stratum("ag_news", "ag_news", "allow", 270),  # news snippets (incl. reports of violence)
        # spam: 280 posts = 7 % ---------------------------------------------------------------------------
        Stratum("sms_spam", "sms", "block", 100),
        Stratum("scamspot_scam", "scamspot", "block", 100),  # Instagram scam comments
        Stratum("janitr_spam", "janitr", "block", 80),  # X spam
        # toxic or hateful: 320 posts = 8 % ---------------------------------------------------------------
        Stratum("olid_offensive", "olid", "block", 55),
        Stratum("hatexplain_hate", "hatexplain", "block", 45, group="hatespeech"),
        Stratum("hatexplain_offensive", "hatexplain", "block", 40, group="offensive"),
        Stratum("edos_sexist", "edos", "block", 20),  # Reddit and Gab
        Stratum("hateval_hate", "hateval", "block", 35),
        Stratum("davidson_offensive", "davidson", "block", 30, group="offensive"),
        Stratum("davidson_hate", "davidson", "block", 15, group="hate"),
        Stratum("detox_toxic", "detox", "block", 30),
        Stratum("jigsaw_toxic", "jigsaw", "block", 20),
        Stratum("surge_toxic", "surge", "block", 15),
        Stratum("stormfront_hate", "stormfront", "block", 15),
    ),
)
"""The reference traffic mix: 4,000 held-out *test* posts, 85 % benign, 7 % spam, 8 % toxic or hateful.

Drawn with seed 2026 from the test splits of ``moderation.training.data`` (never train/val), every text at
most once. Social-media text dominates every kind: tweets, X and Instagram posts, Gab and Reddit posts,
comment sentences; SMS and news are a minority. Left out on purpose: synthetic spam (train/val only
anyway), HateCheck (hand-written functional tests), HatemojiBuild (adversarial, written to fool models),
ToxiGen (statements written to probe models, not traffic), and posts whose correct action the labels
cannot tell (HatEval/Stormfront "not hate" and EDOS "not sexist" have no toxic annotation).

The calibration mix for :func:`fit_band` is the same strata drawn from the **val** splits
(:func:`build_mix` with ``split="val"``), weighted so each stratum keeps its share where a val split has
fewer posts than asked (SMS spam, TweetTopic, Surge).
"""


def gold_action(e: D.Example) -> Gold | None:
    """An example's correct action, or None when its labels cannot tell (see the module docstring)."""
    if e.task == "spam":
        return "block" if D.SPAM_LABELS[e.target[0]] == "spam" else "allow"
    if e.task == "category":
        return "allow"
    toxic, hate = D.TOXICITY_LABELS.index("toxic"), D.TOXICITY_LABELS.index("hate")
    if any(e.mask[j] and e.target[j] for j in (toxic, hate)):
        return "block"
    if e.mask[toxic]:
        return "allow"
    return None


def kind_of(e: D.Example, gold: Gold) -> Kind:
    if gold == "allow":
        return "benign"
    return "spam" if e.task == "spam" else "toxic"


@dataclass(frozen=True)
class Mix:
    """Posts of a mix in a fixed order, with what each should get and how much it counts."""

    name: str
    split: D.Split
    texts: tuple[str, ...]
    gold: np.ndarray  # action codes: ALLOW or BLOCK
    kinds: tuple[Kind, ...]
    strata: tuple[str, ...]
    sources: tuple[str, ...]
    weights: np.ndarray  # sums to 1; uniform for a test mix

    def __len__(self) -> int:
        return len(self.texts)

    def describe(self) -> dict[str, Any]:
        kinds = np.array(self.kinds)
        shares = {k: round(float(self.weights[kinds == k].sum()), 4) for k in ("benign", "spam", "toxic")}
        counts: dict[str, int] = {}
        for s in self.strata:
            counts[s] = counts.get(s, 0) + 1
        sources = {k: sorted({src for src, x in zip(self.sources, self.kinds, strict=True) if x == k}) for k in shares}
        return {
            "name": self.name,
            "split": self.split,
            "n": len(self),
            "shares": shares,
            "sources": sources,
            "strata": counts,
        }


def build_mix(corpus: D.Corpus, spec: MixSpec = REFERENCE_MIX, split: D.Split = "test") -> Mix:
    """Draw ``spec`` from ``split``: ``test`` = the reference mix (every stratum exactly its ``n``, or
    ConfigError); ``val`` = the calibration mix (up to ``n`` per stratum, weighted back to the shares)."""
    if split == "train":
        raise ValueError("a traffic mix is drawn from held-out posts only (test, or val for calibration)")
    texts: list[str] = []
    gold: list[int] = []
    kinds: list[Kind] = []
    strata: list[str] = []
    sources: list[str] = []
    weights: list[float] = []
    seen: set[str] = set()
    for k, stratum in enumerate(spec.strata):
        pool = [
            e
            for e in corpus.get(stratum.source, split)
            if gold_action(e) == stratum.gold
            and (not stratum.group or e.group == stratum.group)
            and D.normalize_key(e.text) not in seen
        ]
        if split == "test" and len(pool) < stratum.n:
            raise ConfigError(
                f"mix {spec.name}: stratum {stratum.name} needs {stratum.n} posts, the {stratum.source} {split} "
                f"split has {len(pool)}; check --data-dir"
            )
        if not pool:
            raise ConfigError(f"mix {spec.name}: no {split} posts for stratum {stratum.name} ({stratum.source})")
        chosen = D.sample(pool, stratum.n, spec.seed + k)
        weight = stratum.n / len(chosen)
        for e in chosen:
            seen.add(D.normalize_key(e.text))
            texts.append(e.text)
            gold.append(_CODE[stratum.gold])
            kinds.append(kind_of(e, stratum.gold))
            strata.append(stratum.name)
            sources.append(e.source)
            weights.append(weight)
    w = np.asarray(weights, dtype=np.float64)
    return Mix(
        name=spec.name if split == "test" else f"{spec.name} (calibration: val splits)",
        split=split,
        texts=tuple(texts),
        gold=np.asarray(gold, dtype=np.int64),
        kinds=tuple(kinds),
        strata=tuple(strata),
        sources=tuple(sources),
        weights=w / w.sum(),
    )


# --------------------------------------------------------------------------------------------------
# The policy, vectorised (checked against decide() post by post: tests and every report)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What the policy needs from a mix and a model's scores, computed once."""

    names: tuple[str, ...]  # policy labels the scores carry, in policy order
    p: np.ndarray  # [n, len(names)] float64 scores
    categories: tuple[str, ...]
    category: np.ndarray  # index into categories of the top category, -1 without category scores
    category_prob: np.ndarray
    text_len: np.ndarray
    odd_ratio: np.ndarray
    injected: np.ndarray  # the prompt-injection detector flags the text
    # the policy's rule for the text's language (no producer lang here): the action becomes review / the
    # trigger unsupported_language fires
    language_review: np.ndarray
    language_trigger: np.ndarray


def prepare(
    policy: Policy,
    scores: ScoreArrays,
    texts: Sequence[str],
    labels: Mapping[str, Sequence[str]] = LABELS,
) -> Prepared:
    n = len(texts)
    names, cols = [], []
    for name in policy.labels:
        task, _, label = name.partition(".")
        if task in scores and label in labels.get(task, ()):
            names.append(name)
            cols.append(np.asarray(scores[task], dtype=np.float64)[:, list(labels[task]).index(label)])
    for task, arr in scores.items():
        if len(arr) != n:
            raise ValueError(f"scores[{task!r}] has {len(arr)} rows for {n} texts")
    cat_task = policy.category_task
    if cat_task in scores:
        dist = np.asarray(scores[cat_task], dtype=np.float64)
        category, category_prob = dist.argmax(axis=1), dist.max(axis=1)
        categories = tuple(labels[cat_task])
    else:
        category, category_prob, categories = np.full(n, -1), np.zeros(n), ()
    rules = _language_rules(policy, texts)
    return Prepared(
        names=tuple(names),
        p=np.stack(cols, axis=1) if cols else np.zeros((n, 0)),
        categories=categories,
        category=category,
        category_prob=category_prob,
        text_len=np.array([len(t) for t in texts]),
        odd_ratio=np.array([odd_char_ratio(t) for t in texts]),
        injected=np.array([looks_like_injection(t) for t in texts], dtype=bool),
        language_review=np.array([r is not None and r.action == "review" for r in rules], dtype=bool),
        language_trigger=np.array([r is not None and r.escalate for r in rules], dtype=bool),
    )


def _language_rules(policy: Policy, texts: Sequence[str]) -> list[LanguageRule | None]:
    """Per text the policy's rule for its language (None: decided as usual), as ``decide`` finds it."""
    lang = policy.languages
    if not lang.enabled:
        return [None] * len(texts)
    return [lang.rule_for(assess_language(lang, Post(id="", text=t))) for t in texts]


def band_units(policy: Policy, prep: Prepared) -> tuple[str, ...]:
    """The thresholds a band can set for this policy and these scores: every label (``task.label``) and
    every category override of one (``category/task.label``), as :func:`apply_band` names them."""
    units = list(prep.names)
    for category, rules in policy.category_overrides.items():
        units += [override_key(category, name) for name in rules if name in prep.names]
    return tuple(units)


def _threshold_matrices(
    policy: Policy, prep: Prepared, band: Mapping[str, tuple[float, float]] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per post and label: the review and block thresholds in force, and the index (in
    :func:`band_units`) of the unit that sets them."""
    band = band or {}
    n, k = prep.p.shape
    units = band_units(policy, prep)

    def limits(key: str, t: Thresholds) -> tuple[float, float]:
        return band.get(key, (t.review, t.block))

    base = [limits(name, policy.labels[name]) for name in prep.names]
    review = np.tile(np.array([r for r, _ in base], dtype=np.float64), (n, 1))
    block = np.tile(np.array([b for _, b in base], dtype=np.float64), (n, 1))
    unit = np.tile(np.arange(k), (n, 1))
    for category, rules in policy.category_overrides.items():
        if category not in prep.categories:
            continue
        rows = prep.category == prep.categories.index(category)
        for name, t in rules.items():
            if name in prep.names:
                j, key = prep.names.index(name), override_key(category, name)
                review[rows, j], block[rows, j] = limits(key, t)
                unit[rows, j] = units.index(key)
    return review, block, unit


def simulate(
    policy: Policy, prep: Prepared, band: Mapping[str, tuple[float, float]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``decide`` for every post at once: (action codes, escalated). ``band`` replaces (review, block)
    thresholds by :func:`band_units` key, as :func:`moderation.pipeline.policy.apply_band` does. Posts
    carry no producer context here, so the high-stakes trigger never fires (and their language is the
    detected one)."""
    review, block, _ = _threshold_matrices(policy, prep, band)
    p = prep.p
    blocked = p >= block
    banded = (p >= review) & ~blocked
    action = np.where(blocked.any(axis=1), BLOCK, np.where(banded.any(axis=1), REVIEW, ALLOW))
    in_band = banded.sum(axis=1)
    confidence = np.minimum(1.0, np.maximum(p, 1.0 - p).min(axis=1, initial=1.0))
    esc = policy.escalation
    triggered = np.zeros(len(action), dtype=bool)
    if esc.low_confidence.enabled:
        triggered |= (in_band > 0) & (confidence < esc.low_confidence.min_confidence)
    if esc.multi_factor.enabled:
        triggered |= in_band >= esc.multi_factor.min_labels
    if esc.novel_input.enabled:
        rule = esc.novel_input
        triggered |= (
            ((prep.category_prob > 0.0) & (prep.category_prob < rule.max_category_prob_below))
            | (prep.text_len > rule.long_text_chars)
            | (prep.odd_ratio > rule.odd_char_ratio)
        )
    if esc.prompt_injection.enabled:
        triggered |= prep.injected
        if esc.prompt_injection.hold:
            action = np.where(prep.injected & (action == ALLOW), REVIEW, action)
    triggered |= prep.language_trigger
    action = np.where(prep.language_review, REVIEW, action)
    if policy.on_escalation == "review":
        action = np.where(triggered & (action == ALLOW), REVIEW, action)
    return action, triggered | (action == REVIEW)


def decide_each(
    policy: Policy, scores: ScoreArrays, texts: Sequence[str], labels: Mapping[str, Sequence[str]] = LABELS
) -> tuple[np.ndarray, np.ndarray]:
    """The real ``decide``, post by post: (action codes, escalated)."""
    actions, escalated = np.zeros(len(texts), dtype=np.int64), np.zeros(len(texts), dtype=bool)
    columns = {task: [str(x) for x in labels[task]] for task in scores}
    for i, text in enumerate(texts):
        post_scores = {task: dict(zip(columns[task], map(float, scores[task][i]), strict=True)) for task in scores}
        d = decide(policy, Post(id=str(i), text=text), post_scores)
        actions[i], escalated[i] = _CODE[d.action], d.action == "review" or d.escalate
    return actions, escalated


def summarize(
    action: np.ndarray, escalated: np.ndarray, gold: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float | None]:
    """Escalated share, coverage, decided accuracy (None when nothing is decided) and the two kinds of
    error, as shares of all posts."""
    w = np.full(len(gold), 1.0 / max(1, len(gold))) if weights is None else weights / weights.sum()
    decided = ~escalated
    coverage = float(w[decided].sum())
    correct = float(w[decided & (action == gold)].sum())
    return {
        "escalated": round(1.0 - coverage, 4),
        "coverage": round(coverage, 4),
        "decided_accuracy": round(correct / coverage, 4) if coverage > 0 else None,
        "review_action": round(float(w[action == REVIEW].sum()), 4),
        "trigger_only": round(float(w[escalated & (action != REVIEW)].sum()), 4),
        "false_block": round(float(w[decided & (action == BLOCK) & (gold == ALLOW)].sum()), 4),
        "missed": round(float(w[decided & (action == ALLOW) & (gold == BLOCK)].sum()), 4),
    }


def _errors(action: np.ndarray, escalated: np.ndarray, gold: np.ndarray, w: np.ndarray, miss_cost: float) -> float:
    """Weighted wrong decisions; a missed harmful post counts ``miss_cost`` false blocks."""
    wrong = ~escalated & (action != gold)
    return float(w[wrong & (gold == ALLOW)].sum() + miss_cost * w[wrong & (gold == BLOCK)].sum())


# --------------------------------------------------------------------------------------------------
# Scaling the band (the curve) and fitting it to a target (the setting)
# --------------------------------------------------------------------------------------------------

_EPS = 1e-6


def _logit(x: float) -> float:
    x = min(max(x, _EPS), 1.0 - _EPS)
    return math.log(x / (1.0 - x))


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def scaled_thresholds(t: Thresholds, scale: float) -> Thresholds:
    """The band scaled by ``scale`` around its decision point (the midpoint of review and block in logit
    space): 0 → no band (one threshold: block at or above it, allow below), 1 → unchanged, >1 → wider."""
    if scale == 1.0:
        return t
    lo, hi = _logit(t.review), _logit(t.block)
    mid = (lo + hi) / 2.0
    review, block = _sigmoid(mid - scale * (mid - lo)), _sigmoid(mid + scale * (hi - mid))
    return Thresholds(review=round(min(review, block), 6), block=round(block, 6))


def scale_band(policy: Policy, scale: float) -> Policy:
    """Every label's band, and every category override's, scaled by ``scale`` (see scaled_thresholds)."""
    labels = {name: scaled_thresholds(t, scale) for name, t in policy.labels.items()}
    overrides = {
        category: {name: scaled_thresholds(t, scale) for name, t in rules.items()}
        for category, rules in policy.category_overrides.items()
    }
    return policy.model_copy(update={"labels": labels, "category_overrides": overrides})


@dataclass(frozen=True)
class FittedBand:
    """Per-label thresholds for one escalation target and what they did on the calibration mix."""

    target: float
    thresholds: dict[str, dict[str, float]]  # "task.label" or "category/task.label" → {"review", "block"}
    escalated: float
    decided_accuracy: float | None  # None: nothing left to decide
    n: int


def _floor6(x: float) -> float:
    return math.floor(x * 1e6) / 1e6


def fit_band(
    policy: Policy,
    scores: ScoreArrays,
    gold: np.ndarray,
    target: float,
    *,
    texts: Sequence[str],
    weights: np.ndarray | None = None,
    labels: Mapping[str, Sequence[str]] = LABELS,
    overrides: bool = True,
    miss_cost: float = 1.0,
    step: float | None = None,
) -> FittedBand:
    """Review/block thresholds such that ~``target`` of the (weighted) calibration posts is escalated,
    with the decided rest as accurate as the greedy search can make it.

    Fitted are the policy's labels and, with ``overrides``, each of its category overrides as a unit of
    its own (``world_politics/toxicity.toxic``: the posts of that category); without, the overrides stay
    as the file says and their band counts against the target.

    1. Decision points: with no band (review = block), each unit's threshold is set by coordinate descent
       to the value that minimises wrong decisions.
    2. Widening: the band edge (review of one unit going down, or block going up) that removes the most
       wrong decisions per escalated post is moved past the next ``step`` (default target/50) of
       not-yet-escalated posts, until the escalated share reaches the target (it may overshoot by a step).

    The objective is accuracy (``miss_cost`` 1); ``miss_cost`` > 1 makes a missed harmful post cost that
    many false blocks, which moves the decision points down (more blocked, fewer missed).

    Escalation that no threshold controls counts against the target too (the novel-input trigger: flat
    category scores, very long or odd text); if it alone exceeds the target the band stays empty and
    ``escalated`` says what was reached.
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f"target escalation rate {target} must be in (0, 1)")
    prep = prepare(policy, scores, texts, labels)
    n = len(texts)
    w = np.full(n, 1.0 / max(1, n)) if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
    g = np.asarray(gold)
    all_units = band_units(policy, prep)
    _, _, unit_of = _threshold_matrices(policy, prep)
    units = all_units if overrides else prep.names

    def current(key: str) -> Thresholds:
        if key in policy.labels:
            return policy.labels[key]
        category, _, name = key.partition("/")
        return policy.category_overrides[category][name]

    def run(band: Mapping[str, tuple[float, float]]) -> tuple[float, float, np.ndarray]:
        action, escalated = simulate(policy, prep, band)
        return float(w[escalated].sum()), _errors(action, escalated, g, w, miss_cost), escalated

    # 1. decision points
    grid = np.unique(np.round([_sigmoid(z) for z in np.arange(-8.0, 8.0001, 0.05)], 6))
    point = {
        key: round(_sigmoid((_logit(current(key).review) + _logit(current(key).block)) / 2.0), 6) for key in units
    }
    for _ in range(3):
        moved = False
        for key in units:
            best, best_err = point[key], run({k: (v, v) for k, v in point.items()})[1]
            for c in grid:
                err = run({**{k: (v, v) for k, v in point.items()}, key: (float(c), float(c))})[1]
                closer = abs(c - point[key]) < abs(best - point[key])
                if err < best_err - 1e-12 or (abs(err - best_err) <= 1e-12 and closer):
                    best, best_err = float(c), err
            moved |= best != point[key]
            point[key] = best
        if not moved:
            break

    # 2. widen the band greedily
    band = {key: (point[key], point[key]) for key in units}
    escalated_share, errors, escalated = run(band)
    mass = step if step is not None else max(target / 50.0, 1e-9)
    for _ in range(100_000):
        if escalated_share >= target:
            break
        best_move: tuple[float, str, tuple[float, float], float, float, np.ndarray] | None = None
        for key in units:
            review, block = band[key]
            j = prep.names.index(key.rpartition("/")[2])
            col, free = prep.p[:, j], (unit_of[:, j] == all_units.index(key)) & ~escalated
            for side in ("review", "block"):
                if side == "review":
                    beyond = free & (col < review)
                    order = np.argsort(-col[beyond], kind="stable")
                else:
                    beyond = free & (col >= block) & (col < 1.0 - _EPS)
                    order = np.argsort(col[beyond], kind="stable")
                values, mass_beyond = col[beyond][order], w[beyond][order]
                if not len(values):
                    continue
                k = min(int(np.searchsorted(np.cumsum(mass_beyond), mass - 1e-15)), len(values) - 1)
                if side == "review":
                    new = (_floor6(float(values[k])), block)
                else:
                    new = (review, min(1.0, round(_floor6(float(values[k])) + 1e-6, 6)))
                if new == band[key]:
                    continue
                share, err, esc = run({**band, key: new})
                gain, cost = errors - err, share - escalated_share
                # best: errors removed per escalated share; a move that removes errors for free first; a
                # move that changes nothing (the posts stay decided) only when nothing else is left
                ratio = gain / cost if cost > 1e-15 else math.inf if gain > 1e-15 else -math.inf
                if best_move is None or ratio > best_move[0]:
                    best_move = (ratio, key, new, share, err, esc)
        if best_move is None:
            break
        _, key, new, escalated_share, errors, escalated = best_move
        band[key] = new

    thresholds = {key: {"review": band[key][0], "block": band[key][1]} for key in units}
    action, escalated = simulate(policy, prep, band)
    result = summarize(action, escalated, g, w)
    return FittedBand(target, thresholds, float(result["escalated"] or 0.0), result["decided_accuracy"], n)


def with_thresholds(policy: Policy, thresholds: Mapping[str, Mapping[str, float]]) -> Policy:
    """``policy`` with a fitted band in force, exactly as the worker applies it (``apply_band``)."""
    return apply_band(policy, {key: Thresholds.model_validate(dict(t)) for key, t in thresholds.items()})


# --------------------------------------------------------------------------------------------------
# The report: operating point, curve, fitted bands; for the model card
# --------------------------------------------------------------------------------------------------


def escalation_report(
    mix: Mix,
    scores_by_model: Mapping[str, ScoreArrays],
    policy: Policy,
    *,
    bands_by_model: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]] | None = None,
    scales: Sequence[float] = CURVE_SCALES,
    labels: Mapping[str, Sequence[str]] = LABELS,
) -> dict[str, Any]:
    """Per model: the shipped policy's escalated share and decided accuracy on ``mix`` (real ``decide``,
    post by post), the coverage–accuracy curve over band ``scales``, and, where ``bands_by_model`` has the
    model's fitted ``review_bands``, what each band does on this mix."""
    models: dict[str, Any] = {}
    for model, scores in scores_by_model.items():
        prep = prepare(policy, scores, mix.texts, labels)
        action, escalated = decide_each(policy, scores, mix.texts, labels)
        sim_action, sim_escalated = simulate(policy, prep)
        mismatches = int(np.sum((sim_action != action) | (sim_escalated != escalated)))
        by_kind = {}
        for kind in ("benign", "spam", "toxic"):
            rows = np.array([k == kind for k in mix.kinds], dtype=bool)
            if rows.any():
                by_kind[kind] = summarize(action[rows], escalated[rows], mix.gold[rows], mix.weights[rows])
        entry: dict[str, Any] = {
            "operating_point": summarize(action, escalated, mix.gold, mix.weights),
            "by_kind": by_kind,
            "simulation_mismatches": mismatches,
            "curve": [
                {"scale": s, **summarize(*simulate(scale_band(policy, s), prep), mix.gold, mix.weights)} for s in scales
            ],
        }
        bands = (bands_by_model or {}).get(model, {})
        if bands:
            entry["fitted_bands"] = {
                key: summarize(*simulate(with_thresholds(policy, band), prep), mix.gold, mix.weights)
                for key, band in sorted(bands.items(), key=lambda kv: float(kv[0]))
            }
        models[model] = entry
    return {
        "mix": mix.describe(),
        "policy_version": policy.version,
        "definitions": {
            "correct_action": "block if gold toxic/hate (any annotated positive) or spam; allow if benign",
            "escalated": "action review, or an escalation trigger fired (both leave the SLM tier)",
            "coverage": "share decided without escalation (allow or block)",
            "decided_accuracy": "share of decided posts whose action is the correct action",
            "scale": "review band scaled around each label's decision point in logit space (0: none, 1: policy)",
        },
        "models": models,
    }


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _acc(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def card_section(report: dict[str, Any], *, image: str | None = CURVE_NAME) -> str:
    """The model card's Markdown section for :func:`escalation_report` (``image``: the curve's file name)."""
    mix, models = report["mix"], report["models"]
    shares = mix["shares"]

    def part(kind: str, what: str) -> str:
        return f"{_pct(shares[kind])} {what} ({', '.join(mix.get('sources', {}).get(kind, []))})"

    lines = [
        "## Escalation budget (reference traffic mix)",
        "",
        f"Mix `{mix['name']}`: {mix['n']} posts from the held-out **{mix['split']}** splits — "
        f"{part('benign', 'benign')}, {part('spam', 'spam')}, {part('toxic', 'toxic or hateful')} — fixed seed, no "
        "text twice (`moderation/training/escalation.py`, `REFERENCE_MIX`). Correct action: "
        "block if the gold labels say toxic, hateful or spam, else allow. *Escalated*: the action is review or an "
        "escalation trigger fired (the post leaves the SLM tier); *decided accuracy*: block/allow right among the "
        f"rest. Policy `{report['policy_version']}` as shipped; the design document's SLM tier settles "
        f"~{_pct(SLM_TIER_TARGET)} of traffic.",
        "",
        "| model | escalated | of which review action | trigger only | decided accuracy | false blocks "
        "| missed harmful |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, entry in models.items():
        op = entry["operating_point"]
        lines.append(
            f"| {name} | {_pct(op['escalated'])} | {_pct(op['review_action'])} | {_pct(op['trigger_only'])} | "
            f"**{_acc(op['decided_accuracy'])}** | {_pct(op['false_block'])} | {_pct(op['missed'])} |"
        )
    lines += ["", "Per kind of post (escalated / decided accuracy):", ""]
    lines += ["| model | benign | spam | toxic |", "|---|---|---|---|"]
    for name, entry in models.items():
        cells = [
            f"{_pct(k['escalated'])} / {_acc(k['decided_accuracy'])}" if (k := entry["by_kind"].get(kind)) else "–"
            for kind in ("benign", "spam", "toxic")
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    names = list(models)
    lines += [
        "",
        "Coverage–accuracy: every review band (and category override) scaled around its decision point "
        "(midpoint of review and block in logit space); 0 = no band, 1 = the policy as shipped. Each cell: "
        "coverage / decided accuracy.",
        "",
        "| band scale | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    scales = [p["scale"] for p in models[names[0]]["curve"]] if names else []
    for i, s in enumerate(scales):
        points = [models[m]["curve"][i] for m in names]
        cells = [f"{_pct(p['coverage'])} / {_acc(p['decided_accuracy'])}" for p in points]
        lines.append(f"| {s:g}{' (policy)' if s == 1.0 else ''} | " + " | ".join(cells) + " |")
    fitted = {m: e["fitted_bands"] for m, e in models.items() if e.get("fitted_bands")}
    if fitted:
        lines += [
            "",
            "Review bands fitted on the calibration mix (val splits; `moderation models bands`, "
            "`MODERATION_ESCALATION_TARGET`), measured on this test mix:",
            "",
            "| model | target | escalated | decided accuracy | false blocks | missed harmful |",
            "|---|---|---|---|---|---|",
        ]
        for m, bands in fitted.items():
            for key, r in bands.items():
                lines.append(
                    f"| {m} | {_pct(float(key))} | {_pct(r['escalated'])} | {_acc(r['decided_accuracy'])} | "
                    f"{_pct(r['false_block'])} | {_pct(r['missed'])} |"
                )
    mismatched = {m: e["simulation_mismatches"] for m, e in models.items() if e["simulation_mismatches"]}
    if mismatched:
        lines += ["", f"**Warning**: the vectorised policy disagreed with `decide` on {mismatched} posts."]
    if image:
        lines += ["", f"![Coverage vs decided accuracy]({image})"]
    return "\n".join(lines) + "\n"


def plot_curve(report: dict[str, Any], path: Path) -> bool:
    """Coverage (x) vs decided accuracy (y) per model, shipped policy and fitted bands marked; False (and
    a message) when matplotlib is not installed (it comes with the dev extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed (dev extra): {path.name} not drawn")
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    for name, entry in report["models"].items():
        curve = sorted((p for p in entry["curve"] if p["decided_accuracy"] is not None), key=lambda p: p["coverage"])
        (line,) = ax.plot(
            [100 * p["coverage"] for p in curve], [p["decided_accuracy"] for p in curve], marker=".", label=name
        )
        op = entry["operating_point"]
        if op["decided_accuracy"] is not None:
            ax.plot(100 * op["coverage"], op["decided_accuracy"], marker="*", markersize=14, color=line.get_color())
        targets_at: dict[tuple[float, float], list[str]] = {}  # bands that land on one point share a label
        for key, r in entry.get("fitted_bands", {}).items():
            if r["decided_accuracy"] is None:
                continue
            targets_at.setdefault((100 * r["coverage"], r["decided_accuracy"]), []).append(f"{float(key):.0%}")
        for (x, y), targets in targets_at.items():
            ax.plot(x, y, marker="x", markersize=9, color=line.get_color())
            ax.annotate(", ".join(targets), (x, y), fontsize=7, textcoords="offset points", xytext=(4, -10))
    ax.axvline(100 * SLM_TIER_TARGET, color="grey", linestyle=":", linewidth=1)
    ax.annotate(
        f"design: SLM tier settles {SLM_TIER_TARGET:.0%}",
        (100 * SLM_TIER_TARGET, 1.0),
        xycoords=("data", "axes fraction"),
        fontsize=7,
        color="grey",
        rotation=90,
        ha="right",
        va="top",
        textcoords="offset points",
        xytext=(-2, -4),
    )
    ax.set_xlabel("coverage: posts decided by the SLM tier (%)")
    ax.set_ylabel("accuracy of the decided posts")
    ax.set_title(f"Escalation budget on {report['mix']['name']} ({report['mix']['n']} test posts)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(title="★ policy as shipped, × fitted band", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------------
# I/O edges: scoring a mix, `moderation models bands`, the eval's section
# --------------------------------------------------------------------------------------------------


def score_mix(texts: Sequence[str], engine: Any, batch: int = 64) -> dict[str, np.ndarray]:
    """task → probabilities of ``texts`` (rows in order) with anything that has ``score_arrays``."""
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(texts), batch):
        for task, values in engine.score_arrays(list(texts[start : start + batch])).items():
            chunks.setdefault(task, []).append(values)
    return {task: np.concatenate(v) for task, v in chunks.items()}


def _default_engine(model_dir: Path) -> Any:
    from moderation.pipeline.infer import CPU, OnnxEngine

    return OnnxEngine(model_dir, variant="int8", providers=(CPU,))


def _shipped_policy() -> Policy:
    from moderation.core.settings import DEFAULT_POLICY_FILE
    from moderation.pipeline.policy import load_policy

    return load_policy(DEFAULT_POLICY_FILE)


def fit_bands(
    policy: Policy, calibration: Mix, scores: ScoreArrays, targets: Sequence[float]
) -> dict[str, FittedBand]:
    """One fitted band per target, keyed as the manifest keys them ("0.05")."""
    return {
        band_key(t): fit_band(policy, scores, calibration.gold, t, texts=calibration.texts, weights=calibration.weights)
        for t in sorted(targets)
    }


def run_bands(
    data_dir: Path,
    model_dir: Path,
    targets: Sequence[float] = DEFAULT_TARGETS,
    *,
    quick: bool = False,
    engine_factory: Callable[[Path], Any] | None = None,
) -> int:
    """``moderation models bands``: fit review bands on the calibration mix, write them into manifest.json."""
    from moderation.models.manifest import MANIFEST_NAME

    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ModelError(f"no manifest at {path}; build the models first (`moderation models build`)")
    for t in targets:
        if not 0.0 < t < 1.0:
            raise ConfigError(f"--targets: {t} is not a share in (0, 1), e.g. 0.05")
    spec = REFERENCE_MIX.scaled(0.1) if quick else REFERENCE_MIX
    corpus = D.load_corpus(data_dir, sorted({s.source for s in spec.strata}))
    calibration = build_mix(corpus, spec, "val")
    scores = score_mix(calibration.texts, (engine_factory or _default_engine)(model_dir))
    policy = _shipped_policy()
    fitted = fit_bands(policy, calibration, scores, targets)
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["review_bands"] = {key: band.thresholds for key, band in fitted.items()}
    manifest["review_bands_fit"] = {
        "calibration": f"{calibration.name}: {len(calibration)} posts, weighted to the reference shares",
        "policy_version": policy.version,
        "quick": quick,
        "achieved": {
            key: {"escalated": b.escalated, "decided_accuracy": b.decided_accuracy} for key, b in fitted.items()
        },
    }
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    for key, band in fitted.items():
        print(
            f"target {key}: escalated {_pct(band.escalated)}, decided accuracy {_acc(band.decided_accuracy)} on "
            f"{band.n} calibration posts; " + ", ".join(
                f"{name} [{t['review']:.4f}, {t['block']:.4f})" for name, t in band.thresholds.items()
            )
        )
        if band.escalated > 1.25 * band.target:
            print(f"  note: escalation no threshold controls (the novel-input trigger) exceeds {key}")
    print(f"wrote review_bands to {path}")
    return 0


def mix_scores(
    mix: Mix, probs: ScoreArrays, index: Mapping[str, int], engine: Callable[[], Any]
) -> dict[str, np.ndarray]:
    """Scores of the mix's posts: rows of ``probs`` (by ``index``) where a text was scored already, the
    rest scored with ``engine()`` (called only when some are missing)."""
    missing = [t for t in mix.texts if t not in index]
    extra = score_mix(missing, engine()) if missing else {}
    row = {t: i for i, t in enumerate(missing)}
    return {
        task: np.stack([probs[task][index[t]] if t in index else extra[task][row[t]] for t in mix.texts])
        for task in probs
    }


def for_eval(
    corpus: D.Corpus,
    model_dir: Path,
    manifest: Mapping[str, Any],
    probs: ScoreArrays,
    index: Mapping[str, int],
    engine_factory: Callable[[Path, str], Any],
    *,
    quick: bool = False,
    others: Mapping[str, tuple[Path, ScoreArrays]] | None = None,
) -> dict[str, Any]:
    """The eval's escalation report (int8, as served) for the model in ``model_dir`` and any ``others``
    (name → (model dir, their scores of the eval's texts)), all on one curve, drawn next to the model card.
    Scores the eval already has (rows by ``index``) are reused; the rest of the mix is scored with
    ``engine_factory(dir, "int8")``. Each model's fitted ``review_bands`` (its manifest) are measured too."""
    mix = build_mix(corpus, REFERENCE_MIX.scaled(0.1) if quick else REFERENCE_MIX, "test")
    models = {f"{manifest['name']} {manifest['version']}": (model_dir, dict(manifest), probs)}
    for name, (other_dir, other_probs) in (others or {}).items():
        other_manifest = json.loads((other_dir / "manifest.json").read_text(encoding="utf-8"))
        models[name] = (other_dir, other_manifest, other_probs)
    scores: dict[str, dict[str, np.ndarray]] = {}
    bands: dict[str, Any] = {}
    for name, (directory, info, model_probs) in models.items():
        scores[name] = mix_scores(mix, model_probs, index, partial(engine_factory, directory, "int8"))
        bands[name] = info.get("review_bands", {})
    report = escalation_report(mix, scores, _shipped_policy(), bands_by_model=bands)
    report["curve_png"] = CURVE_NAME if plot_curve(report, model_dir / CURVE_NAME) else None
    return report
