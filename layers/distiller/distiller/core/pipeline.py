"""The path of a batch of change events: reducer → router → payload → deliveries.

Pure apart from the `Lookups` port: no AWS, no I/O of its own. Lookups for a whole batch are
made together (one `$in` per collection), and one bad record becomes a `RecordError` next to
the others' results instead of failing the batch.
"""

from __future__ import annotations

import gc
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from distiller.core.ejson import id_string, plain
from distiller.core.lazy_ejson import ExtendedJSONError
from distiller.core.lookups import Lookups
from distiller.core.model import DOCUMENT_OPERATIONS, ChangeEvent, Delivery, EmittedEvent, RecordError
from distiller.core.partners import Partner
from distiller.core.reducers import REDUCERS
from distiller.core.reducers.rules import Reducer, Row
from distiller.core.route import route
from distiller.core.routing import (
    ROUTING_FIELDS,
    EntityRouting,
    RoutingKeys,
    entity_routing,
    references,
)
from distiller.core.transitions import MISSING, Transitions, value_at

logger = logging.getLogger(__name__)


class FileLinks(Protocol):
    """Signs a stored file's key into a short-lived link (`distiller.adapters.file_links.FileLinks`)."""

    def link(self, key: str, filename: str) -> dict[str, Any]:
        """`{filename, signedUrl, expiresAt}` for the file at `key`."""
        ...


@dataclass(slots=True)
class PartnerRouting:
    """Why one partner did or did not receive one change's events (the --explain answer)."""

    partner_id: str
    routed: bool
    why: str
    events: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True, init=False)
class ChangeOutcome:
    """Everything the distiller decided about one change event.

    Built once per change event: its `__init__` is written out, as the dataclass one calls a
    default factory per list (the same fields, defaults and keywords).
    """

    change: ChangeEvent
    events: list[EmittedEvent] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    partners: list[PartnerRouting] = field(default_factory=list)
    note: str | None = None
    linked_deals: list[dict[str, Any]] = field(default_factory=list)
    error: RecordError | None = None
    """Set in --explain mode when the change could not be routed (e.g. its deal is missing)."""

    def __init__(
        self,
        change: ChangeEvent,
        events: list[EmittedEvent] | None = None,
        deliveries: list[Delivery] | None = None,
        partners: list[PartnerRouting] | None = None,
        note: str | None = None,
        linked_deals: list[dict[str, Any]] | None = None,
        error: RecordError | None = None,
    ) -> None:
        self.change = change
        self.events = [] if events is None else events
        self.deliveries = [] if deliveries is None else deliveries
        self.partners = [] if partners is None else partners
        self.note = note
        self.linked_deals = [] if linked_deals is None else linked_deals
        self.error = error

    def explain(self) -> dict[str, Any]:
        change = self.change
        return {
            "origin": change.origin,
            "source": change.source,
            "collection": change.collection,
            "operationType": change.operation_type,
            "documentId": id_string(change.document_id),
            "resumeToken": change.resume_token,
            "preImage": change.has_pre_image,
            "events": [
                {"event": e.event, "emissionIndex": e.emission_index, "trigger": e.trigger, **e.detail}
                for e in self.events
            ],
            "partners": [
                {"partnerId": p.partner_id, "routed": p.routed, "why": p.why, "events": p.events} for p in self.partners
            ],
            "deliveries": len(self.deliveries),
            **({"linkedDeals": self.linked_deals} if self.linked_deals else {}),
            **({"note": self.note} if self.note else {}),
        }


class _Work:
    """One change on its way through the batch's steps (internal: a plain slotted class, built
    once per change without a dataclass's default factories)."""

    __slots__ = ("change", "document", "entity", "found", "index", "linked", "outcome", "reducer", "rows")

    def __init__(self, change: ChangeEvent, reducer: Reducer, outcome: ChangeOutcome, index: int) -> None:
        self.change = change
        self.reducer = reducer
        self.outcome = outcome
        self.index = index
        self.document: dict[str, Any] | None = None
        self.rows: list[tuple[Row, dict[str, Any]]] = []
        self.found: dict[tuple[str, str], dict[str, Any]] = {}
        """Documents routing borrows values from, by `(collection, id)` (`routing.references`)."""
        self.linked: list[tuple[str, dict[str, Any] | None]] = []
        """(deal id, deal) for each deal the entity belongs to (documents, credit reports)."""
        self.entity: EntityRouting | None = None
        """The entity's own routing fields and links, read once for the lookups and the routing."""


