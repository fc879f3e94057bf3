"""The presence core: a pure, deterministic state machine. No faust, paho or kafka in here.

`transition(state, input, config) -> (new_state, [StatusChange])`, where an input is a raw
`ConnectionEvent` or a `Tick`. See `machine` for the rules and `config` for the tuning.
"""

from mqtt_presence.core.config import DampingConfig, PresenceConfig
from mqtt_presence.core.events import (
    ConnectionEvent,
    EventKind,
    Input,
    Reason,
    SessionOrder,
    SessionToken,
    Status,
    StatusChange,
    Tick,
)
from mqtt_presence.core.machine import (
    fingerprint,
    last_change,
    next_deadline,
    step,
    transition,
)
from mqtt_presence.core.state import DeviceState, decode_state, encode_state

__all__ = [
    "ConnectionEvent",
    "DampingConfig",
    "DeviceState",
    "EventKind",
    "Input",
    "PresenceConfig",
    "Reason",
    "SessionOrder",
    "SessionToken",
    "Status",
    "StatusChange",
    "Tick",
    "decode_state",
    "encode_state",
    "fingerprint",
    "last_change",
    "next_deadline",
    "step",
    "transition",
]
