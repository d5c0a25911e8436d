"""Who may receive an entity's events: the spec's webhookScope table and subscription wildcards.

The same rules decide what a partner may read through /data, so they take a document and a
partner and nothing else: no reducer, no change event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distiller.ejson import id_string, plain
from distiller.partners import Partner
from distiller.transitions import MISSING, value_at


@dataclass(frozen=True, slots=True)
class OwnerFallback:
    """Where an entity's organization comes from when it carries none itself."""

    collection: str
    id_path: str
    organization_path: str


@dataclass(frozen=True, slots=True)
class RoutingFields:
    """The fields of one collection that the webhookScope table routes on."""

    app_source: tuple[str, ...]
    organization: tuple[str, ...]
    owner_fallback: OwnerFallback | None = None


ROUTING_FIELDS: dict[str, RoutingFields] = {
    "deals": RoutingFields(("appSource",), ("buyer.organizationId", "seller.organizationId")),
    "offers": RoutingFields(("appSource",), ("offeredByOrganizationId", "offeredToOrganizationId")),
    "seller_listings": RoutingFields(
        ("appSource",),
        ("organizationId",),
        owner_fallback=OwnerFallback("users", "sellerId", "userDetails.organizationId"),
    ),
    "users": RoutingFields(("appRegisteredFrom",), ("userDetails.organizationId",)),
}


@dataclass(frozen=True, slots=True)
class RoutingKeys:
    """An entity's routing values, each with the field it came from (for --explain)."""

    app_sources: tuple[tuple[str, str], ...] = ()
    organizations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    routed: bool
    why: str


def _values(document: dict[str, Any] | None, paths: tuple[str, ...], label: str = "") -> list[tuple[str, str]]:
    found = []
    for path in paths:
        value = value_at(document, path) if document is not None else MISSING
        if value is not MISSING and value is not None and value != "":
            found.append((label + path, id_string(plain(value)) or ""))
    return found


def owner_reference(fields: RoutingFields, document: dict[str, Any]) -> tuple[str, str] | None:
    """`(collection, id)` of the owner to look up, when the document has no organization of its own."""
    fallback = fields.owner_fallback
    if fallback is None or _values(document, fields.organization):
        return None
    owner_id = value_at(document, fallback.id_path)
    if owner_id is MISSING or owner_id is None:
        return None
    return fallback.collection, id_string(plain(owner_id)) or ""


def routing_keys(fields: RoutingFields, document: dict[str, Any], owner: dict[str, Any] | None = None) -> RoutingKeys:
    """Routing values of one entity; `owner` is the looked-up owner when `owner_reference` asked for one."""
    organizations = _values(document, fields.organization)
    if not organizations and fields.owner_fallback is not None and owner is not None:
        fallback = fields.owner_fallback
        organizations = _values(
            owner, (fallback.organization_path,), label=f"{fallback.id_path}→{fallback.collection}."
        )
    return RoutingKeys(tuple(_values(document, fields.app_source)), tuple(organizations))


def matched_link(partner: Partner, keys: RoutingKeys) -> str | None:
    """The routing field through which the partner's webhookScope reaches the entity, or None.

    The one implementation of the webhookScope table: the distiller's router and the /data
    read API both decide through it.
    """
    if not partner.active:
        return None
    if partner.webhook_scope != "organization":
        for field_name, value in keys.app_sources:
            if value == partner.partner_id:
                return field_name
    if partner.webhook_scope != "appSource" and partner.organization_id is not None:
        for field_name, value in keys.organizations:
            if value == partner.organization_id:
                return field_name
    return None


def scope_decision(partner: Partner, keys: RoutingKeys) -> Decision:
    """`matched_link`, with the reason spelled out (for --explain and logs)."""
    if not partner.active:
        return Decision(False, "partner is inactive")
    hit = matched_link(partner, keys)
    scope = partner.webhook_scope
    if hit is not None:
        value = partner.partner_id if any(f == hit for f, _ in keys.app_sources) else partner.organization_id
        return Decision(True, f"scope {scope}: {hit} = {value!r}")
    reasons = []
    if scope != "organization":
        seen = ", ".join(f"{f}={v!r}" for f, v in keys.app_sources) or "no appSource on the entity"
        reasons.append(f"appSource does not match ({seen})")
    if scope != "appSource":
        if partner.organization_id is None:
            reasons.append("partner has no organizationId")
        else:
            seen = ", ".join(f"{f}={v!r}" for f, v in keys.organizations) or "no organization link on the entity"
            reasons.append(f"organization {partner.organization_id!r} not linked ({seen})")
    return Decision(False, f"scope {scope}: " + "; ".join(reasons))


def matching_subscription(patterns: tuple[str, ...], event: str) -> str | None:
    """The first subscription pattern that covers `event`: exact name, `family.*`, or `*`."""
    for pattern in patterns:
        if pattern == "*" or pattern == event:
            return pattern
        if pattern.endswith(".*") and event.startswith(pattern[:-1]):
            return pattern
    return None


def routing_keys_via_deals(
    linked: list[tuple[str, dict[str, Any] | None]],
) -> tuple[RoutingKeys, list[tuple[str, RoutingKeys]]]:
    """Routing values of an entity that belongs to deals (documents, credit reports).

    Returns the union over its deals (labelled `deal <id>.<field>`) and each deal's own keys,
    so a caller can tell which deal a partner reaches it through.
    """
    deal_fields = ROUTING_FIELDS["deals"]
    per_deal = [(deal_id, routing_keys(deal_fields, deal)) for deal_id, deal in linked if deal is not None]
    union = RoutingKeys(
        tuple((f"deal {d}.{f}", v) for d, k in per_deal for f, v in k.app_sources),
        tuple((f"deal {d}.{f}", v) for d, k in per_deal for f, v in k.organizations),
    )
    return union, per_deal
