"""The synchronous scoring API (``moderation serve``): Perspective's AnalyzeComment and ``/v1/moderate``.

A door for checks before a post is published, beside the Kafka stream that moderates after: the same
pipeline, models and policy as the worker, batched across concurrent requests (``batcher``), behind API
keys with per-key limits (``keys``), answering in Perspective's shapes (``perspective``, ``discovery``,
``errors``), optionally writing to the same audit trail (``audit``). ``server`` is the HTTP surface,
``cli`` the process.
"""
