"""The serving side of the models: shipped artifacts (``artifacts/``) and the manifest that loads and verifies them.

Building, training and evaluating them is ``moderation.training`` (build time only).
"""
