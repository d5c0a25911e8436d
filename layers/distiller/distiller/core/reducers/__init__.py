"""One reducer per collection; each module is that collection's trigger table."""

from distiller.core.reducers import (
    credit_reports,
    deals,
    documents,
    generated_documents,
    offers,
    seller_listings,
    users,
)
from distiller.core.reducers.rules import Reducer

TABLES: tuple[Reducer, ...] = tuple(
    module.REDUCER for module in (deals, offers, seller_listings, users, documents, generated_documents, credit_reports)
)

#: Collection name (and each alias) → its trigger table.
REDUCERS: dict[str, Reducer] = {name: reducer for reducer in TABLES for name in (reducer.collection, *reducer.aliases)}


def all_events() -> list[str]:
    """Every partner event some reducer can emit, in table order."""
    return [r.event for reducer in TABLES for r in reducer.rows]
