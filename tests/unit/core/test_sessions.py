"""Sessions as real fleets make them: each test is one behaviour seen outside our own simulator,
with the source that says what should happen.

The events are written as the bridge would write them for that device family; the expected
outcome is what a careful operator looking at the device would say.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from mqtt_presence.core import (
    ConnectionEvent,
    DampingConfig,
    DeviceState,
    EventKind,
    Input,
    PresenceConfig,
    SessionOrder,
    StatusChange,
    Tick,
    fingerprint,
    step,
    transition,
)

GRACE = 5_000
CONFIG = PresenceConfig(offline_grace_ms=GRACE)
HOUR = 3_600_000
FAR = 10 * 24 * HOUR


def ev(
    kind: str,
    t: int,
    session: int | str | None = None,
    order: SessionOrder = SessionOrder.COUNTER,
    **extra: object,
) -> ConnectionEvent:
    return ConnectionEvent(
        device="d",
        kind=EventKind(kind),
        received_at=t,
        session=session,
        session_order=order,
        **extra,  # type: ignore[arg-type]
    )


def final(inputs: Iterable[Input], config: PresenceConfig = CONFIG) -> tuple[str, list[str]]:
    """The status downstream ends with, and every status it was told, in order."""
    state: DeviceState | None = None
    out: list[StatusChange] = []
    for inp in [*inputs, Tick(FAR)]:
        state, changes = transition(state, inp, config)
        out += changes
    return (out[-1].status.value if out else "unknown"), [c.status.value for c in out]


def why(inputs: list[Input], config: PresenceConfig = CONFIG) -> list[str]:
    """The machine's own words for the last input."""
    state: DeviceState | None = None
    for inp in inputs[:-1]:
        state, _ = transition(state, inp, config)
    _, _, notes = step(state, inputs[-1], config, [])
    return notes or []


# --- boot counters, counters and bdSeq that restart ----------------------------------------------


def test_a_boot_counter_reused_by_a_reconnect_without_reboot_is_the_device_back() -> None:
    # A boot counter counts reboots, not connections (the README's own advice): a device that
    # loses its network and reconnects (MQTT 5.0 3.1.2.4, Clean Start) keeps it. Birth 7, will 7,
    # birth 7 two minutes later: the device is up.
    status, seen = final([ev("birth", 0, 7), ev("will", 60_000, 7), ev("birth", 180_000, 7)])
    assert status == "online"
    assert seen == ["online", "offline", "online"]


def test_sparkplug_node_restarting_bdseq_at_0_is_online_and_its_old_death_is_ignored() -> None:
    # Sparkplug 3.0 [tck-id-topics-nbirth-bdseq-matching]: the NBIRTH's bdSeq matches the one in
    # the Will (NDEATH) of the same CONNECT; a host marks the node offline on an NDEATH only if
    # its bdSeq matches the current NBIRTH's. Nodes without a persisted counter start again at 0
    # (srad, SparkplugNet: go-sparkplugb v0.3.2 release notes). Timestamps are in every payload.
    s8 = SessionOrder.SERIAL8
    events = [
        ev("birth", 0, 37, s8, event_time=1_000),
        ev("birth", 30_000, 0, s8, event_time=31_000),  # power loss, firmware without a counter
        ev("will", 45_000, 37, s8, event_time=1_000),  # the old connection's NDEATH, late
        ev("activity", 50_000, None, s8, event_time=51_000),  # NDATA
    ]
    assert final(events) == ("online", ["online"])
    # ...and its own later NDEATH (bdSeq 0) does take it offline: it used to be dropped as stale.
    status, _ = final([*events, ev("will", 90_000, 0, s8, event_time=31_000)])
    assert status == "offline"


def test_sparkplug_bdseq_restart_without_timestamps_follows_the_nbirth() -> None:
    s8 = SessionOrder.SERIAL8
    status, _ = final(
        [ev("birth", 0, 37, s8), ev("birth", 30_000, 0, s8), ev("will", 45_000, 37, s8)]
    )
    assert status == "online"


def test_a_counter_that_restarts_after_its_will_is_the_device_back() -> None:
    # A firmware update that loses the counter: will 41, then birth 1.
    status, _ = final([ev("birth", 0, 41), ev("will", 60_000, 41), ev("birth", 120_000, 1)])
    assert status == "online"


def test_a_counter_that_restarts_with_device_times_is_decided_by_the_times() -> None:
    events = [
        ev("birth", 0, 41, event_time=1_000),
        ev("birth", 20_000, 1, event_time=21_000),  # rebooted fast; 41's will still to come
        ev("will", 45_000, 41, event_time=1_000),
    ]
    assert final(events)[0] == "online"


# --- timestamps: resets and broker nodes that disagree ------------------------------------------


