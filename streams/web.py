"""Stream-table queries over HTTP (Faust web views). Any worker can be asked anything:

- `GET /devices/{id}` is routed to the worker that owns the key's partition;
- `GET /devices?status=&limit=&cursor=` and `GET /fleet` ask every worker in the group for its
  own partitions (`?local=1`) and merge the answers;
- `GET /ready` is 200 only once table recovery has finished; `GET /metrics` is Prometheus.

With `http_token` set, the device and fleet views answer only requests that bring it as
`Authorization: Bearer <token>` (401 otherwise), and pass it on when they ask other workers;
`/ready` and `/metrics` stay open for probes and scrapers.

Errors are JSON: 404 for an unknown device, 400 for a bad parameter.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import Counter
from typing import Any

import aiohttp
import faust
from faust.exceptions import SameNode
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mqtt_presence.core import DeviceState, last_change
from mqtt_presence.streams.topology import Topology

STATUS_FILTERS = ("online", "offline", "sleeping", "flapping")
MAX_LIMIT = 1_000


UNREACHABLE = (aiohttp.ClientError, TimeoutError, OSError)


def unreachable(exc: BaseException) -> dict[str, str]:
    return {
        "error": f"a worker did not answer ({type(exc).__name__}: {exc}); partitions may "
        "be moving, retry"
    }


def status_view(state: DeviceState) -> dict[str, Any] | None:
    """What `GET /devices/{id}` says about one device: its last change, as on presence.status."""
    change = last_change(state)
    if change is None:
        return None
    return {
        "device": change.device,
        "status": change.status.value,
        "since": change.since,
        "version": change.version,
        "reason": change.reason.value,
        "session": change.session,
        "flapping": change.flapping,
        "sleeping": change.sleeping,
        "cause": change.cause,
        "verified": change.verified,
        "current_session": state.session,  # the connection the device is on now
    }


class BadParameterError(ValueError):
    """A query parameter is not what the endpoint accepts."""


def list_params(query: Any) -> tuple[str | None, int, str]:
    status = query.get("status")
    if status is not None and status not in STATUS_FILTERS:
        raise BadParameterError(f"status must be one of {', '.join(STATUS_FILTERS)}")
    try:
        limit = int(query.get("limit", "100"))
    except ValueError as exc:
        raise BadParameterError("limit must be a whole number") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise BadParameterError(f"limit must be between 1 and {MAX_LIMIT}")
    return status, limit, query.get("cursor", "")


TOPOLOGY_ATTRIBUTE = "presence_topology"
views = faust.web.Blueprint("presence")


def register_views(app: faust.App, topology: Topology) -> None:
    """The views below, on `app`, answering from `topology`."""
    setattr(app, TOPOLOGY_ATTRIBUTE, topology)
    views.register(app)


def topology_of(view: View) -> Topology:
    topology: Topology = getattr(view.app, TOPOLOGY_ATTRIBUTE)
    return topology


def member_urls(topology: Topology) -> list[str]:
    """Every worker of the group (this one too), from Faust's table routing."""
    app = topology.app
    urls = {str(url).rstrip("/") for url in app.router.table_metadata(topology.table.name)}
    return sorted(urls) or [str(app.conf.canonical_url).rstrip("/")]


def authorization(topology: Topology) -> dict[str, str]:
    """The header that opens another worker's views (empty without a token)."""
    token = topology.settings.http_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


def authorized(topology: Topology, request: Request) -> bool:
    """No token configured, or the request brings it (compared in constant time)."""
    token = topology.settings.http_token
    if token is None:
        return True
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.get_secret_value().encode()
    )


class TokenView(View):
    """A view that wants the bearer token when the worker has one (RFC 6750, section 3)."""

    async def dispatch(self, request: Any) -> Any:
        if not authorized(topology_of(self), request):
            response = self.json(
                {"error": "this worker wants `Authorization: Bearer <token>` (http_token)"},
                status=401,
            )
            response.headers["WWW-Authenticate"] = 'Bearer realm="mqtt-presence"'
            return response
        return await super().dispatch(request)


