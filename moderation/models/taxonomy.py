"""The labels the models are built for — one definition for training, review and anything else that names them.

The shipped manifest lists the same labels per task (``manifest.labels()``); a model built for another
taxonomy changes this file together with the data mapping in ``moderation.training.data``.
"""

from __future__ import annotations

TOXICITY_LABELS: tuple[str, ...] = ("toxic", "hate", "targeted")
SPAM_LABELS: tuple[str, ...] = ("ham", "spam")
CATEGORY_LABELS: tuple[str, ...] = (
    "world_politics",
    "sports",
    "business_finance",
    "science_technology",
    "entertainment_culture",
    "lifestyle",
)
