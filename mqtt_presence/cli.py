"""The `presence` command: the one composition root for every entry point.

Typer gives typed options with generated help; rich prints tables and progress. Each command
loads its settings once, builds its parts, and turns the project's own errors into a one-line
message and exit code 1 (no traceback for a problem the user can fix).
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.console import Console

from mqtt_presence.errors import PresenceError
from mqtt_presence.quiet import quiet_libraries
from mqtt_presence.settings import ConfigError, load_file, presence_config
from mqtt_presence.stack import LocalStack, StackError

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


@stack_app.command("up")
def stack_up(
    home: HomeOption = None,
    kafka_port: Annotated[
        int | None, typer.Option(help="Kafka port (default: a free one).")
    ] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="MQTT port (default: a free one).")] = None,
) -> None:
    """Start Kafka (KRaft) and Mosquitto on 127.0.0.1, installing them on first use."""
    stack = LocalStack(home)
    try:
        with console.status("starting the local stack…") as status:

            def progress(msg: str) -> None:
                console.log(msg)
                status.update(msg)

            info = stack.up(kafka_port, mqtt_port, progress=progress)
    except StackError as exc:
        raise fail(str(exc)) from exc
    out.print(
        f"Kafka {info.kafka_version}  bootstrap [bold]{info.kafka_bootstrap}[/]  "
        f"(pid {info.kafka_pid})"
    )
    out.print(
        f"Mosquitto {info.mosquitto_version}  [bold]{info.mqtt_url}[/]  (pid {info.mosquitto_pid})"
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
    try:
        info = stack.info()
    except StackError as exc:
        raise fail(str(exc)) from exc
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
    try:
        stopped = stack.down(purge=purge)
    except StackError as exc:
        raise fail(str(exc)) from exc
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
    mosquitto = "mosquitto"


@stack_app.command("restart")
def stack_restart(
    parts: Annotated[
        list[Part] | None, typer.Argument(help="kafka, mosquitto (default: both)")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Stop and start parts of the stack in place: same ports, same data."""
    stack = LocalStack(home)
    try:
        for part in parts or list(Part):
            info = stack.restart(part.value, progress=console.log)
    except StackError as exc:
        raise fail(str(exc)) from exc
    out.print(f"Kafka {info.kafka_bootstrap} (pid {info.kafka_pid})")
    out.print(f"Mosquitto {info.mqtt_url} (pid {info.mosquitto_pid})")


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


@app.command("replay")
def replay_command(
    source: Annotated[str, typer.Argument(help="JSON lines of raw events, or - for stdin.")] = "-",
    config: ConfigOption = None,
    explain: Annotated[
        str | None,
        typer.Option(help="Print, for each input of this device, what the core decided and why."),
    ] = None,
    until: Annotated[
        int | None,
        typer.Option(
            help="Final tick (ms since the epoch); default: the last event's receive time."
        ),
    ] = None,
) -> None:
    """Run a dump of presence.raw through the core; print status changes as JSON lines."""
    from mqtt_presence.streams.replay import ReplayReport, replay  # noqa: PLC0415 - keeps `presence` start fast

    try:
        core = presence_config(load_file(config), str(config))
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    report = ReplayReport()
    try:
        stream = sys.stdin.buffer if source == "-" else Path(source).open("rb")  # noqa: SIM115
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror}") from exc
    with stream:
        for line in replay(stream, core, explain=explain, until=until, report=report):
            sys.stdout.buffer.write(line + b"\n")
    for warning in report.warnings:
        console.print(f"[yellow]note[/] {warning}", highlight=False)
    for bad in report.bad_lines:
        console.print(f"[yellow]skipped[/] {bad}", highlight=False)
    console.print(
        f"{report.events} events in, {report.changes} status changes out"
        + (f", {len(report.bad_lines)} bad lines skipped" if report.bad_lines else "")
    )
    if report.pending:
        first = ", ".join(f"{device} at {due}" for device, due in report.pending[:5])
        more = f" and {len(report.pending) - 5} more" if len(report.pending) > 5 else ""
        console.print(
            f"{len(report.pending)} device(s) have a change still pending at the end (a grace "
            f"period or damping running): {first}{more}; --until a later time fires them",
            highlight=False,
        )
    if explain is not None and not report.explained_seen:
        console.print(f"[bold red]error:[/] device {explain!r} does not appear in the dump")
        raise typer.Exit(1)
    if report.bad_lines:
        raise typer.Exit(1)


