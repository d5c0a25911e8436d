"""`make bench`: distill a generated change stream and compare it with the irreducible floor.

The distill side does what `distiller distill` does, minus the terminal: JSON Lines →
`change_events_from_text(lazy=True)` → `distill` in chunks of `cli.CHUNK_LINES` change events,
against `MongoLookups` over the in-memory world (`IndexedWorld`: `_id` lookups by index, as
Mongo's) → one `ejson.compact_json` line per delivery. `--eager` and `--stdlib-output` turn the
parsing and serialising levers off, to measure each one's gain.

The floor is the work no implementation can skip for the same input and output: `json.loads`
of every line, `json.dumps` of every delivery line the distill side produced, and the sha256 of
every delivery's eventKey (the eventId).

Both sides run in the same process on the same input: an untimed warm-up (a whole distill pass,
which also keeps the delivery lines the floor serialises), then alternating runs, best of
`--repeat`, with the same garbage-collector handling (set-up objects frozen, a collection before
each run, the collector left on during it).
Printed, never asserted: timings vary between machines and with whatever else is running.

    .venv/bin/python -m bench.distill_bench [--events N] [--repeat R] [--seed S] [--profile] [--json PATH]
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import gc
import hashlib
import json
import os
import platform
import pstats
import random
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distiller.adapters.lookups import MongoLookups
from distiller.core import ejson
from distiller.core.ejson import compact_json
from distiller.core.model import RecordError
from distiller.core.pipeline import distill
from distiller.ingest.sources import change_events_from_text
from distiller_tools.cli import CHUNK_LINES, change_chunks
from distiller_tools.world import IndexedWorld, in_memory_database

TARGET_RATIO = 2.0
AIM_RATIO = 1.5
DEFAULT_EVENTS = 100_000
DEFAULT_SEED = 20260421
START_MS = int(dt.datetime(2026, 4, 1, 13, 0, tzinfo=dt.UTC).timestamp() * 1000)

# --------------------------------------------------------------------------------------------
# Partners: ~20, mixed webhookScope and subscriptions.
# --------------------------------------------------------------------------------------------

#: partnerId, webhookScope, organization (None, "own", or the partnerId whose org it shares), events, active
PARTNER_SPECS: tuple[tuple[str, str, str | None, list[str], bool], ...] = (
    ("autonation-direct", "both", "own", ["*"], True),
    ("carmax-connect", "both", "own", ["*"], True),
    ("lithia-drive", "both", "own", ["deal.*", "offer.*"], True),
    ("dealerpeak", "both", "own", ["*"], True),
    ("motorlane", "both", "own", ["deal.*", "listing.created", "listing.sold"], True),
    ("keystone-auto", "both", "carmax-connect", ["user.registered", "listing.*"], True),
    ("penske-link", "organization", "own", ["*"], True),
    ("asbury-api", "organization", "penske-link", ["listing.*", "offer.*"], True),
    ("hendrick-hub", "organization", "own", ["deal.*"], True),
    ("sonic-sync", "organization", "autonation-direct", ["listing.*"], True),
    (
        "group1-feed",
        "organization",
        "hendrick-hub",
        ["deal.created", "deal.completed", "deal.cancelled", "deal.expired"],
        True,
    ),
    ("vroomly", "organization", "own", ["*"], True),
    ("lendbuzz", "appSource", None, ["*"], True),
    ("capital-auto", "appSource", None, ["deal.*"], True),
    (
        "titlefast",
        "appSource",
        None,
        ["deal.title_submitted", "deal.title_approved", "deal.docs_submitted", "deal.docs_approved"],
        True,
    ),
    (
        "payoff-pro",
        "appSource",
        None,
        [
            "deal.amount_changed",
            "deal.payment_initiated",
            "deal.payment_acknowledged",
            "deal.negative_equity_identified",
            "deal.negative_equity_funded",
        ],
        True,
    ),
    ("listwise", "appSource", None, ["listing.*", "user.registered"], True),
    ("offerly", "appSource", None, ["offer.*", "deal.created"], True),
    ("ridewell", "appSource", None, ["*"], True),
    ("legacy-partner", "both", "own", ["*"], False),
)

NON_PARTNER_APP_SOURCES = ("privateauto", "pa-ios", "pa-android", "dealnow")
US_STATES = ("TX", "CA", "FL", "NY", "GA", "AZ", "OH", "NC", "WA", "CO", "IL", "PA")
MAKES = (
    ("Toyota", ("Camry", "RAV4", "Tacoma", "Corolla"), ("LE", "XLE", "SR5", "TRD Off-Road")),
    ("Honda", ("Civic", "Accord", "CR-V", "Pilot"), ("LX", "EX", "EX-L", "Touring")),
    ("Ford", ("F-150", "Explorer", "Escape", "Mustang"), ("XL", "XLT", "Lariat", "GT")),
    ("Chevrolet", ("Silverado 1500", "Equinox", "Tahoe", "Malibu"), ("LS", "LT", "RST", "Premier")),
    ("BMW", ("330i", "X3", "X5", "M340i"), ("Base", "xDrive", "sDrive", "M Sport")),
    ("Tesla", ("Model 3", "Model Y", "Model S"), ("Standard Range", "Long Range", "Performance")),
)
COLORS = ("Black", "White", "Silver", "Gray", "Blue", "Red", "Green")
FIRST_NAMES = ("James", "Maria", "Robert", "Linda", "Michael", "Aisha", "Wei", "Carlos", "Emily", "Noah")
LAST_NAMES = ("Smith", "Garcia", "Johnson", "Nguyen", "Brown", "Patel", "Williams", "Kim", "Lopez", "Miller")

# --------------------------------------------------------------------------------------------
# Generator. Documents are built once in a neutral form where ids, dates and timestamps are
# sentinel strings; each event is dumped once and the sentinels are rewritten per wire shape.
# --------------------------------------------------------------------------------------------

_OID_RE = re.compile(r'"@@O:([0-9a-f]{24})"')
_DATE_RE = re.compile(r'"@@D:(-?\d+):([^"]+)"')
_TS_RE = re.compile(r'"@@T:(\d+):(\d+)"')

#: (ObjectId, date, timestamp) replacement templates per wire encoding.
ENCODINGS: dict[str, tuple[str, str, str]] = {
    # raw change stream / Atlas trigger in relaxed Extended JSON
    "relaxed": (r'{"$oid":"\1"}', r'{"$date":"\2"}', r'{"$timestamp":{"t":\1,"i":\2}}'),
    # Atlas → EventBridge without "Enable Extended JSON"
    "plain": (r'"\1"', r'"\2"', r'{"T":\1,"I":\2}'),
    # DocumentDB event-source mapping: canonical-style wrappers
    "canonical": (r'{"$oid":"\1"}', r'{"$date":{"$numberLong":"\1"}}', r'{"$timestamp":{"t":\1,"i":\2}}'),
}

#: Wire shapes by share of change events. A DocumentDB line carries a batch of 1-4 events.
SHAPE_WEIGHTS = {"change-stream": 45, "eventbridge-plain": 30, "eventbridge-ejson": 5, "docdb": 20}
DOCDB_BATCH = (1, 4)

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _encode(text: str, encoding: str) -> str:
    oid, date, ts = ENCODINGS[encoding]
    return _TS_RE.sub(ts, _DATE_RE.sub(date, _OID_RE.sub(oid, text)))


def _set_path(document: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    current: Any = document
    for part in parts[:-1]:
        current = current[int(part)] if isinstance(current, list) else current.setdefault(part, {})
    last = parts[-1]
    if isinstance(current, list):
        index = int(last)
        if index == len(current):
            current.append(value)
        else:
            current[index] = value
    else:
        current[last] = value


@dataclass
class Stream:
    lines: list[tuple[str, str]]
    events: int
    kinds: Counter[str]
    shapes: Counter[str]
    pre_images: int
    updates_and_deletes: int
    partners: list[dict[str, Any]]
    world: dict[str, list[dict[str, Any]]]


class Generator:
    """A deterministic, production-like stream of change events over deals, offers, listings and users."""

    #: (collection, operation, kind) → share of change events, in percent.
    MIX: tuple[tuple[str, str, str, float], ...] = (
        ("deals", "update", "dealState", 15),
        ("deals", "update", "payment", 5),
        ("deals", "update", "status", 3),
        ("deals", "update", "milestone", 6),
        ("deals", "update", "no-match", 12),
        ("deals", "insert", "", 2),
        ("offers", "insert", "", 6),
        ("offers", "update", "status", 5),
        ("offers", "update", "no-match", 3),
        ("seller_listings", "insert", "", 3),
        ("seller_listings", "update", "catch-all", 15),
        ("seller_listings", "update", "status", 5),
        ("seller_listings", "update", "ownership", 2),
        ("seller_listings", "update", "no-match", 5),
        ("users", "insert", "", 5),
        ("users", "update", "no-match", 3),
        ("deals", "delete", "", 0.5),
        ("offers", "delete", "", 1.5),
        ("seller_listings", "delete", "", 1),
    )

    def __init__(self, seed: int, pre_image_share: float = 0.3) -> None:
        self.rng = random.Random(seed)
        self.pre_image_share = pre_image_share
        self.clock_ms = START_MS
        self.last_second = 0
        self.increment = 0
        self.oid_counter = self.rng.randrange(1 << 24)
        self.machine = f"{self.rng.getrandbits(40):010x}"
        self.collection_uuids: dict[str, str] = {}
        self.trigger_ids: dict[str, str] = {}

        self.partners = self._partners()
        self.partner_orgs = [p["organizationId"] for p in self.partners if p.get("organizationId")]
        self.other_orgs = [self.oid()[4:] for _ in range(150)]
        app_partners = [p["partnerId"] for p in self.partners if p["webhookScope"] != "organization"]
        self.app_sources = app_partners + [p["partnerId"] for p in self.partners if p["webhookScope"] == "organization"]
        self.app_weights = [3] * len(app_partners) + [1] * (len(self.app_sources) - len(app_partners))

        # Sellers of listings that carry no organizationId: they exist in the world's users.
        self.world_users = [self._user(in_world=True) for _ in range(600)]
        #: Each deal's accepted offer: a deal routes through its offer's appSource (`offerId`), so the
        #: world holds these offers, as the database does (offers nothing references are left out:
        #: no lookup reads them, and mongomock scans a collection per query).
        self.deal_offers: list[dict[str, Any]] = []
        self.deals = [self._deal() for _ in range(2500)]
        self.offers = [self._offer() for _ in range(3000)]
        self.listings = [self._listing() for _ in range(4000)]
        self.users: list[dict[str, Any]] = [self._user() for _ in range(2000)]

    # ---- primitives ------------------------------------------------------------------------

    def oid(self) -> str:
        self.oid_counter = (self.oid_counter + 1) & 0xFFFFFF
        return f"@@O:{self.clock_ms // 1000:08x}{self.machine}{self.oid_counter:06x}"

    def now(self) -> str:
        ms = self.clock_ms
        iso = dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return f"@@D:{ms}:{iso}"

    def tick(self) -> tuple[int, int]:
        self.clock_ms += self.rng.randrange(5, 900)
        second = self.clock_ms // 1000
        self.increment = self.increment + 1 if second == self.last_second else 1
        self.last_second = second
        return second, self.increment

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def app_source(self, partner_share: float = 0.85) -> str:
        if self.rng.random() < partner_share:
            return self.rng.choices(self.app_sources, self.app_weights)[0]
        return self.rng.choice(NON_PARTNER_APP_SOURCES)

    def org(self, partner_share: float = 0.75, none_share: float = 0.15) -> str | None:
        """An organization id (hex): a partner's, none, or someone else's."""
        r = self.rng.random()
        if r < partner_share:
            return self.rng.choice(self.partner_orgs)
        if r < partner_share + none_share:
            return None
        return self.rng.choice(self.other_orgs)

    def org_value(self, org: str) -> str:
        """Organization references are mostly stored as ObjectIds, sometimes as their hex string."""
        return "@@O:" + org if self.rng.random() < 0.8 else org

    def person(self) -> tuple[str, str, str]:
        first, last = self.rng.choice(FIRST_NAMES), self.rng.choice(LAST_NAMES)
        return first, last, f"{first.lower()}.{last.lower()}{self.rng.randrange(1000)}@example.com"

    # ---- documents -------------------------------------------------------------------------

    def _partners(self) -> list[dict[str, Any]]:
        orgs: dict[str, str] = {}
        records = []
        for partner_id, scope, org, events, active in PARTNER_SPECS:
            record: dict[str, Any] = {
                "partnerId": partner_id,
                "name": partner_id.replace("-", " ").title(),
                "active": active,
                "webhookScope": scope,
                "linkPlatform": self.rng.choice(("dealnow", "pa-app")),
                "webhook": {"url": f"https://hooks.{partner_id}.example/privateauto", "events": events},
            }
            if org == "own":
                orgs[partner_id] = self.oid()[4:]
            elif org is not None:
                orgs[partner_id] = orgs[org]
            if org is not None:
                record["organizationId"] = orgs[partner_id]
            records.append(record)
        return records

    def _party(self, org: str | None) -> dict[str, Any]:
        first, last, email = self.person()
        party: dict[str, Any] = {"id": self.oid(), "firstName": first, "lastName": last, "email": email}
        if org is not None:
            party["organizationId"] = self.org_value(org)
        party.update(
            status="invited",
            titleConfirmedDate=None,
            confirmedDate=None,
            infoCompletedAt=None,
            termsConfirmedAt=None,
            paymentConfirmedAt=None,
            lastViewedAt=self.now(),
        )
        return party

    def _deal(self) -> dict[str, Any]:
        offer = self._offer()  # the accepted offer the deal came from
        offer["status"] = "accepted"
        self.deal_offers.append(offer)
        amount = self.rng.randrange(4000, 65000, 50)
        now = self.now()
        return {
            "_id": self.oid(),
            "guid": self.uuid(),
            "status": "active",
            "closingStatus": "none",
            "closingFeePayer": self.rng.choice(("buyer", "seller", "split")),
            "state": self.rng.choice(US_STATES),
            "odometer": str(self.rng.randrange(5000, 180000)),
            "appSource": self.app_source(),
            "listingId": offer["listingId"],
            "offerId": offer["_id"],
            "currentOfferStatus": "accepted",
            "amount": amount,
            "currency": "USD",
            "allPartiesConfirmed": False,
            "buyer": self._party(self.org()),
            "seller": self._party(self.org()),
            "payment": {
                "privateAutoPay": {
                    "amount": amount,
                    "transferDate": None,
                    "checkDelivery": "pickup",
                    "payoutSourceType": "wallet",
                },
                "cash": {"amount": 0, "transferDate": None},
                "loan": {"amount": 0, "transferDate": None},
            },
            "dealState": {
                "buyer": {"status": "invited"},
                "seller": {"status": "invited"},
                "documentsStatus": "empty",
                "closingStatus": "none",
            },
            "titleAttachment": {"completedDate": None, "files": []},
            "negativeEquity": False,
            "negativeEquityFunded": False,
            "statusHistory": [{"value": "active", "previous": None, "date": now}],
            "createdAt": now,
            "updatedAt": now,
            "__v": 0,
        }

    def _offer(self) -> dict[str, Any]:
        now = self.now()
        offer: dict[str, Any] = {
            "_id": self.oid(),
            "guid": self.uuid(),
            "status": "pending",
            "price": self.rng.randrange(3000, 60000, 100),
            "currency": "USD",
            "listingId": self.oid(),
            "offeredByUserId": self.oid(),
            "offeredToUserId": self.oid(),
        }
        for name in ("offeredByOrganizationId", "offeredToOrganizationId"):
            org = self.org(0.6, 0.25)
            if org is not None:
                offer[name] = self.org_value(org)
        offer.update(
            externalId=f"EXT-{self.rng.randrange(10**6):06d}",
            appSource=self.app_source(),
            dealNowExpiration=now,
            titleDeliveryMethod=self.rng.choice(("InPerson", "Mail")),
            message="Is the price negotiable? I can pick it up this weekend.",
            createdAt=now,
            updatedAt=now,
            __v=0,
        )
        return offer

    def _listing(self) -> dict[str, Any]:
        make, models, trims = self.rng.choice(MAKES)
        model, year = self.rng.choice(models), self.rng.randrange(2008, 2026)
        now = self.now()
        listing: dict[str, Any] = {
            "_id": self.oid(),
            "listingNo": f"PA-{self.rng.randrange(10**7):07d}",
            "slug": f"{year}-{make}-{model}".lower().replace(" ", "-"),
            "title": f"{year} {make} {model}",
            "status": self.rng.choice(("draft", "pending", "live", "live", "live")),
        }
        if self.rng.random() < 0.88:
            listing["sellerId"] = self.oid()
            listing["organizationId"] = self.org_value(self.org(0.8, 0.0) or "")
        else:  # a private seller: routed by organization only through the seller user
            listing["sellerId"] = self.rng.choice(self.world_users)["_id"]
        listing.update(
            price=self.rng.randrange(3000, 80000, 250),
            vehicle={
                "year": year,
                "make": make,
                "model": model,
                "trim": self.rng.choice(trims),
                "vin": "".join(self.rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ0123456789") for _ in range(17)),
                "bodyStyle": self.rng.choice(("Sedan", "SUV", "Truck", "Coupe")),
                "mileage": self.rng.randrange(1000, 200000),
                "exteriorColor": self.rng.choice(COLORS),
                "interiorColor": self.rng.choice(COLORS),
                "transmission": "Automatic",
                "driveType": self.rng.choice(("FWD", "RWD", "AWD", "4WD")),
                "fuel": self.rng.choice(("Gasoline", "Hybrid", "Electric", "Diesel")),
                "cylinders": self.rng.choice(("4", "6", "8", "0")),
            },
        )
        if self.rng.random() < 0.3:
            listing["ownershipInfo"] = {
                "ownershipType": self.rng.choice(("owned", "financed", "leased")),
                "vehicleHaveLien": self.rng.random() < 0.4,
            }
        listing.update(
            condition=self.rng.choice(("excellent", "good", "fair")),
            appSource=self.app_source(0.7),
            photos=[f"https://cdn.privateauto.example/l/{self.rng.getrandbits(48):012x}.jpg" for _ in range(6)],
            description="One owner, garage kept, all service records available. No accidents.",
            createdAt=now,
            updatedAt=now,
            __v=0,
        )
        return listing

    def _user(self, in_world: bool = False) -> dict[str, Any]:
        first, last, email = self.person()
        now = self.now()
        details: dict[str, Any] = {"firstName": first, "lastName": last, "email": email}
        org = self.org(0.8, 0.1) if in_world else self.org(0.6, 0.3)
        if org is not None:
            details["organizationId"] = self.org_value(org)
        details["role"] = self.rng.choice(("consumer", "dealer", "admin")) if org else "consumer"
        return {
            "_id": self.oid(),
            "email": email,
            "firstName": first,
            "lastName": last,
            "phone": f"+1512555{self.rng.randrange(10000):04d}",
            "appRegisteredFrom": self.app_source(0.7),
            "userDetails": details,
            "roles": ["user"],
            "emailVerified": False,
            "createdAt": now,
            "updatedAt": now,
            "lastLoginAt": now,
        }

    # ---- updates: (updatedFields, removedFields) -------------------------------------------

    def _deal_update(self, deal: dict[str, Any], kind: str) -> tuple[dict[str, Any], list[str]]:
        rng, now = self.rng, self.now()
        updated: dict[str, Any] = {}
        removed: list[str] = []
        if kind == "dealState":
            path, value = rng.choice(
                (
                    ("dealState.buyer.status", "joined"),
                    ("dealState.seller.status", "joined"),
                    ("dealState.buyer.status", "readyToClose"),
                    ("dealState.seller.status", "readyToClose"),
                    ("dealState.documentsStatus", "pending"),
                    ("dealState.documentsStatus", "complete"),
                    ("dealState.closingStatus", "initiated"),
                    ("dealState.closingStatus", "acknowledged"),
                )
            )
            if rng.random() < 0.2:  # the app sets the whole subdocument
                _set_path(deal, path, value)
                updated["dealState"] = deal["dealState"]
            else:
                updated[path] = value
            if path.endswith("buyer.status") or path.endswith("seller.status"):
                updated[path.split(".")[1] + ".confirmedDate"] = now
            if value == "acknowledged" and rng.random() < 0.4:  # confirm-payment: closes the deal too
                updated.update(self._status_change(deal, "sold", now))
        elif kind == "payment":
            amount = deal["payment"]["privateAutoPay"]["amount"] + rng.randrange(-2500, 2500, 50)
            updated["payment.privateAutoPay.amount"] = amount
            updated["amount"] = amount
        elif kind == "status":
            status = rng.choice(("sold", "dealCancelled", "dealCancelled", "dealExpired"))
            updated.update(self._status_change(deal, status, now))
        elif kind == "milestone":
            choice = rng.randrange(6)
            if choice == 0:
                updated.update(
                    allPartiesConfirmed=True, **{"buyer.termsConfirmedAt": now, "seller.termsConfirmedAt": now}
                )
            elif choice == 1:
                updated["seller.titleConfirmedDate"] = now
            elif choice == 2:
                updated["titleAttachment.completedDate"] = now
                updated["titleAttachment.files"] = [{"name": "title-front.jpg", "uploadedAt": now}]
            elif choice == 3:
                updated["seller.coSellerInviteSentAt"] = now
            elif choice == 4:
                updated["negativeEquity"] = True
            else:
                updated["negativeEquityFunded"] = True
        else:  # bookkeeping only: matches no trigger row
            choice = rng.randrange(4)
            if choice == 1:
                updated[rng.choice(("buyer", "seller")) + ".lastViewedAt"] = now
            elif choice == 2:
                updated["__v"] = deal["__v"] + 1
            elif choice == 3:
                removed.append("reminderScheduledAt")
        updated["updatedAt"] = now
        return updated, removed

    def _status_change(self, deal: dict[str, Any], status: str, now: str) -> dict[str, Any]:
        history = deal["statusHistory"]
        return {
            "status": status,
            f"statusHistory.{len(history)}": {"value": status, "previous": deal["status"], "date": now},
        }

    def _offer_update(self, offer: dict[str, Any], kind: str) -> tuple[dict[str, Any], list[str]]:
        now = self.now()
        if kind == "status":
            status = self.rng.choice(("accepted", "declined", "declined", "deleted"))
            return {"status": status, "respondedAt": now, "updatedAt": now}, []
        if self.rng.random() < 0.6:
            price = offer["price"] + self.rng.randrange(100, 2000, 100)
            return {"price": price, "counterOffer": {"price": price, "at": now}, "updatedAt": now}, []
        return {"viewedAt": now, "updatedAt": now}, []

    def _listing_update(self, listing: dict[str, Any], kind: str) -> tuple[dict[str, Any], list[str]]:
        rng, now = self.rng, self.now()
        updated: dict[str, Any] = {}
        if kind == "catch-all":
            choice = rng.randrange(6)
            if choice == 0:
                updated["price"] = max(1000, listing["price"] + rng.randrange(-3000, 1000, 250))
            elif choice == 1:
                updated["vehicle.mileage"] = listing["vehicle"]["mileage"] + rng.randrange(10, 900)
            elif choice == 2:
                updated["description"] = rng.choice(
                    ("Price drop! New tires.", "Recently serviced, clean title.", "Must sell this week.")
                )
            elif choice == 3:
                updated[f"photos.{rng.randrange(len(listing['photos']))}"] = (
                    f"https://cdn.privateauto.example/l/{rng.getrandbits(48):012x}.jpg"
                )
            elif choice == 4:
                updated["vehicle.exteriorColor"] = rng.choice(COLORS)
            else:
                updated["title"] = listing["title"] + " - Low Miles"
        elif kind == "status":
            status = rng.choice(("live", "live", "sold", "deactivated", "expired", "deleted"))
            if status == "deleted":
                updated["deleted"] = True
                updated["deletedAt"] = now
            else:
                updated["status"] = status
        elif kind == "ownership":
            updated["ownershipInfo.ownershipType"] = rng.choice(("owned", "financed", "leased"))
            updated["ownershipInfo.vehicleHaveLien"] = rng.random() < 0.4
        else:  # bookkeeping and the cash-offer feature: excluded from the catch-all
            choice = rng.randrange(3)
            if choice == 1:
                updated["__v"] = listing["__v"] + 1
            elif choice == 2:
                updated["cashOfferStatus"] = rng.choice(("requested", "offered", "expired"))
        updated["updatedAt"] = now
        return updated, []

    # ---- events ----------------------------------------------------------------------------

    def _token(self, collection: str, document_id: str, second: int, increment: int) -> str:
        coll_uuid = self.collection_uuids.setdefault(collection, f"{self.rng.getrandbits(128):032X}")
        return (
            f"82{second:08X}{increment:08X}2B022C0100296E5A1004{coll_uuid}46645F69640064{document_id[4:].upper()}0004"
        )

    def _event(self, collection: str, operation: str, kind: str) -> tuple[str, bool]:
        """One change event as text with sentinels, and whether it carries a pre-image."""
        second, increment = self.tick()
        pool = {
            "deals": self.deals,
            "offers": self.offers,
            "seller_listings": self.listings,
            "users": self.users,
        }[collection]
        before_text = after_text = None
        update: dict[str, Any] | None = None
        pre_image = False
        if operation == "insert":
            document = {
                "deals": self._deal,
                "offers": self._offer,
                "seller_listings": self._listing,
                "users": self._user,
            }[collection]()
            pool.append(document)
            after_text = _dumps(document)
        else:
            index = self.rng.randrange(len(pool))
            document = pool[index]
            pre_image = self.rng.random() < self.pre_image_share
            if pre_image:
                before_text = _dumps(document)
            if operation == "delete":
                pool[index] = pool[-1]
                pool.pop()
            else:
                updater = {
                    "deals": self._deal_update,
                    "offers": self._offer_update,
                    "seller_listings": self._listing_update,
                    "users": self._user_update,
                }[collection]
                updated, removed = updater(document, kind)
                for path, value in updated.items():
                    _set_path(document, path, value)
                for path in removed:
                    document.pop(path, None)
                update = {"updatedFields": updated, "removedFields": removed, "truncatedArrays": []}
                after_text = _dumps(document)
        head: dict[str, Any] = {
            "_id": {"_data": self._token(collection, document["_id"], second, increment)},
            "operationType": operation,
            "clusterTime": f"@@T:{second}:{increment}",
            "wallTime": self.now(),
            "ns": {"db": "privateauto", "coll": collection},
            "documentKey": {"_id": document["_id"]},
        }
        if update is not None:
            head["updateDescription"] = update
        text = _dumps(head)[:-1]
        if after_text is not None:
            text += ',"fullDocument":' + after_text
        if before_text is not None:
            text += ',"fullDocumentBeforeChange":' + before_text
        return text + "}", pre_image

    def _user_update(self, user: dict[str, Any], kind: str) -> tuple[dict[str, Any], list[str]]:
        now = self.now()
        if self.rng.random() < 0.7:
            return {"lastLoginAt": now, "updatedAt": now}, []
        return {"emailVerified": True, "updatedAt": now}, []

    def _eventbridge(self, collection: str, detail: str) -> str:
        trigger = self.trigger_ids.setdefault(collection, f"{self.rng.getrandbits(96):024x}")
        time_iso = dt.datetime.fromtimestamp(self.clock_ms // 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return (
            f'{{"version":"0","id":"{self.uuid()}",'
            f'"detail-type":"MongoDB Database Trigger for privateauto.{collection}",'
            f'"source":"aws.partner/mongodb.com/stitch.trigger/{trigger}","account":"123456789012",'
            f'"time":"{time_iso}","region":"us-east-1","resources":["arn:aws:events:us-east-1::event-source/'
            f'aws.partner/mongodb.com/stitch.trigger/{trigger}"],"detail":{detail}}}'
        )

    def stream(self, events: int) -> Stream:
        mix = [(c, o, k) for c, o, k, _ in self.MIX]
        weights = [w for *_, w in self.MIX]
        shapes = list(SHAPE_WEIGHTS)
        mean_batch = sum(DOCDB_BATCH) / 2
        line_weights = [w / mean_batch if s == "docdb" else w for s, w in SHAPE_WEIGHTS.items()]
        lines: list[tuple[str, str]] = []
        kinds: Counter[str] = Counter()
        shape_counts: Counter[str] = Counter()
        pre_images = updates_and_deletes = 0
        produced = 0
        while produced < events:
            shape = self.rng.choices(shapes, line_weights)[0]
            batch = min(self.rng.randint(*DOCDB_BATCH), events - produced) if shape == "docdb" else 1
            texts = []
            for _ in range(batch):
                collection, operation, kind = self.rng.choices(mix, weights)[0]
                text, pre_image = self._event(collection, operation, kind)
                kinds[f"{collection} {operation}" + (f" ({kind})" if kind else "")] += 1
                if operation != "insert":
                    updates_and_deletes += 1
                    pre_images += pre_image
                texts.append((collection, text))
            produced += batch
            shape_counts[shape] += batch
            if shape == "change-stream":
                line = _encode(texts[0][1], "relaxed")
            elif shape == "eventbridge-plain":
                line = self._eventbridge(texts[0][0], _encode(texts[0][1], "plain"))
            elif shape == "eventbridge-ejson":
                line = self._eventbridge(texts[0][0], _encode(texts[0][1], "relaxed"))
            else:
                body = ",".join('{"event":' + _encode(t, "canonical") + "}" for _, t in texts)
                line = (
                    '{"eventSourceArn":"arn:aws:rds:us-east-1:123456789012:cluster:privateauto-docdb",'
                    f'"eventSource":"aws:docdb","events":[{body}]}}'
                )
            lines.append((f"bench:{len(lines) + 1}", line + "\n"))
        world_text = _encode(_dumps({"users": self.world_users, "offers": self.deal_offers}), "relaxed")
        return Stream(
            lines=lines,
            events=produced,
            kinds=kinds,
            shapes=shape_counts,
            pre_images=pre_images,
            updates_and_deletes=updates_and_deletes,
            partners=self.partners,
            world=ejson.loads(world_text),
        )


# --------------------------------------------------------------------------------------------
# The two measured paths.
# --------------------------------------------------------------------------------------------


@dataclass
class Pass:
    seconds: float = 0.0
    deliveries: int = 0
    output_bytes: int = 0
    errors: int = 0
    first_error: str = ""


@dataclass(frozen=True)
class Levers:
    """Which optimisations the distill side uses (all by default), to measure each one's gain."""

    lazy: bool = True
    """Parse with orjson and decode Extended JSON when a field is read (else `ejson.loads`, eagerly)."""
    orjson_output: bool = True
    """Serialise delivery lines with `ejson.compact_json` (else `json.JSONEncoder`)."""


