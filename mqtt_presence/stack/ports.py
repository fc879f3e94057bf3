"""Loopback ports: pick free ones, check asked-for ones."""

import socket

from mqtt_presence.stack.errors import PortInUseError

HOST = "127.0.0.1"


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


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
