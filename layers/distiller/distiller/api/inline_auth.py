"""Inline authentication for GET /sell/{partnerId}: the credentials ride in the query string.

A browser redirect cannot carry an ``Authorization`` header, so the spec offers three forms, all keyed by
the partner's shared secret:

- Format 1: ``?jwt=<token>``; Format 2: ``?v=<token>`` (a ``v`` holding a dot is a JWT, never a VIN).
  The token passes exactly the Bearer rules of `distiller.api.auth.verify_token`. Its payload carries
  the fields under full names or short keys. Nothing else may sit in the query: it would be unsigned,
  and an unsigned ``r`` is an open redirect.
- Format 3: short-key params plus ``ts`` (epoch seconds, ±300 s) and ``sig``: hex HMAC-SHA256 of
  `canonical_query`, byte for byte what the spec's Node snippet signs (JavaScript's sort and
  ``encodeURIComponent``).

Every refusal is an `AuthError` whose message names the failed check and at most parameter names,
never a value, the token, the signature or the secret. An unknown partner fails like a wrong secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from distiller.api.auth import (
    DEFAULT_AUTH_SETTINGS,
    INVALID_SIGNATURE,
    AuthError,
    AuthSettings,
    decode_shared_secret,
    verify_token,
)

SHORT_KEYS: dict[str, str] = {
    "v": "vin",
    "y": "year",
    "m": "make",
    "o": "model",
    "t": "trim",
    "a": "amount",
    "bn": "buyerName",
    "be": "buyerEmail",
    "bl": "buyerSendLink",
    "sn": "sellerName",
    "se": "sellerEmail",
    "sl": "sellerSendLink",
    "r": "redirectUrl",
    "ro": "role",
}
FULL_NAMES: frozenset[str] = frozenset(SHORT_KEYS.values())
SIGNED_QUERY_SKEW_SECONDS = 300

#: JWT claims that authenticate rather than describe the deal (``p`` and RFC 7519's registered claims).
TOKEN_CLAIMS: frozenset[str] = frozenset({"p", "iss", "sub", "aud", "exp", "nbf", "iat", "jti"})

MISSING_CREDENTIALS = "missing credentials: pass jwt, a JWT in v, or ts and sig"
TS_REQUIRED = "ts parameter required"
SIG_REQUIRED = "sig parameter required"
TS_NOT_INTEGER = "ts must be integer epoch seconds"
SIG_MALFORMED = "sig must be 64 hex characters"
TS_EXPIRED = f"signed query expired: ts is more than {SIGNED_QUERY_SKEW_SECONDS} seconds old"
TS_IN_FUTURE = f"signed query not yet valid: ts is more than {SIGNED_QUERY_SKEW_SECONDS} seconds in the future"
REPEATED_PARAMETER = "parameter given more than once: {names}"
NOT_TEXT = "parameter is not valid text: {names}"
UNKNOWN_PARAMETER = "unknown parameter: {names}"
SHORT_KEY_HINT = " (signed queries use short keys: {short} for {full})"
UNSIGNED_WITH_JWT = "parameter not covered by the JWT: {names}"
UNKNOWN_CLAIM = "unknown claim in token: {names}"
CLAIM_CLASH = "token gives both {short} and {full}"

_TS = re.compile(r"[0-9]{1,12}")
_SIG = re.compile(r"[0-9A-Fa-f]{64}")
_JS_UNRESERVED = "-_.!~*'()"  # with A-Z a-z 0-9, what encodeURIComponent leaves alone
_MAX_NAMES_SHOWN = 10
_MAX_NAME_CHARS = 40


@dataclass(frozen=True, slots=True)
class InlineGrant:
    """A verified GET /sell request: which format, its fields, and how to recognise it again."""

    format: int
    """1 (``?jwt=``), 2 (``?v=<JWT>``) or 3 (signed short-key params)."""
    fields: dict[str, Any]
    """The request's fields under full names: Format 3 the query's strings, Formats 1/2 the payload's values."""
    replay_key: str
    """sha256 hex naming this exact signed request: the same URL gives the same key, any change another."""
    expires_at: float
    """Epoch seconds after which this signed URL is refused; keep its idempotency record at least this long."""


