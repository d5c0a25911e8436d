"""Bearer-JWT authentication for the partner read API.

Partners sign an HS256, HS384 or HS512 JWT with the shared secret PrivateAuto gave them. The secret
is delivered, and stored, as base64 text and is decoded to a UTF-8 string before it is used as the
HMAC key, exactly as the spec's Node, Python and CLI snippets do; a token signed with the raw base64
text therefore fails.

Checks, in order; the first failure wins:

1. ``Authorization: Bearer <token>`` is present (scheme case-insensitive)
   → 401 "missing bearer token"; a token that is not three base64url segments → 401 "malformed token".
2. The header's ``alg`` is in `ALLOWED_ALGORITHMS` → otherwise 401 "token algorithm not allowed ...".
   The header is read only to give this clear message: verification itself passes the explicit
   allow-list to PyJWT and never trusts the token's own header.
3. The signature verifies with the partner's decoded secret → otherwise 401 "invalid signature".
   An unknown partner (no secret) is verified against a random throwaway key, so it fails the same way
   with the same message as a wrong secret: the response does not reveal whether a partner exists.
4. Required claims: ``exp`` → 401 "exp claim required"; ``p`` → 401 "p claim required".
5. Time claims against ``now`` (clock-skew leeway ``leeway_seconds``), checked here rather than by
   PyJWT so that ``now`` can be injected: ``exp``, ``iat`` and ``nbf`` must be finite numbers
   (401 "<claim> claim must be a number"); expired (``exp <= now - leeway``) → 401 "token expired";
   ``iat`` or ``nbf`` later than ``now + leeway`` → 401 "token not yet valid: ...";
   lifetime ``exp - iat`` (or ``exp - now`` without ``iat``, which also allows the leeway) above
   ``max_lifetime_seconds`` → 401 "token lifetime exceeds N seconds".
6. ``p`` is a string → otherwise 401 "p claim must be a string"; ``p`` equals the path's partnerId →
   otherwise 403 "token is for another partner".

``aud`` is not checked (the spec defines none). Every message is a fixed text plus configured numbers:
never the token, any part of it, a claim value or the secret. A stored secret that is not base64 of
UTF-8 text is a server misconfiguration and raises ``ValueError`` (a 500), not an `AuthError`.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self

import jwt

ALLOWED_ALGORITHMS: tuple[str, ...] = ("HS256", "HS384", "HS512")
MAX_TOKEN_LENGTH = 8192
"""Longer bearer values are refused as malformed before any decoding."""

MISSING_BEARER = "missing bearer token"
MALFORMED_TOKEN = "malformed token"  # noqa: S105 - an error message
ALGORITHM_NOT_ALLOWED = f"token algorithm not allowed (allowed: {', '.join(ALLOWED_ALGORITHMS)})"
INVALID_SIGNATURE = "invalid signature"
INVALID_TOKEN = "invalid token"  # noqa: S105 - an error message
TOKEN_EXPIRED = "token expired"  # noqa: S105 - an error message
IAT_IN_FUTURE = "token not yet valid: iat is in the future"
NBF_IN_FUTURE = "token not yet valid: nbf is in the future"
P_NOT_STRING = "p claim must be a string"
OTHER_PARTNER = "token is for another partner"

_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]*")
_TIME_CLAIMS = ("exp", "iat", "nbf")
_REQUIRED_CLAIMS = ("exp", "p")


class AuthError(Exception):
    """A refused request: ``status`` is 401 or 403; ``message`` names the failed check and never holds
    the token, a part of it, or the secret (safe to return as ``{"error": message}``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"AuthError({self.status}, {self.message!r})"


@dataclass(frozen=True, slots=True)
class AuthSettings:
    max_lifetime_seconds: int = 900
    """Longest accepted token lifetime (``exp - iat``, or ``exp - now`` without ``iat``)."""
    leeway_seconds: int = 30
    """Clock skew tolerated on ``exp``, ``iat`` and ``nbf``."""

    def __post_init__(self) -> None:
        if self.max_lifetime_seconds <= 0:
            raise ValueError("max_lifetime_seconds must be > 0")
        if self.leeway_seconds < 0:
            raise ValueError("leeway_seconds must be >= 0")


DEFAULT_AUTH_SETTINGS = AuthSettings()


def decode_shared_secret(stored_b64: str) -> str:
    """The stored (delivered) base64 shared secret → the UTF-8 text used as the HMAC key.

    Surrounding whitespace is ignored; anything else that is not strict base64 of non-empty UTF-8 text
    raises ``ValueError`` with a message that never contains the value.
    """
    if not isinstance(stored_b64, str):
        raise ValueError("shared secret: expected base64 text")
    text = stored_b64.strip()
    if not text:
        raise ValueError("shared secret: empty")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("shared secret: not valid base64") from None
    try:
        secret = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("shared secret: base64 does not decode to UTF-8 text") from None
    if not secret:
        raise ValueError("shared secret: decodes to an empty string")
    return secret


def authenticate(
    authorization: str | None,
    partner_id: str,
    shared_secret_b64: str | None,
    settings: AuthSettings = DEFAULT_AUTH_SETTINGS,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify the ``Authorization`` header for ``partner_id``; return the verified claims or raise `AuthError`.

    ``shared_secret_b64`` is the partner's stored base64 secret, or None for an unknown partner.
    """
    return verify_token(_bearer_token(authorization), partner_id, shared_secret_b64, settings, now)


def verify_token(
    token: str,
    partner_id: str,
    shared_secret_b64: str | None,
    settings: AuthSettings = DEFAULT_AUTH_SETTINGS,
    now: float | None = None,
) -> dict[str, Any]:
    """Checks 1 (shape) to 6 on a bare token, wherever it came from (the Bearer header, or GET /sell's
    ``?jwt=`` / ``?v=``), so every way of presenting a JWT is held to the same rules."""
    if len(token) > MAX_TOKEN_LENGTH or not _TOKEN_SHAPE.fullmatch(token):
        raise AuthError(401, MALFORMED_TOKEN)
    _check_algorithm(token)
    # Unknown partner: verify against a random key so it fails exactly like a wrong secret.
    key = secrets.token_hex(32) if shared_secret_b64 is None else decode_shared_secret(shared_secret_b64)
    claims = _verified_claims(token, key)
    _check_times(claims, time.time() if now is None else now, settings)
    subject = claims["p"]
    if not isinstance(subject, str):
        raise AuthError(401, P_NOT_STRING)
    if subject != partner_id:
        raise AuthError(403, OTHER_PARTNER)
    return claims


def _bearer_token(authorization: str | None) -> str:
    if not isinstance(authorization, str):
        raise AuthError(401, MISSING_BEARER)
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthError(401, MISSING_BEARER)
    return parts[1]


def _check_algorithm(token: str) -> None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError(401, MALFORMED_TOKEN) from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        raise AuthError(401, ALGORITHM_NOT_ALLOWED)


def _verified_claims(token: str, key: str) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key,
            algorithms=list(ALLOWED_ALGORITHMS),
            options={
                "require": list(_REQUIRED_CLAIMS),
                # Time claims are checked by _check_times against an injectable `now`.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
            },
        )
    except jwt.MissingRequiredClaimError as exc:
        claim = exc.claim if exc.claim in _REQUIRED_CLAIMS else "required"
        raise AuthError(401, f"{claim} claim required") from None
    except jwt.InvalidSignatureError:
        raise AuthError(401, INVALID_SIGNATURE) from None
    except jwt.InvalidAlgorithmError:
        raise AuthError(401, ALGORITHM_NOT_ALLOWED) from None
    except jwt.DecodeError:
        raise AuthError(401, MALFORMED_TOKEN) from None
    except jwt.PyJWTError:
        raise AuthError(401, INVALID_TOKEN) from None


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(401, f"{name} claim must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise AuthError(401, f"{name} claim must be a number") from None
    if not math.isfinite(number):  # json.loads accepts NaN and Infinity
        raise AuthError(401, f"{name} claim must be a number")
    return number


def _check_times(claims: Mapping[str, Any], now: float, settings: AuthSettings) -> None:
    exp, iat, nbf = (_numeric_date(claims, name) for name in _TIME_CLAIMS)
    if exp is None:  # `require` already refuses a missing or null exp
        raise AuthError(401, "exp claim required")
    leeway = settings.leeway_seconds
    if exp <= now - leeway:
        raise AuthError(401, TOKEN_EXPIRED)
    if iat is not None and iat > now + leeway:
        raise AuthError(401, IAT_IN_FUTURE)
    if nbf is not None and nbf > now + leeway:
        raise AuthError(401, NBF_IN_FUTURE)
    # exp - iat is independent of our clock; exp - now is not, so it gets the leeway too.
    lifetime, allowed = (exp - iat, 0) if iat is not None else (exp - now, leeway)
    if lifetime > settings.max_lifetime_seconds + allowed:
        raise AuthError(401, f"token lifetime exceeds {settings.max_lifetime_seconds} seconds")


# -- shared secrets ----------------------------------------------------------------------------


class SharedSecrets(Protocol):
    def shared_secret(self, partner_id: str) -> str | None:
        """The partner's stored base64 shared secret, or None for an unknown partner."""
        ...


class StaticSharedSecrets:
    """Shared secrets from a mapping partnerId → base64 secret (local development, tests)."""

    def __init__(self, secrets_by_partner: Mapping[str, str]) -> None:
        self._secrets = dict(secrets_by_partner)

    @classmethod
    def from_partner_records(cls, records: Iterable[Any]) -> Self:
        """From PARTNERS.json-style records: each ``partnerId`` with a string ``sharedSecret``."""
        return cls(
            {
                record["partnerId"]: record["sharedSecret"]
                for record in records
                if isinstance(record, Mapping)
                and isinstance(record.get("partnerId"), str)
                and isinstance(record.get("sharedSecret"), str)
            }
        )

    def shared_secret(self, partner_id: str) -> str | None:
        return self._secrets.get(partner_id)

    def __repr__(self) -> str:
        return f"StaticSharedSecrets(partners={sorted(self._secrets)!r})"
