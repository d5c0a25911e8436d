"""`credit_reports` trigger table: loan payoff on a seller's financed vehicle.

The spec spells the collection `creditreports` in its trigger table and `credit_reports`
elsewhere; the same table serves both. Both events are deal events of the linked deal (`dealId`):
`deal.loan_payoff_confirmed` is an ordinary deal payload; `deal.loan_payoff_docs` is the spec's
stated exception, whose `id` is the credit report's (with `dealId` beside it).
"""

from distiller.core.payloads import files_at, linked_deal_payload, loan_payoff_docs_payload
from distiller.core.reducers.rules import Becomes, FirstAdded, Reducer, row

REDUCER = Reducer(
    collection="credit_reports",
    entity_type="credit_reports",
    aliases=("creditreports",),
    payload=linked_deal_payload,
    linked_deals=("dealId", "deal"),
    rows=(
        row(
            "deal.loan_payoff_docs",
            FirstAdded("manualPayoffInfo.loanPayoffDocuments"),
            payload=loan_payoff_docs_payload,
            files=files_at("manualPayoffInfo.loanPayoffDocuments"),
        ),
        row(
            "deal.loan_payoff_confirmed",
            Becomes("manualPayoffInfo.status", "confirmed", any_case=True),
            entity_type="deals",
        ),
    ),
)
