"""`presence bench accuracy`: simulated fleets through the core and a naive baseline.

Rich tables for people; `--json` for machines (one document: the version, the machine, the
settings and every figure as a number); `--save DIR` keeps a timestamped copy, `--compare FILE`
says what changed against an earlier one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.table import Table

import mqtt_presence
from mqtt_presence.bench_report import Machine, machine, now_utc
from mqtt_presence.bench_report import save as keep
from mqtt_presence.cli.common import ConfigOption, bench_app, console, fail, out
from mqtt_presence.settings import load_file, presence_config
from mqtt_presence.sim.accuracy import Figures, ScenarioResult, config_for, evaluate
from mqtt_presence.sim.simulator import SCENARIOS, simulate


class ScenarioFigures(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str
    events: int
    simulated_minutes: int
    figures: dict[str, Figures]  # column ("core, tokens", "naive, no tokens", ...) -> figures


class AccuracyReport(msgspec.Struct, frozen=True, kw_only=True):
    """What `presence bench accuracy --json` prints (its JSON Schema: `--json-schema`)."""

    schema_version: int = 1
    command: str = "presence bench accuracy"
    version: str
    measured_at: str  # UTC, ISO 8601
    machine: Machine
    devices: int
    seed: int
    config: dict[str, Any]  # the core's settings the scenarios ran with (before config_for)
    scenarios: list[ScenarioFigures]


@bench_app.command("accuracy")
def bench_accuracy(
    scenario: Annotated[
        list[str] | None, typer.Option(help="Scenario name (repeat for several); default: all.")
    ] = None,
    devices: Annotated[int, typer.Option(min=1, help="Simulated devices per scenario.")] = 1_000,
    seed: Annotated[int, typer.Option(help="Simulator seed (same seed, same fleet).")] = 1,
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document instead of tables.")
    ] = False,
    save: Annotated[
        Path | None, typer.Option(help="Also write the JSON document into this folder.")
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="An earlier --json result: say what changed."
        ),
    ] = None,
    json_schema: Annotated[
        bool, typer.Option("--json-schema", help="Print the JSON Schema of --json and stop.")
    ] = False,
) -> None:
    """Simulated fleets through the core and through a naive baseline, against ground truth."""
    if json_schema:
        sys.stdout.write(msgspec.json.encode(msgspec.json.schema(AccuracyReport)).decode() + "\n")
        return
    names = scenario or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise fail(f"unknown scenario {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    base = presence_config(load_file(config), str(config))
    results = []
    for name in names:
        with console.status(f"simulating {name} ({devices} devices, seed {seed})…"):
            sim = simulate(SCENARIOS[name], devices, seed)
            result = evaluate(sim, config_for(sim, base))
        minutes = sim.duration_ms // 60_000
        results.append(
            ScenarioFigures(
                name=name,
                description=result.description,
                events=result.events,
                simulated_minutes=minutes,
                figures=result.figures,
            )
        )
        if not as_json:
            out.print(table_of(name, result, devices, seed, minutes))
    report = AccuracyReport(
        version=mqtt_presence.__version__,
        measured_at=now_utc(),
        machine=machine(),
        devices=devices,
        seed=seed,
        config=msgspec.to_builtins(base),
        scenarios=results,
    )
    document = msgspec.json.format(msgspec.json.encode(report))
    if as_json:
        sys.stdout.write(document.decode() + "\n")
    if save is not None:
        console.print(f"saved {keep(document, save, 'accuracy', report.measured_at)}")
    if compare is not None:
        earlier = msgspec.json.decode(compare.read_bytes(), type=AccuracyReport)
        for line in differences(earlier, report):
            console.print(line, highlight=False)


def table_of(name: str, result: ScenarioResult, devices: int, seed: int, minutes: int) -> Table:
    table = Table(
        title=f"{name}: {result.description}",
        title_justify="left",
        caption=f"{result.events} raw events, {devices} devices, seed {seed}, "
        f"{minutes} simulated minutes",
        caption_justify="left",
    )
    table.add_column("metric")
    for column in result.columns:
        table.add_column(column, justify="right")
    for metric in next(iter(result.columns.values())):
        table.add_row(metric, *(col[metric] for col in result.columns.values()))
    return table


def differences(earlier: AccuracyReport, now: AccuracyReport) -> list[str]:
    """One line per figure that changed (scenario, column, figure: before -> now)."""
    lines = []
    if (earlier.devices, earlier.seed) != (now.devices, now.seed):
        lines.append(
            f"note: {earlier.devices} devices, seed {earlier.seed} then; "
            f"{now.devices}, seed {now.seed} now"
        )
    before = {s.name: s for s in earlier.scenarios}
    for scenario in now.scenarios:
        old = before.get(scenario.name)
        if old is None:
            lines.append(f"{scenario.name}: new scenario")
            continue
        for column, figures in scenario.figures.items():
            was = msgspec.to_builtins(old.figures.get(column))
            is_ = msgspec.to_builtins(figures)
            for field, value in is_.items():
                if was is None or was.get(field) != value:
                    then = None if was is None else was.get(field)
                    lines.append(f"{scenario.name} / {column} / {field}: {then} -> {value}")
    return lines or ["no figure changed"]


__all__ = ["AccuracyReport", "bench_accuracy"]
