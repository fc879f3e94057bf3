"""`presence bench accuracy --json`: one document a machine can read, valid against the schema
the command publishes, with `--save` and `--compare` to keep and compare results."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from typer.testing import CliRunner

from mqtt_presence.cli import app

RUN = ["bench", "accuracy", "--scenario", "stale-will", "--devices", "40"]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_json_document_has_every_figure_as_a_number_and_matches_its_schema() -> None:
    code, out, _ = invoke(*RUN, "--json")
    assert code == 0, out
    report = json.loads(out)
    _, schema_text, _ = invoke("bench", "accuracy", "--json-schema")
    jsonschema.Draft202012Validator(json.loads(schema_text)).validate(report)
    assert (report["devices"], report["seed"], report["machine"]["cores"] > 0) == (40, 1, True)
    [scenario] = report["scenarios"]
    core = scenario["figures"]["core, tokens"]
    assert scenario["name"] == "stale-will"
    assert core["stale_will_false_offlines"] == 0  # the claim the README makes, as a number
    assert scenario["figures"]["naive, tokens"]["stale_will_false_offlines"] > 0
    assert 0 <= core["wrong_status_share"] < 1


def test_a_saved_result_compares_equal_to_the_same_run_and_names_what_changed(
    tmp_path: Path,
) -> None:
    code, _, err = invoke(*RUN, "--json", "--save", str(tmp_path))
    assert code == 0, err
    [saved] = list(tmp_path.glob("accuracy-*.json"))
    code, _, err = invoke(*RUN, "--compare", str(saved))
    assert code == 0
    assert "no figure changed" in err
    code, _, err = invoke(*RUN, "--seed", "2", "--compare", str(saved))
    assert "seed 1 then" in err
    assert "stale-will / naive, tokens / stale_will_false_offlines:" in " ".join(err.split())
