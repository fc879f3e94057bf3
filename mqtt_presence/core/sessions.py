"""Comparing session tokens safely (README, *Sessions*).

Counters and timestamps compare as numbers; Sparkplug's 8-bit bdSeq wraps, so it compares with
serial-number arithmetic (RFC 1982), where two tokens exactly half the space apart have no order;
opaque ids compare by equality only. Whatever cannot be ordered is UNORDERED, and the machine falls
back to receive order for it (and says so: such decisions are not verified by order).
"""

from __future__ import annotations

from enum import Enum

from mqtt_presence.core.events import SessionOrder, SessionToken

SERIAL8_HALF = 128


class Cmp(Enum):
    NEWER = "newer"
    SAME = "same"
    OLDER = "older"
    UNORDERED = "unordered"


def compare(token: SessionToken, current: SessionToken, order: SessionOrder) -> Cmp:
    """How `token` relates to `current`, both of the same device."""
    if token == current:
        return Cmp.SAME
    if order is SessionOrder.OPAQUE or not (isinstance(token, int) and isinstance(current, int)):
        return Cmp.UNORDERED
    if order is SessionOrder.SERIAL8:
        a, b = token % 256, current % 256
        if a == b:
            return Cmp.SAME
        distance = (a - b) % 256
        if distance == SERIAL8_HALF:
            return Cmp.UNORDERED
        return Cmp.NEWER if distance < SERIAL8_HALF else Cmp.OLDER
    return Cmp.NEWER if token > current else Cmp.OLDER