def test_timestamp_token_after_a_real_time_clock_reset_is_the_new_connection() -> None:
    ts = SessionOrder.TIMESTAMP
    # The device's clock went back to 1970 after a battery change: its new token is lower.
    status, _ = final(
        [
            ev("birth", 0, 1_700_000_000_000, ts),
            ev("birth", 10_000, 5_000, ts),
            ev("will", 45_000, 1_700_000_000_000, ts),
        ]
    )
    assert status == "online"


def test_emqx_connected_at_from_two_broker_nodes_whose_clocks_disagree() -> None:
    # EMQX client events carry the broker's connected_at; in a cluster the takeover can land on a
    # node whose clock is behind. AWS IoT's lifecycle events say the same of any such source:
    # "Lifecycle messages might be sent out of order. You might receive duplicate messages."
    ts = SessionOrder.TIMESTAMP
    events = [
        ev("connected", 0, 1_000_000, ts),
        ev("connected", 5_000, 999_000, ts),  # node 2, clock 1 s behind: the newest connection
        ev("disconnected", 5_010, 1_000_000, ts, reason="takenover"),
    ]
    assert final(events)[0] == "online"
    assert final([*events, ev("disconnected", 60_000, 999_000, ts, reason="normal")])[0] == (
        "offline"
    )


# --- token-less devices --------------------------------------------------------------------------


def test_tokenless_power_cycle_after_hours_up_measures_the_keepalive_from_the_latest_birth() -> (
    None
):
    # MQTT 5.0 3.1.2.10: the server publishes the will once 1.5 x keepalive passed without a
    # packet. The old connection's will comes 20 s after the new birth, the rule is 60 s: the
    # will is the previous connection's, whatever happened hours before.
    config = PresenceConfig(offline_grace_ms=GRACE, tokenless_min_will_delay_ms=60_000)
    events = [ev("birth", 0), ev("birth", 10 * HOUR), ev("will", 10 * HOUR + 20_000)]
    assert final(events, config) == ("online", ["online"])


def test_a_retained_birth_replayed_on_resubscribe_does_not_revive_a_timed_out_device() -> None:
    # MQTT 5.0 3.3.1.3: a message sent because of a new subscription has RETAIN set; one sent
    # because of an established subscription has it cleared. The replay is the broker's memory.
    config = PresenceConfig(offline_grace_ms=GRACE, inactivity_timeout_ms=60_000)
    events = [ev("birth", 0), ev("birth", 200_000, retain=True)]
    assert final(events, config) == ("offline", ["online", "offline"])
    tokened = [ev("birth", 0, 3), ev("birth", 200_000, 3, retain=True)]
    assert final(tokened, config) == ("offline", ["online", "offline"])


def test_a_retained_birth_is_the_first_status_of_a_device_never_seen() -> None:
    assert final([ev("birth", 0, retain=True)]) == ("online", ["online"])


# --- opaque ids ----------------------------------------------------------------------------------


def test_an_opaque_will_that_overtakes_its_birth_leaves_the_device_offline() -> None:
    # A broker-cluster race: the will of connection "b" arrives before b's birth (go-sparkplugb
    # v0.3.2: "MQTT orders messages per topic only, so a will can overtake a rebirth").
    op = SessionOrder.OPAQUE
    events = [ev("birth", 0, "a", op), ev("will", 5_000, "b", op), ev("birth", 5_010, "b", op)]
    assert final(events)[0] == "offline"


def test_a_redelivered_birth_of_an_old_opaque_session_never_revives_a_dead_device() -> None:
    op = SessionOrder.OPAQUE
    config = PresenceConfig(offline_grace_ms=GRACE, known_sessions=1)  # memory forgets at once
    events = [
        ev("birth", 0, "a", op),
        ev("birth", 10_000, "b", op),
        ev("will", 20_000, "b", op),
        ev("birth", 90_000, "a", op, dup=True),  # a bridge's redelivery, long after
    ]
    assert final(events, config)[0] == "offline"


# --- redelivery ----------------------------------------------------------------------------------


def test_tokenless_redelivered_will_after_a_new_birth_does_not_take_the_device_down() -> None:
    # Two bridges on a shared subscription: the first got the old will and died before its
    # PUBACK; the broker sends it again, DUP set (MQTT 5.0 3.3.1.1 and 4.4), to the second, after
    # the device's new birth went through.
    events = [
        ev("birth", 0, topic="d/availability"),
        ev("will", 60_000, topic="d/availability"),
        ev("birth", 90_000, topic="d/availability"),
        ev("will", 90_500, topic="d/availability", dup=True),
    ]
    assert final(events)[0] == "online"


