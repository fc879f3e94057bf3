"""`presence doctor`: walk report A's diagnosis against a live deployment, print what to fix."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mqtt_presence.cli.common import (
    ConfigOption,
    KafkaBootstrapOption,
    app,
    out,
    with_local_stack,
)
from mqtt_presence.settings import load_file

STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


@app.command("doctor")
def doctor_command(
    config: ConfigOption = None,
    mqtt_url: Annotated[
        str | None, typer.Option(help="mqtt://host:port (default: [bridge], else local stack)")
    ] = None,
    kafka_bootstrap: KafkaBootstrapOption = None,
    bridge_url: Annotated[
        str | None,
        typer.Option(help="The bridge's HTTP address (default: [bridge] http_host:http_port)"),
    ] = None,
    worker_url: Annotated[
        list[str] | None,
        typer.Option(
            "--worker-url",
            help="A worker's HTTP address; once per worker (default: [worker]'s own, when "
            "the file has a [worker] table)",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            envvar="PRESENCE_WORKER_HTTP_TOKEN",
            help="The workers' bearer token (default: [worker] http_token)",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each probe may take")] = 3.0,
    last: Annotated[
        int, typer.Option(help="Records read from the end of the DLQ and the status topic")
    ] = 1000,
    max_lag: Annotated[
        int, typer.Option(help="Consumer lag of one partition above which it warns")
    ] = 1000,
    emqx_api: Annotated[
        str | None,
        typer.Option(
            help="EMQX's REST API (http://host:18083): also check its flapping detection, bans "
            "in force and listener rate limits"
        ),
    ] = None,
    emqx_key: Annotated[str | None, typer.Option(help="An EMQX API key")] = None,
    emqx_secret: Annotated[
        str | None,
        typer.Option(
            envvar="PRESENCE_DOCTOR_EMQX_SECRET",
            help="The API key's secret",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The findings as JSON.")] = False,
) -> None:
    """Check a deployment in report A's order (network, broker, Kafka, consumers) and print a
    checklist with what to fix. Exit status 1 when a check failed."""
    # paho and kafka-python load here, not for every `presence` command
    from mqtt_presence.bridge.config import load_bridge_settings  # noqa: PLC0415
    from mqtt_presence.doctor.findings import exit_status, to_json  # noqa: PLC0415
    from mqtt_presence.doctor.run import Plan, examine  # noqa: PLC0415
    from mqtt_presence.streams.config import load_worker_settings  # noqa: PLC0415

    data = load_file(config)
    flags: dict[str, object] = {"mqtt_url": mqtt_url, "kafka_bootstrap": kafka_bootstrap}
    keys = ("mqtt_url", "kafka_bootstrap")
    found = with_local_stack(data, "bridge", flags, keys)
    bridge = load_bridge_settings(data, **found)
    worker = load_worker_settings(data, kafka_bootstrap=found.get("kafka_bootstrap"))
    if bridge_url is None and bridge.http_port:
        bridge_url = f"http://{bridge.http_host}:{bridge.http_port}"
    urls = list(worker_url or [])
    if not urls and "worker" in data:
        urls = [worker.canonical_url or f"http://{worker.web_host}:{worker.web_port}"]
    if token is None and worker.http_token is not None:
        token = worker.http_token.get_secret_value()
    plan = Plan(
        bridge=bridge,
        app_id=worker.app_id,
        bridge_url=bridge_url,
        worker_urls=tuple(urls),
        token=token,
        timeout_s=timeout,
        last=last,
        max_lag=max_lag,
        emqx_api=emqx_api,
        emqx_key=emqx_key,
        emqx_secret=emqx_secret,
    )
    findings = examine(plan)
    if as_json:
        sys.stdout.write(to_json(findings).decode() + "\n")
        raise typer.Exit(exit_status(findings))
    from mqtt_presence.doctor.findings import STEPS  # noqa: PLC0415

    who = f"as {bridge.username!r}" if bridge.username else "anonymous"
    out.print(
        f"[bold]presence doctor[/]: MQTT {escape(bridge.mqtt_url)} ({who}), Kafka "
        f"{escape(bridge.kafka.bootstrap)}, {len(urls)} worker(s), bridge "
        f"{escape(bridge_url or 'not given')}",
        highlight=False,
    )
    step = -1
    table: Table | None = None
    for finding in findings:
        if finding.step != step:
            if table is not None:
                out.print(table)
            step = finding.step
            out.print(f"\n[bold]{step}. {STEPS.get(step, 'the doctor itself')}[/]", highlight=False)
            table = Table.grid(padding=(0, 2))
            table.add_column(width=4, no_wrap=True)
            table.add_column(no_wrap=True)
            table.add_column()
        assert table is not None
        text = escape(finding.seen)
        if finding.fix:
            text += f"\n[italic]fix:[/] {escape(finding.fix)}"
        status = finding.status.upper() if finding.status == "fail" else finding.status
        table.add_row(f"[{STYLE[finding.status]}]{status}[/]", escape(finding.check), text)
    if table is not None:
        out.print(table)
    counts = {s: sum(1 for f in findings if f.status == s) for s in STYLE}
    verdict = "[bold red]not healthy[/]" if exit_status(findings) else "[bold green]healthy[/]"
    out.print(
        f"\n{verdict}: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail, "
        f"{counts['skip']} skipped (exit status {exit_status(findings)})",
        highlight=False,
    )
    raise typer.Exit(exit_status(findings))
