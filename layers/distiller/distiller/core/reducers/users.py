"""`users` trigger table (spec: "User events").

Every insert emits `user.registered`; routing decides who receives it (appSource scope:
`appRegisteredFrom`; organization scope: `userDetails.organizationId`).
"""

from distiller.core.payloads import user_payload
from distiller.core.reducers.rules import Inserted, Reducer, row

REDUCER = Reducer(
    collection="users",
    entity_type="users",
    payload=user_payload,
    rows=(row("user.registered", Inserted()),),
)
