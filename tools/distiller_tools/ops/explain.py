"""`distiller explain`: why one partner did or did not get one live entity's events.

The routing verdict is the router's own (`distiller.core.routing` on the partner record and the
entity as they are in Mongo now, with the documents routing borrows from), each event the
entity's trigger table can emit with the subscription pattern that covers it, and what the
delivery log holds for that entity and partner. A partner paused by endpoint health is said to be
paused (since when, why, how many deliveries are held), and its `held` log entries read as held,
not as failures.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import IO, Any, TextIO

from distiller.adapters.lookups import MongoLookups
from distiller.core.lookups import PARTNERS_COLLECTION, LookupFailure, id_forms
from distiller.core.partners import Partner, PartnerRecordError, partner_from_record
from distiller.core.reducers import REDUCERS
from distiller.core.routing import (
    ROUTING_FIELDS,
    entity_routing,
    matching_subscription,
    routing_keys,
    scope_decision,
)
from distiller.deliver.log import DELIVERIES_COLLECTION, NEWEST_FIRST, log_line
from distiller_tools.mongo import open_database
from distiller_tools.ops.cli import positive_int
from distiller_tools.partners import health
from distiller_tools.partners.records import InputError, check_partner_id
from distiller_tools.partners.stores import MongoPartners, StoreError

#: `--deal/--listing/--offer` → the collection the entity lives in.
ENTITY_OPTIONS: dict[str, str] = {"deal": "deals", "listing": "seller_listings", "offer": "offers"}

#: Payload field other entities' events name this collection's entity by (an offer's `listingId`,
#: a document's `dealId`); every event names its own entity by `payload.id`.
REFERENCE_FIELDS: dict[str, str] = {"deals": "dealId", "seller_listings": "listingId", "offers": "offerId"}

#: What each attempt shows, in this order.
ATTEMPT_FIELDS = ("attemptedAt", "status", "event", "eventId", "attempt", "statusCode", "error", "deadLettered")


class ExplainError(ValueError):
    """The command cannot answer (unknown partner or entity, bad input): exit 2, message names what."""


@dataclass(frozen=True, slots=True)
class Target:
    collection: str
    entity_id: str


@dataclass(frozen=True, slots=True)
class Found:
    """The partner as the router builds it (None, and why, when the router skips its record)."""

    partner: Partner | None
    skipped: str | None
    record: dict[str, Any]
    held: int
    """Its deliveries in the held store (`held_deliveries`): nonzero while paused or draining."""


def _partner(db: Any, database: str, partner_id: str) -> Found:
    store = MongoPartners(db[PARTNERS_COLLECTION], where=f"mongo {database}.{PARTNERS_COLLECTION}")
    record = store.get(partner_id)
    if record is None:
        raise ExplainError(f"partner {partner_id!r}: not found in {store.where}")
    held = store.held_count(partner_id) or 0
    try:
        return Found(partner_from_record(record, where=f"partner {partner_id!r}"), None, record, held)
    except PartnerRecordError as exc:
        return Found(None, f"partner record is invalid, so the distiller skips it: {exc}", record, held)


def attempts_for(deliveries: Any, partner_id: str, target: Target, limit: int) -> tuple[list[str], list[dict]]:
    """(payload fields matched on, the partner's attempts whose payload names the entity), newest first."""
    fields = ["payload.id"]
    if target.collection in REFERENCE_FIELDS:
        fields.append(f"payload.{REFERENCE_FIELDS[target.collection]}")
    forms = id_forms(target.entity_id)
    query = {"partnerId": partner_id, "$or": [{field: {"$in": forms}} for field in fields]}
    return fields, [_attempt(d) for d in deliveries.find(query, sort=NEWEST_FIRST, limit=limit)]


def _attempt(document: dict[str, Any]) -> dict[str, Any]:
    line = log_line(document)
    payload = line.get("payload") if isinstance(line.get("payload"), dict) else {}
    shown = {name: line.get(name) for name in ATTEMPT_FIELDS}
    shown["entity"] = {"entityType": payload.get("entityType"), "id": payload.get("id")}
    return shown


def _routing(lookups: MongoLookups, partner: Partner | None, skipped: str | None, target: Target) -> dict[str, Any]:
    """The entity, what it borrows, the scope verdict and each event's subscription verdict."""
    document = lookups.documents(target.collection, [target.entity_id]).get(target.entity_id)
    entity: dict[str, Any] = {"collection": target.collection, "id": target.entity_id, "found": document is not None}
    if document is None:
        return {"entity": entity}
    fields = ROUTING_FIELDS[target.collection]
    borrowed, found = [], {}
    for link, ref_id in entity_routing(fields, document).links:
        hit = lookups.documents(link.collection, [ref_id]).get(ref_id)
        if hit is not None:
            found[(link.collection, ref_id)] = hit
        borrowed.append({"via": f"{link.id_path}→{link.collection}", "id": ref_id, "found": hit is not None})
    keys = routing_keys(fields, document, found)
    if partner is None:
        routed, why = False, skipped or "partner record is invalid"
    else:
        decision = scope_decision(partner, keys)
        routed, why = decision.routed, decision.why
    events = []
    for row in REDUCERS[target.collection].rows:
        pattern = matching_subscription(partner.events, row.event) if partner is not None else None
        if not routed:
            verdict = "not routed to this partner"
        elif pattern is None:
            verdict = f"not subscribed (events: {list(partner.events) if partner else []})"
        elif partner is not None and partner.paused:
            verdict = f"held while the partner is paused (subscribed by {pattern!r})"
        else:
            verdict = f"delivered (subscribed by {pattern!r})"
        subscribed = pattern is not None
        events.append({"event": row.event, "trigger": row.trigger_text, "subscribed": subscribed, "why": verdict})
    return {
        "entity": entity,
        "borrowed": borrowed,
        "routing": {
            "routed": routed,
            "why": why,
            "appSources": [list(pair) for pair in keys.app_sources],
            "organizations": [list(pair) for pair in keys.organizations],
        },
        "events": events,
    }


def _partner_summary(found: Found, partner_id: str) -> dict[str, Any]:
    partner = found.partner
    if partner is None:
        return {"partnerId": partner_id, "valid": False}
    summary: dict[str, Any] = {
        "partnerId": partner.partner_id,
        "active": partner.active,
        "webhookScope": partner.webhook_scope,
        "organizationId": partner.organization_id,
        "events": list(partner.events),
        "webhookUrl": partner.webhook_url,
        "paused": partner.paused,
        "heldDeliveries": found.held,
    }
    if partner.paused:
        summary["pause"] = health.pause_note(found.record)
    return summary


def explain(db: Any, database: str, partner_id: str, target: Target, limit: int = 50) -> dict[str, Any]:
    """The whole answer for `--deal/--listing/--offer`; ExplainError for an unknown partner or entity."""
    found = _partner(db, database, partner_id)
    answer = _routing(MongoLookups(db, ttl_seconds=0), found.partner, found.skipped, target)
    fields, attempts = attempts_for(db[DELIVERIES_COLLECTION], partner_id, target, limit)
    if not answer["entity"]["found"]:
        held = f"; the delivery log holds {len(attempts)} attempt(s) naming it" if attempts else ""
        raise ExplainError(f"{target.entity_id!r}: not found in collection {target.collection}{held}")
    return {
        "partner": _partner_summary(found, partner_id),
        **answer,
        "deliveries": {"matchedOn": fields, "limit": limit, "attempts": attempts},
    }


def explain_event_id(db: Any, database: str, partner_id: str, event_id: str, limit: int = 50) -> dict[str, Any]:
    """The attempts of one eventId for the partner, and the routing of the entity they name."""
    found = _partner(db, database, partner_id)
    query = {"partnerId": partner_id, "eventId": event_id}
    attempts = [_attempt(d) for d in db[DELIVERIES_COLLECTION].find(query, sort=NEWEST_FIRST, limit=limit)]
    if not attempts:
        raise ExplainError(f"eventId {event_id!r}: no delivery attempts for partner {partner_id!r}")
    named = attempts[0]["entity"]
    answer: dict[str, Any] = {"partner": _partner_summary(found, partner_id), "eventId": event_id, "named": named}
    collection = REDUCERS[named["entityType"]].collection if named.get("entityType") in REDUCERS else None
    if collection in ROUTING_FIELDS and isinstance(named.get("id"), str) and named["id"]:
        lookups = MongoLookups(db, ttl_seconds=0)
        answer.update(_routing(lookups, found.partner, found.skipped, Target(collection, named["id"])))
    else:
        kind = named.get("entityType")
        answer["note"] = f"entityType {kind!r}: routing is explained for deals, offers, listings and users only"
    answer["deliveries"] = {"matchedOn": ["eventId"], "limit": limit, "attempts": attempts}
    return answer


# -- output ---------------------------------------------------------------------------------------


def render_text(answer: dict[str, Any]) -> str:
    partner = answer["partner"]
    lines = [f"partner {partner['partnerId']}"]
    if partner.get("valid") is False:
        lines[0] += ": invalid record"
    else:
        lines[0] += (
            f": {'active' if partner['active'] else 'INACTIVE'}, scope {partner['webhookScope']}, "
            f"organizationId {partner['organizationId'] or '-'}, events {partner['events']}, "
            f"webhook {partner['webhookUrl'] or '(no URL)'}"
        )
        if partner.get("paused"):
            lines.append(
                f"PAUSED: {partner['pause']}; deliveries are held, not sent ({partner['heldDeliveries']} held; "
                f"`distiller partners enable {partner['partnerId']}` resumes at once)"
            )
        elif partner.get("heldDeliveries"):
            lines.append(f"held: {partner['heldDeliveries']} deliveries, not paused: the health sweep drains them")
    if "eventId" in answer:
        named = answer["named"]
        lines.append(f"eventId {answer['eventId']} names {named.get('entityType')} {named.get('id')}")
    if "note" in answer:
        lines.append(answer["note"])
    entity = answer.get("entity")
    if entity is not None:
        lines.append(f"entity {entity['collection']} {entity['id']}: {'found' if entity['found'] else 'NOT FOUND'}")
    for link in answer.get("borrowed", []):
        lines.append(f"  borrows {link['via']} {link['id']}: {'found' if link['found'] else 'NOT FOUND'}")
    if "routing" in answer:
        routing = answer["routing"]
        lines.append(f"routing: {'ROUTED' if routing['routed'] else 'NOT ROUTED'}: {routing['why']}")
        lines.append("events this entity can emit, and what a change that fires each would do:")
        for event in answer["events"]:
            lines.append(f"  {event['event']:<32} {event['why']}  [when {event['trigger']}]")
    deliveries = answer["deliveries"]
    attempts = deliveries["attempts"]
    lines.append(
        f"delivery log: {len(attempts)} attempt(s), newest first (matched on {', '.join(deliveries['matchedOn'])})"
        + (f"; limit {deliveries['limit']} reached, there may be more" if len(attempts) == deliveries["limit"] else "")
    )
    for a in attempts:
        lines.append(_attempt_line(a))
    return "\n".join(lines) + "\n"


def _attempt_line(a: dict[str, Any]) -> str:
    """One log entry; a `held` one says it was kept, not sent (its `error` is why, not a failure)."""
    if a["status"] == "held":
        why = f": {' '.join(str(a['error']).split())}" if a.get("error") else ""
        return f"  {a['attemptedAt']}  {'held':<10} {a['event']:<28} {a['eventId']}  not sent{why}"
    status = f"{a['status']}{' (dead-lettered)' if a.get('deadLettered') else ''}"
    return (
        f"  {a['attemptedAt']}  {status:<10} {a['event']:<28} {a['eventId']}  attempt {a['attempt']}  "
        f"status {a['statusCode'] if a['statusCode'] is not None else '-'}"
        + (f"  error: {' '.join(str(a['error']).split())}" if a.get("error") else "")
    )


# -- command line ---------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `explain` to the `distiller` command's subparsers."""
    command = subparsers.add_parser(
        "explain",
        help="why a live entity's events did or did not reach a partner",
        description="For one deal, listing or offer (or one eventId) and one partner, on live data: the "
        "partner's routing verdict and reasons (as `distill --explain` gives them), each event the "
        "entity can emit with subscribed-or-not, and the partner's delivery attempts for it, newest "
        "first. Text by default; --json for one JSON document.",
    )
    command.add_argument("--mongo-uri", required=True, metavar="URI", help="the stack's database")
    command.add_argument("--database", default="privateauto", help="database name (default privateauto)")
    command.add_argument("--partner", required=True, metavar="P", help="partner id")
    which = command.add_mutually_exclusive_group(required=True)
    for option, collection in ENTITY_OPTIONS.items():
        which.add_argument(f"--{option}", metavar="ID", help=f"a document of {collection}")
    which.add_argument("--event-id", metavar="ID", help="the attempts of this eventId and the entity they name")
    command.add_argument("--limit", type=positive_int, default=50, metavar="N", help="at most N attempts (default 50)")
    command.add_argument("--json", action="store_true", help="one JSON document instead of text")
    command.set_defaults(run=run_explain)


def _open_database(uri: str, database: str) -> Any:
    """The database at `uri` (the seam tests replace with mongomock)."""
    return open_database(uri, database, "trigger-distiller-explain")


def run_explain(args: argparse.Namespace, stdin: TextIO, stdout: IO[str], stderr: IO[str]) -> int:
    from pymongo.errors import PyMongoError

    try:
        partner_id = check_partner_id(args.partner)
        entity_id = next((getattr(args, o) for o in ENTITY_OPTIONS if getattr(args, o) is not None), None)
        for value, option in ((entity_id, "entity id"), (args.event_id, "--event-id")):
            if value is not None and not value.strip():
                raise ExplainError(f"{option}: must not be empty")
        db = _open_database(args.mongo_uri, args.database)
        if args.event_id is not None:
            answer = explain_event_id(db, args.database, partner_id, args.event_id, args.limit)
        else:
            option = next(o for o in ENTITY_OPTIONS if getattr(args, o) is not None)
            answer = explain(db, args.database, partner_id, Target(ENTITY_OPTIONS[option], entity_id), args.limit)
    except (ExplainError, InputError) as exc:
        print(f"distiller: explain: {exc}", file=stderr)
        return 2
    except (PyMongoError, LookupFailure, StoreError) as exc:
        print(f"distiller: explain: database: {' '.join(str(exc).split())[:300]}", file=stderr)
        return 2
    if args.json:
        stdout.write(json.dumps(answer, default=str, ensure_ascii=False) + "\n")
    else:
        stdout.write(render_text(answer))
    return 0


__all__ = ["ExplainError", "Target", "attempts_for", "explain", "explain_event_id", "register", "render_text"]
