"""The one clock and the one ISO 8601 reader/writer: instants are aware UTC datetimes everywhere."""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    """The current instant, timezone-aware (the default clock wherever one is injected)."""
    return dt.datetime.now(dt.UTC)


def iso_utc(value: dt.datetime) -> str:
    """ISO 8601 with milliseconds and a `Z`, the format of the spec's examples."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    value = value.astimezone(dt.UTC)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T"
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond // 1000:03d}Z"
    )


def parse_instant(text: str) -> dt.datetime:
    """An ISO 8601 date or date-time as an aware UTC datetime; no offset means UTC, `Z` is accepted.

    `ValueError` (naming the text) when it is not one, `OverflowError` folded into it when the
    offset moves it outside what a datetime holds (year 1 at +14:00).
    """
    try:
        value = dt.datetime.fromisoformat(text.strip())
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an ISO 8601 date or date-time (e.g. 2025-03-14T15:09:26Z)") from exc
    except OverflowError as exc:
        raise ValueError(f"{text!r} is out of range once converted to UTC") from exc