async def gather(topology: Topology, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Ask every worker (this one too, over HTTP: one code path) for its local answer."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout, headers=authorization(topology)) as session:

        async def ask(url: str) -> dict[str, Any]:
            async with session.get(f"{url}{path}", params={**params, "local": "1"}) as r:
                r.raise_for_status()
                body: dict[str, Any] = await r.json()
                return body

        return list(await asyncio.gather(*(ask(url) for url in member_urls(topology))))


@views.route("/devices/{device}", name="device")
class DeviceView(TokenView):
    async def get(self, request: Request, device: str) -> Response:
        topology = topology_of(self)
        try:  # to the worker that owns the key's partition, unless that is us
            routed: Response = await self.app.router.route_req(
                topology.table.name, device, self.web, request
            )
            return routed
        except SameNode:
            pass
        except UNREACHABLE as exc:
            return self.json(
                {
                    "error": f"the worker that owns {device!r} did not answer "
                    f"({type(exc).__name__}); partitions may be moving, retry",
                    "device": device,
                },
                status=503,
            )
        state = topology.state_of(device)
        view = status_view(state) if state is not None else None
        if view is None:
            return self.json({"error": "unknown device", "device": device}, status=404)
        return self.json(view)


@views.route("/devices", name="devices")
class DevicesView(TokenView):
    async def get(self, request: Request) -> Response:
        topology = topology_of(self)
        try:
            status, limit, cursor = list_params(request.query)
        except BadParameterError as exc:
            return self.json({"error": str(exc)}, status=400)
        if request.query.get("local"):  # this worker's page, from the status index
            devices, more = topology.processor.statuses.page(
                topology.active_partitions(), status, cursor, limit
            )
            states = (topology.state_of(device) for device in devices)
            views = [status_view(state) for state in states if state is not None]
            return self.json({"devices": views, "more": more})
        params = {"limit": str(limit), "cursor": cursor}
        if status:
            params["status"] = status
        try:
            answers = await gather(topology, "/devices", params)
        except UNREACHABLE as exc:
            return self.json(unreachable(exc), status=503)
        merged = sorted((d for a in answers for d in a["devices"]), key=lambda d: str(d["device"]))
        page = merged[:limit]
        more = len(merged) > limit or any(a["more"] for a in answers)
        return self.json(
            {"devices": page, "next_cursor": page[-1]["device"] if more and page else None}
        )


@views.route("/fleet", name="fleet")
class FleetView(TokenView):
    async def get(self, request: Request) -> Response:
        topology = topology_of(self)
        if request.query.get("local"):  # this worker's counts, kept by the status index
            counts = topology.processor.statuses.counts(topology.active_partitions())
            return self.json({"counts": dict(counts)})
        total: Counter[str] = Counter()
        try:
            answers = await gather(topology, "/fleet", {})
        except UNREACHABLE as exc:
            return self.json(unreachable(exc), status=503)
        for answer in answers:
            total.update(answer["counts"])
        return self.json(
            {
                "devices": sum(total.values()),
                "online": total["online"],
                "offline": total["offline"],
                "sleeping": total["sleeping"],
                "flapping": total["flapping"],
                "workers": len(answers),
            }
        )


@views.route("/ready", name="ready")
class ReadyView(View):
    async def get(self, request: Request) -> Response:
        tables: Any = self.app.tables  # faust types its TableManager without `recovery`
        recovered = tables.recovery.completed.is_set()
        body: dict[str, Any] = {"ready": recovered and not self.app.in_recovery}
        return self.json(body, status=200 if body["ready"] else 503)


@views.route("/metrics", name="metrics")
class MetricsView(View):
    async def get(self, request: Request) -> Response:
        topology = topology_of(self)
        tables: Any = self.app.tables
        topology.metrics.show_fleet(
            topology.processor.statuses.counts(topology.active_partitions()),
            recovering=not tables.recovery.completed.is_set() or bool(self.app.in_recovery),
        )
        body = generate_latest(topology.metrics.registry)
        return self.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])
