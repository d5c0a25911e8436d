"""One change's deliveries: its routing keys → the partners they reach → one `Delivery` per
subscribed event, each payload built once per deal a partner reaches the entity through.

Split from `pipeline` (its last step; the module stays within its line budget). The ordinary
path and the --explain path decide alike; the ordinary one builds no explanation objects, no
bodies for a change no partner's scope reaches, and one set of bodies when no deal is involved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distiller.core.identity import event_id, event_key
from distiller.core.model import Delivery, EmittedEvent
from distiller.core.routing import (
    RoutingKeys,
    matched_link,
    matching_subscription,
    routing_keys_via_deals,
    scope_decision,
)

if TYPE_CHECKING:
    from distiller.core.pipeline import FileLinks, PartnerDirectory, _Work


def route(w: _Work, directory: PartnerDirectory, explain: bool, file_links: FileLinks | None) -> None:
    """Append `w`'s deliveries to its outcome (and, with `explain`, why each partner was or was not reached)."""
    assert w.document is not None
    change = w.change
    per_deal: list[tuple[str, RoutingKeys]] = []
    if w.reducer.linked_deals:
        keys, per_deal = routing_keys_via_deals(w.linked, w.found)
        if not per_deal and explain:
            w.outcome.note = f"no linked deal ({', '.join(w.reducer.linked_deals)} empty): routed to nobody"
    else:  # a collection routed by its own fields: `_resolve_references` read them (ROUTING_FIELDS)
        assert w.entity is not None, f"{change.collection}: neither linked deals nor routing fields"
        keys = w.entity.keys(w.found)
    if explain:
        _route_explained(w, directory, keys, per_deal, file_links)
        return
    partners = [partner for partner in directory.candidates(keys) if matched_link(partner, keys) is not None]
    if not partners:
        return
    bodies = _Bodies(w, file_links) if per_deal else None
    shared = _bodies(w, None, {}, file_links) if bodies is None else []  # no deals: one set for all
    token, events, rows, entity_type = change.resume_token, w.outcome.events, w.rows, w.reducer.entity_type
    deliveries = w.outcome.deliveries
    for partner in partners:
        if bodies is not None:
            # A document on several deals reaches each partner with the deal that partner is on.
            deal_id = next((d for d, k in per_deal if matched_link(partner, k) is not None), None)
            built = bodies.of(deal_id)
        else:
            deal_id, built = None, shared
        partner_id, subscribed = partner.partner_id, partner.events
        for emitted, (r, _), body in zip(events, rows, built, strict=True):
            if matching_subscription(subscribed, emitted.event) is None:
                continue
            deliveries.append(_delivery(token, partner_id, emitted, r.entity_type or entity_type, body, deal_id))


class _Bodies:
    """The event bodies as a partner reaching the entity through a deal (or none) receives them,
    each set built once; signed file links built once per row."""

    __slots__ = ("_built", "_deals", "_file_links", "_files", "_w")

    def __init__(self, w: _Work, file_links: FileLinks | None) -> None:
        self._w = w
        self._file_links = file_links
        self._deals = dict(w.linked) if w.linked else {}
        self._built: dict[str | None, list[dict[str, Any]]] = {}
        self._files: dict[int, list[dict[str, Any]]] = {}

    def of(self, deal_id: str | None) -> list[dict[str, Any]]:
        built = self._built.get(deal_id)
        if built is None:
            linked_deal = self._deals.get(deal_id) if deal_id is not None else None
            built = self._built[deal_id] = _bodies(self._w, linked_deal, self._files, self._file_links)
        return built


def _bodies(
    w: _Work, linked_deal: dict[str, Any] | None, files: dict[int, list[dict[str, Any]]], file_links: FileLinks | None
) -> list[dict[str, Any]]:
    """One body per emitted event, for a partner reaching the entity through `linked_deal` (or none);
    `files` keeps each row's signed links, built once whatever the deal."""
    document = w.document
    built = []
    for index, (r, detail) in enumerate(w.rows):
        body = (r.payload or w.reducer.payload)(document, detail, linked_deal)
        if r.files is not None:
            if index not in files:
                files[index] = [_file_entry(file_links, key, name) for key, name in r.files(document)]  # type: ignore[arg-type]
            body["documents"] = files[index]
        built.append(body)
    return built


def _route_explained(
    w: _Work,
    directory: PartnerDirectory,
    keys: RoutingKeys,
    per_deal: list[tuple[str, RoutingKeys]],
    file_links: FileLinks | None,
) -> None:
    """`route` for --explain: every partner is visited and its decision recorded."""
    from distiller.core.pipeline import PartnerRouting

    bodies = _Bodies(w, file_links)
    token, events, entity_type = w.change.resume_token, w.outcome.events, w.reducer.entity_type
    for partner in directory.partners:
        decision = scope_decision(partner, keys)
        routing = PartnerRouting(partner.partner_id, decision.routed, decision.why)
        w.outcome.partners.append(routing)
        if not decision.routed:
            continue
        deal_id = next((d for d, k in per_deal if matched_link(partner, k) is not None), None) if per_deal else None
        for emitted, (r, _), body in zip(events, w.rows, bodies.of(deal_id), strict=True):
            pattern = matching_subscription(partner.events, emitted.event)
            routing.events[emitted.event] = (
                f"not subscribed (events: {list(partner.events)})"
                if pattern is None
                else f"delivered (subscribed by {pattern!r})"
            )
            if pattern is None:
                continue
            w.outcome.deliveries.append(
                _delivery(token, partner.partner_id, emitted, r.entity_type or entity_type, body, deal_id)
            )


def _delivery(
    token: str, partner_id: str, emitted: EmittedEvent, entity_type: str, body: dict[str, Any], deal_id: str | None
) -> Delivery:
    """One partner's delivery of one event: `eventId`/`eventKey`/`entityType` first, then the body."""
    key = event_key(token, partner_id, emitted.event, emitted.emission_index)
    eid = event_id(key)
    payload = {"id": body.get("id"), "eventId": eid, "eventKey": key, "entityType": entity_type}
    payload.update(body)
    if deal_id is not None and "dealId" in payload:
        payload["dealId"] = deal_id
    return Delivery(partner_id, emitted.event, eid, key, payload)


def _file_entry(file_links: FileLinks | None, key: str, filename: str) -> dict[str, Any]:
    if file_links is None:  # no signer configured (a dry run without a bucket): name the file only
        return {"filename": filename, "signedUrl": None, "expiresAt": None}
    return file_links.link(key, filename)