@bench_app.command("accuracy")
def bench_accuracy(
    scenario: Annotated[
        list[str] | None, typer.Option(help="Scenario name (repeat for several); default: all.")
    ] = None,
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices per scenario.")] = 1_000,
    seed: Annotated[int, typer.Option(help="Simulator seed (same seed, same fleet).")] = 1,
    config: ConfigOption = None,
) -> None:
    """Simulated fleets through the core and through a naive baseline, against ground truth."""
    from rich.table import Table  # noqa: PLC0415

    from mqtt_presence.sim.accuracy import config_for, evaluate  # noqa: PLC0415
    from mqtt_presence.sim.simulator import SCENARIOS, simulate  # noqa: PLC0415

    names = scenario or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise fail(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    try:
        base = presence_config(load_file(config), str(config))
    except ConfigError as exc:
        raise fail(str(exc)) from exc
    for name in names:
        with console.status(f"simulating {name} ({devices} devices, seed {seed})…"):
            sim = simulate(SCENARIOS[name], devices, seed)
            result = evaluate(sim, config_for(sim, base))
        table = Table(
            title=f"{name}: {result.description}",
            title_justify="left",
            caption=f"{result.events} raw events, {devices} devices, seed {seed}, "
            f"{sim.duration_ms // 60_000} simulated minutes",
            caption_justify="left",
        )
        table.add_column("metric")
        for column in result.columns:
            table.add_column(column, justify="right")
        for metric in next(iter(result.columns.values())):
            table.add_row(metric, *(col[metric] for col in result.columns.values()))
        out.print(table)


def local_stack_defaults(
    file_data: dict[str, object],
    section: str,
    keys: tuple[str, ...] = ("mqtt_url", "kafka_bootstrap"),
) -> dict[str, str]:
    """Broker addresses from the running local stack, for whatever the user did not set (in the
    part's table or `[kafka]`, or their environment variables)."""
    import os  # noqa: PLC0415

    def given(key: str) -> bool:
        table, name = ("kafka", "bootstrap") if key == "kafka_bootstrap" else (section, key)
        found = file_data.get(table, {})
        return (isinstance(found, dict) and name in found) or (
            f"PRESENCE_{table.upper()}_{name.upper()}" in os.environ
        )

    missing = [k for k in keys if not given(k)]
    if not missing:
        return {}
    info = LocalStack().info()
    if info is None:
        raise fail(
            f"no {' or '.join(missing)} given and no local stack is up: run `presence stack "
            f"up`, or pass {' and '.join('--' + k.replace('_', '-') for k in missing)}"
        )
    found = {"mqtt_url": info.mqtt_url, "kafka_bootstrap": info.kafka_bootstrap}
    return {k: found[k] for k in missing}


def setup_logging(verbose: bool) -> None:
    import logging  # noqa: PLC0415

    from rich.logging import RichHandler  # noqa: PLC0415

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not verbose else logging.INFO)
    if not verbose:
        quiet_libraries()


