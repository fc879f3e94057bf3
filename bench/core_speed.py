"""Speed and memory of the presence core.

    python -m bench.core_speed [--devices N] [--seed S]

Prints events/s of `transition` alone on one core (events prepared beforehand, as a worker gets
them decoded), events/s through the `Devices` driver (deadline heap, ticks included), and the bytes
held per tracked device at 100k and 1M devices (tracemalloc: the state, its key and the dict slot),
each with its ratio to the target (200,000 events/s, 1 KiB per device).
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from bench.common import Figures, run_bench
from mqtt_presence.core import ConnectionEvent, EventKind, PresenceConfig, SessionOrder, transition
from mqtt_presence.core.devices import Devices
from mqtt_presence.sim.simulator import SCENARIOS, simulate

TARGET_RATE = 200_000
TARGET_BYTES = 1024


def rate_transition(events: list[ConnectionEvent], config: PresenceConfig) -> float:
    states: dict[str, object] = {}
    get = states.get
    gc.disable()
    start = time.perf_counter()
    for e in events:
        state, _ = transition(get(e.device), e, config)  # type: ignore[arg-type]
        states[e.device] = state
    elapsed = time.perf_counter() - start
    gc.enable()
    return len(events) / elapsed


def rate_fleet(events: list[ConnectionEvent], config: PresenceConfig, until: int) -> float:
    fleet = Devices(config, tick_ms=1_000)
    gc.disable()
    start = time.perf_counter()
    for _ in fleet.run(events, until=until):
        pass
    elapsed = time.perf_counter() - start
    gc.enable()
    return len(events) / elapsed


def bytes_per_device(n: int, config: PresenceConfig) -> float:
    """A typical device: it was born, dropped and came back (two sessions, fingerprints)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    states = {}
    for i in range(n):
        device = f"site-{i % 977:03d}/camera-{i:07d}"
        state = None
        for kind, t, session in (
            (EventKind.BIRTH, 1_000, 7),
            (EventKind.WILL, 60_000, 7),
            (EventKind.BIRTH, 90_000, 8),
        ):
            state, _ = transition(
                state,
                ConnectionEvent(
                    device=device,
                    kind=kind,
                    received_at=1_700_000_000_000 + t,
                    session=session,
                    session_order=SessionOrder.COUNTER,
                    event_time=1_700_000_000_000 + t,
                ),
                config,
            )
        states[device] = state
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del states
    return used / n


def measure(args: argparse.Namespace, figures: Figures) -> dict[str, str]:
    config = PresenceConfig()
    print(f"core speed, one core, {args.devices} simulated devices per scenario")
    print(
        f"{'scenario':18} {'events':>9} {'transition ev/s':>16} {'x target':>9} "
        f"{'fleet ev/s':>12} {'x target':>9}"
    )
    for name in ("stale-will", "duplicates", "reorder", "flapping", "lost-will"):
        sim = simulate(SCENARIOS[name], args.devices, args.seed)
        best_t = max(rate_transition(sim.events, config) for _ in range(3))
        best_f = max(rate_fleet(sim.events, config, sim.duration_ms) for _ in range(3))
        figures.add(f"transition.{name}", best_t, "events/s", f">= {TARGET_RATE}")
        figures.add(f"fleet.{name}", best_f, "events/s", f">= {TARGET_RATE}")
        print(
            f"{name:18} {len(sim.events):>9} {best_t:>16,.0f} {best_t / TARGET_RATE:>9.2f} "
            f"{best_f:>12,.0f} {best_f / TARGET_RATE:>9.2f}"
        )
    print("\nmemory per tracked device (state + key + dict slot, tracemalloc)")
    for n in (int(x) for x in args.memory_sizes.split(",")):
        per = figures.add(
            f"bytes_per_device.{n}", bytes_per_device(n, config), "bytes", f"<= {TARGET_BYTES}"
        )
        print(f"{n:>9} devices: {per:7.0f} bytes/device   x target {per / TARGET_BYTES:.2f}")
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=20_000, help="simulated fleet size")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-sizes", default="100000,1000000")
    run_bench("core_speed", parser, measure)


if __name__ == "__main__":
    main()