class PartnerDirectory:
    """Partners indexed by the values routing matches on, so a change only visits its candidates."""

    def __init__(self, partners: list[Partner]) -> None:
        self.partners = partners
        self._order = {p.partner_id: i for i, p in enumerate(partners)}
        self._by_id = {p.partner_id: p for p in partners}
        self._by_org: dict[str, list[Partner]] = defaultdict(list)
        for p in partners:
            if p.organization_id:
                self._by_org[p.organization_id].append(p)

    def candidates(self, keys: RoutingKeys) -> list[Partner]:
        """Partners that could match `keys` under some scope, in directory order."""
        order = self._order
        seen: dict[int, Partner] = {}  # by directory position: one per partnerId, sorted without a key function
        for _, value in keys.app_sources:
            partner = self._by_id.get(value)
            if partner is not None:
                seen[order[partner.partner_id]] = partner
        for _, value in keys.organizations:
            for partner in self._by_org.get(value, ()):
                seen[order[partner.partner_id]] = partner
        if len(seen) < 2:
            return list(seen.values())
        return [seen[position] for position in sorted(seen)]


def distill(
    items: Iterable[ChangeEvent | RecordError],
    lookups: Lookups,
    *,
    explain: bool = False,
    file_links: FileLinks | None = None,
) -> list[ChangeOutcome | RecordError]:
    """Distill a batch: one result per input item, in input order.

    `LookupFailure` propagates: the database being unreachable is a reason to retry the batch,
    not to drop or park its records.

    The cyclic garbage collector is paused for the batch (`collector_paused`).
    """
    with collector_paused():
        return _distill_batch(items, lookups, explain, file_links)


@contextmanager
def collector_paused() -> Iterator[bool]:
    """Pause the cyclic garbage collector for one batch, if it was on (yields whether it was).

    A batch allocates many short-lived, acyclic objects (freed by reference counting), and
    collections triggered mid-batch kept re-scanning the batch's growing results. Callers that
    parse a batch before distilling it (the CLI, the Lambda ingest flow) hold the pause over
    both; whatever cyclic garbage a batch leaves is collected after it.
    """
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        yield collecting
    finally:
        if collecting:
            gc.enable()


def _distill_batch(
    items: Iterable[ChangeEvent | RecordError], lookups: Lookups, explain: bool, file_links: FileLinks | None
) -> list[ChangeOutcome | RecordError]:
    results: list[ChangeOutcome | RecordError] = []
    work: list[_Work] = []
    for item in items:
        if isinstance(item, RecordError):
            results.append(item)
            continue
        outcome = ChangeOutcome(item)
        results.append(outcome)
        reducer = REDUCERS.get(item.collection)
        if item.operation_type not in DOCUMENT_OPERATIONS:
            outcome.note = (
                f"{item.operation_type}: no partner event (physical deletes and stream events carry no document)"
            )
        elif reducer is None:
            outcome.note = f"no reducer for collection {item.collection!r}"
        else:
            work.append(_Work(item, reducer, outcome, len(results) - 1))

    if work:
        _resolve_documents(work, lookups, results)
        work = [w for w in work if w.document is not None]
        _reduce(work, results)
        work = [w for w in work if w.rows]
        _resolve_linked_deals(work, lookups, results, explain)
        work = [w for w in work if isinstance(results[w.index], ChangeOutcome) and w.rows]
        _resolve_references(work, lookups, results)
        work = [w for w in work if isinstance(results[w.index], ChangeOutcome)]
        directory = PartnerDirectory(lookups.partners()) if work else PartnerDirectory([])
        for w in work:
            try:
                route(w, directory, explain, file_links)
            except ExtendedJSONError as exc:
                _replace(results, w, RecordError(w.change.origin, str(exc)))
            except Exception as exc:  # one unroutable record must not take the batch down
                logger.exception("routing failed on %s", w.change.origin)
                _replace(results, w, RecordError(w.change.origin, f"routing failed: {exc!r}"))
    return results


def _replace(results: list[ChangeOutcome | RecordError], w: _Work, error: RecordError) -> None:
    results[w.index] = error


