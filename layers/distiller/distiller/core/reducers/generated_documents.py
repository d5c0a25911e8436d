"""`platoforms_generated_documents` trigger table: the generated Bill of Sale and friends.

Same signature rows as `documents`; the legacy event is `deal.bill_of_sale_approved`, fired with
the Bill of Sale's `document.completed`. A generated document routes through every deal in its
`sharedDeals` (a Bill of Sale may sit on several); each partner's `dealId` is its own deal.
"""

from distiller.core.payloads import approved_document_payload, signature_payload
from distiller.core.reducers.rules import Reducer, row
from distiller.core.reducers.signatures import FULLY_SIGNED, SIGNED_FILES, SLOT_SIGNED

REDUCER = Reducer(
    collection="platoforms_generated_documents",
    entity_type="platoforms_generated_documents",
    payload=signature_payload,
    linked_deals=("sharedDeals", "dealId"),
    rows=(
        row("document.signature_added", SLOT_SIGNED),
        row("document.completed", FULLY_SIGNED),
        row(
            "deal.bill_of_sale_approved",
            FULLY_SIGNED,
            where={"docClassification": "bill-of-sale"},
            payload=approved_document_payload,
            files=SIGNED_FILES,
        ),
    ),
)
