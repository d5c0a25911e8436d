"""Partner records as stored in the `partners` collection, validated with errors that name the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

WebhookScope = Literal["appSource", "organization", "both"]
WEBHOOK_SCOPES: tuple[str, ...] = ("appSource", "organization", "both")
LINK_PLATFORMS: tuple[str, ...] = ("dealnow", "pa-app")


class PartnerRecordError(ValueError):
    """A partner record that cannot be used; the message names the record and field."""


@dataclass(frozen=True, slots=True)
class Partner:
    partner_id: str
    active: bool = True
    organization_id: str | None = None
    webhook_scope: WebhookScope = "both"
    link_platform: str = "dealnow"
    webhook_url: str | None = None
    events: tuple[str, ...] = ("*",)


def partner_from_record(record: Any, where: str = "partner") -> Partner:
    """Build a `Partner` from its stored shape; raise `PartnerRecordError` naming what is wrong."""
    if not isinstance(record, dict):
        raise PartnerRecordError(f"{where}: expected an object")
    partner_id = record.get("partnerId")
    if not isinstance(partner_id, str) or not partner_id:
        raise PartnerRecordError(f"{where}.partnerId: required non-empty string")
    if not _header_safe(partner_id):
        # It travels in the X-PA-Partner header: a line break or a non-Latin-1 character
        # would fail every POST (or split the request), so the record is refused when loaded.
        raise PartnerRecordError(
            f"partner {partner_id!r}.partnerId: must be printable Latin-1 without line breaks (it is a header value)"
        )
    where = f"partner {partner_id!r}"

    active = _default(record.get("active"), True)
    if not isinstance(active, bool):
        raise PartnerRecordError(f"{where}.active: expected true or false")

    organization_id = record.get("organizationId")
    if organization_id is not None:
        organization_id = str(organization_id.get("$oid") if isinstance(organization_id, dict) else organization_id)

    scope = _default(record.get("webhookScope"), "both")
    if scope not in WEBHOOK_SCOPES:
        raise PartnerRecordError(f"{where}.webhookScope: {scope!r} is not one of {', '.join(WEBHOOK_SCOPES)}")

    link_platform = _default(record.get("linkPlatform"), "dealnow")
    if link_platform not in LINK_PLATFORMS:
        raise PartnerRecordError(f"{where}.linkPlatform: {link_platform!r} is not one of {', '.join(LINK_PLATFORMS)}")

    webhook = _default(record.get("webhook"), {})
    if not isinstance(webhook, dict):
        raise PartnerRecordError(f"{where}.webhook: expected an object")
    url = webhook.get("url")
    if url is not None and not isinstance(url, str):
        raise PartnerRecordError(f"{where}.webhook.url: expected a string")
    events = webhook.get("events")
    if events is None:
        events = ["*"]
    if not isinstance(events, list) or not all(isinstance(e, str) and e for e in events):
        raise PartnerRecordError(f"{where}.webhook.events: expected a list of event names or wildcards")
    # `webhook.secret` (local records only) is read where secrets are loaded, never into a Partner:
    # deployed secrets live in Secrets Manager, and a Partner is logged and explained freely.
    if webhook.get("secret") is not None and not isinstance(webhook.get("secret"), str):
        raise PartnerRecordError(f"{where}.webhook.secret: expected a string")

    return Partner(
        partner_id=partner_id,
        active=active,
        organization_id=organization_id,
        webhook_scope=scope,
        link_platform=link_platform,
        webhook_url=url,
        events=tuple(events),
    )


def _header_safe(value: str) -> bool:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        return False
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def _default(value: Any, default: Any) -> Any:
    """Stored records may carry an explicit null where the field was never set: same as absent."""
    return default if value is None else value
