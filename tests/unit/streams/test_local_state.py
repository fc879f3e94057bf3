"""Which local table data belongs to the Kafka a worker is connected to (no Kafka needed)."""

from __future__ import annotations

from pathlib import Path

from mqtt_presence.streams.local_state import NOTE, KafkaIdentity, prepare_table_dir, stale_because

NOW = KafkaIdentity("cluster-A", "app-device-state-changelog", "topic-1")


def with_data(tabledir: Path) -> Path:
    (tabledir / "device-state-0.db").mkdir(parents=True)
    return tabledir


def test_no_data_is_never_stale_and_gets_a_note(tmp_path: Path) -> None:
    assert stale_because(tmp_path / "tables", NOW) is None
    assert not prepare_table_dir(tmp_path / "tables", NOW)
    assert (tmp_path / "tables" / NOTE).exists()


def test_data_of_the_same_kafka_is_kept(tmp_path: Path) -> None:
    tables = with_data(tmp_path / "tables")
    prepare_table_dir(tables, NOW)  # first start of this version: no note yet -> rebuilt once
    (tables / "device-state-0.db").mkdir()
    assert not prepare_table_dir(tables, NOW)
    assert (tables / "device-state-0.db").is_dir()


def test_another_cluster_a_recreated_changelog_or_no_note_mean_rebuild(tmp_path: Path) -> None:
    tables = with_data(tmp_path / "tables")
    assert stale_because(tables, NOW) == "it does not say which Kafka it belongs to"
    prepare_table_dir(tables, NOW)
    (tables / "device-state-0.db").mkdir()
    other = KafkaIdentity("cluster-B", NOW.changelog_topic, "topic-9")
    assert "belongs to Kafka cluster cluster-A, this is cluster-B" in str(
        stale_because(tables, other)
    )
    anew = KafkaIdentity(NOW.cluster_id, NOW.changelog_topic, "topic-2")
    assert "was created anew" in str(stale_because(tables, anew))
    assert prepare_table_dir(tables, anew)
    assert not (tables / "device-state-0.db").exists()


def test_a_note_written_before_the_changelog_existed_matches_once_it_does(tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    prepare_table_dir(tables, KafkaIdentity("cluster-A", NOW.changelog_topic, None))
    (tables / "device-state-0.db").mkdir()
    assert stale_because(tables, NOW) is None
