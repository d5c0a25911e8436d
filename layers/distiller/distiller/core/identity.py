"""Idempotency keys: the same change always yields the same eventIds (spec, "Idempotency")."""

from __future__ import annotations

import hashlib


def event_key(resume_token: str, partner_id: str, event: str, emission_index: int) -> str:
    """`{resumeToken}:{partnerId}:{event}:{emissionIndex}`; informational for partners, never parsed."""
    return f"{resume_token}:{partner_id}:{event}:{emission_index}"


def event_id(key: str) -> str:
    """sha256 hex of the event key: the stable idempotency contract partners dedupe on."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
