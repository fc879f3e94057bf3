"""The worker's wiring: topics, the device table, the agent, the clock, the recovery watch.

Built by a function on an app (no module globals); what each piece does lives in its own module
(`processor`, `output`, `recovery`) and is unit-tested there. The agent only decodes, calls the
pure core, writes the table and sends; it never dies on a bad record (it goes to the dead-letter
topic with the reason) and never skips one silently.

Time: Faust tables must be written from the stream, and timers run on every worker. So each
worker's timer sends a tick into `presence.ticks` for each `presence.raw` partition it owns; the
agent reads both topics (equal partition counts, same subscribers: Faust co-partitions them), so
a tick for partition p reaches the owner of p, in the stream, and every state change, expired
grace periods included, happens in the agent and goes through the table's changelog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any, cast

import faust
from faust.types import TableT

from mqtt_presence.core import DeviceState, PresenceConfig, decode_state
from mqtt_presence.kafka_topics import committed_offsets, records_between
from mqtt_presence.streams.config import WorkerSettings
from mqtt_presence.streams.fence import SessionFence
from mqtt_presence.streams.metrics import WorkerMetrics
from mqtt_presence.streams.output import (
    AgentOutput,
    WriteWatch,
    encode,
    exit_for_restart,
    exit_without_commit,
)
from mqtt_presence.streams.processor import DeadlineIndex, Processor
from mqtt_presence.streams.recovery import (
    RECOVERY_WATCH_INTERVAL_S,
    Announcer,
    RecoveryWatch,
    rebuild,
)
from mqtt_presence.streams.skips import SkipWatch
from mqtt_presence.streams.watermarks import Watermarks

log = logging.getLogger("presence.worker")

TABLE_NAME = "device-state"


def changelog_topic(app_id: str) -> str:
    """The name Faust gives the table's changelog topic."""
    return f"{app_id}-{TABLE_NAME}-changelog"


@dataclass
class Topology:
    """What the views and the tests need to reach."""

    app: faust.App
    raw: faust.TopicT
    ticks: faust.TopicT
    table: TableT[bytes, bytes]
    settings: WorkerSettings
    config: PresenceConfig
    metrics: WorkerMetrics
    output: AgentOutput
    processor: Processor
    announcer: Announcer
    # raw partitions this process has held since its last recovery: their changes all went out
    held_partitions: set[int] = field(default_factory=set)

    def state_of(self, device: str) -> DeviceState | None:
        value = self.table.get(device.encode())
        return decode_state(value) if value is not None else None

    def active_partitions(self) -> set[int]:
        """The raw partitions this worker owns now."""
        raw = self.settings.kafka.raw_topic
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == raw}


def bytes_topic(app: faust.App, name: str, partitions: int, **kw: Any) -> faust.TopicT:
    # Keys and values are raw bytes everywhere: the key is the device id exactly as the bridge
    # wrote it, so Faust's routing hashes to the same partition (a JSON-quoted key would not).
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        **kw,
    )


