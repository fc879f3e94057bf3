"""Device classes and sleep: one fleet of mains cameras (a short grace), battery sensors that sleep
for an hour, and flaky gateways, each with its own settings; a sleeping device is not offline.

Sources: Homie 4.0 `$state` (https://github.com/homieiot/convention/blob/v4.0.0/convention.md):
"sleeping: this is the state the device is in when the device is sleeping. You have to send this
message before sleeping." MQTT 5.0 section 4.7 (topic filters: `+` one level, `#` the rest and
the parent level; 4.7.2: topics starting with `$` do not match filters starting with a
wildcard), checked against paho-mqtt's own matcher.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_presence.core import (
    ConnectionEvent,
    DeviceState,
    EventKind,
    Input,
    PresenceConfig,
    StatusChange,
    Tick,
    decode_state,
    encode_state,
    next_deadline,
    transition,
)
from mqtt_presence.core.config import ClassMatch, DeviceClass, config_of, topic_matches
from mqtt_presence.settings import ConfigError, presence_config

HOUR = 3_600_000
BASE = PresenceConfig(offline_grace_ms=5_000)


def klass(name: str, match: ClassMatch, **settings: object) -> DeviceClass:
    return DeviceClass(name=name, match=match, config=PresenceConfig(**settings))  # type: ignore[arg-type]


FLEET = PresenceConfig(
    offline_grace_ms=5_000,
    classes=(
        klass("cameras", ClassMatch(device="cam-*"), offline_grace_ms=1_000),
        klass(
            "sensors",
            ClassMatch(profile="homie", topic="homie/+/$state"),
            inactivity_timeout_ms=HOUR,
            sleeps=True,
        ),
    ),
)


def ev(
    device: str,
    kind: str,
    t: int,
    *,
    source: str = "json",
    topic: str | None = None,
    **extra: object,
) -> ConnectionEvent:
    return ConnectionEvent(
        device=device,
        kind=EventKind(kind),
        received_at=t,
        source=source,
        topic=topic,
        **extra,  # type: ignore[arg-type]
    )


def run(inputs: Iterable[Input], config: PresenceConfig = FLEET) -> list[StatusChange]:
    state: DeviceState | None = None
    out: list[StatusChange] = []
    for inp in inputs:
        state, changes = transition(state, inp, config)
        out += changes
    return out


def shown(changes: list[StatusChange]) -> list[tuple[str, int]]:
    return [("sleeping" if c.sleeping else c.status.value, c.since) for c in changes]


def test_a_camera_goes_offline_after_its_own_grace_and_another_device_after_the_base_one() -> None:
    cam = run([ev("cam-7", "birth", 0), ev("cam-7", "will", 10_000), Tick(11_000)])
    assert shown(cam) == [("online", 0), ("offline", 10_000)]
    assert cam[-1].decided_at == 11_000  # 1 s grace
    other = run([ev("door-1", "birth", 0), ev("door-1", "will", 10_000), Tick(11_000)])
    assert shown(other) == [("online", 0)]  # the base 5 s grace is still running


def test_a_sleepy_sensor_is_sleeping_after_its_inactivity_timeout_not_offline() -> None:
    topic = "homie/th-3/$state"
    out = run(
        [
            ev("th-3", "birth", 0, source="homie", topic=topic),
            Tick(HOUR - 1),
            Tick(HOUR),
        ]
    )
    assert shown(out) == [("online", 0), ("sleeping", HOUR)]
    assert out[-1].status.value == "offline"  # consumers of v1 records read it as offline
    assert out[-1].reason.value == "inactivity_timeout"


def test_a_device_keeps_its_class_when_its_telemetry_fits_no_class() -> None:
    state: DeviceState | None = None
    for inp in (
        ev("th-3", "birth", 0, source="homie", topic="homie/th-3/$state"),
        ev("th-3", "activity", 1_000, source="activity", topic="sensors/th-3/temperature"),
    ):
        state, _ = transition(state, inp, FLEET)
    assert state is not None
    assert state.device_class == "sensors"
    assert next_deadline(state, FLEET) == 1_000 + HOUR  # the class's inactivity timeout


def test_an_event_that_fits_another_class_moves_the_device() -> None:
    state: DeviceState | None = None
    for inp in (
        ev("cam-1", "birth", 0),
        ev("cam-1", "birth", 1_000, source="homie", topic="homie/cam-1/$state"),
    ):
        state, _ = transition(state, inp, FLEET)
    assert state is not None
    assert state.device_class == "cameras"  # the first class that fits


def test_homie_sleeping_is_sleeping_whatever_the_class_and_a_will_after_it_is_a_death() -> None:
    out = run(
        [
            ev("pump", "birth", 0, source="homie"),
            ev("pump", "offline", 10_000, source="homie", sleeping=True),
            Tick(16_000),
            ev("pump", "will", 20_000, source="homie"),
            Tick(26_000),
        ],
        BASE,
    )
    assert shown(out) == [("online", 0), ("sleeping", 10_000), ("offline", 20_000)]


def test_a_graceful_goodbye_of_a_sleeper_is_sleep_and_its_will_is_death() -> None:
    sleeper = PresenceConfig(offline_grace_ms=0, sleeps=True)
    assert shown(run([ev("s", "birth", 0), ev("s", "offline", 5)], sleeper))[-1] == (
        "sleeping",
        5,
    )
    assert shown(run([ev("s", "birth", 0), ev("s", "will", 5)], sleeper))[-1] == ("offline", 5)


def test_waking_every_minute_is_not_flapping() -> None:
    # a sensor that wakes, reports and sleeps again every minute would be damped as a flapper if
    # each sleep counted as a disconnect (three within a minute suppress by default)
    sleeper = PresenceConfig(offline_grace_ms=0, sleeps=True)
    inputs: list[Input] = []
    for i in range(20):
        inputs += [ev("s", "birth", i * 20_000), ev("s", "offline", i * 20_000 + 100)]
    out = run(inputs, sleeper)
    assert not any(c.flapping for c in out)
    assert len(out) == 40


def test_a_class_no_event_fits_changes_nothing() -> None:
    never = PresenceConfig(
        offline_grace_ms=5_000,
        classes=(klass("never", ClassMatch(device="nothing-*"), offline_grace_ms=1),),
    )
    inputs: list[Input] = [ev("d", "birth", 0), ev("d", "will", 100), Tick(10_000)]
    assert run(inputs, never) == run(inputs, BASE)


@given(st.lists(st.sampled_from(["birth", "will", "offline", "activity"]), max_size=30))
def test_classes_that_fit_nothing_are_inert(kinds: list[str]) -> None:
    never = PresenceConfig(
        offline_grace_ms=5_000,
        classes=(klass("never", ClassMatch(profile="sparkplug"), offline_grace_ms=1),),
    )
    inputs: list[Input] = [ev("d", k, i * 700) for i, k in enumerate(kinds)] + [Tick(10**9)]
    assert run(inputs, never) == run(inputs, BASE)


def test_a_state_written_before_classes_and_sleep_still_decodes() -> None:
    fields = json.loads(encode_state(DeviceState(device="d", version=3)))
    # the five fields added last (sleeping, observed_sleeping, device_class, cause,
    # observed_cause) are what an older worker's changelog lacks
    state = decode_state(json.dumps(fields[:-5]).encode())
    assert (state.version, state.sleeping, state.device_class, state.cause) == (
        3,
        False,
        None,
        None,
    )


# --- topic filters, against paho-mqtt's matcher -------------------------------------------------

LEVEL = st.sampled_from(["a", "b", "", "$SYS", "x y"])
FILTER_LEVEL = st.sampled_from(["a", "b", "", "+", "$SYS"])


@st.composite
def filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=1, max_size=4))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@given(filters(), st.lists(LEVEL, min_size=1, max_size=5).map("/".join))
def test_topic_filters_match_as_paho_matches_them(topic_filter: str, topic: str) -> None:
    assert topic_matches(topic_filter, topic) == mqtt.topic_matches_sub(topic_filter, topic)


# --- loading classes from the config file -------------------------------------------------------


def load(text: str) -> PresenceConfig:
    return presence_config(tomllib.loads(text), "presence.toml")


def test_a_class_overrides_only_what_it_names_damping_key_by_key() -> None:
    config = load(
        """
        [presence]
        offline_grace_ms = 7000
        damping = { half_life_ms = 120000, max_suppress_ms = 600000 }

        [[presence.classes]]
        name = "gateways"
        match = { device = "gw-*" }
        damping = { suppress = 2000 }
        """
    )
    gw = config_of(config, "gateways")
    assert gw.offline_grace_ms == 7_000
    assert (gw.damping.half_life_ms, gw.damping.suppress) == (120_000, 2_000.0)
    assert config_of(config, "renamed-since") is config  # a class gone falls back to the base


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('match = { device = "x*" }', "#1 needs a name"),
        ('name = "c"', "needs a match table"),
        ('name = "c"\nmatch = {}', "at least one of device, profile, topic"),
        ('name = "c"\nmatch = { profile = "homey" }', "not a bridge profile; known: activity"),
        ('name = "c"\nmatch = { topic = "a/#/b" }', "not a valid MQTT topic filter"),
        ('name = "c"\nmatch = { device = "x" }\noffline_grace = 1', "offline_grace"),
        ('name = "c"\nmatch = { device = "x" }\noffline_grace_ms = -1', "must be >= 0"),
    ],
)
def test_a_bad_class_is_a_clear_error_naming_it(table: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(f"[[presence.classes]]\n{table}\n")
    assert says in str(err.value)
    assert "presence.toml: [[presence.classes]] #1" in str(err.value)


def test_two_classes_of_one_name_are_refused() -> None:
    with pytest.raises(ConfigError, match="unique"):
        load(
            '[[presence.classes]]\nname = "a"\nmatch = { device = "x" }\n'
            '[[presence.classes]]\nname = "a"\nmatch = { device = "y" }\n'
        )


def test_the_readme_example_loads() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    start = readme.index("```toml\n[[presence.classes]]")
    example = readme[start + len("```toml\n") : readme.index("```", start + 8)]
    config = load(example)
    assert [c.name for c in config.classes] == ["cameras", "battery-sensors", "gateways"]
