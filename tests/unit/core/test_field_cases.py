"""One test per rule of the presence core, each named after the field case it covers."""

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
    Reason,
    SessionOrder,
    Status,
    StatusChange,
    Tick,
    step,
    transition,
)

GRACE = 5_000
CONFIG = PresenceConfig(offline_grace_ms=GRACE)


def ev(
    kind: str,
    t: int,
    session: int | str | None = None,
    *,
    order: SessionOrder = SessionOrder.COUNTER,
    device: str = "cam-1",
    **extra: object,
) -> ConnectionEvent:
    return ConnectionEvent(
        device=device,
        kind=EventKind(kind),
        received_at=t,
        session=session,
        session_order=order,
        **extra,  # type: ignore[arg-type]
    )


def run(
    inputs: Iterable[Input], config: PresenceConfig = CONFIG, state: DeviceState | None = None
) -> tuple[DeviceState | None, list[StatusChange]]:
    out: list[StatusChange] = []
    for inp in inputs:
        state, changes = transition(state, inp, config)
        out.extend(changes)
    return state, out


def statuses(changes: list[StatusChange]) -> list[tuple[str, bool]]:
    return [(c.status.value, c.flapping) for c in changes]


def test_first_birth_is_online_at_once_with_version_1() -> None:
    _, out = run([ev("birth", 1000, 1)])
    assert len(out) == 1
    c = out[0]
    assert (c.status, c.version, c.since, c.reason, c.session, c.verified) == (
        Status.ONLINE,
        1,
        1000,
        Reason.BIRTH,
        1,
        True,
    )


def test_clean_start_reconnect_within_keepalive_old_will_after_new_birth_stays_online() -> None:
    # Field report B: power cycle, Clean Start = 1; the old session's will comes 1.5 x keepalive
    # later, after the new session's birth. The camera is running: it must stay online.
    _, out = run([ev("birth", 0, 1), ev("birth", 8_000, 2), ev("will", 45_000, 1), Tick(120_000)])
    assert statuses(out) == [("online", False)]


def test_power_off_longer_than_keepalive_gives_offline_then_online_in_order() -> None:
    _, out = run([ev("birth", 0, 1), ev("will", 45_000, 1), Tick(60_000), ev("birth", 90_000, 2)])
    assert statuses(out) == [("online", False), ("offline", False), ("online", False)]
    assert [c.since for c in out] == [0, 45_000, 90_000]
    assert [c.version for c in out] == [1, 2, 3]


def test_qos1_duplicate_birth_and_will_change_nothing() -> None:
    _, once = run([ev("birth", 0, 1, event_time=0), ev("will", 10_000, 1), Tick(30_000)])
    _, twice = run(
        [
            ev("birth", 0, 1, event_time=0),
            ev("birth", 5, 1, event_time=0, dup=True),
            ev("will", 10_000, 1),
            ev("will", 10_010, 1, dup=True),
            Tick(30_000),
        ]
    )
    assert statuses(once) == statuses(twice) == [("online", False), ("offline", False)]
    assert [c.version for c in twice] == [1, 2]


def test_will_before_its_own_birth_closes_the_session_and_late_birth_cannot_revive_it() -> None:
    # Cluster race: the will of session 2 overtakes its birth on another broker node.
    _, out = run([ev("birth", 0, 1), ev("will", 1_000, 2), ev("birth", 1_200, 2), Tick(10_000)])
    assert statuses(out) == [("online", False), ("offline", False)]
    assert out[-1].session == 2


def test_a_birth_after_the_will_with_the_same_boot_counter_is_the_device_back() -> None:
    # A boot counter stays the same across reconnects without a reboot: birth 7, will 7 (the
    # network went), birth 7 two minutes later. The device is up (it used to stay offline).
    _, out = run([ev("birth", 0, 7), ev("will", 1_000, 7), Tick(7_000), ev("birth", 120_000, 7)])
    assert statuses(out) == [("online", False), ("offline", False), ("online", False)]


def test_a_redelivered_birth_of_a_closed_session_does_not_revive_it() -> None:
    # The same birth again with DUP set (MQTT 5.0 3.3.1.1) is a redelivery, not a reconnect.
    _, out = run(
        [ev("birth", 0, 7), ev("will", 1_000, 7), Tick(7_000), ev("birth", 9_000, 7, dup=True)]
    )
    assert statuses(out) == [("online", False), ("offline", False)]


