"""Errors of the local stack, each with a message that says what to do."""

from mqtt_presence.errors import PresenceError


class StackError(PresenceError):
    """Base error: the local stack could not be provisioned, started, queried or stopped."""


class ToolMissingError(StackError):
    """A program the stack needs (java, mvn, mosquitto) is not installed and cannot be."""


class PortInUseError(StackError):
    """A port asked for explicitly is already taken by another process."""


class BrokerStartError(StackError):
    """Kafka or Mosquitto was started but did not become ready; the message has its log's tail."""
