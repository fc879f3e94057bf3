"""Stream-table queries over HTTP (Faust web views), routed to the worker that owns the key."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from streams.topology import Topology, status_view


def register_views(app: faust.App, topology: Topology) -> None:
    table = topology.table

    @app.page("/devices/{device}")
    class DeviceView(View):
        @app.table_route(table=table, match_info="device")  # type: ignore[arg-type]
        async def get(self, request: Request, device: str) -> Response:
            state = topology.state_of(device)
            if state is None or state.status is None:
                return self.json({"error": "unknown device", "device": device}, status=404)
            return self.json(status_view(state))

    @app.page("/ready")
    class ReadyView(View):
        async def get(self, request: Request) -> Response:
            tables: Any = app.tables  # faust types its TableManager without `recovery`
            recovered = tables.recovery.completed.is_set()
            body: dict[str, Any] = {"ready": recovered and not app.in_recovery}
            return self.json(body, status=200 if body["ready"] else 503)

    del DeviceView, ReadyView