def test_sparkplug_bdseq_wraps_at_255_with_serial_arithmetic() -> None:
    s8 = SessionOrder.SERIAL8
    _, out = run(
        [
            ev("birth", 0, 254, order=s8),
            ev("birth", 100, 255, order=s8),
            ev("birth", 200, 0, order=s8),
            ev("will", 300, 255, order=s8),
            ev("will", 400, 254, order=s8),
            Tick(20_000),
        ]
    )
    # 0 is newer than 255 (it wrapped): the wills of 255 and 254 are stale.
    assert statuses(out) == [("online", False)]
    assert (
        run([ev("birth", 0, 0, order=s8), ev("will", 100, 0, order=s8), Tick(20_000)])[1][-1].status
        is Status.OFFLINE
    )


def test_opaque_session_ids_compare_by_equality_only() -> None:
    op = SessionOrder.OPAQUE
    _, out = run(
        [
            ev("birth", 0, "a", order=op),
            ev("birth", 100, "b", order=op),
            ev("will", 200, "a", order=op),
            Tick(20_000),
        ]
    )
    assert statuses(out) == [("online", False)]  # "a" was replaced by "b": its will is stale
    _, out = run([ev("birth", 0, "a", order=op), ev("will", 200, "zzz", order=op), Tick(20_000)])
    assert statuses(out) == [("online", False)]  # unknown id while "a" is open: not trusted
    _, out = run([ev("birth", 0, "a", order=op), ev("will", 200, "a", order=op), Tick(20_000)])
    assert statuses(out)[-1] == ("offline", False)


def test_short_reboot_within_grace_period_never_reaches_downstream() -> None:
    _, out = run([ev("birth", 0, 1), ev("will", 10_000, 1), ev("birth", 12_000, 2), Tick(60_000)])
    assert statuses(out) == [("online", False)]
    assert out[0].version == 1


def test_offline_is_emitted_when_grace_expires_with_the_will_time_as_since() -> None:
    _, out = run([ev("birth", 0, 1), ev("will", 10_000, 1), Tick(14_999)])
    assert statuses(out) == [("online", False)]
    _, out = run([ev("birth", 0, 1), ev("will", 10_000, 1), Tick(15_000)])
    assert out[-1].status is Status.OFFLINE
    assert (out[-1].since, out[-1].decided_at, out[-1].reason) == (10_000, 15_000, Reason.WILL)


def test_graceful_offline_has_its_own_reason() -> None:
    _, out = run([ev("birth", 0, 1), ev("offline", 1_000, 1), Tick(10_000)])
    assert out[-1].reason is Reason.GRACEFUL_OFFLINE


def test_plain_text_devices_without_tokens_work_and_are_marked_unverified() -> None:
    _, out = run([ev("birth", 0), ev("will", 1_000), Tick(10_000), ev("birth", 20_000)])
    assert statuses(out) == [("online", False), ("offline", False), ("online", False)]
    assert not any(c.verified for c in out)


def test_retained_online_replayed_on_subscriber_reconnect_does_not_revive_offline_device() -> None:
    # Field report B: the birth is retained, the will is not; the retained "online" comes back
    # every time the platform reconnects, though the camera is off.
    _, out = run(
        [
            ev("birth", 0),
            ev("will", 1_000),
            Tick(10_000),
            ev("birth", 20_000, retain=True),
            Tick(40_000),
        ]
    )
    assert statuses(out) == [("online", False), ("offline", False)]


def test_token_less_stale_will_is_corrected_by_the_next_sign_of_life() -> None:
    _, out = run(
        [
            ev("birth", 0),
            ev("birth", 8_000),
            ev("will", 9_000),
            ev("activity", 11_000),
            Tick(60_000),
        ]
    )
    assert statuses(out) == [("online", False)]


def test_token_less_will_sooner_than_the_keepalive_after_the_birth_is_stale() -> None:
    config = PresenceConfig(offline_grace_ms=GRACE, tokenless_min_will_delay_ms=60_000)
    # power cycle: new birth at 8 s, the old connection's will 45 s later
    _, out = run([ev("birth", 0), ev("birth", 8_000), ev("will", 53_000), Tick(120_000)], config)
    assert statuses(out) == [("online", False)]
    # a will a full keepalive after the birth is this connection's own
    _, out = run([ev("birth", 0), ev("will", 95_000), Tick(120_000)], config)
    assert statuses(out) == [("online", False), ("offline", False)]


