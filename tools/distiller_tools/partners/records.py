"""Validating what an operator types into `distiller partners`, and turning it into a stored record.

Every check raises `InputError` naming the option (or record field) and what is wrong; the CLI
exits 2 on it. The stored shape is validated by `partner_from_record` (the one validator the
Lambda functions use); this module adds only what a record read at run time cannot check: the
event catalog, the URL's scheme and addresses, unknown keys, and the command-line syntax.
"""

from __future__ import annotations

import base64
import difflib
import re
import secrets
from collections.abc import Iterable
from typing import Any

from distiller.core.partners import LINK_PLATFORMS, WEBHOOK_SCOPES, PartnerRecordError, partner_from_record
from distiller.core.reducers import all_events
from distiller.core.routing import matching_subscription
from distiller.deliver.ssrf import EndpointRefused, EndpointUnresolved, Resolver, resolve_endpoint, system_resolver

#: The keys a partner record may carry; anything else is a typo or a field no code reads. `state`
#: and `health` are endpoint health's (written by the Dispatcher and the health sweep; an operator
#: changes them only through `enable`, never through `set`).
RECORD_KEYS = frozenset(
    {
        "_id",
        "partnerId",
        "active",
        "organizationId",
        "organizationUserId",
        "webhookScope",
        "linkPlatform",
        "webhook",
        "sharedSecret",
        "leadOrganizationIds",
        "leadsRateLimit",
        "state",
        "health",
    }
)
WEBHOOK_KEYS = frozenset({"url", "events", "secret"})
"""`webhook.secret` and the top-level `sharedSecret` appear only in local partners files."""

#: Partner ids that can be part of a Secrets Manager secret name (adapters/secrets.py reads only these).
PARTNER_ID = re.compile(r"[A-Za-z0-9_.@+=-]{1,256}")

SECRET_BYTES = 32
"""Random bytes behind each generated secret (`secrets.token_urlsafe`: 43 characters)."""

CLEAR = "none"
"""The value that clears an optional field in `set` (`--leads-rate-limit none`)."""


class InputError(ValueError):
    """Operator input that cannot be used; the message names the option or field. Exit status 2."""


def catalog_events() -> tuple[str, ...]:
    """Every event name some reducer emits, once each, in table order."""
    return tuple(dict.fromkeys(all_events()))


def check_partner_id(partner_id: str) -> str:
    """The id rules the stack applies: a header-safe string (X-PA-Partner) that can name a secret."""
    if not PARTNER_ID.fullmatch(partner_id):
        raise InputError(
            f"partner id {partner_id!r}: use 1-256 characters of A-Z a-z 0-9 _ . @ + = - "
            "(it names the partner's secrets in Secrets Manager)"
        )
    try:
        partner_from_record({"partnerId": partner_id})
    except PartnerRecordError as exc:
        raise InputError(str(exc)) from None
    return partner_id


def parse_events(text: str, catalog: Iterable[str] | None = None) -> list[str]:
    """`--events e1,e2` or `'*'`: each a catalog name or a wildcard that matches at least one."""
    names = catalog_events() if catalog is None else tuple(catalog)
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise InputError(f"--events {text!r}: expected event names or wildcards separated by commas")
    for item in items:
        if not any(matching_subscription((item,), name) for name in names):
            raise InputError(f"--events: {unknown_event(item, names)}")
    return list(dict.fromkeys(items))


def unknown_event(item: str, names: tuple[str, ...]) -> str:
    families = sorted({name.split(".", 1)[0] + ".*" for name in names})
    if "*" in item:
        near = difflib.get_close_matches(item, families, n=3)
        what = f"{item!r} matches no catalog event"
    else:
        near = difflib.get_close_matches(item, names, n=3)
        what = f"{item!r} is not a catalog event"
    hint = f" (did you mean {', '.join(near)}?)" if near else f" (wildcards: *, {', '.join(families)})"
    return what + hint


def parse_scope(text: str) -> str:
    if text not in WEBHOOK_SCOPES:
        raise InputError(f"--scope {text!r}: expected one of {', '.join(WEBHOOK_SCOPES)}")
    return text


def parse_link_platform(text: str) -> str:
    if text not in LINK_PLATFORMS:
        raise InputError(f"--link-platform {text!r}: expected one of {', '.join(LINK_PLATFORMS)}")
    return text


def parse_id_list(text: str, option: str) -> list[str]:
    """A comma-separated list of ids; an empty string is the empty list (`set` clears with it)."""
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    if any(not item for item in items):
        raise InputError(f"{option} {text!r}: an empty id between commas")
    return list(dict.fromkeys(items))


def parse_rate_limit(text: str) -> dict[str, int | float] | None:
    """`--leads-rate-limit N/SECONDS` (e.g. 30/60) as stored; `none`: the stack default."""
    if text == CLEAR:
        return None
    requests, slash, seconds = text.partition("/")
    try:
        value: dict[str, int | float] = {"requests": int(requests), "perSeconds": _number(seconds)}
    except ValueError:
        value = {}
    if not slash or not value:
        raise InputError(f"--leads-rate-limit {text!r}: expected N/SECONDS (e.g. 30/60) or {CLEAR}")
    try:
        partner_from_record({"partnerId": "x", "leadsRateLimit": value})
    except PartnerRecordError as exc:
        field = str(exc).split(".", 1)[-1]
        raise InputError(f"--leads-rate-limit {text!r}: {field}") from None
    return value


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def check_url(url: str, *, allow_private: bool = False, resolver: Resolver = system_resolver) -> str:
    """The webhook URL: https, resolving now only to public addresses (the sender checks again)."""
    try:
        resolve_endpoint(url, allow_private=allow_private, resolver=resolver)
    except EndpointUnresolved as exc:
        raise InputError(f"--url {url!r}: {exc} (the endpoint must resolve when it is registered)") from None
    except EndpointRefused as exc:
        hint = "" if allow_private else " (--allow-private-endpoints: local development only)"
        raise InputError(f"--url {url!r}: {exc}{hint}") from None
    return url


def check_record(record: dict[str, Any], where: str) -> dict[str, Any]:
    """A whole record: no unknown keys, and valid for `partner_from_record`."""
    unknown = sorted(set(record) - RECORD_KEYS)
    webhook = record.get("webhook")
    if isinstance(webhook, dict):
        unknown += [f"webhook.{key}" for key in sorted(set(webhook) - WEBHOOK_KEYS)]
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if record.get("health") is not None and not isinstance(record["health"], dict):
        raise InputError(f"{where}.health: expected an object (the pause state the stack writes)")
    try:
        partner_from_record(record, where=where)
    except PartnerRecordError as exc:
        raise InputError(str(exc)) from None
    return record


def apply_changes(record: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`record` with `changes` (dotted `webhook.url` / `webhook.events` keys; None removes the key)."""
    updated = {**record, "webhook": dict(record.get("webhook") or {})}
    for key, value in changes.items():
        target, name = (updated["webhook"], key.split(".", 1)[1]) if key.startswith("webhook.") else (updated, key)
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return updated


def new_webhook_secret() -> str:
    """A fresh webhook secret: 32 random bytes, URL-safe text (an HMAC key partners paste as is)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def new_shared_secret() -> str:
    """A fresh shared secret, delivered base64: the spec has partners decode it to UTF-8 text before
    signing, so what is encoded is URL-safe text from 32 random bytes, not the raw bytes."""
    return base64.b64encode(secrets.token_urlsafe(SECRET_BYTES).encode("ascii")).decode("ascii")
