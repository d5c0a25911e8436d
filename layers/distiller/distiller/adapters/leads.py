"""The `leads` collection (see `distiller.api.leads`): one document per lead, unique per partner and
callerReferenceId, so a resubmission finds the first lead instead of making a second."""

from __future__ import annotations

import logging
from typing import Any

from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from distiller.api.leads import LeadInsert, LeadStoreUnavailable

logger = logging.getLogger(__name__)

REFERENCE_INDEX = "partner_caller_reference_unique"


class MongoLeadStore:
    """`LeadStore` over the `leads` collection.

    Deduplication is the unique index of `ensure_indexes`, not a read before the write: of concurrent
    submissions with one callerReferenceId (several containers, a partner's retries) the server lets
    exactly one insert through, and each other one reads the lead that won. A read before the write
    would let two of them through between the read and the write.
    """

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    def ensure_indexes(self) -> None:
        """Create the unique (partnerId, callerReferenceId) index (idempotent). Errors propagate: this is
        setup, and without the index a resubmission would make a second lead."""
        self._collection.create_index([("partnerId", 1), ("callerReferenceId", 1)], name=REFERENCE_INDEX, unique=True)

    def insert(self, document: dict[str, Any]) -> LeadInsert:
        partner_id, reference = document["partnerId"], document["callerReferenceId"]
        try:
            for _ in range(2):  # the second try only follows an earlier lead removed after it refused ours
                try:
                    self._collection.insert_one(document)
                    return LeadInsert(document, created=True)
                except DuplicateKeyError:
                    existing = self.find(partner_id, reference)
                    if existing is not None:
                        return LeadInsert(existing, created=False)
        except PyMongoError as exc:
            raise self._unavailable("insert", partner_id, exc) from exc
        raise LeadStoreUnavailable("the lead was neither stored nor found; try again")

    def find(self, partner_id: str, caller_reference_id: str) -> dict[str, Any] | None:
        try:
            return self._collection.find_one({"partnerId": partner_id, "callerReferenceId": caller_reference_id})
        except PyMongoError as exc:
            raise self._unavailable("find", partner_id, exc) from exc

    @staticmethod
    def _unavailable(operation: str, partner_id: str, exc: PyMongoError) -> LeadStoreUnavailable:
        # The error class only: a driver message can quote the document (contact data).
        logger.warning("leads %s failed for partner %s (%s)", operation, partner_id, type(exc).__name__)
        return LeadStoreUnavailable("the lead store is unavailable; try again")
