"""`presence worker`: presence.raw through the core to presence.status and the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mqtt_presence.cli.common import (
    ConfigOption,
    KafkaBootstrapOption,
    VerboseOption,
    app,
    console,
    with_local_stack,
)
from mqtt_presence.settings import load_file, presence_config


@app.command("worker")
def worker_command(
    config: ConfigOption = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
    web_port: Annotated[int | None, typer.Option(help="HTTP port of this worker")] = None,
    app_id: Annotated[str | None, typer.Option(help="Consumer group / app id")] = None,
    store: Annotated[str | None, typer.Option(help="rocksdb (default) or memory")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Table data of this worker")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Run a streams worker: presence.raw through the core to presence.status and the table."""
    # Faust loads here, not for every `presence` command
    from mqtt_presence.streams.app import PresenceWorker, create_app, wait_for_kafka  # noqa: PLC0415
    from mqtt_presence.streams.config import load_worker_settings  # noqa: PLC0415
    from mqtt_presence.streams.local_state import prepare_table_dir, read_identity  # noqa: PLC0415
    from mqtt_presence.streams.topology import changelog_topic  # noqa: PLC0415

    data = load_file(config)
    flags: dict[str, object] = {
        "kafka_bootstrap": kafka_bootstrap,
        "web_port": web_port,
        "app_id": app_id,
        "store": store,
        "data_dir": data_dir,
    }
    keys = ("kafka_bootstrap",)
    settings = load_worker_settings(data, **with_local_stack(data, "worker", flags, keys))
    core = presence_config(data, str(config))
    wait_for_kafka(settings, lambda line: console.print(line, highlight=False))
    faust_app, _ = create_app(settings, core)
    if settings.store == "rocksdb":
        prepare_table_dir(
            Path(faust_app.conf.tabledir),
            read_identity(settings.kafka, changelog_topic(settings.app_id)),
        )
    PresenceWorker(faust_app, loglevel="DEBUG" if verbose else "INFO").execute_from_commandline()
