"""``moderation kafka up|down|status|install``.

``up`` prints only the bootstrap address on stdout (progress goes to stderr), so scripts can do
``BOOTSTRAP=$(moderation kafka up)``.
"""

from __future__ import annotations

import argparse

from moderation.devtools.broker.local import START_TIMEOUT_S, LocalKafka


def run(args: argparse.Namespace) -> int:
    kafka = LocalKafka()
    action: str = args.action
    if action == "install":
        kafka.java()
        print(kafka.install())
        return 0
    if action == "up":
        timeout = getattr(args, "timeout", None) or START_TIMEOUT_S
        result = kafka.up(port=args.port, timeout_s=timeout)
        print(result.state.bootstrap)
        return 0
    if action == "down":
        kafka.down()
        return 0
    status = kafka.status()
    print(status.describe())
    if status.state is not None and status.alive:
        print(f"  log:    {status.state.log}\n  config: {status.state.config}")
    return 0 if status.ready else 1
