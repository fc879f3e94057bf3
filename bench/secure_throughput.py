"""The bridge's throughput over TLS and SCRAM against plaintext, in one run on one machine.

    python -m bench.secure_throughput [--messages 50000] [--json] [--save FILE]

Starts two local stacks side by side: a plaintext one and `presence stack up --secure` (MQTT
over TLS with a password, Kafka SASL_SSL with SCRAM-SHA-512). On each, N lifecycle messages are
queued in Mosquitto for a persistent QoS 1 session, then drained (as `bench.bridge_throughput`
does): (a) by a bare paho subscriber that only acknowledges (the MQTT ceiling over that
connection), (b) by the bridge, which writes each to Kafka (acks=all, idempotent) before it
acknowledges. Prints messages/s for each, and secure over plaintext for both.
"""

from __future__ import annotations

import argparse
import uuid
from contextlib import ExitStack

from bench.bridge_throughput import bare_and_bridge, kafka_python_rate, payload
from bench.common import Figures, bench_stack, run_bench
from mqtt_presence.stack import StackInfo


def drains(info: StackInfo, n: int) -> tuple[float, float, float, int, float]:
    """(bare subscriber msg/s, bridge msg/s, bridge cores, records in Kafka, kafka-python
    producer records/s) on one stack."""
    _, bare, bridged, cpu, in_kafka = bare_and_bridge(info, uuid.uuid4().hex[:6], n)
    return bare, bridged, cpu, in_kafka, kafka_python_rate(info, n)


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    n = args.messages
    results: dict[str, tuple[float, float, float, int, float]] = {}
    with ExitStack() as stacks:
        for name, secure in (("plaintext", False), ("secure", True)):
            info, _ = stacks.enter_context(bench_stack(None, secure=secure))
            print(f"\n{name}: MQTT {info.mqtt_url}, Kafka {info.kafka_bootstrap}")
            results[name] = drains(info, n)
            versions = {"kafka": info.kafka_version, "mosquitto": info.mqtt_broker_version}
    print(f"\n{n} messages of {len(payload(0))} bytes, QoS 1, queued in the broker first\n")
    print(
        f"{'':12} {'bare subscriber msg/s':>22} {'bridge msg/s':>14} {'bridge cores':>13} "
        f"{'kafka-python producer rec/s':>28}"
    )
    for name, (bare, bridged, cpu, _, producer) in results.items():
        print(f"{name:12} {bare:>22,.0f} {bridged:>14,.0f} {cpu:>13.2f} {producer:>28,.0f}")
    plain, secured = results.values()
    (p_bare, p_bridge, _, p_kafka, p_producer) = plain
    (s_bare, s_bridge, s_cpu, s_kafka, s_producer) = secured
    print(
        f"{'secure/plain':12} {s_bare / p_bare:>22.2f} {s_bridge / p_bridge:>14.2f} {'':13} "
        f"{s_producer / p_producer:>28.2f}   (TLS on MQTT, TLS+SCRAM on Kafka)"
    )
    figures.add("bare_subscriber_plaintext", p_bare, "messages/s")
    figures.add("bare_subscriber_tls", s_bare, "messages/s")
    figures.add("bridge_plaintext", p_bridge, "messages/s")
    figures.add("bridge_tls_scram", s_bridge, "messages/s")
    figures.add("bridge_tls_scram_over_plaintext", s_bridge / p_bridge, "ratio")
    figures.add("bridge_tls_scram_over_tls_subscriber", s_bridge / s_bare, "ratio")
    figures.add("bridge_tls_scram_cpu", s_cpu, "cores")
    figures.add("kafka_python_producer_plaintext", p_producer, "records/s")
    figures.add("kafka_python_producer_sasl_ssl", s_producer, "records/s")
    figures.add("lost", max(n - p_kafka, 0) + max(n - s_kafka, 0), "messages", "== 0")
    return versions


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=50_000)
    run_bench("secure_throughput", parser, measure)


if __name__ == "__main__":
    main()
