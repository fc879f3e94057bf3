"""The local stack: a real Kafka (KRaft, from Maven Central) and a real Mosquitto (from apt)."""

from mqtt_presence.stack.errors import (
    BrokerStartError,
    PortInUseError,
    StackError,
    ToolMissingError,
)
from mqtt_presence.stack.manager import LocalStack, StackInfo, default_home

__all__ = [
    "BrokerStartError",
    "LocalStack",
    "PortInUseError",
    "StackError",
    "StackInfo",
    "ToolMissingError",
    "default_home",
]
