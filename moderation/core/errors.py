"""Every error the package raises on purpose, in one place.

Each carries a message that says what went wrong and what to do about it, because these messages
end up in DLQ headers, logs and terminals of people who did not write this code.
"""

from __future__ import annotations


class ModerationError(Exception):
    """Base class for all errors raised by this package."""


class ConfigError(ModerationError):
    """Settings or a file they point to are invalid."""


class BrokerError(ModerationError):
    """The local Kafka broker could not be set up, started or reached."""


class BrokerAuthError(BrokerError):
    """The broker refused our login or TLS handshake (credentials, mechanism, CA): never retried, exit 3."""


class ModelError(ModerationError):
    """A model artifact is missing, corrupt or unusable; the worker must not start."""


class ProviderError(ModelError):
    """The requested ONNX Runtime execution provider is not the one actually in use."""


class PolicyError(ConfigError):
    """A policy file failed validation; the previous policy stays in force."""


class MessageError(ModerationError):
    """A failure that belongs to one message, not to the system: the message goes to the DLQ and the
    batch goes on. Never stops the worker.

    ``code`` is a stable machine-readable reason (DLQ header ``error.class``).
    """

    code = "invalid_message"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(MessageError):
    """A message could not be turned into a post."""

    code = "invalid_input"


class InvalidJSON(InputError):
    code = "invalid_json"


class InvalidUTF8(InputError):
    code = "invalid_utf8"


class InvalidSchema(InputError):
    code = "invalid_schema"


class EmptyText(InputError):
    code = "empty_text"


class TextTooLarge(InputError):
    code = "text_too_large"


class OutputError(MessageError):
    """A decided post whose output records could not be serialised or written (e.g. rejected by the
    broker for its size); the post goes to the DLQ instead of stopping the batch."""

    code = "output_unwritable"


class OutputTooLarge(OutputError):
    code = "output_too_large"
