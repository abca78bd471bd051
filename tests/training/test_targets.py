"""Gold and distilled training targets (pure numpy; the build's torch side only batches them)."""

from __future__ import annotations

import numpy as np
import pytest

from moderation.training import data as D
from moderation.training.targets import distilled_targets, gold_targets, probabilities


def _examples() -> list[D.Example]:
    return [
        D.Example("you idiot", "toxicity", (1, 0, 0), (1, 0, 1), "olid"),
        D.Example("win a prize", "spam", (1,), (1,), "sms"),
        D.Example("stocks fell", "category", (2,), (1,), "ag_news"),
    ]


def _teacher() -> dict[str, np.ndarray]:
    return {
        "toxicity": np.array([[0.8, 0.2, 0.6], [0.1, 0.0, 0.1], [0.0, 0.0, 0.0]]),
        "spam": np.array([[0.9, 0.1], [0.2, 0.8], [1.0, 0.0]]),
        "category": np.full((3, 6), 1 / 6),
    }


def test_gold_targets_supervise_only_annotated_labels() -> None:
    t = gold_targets(_examples())
    assert t["tox_y"][0].tolist() == [1, 0, 0] and t["tox_w"][0].tolist() == [1, 0, 1]
    assert t["tox_w"][1:].sum() == 0  # spam and news texts say nothing about toxicity
    assert t["spam_p"][1].tolist() == [0, 1] and t["spam_w"].tolist() == [0, 1, 0]
    assert t["cat_p"][2].argmax() == 2 and t["cat_w"].tolist() == [0, 0, 1]


def test_distilled_targets_mix_gold_with_teacher_and_fill_the_rest() -> None:
    t = distilled_targets(gold_targets(_examples()), _teacher(), beta=0.5, off_weight=0.25)
    # annotated toxic label of the first text: half gold, half teacher; weight 1
    assert t["tox_y"][0, 0] == pytest.approx(0.9) and t["tox_w"][0, 0] == 1.0
    # its unannotated hate label comes from the teacher alone, at the off-task weight
    assert t["tox_y"][0, 1] == pytest.approx(0.2) and t["tox_w"][0, 1] == 0.25
    # the spam text: gold spam mixed; its toxicity and category from the teacher
    assert t["spam_p"][1].tolist() == pytest.approx([0.1, 0.9]) and t["spam_w"][1] == 1.0
    assert t["tox_w"][1].tolist() == [0.25] * 3 and t["cat_w"][1] == 0.25
    # every text now teaches every head, and the soft targets stay distributions
    assert (t["spam_w"] > 0).all() and (t["cat_w"] > 0).all()
    assert np.allclose(t["spam_p"].sum(1), 1) and np.allclose(t["cat_p"].sum(1), 1)


def test_probabilities_apply_temperatures_as_the_graph_does() -> None:
    logits = {"toxicity": np.array([[2.0, 0.0, -2.0]]), "spam": np.array([[0.0, 2.0]]),
              "category": np.zeros((1, 6))}
    p = probabilities(logits, {"toxicity": [2.0, 1.0, 1.0], "spam": [2.0], "category": [1.0]})
    assert p["toxicity"][0].tolist() == pytest.approx([1 / (1 + np.exp(-1)), 0.5, 1 / (1 + np.exp(2))])
    assert p["spam"][0, 1] == pytest.approx(1 / (1 + np.exp(-1)))
    assert p["category"][0].tolist() == pytest.approx([1 / 6] * 6)
