"""Loopback ports: pick free ones, check asked-for ones."""

import random
import socket
from pathlib import Path

from mqtt_presence.stack.errors import PortInUseError

HOST = "127.0.0.1"
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
PICKS = 10_000  # how many ports below the ephemeral range to pick from


def ephemeral_low() -> int:
    """The lowest port the OS gives outgoing connections (Linux; 32768 if it cannot say)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def bindable(port: int, reuse: bool = False) -> bool:
    """True if a server could bind `port` on 127.0.0.1 now. `reuse`: as servers do, with
    SO_REUSEADDR, so that the connections a killed broker left in TIME_WAIT do not count."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now, from just below the OS's
    ephemeral range: a port the OS picked (bind to 0) could be handed to an outgoing connection
    (Kafka's own, a test's) before the server that is to listen on it binds it; seen in CI."""
    low = ephemeral_low()
    start = max(1024, low - PICKS)
    for _ in range(100):
        port = random.randrange(start, low)  # noqa: S311 (not security: spreading picks)
        if bindable(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: the OS
        sock.bind((HOST, 0))
        picked: int = sock.getsockname()[1]
        return picked


def ensure_free(port: int, what: str) -> int:
    """Return `port` if it can be bound on 127.0.0.1, else raise PortInUseError naming `what`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} for {what} is already in use on {HOST} ({exc.strerror}); "
                "pick another with the flag or leave it out to get a free one"
            ) from exc
    return port


def is_listening(port: int, timeout: float = 0.5) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False
