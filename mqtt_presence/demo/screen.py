"""What the demo's terminal shows: the live frame (counts, the decision feed, clean against naive
per scenario) and the closing summary. Rendering only; the figures come from `story`."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from mqtt_presence.demo.story import FATE_LABELS, Decision, Story, clock, rows_of

FEED_ROWS = 10


def short(device: str) -> str:
    """`demo-1a2b3c-dev-0007` -> `dev-0007`: the demo's topic prefix says nothing to a reader."""
    head, sep, tail = device.rpartition("-dev-")
    return f"dev-{tail}" if sep and head else device


def counts_table(
    elapsed: float, raw_in: int, out: int, fleet: dict[str, int], truly_online: int
) -> Table:
    table = Table(title=f"mqtt-presence demo: {elapsed:4.0f} s", title_justify="left")
    for column in (
        "raw events in",
        "clean changes out",
        "suppressed",
        "online",
        "offline",
        "flapping",
        "truly online",
    ):
        table.add_column(column, justify="right")
    table.add_row(
        str(raw_in),
        str(out),
        str(max(raw_in - out, 0)),
        str(fleet.get("online", "-")),
        str(fleet.get("offline", "-")),
        str(fleet.get("flapping", "-")),
        str(truly_online),
    )
    return table


def feed_table(story: Story, rows: int = FEED_ROWS) -> Table:
    table = Table(
        title="why: the core's decisions as they happen, and what a naive consumer did",
        title_justify="left",
        expand=True,
    )
    table.add_column("time", no_wrap=True)
    table.add_column("device", no_wrap=True)
    table.add_column("mqtt-presence", no_wrap=True, style="bold")
    table.add_column("because", no_wrap=True, overflow="ellipsis", ratio=5)
    table.add_column("naive consumer", no_wrap=True, overflow="ellipsis", ratio=3)
    shown = rows_of(story.feed, rows)
    for row in shown:
        line, times, others = row.first, len(row.devices), len(set(row.devices)) - 1
        table.add_row(
            clock(line.at),
            short(line.device) + (f" +{others}" if others else ""),
            line.decision.value + (f" x{times}" if times > 1 else ""),
            line.why,
            Text(row.naive, style="red" if "wrong" in row.naive else ""),
        )
    for _ in range(rows - len(shown)):  # a steady height: the screen does not jump
        table.add_row("", "", "", "", "")
    return table


def scenario_table(story: Story, now_s: float) -> Table:
    table = Table(
        title="per scenario: mqtt-presence against the naive consumer",
        title_justify="left",
        caption=(
            f"wrong now: devices shown otherwise than their true state of the last "
            f"{story.settle_ms / 1000:.0f} s (a broker publishes a will up to that late)"
        ),
        caption_justify="left",
    )
    table.add_column("scenario")
    table.add_column("devices", justify="right")
    table.add_column("updates sent: clean", justify="right")
    table.add_column("naive", justify="right")
    table.add_column("wrong now: clean", justify="right")
    table.add_column("naive", justify="right")
    for fate, f in story.scenarios(now_s).items():
        if not f.devices:
            continue
        table.add_row(
            FATE_LABELS[fate],
            str(f.devices),
            str(f.clean_updates),
            str(f.naive_updates),
            str(f.clean_wrong),
            Text(str(f.naive_wrong), style="red" if f.naive_wrong else ""),
        )
    return table


def live_frame(story: Story, elapsed: float, raw_in: int, out: int, fleet: dict[str, int]) -> Group:
    truly_online = sum(1 for d in story.fleet.values() if d.online)
    return Group(
        counts_table(elapsed, raw_in, out, fleet, truly_online),
        feed_table(story),
        scenario_table(story, time.time()),
    )


def accuracy_table(story: Story) -> Table:
    clean_wrong, naive_wrong = story.wrong_at_end()
    table = Table(title="accuracy against the ground truth", title_justify="left")
    table.add_column("")
    table.add_column("mqtt-presence", justify="right")
    table.add_column("naive consumer (trusts every message)", justify="right")
    table.add_row(
        "status changes sent downstream",
        str(sum(story.clean_updates.values())),
        str(sum(story.naive_updates.values())),
    )
    table.add_row(
        "offlines while the device was up (stale wills)",
        str(story.clean_false_offlines),
        str(story.naive_false_offlines),
    )
    table.add_row(
        "devices shown with the wrong status at the end", str(clean_wrong), str(naive_wrong)
    )
    table.add_row("devices marked flapping at the end", str(story.flapping_at_end()), "-")
    return table


def decisions_line(story: Story) -> str:
    counted = [f"{story.decisions[d]} x {d.value}" for d in Decision if story.decisions[d]]
    return "what the core decided: " + (", ".join(counted) if counted else "nothing notable")


def verdict(story: Story) -> str:
    clean_wrong, naive_wrong = story.wrong_at_end()
    clean_sent = sum(story.clean_updates.values())
    naive_sent = sum(story.naive_updates.values())
    return (
        f"verdict: mqtt-presence sent {clean_sent} updates and shows {clean_wrong} device(s) "
        f"wrong; a naive consumer sent {naive_sent}, shows {naive_wrong} wrong and sent "
        f"{story.naive_false_offlines} offline(s) for devices that were up."
    )
