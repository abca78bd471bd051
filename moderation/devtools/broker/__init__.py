"""The project's own local Apache Kafka broker (single-node KRaft, jars from Maven Central).

Other code finds the running broker through its state file with
:func:`moderation.core.bootstrap.resolve_bootstrap` instead of assuming a port, because
``moderation kafka up`` picks a free one when 9092 is taken.
"""

from moderation.core.bootstrap import BrokerState
from moderation.devtools.broker.config import KAFKA_VERSION
from moderation.devtools.broker.local import BrokerStatus, LocalKafka, UpResult

__all__ = [
    "KAFKA_VERSION",
    "BrokerState",
    "BrokerStatus",
    "LocalKafka",
    "UpResult",
]
