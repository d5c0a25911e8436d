"""`platoforms_generated_documents` trigger table: the generated Bill of Sale and friends.

Same signature rows as `documents`; the legacy event is `deal.bill_of_sale_approved`, fired with
the Bill of Sale's `document.completed`. A generated document routes through every deal in its
`sharedDeals` (a Bill of Sale may sit on several); each partner's `dealId` is its own deal.
"""

from distiller.payloads import approved_document_payload, files_at, signature_payload
from distiller.reducers.rules import AllNewlySet, EachNewlySet, Reducer, row

SIGNED_FILES = files_at("signed", "files", "file", "fileKey", "key")

REDUCER = Reducer(
    collection="platoforms_generated_documents",
    entity_type="platoforms_generated_documents",
    payload=signature_payload,
    linked_deals=("sharedDeals", "dealId"),
    rows=(
        row("document.signature_added", EachNewlySet("manualSignatures", "signedAt")),
        row("document.completed", AllNewlySet("manualSignatures", "signedAt")),
        row(
            "deal.bill_of_sale_approved",
            AllNewlySet("manualSignatures", "signedAt"),
            where={"docClassification": "bill-of-sale"},
            payload=approved_document_payload,
            files=SIGNED_FILES,
        ),
    ),
)