def distill_pass(
    lines: list[tuple[str, str]],
    database: Any,
    collect: list[tuple[dict[str, Any], str]] | None = None,
    levers: Levers = Levers(),
) -> Pass:
    """What `distiller distill` does per run: a fresh `MongoLookups`, chunks of CHUNK_LINES, one line per delivery."""
    lookups = MongoLookups(database, ttl_seconds=float("inf"))
    encode = compact_json if levers.orjson_output else json.JSONEncoder(separators=(",", ":")).encode
    lazy = levers.lazy
    result = Pass()

    def emit(chunk: list[Any]) -> None:
        for outcome in distill(chunk, lookups):
            if isinstance(outcome, RecordError):
                result.errors += 1
                result.first_error = result.first_error or str(outcome)
                continue
            for delivery in outcome.deliveries:
                document = delivery.to_json()
                result.output_bytes += len(encode(document)) + 1
                result.deliveries += 1
                if collect is not None:
                    collect.append((document, delivery.event_key))

    if lazy:  # exactly the CLI's chunking, parsing and collector handling
        for chunk in change_chunks(lines, CHUNK_LINES):
            emit(chunk)
        return result
    chunk: list[Any] = []
    for origin, line in lines:
        if not line.strip():
            continue
        chunk.extend(change_events_from_text(line, origin))
        if len(chunk) >= CHUNK_LINES:
            emit(chunk)
            chunk = []
    if chunk:
        emit(chunk)
    return result


