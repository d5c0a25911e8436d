"""The one small repository in front of MongoDB: partner records and linked entities.

Lookups are batched (one `$in` query per collection per call) and cached for a short TTL, so
a warm Lambda pays for a partner list or a linked deal once, not once per record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from bson import ObjectId

from distiller.core.ejson import id_string, plain
from distiller.core.partners import Partner

logger = logging.getLogger(__name__)

PARTNERS_COLLECTION = "partners"


class LookupFailure(RuntimeError):
    """The database could not answer; the caller retries the record rather than dropping it."""


class Lookups(Protocol):
    def partners(self) -> list[Partner]: ...

    def documents(self, collection: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...


def id_forms(value: str) -> list[Any]:
    """Stored values that read as `value` (`id_string`): the string itself, and the ObjectId whose
    canonical (lowercase, 24-digit) hex it is.

    Only canonical hex has an ObjectId form: `ObjectId.is_valid` also accepts any 12-character
    string (as raw bytes) and upper-case hex, whose ObjectIds read as a different string.
    """
    forms: list[Any] = [value]
    if ObjectId.is_valid(value) and str(ObjectId(value)) == value:
        forms.append(ObjectId(value))
    return forms


def unambiguous_by_id(documents: Iterable[dict[str, Any]], where: str) -> dict[str, dict[str, Any]]:
    """Documents keyed by `id_string(_id)`, without any id two documents share.

    A string `_id` and an ObjectId `_id` with the same hex read as the same id: in a collection
    that mixes id types they may be two tenants' entities, so neither is taken for the other;
    the id is refused (absent) and logged.
    """
    by_id: dict[str, dict[str, Any]] = {}
    ambiguous: set[str] = set()
    for document in documents:
        doc_id = id_string(plain(document.get("_id"))) or ""
        if doc_id in by_id:
            ambiguous.add(doc_id)
        by_id[doc_id] = document
    for doc_id in ambiguous:
        del by_id[doc_id]
        logger.error("%s: two documents have _id %s (a string and an ObjectId): refused as ambiguous", where, doc_id)
    return by_id
