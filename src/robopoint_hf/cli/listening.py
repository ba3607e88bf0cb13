"""What the verbs that listen on a port share (``demo``, ``serve``): the loopback check behind their warning, and
SIGTERM handled as Ctrl-C."""

from __future__ import annotations

import contextlib
import ipaddress
import signal
from collections.abc import Iterator

__all__ = ["is_loopback", "stop_on_sigterm"]


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