def floor_pass(lines: list[tuple[str, str]], outputs: list[tuple[dict[str, Any], str]]) -> Pass:
    """The irreducible work: parse every line, serialise every delivery line, hash every eventKey."""
    loads = json.loads
    encode = json.JSONEncoder(separators=(",", ":")).encode
    sha256 = hashlib.sha256
    result = Pass()
    for _, line in lines:
        loads(line)
    output_bytes = 0
    for document, key in outputs:
        output_bytes += len(encode(document)) + 1
        sha256(key.encode("utf-8")).hexdigest()
    result.output_bytes = output_bytes
    result.deliveries = len(outputs)
    return result


def timed(run: Callable[[], Pass]) -> Pass:
    gc.collect()
    start = time.perf_counter()
    result = run()
    result.seconds = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------------------------


def _rate_row(label: str, seconds: float, events: int, runs: list[float]) -> str:
    spread = " ".join(f"{s:.3f}" for s in runs)
    return f"  {label:<8} {seconds:>9.3f} {events / seconds:>12,.0f} {seconds / events * 1e6:>10.2f}   [{spread}]"


def report(stream: Stream, distills: list[Pass], floors: list[Pass], repeat: int) -> dict[str, Any]:
    """Print the report; return its figures (the `--json` document)."""
    best_distill = min(distills, key=lambda p: p.seconds)
    best_floor = min(floors, key=lambda p: p.seconds)
    events = stream.events
    ratio = best_distill.seconds / best_floor.seconds

    print(
        f"trigger-distiller bench: {events:,} change events in {len(stream.lines):,} lines "
        f"({sum(len(line) for _, line in stream.lines) / 1e6:.1f} MB), best of {repeat} after a warm-up, "
        f"chunks of {CHUNK_LINES}"
    )
    print("  shapes:     " + ", ".join(f"{k} {v / events:.0%}" for k, v in stream.shapes.most_common()))
    by_collection: Counter[str] = Counter()
    for kind, n in stream.kinds.items():
        collection, operation = kind.split()[:2]
        by_collection[f"{collection} {operation}"] += n
    print("  changes:    " + ", ".join(f"{k} {v / events:.1%}" for k, v in by_collection.most_common()))
    print(
        f"  pre-images: {stream.pre_images / max(stream.updates_and_deletes, 1):.0%} of updates/deletes; "
        f"partners: {len(stream.partners)}; world: "
        + ", ".join(f"{len(docs):,} {name}" for name, docs in stream.world.items())
    )
    print(
        f"  deliveries: {best_distill.deliveries:,} ({best_distill.deliveries / events:.2f} per event, "
        f"{best_distill.output_bytes / 1e6:.1f} MB of JSON lines); record errors: {best_distill.errors}"
    )
    if best_distill.errors:
        print(f"  first record error: {best_distill.first_error}", file=sys.stderr)
    print()
    print(f"  {'':<8} {'time (s)':>9} {'events/s':>12} {'µs/event':>10}   [runs]")
    print(_rate_row("distill", best_distill.seconds, events, [p.seconds for p in distills]))
    print(_rate_row("floor", best_floor.seconds, events, [p.seconds for p in floors]))
    print(f"  {'ratio':<8} {ratio:>9.2f}x  (distill / floor, target ≤ {TARGET_RATIO:g}x)")
    print()
    verdict = f"within {TARGET_RATIO:g}x target" if ratio <= TARGET_RATIO else "over target"
    aim = "aim met" if ratio <= AIM_RATIO else f"aim {AIM_RATIO:g}x"
    print(f"verdict: {verdict}, {aim} (distill is {ratio:.2f}x the floor)")
    return {
        "bench": "distill",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "events": events,
        "lines": len(stream.lines),
        "deliveries": best_distill.deliveries,
        "record_errors": best_distill.errors,
        "distill_seconds": best_distill.seconds,
        "floor_seconds": best_floor.seconds,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "us_per_event": best_distill.seconds / events * 1e6,
        "floor_us_per_event": best_floor.seconds / events * 1e6,
        "us_per_delivery": best_distill.seconds / max(best_distill.deliveries, 1) * 1e6,
        "output_bytes": best_distill.output_bytes,
        "delivery_bytes_mean": best_distill.output_bytes / max(best_distill.deliveries, 1),
        "event_bytes_mean": sum(len(line) for _, line in stream.lines) / events,
        "distill_runs": [p.seconds for p in distills],
        "floor_runs": [p.seconds for p in floors],
    }


