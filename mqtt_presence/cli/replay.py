"""`presence replay`: a dump of presence.raw through the core, with `--explain`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mqtt_presence.cli.common import ConfigOption, app, console, fail
from mqtt_presence.settings import load_file, presence_config
from mqtt_presence.streams.replay import ReplayReport, replay


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
    core = presence_config(load_file(config), str(config))
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
