"""Read the delivery log the way partners see it: one partner's attempts, newest first.

The filters are the spec's `GET /data/webhook-deliveries/:partnerId` (status, event,
dateFrom/dateTo as `since`/`until`, plus eventId), defined once by `DeliveryFilter`: its Mongo
query for the delivery log in Mongo, its `matches` for the JSON Lines `distiller run --log`
wrote. Both sources are refused the same bad filters and come back in the same order.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from distiller.core.clock import parse_instant
from distiller.deliver.log import DELIVERY_STATUSES, NEWEST_FIRST, DeliveryFilter, as_utc, log_line


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


__all__ = ["LogFileError", "LoggedAttempt", "list_deliveries", "list_logged_deliveries", "read_log"]
