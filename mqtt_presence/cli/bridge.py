"""`presence bridge`: MQTT lifecycle messages to presence.raw."""

from __future__ import annotations

import signal
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
from mqtt_presence.settings import load_file


@app.command("bridge")
def bridge_command(
    config: ConfigOption = None,
    mqtt_url: Annotated[
        str | None, typer.Option(help="mqtt://host:port (default: local stack)")
    ] = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
    client_id: Annotated[str | None, typer.Option(help="MQTT client id (one per bridge)")] = None,
    shared_group: Annotated[
        str | None,
        typer.Option(help="Share the load with other bridges through $share/<group>/..."),
    ] = None,
    http_port: Annotated[int | None, typer.Option(help="Metrics and health port (0: any)")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Subscribe to the fleet's lifecycle topics and write one raw event per message to Kafka."""
    # paho and kafka-python load here, not for every `presence` command
    from mqtt_presence.bridge.app import Bridge  # noqa: PLC0415
    from mqtt_presence.bridge.config import load_bridge_settings  # noqa: PLC0415

    setup_logging(verbose)
    data = load_file(config)
    flags: dict[str, object] = {
        "mqtt_url": mqtt_url,
        "kafka_bootstrap": kafka_bootstrap,
        "client_id": client_id,
        "shared_group": shared_group,
        "http_port": http_port,
    }
    keys = ("mqtt_url", "kafka_bootstrap")
    settings = load_bridge_settings(data, **with_local_stack(data, "bridge", flags, keys))
    bridge = Bridge(settings)
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    signal.signal(signal.SIGINT, lambda *_: bridge.stop())
    bridge.run()
