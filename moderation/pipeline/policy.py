"""Stage 5 — decide: scores + post → allow / review / block, with the reasons that fired.

The policy is data (a versioned YAML file) and ``decide`` is a pure function of (policy, post,
scores). That keeps decisions reproducible for audits and lets ``moderation score`` dry-run a new
policy over yesterday's posts. :class:`PolicyStore` is the only stateful part: it swaps in a new
policy when the file changes (or on SIGHUP) and keeps the old one if the new file is invalid.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from moderation.core.errors import ConfigError, PolicyError
from moderation.core.settings import Settings
from moderation.pipeline.injection import injection_signals
from moderation.pipeline.language import UNSUPPORTED_REASON, Languages, assess_language, language_reason
from moderation.pipeline.records import Action, Decision, Language, Post, Scores

TRIGGERS = (
    "low_confidence",
    "multi_factor",
    "high_stakes",
    "novel_input",
    "prompt_injection",
    "unsupported_language",
)
_RANK: dict[Action, int] = {"allow": 0, "review": 1, "block": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Thresholds(_Strict):
    """A score in [review, block) sends the post to review; ≥ block blocks it."""

    review: float = Field(ge=0.0, le=1.0)
    block: float = Field(ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.block:
            raise ValueError(f"review threshold {self.review} is above block threshold {self.block}")
        return self


class LowConfidence(_Strict):
    enabled: bool = True
    min_confidence: float = Field(0.85, ge=0.0, le=1.0)


class MultiFactor(_Strict):
    enabled: bool = True
    min_labels: int = Field(2, ge=2)


class HighStakes(_Strict):
    enabled: bool = True
    # context keys whose truthy value marks a post as high-stakes
    context_flags: tuple[str, ...] = ("verified_author", "is_ad", "high_stakes")
    audience_key: str = "audience_size"
    min_audience: int = Field(100_000, ge=0)


class NovelInput(_Strict):
    enabled: bool = True
    # top category probability below this → the post is unlike anything the model was trained on
    max_category_prob_below: float = Field(0.35, ge=0.0, le=1.0)
    long_text_chars: int = Field(2_000, ge=1)
    # share of characters that are neither letters, digits, whitespace nor common punctuation
    odd_char_ratio: float = Field(0.3, ge=0.0, le=1.0)


class PromptInjection(_Strict):
    """The text tries to instruct the reviewer (``moderation.pipeline.injection``). The LLM consumer never
    applies an LLM verdict to such a post: it goes to people (``needs_human``, reason ``prompt_injection``)."""

    enabled: bool = True
    # an `allow` becomes `review` (held until a person decides) instead of being published meanwhile
    hold: bool = True


class Escalation(_Strict):
    low_confidence: LowConfidence = LowConfidence()
    multi_factor: MultiFactor = MultiFactor()
    high_stakes: HighStakes = HighStakes()
    novel_input: NovelInput = NovelInput()
    prompt_injection: PromptInjection = PromptInjection()


class LLMGuard(_Strict):
    """How far an LLM verdict may move the SLM's decision (applied by ``moderation.review.guard``).

    An LLM ``allow`` is not applied — the post goes to a person — when the SLM blocked it, or when a score
    sits at or above its label's ``near_block`` point: ``review + near_block × (block − review)``, the
    upper part of the review band (0 = the whole band, 1 = only scores at the block threshold).
    """

    near_block: float = Field(0.5, ge=0.0, le=1.0)


class Policy(_Strict):
    version: str = Field(min_length=1)
    description: str = ""
    # "task.label" → thresholds, e.g. "toxicity.hate"
    labels: dict[str, Thresholds]
    # category label → {"task.label": thresholds}: replaces the label's thresholds for that category
    category_overrides: dict[str, dict[str, Thresholds]] = {}
    category_task: str = "category"
    escalation: Escalation = Escalation()
    on_escalation: Literal["keep", "review"] = "keep"
    llm_guard: LLMGuard = LLMGuard()
    languages: Languages = Languages()

    @model_validator(mode="after")
    def _overrides_known(self) -> Policy:
        for category, rules in self.category_overrides.items():
            unknown = set(rules) - set(self.labels)
            if unknown:
                raise ValueError(
                    f"category_overrides[{category!r}] names labels without base thresholds: "
                    f"{sorted(unknown)}"
                )
        if not self.labels:
            raise ValueError("policy must define thresholds for at least one label")
        for name in self.labels:
            if "." not in name:
                raise ValueError(f"label {name!r} must be written as 'task.label', e.g. 'toxicity.hate'")
        return self

    def check_labels(self, available: Mapping[str, Iterable[str]]) -> None:
        """Fail if the policy names a label the loaded models do not produce."""
        known = {f"{task}.{label}" for task, labels in available.items() for label in labels}
        missing = sorted(set(self.labels) - known)
        if missing:
            raise PolicyError(
                f"policy {self.version!r} names labels the model does not produce: {missing}; "
                f"available: {sorted(known)}"
            )


def parse_policy(text: str, *, source: str = "<policy>") -> Policy:
    """YAML text → validated :class:`Policy`, or :class:`PolicyError` saying what is wrong."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise PolicyError(f"{source}: expected a YAML mapping at the top level")
    try:
        return Policy.model_validate(doc)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"{source}: invalid policy: {problems}") from None


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(
            f"cannot read policy file {path}: {exc.strerror}; set MODERATION_POLICY_FILE"
        ) from None
    return parse_policy(text, source=str(path))


