"""Crash memory: a message that ends the bridge process is dead-lettered on its next delivery.

Every exception a message can raise is already turned into a dead letter (see `Translator` and
`Bridge.on_mqtt_message`). What remains is a message that ends the process itself (a crash in a
native library, memory exhaustion, a kill by the OOM killer while parsing it). Because the bridge
acknowledges only what Kafka has, the broker delivers that message again after every restart,
with the DUP flag set (MQTT 5.0 section 3.3.1.1: "The DUP flag MUST be set to 1 by the Client or
Server when it attempts to re-deliver a PUBLISH packet"), and the bridge would die on it forever.

So while the bridge handles a redelivered message (DUP set: rare, and the only kind a crash can
bring back), it keeps the message's fingerprint in a small file, with the number of processes that
died on it, and clears it when done. A process that starts and finds a fingerprint there knows
which message ended its predecessor; once `STRIKES` processes died on one message, its next
delivery goes to the dead-letter topic untouched (reason `poison`) instead of being handled. Two
strikes, not one: a bridge killed by its operator during a burst of redeliveries is most likely
handling one of them, and that innocent message deserves another try. The cost: one write before
and one after each redelivered message, no fsync (the file must survive the process, not the
machine). A message therefore ends at most three processes: its first delivery (DUP not set yet)
and two redeliveries.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from mqtt_presence.bridge.message import MqttMessage

log = logging.getLogger("presence.bridge")
STRIKES = 2  # processes that died on one redelivered message before it is called poison
_RECORD = 65  # 64 hex bytes of fingerprint, one ASCII digit of strikes
_BLANK = b" " * _RECORD


def fingerprint(msg: MqttMessage) -> bytes:
    """What makes a delivery the same message: topic and payload (64 hex bytes)."""
    digest = hashlib.sha256(msg.topic.encode("utf-8", errors="replace"))
    digest.update(b"\0")
    digest.update(msg.payload)
    return digest.hexdigest().encode("ascii")


class CrashMemory:
    """The fingerprint file of one bridge (one client id). `path=None` remembers nothing."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.suspect: bytes | None = None  # the message a previous process died on
        self.strikes = 0  # how many processes died on it
        self._fd: int | None = None
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        left = os.pread(self._fd, _RECORD, 0)
        if len(left) == _RECORD and left != _BLANK and left[64:].isdigit():
            self.suspect, self.strikes = left[:64], int(left[64:])
            log.warning(
                "the previous bridge process ended while handling a redelivered message "
                "(fingerprint %s…, %d time(s)); after %d it goes to the dead-letter topic",
                self.suspect[:12].decode("ascii", errors="replace"),
                self.strikes,
                STRIKES,
            )

    def is_poison(self, msg: MqttMessage) -> bool:
        """True for a redelivery of the message that ended `STRIKES` processes."""
        if self.suspect is None or not msg.dup or self.strikes < STRIKES:
            return False
        if fingerprint(msg) != self.suspect:
            return False
        self.suspect, self.strikes = None, 0
        self.clear()
        return True

    def begin(self, msg: MqttMessage) -> None:
        """Note a redelivered message before handling it (nothing for a first delivery)."""
        if self._fd is None or not msg.dup:
            return
        mark = fingerprint(msg)
        strikes = self.strikes + 1 if mark == self.suspect else 1
        os.pwrite(self._fd, mark + str(min(strikes, 9)).encode("ascii"), 0)

    def end(self, msg: MqttMessage) -> None:
        if self._fd is not None and msg.dup:
            self.clear()

    def clear(self) -> None:
        if self._fd is not None:
            os.pwrite(self._fd, _BLANK, 0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
