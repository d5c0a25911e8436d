"""Read the delivery log the way partners see it: one partner's attempts, newest first.

The filters are the spec's `GET /data/webhook-deliveries/:partnerId` (status, event,
dateFrom/dateTo as `since`/`until`, plus eventId), defined once by `DeliveryFilter`: its Mongo
query for the delivery log in Mongo, its `matches` for the JSON Lines `distiller run --log`
wrote. Both sources are refused the same bad filters and come back in the same order.
`delivery_stats` sums the same attempts per partner for `distiller deliveries --stats`, with the
deliveries held for a paused partner (log status `held`: kept, not attempts) counted apart.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distiller.core.clock import parse_instant
from distiller.deliver.log import DELIVERY_STATUSES, NEWEST_FIRST, DeliveryFilter, as_utc, log_line
from distiller_tools.partners.health import state_label


def _checked_filter(
    partner_id: str,
    status: str | None,
    event: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    event_id: str | None,
    limit: int,
) -> DeliveryFilter:
    """The filter, or ValueError for one that is wrong rather than merely empty."""
    if not partner_id:
        raise ValueError("partner: required")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(DELIVERY_STATUSES)}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if since is not None and until is not None and as_utc(since) > as_utc(until):
        raise ValueError("since is after until: nothing can match")
    return DeliveryFilter(partner_id, status=status, event=event, date_from=since, date_to=until, event_id=event_id)


def list_deliveries(
    collection: Any,
    partner_id: str,
    *,
    status: str | None = None,
    event: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    event_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """One partner's delivery attempts from the delivery log (Mongo), newest first, as plain JSON.

    Filters as the spec's webhook-deliveries endpoint: `since`/`until` are its dateFrom/dateTo
    (inclusive bounds on `attemptedAt`). Raises ValueError for an unknown status or bad bounds.
    """
    wanted = _checked_filter(partner_id, status, event, since, until, event_id, limit)
    cursor = collection.find(wanted.query(), sort=NEWEST_FIRST, limit=limit)
    return [log_line(document) for document in cursor]


class LogFileError(ValueError):
    """A `--log` file that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class LoggedAttempt:
    """One line of a `--log` file: its number (the order it was written in) and its parsed time."""

    line: int
    attempted_at: dt.datetime
    entry: dict[str, Any]


def read_log(lines: Iterable[str], name: str) -> list[LoggedAttempt]:
    """The JSON Lines `distiller run --log` writes (one `log_line` per attempt)."""
    attempts: list[LoggedAttempt] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError as exc:
            raise LogFileError(f"{name}:{number}: not JSON: {exc}") from exc
        if not isinstance(entry, dict):
            raise LogFileError(f"{name}:{number}: expected a JSON object")
        if not isinstance(entry.get("attemptedAt"), str):
            raise LogFileError(f"{name}:{number}: attemptedAt: required ISO 8601 string")
        try:
            attempted_at = parse_instant(entry["attemptedAt"])
        except ValueError as exc:
            raise LogFileError(f"{name}:{number}: attemptedAt: {exc}") from exc
        attempts.append(LoggedAttempt(number, attempted_at, entry))
    return attempts


