"""`users` trigger table: every insert is `user.registered` (routing decides who receives it)."""

import pytest

from distiller.core.reducers import REDUCERS
from distiller.core.transitions import Transitions
from tests.factories import as_change, oid, raw_insert, raw_update

USER = {
    "_id": oid(0xA5),
    "email": "jane@example.com",
    "firstName": "Jane",
    "lastName": "Doe",
    "appRegisteredFrom": "acme",
}


def _replace(document):
    raw = raw_insert("users", document)
    raw["operationType"] = "replace"
    return raw


CASES = [
    pytest.param(raw_insert("users", USER), ["user.registered"], id="user.registered"),
    pytest.param(
        raw_insert("users", {"_id": oid(0xA6), "userDetails": {"email": "x@example.com"}}),
        ["user.registered"],
        id="insert-without-appRegisteredFrom-still-reduces",
    ),
    pytest.param(
        raw_update("users", {"firstName": "Janet"}, {**USER, "firstName": "Janet"}, before=USER),
        [],
        id="profile-update-fires-nothing",
    ),
    pytest.param(
        raw_update("users", {"appRegisteredFrom": "acme"}, USER), [], id="appRegisteredFrom-set-later-fires-nothing"
    ),
    pytest.param(_replace(USER), [], id="replace-is-not-a-registration"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_users_trigger_table(raw, expected):
    change = as_change(raw)

    fired = REDUCERS["users"].reduce(Transitions(change, change.full_document))

    assert [r.event for r in fired] == expected
