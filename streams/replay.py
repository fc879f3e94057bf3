"""`presence replay`: run a dump of `presence.raw` through the core, and explain one device.

Reads raw events as JSON lines (the record format of `presence.raw`), in order; time advances with
the events' receive times (every deadline up to an event fires before it) and a final tick at the
end. Writes status changes as JSON lines, or with `explain`, one JSON line per input of that device
with the machine's decisions. Same input and config, same output, byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import msgspec

from mqtt_presence.core import ConnectionEvent, Input, PresenceConfig, StatusChange, Tick
from mqtt_presence.core.devices import Devices
from mqtt_presence.core.events import RAW_SCHEMA_VERSION
from mqtt_presence.core.records import BridgeProgress


class _DumpedEvent(ConnectionEvent, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A raw event as replay reads it: a field it does not know is an error (a typo such as
    "sesion" would otherwise make a device token-less without a word)."""


_decode_event = msgspec.json.Decoder(_DumpedEvent).decode
_decode_progress = msgspec.json.Decoder(BridgeProgress).decode


def _is_progress_line(line: bytes) -> bool:
    """A bridge's progress record (presence.raw carries them beside the device events)."""
    try:
        _decode_progress(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    return True


BOM = b"\xef\xbb\xbf"
_encode = msgspec.json.Encoder().encode


class Explanation(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the machine made of one input of the explained device."""

    at: int
    input: str  # "birth", "will", ... or "tick"
    decisions: list[str]
    session: int | str | None = None
    emitted: list[StatusChange] = []


@dataclass
class ReplayReport:
    events: int = 0
    changes: int = 0
    bad_lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    explained_seen: bool = False  # the explained device appeared in the dump
    progress: int = 0  # the bridges' progress records in the dump: not events, skipped
    pending: list[tuple[str, int]] = field(default_factory=list)  # (device, due) after the end


def replay(
    lines: Iterable[bytes],
    config: PresenceConfig,
    *,
    explain: str | None = None,
    until: int | None = None,
    report: ReplayReport | None = None,
) -> Iterator[bytes]:
    """Yield output lines (without newline). Lines that are not raw events are reported in
    `report.bad_lines` with their line number and skipped; the rest goes on."""
    report = report if report is not None else ReplayReport()
    explained: list[bytes] = []

    def trace(_device: str, inp: Input, notes: list[str], changes: list[StatusChange]) -> None:
        if isinstance(inp, Tick):
            if not notes and not changes:
                return
            item = Explanation(at=inp.now, input="tick", decisions=notes, emitted=changes)
        else:
            item = Explanation(
                at=inp.received_at,
                input=inp.kind.value,
                session=inp.session,
                decisions=notes or ["nothing changes"],
                emitted=changes,
            )
        explained.append(_encode(item))

    fleet = Devices(config, traced=explain, trace=trace if explain else None)
    last = 0
    for number, raw_line in enumerate(lines, start=1):
        line = raw_line
        if number == 1 and line.startswith(BOM):
            report.warnings.append("line 1: starts with a UTF-8 byte order mark; ignored")
            line = line[len(BOM) :]
        if not line.strip():
            continue
        try:
            event = _decode_event(line)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            if _is_progress_line(line):
                report.progress += 1
                continue
            report.bad_lines.append(f"line {number}: not a raw event: {exc}")
            continue
        if event.schema_version != RAW_SCHEMA_VERSION:
            report.bad_lines.append(
                f"line {number}: schema_version {event.schema_version} is not one this version "
                f"reads ({RAW_SCHEMA_VERSION})"
            )
            continue
        report.events += 1
        report.explained_seen = report.explained_seen or event.device == explain
        last = max(last, event.received_at)
        yield from _emit(fleet.feed(event), explain, explained, report)
    end = last if until is None else until
    yield from _emit(fleet.advance(end), explain, explained, report)
    report.pending = fleet.pending_after(end)


def _emit(
    changes: list[StatusChange], explain: str | None, explained: list[bytes], report: ReplayReport
) -> Iterator[bytes]:
    report.changes += len(changes)
    if explain is None:
        for change in changes:
            yield _encode(change)
    else:
        yield from explained
        explained.clear()