def _resolve_documents(work: list[_Work], lookups: Lookups, results: list[ChangeOutcome | RecordError]) -> None:
    """Use each change's post-image; fetch the ones an update arrived without, in one query per collection."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for w in work:
        if w.change.full_document is not None:
            w.document = w.change.full_document
        else:
            wanted[w.change.collection].add(id_string(w.change.document_id) or "")
    fetched = {collection: lookups.documents(collection, ids) for collection, ids in wanted.items()}
    for w in work:
        if w.document is None:
            doc_id = id_string(w.change.document_id) or ""
            w.document = fetched[w.change.collection].get(doc_id)
            if w.document is None:
                _replace(
                    results,
                    w,
                    RecordError(
                        w.change.origin,
                        f"{w.change.operation_type} of {w.change.collection} {doc_id} carries no fullDocument "
                        "and the document was not found",
                    ),
                )


def _reduce(work: list[_Work], results: list[ChangeOutcome | RecordError]) -> None:
    for w in work:
        try:
            w.rows = w.reducer.emissions(Transitions(w.change, w.document))
        except ExtendedJSONError as exc:  # a field the rules read holds a malformed wrapper
            _replace(results, w, RecordError(w.change.origin, str(exc)))
            w.rows = []
            continue
        except Exception as exc:  # a record the rules cannot read must not take the batch down
            logger.exception("reducer %s failed on %s", w.reducer.collection, w.change.origin)
            _replace(results, w, RecordError(w.change.origin, f"{w.reducer.collection} reducer failed: {exc!r}"))
            w.rows = []
            continue
        w.outcome.events = [
            EmittedEvent(r.event, index, f"{w.change.collection} {r.trigger_text}", detail)
            for index, (r, detail) in enumerate(w.rows)
        ]
        if not w.rows:
            w.outcome.note = "no trigger row matched this change"


def _resolve_references(work: list[_Work], lookups: Lookups, results: list[ChangeOutcome | RecordError]) -> None:
    """Documents routing borrows values from (a listing's seller, a deal's offer), for every entity and
    every linked deal of the batch: one query per collection."""
    wanted: dict[str, set[str]] = defaultdict(set)
    refs: list[list[tuple[str, str]]] = []
    for w in work:
        fields = ROUTING_FIELDS.get(w.change.collection)
        try:
            if fields is not None and w.document is not None:
                w.entity = entity_routing(fields, w.document)
            mine = w.entity.references() if w.entity is not None else []
        except ExtendedJSONError as exc:  # a routing field holds a malformed wrapper
            _replace(results, w, RecordError(w.change.origin, str(exc)))
            mine = []
        if w.linked:
            deal_fields = ROUTING_FIELDS["deals"]
            mine += [ref for _, deal in w.linked if deal is not None for ref in references(deal_fields, deal)]
        refs.append(mine)
        for collection, ref_id in mine:
            wanted[collection].add(ref_id)
    fetched = {collection: lookups.documents(collection, ids) for collection, ids in wanted.items()}
    for w, mine in zip(work, refs, strict=True):
        for collection, ref_id in mine:
            document = fetched[collection].get(ref_id)
            if document is None:
                logger.warning("%s %s referenced by %s not found", collection, ref_id, w.change.origin)
            else:
                w.found[(collection, ref_id)] = document


def linked_deal_ids(reducer: Reducer, document: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    for path in reducer.linked_deals:
        value = value_at(document, path)
        for item in value if isinstance(value, list) else [value]:
            text = id_string(plain(item)) if item is not MISSING and item is not None else None
            if text and text not in ids:
                ids.append(text)
    return ids


def _resolve_linked_deals(
    work: list[_Work], lookups: Lookups, results: list[ChangeOutcome | RecordError], explain: bool
) -> None:
    """Documents and credit reports route through their deals: fetched together, one query per batch.

    A deal that cannot be found (not replicated yet, or a broken link) makes the record a
    retryable error: reported, and retried like any lookup failure, never silently dropped.
    """
    wanted: set[str] = set()
    for w in work:
        if w.reducer.linked_deals and w.document is not None:
            try:
                w.linked = [(deal_id, None) for deal_id in linked_deal_ids(w.reducer, w.document)]
            except ExtendedJSONError as exc:  # a deal link holds a malformed wrapper
                _replace(results, w, RecordError(w.change.origin, str(exc)))
                w.rows = []
            wanted.update(deal_id for deal_id, _ in w.linked)
    if not wanted:
        return
    deals = lookups.documents("deals", wanted)
    for w in work:
        if not w.linked:
            continue
        w.linked = [(deal_id, deals.get(deal_id)) for deal_id, _ in w.linked]
        w.outcome.linked_deals = [{"dealId": deal_id, "found": deal is not None} for deal_id, deal in w.linked]
        missing = [deal_id for deal_id, deal in w.linked if deal is None]
        if missing:
            logger.error("linked deal(s) %s of %s not found", ", ".join(missing), w.change.origin)
            error = RecordError(
                w.change.origin,
                f"{w.change.collection} {id_string(w.change.document_id)}: linked deal(s) "
                f"{', '.join(missing)} not found",
                retryable=True,
            )
            if explain:  # keep the explanation (which lookup failed) and report the error beside it
                w.outcome.error = error
                w.outcome.note = f"not routed: {error.reason} (retried like a lookup failure)"
                w.rows = []
            else:
                _replace(results, w, error)


def deliveries_of(results: Iterable[ChangeOutcome | RecordError]) -> list[Delivery]:
    return [d for r in results if isinstance(r, ChangeOutcome) for d in r.deliveries]


__all__ = ["ChangeOutcome", "PartnerRouting", "deliveries_of", "distill"]
