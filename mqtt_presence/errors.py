"""The one family of errors the project raises for a person to read.

Every error a command can end with derives from `PresenceError` and carries a message that names
the cause and what to do; `presence`'s `main` prints it and exits with status 1 (no traceback).
Errors that are part of the data path and never reach a person (`Invalid`, a profile's verdict on
one message; `DeliveryError`, a record Kafka refused) stay outside the family.
"""

from __future__ import annotations


class PresenceError(Exception):
    """Something stops a command; the message says what and what to do."""
