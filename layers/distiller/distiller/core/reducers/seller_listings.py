"""`seller_listings` trigger table (spec: "Listing events").

One Mongo update produces at most one listing event: rows are in precedence order and the
first match wins; `listing.updated` is the catch-all. An insert yields `listing.created`, plus
`listing.ownership_set` when the initial document already declares ownership.
"""

from distiller.core.payloads import listing_payload
from distiller.core.reducers.rules import AnyOtherChange, Becomes, Inserted, IsSet, Reducer, SetTrue, row

#: Writes that are bookkeeping or belong to another feature, never a partner-visible edit.
#: `cashOffer*` is the spec's "cash-offer" exclusion from the catch-all.
NOT_A_LISTING_EDIT = frozenset({"updatedAt", "__v", "cashOffer", "cashOffers", "cashOfferStatus"})

REDUCER = Reducer(
    collection="seller_listings",
    entity_type="seller_listings",
    payload=listing_payload,
    one_event_per_update=True,
    rows=(
        row("listing.created", Inserted()),
        row(
            "listing.deleted",
            Becomes("status", "deactivated"),
            Becomes("status", "expired"),
            SetTrue("deleted"),
        ),
        row("listing.sold", Becomes("status", "sold")),
        row("listing.published", Becomes("status", "live")),
        row("listing.ownership_set", IsSet("ownershipInfo.ownershipType", on_insert=True)),
        row("listing.updated", AnyOtherChange(ignored=NOT_A_LISTING_EDIT)),
    ),
)
