"""The one small repository in front of MongoDB for the pipeline: partner records and linked entities.

Lookups are batched (one `$in` query per collection per call) and cached for a short TTL, so
a warm Lambda pays for a partner list or a linked deal once, not once per record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from pymongo.database import Database
from pymongo.errors import PyMongoError

from distiller.core.lookups import PARTNERS_COLLECTION, LookupFailure, id_forms, unambiguous_by_id
from distiller.core.partners import Partner, PartnerRecordError, partner_from_record

logger = logging.getLogger(__name__)


class MongoLookups:
    """`Lookups` over a pymongo `Database` (mongomock in tests, an in-memory world in the CLI)."""

    def __init__(
        self,
        database: Database,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = database
        self._ttl = ttl_seconds
        self._clock = clock
        self._partners: tuple[float, list[Partner]] | None = None
        self._documents: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self.partner_errors: list[str] = []

    def partners(self) -> list[Partner]:
        """Every partner record, active or not (routing explains why an inactive one gets nothing)."""
        now = self._clock()
        if self._partners is not None and now - self._partners[0] < self._ttl:
            return self._partners[1]
        try:
            records = list(self._db[PARTNERS_COLLECTION].find({}, {"_id": 0}).sort("partnerId", 1))
        except PyMongoError as exc:
            raise LookupFailure(f"partners: {exc}") from exc
        partners, errors = [], []
        for i, record in enumerate(records):
            try:
                partners.append(partner_from_record(record, where=f"partners[{i}]"))
            except PartnerRecordError as exc:
                # One broken record must not stop every other partner's deliveries.
                errors.append(str(exc))
                logger.error("skipping invalid partner record: %s", exc)
        self.partner_errors = errors
        self._partners = (now, partners)
        return partners

    def documents(self, collection: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Documents of `collection` by id (hex string or plain id), in one query for the uncached ones."""
        now = self._clock()
        wanted = {i for i in ids if i}
        found: dict[str, dict[str, Any]] = {}
        missing = []
        for doc_id in wanted:
            cached = self._documents.get((collection, doc_id))
            if cached is not None and now - cached[0] < self._ttl:
                found[doc_id] = cached[1]
            else:
                missing.append(doc_id)
        if missing:
            query = {"_id": {"$in": [form for doc_id in missing for form in id_forms(doc_id)]}}
            try:
                fetched = unambiguous_by_id(self._db[collection].find(query), collection)
            except PyMongoError as exc:
                raise LookupFailure(f"{collection}: {exc}") from exc
            for doc_id in missing:
                doc = fetched.get(doc_id)
                # Misses are not cached: a document not visible yet (replication lag) is found on retry.
                if doc is not None:
                    self._documents[(collection, doc_id)] = (now, doc)
                    found[doc_id] = doc
        return found
