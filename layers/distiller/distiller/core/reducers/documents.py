"""`documents` trigger table: signatures on deal documents (POA, state paperwork, addenda).

Each `manualSignatures[i].signedAt` newly set is one `document.signature_added` (slot i); the
update that signs the last slot also yields `document.completed` and, for a POA during the
deprecation window, the legacy `deal.poa_approved`. A document routes through its deal (`dealId`).
"""

from distiller.core.payloads import approved_document_payload, signature_payload
from distiller.core.reducers.rules import Reducer, row
from distiller.core.reducers.signatures import FULLY_SIGNED, SIGNED_FILES, SLOT_SIGNED

REDUCER = Reducer(
    collection="documents",
    entity_type="documents",
    payload=signature_payload,
    linked_deals=("dealId",),
    rows=(
        row("document.signature_added", SLOT_SIGNED),
        row("document.completed", FULLY_SIGNED),
        row(
            "deal.poa_approved",
            FULLY_SIGNED,
            where={"docClassification": "poa"},
            payload=approved_document_payload,
            files=SIGNED_FILES,
        ),
    ),
)
