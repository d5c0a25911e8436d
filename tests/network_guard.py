"""A guard for tests that must never reach the network: any real connect or name lookup fails."""

from __future__ import annotations

import socket

import pytest
import urllib3.util.connection


class NetworkBlocked(AssertionError):
    """A test tried to open a connection or resolve a name for real."""


def block_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every socket connect and real name lookup (stdlib and urllib3) raise `NetworkBlocked`."""

    def blocked(*args: object, **kwargs: object) -> None:
        raise NetworkBlocked(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    monkeypatch.setattr(socket, "gethostbyname", blocked)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", blocked)
