"""`presence status DEVICE`: ask any worker about one device."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Annotated

import typer

from mqtt_presence.cli.common import app, fail, out


@app.command("status")
def status_command(
    device: Annotated[str, typer.Argument(help="Device id")],
    url: Annotated[
        str, typer.Option(envvar="PRESENCE_WORKER_URL", help="Any worker's HTTP address")
    ] = "http://127.0.0.1:6066",
    token: Annotated[
        str | None,
        typer.Option(
            envvar="PRESENCE_WORKER_HTTP_TOKEN",
            help="The workers' bearer token (http_token); better from the environment than "
            "on a command line that `ps` shows",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Is a device online, since when, why? (asks a worker; it routes to the owner)."""
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise fail(f"--url must be an http:// or https:// address, not {url!r}")
    target = f"{url.rstrip('/')}/devices/{urllib.parse.quote(device, safe='')}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        request = urllib.request.Request(target, headers=headers)  # noqa: S310 - scheme checked
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310 - scheme checked
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise fail(f"no status for device {device!r} yet") from exc
        if exc.code == 401:
            what = (
                "a different token" if token else "a token (--token or PRESENCE_WORKER_HTTP_TOKEN)"
            )
            raise fail(f"the worker at {url} wants {what}") from exc
        raise fail(f"{target} answered {exc.code}: {exc.read()[:200]!r}") from exc
    except OSError as exc:
        raise fail(
            f"cannot reach a worker at {url} ({exc}); is `presence worker` running?"
        ) from exc
    if as_json:
        sys.stdout.write(json.dumps(body) + "\n")
        return
    since = datetime.fromtimestamp(body["since"] / 1000, tz=UTC).isoformat(timespec="seconds")
    flapping = " [bold yellow](flapping)[/]" if body["flapping"] else ""
    verified = "verified by session token" if body["verified"] else "not verified (no token)"
    status = "sleeping" if body.get("sleeping") else body["status"]  # older workers: no key
    out.print(
        f"[bold]{device}[/] is [bold]{status}[/]{flapping} since {since} "
        f"(version {body['version']}, reason {body['reason']}, session {body['session']}, "
        f"{verified})"
    )
