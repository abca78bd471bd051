"""Training targets as arrays: gold labels, the teacher's soft labels, and their mix (torch-free, pure).

Every text gets a target and a loss weight for every head. Gold labels cover only the task (and, for
toxicity, the labels) a data set annotates; distillation fills the rest from the teacher, so each
text teaches all three heads.
"""

from __future__ import annotations

import numpy as np

from moderation.training import data as D

Targets = dict[str, np.ndarray]
"""Per-text soft targets and loss weights: tox_y/tox_w [n,3], spam_p [n,2] + spam_w [n], cat_p [n,6] + cat_w [n]."""


def gold_targets(examples: list[D.Example]) -> Targets:
    """Each text supervises only the task (and, for toxicity, the labels) its data set annotates."""
    n = len(examples)
    n_tox = len(D.TOXICITY_LABELS)
    t = {"tox_y": np.zeros((n, n_tox), np.float32), "tox_w": np.zeros((n, n_tox), np.float32),
         "spam_p": np.zeros((n, len(D.SPAM_LABELS)), np.float32), "spam_w": np.zeros(n, np.float32),
         "cat_p": np.zeros((n, len(D.CATEGORY_LABELS)), np.float32), "cat_w": np.zeros(n, np.float32)}
    for i, e in enumerate(examples):
        if e.task == "toxicity":
            t["tox_y"][i], t["tox_w"][i] = e.target, np.asarray(e.mask, np.float32) * e.weight
        elif e.task == "spam":
            t["spam_p"][i, e.target[0]], t["spam_w"][i] = 1.0, e.weight
        else:
            t["cat_p"][i, e.target[0]], t["cat_w"][i] = 1.0, e.weight
    return t


def distilled_targets(gold: Targets, teacher: dict[str, np.ndarray], beta: float, off_weight: float) -> Targets:
    """Gold mixed with the teacher where a gold label exists; the teacher alone (weight ``off_weight``) elsewhere."""
    has = gold["tox_w"] > 0  # a gold label keeps its own weight (1, or less for an example that counts less)
    out = {"tox_y": np.where(has, (1 - beta) * gold["tox_y"] + beta * teacher["toxicity"], teacher["toxicity"]),
           "tox_w": np.where(has, gold["tox_w"], off_weight)}
    for key, task in (("spam", "spam"), ("cat", "category")):
        has1 = (gold[f"{key}_w"] > 0)[:, None]
        out[f"{key}_p"] = np.where(has1, (1 - beta) * gold[f"{key}_p"] + beta * teacher[task], teacher[task])
        out[f"{key}_w"] = np.where(has1[:, 0], gold[f"{key}_w"], off_weight)
    return {k: v.astype(np.float32) for k, v in out.items()}


def probabilities(logits: dict[str, np.ndarray], temps: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Calibrated probabilities, as the exported graph computes them."""
    def softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    return {
        "toxicity": 1.0 / (1.0 + np.exp(-logits["toxicity"] / np.array(temps["toxicity"]))),
        "spam": softmax(logits["spam"] / temps["spam"][0]),
        "category": softmax(logits["category"] / temps["category"][0]),
    }
