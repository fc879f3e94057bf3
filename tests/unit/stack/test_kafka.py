"""The local Kafka's generated values."""

from __future__ import annotations

import base64

from mqtt_presence.stack.kafka import cluster_id


def test_cluster_ids_are_16_bytes_and_never_look_like_an_option() -> None:
    ids = [cluster_id() for _ in range(5_000)]  # about 78 would start with "-" if unchecked
    assert not any(i.startswith("-") for i in ids)
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
    assert len(set(ids)) == len(ids)
