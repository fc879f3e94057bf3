"""`presence bench accuracy`: simulated fleets through the core and a naive baseline."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mqtt_presence.cli.common import ConfigOption, bench_app, console, fail, out
from mqtt_presence.settings import load_file, presence_config
from mqtt_presence.sim.accuracy import config_for, evaluate
from mqtt_presence.sim.simulator import SCENARIOS, simulate


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
    names = scenario or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise fail(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    base = presence_config(load_file(config), str(config))
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