def encode_uri_component(text: str) -> str:
    """JavaScript's ``encodeURIComponent``: UTF-8 percent-encoding of all but A-Z a-z 0-9 ``-_.!~*'()``.

    A lone surrogate raises ``ValueError``, as JavaScript throws ``URIError``.
    """
    return quote(text, safe=_JS_UNRESERVED, encoding="utf-8", errors="strict")


def _utf16_order(key: str) -> bytes:
    # Big-endian code units compare bytewise in code-unit order: JavaScript's default sort.
    return key.encode("utf-16-be", errors="surrogatepass")


def canonical_query(params: Mapping[str, str]) -> str:
    """What Format 3 signs: every param but ``sig``, sorted as JavaScript sorts, ``k=v`` encoded, joined by ``&``."""
    keys = sorted((key for key in params if key != "sig"), key=_utf16_order)
    return "&".join(f"{encode_uri_component(key)}={encode_uri_component(params[key])}" for key in keys)


def sign_query(params: Mapping[str, str], shared_secret_b64: str) -> str:
    """The ``sig`` for ``params`` under the partner's stored base64 secret (what the spec's Node snippet prints)."""
    return _query_hmac(canonical_query(params), decode_shared_secret(shared_secret_b64))


def _query_hmac(canonical: str, key: str) -> str:
    return hmac.new(key.encode("utf-8"), canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def authenticate_inline(
    query: Mapping[str, Sequence[str]] | None,
    partner_id: str,
    shared_secret_b64: str | None,
    settings: AuthSettings = DEFAULT_AUTH_SETTINGS,
    now: float | None = None,
) -> InlineGrant:
    """Verify GET /sell's query (API Gateway's decoded multi-value parameters) for ``partner_id``.

    ``shared_secret_b64`` is the partner's stored base64 secret, or None for an unknown partner. Raises
    `AuthError` (401; 403 for a JWT of another partner); an unusable stored secret raises ``ValueError``.
    """
    params = _single_values(query or {})
    now = time.time() if now is None else now
    if "jwt" in params:
        return _jwt_grant(1, params, "jwt", partner_id, shared_secret_b64, settings, now)
    if "." in params.get("v", ""):
        return _jwt_grant(2, params, "v", partner_id, shared_secret_b64, settings, now)
    return _signed_query_grant(params, partner_id, shared_secret_b64, now)


def _single_values(query: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """One value per name: a repeated name would make the canonical string (and the intent) ambiguous."""
    repeated: list[str] = []
    params: dict[str, str] = {}
    for name, values in query.items():
        if not isinstance(name, str):
            raise TypeError("query: parameter names must be strings")
        if isinstance(values, str) or not isinstance(values, Sequence):
            raise TypeError("query: expected a list of values per parameter (multiValueQueryStringParameters)")
        if len(values) > 1:
            repeated.append(name)
        elif values:
            params[name] = values[0]
    if repeated:
        raise AuthError(401, REPEATED_PARAMETER.format(names=_shown(repeated)))
    not_text = [name for name, value in params.items() if not (_is_text(name) and _is_text(value))]
    if not_text:
        raise AuthError(401, NOT_TEXT.format(names=_shown(not_text)))
    return params


def _is_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: encodeURIComponent would throw
        return False
    return True


def _jwt_grant(
    grant_format: int,
    params: Mapping[str, str],
    token_param: str,
    partner_id: str,
    shared_secret_b64: str | None,
    settings: AuthSettings,
    now: float,
) -> InlineGrant:
    unsigned = [name for name in params if name != token_param]
    if unsigned:
        raise AuthError(401, UNSIGNED_WITH_JWT.format(names=_shown(unsigned)))
    token = params[token_param]
    claims = verify_token(token, partner_id, shared_secret_b64, settings, now)
    return InlineGrant(
        format=grant_format,
        fields=_fields_from_claims(claims),
        replay_key=_replay_key("jwt", partner_id, token),
        expires_at=float(claims["exp"]) + settings.leeway_seconds,
    )


def _fields_from_claims(claims: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in claims.items():
        if key in TOKEN_CLAIMS:
            continue
        full = SHORT_KEYS.get(key, key)
        if full not in FULL_NAMES:
            unknown.append(key)
            continue
        if full in given_as:
            short = key if key in SHORT_KEYS else given_as[full]
            raise AuthError(401, CLAIM_CLASH.format(short=short, full=full))
        given_as[full] = key
        fields[full] = value
    if unknown:
        raise AuthError(401, UNKNOWN_CLAIM.format(names=_shown(unknown)))
    return fields


def _signed_query_grant(
    params: Mapping[str, str], partner_id: str, shared_secret_b64: str | None, now: float
) -> InlineGrant:
    ts, sig = params.get("ts"), params.get("sig")
    if ts is None and sig is None:
        raise AuthError(401, MISSING_CREDENTIALS)
    if ts is None:
        raise AuthError(401, TS_REQUIRED)
    if sig is None:
        raise AuthError(401, SIG_REQUIRED)
    unknown = [name for name in params if name not in SHORT_KEYS and name not in ("ts", "sig")]
    if unknown:
        raise AuthError(401, _unknown_parameter_message(unknown))
    if not _TS.fullmatch(ts):
        raise AuthError(401, TS_NOT_INTEGER)
    if not _SIG.fullmatch(sig):
        raise AuthError(401, SIG_MALFORMED)
    signed_at = int(ts)
    if now - signed_at > SIGNED_QUERY_SKEW_SECONDS:
        raise AuthError(401, TS_EXPIRED)
    if signed_at - now > SIGNED_QUERY_SKEW_SECONDS:
        raise AuthError(401, TS_IN_FUTURE)
    canonical = canonical_query(params)
    # Unknown partner: a random key of the same length, so it fails with the same message after the same work.
    key = secrets.token_hex(32) if shared_secret_b64 is None else decode_shared_secret(shared_secret_b64)
    if not hmac.compare_digest(_query_hmac(canonical, key), sig.lower()):
        raise AuthError(401, INVALID_SIGNATURE)
    return InlineGrant(
        format=3,
        fields={SHORT_KEYS[name]: value for name, value in params.items() if name in SHORT_KEYS},
        replay_key=_replay_key("query", partner_id, canonical),
        expires_at=float(signed_at + SIGNED_QUERY_SKEW_SECONDS + 1),
    )


def _unknown_parameter_message(unknown: list[str]) -> str:
    message = UNKNOWN_PARAMETER.format(names=_shown(unknown))
    full = next((name for name in sorted(unknown) if name in FULL_NAMES), None)
    if full is None:
        return message
    short = next(key for key, name in SHORT_KEYS.items() if name == full)
    return message + SHORT_KEY_HINT.format(short=short, full=full)


def _replay_key(kind: str, partner_id: str, signed_material: str) -> str:
    # A JSON array cannot be confused across its parts, whatever characters they hold.
    framed = json.dumps([kind, partner_id, signed_material], separators=(",", ":"))
    return hashlib.sha256(framed.encode("ascii")).hexdigest()


def _shown(names: Iterable[str]) -> str:
    """Parameter names as they may appear in a message: sorted, escaped, shortened, at most a few."""
    ordered = sorted(names, key=_utf16_order)
    shown = [_shown_name(name) for name in ordered[:_MAX_NAMES_SHOWN]]
    if len(ordered) > _MAX_NAMES_SHOWN:
        shown.append(f"and {len(ordered) - _MAX_NAMES_SHOWN} more")
    return ", ".join(shown)


def _shown_name(name: str) -> str:
    text = name if name.isprintable() else name.encode("unicode_escape").decode("ascii")
    if not text:
        return '""'
    return text if len(text) <= _MAX_NAME_CHARS else text[:_MAX_NAME_CHARS] + "…"
