"""DeliveryMessage (the queue envelope) and RetrySchedule."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distiller.core.model import Delivery
from distiller.deliver.claim_check import INLINE_LIMIT_BYTES, PayloadRef, PayloadTooLarge
from distiller.deliver.dispatch import RetrySchedule
from distiller.deliver.message import DeliveryMessage, DeliveryMessageError

EVENT_ID = "3f" * 32


def make_message(**overrides: object) -> DeliveryMessage:
    fields: dict[str, object] = {
        "partner_id": "acme",
        "event": "offer.accepted",
        "event_id": EVENT_ID,
        "event_key": "resume|acme|offer.accepted|0",
        "payload": {"eventId": EVENT_ID, "eventKey": "resume|acme|offer.accepted|0", "offerId": "o1", "amount": 12500},
        "emitted_at": "2025-03-14T15:09:26.535Z",
    }
    fields.update(overrides)
    return DeliveryMessage(**fields)  # type: ignore[arg-type]


def body_dict(**overrides: object) -> dict[str, object]:
    data = json.loads(make_message().to_body())
    data.update(overrides)
    return data


# --- round trip ----------------------------------------------------------------------------


def test_round_trip_fresh_message() -> None:
    message = make_message()
    assert DeliveryMessage.from_body(message.to_body()) == message


def test_round_trip_after_attempts() -> None:
    message = make_message().after_attempt("2025-03-14T15:10:00Z", "HTTP 503")
    message = message.after_attempt("2025-03-14T15:15:00Z", "timeout: no response within 10s")
    again = DeliveryMessage.from_body(message.to_body())
    assert again == message
    assert again.attempt == 2
    assert again.first_attempt_at == "2025-03-14T15:10:00Z"
    assert again.last_error == "timeout: no response within 10s"


def test_to_body_field_names_and_compactness() -> None:
    body = make_message().to_body()
    assert ": " not in body and ", " not in body
    assert json.loads(body) == {
        "partnerId": "acme",
        "event": "offer.accepted",
        "eventId": EVENT_ID,
        "eventKey": "resume|acme|offer.accepted|0",
        "payload": make_message().payload,
        "emittedAt": "2025-03-14T15:09:26.535Z",
        "attempt": 0,
        "firstAttemptAt": None,
        "lastError": None,
    }


def test_round_trip_non_ascii_payload() -> None:
    message = make_message(payload={"name": "José Ñúñez", "emoji": "🚗"})
    assert DeliveryMessage.from_body(message.to_body()).payload == {"name": "José Ñúñez", "emoji": "🚗"}


def test_from_body_defaults_when_optional_fields_absent() -> None:
    data = body_dict()
    for name in ("attempt", "firstAttemptAt", "lastError"):
        del data[name]
    message = DeliveryMessage.from_body(json.dumps(data))
    assert message.attempt == 0
    assert message.first_attempt_at is None
    assert message.last_error is None


def test_from_delivery_copies_fields() -> None:
    delivery = Delivery(
        partner_id="acme", event="deal.created", event_id=EVENT_ID, event_key="k", payload={"dealId": "d"}
    )
    message = DeliveryMessage.from_delivery(delivery, "2025-01-01T00:00:00Z")
    assert message == DeliveryMessage(
        partner_id="acme",
        event="deal.created",
        event_id=EVENT_ID,
        event_key="k",
        payload={"dealId": "d"},
        emitted_at="2025-01-01T00:00:00Z",
    )
    assert message.attempt == 0


json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(
    payload=st.dictionaries(st.text(max_size=10), json_values, max_size=6),
    attempt=st.integers(min_value=0, max_value=50),
    error=st.none() | st.text(max_size=40),
)
def test_round_trip_property(payload: dict[str, object], attempt: int, error: str | None) -> None:
    message = make_message(payload=payload, attempt=attempt, last_error=error, first_attempt_at="2025-01-01T00:00:00Z")
    assert DeliveryMessage.from_body(message.to_body()) == message


# --- after_attempt -------------------------------------------------------------------------


def test_after_attempt_first_failure() -> None:
    message = make_message()
    after = message.after_attempt("2025-03-14T15:10:00Z", "HTTP 500")
    assert after.attempt == 1
    assert after.first_attempt_at == "2025-03-14T15:10:00Z"
    assert after.last_error == "HTTP 500"
    # everything else unchanged, original untouched
    assert (after.partner_id, after.event, after.event_id, after.event_key, after.payload, after.emitted_at) == (
        message.partner_id,
        message.event,
        message.event_id,
        message.event_key,
        message.payload,
        message.emitted_at,
    )
    assert message.attempt == 0
    assert message.first_attempt_at is None


def test_after_attempt_keeps_first_attempt_at_and_replaces_last_error() -> None:
    first = make_message().after_attempt("2025-03-14T15:10:00Z", "HTTP 500")
    second = first.after_attempt("2025-03-14T15:11:00Z", "connection error: refused")
    third = second.after_attempt("2025-03-14T15:16:00Z", None)
    assert [m.attempt for m in (first, second, third)] == [1, 2, 3]
    assert {m.first_attempt_at for m in (first, second, third)} == {"2025-03-14T15:10:00Z"}
    assert second.last_error == "connection error: refused"
    assert third.last_error is None


def test_after_attempt_keeps_emitted_at() -> None:
    message = make_message().after_attempt("2030-01-01T00:00:00Z", "x")
    assert message.emitted_at == "2025-03-14T15:09:26.535Z"


# --- from_body errors ----------------------------------------------------------------------


def _error(body: str) -> str:
    with pytest.raises(DeliveryMessageError) as error:
        DeliveryMessage.from_body(body)
    return str(error.value)


@pytest.mark.parametrize("body", ["", "not json", "{", "{'partnerId': 'acme'}"])
def test_from_body_not_json(body: str) -> None:
    assert _error(body).startswith("body: not JSON")


@pytest.mark.parametrize("body", ["[]", '"a string"', "42", "null", "true"])
def test_from_body_not_an_object(body: str) -> None:
    assert _error(body) == "body: expected a JSON object"


@pytest.mark.parametrize("field", ["partnerId", "event", "eventId", "eventKey", "emittedAt"])
@pytest.mark.parametrize("bad", ["<missing>", None, "", 7, ["acme"]], ids=["missing", "null", "empty", "int", "list"])
def test_from_body_required_string_fields(field: str, bad: object) -> None:
    data = body_dict()
    if bad == "<missing>":
        del data[field]
    else:
        data[field] = bad
    message = _error(json.dumps(data))
    assert message.startswith(f"{field}:")
    assert "required string" in message


@pytest.mark.parametrize("bad", ["<missing>", None, [], "{}", 1], ids=["missing", "null", "list", "string", "int"])
def test_from_body_payload_must_be_object(bad: object) -> None:
    data = body_dict()
    if bad == "<missing>":
        del data["payload"]
    else:
        data["payload"] = bad
    assert _error(json.dumps(data)) == "payload: required object"


@pytest.mark.parametrize(
    "bad", [-1, True, False, "1", 1.5, None], ids=["negative", "true", "false", "str", "float", "null"]
)
def test_from_body_attempt_must_be_non_negative_int(bad: object) -> None:
    message = _error(json.dumps(body_dict(attempt=bad)))
    assert message.startswith("attempt:")
    assert "non-negative integer" in message


def test_from_body_error_is_value_error() -> None:
    assert issubclass(DeliveryMessageError, ValueError)


def test_from_body_accepts_empty_payload_object() -> None:
    assert DeliveryMessage.from_body(json.dumps(body_dict(payload={}))).payload == {}


# --- raw_body ------------------------------------------------------------------------------


def test_raw_body_is_compact_json_of_payload_only() -> None:
    message = make_message(payload={"eventId": "e1", "n": 1, "list": [1, 2], "nested": {"a": None}})
    assert message.raw_body() == b'{"eventId":"e1","n":1,"list":[1,2],"nested":{"a":null}}'


def test_raw_body_keeps_non_ascii_as_utf8() -> None:
    message = make_message(payload={"name": "José", "car": "🚗"})
    raw = message.raw_body()
    assert raw == '{"name":"José","car":"🚗"}'.encode()
    assert b"\\u" not in raw
    assert "é".encode() in raw


def test_raw_body_preserves_key_order() -> None:
    message = make_message(payload={"z": 1, "a": 2})
    assert message.raw_body() == b'{"z":1,"a":2}'


def test_raw_body_is_identical_after_queue_round_trip() -> None:
    message = make_message(payload={"name": "Zoë", "z": 1, "a": [True, None]})
    assert DeliveryMessage.from_body(message.to_body()).raw_body() == message.raw_body()


# --- RetrySchedule -------------------------------------------------------------------------


def test_retry_schedule_default() -> None:
    assert RetrySchedule().delays == (60, 300, 900)


@pytest.mark.parametrize(("attempts", "delay"), [(1, 60), (2, 300), (3, 900), (4, None), (10, None)])
def test_retry_schedule_delay_after(attempts: int, delay: int | None) -> None:
    assert RetrySchedule().delay_after(attempts) == delay


def test_retry_schedule_parse() -> None:
    assert RetrySchedule.parse("1,2,3") == RetrySchedule((1, 2, 3))
    assert RetrySchedule.parse(" 0, 900 ").delays == (0, 900)
    assert RetrySchedule.parse("5").delay_after(1) == 5
    assert RetrySchedule.parse("5").delay_after(2) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("a,b", "comma-separated whole seconds"),
        ("1.5", "comma-separated whole seconds"),
        ("-1", "0..900"),
        ("901", "0..900"),
        ("60,300,901", "0..900"),
    ],
)
def test_retry_schedule_parse_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as error:
        RetrySchedule.parse(text)
    assert repr(text) in str(error.value)


def test_retry_schedule_empty_dead_letters_after_first_attempt() -> None:
    assert RetrySchedule.parse("").delay_after(1) is None


# --- the claim check ---------------------------------------------------------------------------


class MemoryStore:
    """A PayloadStore in a dict, content-addressed like the S3 one."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, raw: bytes) -> PayloadRef:
        digest = hashlib.sha256(raw).hexdigest()
        self.objects[digest] = raw
        return PayloadRef("bucket", f"claim-check/{digest}.json", len(raw), digest)

    def get(self, ref: PayloadRef) -> bytes:
        return self.objects[ref.sha256]


