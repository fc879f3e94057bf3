"""The presence core: a pure, deterministic state machine. No faust, paho or kafka in here.

`transition(state, input, config) -> (new_state, [StatusChange])`, where an input is a raw
`ConnectionEvent` or a `Tick`. See `machine` for the rules and `config` for the tuning.
"""

from streams.presence.config import DampingConfig, PresenceConfig
from streams.presence.events import (
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
from streams.presence.machine import (
    fingerprint,
    last_change,
    next_deadline,
    step,
    transition,
)
from streams.presence.state import DeviceState, decode_state, encode_state

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
