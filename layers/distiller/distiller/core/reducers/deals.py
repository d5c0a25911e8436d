"""`deals` trigger table (spec: "Deal events", Mongo trigger column).

Rows are in lifecycle order, which is also the emission order within one change: the
confirm-payment write that sets `dealState.closingStatus: acknowledged` and `status: sold`
together yields `deal.payment_acknowledged` then `deal.completed`, as the C2D sequence shows.
"""

from distiller.core.payloads import deal_negative_equity_payload, deal_payload, files_at
from distiller.core.reducers.rules import (
    AllOf,
    Becomes,
    BecomesTruthy,
    Inserted,
    IsSet,
    NotTouched,
    Reducer,
    SetTrue,
    Touched,
    Updated,
    row,
)

#: The seller's title photos, carried as signed links by both title events.
TITLE_FILES = files_at("titleAttachment.files", "titleAttachment.images", "titleAttachment.photos")
NEGATIVE_EQUITY = SetTrue("negativeEquity")
AMOUNT = "payment.privateAutoPay.amount"

REDUCER = Reducer(
    collection="deals",
    entity_type="deals",
    payload=deal_payload,
    rows=(
        row("deal.created", Inserted()),
        row("deal.offer_accepted", BecomesTruthy("allPartiesConfirmed")),
        row("deal.buyer_joined", Becomes("dealState.buyer.status", "joined")),
        row("deal.seller_joined", Becomes("dealState.seller.status", "joined")),
        row("deal.co_seller_invited", IsSet("seller.coSellerInviteSentAt")),
        row("deal.title_submitted", IsSet("seller.titleConfirmedDate"), files=TITLE_FILES),
        row("deal.title_approved", IsSet("titleAttachment.completedDate"), files=TITLE_FILES),
        row("deal.docs_submitted", Becomes("dealState.documentsStatus", "pending")),
        row("deal.docs_approved", Becomes("dealState.documentsStatus", "complete")),
        row("deal.buyer_ready", Becomes("dealState.buyer.status", "readyToClose")),
        row("deal.seller_ready", Becomes("dealState.seller.status", "readyToClose")),
        row("deal.amount_changed", Updated(AMOUNT)),
        # Admin/service path (SpinwheelService stamps the flag alone) vs the user path (the
        # consumer's amount edit crosses the payoff threshold and the flag comes with it).
        row(
            "deal.negative_equity_identified",
            AllOf((NEGATIVE_EQUITY, NotTouched(AMOUNT))),
            payload=deal_negative_equity_payload,
        ),
        row(
            "deal.negative_equity_reported",
            AllOf((NEGATIVE_EQUITY, Touched(AMOUNT))),
            payload=deal_negative_equity_payload,
        ),
        row("deal.negative_equity_funded", SetTrue("negativeEquityFunded")),
        row("deal.payment_initiated", Becomes("dealState.closingStatus", "initiated")),
        row("deal.payment_acknowledged", Becomes("dealState.closingStatus", "acknowledged")),
        row("deal.completed", Becomes("status", "sold")),
        row("deal.cancelled", Becomes("status", "dealCancelled")),
        row("deal.expired", Becomes("status", "dealExpired")),
    ),
)
