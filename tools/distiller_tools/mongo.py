"""The operator commands' one way to open the stack's database from a URI."""

from __future__ import annotations

from typing import Any


def open_database(uri: str, database: str, appname: str) -> Any:
    """`database` at `uri`: timezone-aware dates, a 10 s server selection unless the URI chooses, and
    `appname` so the command shows in the server's logs and `currentOp`."""
    from pymongo import MongoClient  # at call time: tests swap in mongomock's

    options: dict[str, Any] = {"tz_aware": True, "appname": appname}
    if "serverselectiontimeoutms" not in uri.lower():  # the URI's own choice wins
        options["serverSelectionTimeoutMS"] = 10_000
    return MongoClient(uri, **options)[database]
