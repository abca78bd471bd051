"""Real-time streaming content moderation: Kafka posts → three small ONNX models → block/allow/review."""

__version__ = "0.1.0"
