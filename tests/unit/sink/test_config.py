"""The sink's settings and what it says of a DSN: the DSN from a flag, the environment or a file,
and never its password in a log line or an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtt_presence.cli import app
from mqtt_presence.settings import ConfigError
from mqtt_presence.sink.config import load_sink_settings
from mqtt_presence.sink.postgres import Statements, scrub, where

SECRET = "pa55-w0rd-never-shown"
DSN = f"host=db.example port=5433 dbname=cmdb user=sink password={SECRET}"


def test_the_dsn_comes_from_the_environment_a_flag_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRESENCE_SINK_DSN", DSN)
    settings = load_sink_settings({}, kafka_bootstrap="k:9092")
    assert settings.dsn is not None
    assert settings.dsn.get_secret_value() == DSN
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    monkeypatch.delenv("PRESENCE_SINK_DSN")
    secret_file = tmp_path / "dsn"
    secret_file.write_text(DSN + "\n")
    from_file = load_sink_settings({"sink": {"dsn_file": str(secret_file)}})
    assert from_file.dsn is not None
    assert from_file.dsn.get_secret_value() == DSN
    with pytest.raises(ConfigError, match="give dsn or dsn_file, not both") as both:
        load_sink_settings({}, dsn=DSN, dsn_file=secret_file)
    assert SECRET not in str(both.value)


def test_without_a_dsn_or_with_a_bad_table_name_the_error_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="no database: pass --dsn, set PRESENCE_SINK_DSN"):
        load_sink_settings({})
    with pytest.raises(ConfigError, match=r"a plain name or schema\.name") as bad:
        load_sink_settings({}, dsn=DSN, table="devices; DROP TABLE x")
    assert SECRET not in str(bad.value)
    assert load_sink_settings({}, dsn=DSN, table="cmdb.devices").table == "cmdb.devices"


def test_what_is_logged_of_a_dsn_is_host_port_and_database() -> None:
    assert where(DSN) == "db.example:5433/cmdb"
    assert where(f"postgresql://sink:{SECRET}@db.example/cmdb") == "db.example/cmdb"
    assert where("dbname=cmdb") == "the local socket/cmdb"
    assert SECRET not in where(f"postgresql://sink:{SECRET}%zz@h/db")
    assert scrub(f'invalid percent-encoded token: "{SECRET}%zz"') == (
        'invalid percent-encoded token: "…"'
    )


def test_the_cli_refuses_a_missing_dsn_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRESENCE_SINK_DSN", raising=False)
    result = CliRunner().invoke(app, ["sink", "postgres", "--kafka-bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert isinstance(result.exception, (ConfigError, SystemExit))


def test_the_statements_name_the_tables_and_the_newer_version_rule() -> None:
    statements = Statements("cmdb.devices")
    assert statements.names == {
        "current": ("cmdb", "devices"),
        "history": ("cmdb", "devices_history"),
    }
    upsert = statements.upsert.as_string(None)
    assert upsert.startswith('INSERT INTO "cmdb"."devices" AS d (')
    assert "FROM unnest(%s::text[], %s::text[], %s::boolean[]" in upsert
    assert upsert.endswith("WHERE d.version < EXCLUDED.version")
    assert "ON CONFLICT (device, version) DO NOTHING" in statements.append_history.as_string(None)
