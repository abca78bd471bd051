"""The review tier: what answers the posts the workers were not sure about, and what it decided.

- ``verdicts``  the verdict record on ``moderation.verdicts`` (LLM, human, or "needs a human") — pure
- ``llm``       the OpenAI-compatible chat-completions client: bounded, rate-limited, retried, breaker
- ``consumer``  ``moderation llm-review``: llm-review topic → LLM → verdicts, at-least-once
- ``console``   ``moderation console``: the reviewers' web app (queue, decide, overview)
- ``metrics``   Prometheus metrics of both processes

Serving code: it never imports ``moderation.training`` or ``moderation.devtools``.
"""
