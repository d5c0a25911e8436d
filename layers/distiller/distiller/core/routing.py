"""Who may receive an entity's events: the spec's webhookScope table and subscription wildcards.

The same rules decide what a partner may read through /data, so they take a document and a
partner and nothing else: no reducer, no change event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from distiller.core.ejson import WRAPPER_KEYS, id_string, plain
from distiller.core.lazy_ejson import LazyDocument
from distiller.core.partners import Partner
from distiller.core.plain_read import oid_text, plain_parts
from distiller.core.transitions import MISSING, split_path, value_at


@dataclass(frozen=True, slots=True)
class Borrowed:
    """Routing values an entity takes from a document it references (looked up once per batch)."""

    collection: str
    id_path: str
    app_source: tuple[str, ...] = ()
    organization: tuple[str, ...] = ()
    only_without_own_organization: bool = False
    """Borrow only when the entity carries no organization of its own (a listing's seller)."""


@dataclass(frozen=True, slots=True)
class RoutingFields:
    """The fields of one collection that the webhookScope table routes on."""

    app_source: tuple[str, ...]
    organization: tuple[str, ...]
    borrowed: tuple[Borrowed, ...] = ()


ROUTING_FIELDS: dict[str, RoutingFields] = {
    # "Only if offer.appSource === partnerId or deal.appSource === partnerId": a deal also routes on
    # the appSource of the offer it came from (`offerId`), whether or not it carries its own.
    "deals": RoutingFields(
        ("appSource",),
        ("buyer.organizationId", "seller.organizationId"),
        borrowed=(Borrowed("offers", "offerId", app_source=("appSource",)),),
    ),
    "offers": RoutingFields(("appSource",), ("offeredByOrganizationId", "offeredToOrganizationId")),
    # "Listing owner is in partner.organizationId": a listing without an organization of its own
    # routes through its seller user.
    "seller_listings": RoutingFields(
        ("appSource",),
        ("organizationId",),
        borrowed=(
            Borrowed(
                "users", "sellerId", organization=("userDetails.organizationId",), only_without_own_organization=True
            ),
        ),
    ),
    "users": RoutingFields(("appRegisteredFrom",), ("userDetails.organizationId",)),
}

References = Mapping[tuple[str, str], dict[str, Any]]
"""Borrowed-from documents by `(collection, id)`, as `references` names them."""


# Built once or twice per change event, so not frozen: a frozen dataclass's `__init__` (one
# `object.__setattr__` per field) cost ~0.2 µs more per object. Nothing assigns to them after
# construction; `unsafe_hash` keeps them hashable as they were.
@dataclass(slots=True, unsafe_hash=True)
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
        text = _routing_text(document, path)
        if text is not None:
            found.append((label + path, text))
    return found


def _routing_text(document: dict[str, Any] | None, path: str) -> str | None:
    """The routing value at `path` as text (`id_string(plain(value))`), or None when the field is
    absent, null or empty. Read with `plain_at`: most are strings or ObjectIds, never decoded."""
    if document is None:
        return None
    lazy = type(document) is LazyDocument
    if lazy or type(document) is dict:
        # A text or a raw `{"$oid": hex}` at `field`, or at `field.child` through a raw object of a
        # lazy document: `plain_at`'s answer, without its walk (`payloads.FieldTable` reads alike).
        parent, dot, child = path.partition(".")
        value = dict.get(document, parent, MISSING)
        if dot:
            fits = lazy and "." not in child and type(value) is dict and WRAPPER_KEYS is not None
            value = value.get(child, MISSING) if fits and WRAPPER_KEYS.isdisjoint(value) else MISSING  # type: ignore[union-attr]
        if type(value) is str and value:
            return value
        if type(value) is dict and lazy:
            text = oid_text(value)
            if text is not None:
                return text
    value = plain_parts(document, split_path(path), path)
    if value is MISSING:
        return None
    if type(value) is str and value:
        return value
    if value is not None and value != "":
        return id_string(value) or ""
    raw = value_at(document, path)  # null or empty once plain: was the field itself?
    if raw is None or raw == "":
        return None
    return id_string(plain(raw)) or ""


@dataclass(slots=True, unsafe_hash=True)  # not frozen: see `RoutingKeys`
class EntityRouting:
    """What an entity routes on by itself, and the links it borrows routing values through.

    Read from the document once: the pipeline asks for the links (to look them up for the whole
    batch) and later for the keys, and reading the same fields twice showed in the profile.
    """

    app_sources: tuple[tuple[str, str], ...]
    organizations: tuple[tuple[str, str], ...]
    links: tuple[tuple[Borrowed, str], ...]
    """Each borrowed link the entity uses, with the referenced id."""

    def references(self) -> list[tuple[str, str]]:
        """`(collection, id)` of every document the entity borrows routing values from."""
        return [(borrowed.collection, ref_id) for borrowed, ref_id in self.links]

    def keys(self, found: References | None = None) -> RoutingKeys:
        """The entity's routing values, with those borrowed from the `found` documents."""
        if not self.links:
            return RoutingKeys(self.app_sources, self.organizations)
        app_sources = list(self.app_sources)
        organizations = list(self.organizations)
        for borrowed, ref_id in self.links:
            target = (found or {}).get((borrowed.collection, ref_id))
            if target is not None:
                label = f"{borrowed.id_path}→{borrowed.collection}."
                app_sources += _values(target, borrowed.app_source, label)
                organizations += _values(target, borrowed.organization, label)
        return RoutingKeys(tuple(app_sources), tuple(organizations))


def entity_routing(fields: RoutingFields, document: dict[str, Any]) -> EntityRouting:
    """Read an entity's routing fields (a listing with an organization of its own does not borrow
    its seller's)."""
    app_sources = _values(document, fields.app_source)
    organizations = _values(document, fields.organization)
    links = []
    for borrowed in fields.borrowed:
        if borrowed.only_without_own_organization and organizations:
            continue
        ref = _routing_text(document, borrowed.id_path)
        if ref is not None:
            links.append((borrowed, ref))
    return EntityRouting(tuple(app_sources), tuple(organizations), tuple(links))


def references(fields: RoutingFields, document: dict[str, Any]) -> list[tuple[str, str]]:
    """`(collection, id)` of every document the entity borrows routing values from, to look up."""
    return entity_routing(fields, document).references()


def routing_keys(fields: RoutingFields, document: dict[str, Any], found: References | None = None) -> RoutingKeys:
    """Routing values of one entity; `found` holds the documents `references` asked for."""
    return entity_routing(fields, document).keys(found)


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


@lru_cache(maxsize=4096)
def matching_subscription(patterns: tuple[str, ...], event: str) -> str | None:
    """The first subscription pattern that covers `event`: exact name, `family.*`, or `*`.

    Cached: partners and events are few, and every delivery asks (the answer depends on nothing else).
    """
    for pattern in patterns:
        if pattern == "*" or pattern == event:
            return pattern
        if pattern.endswith(".*") and event.startswith(pattern[:-1]):
            return pattern
    return None


def routing_keys_via_deals(
    linked: list[tuple[str, dict[str, Any] | None]], found: References | None = None
) -> tuple[RoutingKeys, list[tuple[str, RoutingKeys]]]:
    """Routing values of an entity that belongs to deals (documents, credit reports).

    Returns the union over its deals (labelled `deal <id>.<field>`) and each deal's own keys,
    so a caller can tell which deal a partner reaches it through.
    """
    deal_fields = ROUTING_FIELDS["deals"]
    per_deal = [(deal_id, routing_keys(deal_fields, deal, found)) for deal_id, deal in linked if deal is not None]
    union = RoutingKeys(
        tuple((f"deal {d}.{f}", v) for d, k in per_deal for f, v in k.app_sources),
        tuple((f"deal {d}.{f}", v) for d, k in per_deal for f, v in k.organizations),
    )
    return union, per_deal
