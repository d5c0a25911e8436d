"""Webhook signatures exactly as the spec's "Verifying Signatures" snippet checks them.

`X-PA-Signature: sha256={hex HMAC-SHA256 of "{timestamp}.{raw_body}" with the webhook secret}`.
Signing and verifying share `signature()`, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_PREFIX = "sha256="


class SignatureError(ValueError):
    """Verification failed; the message names the check, never the secret or the expected value."""


def signature(secret: str, timestamp: str, raw_body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of `{timestamp}.{raw_body}`."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("utf-8") + b"." + raw_body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def verify(secret: str, headers: dict[str, str], raw_body: bytes) -> None:
    """Check a delivery's signature the way the spec tells partners to (timing-safe comparison).

    Header names are matched case-insensitively. Raises `SignatureError` naming the failed check.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get("x-pa-timestamp")
    received = lowered.get("x-pa-signature")
    if not timestamp:
        raise SignatureError("missing X-PA-Timestamp header")
    if not received:
        raise SignatureError("missing X-PA-Signature header")
    if not received.startswith(SIGNATURE_PREFIX):
        raise SignatureError("X-PA-Signature must start with sha256=")
    expected = signature(secret, timestamp, raw_body)
    if not hmac.compare_digest(received.encode("utf-8"), expected.encode("utf-8")):
        raise SignatureError("X-PA-Signature does not match the body and timestamp")