# --------------------------------------------------------------------------------------- decide


def thresholds_for(policy: Policy, category: str | None) -> dict[str, Thresholds]:
    rules = dict(policy.labels)
    if category is not None:
        rules.update(policy.category_overrides.get(category, {}))
    return rules


def top_category(scores: Scores, task: str) -> tuple[str | None, float]:
    dist = scores.get(task)
    if not dist:
        return None, 0.0
    label = max(dist, key=dist.__getitem__)
    return label, dist[label]


def decide(policy: Policy, post: Post, scores: Scores, language: Language | None = None) -> Decision:
    """The whole policy: thresholds per label (category-aware), then escalation triggers, then the rule for
    the post's language. ``language`` is :func:`assess_language`'s answer when the caller has it already."""
    if language is None and policy.languages.enabled:
        language = assess_language(policy.languages, post)
    lang_rule = policy.languages.rule_for(language) if language is not None and policy.languages.enabled else None
    category, category_prob = top_category(scores, policy.category_task)
    rules = thresholds_for(policy, category)

    action: Action = "allow"
    fired: list[str] = []
    reasons: list[str] = []
    in_band: list[str] = []
    confidence = 1.0
    for name, limits in rules.items():
        task, _, label = name.partition(".")
        p = scores.get(task, {}).get(label)
        if p is None:
            continue
        # how sure the calibrated model is about this label, whichever side it falls on
        confidence = min(confidence, max(p, 1.0 - p))
        if p >= limits.block:
            action = "block"
            fired.append(name)
            reasons.append(f"{name}={p:.2f} ≥ block {limits.block:.2f}")
        elif p >= limits.review:
            if action == "allow":
                action = "review"
            fired.append(name)
            in_band.append(name)
            reasons.append(f"{name}={p:.2f} in review band [{limits.review:.2f}, {limits.block:.2f})")

    injection = policy.escalation.prompt_injection
    signals = injection_signals(post.text) if injection.enabled else ()
    triggers = _triggers(policy, post, action, in_band, confidence, category_prob, bool(signals))
    if lang_rule is not None and lang_rule.escalate:
        triggers += ("unsupported_language",)
    reasons.extend(_TRIGGER_REASONS[t] for t in triggers if t not in _OWN_REASONS)
    if signals:
        reasons.append(f"{_TRIGGER_REASONS['prompt_injection']} ({', '.join(signals)})")
        if injection.hold and action == "allow":
            action = "review"
    if lang_rule is not None and language is not None:
        reasons.append(language_reason(policy.languages, language, lang_rule, action))
        if lang_rule.action == "review":
            action = "review"
    if triggers and policy.on_escalation == "review" and action == "allow":
        action = "review"
    return Decision(
        post_id=post.id,
        action=action,
        scores=scores,
        labels=tuple(fired),
        reasons=tuple(reasons),
        triggers=triggers,
        confidence=round(confidence, 4),
        policy_version=policy.version,
        thresholds=limits_in_force(policy, rules) if triggers else {},
        language=language,
    )


