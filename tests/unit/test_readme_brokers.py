"""The README's broker table is the answers the broker tests pin (and so assert on every broker
in CI): rendered from `tests/integration/broker_behaviour.py` and compared.

After pinning new answers: `.venv/bin/python -m tests.unit.test_readme_brokers` rewrites the
table in README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.integration.broker_behaviour import render_table

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- broker table: generated -->\n", "<!-- end of broker table -->\n"


def readme_table() -> str:
    text = README.read_text()
    return text[text.index(START) + len(START) : text.index(END)]


def test_the_readme_broker_table_is_what_the_broker_tests_assert() -> None:
    assert readme_table() == render_table() + "\n", (
        "README's broker table is stale: run `.venv/bin/python -m tests.unit.test_readme_brokers`"
    )


if __name__ == "__main__":
    text = README.read_text()
    head, rest = text.split(START)
    _, tail = rest.split(END)
    README.write_text(head + START + render_table() + "\n" + END + tail)
    sys.stdout.write(f"rewrote the broker table in {README}\n")
