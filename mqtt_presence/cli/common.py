"""What the commands share: the Typer apps, the consoles, the common options, the local stack's
addresses as defaults, logging."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from mqtt_presence.quiet import quiet_libraries
from mqtt_presence.stack import LocalStack

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="mqtt-presence: clean device status from the MQTT connection lifecycle.",
)
stack_app = typer.Typer(no_args_is_help=True, help="The local Kafka + Mosquitto stack.")
app.add_typer(stack_app, name="stack")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks.")
app.add_typer(bench_app, name="bench")

console = Console(stderr=True)
out = Console()

HomeOption = Annotated[
    Path | None,
    typer.Option(
        "--home",
        envvar="PRESENCE_STACK_HOME",
        help="Folder of the local stack (state, config, logs, data).",
    ),
]


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="PRESENCE_CONFIG",
        exists=True,
        dir_okay=False,
        help="TOML config file; the core reads its [presence] table.",
    ),
]


KafkaBootstrapOption = Annotated[str | None, typer.Option(help="host:port (default: local stack)")]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v")]


def with_local_stack(
    file_data: Mapping[str, object],
    section: str,
    flags: Mapping[str, object],
    keys: tuple[str, ...],
) -> dict[str, object]:
    """The flags given, and the running local stack's addresses (`keys`: mqtt_url,
    kafka_bootstrap) for those the user set nowhere: not as a flag, not in the part's table or
    `[kafka]`, not in their environment variables."""
    given = {k: v for k, v in flags.items() if v is not None}

    def set_elsewhere(key: str) -> bool:
        table, name = ("kafka", "bootstrap") if key == "kafka_bootstrap" else (section, key)
        found = file_data.get(table, {})
        return (isinstance(found, dict) and name in found) or (
            f"PRESENCE_{table.upper()}_{name.upper()}" in os.environ
        )

    missing = [k for k in keys if k not in given and not set_elsewhere(k)]
    if not missing:
        return given
    info = LocalStack().info()
    if info is None:
        raise fail(
            f"no {' or '.join(missing)} given and no local stack is up: run `presence stack "
            f"up`, or pass {' and '.join('--' + k.replace('_', '-') for k in missing)}"
        )
    found = {"mqtt_url": info.mqtt_url, "kafka_bootstrap": info.kafka_bootstrap}
    return {**{k: found[k] for k in missing}, **given}


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    if not verbose:
        quiet_libraries()
