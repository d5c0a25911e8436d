"""Endpoint health in MongoDB: held deliveries, and pause state on the partner record.

`held_deliveries` holds one document per held delivery (unique per partner, eventId and round,
so a redelivered message is held once) with no TTL: the health sweep dead-letters what outlives
the retention, with its reason, instead of letting an index drop it. The pause is the partner
record's `state: "paused"` with a `health` sub-document (when, why, the last probe); the streak
that decides it is read from the delivery log.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from distiller.core.lookups import PARTNERS_COLLECTION
from distiller.deliver.health import (
    PAUSED_STATE,
    FailureStreak,
    HeldDelivery,
    PauseState,
)
from distiller.deliver.log import DELIVERIES_COLLECTION, as_utc

OLDEST_FIRST = [("emitted", ASCENDING), ("heldAt", ASCENDING), ("_id", ASCENDING)]
LEAST_PROBED_FIRST = [("probes", ASCENDING), *OLDEST_FIRST]


class MongoHeldDeliveries:
    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    def ensure_indexes(self) -> None:
        c = self._collection
        c.create_index(
            [("partnerId", ASCENDING), ("eventId", ASCENDING), ("round", ASCENDING)], name="one_hold", unique=True
        )
        c.create_index([("partnerId", ASCENDING), *OLDEST_FIRST], name="partner_oldest_first")
        c.create_index([("partnerId", ASCENDING), *LEAST_PROBED_FIRST], name="partner_least_probed_first")
        c.create_index([("emitted", ASCENDING), ("_id", ASCENDING)], name="emitted")

    def hold(self, held: HeldDelivery) -> bool:
        document = {
            "partnerId": held.partner_id,
            "eventId": held.event_id,
            "round": held.round,
            "message": held.body,
            "emittedAt": held.emitted_at,
            "emitted": held.emitted,
            "heldAt": held.held_at,
            "reason": held.reason,
            "probes": 0,
        }
        try:
            self._collection.insert_one(document)
        except DuplicateKeyError:
            return False
        return True

    def oldest(self, partner_id: str, limit: int, now: dt.datetime) -> list[HeldDelivery]:
        not_leased = {"$or": [{"probingUntil": None}, {"probingUntil": {"$lte": now}}]}
        found = self._collection.find({"partnerId": partner_id, **not_leased}).sort(OLDEST_FIRST).limit(limit)
        return [_held(document) for document in found]

    def least_probed(self, partner_id: str, limit: int) -> list[HeldDelivery]:
        found = self._collection.find({"partnerId": partner_id}).sort(LEAST_PROBED_FIRST).limit(limit)
        return [_held(document) for document in found]

    def lease(self, held: HeldDelivery, now: dt.datetime, until: dt.datetime) -> bool:
        free = {"$or": [{"probingUntil": None}, {"probingUntil": {"$lte": now}}]}
        leased = self._collection.update_one({"_id": held.id, **free}, {"$set": {"probingUntil": until}})
        return leased.modified_count == 1

    def probe_failed(self, held: HeldDelivery) -> None:
        self._collection.update_one({"_id": held.id}, {"$inc": {"probes": 1}, "$unset": {"probingUntil": ""}})

    def remove(self, held: Sequence[HeldDelivery]) -> None:
        if held:
            self._collection.delete_many({"_id": {"$in": [h.id for h in held]}})

    def partners(self) -> list[str]:
        return sorted(self._collection.distinct("partnerId"))

    def count(self, partner_id: str) -> int:
        return self._collection.count_documents({"partnerId": partner_id})

    def emitted_before(self, at: dt.datetime, limit: int) -> list[HeldDelivery]:
        found = self._collection.find({"emitted": {"$lt": at}}).sort([("emitted", ASCENDING), ("_id", ASCENDING)])
        return [_held(document) for document in found.limit(limit)]


def _held(document: dict[str, Any]) -> HeldDelivery:
    return HeldDelivery(
        partner_id=document["partnerId"],
        event_id=document["eventId"],
        round=document.get("round") or 0,
        body=document["message"],
        emitted_at=document.get("emittedAt") or "",
        held_at=as_utc(document["heldAt"]),
        reason=document.get("reason") or "",
        id=document["_id"],
        probes=document.get("probes") or 0,
    )


class MongoPartnerHealth:
    def __init__(self, database: Database) -> None:
        self._partners = database[PARTNERS_COLLECTION]
        self._log = database[DELIVERIES_COLLECTION]

    def failure_streak(self, partner_id: str, dead_letters_needed: int) -> FailureStreak:
        last_ok = self._log.find_one(
            {"partnerId": partner_id, "status": "delivered"}, {"attemptedAt": 1}, sort=[("attemptedAt", -1)]
        )
        record = self._partners.find_one({"partnerId": partner_id}, {"health.resumedAt": 1}) or {}
        resumed = (record.get("health") or {}).get("resumedAt") if isinstance(record.get("health"), dict) else None
        starts = [as_utc(t) for t in (last_ok and last_ok["attemptedAt"], resumed) if isinstance(t, dt.datetime)]
        since: dict[str, Any] = {"partnerId": partner_id}
        if starts:
            since["attemptedAt"] = {"$gt": max(starts)}
        first_failed = self._log.find_one({**since, "status": "failed"}, {"attemptedAt": 1}, sort=[("attemptedAt", 1)])
        dead_letters = 0
        if dead_letters_needed:
            # Dead letters of attempts made at the endpoint only: a give-up or an expired hold has no URL.
            at_endpoint = {"deadLettered": True, "url": {"$ne": None}}
            dead_letters = self._log.count_documents({**since, **at_endpoint}, limit=dead_letters_needed)
        return FailureStreak(
            dead_letters=dead_letters,
            failing_since=None if first_failed is None else as_utc(first_failed["attemptedAt"]),
        )

    def is_paused(self, partner_id: str) -> bool:
        return self._partners.find_one({"partnerId": partner_id, "state": PAUSED_STATE}, {"_id": 1}) is not None

    def pause(self, partner_id: str, reason: str, at: dt.datetime) -> bool:
        health = {"pausedAt": at, "reason": reason, "lastProbeAt": None, "probeError": None}
        changed = self._partners.update_one(
            {"partnerId": partner_id, "state": {"$ne": PAUSED_STATE}},
            {"$set": {"state": PAUSED_STATE, "health": health}},
        )
        return changed.modified_count == 1

    def resume(self, partner_id: str, at: dt.datetime, how: str) -> bool:
        changed = self._partners.update_one(
            {"partnerId": partner_id, "state": PAUSED_STATE},
            {"$unset": {"state": ""}, "$set": {"health.resumedAt": at, "health.resumedBy": how}},
        )
        return changed.modified_count == 1

    def probed(self, partner_id: str, at: dt.datetime, error: str | None) -> None:
        self._partners.update_one(
            {"partnerId": partner_id, "state": PAUSED_STATE},
            {"$set": {"health.lastProbeAt": at, "health.probeError": error}},
        )

    def paused(self) -> list[PauseState]:
        found = self._partners.find({"state": PAUSED_STATE}, {"partnerId": 1, "health": 1}).sort("partnerId", 1)
        return [_pause_state(document) for document in found]

    def delivered_rounds(self, partner_id: str, event_ids: Sequence[str]) -> dict[str, set[int]]:
        rounds: dict[str, set[int]] = {}
        if not event_ids:
            return rounds
        query = {"partnerId": partner_id, "eventId": {"$in": list(event_ids)}, "status": "delivered"}
        for document in self._log.find(query, {"eventId": 1, "redrive": 1}):
            rounds.setdefault(document["eventId"], set()).add(document.get("redrive") or 0)
        return rounds


def _pause_state(document: dict[str, Any]) -> PauseState:
    health = document.get("health") if isinstance(document.get("health"), dict) else {}

    def instant(key: str) -> dt.datetime | None:
        value = health.get(key)
        return as_utc(value) if isinstance(value, dt.datetime) else None

    return PauseState(
        partner_id=str(document.get("partnerId")),
        paused_at=instant("pausedAt"),
        reason=health.get("reason"),
        last_probe_at=instant("lastProbeAt"),
    )


__all__ = ["MongoHeldDeliveries", "MongoPartnerHealth"]