def profile(stream: Stream, database: Any, levers: Levers, top: int = 15) -> None:
    profiler = cProfile.Profile()
    gc.collect()
    profiler.enable()
    distill_pass(stream.lines, database, levers=levers)
    profiler.disable()
    for order, title in (("cumulative", "cumulative time"), ("tottime", "total (own) time")):
        print(f"\n=== cProfile of one distill pass: top {top} by {title} ===")
        pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(order).print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.distill_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="change events to generate (100000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side; the best counts (3)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed")
    parser.add_argument("--profile", action="store_true", help="cProfile one distill pass and print the top functions")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures to PATH as one JSON object")
    parser.add_argument(
        "--eager", action="store_true", help="lever off: parse with ejson.loads, decoding every wrapper at once"
    )
    parser.add_argument("--stdlib-output", action="store_true", help="lever off: serialise with json, not orjson")
    args = parser.parse_args(argv)
    levers = Levers(lazy=not args.eager, orjson_output=not args.stdlib_output)
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be positive")

    started = time.perf_counter()
    stream = Generator(args.seed).stream(args.events)
    database = IndexedWorld(in_memory_database(stream.partners, stream.world))
    print(f"(generated in {time.perf_counter() - started:.1f}s)", file=sys.stderr)

    # Warm-up: one untimed distill pass over the whole input, which also keeps the delivery lines
    # (the floor's output side), and a floor pass over the first tenth.
    outputs: list[tuple[dict[str, Any], str]] = []
    distill_pass(stream.lines, database, collect=outputs, levers=levers)
    floor_pass(stream.lines[: max(len(stream.lines) // 10, 1)], outputs[: max(len(outputs) // 10, 1)])

    # Set-up objects (input lines, world, the floor's delivery lines) are frozen out of the collector
    # for both sides alike: otherwise every collection during a run scans them.
    gc.collect()
    gc.freeze()

    distills, floors = [], []
    for _ in range(args.repeat):
        distills.append(timed(lambda: distill_pass(stream.lines, database, levers=levers)))
        floors.append(timed(lambda: floor_pass(stream.lines, outputs)))

    figures = report(stream, distills, floors, args.repeat)
    figures["levers"] = {"lazy": levers.lazy, "orjson_output": levers.orjson_output}
    if args.profile:
        profile(stream, database, levers)
    if args.json is not None:
        figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(f"(total {time.perf_counter() - started:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
