"""The local pipeline's delivery log: attempts stored in the in-memory Mongo, questions answered from dicts.

`distiller run` keeps its delivery log in mongomock, which scans the whole collection for every
query: the dispatcher's two questions before each POST (already delivered? this attempt already
made?) and the unique claim insert cost O(attempts) each, O(n²) over a run. This log writes every
attempt to the same collection as `MongoDeliveryLog` (so `--log`, `RunReport`, `distiller api`'s
/data and its `--deliveries` file see the same documents) and answers the questions from indexes
kept beside it. Claims, which nothing outside the dispatcher reads, live only in memory. Lambda
never runs this; it is the `DeliveryLog` port for one local process.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo.collection import Collection

from distiller.core.clock import iso_utc, utc_now
from distiller.deliver.log import AttemptKey, ClaimHeld, DeliveryAttempt, as_utc

#: (partnerId, eventId, round): a delivery in one round of attempts (the original, a redrive, a replay).
DeliveryRound = tuple[str, str, int]


@dataclass(slots=True)
class _Lease:
    token: str
    until: dt.datetime


class IndexedDeliveryLog:
    """`DeliveryLog` over a mongomock collection, with dict indexes on what the dispatcher looks up.

    The indexes are filled from the documents already in the collection (a `--deliveries` file)
    when the log is made; every later attempt must be recorded through this log.
    """

    def __init__(self, collection: Collection, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._collection = collection
        self._clock = clock
        self._lock = threading.Lock()
        self._stored = 0
        """Attempts indexed so far: the insertion order Mongo's `find_one` answers in."""
        self._delivered: dict[DeliveryRound, tuple[int, Any]] = {}
        """Per delivery and round, the first delivered attempt: (its place in the log, its number)."""
        self._failed: dict[tuple[str, str, int, Any], int] = {}
        """Per (partnerId, eventId, round, attempt) that failed, the first such attempt's place in the log."""
        self._leases: dict[AttemptKey, _Lease] = {}
        for document in collection.find({}, {"partnerId": 1, "eventId": 1, "redrive": 1, "attempt": 1, "status": 1}):
            self._index(document)

    def record(self, attempt: DeliveryAttempt) -> None:
        document = attempt.to_document()
        self._collection.insert_one(document)  # not under the lock: the questions need not wait for it
        with self._lock:
            self._index(document)

    def already_processed(self, partner_id: str, event_id: str, attempt: int, redrive: int = 0) -> str | None:
        # As MongoDeliveryLog: each round is judged on its own (entries without `redrive` are round 0),
        # and when both questions match, the attempt stored first answers, as `find_one` would.
        with self._lock:
            delivered = self._delivered.get((partner_id, event_id, redrive))
            failed_at = self._failed.get((partner_id, event_id, redrive, attempt))
        if delivered is not None and (failed_at is None or delivered[0] < failed_at):
            return f"already delivered (attempt {delivered[1]})"
        if failed_at is not None:
            return f"attempt {attempt} was already made (redelivered message)"
        return None

    def claim(self, key: AttemptKey, lease_seconds: float) -> ClaimHeld | str:
        now = self._clock()
        until = now + dt.timedelta(seconds=lease_seconds)
        with self._lock:
            held = self._leases.get(key)
            if held is None or as_utc(held.until) <= now:  # free, or its holder's lease ran out
                token = secrets.token_hex(8)
                self._leases[key] = _Lease(token, until)
                return token
            held_until = as_utc(held.until)
        wait = max(1, int((held_until - now).total_seconds()) + 1)
        return ClaimHeld(
            f"attempt {key.attempt} is being made by another invocation (lease until {iso_utc(held_until)})", wait
        )

    def release(self, key: AttemptKey, token: str) -> None:
        with self._lock:
            held = self._leases.get(key)
            if held is not None and held.token == token:
                del self._leases[key]

    def _index(self, document: Mapping[str, Any]) -> None:
        """Note one stored attempt (called with the lock held, or before the log is shared)."""
        partner_id, event_id = document.get("partnerId"), document.get("eventId")
        if not isinstance(partner_id, str) or not isinstance(event_id, str):
            return
        self._stored += 1
        round_ = document.get("redrive") or 0
        status = document.get("status")
        if status == "delivered":
            self._delivered.setdefault((partner_id, event_id, round_), (self._stored, document.get("attempt")))
        elif status == "failed":
            self._failed.setdefault((partner_id, event_id, round_, document.get("attempt")), self._stored)


__all__ = ["IndexedDeliveryLog"]