def limits_in_force(policy: Policy, rules: Mapping[str, Thresholds]) -> dict[str, dict[str, float]]:
    """Per label the thresholds a decision was made with and its near-block point (:class:`LLMGuard`), as
    the LLM-review record carries them so that the LLM consumer can check an answer against them."""
    near = policy.llm_guard.near_block
    return {
        name: {"review": t.review, "block": t.block, "near_block": round(t.review + near * (t.block - t.review), 4)}
        for name, t in rules.items()
    }


_TRIGGER_REASONS = {
    "low_confidence": "low confidence: a score sits in its review band",
    "multi_factor": "multi-factor: several labels in their review bands",
    "high_stakes": "high stakes: producer flagged this post (verified author, ad or large audience)",
    "novel_input": "novel input: unlike the training data (flat category scores, very long or odd text)",
    "prompt_injection": "prompt injection: the text tries to instruct the reviewer",
    "unsupported_language": UNSUPPORTED_REASON,
}
_OWN_REASONS = ("prompt_injection", "unsupported_language")  # reasons written with their details in decide()


def _triggers(
    policy: Policy,
    post: Post,
    action: Action,
    in_band: list[str],
    confidence: float,
    category_prob: float,
    injected: bool = False,
) -> tuple[str, ...]:
    esc = policy.escalation
    fired: list[str] = []
    if esc.low_confidence.enabled and in_band and confidence < esc.low_confidence.min_confidence:
        fired.append("low_confidence")
    if esc.multi_factor.enabled and len(in_band) >= esc.multi_factor.min_labels:
        fired.append("multi_factor")
    if esc.high_stakes.enabled and action != "allow" and _is_high_stakes(post, esc.high_stakes):
        fired.append("high_stakes")
    if esc.novel_input.enabled and _is_novel(post, category_prob, esc.novel_input):
        fired.append("novel_input")
    if injected:
        fired.append("prompt_injection")
    return tuple(fired)


def _is_high_stakes(post: Post, rule: HighStakes) -> bool:
    ctx = post.context
    if any(bool(ctx.get(flag)) for flag in rule.context_flags):
        return True
    audience = ctx.get(rule.audience_key)
    return (
        isinstance(audience, int | float) and not isinstance(audience, bool) and audience >= rule.min_audience
    )


_COMMON_PUNCT = ".,;:!?'\"()-–—…@#&/%$*+=_[]"
# One C-level scan instead of a Python loop over characters: for str patterns \w is exactly
# str.isalnum() plus "_" and \s is exactly str.isspace(), so this matches what is not
# alphanumeric, not whitespace and not common punctuation.
_ODD_CHAR = re.compile(r"[^\w\s" + re.escape(_COMMON_PUNCT) + "]")


# ASCII text (most posts) takes a faster path still: delete the allowed bytes, count what is left.
_ASCII_ALLOWED = bytes(c for c in range(128) if chr(c).isalnum() or chr(c).isspace() or chr(c) in _COMMON_PUNCT)


def odd_char_ratio(text: str) -> float:
    if not text:
        return 0.0
    if text.isascii():
        return len(text.encode("ascii").translate(None, _ASCII_ALLOWED)) / len(text)
    return len(_ODD_CHAR.findall(text)) / len(text)


def _is_novel(post: Post, category_prob: float, rule: NovelInput) -> bool:
    return (
        (0.0 < category_prob < rule.max_category_prob_below)
        or len(post.text) > rule.long_text_chars
        or odd_char_ratio(post.text) > rule.odd_char_ratio
    )


def more_severe(a: Action, b: Action) -> bool:
    """True if ``a`` is strictly more severe than ``b`` (block > review > allow)."""
    return _RANK[a] > _RANK[b]


# ----------------------------------------------------------------------------------- reloading