def build_topology(app: faust.App, settings: WorkerSettings, config: PresenceConfig) -> Topology:
    k = settings.kafka
    raw = bytes_topic(app, k.raw_topic, k.partitions)
    ticks = bytes_topic(app, k.ticks_topic, k.partitions)
    dlq = bytes_topic(app, k.dlq_topic, k.partitions)
    table = app.Table(
        TABLE_NAME, default=None, key_type=bytes, value_type=bytes, partitions=k.partitions
    )
    metrics = WorkerMetrics()
    metrics.watch(app.monitor)
    fence = SessionFence.for_session(
        settings.session_timeout_s, settings.heartbeat_interval_s, exit_for_restart
    )
    output = AgentOutput(
        lambda: app.producer._producer,  # type: ignore[attr-defined]  # aiokafka's, once started
        table,
        k.status_topic,
        metrics,
        exit_without_commit,
        fence,
        key_partitions=k.partitions,
    )
    flush_before_commits(app, output)

    async def dead_letter(key: bytes, value: bytes) -> Any:
        return await dlq.send(key=key, value=value)

    async def count_between(partition: int, start: int, end: int) -> int:
        return await asyncio.to_thread(records_between, k, k.raw_topic, partition, start, end)

    processor = Processor(
        store=table.data,
        deadlines=DeadlineIndex(),
        config=config,
        ticks_topic=k.ticks_topic,
        max_clock_skew_ms=int(settings.max_clock_skew_s * 1000),
        output=output,
        dead_letters=dead_letter,
        metrics=metrics,
        skips=SkipWatch(count_between, exit_for_restart),
        watermarks=Watermarks(silence_ms=int(settings.bridge_silence_s * 1000)),
    )
    announcer = Announcer(table.data, output, settings.reannounce_per_s)
    topology = Topology(
        app, raw, ticks, table, settings, config, metrics, output, processor, announcer
    )
    source = app.topic(
        k.raw_topic,
        k.ticks_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.agent(source, name="presence", concurrency=1)(lambda stream: run_agent(processor, stream))
    kafka_watch = WriteWatch.of(settings.kafka_stall_s, metrics)
    app.timer(settings.tick_interval_s)(lambda: send_ticks(topology, kafka_watch))
    recovery_watch = RecoveryWatch(settings.recovery_stall_s)
    app.timer(RECOVERY_WATCH_INTERVAL_S)(lambda: check_recovery(topology, recovery_watch))
    table.on_recover(lambda: on_recovered(topology))
    app.task(lambda: start_fence(fence, app))
    app.task(lambda: reannounce(topology))
    return topology


async def reannounce(topology: Topology) -> None:
    """The background re-announcement (see `Announcer`), with a line when it starts and ends."""
    announcer, app = topology.announcer, topology.app
    while not app.should_stop:
        if not announcer.pending:
            await asyncio.sleep(0.5)
            continue
        started, total = time.monotonic(), announcer.remaining
        log.info(
            "re-announcing %d changes of partitions %s at %.0f/s",
            total,
            sorted(announcer.pending),
            announcer.per_s,
        )
        sent = await announcer.announce(should_stop=lambda: bool(app.should_stop))
        log.info(
            "re-announced %d changes in %.1f s%s",
            sent,
            time.monotonic() - started,
            "; stopping, the rest is for whoever recovers next" if app.should_stop else "",
        )


def flush_before_commits(app: faust.App, output: AgentOutput) -> None:
    """Faust flushes its producer before it commits offsets (and at a rebalance and a stop):
    the agent's records waiting in `output` go first, so that the offsets committed never pass
    an event whose records are not in Kafka."""
    producer = app.producer
    flush_producer = producer.flush

    async def flush() -> None:
        await output.flush()
        await flush_producer()

    producer.flush = flush  # type: ignore[method-assign]


async def start_fence(fence: SessionFence, app: faust.App) -> None:
    """Watch for pauses, and fence every request of the app's producer (the one writing status
    changes and the table's changelog), not only the agent's writes: see `SessionFence`."""
    fence.start()
    client = app.producer._producer.client  # type: ignore[attr-defined]  # aiokafka's client
    client.send = fence.guarded(client.send)
    log.debug("session fence watching (limit %.1f s), producer requests fenced", fence.limit_s)


async def run_agent(processor: Processor, stream: AsyncIterable[Any]) -> None:
    async for event in stream.events():  # type: ignore[attr-defined]
        await processor.handle(event)


async def send_ticks(topology: Topology, watch: WriteWatch) -> None:
    """Time passes: a tick into `presence.ticks` for each raw partition this worker owns, each
    watched from the moment it is handed over until Kafka has it. Not awaited here: a send can
    wait for the topic's metadata while Kafka is away (a worker whose first tick came after
    Kafka went), and the watch must count that wait, not stand still inside it (CI: a worker
    ready half a second before an outage never said that Kafka was gone)."""
    value = encode({"now": time.time_ns() // 1_000_000})
    for partition in topology.active_partitions():
        watch.sent(asyncio.ensure_future(delivered(topology.ticks, value, partition)))
    watch.check(time.monotonic())


async def delivered(ticks: faust.TopicT, value: bytes, partition: int) -> Any:
    """One tick, sent and then delivered (Faust's send returns the delivery's future)."""
    delivery = await ticks.send(key=b"tick", value=value, partition=partition)
    return await cast("asyncio.Future[Any]", delivery)  # a FutureMessage at run time


async def expect_committed_offsets(topology: Topology, active: set[int]) -> None:
    """Tell the skip watch where the group committed the raw partitions this worker owns now."""
    skips = topology.processor.skips
    if skips is None:
        return
    k = topology.settings.kafka
    try:
        committed = await asyncio.to_thread(
            committed_offsets, k, topology.settings.app_id, k.raw_topic
        )
    except Exception as exc:  # the watch goes on from what this process was given
        log.warning("could not read the group's committed offsets after a rebalance: %r", exc)
        return
    skips.rebalanced({p: offset for p, offset in committed.items() if p in active})


async def check_recovery(topology: Topology, watch: RecoveryWatch) -> None:
    recovery: Any = topology.app.tables.recovery  # type: ignore[attr-defined]
    remaining = recovery.active_remaining_total() if recovery.in_recovery else 0
    if watch.stalled(time.monotonic(), bool(recovery.in_recovery), remaining):
        exit_for_restart(
            f"table recovery read nothing for {topology.settings.recovery_stall_s:.0f} s with "
            f"{remaining} changelog records still to read"
        )


async def on_recovered(topology: Topology) -> None:
    """Rebuild the deadline index and queue the re-announcement of the partitions taken over.
    Partitions this process held before the rebalance too are not re-announced: their changes
    all went out from here (or the process would have exited)."""
    started = time.monotonic()
    active = topology.active_partitions()
    taken_over = active - topology.held_partitions
    recovered = await rebuild(
        list(topology.table.items()),
        partitions=topology.settings.kafka.partitions,
        taken_over=taken_over,
        config=topology.config,
        reannounce=topology.settings.reannounce_on_recovery,
    )
    topology.processor.deadlines = recovered.index
    topology.processor.statuses = recovered.statuses
    topology.held_partitions = active
    topology.announcer.keep_only(active)
    topology.announcer.take_over(recovered.to_announce)
    log.info(
        "recovered %d devices, %d with a pending deadline; holding partitions %s; "
        "%d changes to re-announce for the ones taken over %s (%.1f s)",
        recovered.devices,
        len(recovered.index),
        sorted(active),
        sum(len(keys) for keys in recovered.to_announce.values()),
        sorted(taken_over),
        time.monotonic() - started,
    )
    await expect_committed_offsets(topology, active)
