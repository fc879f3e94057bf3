"""`presence sink postgres`: presence.status into a PostgreSQL table, one row per device."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from mqtt_presence.cli.common import (
    ConfigOption,
    KafkaBootstrapOption,
    VerboseOption,
    app,
    setup_logging,
    with_local_stack,
)
from mqtt_presence.quiet import RateLimit
from mqtt_presence.settings import load_file

sink_app = typer.Typer(no_args_is_help=True, help="Downstream sinks of presence.status.")
app.add_typer(sink_app, name="sink")


@sink_app.command("postgres")
def postgres_command(
    dsn: Annotated[
        str | None,
        typer.Option(
            help="libpq DSN or URI (or PRESENCE_SINK_DSN; kept out of logs and errors)",
            show_default=False,
        ),
    ] = None,
    dsn_file: Annotated[
        Path | None, typer.Option(help="Read the DSN from this file (a mounted secret)")
    ] = None,
    config: ConfigOption = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
    group_id: Annotated[
        str | None, typer.Option("--group", help="Consumer group (default presence-sink)")
    ] = None,
    table: Annotated[
        str | None,
        typer.Option(help="Table of current status: name or schema.name (default devices)"),
    ] = None,
    history: Annotated[
        bool | None,
        typer.Option("--history/--no-history", help="Also keep every version in <table>_history"),
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Records per transaction, at most")] = None,
    linger_ms: Annotated[
        int | None, typer.Option(help="Wait this long for a batch to fill")
    ] = None,
    progress_interval_s: Annotated[
        float | None, typer.Option("--progress-interval", help="Seconds between progress lines")
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Upsert each device's row of presence.status into PostgreSQL, only when its version is
    newer; Kafka offsets are committed after the database commit. Run several with one --group
    to share the partitions."""
    # kafka-python and psycopg load here, not for every `presence` command
    from mqtt_presence.sink.config import load_sink_settings  # noqa: PLC0415
    from mqtt_presence.sink.postgres import PostgresSink  # noqa: PLC0415

    setup_logging(verbose)
    if not verbose:  # psycopg_pool logs every failed connection attempt of an outage
        limit = RateLimit(60.0, prefixes=("psycopg",))
        for handler in logging.getLogger().handlers:
            handler.addFilter(limit)
    data = load_file(config)
    flags: dict[str, object] = {
        "kafka_bootstrap": kafka_bootstrap,
        "dsn": dsn,
        "dsn_file": dsn_file,
        "group_id": group_id,
        "table": table,
        "history": history,
        "batch_size": batch_size,
        "linger_ms": linger_ms,
        "progress_interval_s": progress_interval_s,
    }
    settings = load_sink_settings(
        data, **with_local_stack(data, "sink", flags, ("kafka_bootstrap",))
    )
    sink = PostgresSink(settings)
    signal.signal(signal.SIGTERM, lambda *_: sink.stop())
    signal.signal(signal.SIGINT, lambda *_: sink.stop())
    sink.run()
