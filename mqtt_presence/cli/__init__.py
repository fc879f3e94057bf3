"""The `presence` command: the one composition root for every entry point.

Typer gives typed options with generated help; rich prints tables and progress. One module per
command (`stack`, `bridge`, `worker`, `status`, `replay`, `bench`, `demo`, `sink`, `doctor`);
each loads its settings once and builds its parts. Every error of the project's family
(`PresenceError`: a bad configuration, a stack that will not start, a broker that refuses the
bridge, ...) ends the command here, in `main`, as one line and exit status 1: no traceback for a
problem the user can fix. The commands that run paho, kafka-python or Faust import them when they
run, so that `presence --help` and `presence status` start at once.
"""

from __future__ import annotations

from mqtt_presence.cli import bench, bridge, demo, doctor, replay, sink, stack, status, worker
from mqtt_presence.cli.common import app, fail
from mqtt_presence.errors import PresenceError

# each registers itself on `app`
COMMANDS = (bench, bridge, demo, doctor, replay, sink, stack, status, worker)


def main() -> None:
    """The one place an error of the family ends a command: its message, status 1."""
    try:
        app()
    except PresenceError as exc:
        raise SystemExit(fail(str(exc)).exit_code) from None


__all__ = ["app", "main"]
