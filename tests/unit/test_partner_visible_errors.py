"""Issue 11: what the delivery log tells a partner about an endpoint the dispatcher refused.

A partner reads its delivery log (`GET /data/webhook-deliveries/...`, `delivery_dto`); its `error`
must say why a host name was refused but never what the name resolved to, which would map our
internal DNS for them. The address goes to the operator's log (a WARNING) only.

The dispatcher is the real one over moto SQS/Secrets Manager and a mongomock log (tests/
delivery_world.py); names resolve through an injected fake resolver, and every socket connect and
real name lookup fails the test, so nothing here can reach the network.
"""

from __future__ import annotations

import ipaddress
import json
import logging

import pytest
from bson import ObjectId

from distiller.api.dto import delivery_dto
from tests.delivery_world import message
from tests.network_guard import block_network

HOST = "hooks.partner-internal.example"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    block_network(monkeypatch)


class FakeResolver:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return list(self.table[host])


def _forms(address: str) -> set[str]:
    """Every way the address could be spelled in a message."""
    parsed = ipaddress.ip_address(address)
    return {address, str(parsed), parsed.exploded}


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("10.1.2.3", "a private address (RFC 1918)"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00::1", "a unique local (private) address (RFC 4193)"),
    ],
)
def test_a_refused_host_name_is_logged_for_the_partner_with_why_but_not_the_address(
    world, caplog, answer: str, why: str
):
    resolver = FakeResolver({HOST: [answer]})
    world.add_partner("acme-motors", f"https://{HOST}/hooks")
    dispatcher = world.dispatcher(sender=world.sender(allow_private=False, resolver=resolver))

    with caplog.at_level(logging.WARNING):
        assert dispatcher.dispatch_all([message("acme-motors")]) == ["dead-lettered"]

    assert resolver.calls == [(HOST, 443)]
    [entry] = world.entries()
    assert (entry["status"], entry["deadLettered"], entry["statusCode"]) == ("failed", True, None)
    error = entry["error"]
    assert error.startswith(f"endpoint refused: host {HOST!r} resolves to {why}")
    # What the partner reads through the API, and everything else derived from the attempt.
    partner_view = json.dumps(delivery_dto({**entry, "_id": ObjectId()}), default=str)
    [dead] = world.queued(world.dlq_url)
    for form in _forms(answer):
        assert form not in error
        assert form not in partner_view
        assert form not in dead.raw
    assert why in partner_view

    # The operator's log has the host and what it resolved to.
    operator = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and HOST in r.getMessage()]
    assert any(str(ipaddress.ip_address(answer)) in line for line in operator), operator


def test_a_literal_address_url_may_still_name_the_address_the_partner_configured(world):
    world.add_partner("acme-motors", "https://10.1.2.3/hooks")
    dispatcher = world.dispatcher(sender=world.sender(allow_private=False, resolver=FakeResolver({})))

    assert dispatcher.dispatch_all([message("acme-motors")]) == ["dead-lettered"]

    [entry] = world.entries()
    assert entry["error"].startswith("endpoint refused:")
    assert "10.1.2.3 is private" in entry["error"]