def test_tokenless_redelivered_birth_does_not_revive_a_dead_device() -> None:
    events = [ev("birth", 0), ev("will", 60_000), ev("birth", 90_000, dup=True)]
    assert final(events)[0] == "offline"


def test_a_record_processed_twice_is_one_message_but_a_device_saying_it_twice_is_two() -> None:
    # A worker that restarts reads records again: same record, same receive time. A device's
    # own QoS 1 retry reaches us without DUP (the broker does not forward it, MQTT 5.0 3.3.1.1).
    birth, will = ev("birth", 0, topic="t"), ev("will", 60_000, topic="t")
    assert "processed twice" in " ".join(why([birth, will, birth, will]))
    assert final([birth, will, ev("birth", 90_000, topic="t")])[0] == "online"


def test_fingerprints_are_wide_enough_that_no_real_will_is_called_a_repeat() -> None:
    # 32-bit fingerprints collide after about 77,000 messages with even odds (birthday bound);
    # a fleet sends that many in seconds.
    prints = {fingerprint(ev("will", 0, i, event_time=i)) for i in range(200_000)}
    assert len(prints) == 200_000
    assert max(prints) >= 2**40


# --- one clock -----------------------------------------------------------------------------------


def test_activity_from_a_node_whose_clock_is_an_hour_slow_still_revives_it() -> None:
    # Device time is compared only with the same device's times, never with receive time.
    slow = -HOUR
    events = [
        ev("birth", HOUR, 1, event_time=HOUR + slow),
        ev("will", HOUR + 60_000, 1, event_time=HOUR + slow),
        ev("activity", HOUR + 600_000, None, event_time=HOUR + 590_000 + slow),
    ]
    assert final(events)[0] == "online"


def test_late_data_sent_before_the_death_does_not_revive_a_node() -> None:
    fast = HOUR
    events = [
        ev("birth", 0, 1, event_time=fast),
        ev("will", 60_000, 1, event_time=50_000 + fast),
        ev("activity", 70_000, None, event_time=40_000 + fast),  # sent before the death
        ev("activity", 80_000, None, event_time=45_000 + fast, dup=True),  # a redelivery
    ]
    assert final(events)[0] == "offline"


def test_the_state_remembers_the_fingerprint_and_the_receive_time_of_each_message() -> None:
    birth = ev("birth", 1_234, 7, event_time=99)
    state, _ = transition(None, birth, CONFIG)
    assert state is not None
    assert state.recent == (fingerprint(birth), 1_234)


# --- damping that always runs and lets go ------------------------------------------------------


def flaps(start: int, count: int, every: int = 2_000) -> list[Input]:
    """An agent that drops and comes back every `every` ms (field report A)."""
    out: list[Input] = []
    for i in range(count):
        t = start + i * every
        out += [ev("birth", t, 2 * i + 1), ev("will", t + every // 2, 2 * i + 1)]
    return out


def test_a_day_of_max_suppression_is_refused_when_loaded_not_an_overflow_at_the_first_drop() -> (
    None
):
    # RFC 2439 section 4.2: the ceiling is reuse x 2^(max suppress / half-life); a day over a
    # 60 s half-life is 2^1440, beyond any float.
    from mqtt_presence.settings import ConfigError, presence_config  # noqa: PLC0415

    with pytest.raises(ConfigError, match="raise half_life_ms to at least 1350000"):
        presence_config({"presence": {"damping": {"max_suppress_ms": 86_400_000}}})
    day = PresenceConfig(damping=DampingConfig(max_suppress_ms=86_400_000, half_life_ms=1_350_000))
    assert final(flaps(0, 10), day)[0] == "offline"


def test_a_flapper_that_ends_down_says_since_its_last_drop() -> None:
    events = flaps(0, 10)  # last drop at 19_000
    state: DeviceState | None = None
    out: list[StatusChange] = []
    for inp in [*events, Tick(FAR)]:
        state, changes = transition(state, inp, CONFIG)
        out += changes
    assert out[-1].status.value == "offline"
    assert out[-1].since == 19_000


def test_a_flapper_that_is_stably_up_again_is_shown_online_within_half_a_minute() -> None:
    # Field report A's agent stopped flapping and stayed up: it used to be shown offline for
    # 266 s more, until the penalty decayed.
    events = [*flaps(0, 10), ev("birth", 30_000, 99)]
    state: DeviceState | None = None
    out: list[StatusChange] = []
    for inp in [*events, *(Tick(t) for t in range(31_000, 400_000, 1_000))]:
        state, changes = transition(state, inp, CONFIG)
        out += changes
    assert out[-1].status.value == "online"
    assert not out[-1].flapping
    assert out[-1].decided_at <= 30_000 + CONFIG.damping.release_when_up_ms
    assert out[-1].since == 30_000
