"""The relay's checkpoints in MongoDB: where each relay name last got to, so a run resumes, never skips."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from distiller.core.clock import utc_now
from distiller.relay.stream import CHECKPOINTS_COLLECTION, Checkpoint, RelayError


class MongoCheckpointStore:
    """`relay_checkpoints`: one document per relay name, `{_id: name, token, savedAt, changeTime}`.

    It lives in the watched database; the relay's `$match` on the source collections keeps its
    own writes out of the stream.
    """

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def load(self, name: str) -> Checkpoint | None:
        doc = self._collection.find_one({"_id": name})
        if doc is None:
            return None
        token = doc.get("token")
        if not isinstance(token, dict) or not isinstance(token.get("_data"), str) or not token["_data"]:
            raise RelayError(
                f"relay {name}: the checkpoint in {CHECKPOINTS_COLLECTION} holds no usable resume token "
                f"({token!r}); fix it, or delete {{_id: {name!r}}} and start again with `--start-at now` "
                "(RELAY_START_AT=now on Lambda), then replay the gap with `distiller replay --since ...`"
            )
        return Checkpoint(dict(token), doc.get("savedAt"), doc.get("changeTime"))

    def save(self, name: str, token: Mapping[str, Any], change_time: dt.datetime | None = None) -> None:
        update: dict[str, Any] = {"token": dict(token), "savedAt": utc_now()}
        if change_time is not None:
            update["changeTime"] = change_time
        self._collection.update_one({"_id": name}, {"$set": update}, upsert=True)
