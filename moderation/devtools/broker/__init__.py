"""The project's own local Apache Kafka broker (single-node KRaft, jars from Maven Central).

Other code finds the running broker through :func:`bootstrap_from_state` / :func:`resolve_bootstrap`
instead of assuming a port, because ``moderation kafka up`` picks a free one when 9092 is taken.
"""

from moderation.devtools.broker.config import KAFKA_VERSION, BrokerState
from moderation.devtools.broker.local import (
    BrokerStatus,
    LocalKafka,
    UpResult,
    bootstrap_from_state,
    resolve_bootstrap,
)

__all__ = [
    "KAFKA_VERSION",
    "BrokerState",
    "BrokerStatus",
    "LocalKafka",
    "UpResult",
    "bootstrap_from_state",
    "resolve_bootstrap",
]
