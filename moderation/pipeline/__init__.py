"""The stages a post flows through, in order, each a small module with a pure function at its heart.

``decode`` bytes → a validated post (or a DLQ reason) · ``dedupe`` one inference per distinct text ·
``tokenize`` padded to a few length buckets · ``infer`` ONNX Runtime (the one I/O edge here) ·
``policy`` scores → allow / review / block and escalation triggers · ``emit`` decisions → the records to
produce. ``batch`` runs one micro-batch through them; ``records`` holds the types that flow between.
Kafka lives in ``moderation.worker``, files in ``moderation.worker.score``.
"""
