"""Partner-scoped reads behind the /data endpoints.

A partner reads exactly what routing would deliver to it. The webhookScope rules live once, in
`distiller.core.routing`: `scope_filter` translates a collection's `RoutingFields` (the same table the
router reads) into a Mongo filter so lists page and count in the database, and every document a
query returns is then decided again by `routing.matched_link`, the router's own decision. A
document the filter let through but the router refuses is dropped and logged as an error (it
means the two disagree, which `tests/integration/test_api_data.py` checks never happens for the
shapes the data model has). Documents, generated documents and credit reports route through
their deal(s) with `routing.routing_keys_via_deals`, as in the pipeline.

Something outside the partner's scope reads as absent (`None`): the API answers 404 for both.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from distiller.adapters.file_links import FileLinks
from distiller.api import dto
from distiller.api.scope import both, matching, scope_filter
from distiller.core.ejson import id_string, plain
from distiller.core.lookups import id_forms, unambiguous_by_id
from distiller.core.partners import Partner
from distiller.core.pipeline import linked_deal_ids
from distiller.core.reducers import REDUCERS
from distiller.core.reducers.deals import TITLE_FILES
from distiller.core.reducers.signatures import SIGNED_FILES
from distiller.core.routing import (
    ROUTING_FIELDS,
    Borrowed,
    References,
    RoutingFields,
    matched_link,
    references,
    routing_keys,
    routing_keys_via_deals,
)
from distiller.deliver.log import DELIVERIES_COLLECTION, NEWEST_FIRST, PARTNER_STATUSES, attempts_query

logger = logging.getLogger(__name__)

DEALS = "deals"
OFFERS = "offers"
LISTINGS = "seller_listings"
DOCUMENTS = "documents"
GENERATED_DOCUMENTS = "platoforms_generated_documents"
CREDIT_REPORTS = "credit_reports"

#: Lists are newest first; `_id` breaks ties so pages never overlap or skip.
ENTITY_ORDER = [("createdAt", -1), ("_id", -1)]
#: A deal's documents are listed oldest first, as they were added.
DOCUMENT_ORDER = [("createdAt", 1), ("_id", 1)]

#: The credit report row's files, as the `deal.loan_payoff_docs` event carries them.
LOAN_PAYOFF_FILES = next(r.files for r in REDUCERS[CREDIT_REPORTS].rows if r.event == "deal.loan_payoff_docs")


@dataclass
class Page:
    data: list[dict[str, Any]]
    total: int
    """Every in-scope document matching the filters, across all pages."""


def _check_page(page: int, limit: int) -> None:
    if page < 0:
        raise ValueError("page: must be 0 or more")
    if limit < 1:
        raise ValueError("limit: must be 1 or more")


class PartnerData:
    """The /data reads for one database; every method takes the authenticated partner."""

    def __init__(self, database: Database, file_links: FileLinks | None = None) -> None:
        self._db = database
        self._file_links = file_links

    # ----------------------------------------------------------------------------------------
    # Deals, offers, listings
    # ----------------------------------------------------------------------------------------

    def list_deals(self, partner: Partner, page: int, limit: int, status: str | None) -> Page:
        page_of = self._list(partner, DEALS, page, limit, None if status is None else {"status": status})
        return Page(self._deal_dtos(page_of.data), page_of.total)

    def get_deal(self, partner: Partner, deal_id: str) -> dict[str, Any] | None:
        deal = self._find(partner, DEALS, deal_id)
        return None if deal is None else self._deal_dtos([deal])[0]

    def list_offers(self, partner: Partner, page: int, limit: int, status: str | None) -> Page:
        """`status` is the external vocabulary (`rejected`, `cancelled`), as the offers show it."""
        where = None if status is None else {"status": {"$in": dto.internal_offer_statuses(status)}}
        page_of = self._list(partner, OFFERS, page, limit, where)
        return Page([dto.offer_dto(o) for o in page_of.data], page_of.total)

    def get_offer(self, partner: Partner, offer_id: str) -> dict[str, Any] | None:
        offer = self._find(partner, OFFERS, offer_id)
        return None if offer is None else dto.offer_dto(offer)

    def list_listings(self, partner: Partner, page: int, limit: int, status: str | None) -> Page:
        page_of = self._list(partner, LISTINGS, page, limit, None if status is None else {"status": status})
        return Page([dto.listing_dto(x) for x in page_of.data], page_of.total)

    def get_listing(self, partner: Partner, listing_id: str) -> dict[str, Any] | None:
        listing = self._find(partner, LISTINGS, listing_id)
        return None if listing is None else dto.listing_dto(listing)

    # ----------------------------------------------------------------------------------------
    # Documents
    # ----------------------------------------------------------------------------------------

    def deal_documents(self, partner: Partner, deal_id: str) -> dict[str, Any] | None:
        """Title attachment + `documents` rows + generated documents + loan payoff files of one
        in-scope deal, every file freshly signed (4 hours)."""
        deal = self._find(partner, DEALS, deal_id)
        if deal is None:
            return None
        own_id = id_string(plain(deal["_id"])) or ""
        entries = []
        for collection in (DOCUMENTS, GENERATED_DOCUMENTS):
            for document in self._documents_of(collection, own_id):
                entries.append(dto.deal_document_entry(document, self._signed(SIGNED_FILES(document)), collection))
        for document in self._documents_of(CREDIT_REPORTS, own_id):
            files = LOAN_PAYOFF_FILES(document)
            if files:
                entries.append(dto.deal_document_entry(document, self._signed(files), CREDIT_REPORTS))
        return {
            "deal": {"id": own_id, "guid": plain(deal.get("guid"))},
            "title": self._signed(TITLE_FILES(deal)),
            "documents": entries,
        }

    def document(self, partner: Partner, document_id: str) -> dict[str, Any] | None:
        """A `documents` row, when one of its deals is the partner's."""
        entitled = self._entitled_row(partner, DOCUMENTS, document_id)
        if entitled is None:
            return None
        document, via = entitled
        return dto.document_dto(document, self._signed(SIGNED_FILES(document)), via)

    def generated_document(self, partner: Partner, document_id: str) -> dict[str, Any] | None:
        """A `platoforms_generated_documents` row, when one of its deals (`sharedDeals`) is the partner's."""
        entitled = self._entitled_row(partner, GENERATED_DOCUMENTS, document_id)
        if entitled is None:
            return None
        return dto.generated_document_dto(entitled[0], self._signed(SIGNED_FILES(entitled[0])))

    def readable_files(self, partner: Partner, entity_type: str, entity_id: str) -> list[tuple[str, str]] | None:
        """The files (key, filename) of the entity an event was about, when `partner` may read that
        entity today; None when it may not (out of scope now, gone, or an unknown type).

        A replay re-signs links, so it asks the same question a read would, on the entity as it is
        now: an event delivered while a deal was the partner's does not keep its files readable
        after the deal moved out of the partner's scope.
        """
        if not entity_type or not entity_id:
            return None
        reducer = REDUCERS.get(entity_type)
        if reducer is not None and reducer.linked_deals:  # documents, generated documents, credit reports
            files = LOAN_PAYOFF_FILES if reducer.collection == CREDIT_REPORTS else SIGNED_FILES
            for name in (reducer.collection, *reducer.aliases):
                entitled = self._entitled_row(partner, name, entity_id)
                if entitled is not None:
                    return files(entitled[0])
            return None
        if entity_type in ROUTING_FIELDS:
            entity = self._find(partner, entity_type, entity_id)
            if entity is None:
                return None
            return TITLE_FILES(entity) if entity_type == DEALS else []
        return None

    # ----------------------------------------------------------------------------------------
    # Delivery log
    # ----------------------------------------------------------------------------------------

    def list_deliveries(
        self,
        partner: Partner,
        page: int,
        limit: int,
        *,
        status: str | None = None,
        event: str | None = None,
        date_from: dt.datetime | None = None,
        date_to: dt.datetime | None = None,
        event_id: str | None = None,
    ) -> Page:
        """The partner's own attempts, newest first, as `delivery_dto`s; date bounds are inclusive."""
        _check_page(page, limit)
        if not partner.active:
            return Page([], 0)
        query = attempts_query(
            partner.partner_id, status=status, event=event, date_from=date_from, date_to=date_to, event_id=event_id
        )
        if status is None:  # the spec's statuses only: `held` entries are the operators'
            query["status"] = {"$in": list(PARTNER_STATUSES)}
        collection = self._db[DELIVERIES_COLLECTION]
        total = collection.count_documents(query)
        found = collection.find(query).sort(NEWEST_FIRST).skip(page * limit).limit(limit)
        return Page([dto.delivery_dto(d) for d in found if self._owns(partner, d)], total)

    def get_delivery(self, partner: Partner, log_id: str) -> dict[str, Any] | None:
        """The partner's own attempt as stored (payload, eventId, redrive... for a replay);
        `dto.delivery_dto` gives the response."""
        if not partner.active:
            return None
        visible = {"partnerId": partner.partner_id, "status": {"$in": list(PARTNER_STATUSES)}}
        found = self._db[DELIVERIES_COLLECTION].find_one({"_id": {"$in": id_forms(log_id)}, **visible})
        return found if found is not None and self._owns(partner, found) else None

    # ----------------------------------------------------------------------------------------
    # Scoping
    # ----------------------------------------------------------------------------------------

    def _scope(self, partner: Partner, collection: str) -> dict[str, Any] | None:
        fields = ROUTING_FIELDS[collection]
        return scope_filter(partner, fields, self._borrowed_ids(partner, fields))

    def _borrowed_ids(self, partner: Partner, fields: RoutingFields) -> dict[Borrowed, list[str]]:
        """For each borrowed link, the ids of the referenced documents that route to the partner by
        the link's fields (the offers it originated, the users in its organization)."""
        out: dict[Borrowed, list[str]] = {}
        if not partner.active:
            return out
        for borrowed in fields.borrowed:
            clauses = matching(partner, borrowed.app_source, borrowed.organization)
            if clauses:
                found = [d["_id"] for d in self._db[borrowed.collection].find({"$or": clauses}, {"_id": 1})]
                out[borrowed] = self._without_twins(borrowed.collection, found)
        return out

    def _without_twins(self, collection: str, stored_ids: list[Any]) -> list[str]:
        """The ids (as `id_string`s) of `stored_ids` that no other document of `collection` shares
        with another type (a string `_id` equal to an ObjectId's hex): the router refuses those."""
        ids = [ref for ref in (id_string(plain(i)) for i in stored_ids) if ref]
        twins = [
            twin
            for stored in stored_ids
            for twin in id_forms(id_string(plain(stored)) or "")
            if type(twin) is not type(stored)
        ]
        if not twins:
            return ids
        shared = {id_string(plain(d["_id"])) for d in self._db[collection].find({"_id": {"$in": twins}}, {"_id": 1})}
        return [ref for ref in ids if ref not in shared]

    def _list(self, partner: Partner, collection: str, page: int, limit: int, where: dict[str, Any] | None) -> Page:
        _check_page(page, limit)
        scope = self._scope(partner, collection)
        if scope is None:
            return Page([], 0)
        query = both(scope, where)
        total = self._db[collection].count_documents(query)
        found = list(self._db[collection].find(query).sort(ENTITY_ORDER).skip(page * limit).limit(limit))
        return Page(self._routed(partner, collection, found), total)

    def _find(self, partner: Partner, collection: str, entity_id: str) -> dict[str, Any] | None:
        """The entity, when the router sends it to `partner` (and its id is not ambiguous)."""
        if not partner.active:
            return None
        found = self._by_id(collection, entity_id)
        if found is None or not self._routes(partner, collection, found):
            return None
        return found

    def _routes(self, partner: Partner, collection: str, document: dict[str, Any]) -> bool:
        fields = ROUTING_FIELDS[collection]
        return matched_link(partner, routing_keys(fields, document, self._references(fields, [document]))) is not None

    def _routed(self, partner: Partner, collection: str, documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents the router sends to `partner` (the filter's result, decided again)."""
        fields = ROUTING_FIELDS[collection]
        found = self._references(fields, documents)
        kept = []
        for document in documents:
            if matched_link(partner, routing_keys(fields, document, found)) is not None:
                kept.append(document)
            else:
                logger.error(
                    "scope filter admitted %s %s for partner %s but the router does not route it: dropped",
                    collection,
                    id_string(plain(document.get("_id"))),
                    partner.partner_id,
                )
        return kept

    def _references(self, fields: RoutingFields, documents: Iterable[dict[str, Any]]) -> References:
        """The documents routing borrows values from, for all of `documents`: one query per collection."""
        wanted: dict[str, set[str]] = {}
        for document in documents:
            for collection, ref_id in references(fields, document):
                wanted.setdefault(collection, set()).add(ref_id)
        return {
            (collection, ref_id): document
            for collection, ids in wanted.items()
            for ref_id, document in self._by_ids(collection, ids).items()
        }

    def _entitled_row(self, partner: Partner, collection: str, row_id: str) -> tuple[dict[str, Any], str] | None:
        """A row that belongs to deals (a document, generated document or credit report) with the deal
        through which the partner may read it; None when it is absent, ambiguous or not the partner's."""
        row = self._by_id(collection, row_id)
        via = None if row is None else self._entitled_deal(partner, collection, row)
        return None if row is None or via is None else (row, via)

    def _entitled_deal(self, partner: Partner, collection: str, document: dict[str, Any]) -> str | None:
        """The first of the document's deals through which the partner is entitled to it, or None."""
        deal_ids = linked_deal_ids(REDUCERS[collection], document)
        if not deal_ids:
            return None
        deals = self._by_ids(DEALS, deal_ids)
        found = self._references(ROUTING_FIELDS[DEALS], deals.values())
        union, per_deal = routing_keys_via_deals([(deal_id, deals.get(deal_id)) for deal_id in deal_ids], found)
        if matched_link(partner, union) is None:
            return None
        return next((deal_id for deal_id, keys in per_deal if matched_link(partner, keys) is not None), None)

    @staticmethod
    def _owns(partner: Partner, log_document: dict[str, Any]) -> bool:
        if log_document.get("partnerId") == partner.partner_id:
            return True
        logger.error("delivery log query returned another partner's attempt %s: dropped", log_document.get("_id"))
        return False

    # ----------------------------------------------------------------------------------------
    # Helpers
    # ----------------------------------------------------------------------------------------

    def _by_ids(self, collection: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Documents by id (hex string or plain id), in one query, keyed as the router keys them."""
        wanted = sorted({i for i in ids if i})
        if not wanted:
            return {}
        query = {"_id": {"$in": [form for doc_id in wanted for form in id_forms(doc_id)]}}
        return unambiguous_by_id(self._db[collection].find(query), collection)

    def _by_id(self, collection: str, entity_id: str) -> dict[str, Any] | None:
        return self._by_ids(collection, [entity_id]).get(entity_id)

    def _documents_of(self, collection: str, deal_id: str) -> list[dict[str, Any]]:
        """Rows of `collection` (and its aliases) linked to `deal_id` through the reducer's deal fields."""
        reducer = REDUCERS[collection]
        forms = id_forms(deal_id)
        query = {"$or": [{path: {"$in": forms}} for path in reducer.linked_deals]}
        rows = []
        for name in (reducer.collection, *reducer.aliases):
            for document in self._db[name].find(query).sort(DOCUMENT_ORDER):
                if deal_id in linked_deal_ids(reducer, document):
                    rows.append(document)
                else:
                    logger.error("%s %s matched deal %s by query only: dropped", name, document.get("_id"), deal_id)
        return rows

    def _deal_dtos(self, deals: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`dto.deal_dto` for each deal, its `documents[]` references completed from their rows
        (only rows that belong to that deal), in one query for the page."""
        referenced = {
            ref
            for deal in deals
            for item in (deal.get("documents") if isinstance(deal.get("documents"), list) else [])
            if (ref := dto.document_reference(item))
        }
        rows = self._by_ids(DOCUMENTS, referenced)
        reducer = REDUCERS[DOCUMENTS]
        out = []
        for deal in deals:
            own_id = id_string(plain(deal.get("_id")))
            mine = {doc_id: row for doc_id, row in rows.items() if own_id in linked_deal_ids(reducer, row)}
            out.append(dto.deal_dto(deal, mine))
        return out

    def _signed(self, files: list[tuple[str, str]]) -> list[dict[str, Any]]:
        links = self._file_links
        return [dto.file_dto(key, links.link(key, filename) if links is not None else None) for key, filename in files]


__all__ = ["Page", "PartnerData"]
