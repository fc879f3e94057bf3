"""The simulator is reproducible, its ground truth is sound, and the core meets its accuracy
targets on token-carrying devices in every scenario (with a clear win over the naive baseline)."""

from __future__ import annotations

import pytest

from mqtt_presence.core import PresenceConfig
from mqtt_presence.sim.accuracy import config_for, run_core, run_naive, score
from mqtt_presence.sim.simulator import SCENARIOS, simulate


def test_same_seed_same_fleet_and_events() -> None:
    a = simulate(SCENARIOS["reorder"], 50, seed=7)
    b = simulate(SCENARIOS["reorder"], 50, seed=7)
    c = simulate(SCENARIOS["reorder"], 50, seed=8)
    assert a.events == b.events
    assert a.events != c.events


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_ground_truth_sessions_do_not_overlap_and_tokens_go_up(name: str) -> None:
    spec = SCENARIOS[name]
    sim = simulate(spec, 60, seed=3)
    for tl in sim.timelines:
        for before, after in zip(tl.sessions, tl.sessions[1:], strict=False):
            assert before.end is not None
            assert before.start < before.end <= after.start
            if spec.boot_counter:  # the same token again after a network drop
                assert after.token in (before.token, before.token + 1)
            elif spec.counter_reset_share:  # or 1 again after a reboot
                assert after.token in (before.token + 1, 1)
            else:
                assert after.token == before.token + 1
    assert [e.received_at for e in sim.events] == sorted(e.received_at for e in sim.events)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("seed", [1, 2])
def test_core_meets_the_targets_on_token_devices(name: str, seed: int) -> None:
    sim = simulate(SCENARIOS[name], 150, seed)
    config = config_for(sim, PresenceConfig())
    core = score(sim, run_core(sim, config), config, with_token=True)
    naive = score(sim, run_naive(sim), config, with_token=True)
    assert core.false_offlines == 0
    assert core.duplicate_emissions == 0
    assert core.missed_offlines == 0
    assert core.detectable_offlines > 0
    if sim.spec.control:
        # nothing to fix here: the core costs at most its grace period per offline
        grace = config.offline_grace_ms
        assert core.wrong_ms - naive.wrong_ms <= grace * core.changes
    else:  # a clear win over trusting every message
        assert core.wrong_ms < naive.wrong_ms
        assert (naive.false_offlines + naive.duplicate_emissions + naive.missed_offlines) > 0


def test_damping_collapses_flapping_episodes() -> None:
    sim = simulate(SCENARIOS["flapping"], 200, seed=1)
    config = config_for(sim, PresenceConfig())
    core = score(sim, run_core(sim, config), config, with_token=True)
    naive = score(sim, run_naive(sim), config, with_token=True)
    assert core.flapping_episodes > 0
    assert core.flapping_changes / core.flapping_episodes <= 4
    assert naive.flapping_changes / naive.flapping_episodes >= 10
