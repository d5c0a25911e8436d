"""DealNow writes in MongoDB: the listing of a VIN, a stub listing, and the DealNow-pending offer
(`distiller.api.sell.DealStore`). The inserts are what the change stream turns into
`listing.created` and `offer.created`."""

from __future__ import annotations

import logging
from typing import Any

from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import PyMongoError

from distiller.api.sell import UNAVAILABLE_LISTING_STATUSES, StoreUnavailable

logger = logging.getLogger(__name__)

LISTINGS_COLLECTION = "seller_listings"
OFFERS_COLLECTION = "offers"


class MongoDealStore:
    """`DealStore` over the app's `seller_listings` and `offers` collections."""

    def __init__(self, database: Database) -> None:
        self._listings = database[LISTINGS_COLLECTION]
        self._offers = database[OFFERS_COLLECTION]

    def find_listing(self, vin: str) -> dict[str, Any] | None:
        """The newest listing of `vin` that is not soft-deleted, deactivated, expired or sold."""
        query = {"vehicle.vin": vin, "deleted": {"$ne": True}, "status": {"$nin": list(UNAVAILABLE_LISTING_STATUSES)}}
        try:
            return self._listings.find_one(query, sort=[("createdAt", DESCENDING), ("_id", DESCENDING)])
        except PyMongoError as exc:
            raise self._unavailable("find the listing", exc) from exc

    def insert_listing(self, listing: dict[str, Any]) -> None:
        try:
            self._listings.insert_one(listing)
        except PyMongoError as exc:
            raise self._unavailable("insert the listing", exc) from exc

    def insert_offer(self, offer: dict[str, Any]) -> None:
        try:
            self._offers.insert_one(offer)
        except PyMongoError as exc:
            raise self._unavailable("insert the offer", exc) from exc

    @staticmethod
    def _unavailable(what: str, exc: PyMongoError) -> StoreUnavailable:
        logger.error("DealNow store could not %s (%s)", what, type(exc).__name__)
        return StoreUnavailable()
