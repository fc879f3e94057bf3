"""The README's metric table is the metrics the bridge and a worker really expose: built here from
their registries, rendered as Prometheus exposes them (counters with `_total`), and compared.

After adding or renaming a metric: `.venv/bin/python -m tests.unit.test_readme_metrics` rewrites
the table in README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from faust.sensors.monitor import Monitor
from prometheus_client import CollectorRegistry, generate_latest

from mqtt_presence.bridge.metrics import BridgeMetrics
from mqtt_presence.streams.metrics import WorkerMetrics

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- metrics table: generated -->\n", "<!-- end of metrics table -->\n"


def exposed(registry: CollectorRegistry) -> list[tuple[str, str, str]]:
    """(name, type, help) of every family in the exposition text, as a scraper sees it (the
    `_created` timestamp prometheus-client adds beside each counter left out)."""
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("# HELP "):
            name, _, text = line.removeprefix("# HELP ").partition(" ")
            helps[name] = text
        elif line.startswith("# TYPE "):
            name, _, kind = line.removeprefix("# TYPE ").partition(" ")
            types[name] = kind
    return [
        (name, types[name], helps[name]) for name in sorted(helps) if not name.endswith("_created")
    ]


def expected_table() -> str:
    bridge = BridgeMetrics()
    worker = WorkerMetrics()
    worker.watch(Monitor())
    labels = {
        **{m._name: m._labelnames for m in vars(bridge).values() if hasattr(m, "_labelnames")},
        **{m._name: m._labelnames for m in vars(worker).values() if hasattr(m, "_labelnames")},
        **{  # collected at scrape time, with a sample for every label value from the start
            family.name: tuple(family.samples[0].labels)
            for family in worker.counts.collect()
            if family.samples
        },
        "presence_worker_faust_messages_received": ("topic",),
        "presence_worker_faust_consumer_lag": ("topic", "partition"),
        "presence_worker_faust_read_offset": ("topic", "partition"),
        "presence_worker_faust_committed_offset": ("topic", "partition"),
    }
    rows = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for part in (bridge.registry, worker.registry):
        for name, kind, text in exposed(part):
            names = labels.get(name.removesuffix("_total"), ())
            rows.append(f"| `{name}` | {kind} | {', '.join(names) or '-'} | {text} |")
    return "\n".join(rows) + "\n"


def readme_table() -> str:
    text = README.read_text()
    return text[text.index(START) + len(START) : text.index(END)]


def test_the_readme_lists_exactly_the_metrics_exposed() -> None:
    assert readme_table() == expected_table(), (
        "README's metric table is stale: run `.venv/bin/python -m tests.unit.test_readme_metrics`"
    )


if __name__ == "__main__":
    text = README.read_text()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    README.write_text(head + START + expected_table() + END + tail)
    sys.stdout.write(f"rewrote the metrics table in {README}\n")
