"""`presence stack up|status|down|restart`: the local Kafka and MQTT broker."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import msgspec
import typer

from mqtt_presence.cli.common import HomeOption, console, out, stack_app
from mqtt_presence.stack import LocalStack


class BrokerName(StrEnum):
    mosquitto = "mosquitto"
    hivemq = "hivemq"
    rabbitmq = "rabbitmq"


@stack_app.command("up")
def stack_up(
    home: HomeOption = None,
    kafka_port: Annotated[
        int | None, typer.Option(help="Kafka port (default: a free one).")
    ] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="MQTT port (default: a free one).")] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="TLS everywhere: Kafka SASL_SSL (SCRAM) and mTLS, Mosquitto TLS with "
            "passwords, an ACL and client certificates; certificates and passwords are made "
            "in the home folder, and client.toml there connects the parts.",
        ),
    ] = False,
    kafka_nodes: Annotated[
        int,
        typer.Option(
            help="1, or 3: a cluster of three KRaft nodes (each a broker and a controller), "
            "replication factor 3 and min.insync.replicas 2 by default.",
        ),
    ] = 1,
    broker: Annotated[
        BrokerName | None,
        typer.Option(
            help="The MQTT broker: mosquitto (Debian's package), hivemq (HiveMQ Community "
            "Edition from Maven Central, on the JDK) or rabbitmq (Debian's rabbitmq-server with "
            "its MQTT plugin, MQTT 3.1.1). Default: the stack's, or mosquitto for a new one.",
        ),
    ] = None,
) -> None:
    """Start Kafka (KRaft) and an MQTT broker on 127.0.0.1, installing them on first use."""
    stack = LocalStack(home)
    with console.status("starting the local stack…") as status:

        def progress(msg: str) -> None:
            console.log(msg)
            status.update(msg)

        info = stack.up(
            kafka_port,
            mqtt_port,
            progress=progress,
            secure=secure,
            kafka_nodes=kafka_nodes,
            broker=broker.value if broker else None,
        )
    pids = ", ".join(str(n.pid) for n in info.nodes)
    out.print(
        f"Kafka {info.kafka_version}  bootstrap [bold]{info.kafka_bootstrap}[/]  "
        f"({len(info.nodes)} node{'s' if len(info.nodes) > 1 else ''}, pid {pids})"
    )
    out.print(
        f"{info.broker.title} {info.mqtt_broker_version}  [bold]{info.mqtt_url}[/]  "
        f"(pid {info.mqtt_pid})"
    )
    if info.client_config is not None:
        out.print(
            f"secure: Kafka SASL_SSL (SCRAM) here and mTLS on {info.kafka_mtls_port}; MQTT TLS "
            f"with passwords here and client certificates on {info.mqtt_mtls_port}. Connect "
            f"the parts with [bold]--config {info.client_config}[/]"
        )
    out.print(
        f"home {info.home}; stop with `presence stack down` (keeps data and ports; "
        "`--purge` discards them)"
    )


@stack_app.command("status")
def stack_status(
    home: HomeOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Where the local stack is and whether its processes run. Exit 1 when it is not up."""
    stack = LocalStack(home)
    info = stack.info()
    if info is None:
        if as_json:
            out.print_json(data={"up": False, "home": str(stack.home)})
        else:
            console.print(f"no stack is up in {stack.home}")
        raise typer.Exit(1)
    health = stack.health(info)
    up = all(health.values())
    if as_json:
        data = msgspec.to_builtins(info)
        data.update(up=up, running=health, mqtt_url=info.mqtt_url)
        sys.stdout.write(msgspec.json.encode(data).decode() + "\n")
    else:
        for name, running in health.items():
            out.print(f"{name:10} {'[green]running[/]' if running else '[red]not running[/]'}")
        out.print(f"kafka      {info.kafka_bootstrap}\nmqtt       {info.mqtt_url}")
    raise typer.Exit(0 if up else 1)


@stack_app.command("down")
def stack_down(
    home: HomeOption = None,
    purge: Annotated[
        bool,
        typer.Option(help="Also discard the brokers' data and ports (every topic, every session)."),
    ] = False,
) -> None:
    """Stop the processes the stack started (by pid). Data and ports stay for the next `up`."""
    stack = LocalStack(home)
    stopped = stack.down(purge=purge)
    console.print(
        f"stopped {len(stopped)} process(es): {stopped}"
        if stopped
        else f"nothing was running in {stack.home}"
    )
    console.print(
        "data and ports discarded"
        if purge
        else "data and ports kept: `presence stack up` starts the same stack again "
        "(`--purge` discards them)"
    )


class Part(StrEnum):
    kafka = "kafka"
    mqtt = "mqtt"  # whichever broker the stack runs; or by its name:
    mosquitto = "mosquitto"
    hivemq = "hivemq"
    rabbitmq = "rabbitmq"


@stack_app.command("restart")
def stack_restart(
    parts: Annotated[
        list[Part] | None,
        typer.Argument(help="kafka, mqtt (or the MQTT broker's name) (default: both)"),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Stop and start parts of the stack in place: same ports, same data."""
    stack = LocalStack(home)
    for part in parts or [Part.kafka, Part.mqtt]:
        info = stack.restart(part.value, progress=console.log)
    out.print(f"Kafka {info.kafka_bootstrap} (pid {info.kafka_pid})")
    out.print(f"{info.broker.title} {info.mqtt_url} (pid {info.mqtt_pid})")
