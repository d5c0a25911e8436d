"""`credit_reports` trigger table: loan payoff on a seller's financed vehicle.

The spec spells the collection `creditreports` in its trigger table and `credit_reports`
elsewhere; the same table serves both. Events reference the credit report by id and route
through its deal (`dealId`).
"""

from distiller.payloads import credit_report_payload, files_at
from distiller.reducers.rules import Becomes, FirstAdded, Reducer, row

REDUCER = Reducer(
    collection="credit_reports",
    entity_type="credit_reports",
    aliases=("creditreports",),
    payload=credit_report_payload,
    linked_deals=("dealId", "deal"),
    rows=(
        row(
            "deal.loan_payoff_docs",
            FirstAdded("manualPayoffInfo.loanPayoffDocuments"),
            files=files_at("manualPayoffInfo.loanPayoffDocuments"),
        ),
        row("deal.loan_payoff_confirmed", Becomes("manualPayoffInfo.status", "confirmed")),
    ),
)
