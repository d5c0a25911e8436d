"""Which dead letters (and replayed deliveries) an operator picked: partner, event pattern, time range.

One `DeliveryFilter` serves `distiller dlq redrive` and `distiller replay`; events match the
way a partner's subscription does (`distiller.core.routing.matching_subscription`: exact name,
`family.*`, `*`), so `--event deal.*` means what it means in a partner record.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from distiller.core.routing import matching_subscription
from distiller_tools.partners.records import InputError, catalog_events, check_partner_id, unknown_event


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Partners (any of), event patterns (any of) and a closed time range; empty parts match everything."""

    partners: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @property
    def by_delivery(self) -> bool:
        """Whether it asks about partner or event (which only a delivery carries)."""
        return bool(self.partners or self.events)

    @property
    def active(self) -> bool:
        return self.by_delivery or self.since is not None or self.until is not None

    def matches_delivery(self, partner_id: str, event: str) -> bool:
        if self.partners and partner_id not in self.partners:
            return False
        return not self.events or matching_subscription(self.events, event) is not None

    def matches_time(self, when: dt.datetime | None) -> bool:
        """Within [since, until]; a message whose time is unknown matches only an open range."""
        if self.since is None and self.until is None:
            return True
        if when is None:
            return False
        return (self.since is None or when >= self.since) and (self.until is None or when <= self.until)

    def describe(self) -> str:
        parts = []
        if self.partners:
            parts.append(f"partner {','.join(self.partners)}")
        if self.events:
            parts.append(f"event {','.join(self.events)}")
        if self.since is not None:
            parts.append(f"since {_iso(self.since)}")
        if self.until is not None:
            parts.append(f"until {_iso(self.until)}")
        return ", ".join(parts) or "everything"


def delivery_filter(
    partners: Iterable[str] | None = None,
    events: Iterable[str] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> DeliveryFilter:
    """A checked filter from the command line's values (each option may hold a comma-separated list).

    Raises `InputError` naming the option: an invalid partner id, an event or wildcard that matches
    no catalog event, or `--until` before `--since`.
    """
    partner_ids = _items(partners, "--partner")
    for partner_id in partner_ids:
        check_partner_id(partner_id)
    patterns = _items(events, "--event")
    names = catalog_events()
    for pattern in patterns:
        if not any(matching_subscription((pattern,), name) for name in names):
            raise InputError(f"--event: {unknown_event(pattern, names)}")
    since, until = _utc(since), _utc(until)
    if since is not None and until is not None and until < since:
        raise InputError(f"--until {_iso(until)} is before --since {_iso(since)}")
    return DeliveryFilter(tuple(partner_ids), tuple(patterns), since, until)


def _items(values: Iterable[str] | None, option: str) -> list[str]:
    items: list[str] = []
    for value in values or ():
        parts = [part.strip() for part in value.split(",")]
        if any(not part for part in parts):
            raise InputError(f"{option} {value!r}: expected names separated by commas")
        items.extend(parts)
    return list(dict.fromkeys(items))


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=dt.UTC)
    return when


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def sqs_sent_at(message: dict[str, Any]) -> dt.datetime | None:
    """When a received SQS message was sent to its queue (attribute `SentTimestamp`, epoch ms)."""
    raw = message.get("Attributes", {}).get("SentTimestamp")
    try:
        return dt.datetime.fromtimestamp(int(raw) / 1000, tz=dt.UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def group_rows(counts: Counter[tuple[str | None, str | None]]) -> list[dict[str, Any]]:
    """`[{partner, event, messages}]`, sorted, from counts keyed by (partner, event)."""
    return [
        {"partner": partner, "event": event, "messages": n}
        for (partner, event), n in sorted(counts.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or ""))
    ]


def summary_lines(counts: Counter[tuple[str | None, str | None]], verb: str) -> list[str]:
    """One line per partner and event for a person to read: `acme deal.created: 3 would move`."""
    return [f"{row['partner'] or '-'} {row['event'] or '-'}: {row['messages']} {verb}" for row in group_rows(counts)]


__all__ = ["DeliveryFilter", "delivery_filter", "group_rows", "sqs_sent_at", "summary_lines"]
