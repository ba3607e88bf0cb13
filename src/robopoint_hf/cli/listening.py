"""What the verbs that listen on a port share (``demo``, ``serve``): the check that the address is free before any
model loads, the loopback check behind their warning, and SIGTERM handled as Ctrl-C."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
from collections.abc import Iterator

from .errors import UsageError

__all__ = ["check_can_listen", "is_loopback", "stop_on_sigterm"]


def check_can_listen(host: str, port: int) -> None:
    """Fails at once, naming the address, where the server could not listen: before the models load, not after."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UsageError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (the verbs warn otherwise: they have no login)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turns SIGTERM (``kill``, systemd, container stop) into the Ctrl-C path while a verb serves.

    Python's default SIGTERM ends the process without unwinding, which would leave the demo's temporary folder with
    visitors' images behind and a server's socket and batcher unclosed; as a KeyboardInterrupt, they are closed.
    """

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
