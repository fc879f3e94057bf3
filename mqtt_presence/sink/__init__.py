"""Downstream sinks: `presence.status` into a database a downstream team can trust.

`batch` is the pure part (decode, refuse, coalesce: no I/O), `postgres` the PostgreSQL writer and
the Kafka loop around it, `config` the `[sink]` settings.
"""
