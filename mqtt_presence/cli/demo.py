"""`presence demo`: the whole pipeline, live, on the local stack."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from mqtt_presence.cli.common import HomeOption, app, out, setup_logging
from mqtt_presence.stack import LocalStack


@app.command("demo")
def demo_command(
    home: HomeOption = None,
    duration: Annotated[float, typer.Option(min=10, help="Seconds the fleet lives.")] = 60,
    devices: Annotated[int, typer.Option(min=1, max=2000, help="Simulated devices.")] = 200,
    keep_stack: Annotated[bool, typer.Option(help="Leave the local stack running after.")] = False,
    cmdb_storm: Annotated[
        bool,
        typer.Option(
            help="Instead: field report A's storm in a database. A share of the devices flap; "
            "one consumer writes every raw message into PostgreSQL, the sink writes "
            "presence.status; prints what each cost the database."
        ),
    ] = False,
    flapping: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="With --cmdb-storm: the flapping share.")
    ] = 0.1,
) -> None:
    """The whole pipeline, live: a fleet of real MQTT devices through bridge and worker."""
    from mqtt_presence.demo import run_demo  # noqa: PLC0415 - paho, kafka-python, Faust's worker
    from mqtt_presence.demo.cmdb_storm import (  # noqa: PLC0415 - psycopg, the same
        StormSettings,
        run_cmdb_storm,
    )

    setup_logging(verbose=False)
    # Closing the terminal (SIGHUP) or `kill` (SIGTERM) stop the demo as Ctrl-C does: everything
    # it started is stopped, the local Kafka and Mosquitto included.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    if cmdb_storm:
        settings = StormSettings(devices=devices, flapping=flapping, duration_s=duration)
        run_cmdb_storm(LocalStack(home), out, settings, keep_stack)
        return
    run_demo(LocalStack(home), out, duration, devices, keep_stack)
