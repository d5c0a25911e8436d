"""The signature triggers both document tables share (`documents`, `platoforms_generated_documents`)."""

from distiller.core.payloads import files_at
from distiller.core.reducers.rules import AllNewlySet, EachNewlySet

#: `manualSignatures[i].signedAt set`: one `document.signature_added` per newly signed slot.
SLOT_SIGNED = EachNewlySet("manualSignatures", "signedAt")
#: Every slot signed, the last one by this update: `document.completed` and the legacy event.
FULLY_SIGNED = AllNewlySet("manualSignatures", "signedAt")
#: The signed document's files (the /data DTO calls them `signed`).
SIGNED_FILES = files_at("signed", "files", "file", "fileKey", "key")
