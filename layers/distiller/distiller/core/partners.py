"""Partner records as stored in the `partners` collection, validated with errors that name the field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

WebhookScope = Literal["appSource", "organization", "both"]
WEBHOOK_SCOPES: tuple[str, ...] = ("appSource", "organization", "both")
LINK_PLATFORMS: tuple[str, ...] = ("dealnow", "pa-app")
PAUSED_STATE = "paused"
PARTNER_STATES: tuple[str, ...] = ("active", PAUSED_STATE)
"""`state`: absent or "active"; "paused" while its endpoint is failing (set by the Dispatcher)."""


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
    lead_organization_ids: tuple[str, ...] = ()
    """`leadOrganizationIds`: the dealer organisations this partner may submit leads to."""
    leads_rate_limit: tuple[int, float] | None = None
    """`leadsRateLimit` as (requests, perSeconds); None: the stack default."""
    organization_user_id: str | None = None
    """`organizationUserId`: the partner-organisation user pre-bound on the buyer side of a DealNow
    offer (POST /sell); None: the partner's organisation is bound without a user."""
    paused: bool = False
    """`state: "paused"`: its endpoint kept failing, so its deliveries are held (`deliver/health.py`)."""


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
        organization_id = _id_text(organization_id)

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

    lead_organization_ids = _default(record.get("leadOrganizationIds"), [])
    if not isinstance(lead_organization_ids, list) or not all(isinstance(o, str | dict) for o in lead_organization_ids):
        raise PartnerRecordError(f"{where}.leadOrganizationIds: expected a list of organisation ids")
    leads_rate_limit = _leads_rate_limit(record.get("leadsRateLimit"), where)
    state = _default(record.get("state"), "active")
    if state not in PARTNER_STATES:
        raise PartnerRecordError(f"{where}.state: {state!r} is not one of {', '.join(PARTNER_STATES)}")
    organization_user_id = record.get("organizationUserId")
    if organization_user_id is not None:
        organization_user_id = _id_text(organization_user_id)

    return Partner(
        partner_id=partner_id,
        active=active,
        organization_id=organization_id,
        webhook_scope=scope,
        link_platform=link_platform,
        webhook_url=url,
        events=tuple(events),
        lead_organization_ids=tuple(_id_text(o) for o in lead_organization_ids),
        leads_rate_limit=leads_rate_limit,
        organization_user_id=organization_user_id,
        paused=state == PAUSED_STATE,
    )


def _id_text(value: Any) -> str:
    """An id as stored: a string, or Extended JSON `{"$oid": ...}`, or an ObjectId."""
    return str(value.get("$oid") if isinstance(value, dict) else value)


def _leads_rate_limit(value: Any, where: str) -> tuple[int, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"requests", "perSeconds"}:
        raise PartnerRecordError(f'{where}.leadsRateLimit: expected {{"requests": N, "perSeconds": S}}')
    requests, seconds = value.get("requests"), value.get("perSeconds")
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 1:
        raise PartnerRecordError(f"{where}.leadsRateLimit.requests: expected an integer >= 1")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= 31 * 86400:
        raise PartnerRecordError(f"{where}.leadsRateLimit.perSeconds: expected a number of seconds in (0, 2678400]")
    return requests, float(seconds)


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