@pytest.mark.parametrize("reason", ["takenover", "takeovered", "discarded"])
def test_emqx_takenover_disconnect_is_not_an_offline(reason: str) -> None:
    # EMQX 5.x: takenover / discarded; 4.4 spells the first takeovered (emqx-docs release-4.4,
    # en_US/rule/rule-engine_field.md).
    ts = SessionOrder.TIMESTAMP
    _, out = run(
        [
            ev("connected", 0, 1_000, order=ts),
            ev("disconnected", 5_000, 1_000, order=ts, reason=reason),
            ev("connected", 5_001, 5_000, order=ts),
            Tick(60_000),
        ]
    )
    assert statuses(out) == [("online", False)]


def test_lost_will_is_caught_by_the_inactivity_timeout() -> None:
    config = PresenceConfig(offline_grace_ms=GRACE, inactivity_timeout_ms=60_000)
    _, out = run([ev("birth", 0, 1), ev("activity", 30_000), Tick(89_999)], config)
    assert statuses(out) == [("online", False)]
    _, out = run([ev("birth", 0, 1), ev("activity", 30_000), Tick(95_000)], config)
    assert out[-1].status is Status.OFFLINE
    assert (out[-1].reason, out[-1].since, out[-1].verified) == (
        Reason.INACTIVITY_TIMEOUT,
        90_000,
        False,
    )


def test_flapping_agent_every_second_for_a_minute_gives_a_handful_of_changes() -> None:
    # Field report A: agent A goes online and offline over and over; the CMDB melts.
    inputs: list[Input] = []
    for i in range(60):
        inputs += [ev("birth", i * 1_000, i + 1), ev("will", i * 1_000 + 500, i + 1)]
    inputs += [ev("birth", 60_000, 1000), Tick(60_000 + 600_000)]
    _, out = run(inputs)
    assert len(out) <= 4
    assert statuses(out) == [("online", False), ("offline", True), ("online", False)]
    assert out[1].reason is Reason.DAMPED
    assert out[-1].reason is Reason.RELEASED
    assert sum(c.suppressed for c in out) + len(out) >= 120


def test_damped_device_is_released_no_later_than_max_suppress_after_its_last_flap() -> None:
    damping = DampingConfig(half_life_ms=60_000, max_suppress_ms=300_000)
    config = PresenceConfig(offline_grace_ms=GRACE, damping=damping)
    inputs: list[Input] = []
    for i in range(200):  # 200 flaps push the penalty to its ceiling
        inputs += [ev("birth", i * 2_000, i + 1), ev("will", i * 2_000 + 1_000, i + 1)]
    last_flap = 199 * 2_000 + 1_000
    inputs += [ev("birth", last_flap + 1_000, 10_000), Tick(last_flap + 300_000)]
    _, out = run(inputs, config)
    assert out[-1].reason is Reason.RELEASED
    assert out[-1].decided_at <= last_flap + 300_000


def test_explain_says_why_a_stale_will_was_dropped() -> None:
    state, _ = transition(None, ev("birth", 0, 1), CONFIG)
    state, _ = transition(state, ev("birth", 10, 2), CONFIG)
    _, _, notes = step(state, ev("will", 20, 1), CONFIG, [])
    assert notes is not None
    assert any("stale will" in n and "not the current session 2" in n for n in notes)


def test_tick_for_unknown_device_is_nothing() -> None:
    assert transition(None, Tick(1_000), CONFIG) == (None, [])


@pytest.mark.parametrize(
    "bad",
    [
        {"offline_grace_ms": -1},
        {"inactivity_timeout_ms": 0},
        {"known_sessions": 0},
    ],
)
def test_invalid_config_is_refused_with_a_clear_error(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        PresenceConfig(**bad)  # type: ignore[arg-type]


def test_damping_config_needs_reuse_below_suppress() -> None:
    with pytest.raises(ValueError, match="reuse < suppress"):
        DampingConfig(reuse=5_000, suppress=3_000)
