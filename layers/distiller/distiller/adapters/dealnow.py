"""DealNow writes in MongoDB: the listing of a VIN, a stub listing, and the DealNow-pending offer
(`distiller.api.sell.DealStore`). The inserts are what the change stream turns into
`listing.created` and `offer.created`.

Two requests for the same unlisted VIN without an Idempotency-Key (a double click) both find no
listing. The app's `seller_listings` is not ours to put a unique index on, so the VIN is claimed in
a collection of our own (`dealnow_stub_claims`, one document per VIN carrying the stub, expired
after 10 minutes by a TTL index): the first claim's stub is the one both requests use, written
with an upsert on its `_id` (`$setOnInsert`: one insert, so one `listing.created`, whichever
request gets there first, and none lost if the claimant dies before writing it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from distiller.api.sell import UNAVAILABLE_LISTING_STATUSES, StoreUnavailable
from distiller.core.clock import utc_now

logger = logging.getLogger(__name__)

LISTINGS_COLLECTION = "seller_listings"
OFFERS_COLLECTION = "offers"
STUB_CLAIMS_COLLECTION = "dealnow_stub_claims"
STUB_CLAIM_SECONDS = 600
"""How long a VIN's stub claim lasts: far longer than two racing requests, short enough that a
stub deleted or sold meanwhile is rarely met (and then replaced, see `_usable`)."""


class MongoDealStore:
    """`DealStore` over the app's `seller_listings` and `offers` collections."""

    def __init__(self, database: Database, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._listings = database[LISTINGS_COLLECTION]
        self._offers = database[OFFERS_COLLECTION]
        self._claims = database[STUB_CLAIMS_COLLECTION]
        self._clock = clock

    def ensure_indexes(self) -> None:
        self._claims.create_index("expiresAt", name="ttl_expires_at", expireAfterSeconds=0)

    def find_listing(self, vin: str) -> dict[str, Any] | None:
        """The newest listing of `vin` that is not soft-deleted, deactivated, expired or sold."""
        query = {"vehicle.vin": vin, "deleted": {"$ne": True}, "status": {"$nin": list(UNAVAILABLE_LISTING_STATUSES)}}
        try:
            return self._listings.find_one(query, sort=[("createdAt", DESCENDING), ("_id", DESCENDING)])
        except PyMongoError as exc:
            raise self._unavailable("find the listing", exc) from exc

    def insert_stub(self, listing: dict[str, Any]) -> dict[str, Any]:
        """Write `listing` as the VIN's stub, or return the stub a concurrent request claimed first."""
        claim_id = f"stub:{listing['vehicle']['vin']}"
        claim = {
            "_id": claim_id,
            "listing": listing,
            "expiresAt": self._clock() + dt.timedelta(seconds=STUB_CLAIM_SECONDS),
        }
        try:
            listing = self._claimed(claim)
            fields = {key: value for key, value in listing.items() if key != "_id"}
            with contextlib.suppress(DuplicateKeyError):  # two upserts of the one stub at once: one inserted it
                self._listings.update_one({"_id": listing["_id"]}, {"$setOnInsert": fields}, upsert=True)
        except PyMongoError as exc:
            raise self._unavailable("insert the listing", exc) from exc
        return listing

    def _claimed(self, claim: dict[str, Any]) -> dict[str, Any]:
        """The stub of the VIN's claim: ours if we claimed it, else the claimant's while it is usable.

        A stale claim (its stub sold or deleted) is swapped for ours only if it still names that stub,
        so of two requests finding it stale one swaps and the other uses the swapped-in stub."""
        for _ in range(5):
            try:
                self._claims.insert_one(claim)
                return claim["listing"]
            except DuplicateKeyError:
                held = (self._claims.find_one({"_id": claim["_id"]}) or {}).get("listing")
            if not isinstance(held, dict):
                continue  # expired between the two calls: claim again
            if self._usable(held):
                return held
            swapped = self._claims.replace_one({"_id": claim["_id"], "listing._id": held.get("_id")}, claim)
            if swapped.modified_count == 1:
                return claim["listing"]
        raise StoreUnavailable()  # five rounds of racing claims for one VIN: let the caller retry

    def _usable(self, stub: dict[str, Any]) -> bool:
        """A claimed stub is used unless it is written and no longer the vehicle's listing."""
        written = self._listings.find_one({"_id": stub.get("_id")}, {"status": 1, "deleted": 1})
        return written is None or (
            written.get("deleted") is not True and written.get("status") not in UNAVAILABLE_LISTING_STATUSES
        )

    def insert_offer(self, offer: dict[str, Any]) -> None:
        try:
            self._offers.insert_one(offer)
        except PyMongoError as exc:
            raise self._unavailable("insert the offer", exc) from exc

    @staticmethod
    def _unavailable(what: str, exc: PyMongoError) -> StoreUnavailable:
        logger.error("DealNow store could not %s (%s)", what, type(exc).__name__)
        return StoreUnavailable()