class PolicyStore:
    """The policy in force, swapped atomically when its file changes; invalid files are refused."""

    def __init__(
        self,
        path: Path,
        *,
        available_labels: Mapping[str, Iterable[str]] | None = None,
        band: tuple[float, Mapping[str, Thresholds]] | None = None,
    ) -> None:
        self.path = path
        self._available = available_labels
        self._band = band  # (escalation target, fitted thresholds): applied to every version of the file
        self._lock = threading.Lock()
        self._digest = ""
        self._policy = self._load()

    @classmethod
    def from_settings(cls, settings: Settings, *, available_labels: Mapping[str, Iterable[str]]) -> PolicyStore:
        """The policy file, with the model's fitted review band when MODERATION_ESCALATION_TARGET is set."""
        band = None
        if settings.escalation_target is not None:
            from moderation.models.manifest import MANIFEST_NAME, load_manifest

            bands = load_manifest(settings.model_dir).review_bands
            source = str(settings.model_dir / MANIFEST_NAME)
            band = (settings.escalation_target, review_band(bands, settings.escalation_target, source=source))
        return cls(settings.policy_file, available_labels=available_labels, band=band)

    @property
    def policy(self) -> Policy:
        return self._policy

    def _load(self) -> Policy:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise PolicyError(f"cannot read policy file {self.path}: {exc.strerror}") from None
        policy = parse_policy(raw.decode("utf-8", "replace"), source=str(self.path))
        if self._band is not None:
            policy = with_band(policy, self._band[1], self._band[0])
        if self._available is not None:
            policy.check_labels(self._available)
        self._digest = hashlib.sha256(raw).hexdigest()
        return policy

    def reload_if_changed(self) -> tuple[bool, str | None]:
        """Returns (changed, error). On error the previous policy stays in force."""
        with self._lock:
            try:
                digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
            except OSError as exc:
                return (
                    False,
                    f"cannot read policy file {self.path}: {exc.strerror}; keeping {self._policy.version}",
                )
            if digest == self._digest:
                return False, None
            try:
                new = self._load()
            except PolicyError as exc:
                self._digest = digest  # don't re-report the same bad file every poll
                return False, f"{exc}; keeping policy {self._policy.version}"
            self._policy = new
            return True, None


# ------------------------------------------------------------------------------ review bands


def band_key(target: float) -> str:
    """How an escalation target is written as a key of the manifest's ``review_bands`` ("0.05")."""
    return f"{target:.2f}" if round(target, 2) == target else f"{target:g}"


def _as_number(key: str) -> float:
    try:
        return float(key)
    except ValueError:
        return math.inf


def review_band(
    bands: Mapping[str, Mapping[str, Mapping[str, float]]], target: float, *, source: str = "manifest"
) -> dict[str, Thresholds]:
    """The fitted band for ``target`` (keys compared as numbers), or ConfigError naming the targets there are."""
    for key, band in bands.items():
        if abs(_as_number(key) - target) < 1e-9:
            try:
                return {name: Thresholds.model_validate(dict(limits)) for name, limits in band.items()}
            except ValidationError as exc:
                raise ConfigError(f"{source}: review_bands[{key!r}] is invalid: {exc.errors()[0]['msg']}") from None
    have = ", ".join(sorted(bands, key=lambda k: (_as_number(k), k))) or "none"
    raise ConfigError(
        f"MODERATION_ESCALATION_TARGET={target:g}: {source} has no review band for it (targets there: {have}); set "
        "one of those, unset the variable to use the policy file's thresholds, or fit bands for this model with "
        "`moderation models bands --targets ...`"
    )


def override_key(category: str, name: str) -> str:
    """How a band names the thresholds of a category override: ``world_politics/toxicity.toxic``."""
    return f"{category}/{name}"


def apply_band(policy: Policy, band: Mapping[str, Thresholds]) -> Policy:
    """``policy`` with the band's thresholds in place of the file's, entry by entry.

    ``task.label`` entries replace the per-label thresholds; ``category/task.label`` entries (see
    :func:`override_key`) replace that category override's thresholds. Whatever the band does not name
    keeps the file's value (an override the band lacks still wins for its category); entries for labels or
    overrides the file does not have are ignored. Escalation triggers are never touched.
    """
    labels = {name: band.get(name, limits) for name, limits in policy.labels.items()}
    overrides = {
        category: {name: band.get(override_key(category, name), limits) for name, limits in rules.items()}
        for category, rules in policy.category_overrides.items()
    }
    return policy.model_copy(update={"labels": labels, "category_overrides": overrides})


def with_band(policy: Policy, band: Mapping[str, Thresholds], target: float) -> Policy:
    """:func:`apply_band`, and the version gains ``+escalation-<target>`` so every decision record says a
    fitted band was in force."""
    banded = apply_band(policy, band)
    return banded.model_copy(update={"version": f"{policy.version}+escalation-{band_key(target)}"})


def policy_summary(policy: Policy) -> dict[str, Any]:
    return {"version": policy.version, "labels": sorted(policy.labels)}
