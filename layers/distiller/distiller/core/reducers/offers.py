"""`offers` trigger table (spec: "Offer events"). Payload statuses use the external vocabulary."""

from distiller.core.payloads import offer_payload
from distiller.core.reducers.rules import Becomes, Inserted, Reducer, row

REDUCER = Reducer(
    collection="offers",
    entity_type="offers",
    payload=offer_payload,
    rows=(
        row("offer.created", Inserted()),
        row("offer.accepted", Becomes("status", "accepted")),
        row("offer.rejected", Becomes("status", "declined")),
        row("offer.cancelled", Becomes("status", "deleted")),
    ),
)
