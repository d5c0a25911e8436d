"""Webhook secrets: cached, read afresh after the partner refused our signature, at most once a minute."""

from __future__ import annotations

import pytest

from distiller.adapters import secrets as secrets_module
from distiller.adapters.secrets import PartnerSecrets


@pytest.fixture
def fetches(monkeypatch):
    """Every `get_secret` call as (name, force_fetch)."""
    calls: list[tuple[str, bool]] = []

    def get_secret(name: str, max_age: int, force_fetch: bool = False) -> str:
        calls.append((name.rsplit("/", 2)[-2], force_fetch))
        return "whsec_value"

    monkeypatch.setattr(secrets_module.parameters, "get_secret", get_secret)
    return calls


def test_a_refusal_forces_one_fresh_read_and_another_only_after_the_interval(fetches, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(secrets_module.time, "monotonic", lambda: clock[0])
    secrets = PartnerSecrets(refresh_interval_seconds=60)

    secrets.webhook_secret("acme")
    secrets.forget("acme")
    secrets.webhook_secret("acme")  # read afresh
    secrets.forget("acme")  # refused again at once: an endpoint refusing everything
    secrets.webhook_secret("acme")  # cached: no call per attempt
    clock[0] += 60
    secrets.forget("acme")
    secrets.webhook_secret("acme")  # a minute later: afresh again

    assert fetches == [("acme", False), ("acme", True), ("acme", False), ("acme", True)]


def test_a_failed_fresh_read_is_tried_afresh_again(monkeypatch):
    outcomes = iter([secrets_module.GetParameterError("throttled"), "whsec_value"])
    forced: list[bool] = []

    def get_secret(name: str, max_age: int, force_fetch: bool = False) -> str:
        forced.append(force_fetch)
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(secrets_module.parameters, "get_secret", get_secret)
    secrets = PartnerSecrets()
    secrets.forget("acme")

    with pytest.raises(secrets_module.SecretUnavailable):
        secrets.webhook_secret("acme")
    assert secrets.webhook_secret("acme") == "whsec_value"
    assert forced == [True, True]
