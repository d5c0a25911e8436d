"""One reducer per collection; each module is that collection's trigger table."""

from distiller.reducers import deals, offers, seller_listings, users
from distiller.reducers.rules import Reducer

REDUCERS: dict[str, Reducer] = {
    module.REDUCER.collection: module.REDUCER for module in (deals, offers, seller_listings, users)
}


def all_events() -> list[str]:
    """Every partner event some reducer can emit, in table order."""
    return [r.event for reducer in REDUCERS.values() for r in reducer.rows]