def list_logged_deliveries(
    attempts: Iterable[LoggedAttempt],
    partner_id: str,
    *,
    status: str | None = None,
    event: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    event_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """`list_deliveries` over a `--log` file's attempts: the same filters and order."""
    wanted = _checked_filter(partner_id, status, event, since, until, event_id, limit)
    matching = [a for a in attempts if wanted.matches(a.entry)]
    # NEWEST_FIRST for a file: the log is written oldest first, so among equal times the later
    # line is the newer attempt (as the later _id is in Mongo)
    matching.sort(key=lambda a: (a.attempted_at, a.line), reverse=True)
    return [a.entry for a in matching[:limit]]


STATS_FIELDS = {"partnerId": 1, "event": 1, "status": 1, "attemptedAt": 1, "latencyMs": 1, "error": 1, "_id": 1}
"""What `--stats` reads of each attempt: never the payload or the partner's response."""
ERROR_WIDTH = 60


@dataclass(slots=True)
class PartnerStats:
    """One partner's attempts (delivered or failed; skipped ones were not attempts) in the window, and
    the deliveries held for it while paused (`held`: not attempts, so not in the success rate)."""

    partner_id: str
    delivered: int = 0
    failed: int = 0
    held: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    last_error: str | None = None
    last_error_at: tuple[dt.datetime, Any] | None = None
    state: str = "-"

    @property
    def attempts(self) -> int:
        return self.delivered + self.failed

    def success_rate(self) -> float | None:
        return None if not self.attempts else 100.0 * self.delivered / self.attempts


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (the value at rank ceil(p/100 * n)); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def _stats_window(since: dt.datetime | None, until: dt.datetime | None) -> DeliveryFilter:
    if since is not None and until is not None and as_utc(since) > as_utc(until):
        raise ValueError("since is after until: nothing can match")
    return DeliveryFilter("", date_from=since, date_to=until)


def delivery_stats(
    entries: Iterable[tuple[Mapping[str, Any], dt.datetime, Any]],
    *,
    partner_id: str | None = None,
    event: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    states: Mapping[str, str] | None = None,
) -> list[PartnerStats]:
    """Per partner: attempts, delivered, latencies (entries without `latencyMs` count without one),
    the newest failed attempt's error, and the deliveries held (`held` entries, counted apart).
    `entries` are (attempt, its time, a tiebreak in write order).
    Partners in `states` (id -> paused/active/inactive) are listed even without attempts."""
    window = _stats_window(since, until)
    table: dict[str, PartnerStats] = {}
    for pid, state in (states or {}).items():
        if partner_id is None or pid == partner_id:
            table[pid] = PartnerStats(pid, state=state)
    for entry, at, order in entries:
        pid = str(entry.get("partnerId"))
        wanted = DeliveryFilter(pid, event=event, date_from=window.date_from, date_to=window.date_to)
        if (partner_id is not None and pid != partner_id) or not wanted.matches(entry):
            continue
        row = table.setdefault(pid, PartnerStats(pid, state="-" if states is None else "unknown"))
        status = entry.get("status")
        if status == "delivered":
            row.delivered += 1
        elif status == "failed":
            row.failed += 1
            if row.last_error_at is None or (as_utc(at), order) > row.last_error_at:
                row.last_error_at = (as_utc(at), order)
                row.last_error = str(entry.get("error") or "failed")
        elif status == "held":
            row.held += 1
            continue
        else:
            continue
        latency = entry.get("latencyMs")
        if isinstance(latency, int | float) and not isinstance(latency, bool):
            row.latencies_ms.append(float(latency))
    return sorted(table.values(), key=lambda r: r.partner_id)


def mongo_stats(
    deliveries: Any,
    partners: Any,
    *,
    partner_id: str | None = None,
    event: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[PartnerStats]:
    """`delivery_stats` over the delivery log in Mongo, states from the partners collection."""
    window = _stats_window(since, until)
    query = DeliveryFilter("", event=event, date_from=window.date_from, date_to=window.date_to).query()
    query.pop("partnerId", None)
    if partner_id is not None:
        query["partnerId"] = partner_id
    query["status"] = {"$in": ["delivered", "failed", "held"]}
    states = {
        str(r.get("partnerId")): state_label(r) for r in partners.find({}, {"partnerId": 1, "state": 1, "active": 1})
    }
    cursor = deliveries.find(query, STATS_FIELDS)
    entries = ((doc, doc.get("attemptedAt") or dt.datetime.min, doc.get("_id")) for doc in cursor)
    return delivery_stats(entries, partner_id=partner_id, event=event, since=since, until=until, states=states)


def logged_stats(
    attempts: Iterable[LoggedAttempt],
    *,
    partner_id: str | None = None,
    event: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[PartnerStats]:
    """`delivery_stats` over a `--log` file (no partner records there: state `-`)."""
    entries = ((a.entry, a.attempted_at, a.line) for a in attempts)
    return delivery_stats(entries, partner_id=partner_id, event=event, since=since, until=until)


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def stats_table(rows: list[PartnerStats]) -> list[str]:
    """The terminal table: one line per partner, columns aligned."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    table = [("PARTNER", "ATTEMPTS", "DELIVERED", "SUCCESS", "P50 MS", "P95 MS", "HELD", "STATE", "LAST ERROR")]
    for row in rows:
        rate = row.success_rate()
        table.append(
            (
                row.partner_id,
                str(row.attempts),
                str(row.delivered),
                "-" if rate is None else f"{rate:.1f}%",
                ms(percentile(row.latencies_ms, 50)),
                ms(percentile(row.latencies_ms, 95)),
                str(row.held),
                row.state,
                _one_line(row.last_error, ERROR_WIDTH) if row.last_error else "-",
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]


__all__ = [
    "LogFileError",
    "LoggedAttempt",
    "PartnerStats",
    "delivery_stats",
    "list_deliveries",
    "list_logged_deliveries",
    "logged_stats",
    "mongo_stats",
    "percentile",
    "read_log",
    "stats_table",
]