def big_message() -> DeliveryMessage:
    message = make_message()
    return make_message(payload={**message.payload, "documents": ["ü" * INLINE_LIMIT_BYTES]})


def test_a_small_payload_stays_inline_and_needs_no_store() -> None:
    message = make_message()
    assert message.claim_checked(None) is message
    assert message.with_payload(None) is message


def test_a_large_payload_travels_by_reference_through_every_later_body() -> None:
    store = MemoryStore()
    message = big_message()
    checked = message.claim_checked(store)
    body = json.loads(checked.to_body())
    assert "payload" not in body and body["payloadRef"]["size"] == len(message.raw_body())
    assert len(checked.to_body()) < 1024
    parsed = DeliveryMessage.from_body(checked.to_body())
    loaded = parsed.with_payload(store)
    assert loaded.raw_body() == message.raw_body()  # what is signed and POSTed is unchanged
    after = loaded.after_attempt("2025-03-14T15:10:26Z", "HTTP 500")
    assert "payload" not in json.loads(after.to_body())  # the retry body is small too
    assert DeliveryMessage.from_body(after.to_body()).payload_ref == checked.payload_ref


def test_a_large_payload_without_a_store_is_refused_naming_the_setting() -> None:
    with pytest.raises(PayloadTooLarge, match="CLAIM_CHECK_BUCKET"):
        big_message().claim_checked(None)


@pytest.mark.parametrize(
    ("ref", "field"),
    [
        pytest.param("s3://x", "payloadRef", id="not-an-object"),
        pytest.param({"key": "k", "sha256": "h", "size": 1}, "payloadRef.bucket", id="no-bucket"),
        pytest.param({"bucket": "b", "key": "k", "sha256": "h", "size": -1}, "payloadRef.size", id="negative-size"),
    ],
)
def test_a_bad_payload_reference_is_named(ref: object, field: str) -> None:
    data = body_dict(payloadRef=ref)
    del data["payload"]
    with pytest.raises(DeliveryMessageError, match=field):
        DeliveryMessage.from_body(json.dumps(data))