@app.command("bridge")
def bridge_command(
    config: ConfigOption = None,
    mqtt_url: Annotated[
        str | None, typer.Option(help="mqtt://host:port (default: local stack)")
    ] = None,
    kafka_bootstrap: Annotated[
        str | None, typer.Option(help="host:port (default: local stack)")
    ] = None,
    client_id: Annotated[str | None, typer.Option(help="MQTT client id (one per bridge)")] = None,
    shared_group: Annotated[
        str | None,
        typer.Option(help="Share the load with other bridges through $share/<group>/..."),
    ] = None,
    http_port: Annotated[int | None, typer.Option(help="Metrics and health port (0: any)")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Subscribe to the fleet's lifecycle topics and write one raw event per message to Kafka."""
    import signal  # noqa: PLC0415

    from pydantic import ValidationError  # noqa: PLC0415

    from mqtt_presence.bridge.app import Bridge  # noqa: PLC0415
    from mqtt_presence.bridge.config import load_bridge_settings  # noqa: PLC0415
    from mqtt_presence.bridge.errors import BridgeError  # noqa: PLC0415

    setup_logging(verbose)
    try:
        data = load_file(config)
        overrides: dict[str, object] = {
            "mqtt_url": mqtt_url,
            "kafka_bootstrap": kafka_bootstrap,
            "client_id": client_id,
            "shared_group": shared_group,
            "http_port": http_port,
        }
        if mqtt_url is None or kafka_bootstrap is None:
            defaults = local_stack_defaults(data, "bridge")
            overrides = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        settings = load_bridge_settings(data, **overrides)
    except (ConfigError, ValidationError) as exc:
        raise fail(f"bad bridge configuration: {exc}") from exc
    bridge = Bridge(settings)
    signal.signal(signal.SIGTERM, lambda *_: bridge.stop())
    signal.signal(signal.SIGINT, lambda *_: bridge.stop())
    try:
        bridge.run()
    except BridgeError as exc:
        raise fail(str(exc)) from exc


@app.command("worker")
def worker_command(
    config: ConfigOption = None,
    kafka_bootstrap: Annotated[
        str | None, typer.Option(help="host:port (default: local stack)")
    ] = None,
    web_port: Annotated[int | None, typer.Option(help="HTTP port of this worker")] = None,
    app_id: Annotated[str | None, typer.Option(help="Consumer group / app id")] = None,
    store: Annotated[str | None, typer.Option(help="rocksdb (default) or memory")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Table data of this worker")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run a streams worker: presence.raw through the core to presence.status and the table."""
    from pydantic import ValidationError  # noqa: PLC0415

    from mqtt_presence.streams.app import PresenceWorker, create_app, wait_for_kafka  # noqa: PLC0415
    from mqtt_presence.streams.config import load_worker_settings  # noqa: PLC0415
    from mqtt_presence.streams.local_state import prepare_table_dir, read_identity  # noqa: PLC0415
    from mqtt_presence.streams.topology import changelog_topic  # noqa: PLC0415

    try:
        data = load_file(config)
        overrides: dict[str, object] = {
            "kafka_bootstrap": kafka_bootstrap,
            "web_port": web_port,
            "app_id": app_id,
            "store": store,
            "data_dir": data_dir,
        }
        if kafka_bootstrap is None:
            defaults = local_stack_defaults(data, "worker", keys=("kafka_bootstrap",))
            overrides = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        settings = load_worker_settings(data, **overrides)
        core = presence_config(data, str(config))
    except (ConfigError, ValidationError) as exc:
        raise fail(f"bad worker configuration: {exc}") from exc
    wait_for_kafka(settings, lambda line: console.print(line, highlight=False))
    faust_app, _ = create_app(settings, core)
    if settings.store == "rocksdb":
        prepare_table_dir(
            Path(faust_app.conf.tabledir),
            read_identity(settings.kafka.bootstrap, changelog_topic(settings.app_id)),
        )
    PresenceWorker(faust_app, loglevel="DEBUG" if verbose else "INFO").execute_from_commandline()


@app.command("status")
def status_command(
    device: Annotated[str, typer.Argument(help="Device id")],
    url: Annotated[
        str, typer.Option(envvar="PRESENCE_WORKER_URL", help="Any worker's HTTP address")
    ] = "http://127.0.0.1:6066",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Is a device online, since when, why? (asks a worker; it routes to the owner)."""
    import json  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.parse  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415
    from datetime import UTC, datetime  # noqa: PLC0415

    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise fail(f"--url must be an http:// or https:// address, not {url!r}")
    target = f"{url.rstrip('/')}/devices/{urllib.parse.quote(device, safe='')}"
    try:
        with urllib.request.urlopen(target, timeout=10) as resp:  # noqa: S310 - scheme checked
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise fail(f"no status for device {device!r} yet") from exc
        raise fail(f"{target} answered {exc.code}: {exc.read()[:200]!r}") from exc
    except OSError as exc:
        raise fail(
            f"cannot reach a worker at {url} ({exc}); is `presence worker` running?"
        ) from exc
    if as_json:
        sys.stdout.write(json.dumps(body) + "\n")
        return
    since = datetime.fromtimestamp(body["since"] / 1000, tz=UTC).isoformat(timespec="seconds")
    flapping = " [bold yellow](flapping)[/]" if body["flapping"] else ""
    verified = "verified by session token" if body["verified"] else "not verified (no token)"
    out.print(
        f"[bold]{device}[/] is [bold]{body['status']}[/]{flapping} since {since} "
        f"(version {body['version']}, reason {body['reason']}, session {body['session']}, "
        f"{verified})"
    )


@app.command("demo")
def demo_command(
    home: HomeOption = None,
    duration: Annotated[float, typer.Option(min=10, help="Seconds the fleet lives.")] = 60,
    devices: Annotated[int, typer.Option(min=1, max=2000, help="Simulated devices.")] = 200,
    keep_stack: Annotated[bool, typer.Option(help="Leave the local stack running after.")] = False,
) -> None:
    """The whole pipeline, live: a fleet of real MQTT devices through bridge and worker."""
    from mqtt_presence.demo import DemoError, run_demo  # noqa: PLC0415

    setup_logging(verbose=False)
    try:
        run_demo(LocalStack(home), out, duration, devices, keep_stack)
    except (StackError, DemoError) as exc:
        raise fail(str(exc)) from exc


def main() -> None:
    """The one place an error of the family ends a command: its message, status 1."""
    try:
        app()
    except PresenceError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None
