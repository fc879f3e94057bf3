"""`presence doctor`: report A's diagnosis, walked against a live deployment.

`findings` is the pure half (observations in, a checklist of findings out), `probes` the I/O
half (each with a short timeout), `run` the walk that joins them."""

from __future__ import annotations

from mqtt_presence.doctor.findings import Finding, exit_status, to_json

__all__ = ["Finding", "exit_status", "to_json"]
