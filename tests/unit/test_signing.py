"""Webhook signatures against the spec's "Verifying Signatures" snippet, and the delivery headers."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from distiller.deliver import signing
from distiller.deliver.dispatch import webhook_headers
from distiller.deliver.message import DeliveryMessage
from distiller.deliver.signing import SIGNATURE_PREFIX, SignatureError, signature, verify

SECRET = "whsec_5f3c9a1e7b2d4c6e8f0a1b2c3d4e5f60"
TIMESTAMP = "2025-03-14T15:09:26.535Z"
BODY = b'{"eventId":"ab12","event":"deal.completed","name":"Jos\xc3\xa9"}'


def spec_signature(secret: str, timestamp: str, raw_body: bytes) -> str:
    """The spec's Node snippet, transcribed: 'sha256=' + HMAC-SHA256(secret, `${timestamp}.${body}`) hex."""
    message = f"{timestamp}.{raw_body.decode('utf-8')}"
    return "sha256=" + hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def signed_headers(secret: str = SECRET, timestamp: str = TIMESTAMP, body: bytes = BODY) -> dict[str, str]:
    return {"X-PA-Timestamp": timestamp, "X-PA-Signature": signature(secret, timestamp, body)}


# --- signature() ---------------------------------------------------------------------------


def test_signature_matches_the_spec_snippet() -> None:
    assert signature(SECRET, TIMESTAMP, BODY) == spec_signature(SECRET, TIMESTAMP, BODY)


def test_signature_known_answer() -> None:
    # Fixed vector, computed once from the spec's formula, so a change of formula is caught even if
    # spec_signature above were changed in the same way.
    expected = hmac.new(b"secret", b"2025-01-01T00:00:00Z.{}", hashlib.sha256).hexdigest()
    assert signature("secret", "2025-01-01T00:00:00Z", b"{}") == "sha256=" + expected


def test_signature_shape() -> None:
    value = signature(SECRET, TIMESTAMP, BODY)
    assert value.startswith(SIGNATURE_PREFIX)
    assert SIGNATURE_PREFIX == "sha256="
    digest = value.removeprefix("sha256=")
    assert len(digest) == 64
    assert digest == digest.lower()
    int(digest, 16)


@pytest.mark.parametrize(
    ("secret", "timestamp", "body"),
    [
        ("other-secret", TIMESTAMP, BODY),
        (SECRET, "2025-03-14T15:09:27.535Z", BODY),
        (SECRET, TIMESTAMP, BODY + b" "),
    ],
)
def test_signature_depends_on_every_input(secret: str, timestamp: str, body: bytes) -> None:
    assert signature(secret, timestamp, body) != signature(SECRET, TIMESTAMP, BODY)


def test_signature_separator_is_a_dot_not_concatenation() -> None:
    assert signature(SECRET, "a", b"b") == spec_signature(SECRET, "a", b"b")
    assert signature(SECRET, "a", b"b") != "sha256=" + hmac.new(SECRET.encode(), b"ab", hashlib.sha256).hexdigest()


# --- verify() ------------------------------------------------------------------------------


def test_verify_accepts_a_valid_signature() -> None:
    verify(SECRET, signed_headers(), BODY)


def test_verify_accepts_the_spec_computed_signature() -> None:
    verify(SECRET, {"X-PA-Timestamp": TIMESTAMP, "X-PA-Signature": spec_signature(SECRET, TIMESTAMP, BODY)}, BODY)


@pytest.mark.parametrize(
    ("ts_name", "sig_name"),
    [
        ("x-pa-timestamp", "x-pa-signature"),
        ("X-PA-TIMESTAMP", "X-PA-SIGNATURE"),
        ("X-Pa-Timestamp", "x-Pa-SiGnAtUrE"),
    ],
)
def test_verify_header_names_any_case(ts_name: str, sig_name: str) -> None:
    headers = {ts_name: TIMESTAMP, sig_name: signature(SECRET, TIMESTAMP, BODY), "Content-Type": "application/json"}
    verify(SECRET, headers, BODY)


def _assert_clean(error: SignatureError, check: str) -> None:
    message = str(error)
    assert check in message
    assert SECRET not in message
    expected = signature(SECRET, TIMESTAMP, BODY)
    assert expected not in message
    assert expected.removeprefix("sha256=") not in message


def test_verify_rejects_tampered_body() -> None:
    tampered = BODY.replace(b"deal.completed", b"deal.cancelled")
    with pytest.raises(SignatureError) as error:
        verify(SECRET, signed_headers(), tampered)
    _assert_clean(error.value, "does not match")


def test_verify_rejects_one_byte_appended() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, signed_headers(), BODY + b"\n")


def test_verify_rejects_tampered_timestamp() -> None:
    headers = signed_headers()
    headers["X-PA-Timestamp"] = "2025-03-14T15:09:27.535Z"
    with pytest.raises(SignatureError) as error:
        verify(SECRET, headers, BODY)
    _assert_clean(error.value, "does not match")


def test_verify_rejects_wrong_secret() -> None:
    with pytest.raises(SignatureError) as error:
        verify(SECRET, signed_headers(secret="whsec_attacker"), BODY)
    _assert_clean(error.value, "does not match")


def test_verify_rejects_uppercased_hex() -> None:
    headers = signed_headers()
    headers["X-PA-Signature"] = "sha256=" + headers["X-PA-Signature"].removeprefix("sha256=").upper()
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, headers, BODY)


@pytest.mark.parametrize("missing", ["X-PA-Timestamp", "X-PA-Signature"])
def test_verify_rejects_missing_header(missing: str) -> None:
    headers = signed_headers()
    del headers[missing]
    with pytest.raises(SignatureError) as error:
        verify(SECRET, headers, BODY)
    _assert_clean(error.value, f"missing {missing} header")


@pytest.mark.parametrize("missing", ["X-PA-Timestamp", "X-PA-Signature"])
def test_verify_rejects_empty_header(missing: str) -> None:
    headers = signed_headers()
    headers[missing] = ""
    with pytest.raises(SignatureError, match=f"missing {missing}"):
        verify(SECRET, headers, BODY)


def test_verify_rejects_missing_prefix() -> None:
    headers = signed_headers()
    headers["X-PA-Signature"] = headers["X-PA-Signature"].removeprefix("sha256=")
    with pytest.raises(SignatureError) as error:
        verify(SECRET, headers, BODY)
    _assert_clean(error.value, "must start with sha256=")


def test_verify_rejects_other_algorithm_prefix() -> None:
    headers = signed_headers()
    headers["X-PA-Signature"] = "sha1=" + headers["X-PA-Signature"].removeprefix("sha256=")
    with pytest.raises(SignatureError, match="must start with sha256="):
        verify(SECRET, headers, BODY)


def test_signature_error_is_a_value_error() -> None:
    assert issubclass(SignatureError, ValueError)


def test_verify_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, object]] = []
    original = hmac.compare_digest

    def recording(a: object, b: object) -> bool:
        calls.append((a, b))
        return original(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(signing.hmac, "compare_digest", recording)
    headers = signed_headers()
    verify(SECRET, headers, BODY)
    assert len(calls) == 1
    received, expected = calls[0]
    assert received == headers["X-PA-Signature"].encode()
    assert expected == signature(SECRET, TIMESTAMP, BODY).encode()

    calls.clear()
    with pytest.raises(SignatureError):
        verify(SECRET, headers, BODY + b"x")
    assert len(calls) == 1, "a mismatch must also go through compare_digest"


def test_verify_result_follows_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    # If the comparison is not the one deciding, forcing it to False would not reject a valid signature.
    monkeypatch.setattr(signing.hmac, "compare_digest", lambda a, b: False)
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, signed_headers(), BODY)


# --- webhook_headers() ---------------------------------------------------------------------


def make_message(**overrides: object) -> DeliveryMessage:
    fields: dict[str, object] = {
        "partner_id": "acme",
        "event": "deal.completed",
        "event_id": "e" * 64,
        "event_key": "token|acme|deal.completed|0",
        "payload": {"eventId": "e" * 64, "eventKey": "token|acme|deal.completed|0", "dealId": "d1", "name": "Zoë"},
        "emitted_at": "2025-03-14T15:09:26.535Z",
    }
    fields.update(overrides)
    return DeliveryMessage(**fields)  # type: ignore[arg-type]


def test_webhook_headers_exact_set() -> None:
    message = make_message()
    body = message.raw_body()
    headers = webhook_headers(message, SECRET, body)
    assert set(headers) == {
        "Content-Type",
        "X-PA-Event",
        "X-PA-Timestamp",
        "X-PA-Signature",
        "X-PA-Partner",
        "X-PA-Event-Id",
        "User-Agent",
    }
    assert headers["Content-Type"] == "application/json"
    assert headers["X-PA-Event"] == "deal.completed"
    assert headers["X-PA-Timestamp"] == message.emitted_at
    assert headers["X-PA-Partner"] == "acme"
    assert headers["X-PA-Event-Id"] == "e" * 64
    assert headers["User-Agent"] == "PrivateAuto-Webhooks/1.0"
    assert headers["X-PA-Signature"] == spec_signature(SECRET, message.emitted_at, body)


def test_webhook_headers_signature_verifies_against_raw_body() -> None:
    message = make_message()
    headers = webhook_headers(message, SECRET, message.raw_body())
    verify(SECRET, headers, message.raw_body())
    # The signed bytes are the payload as sent, not the queue envelope.
    with pytest.raises(SignatureError):
        verify(SECRET, headers, message.to_body().encode())


def test_webhook_headers_event_id_matches_payload_event_id() -> None:
    message = make_message()
    headers = webhook_headers(message, SECRET, message.raw_body())
    assert json.loads(message.raw_body())["eventId"] == headers["X-PA-Event-Id"]


def test_webhook_headers_timestamp_is_stable_across_retries() -> None:
    first = make_message()
    retry = first.after_attempt("2025-03-14T15:10:30Z", "HTTP 500").after_attempt("2025-03-14T15:16:00Z", "timeout")
    h1 = webhook_headers(first, SECRET, first.raw_body())
    h2 = webhook_headers(retry, SECRET, retry.raw_body())
    assert h1 == h2


def test_webhook_headers_values_are_strings() -> None:
    headers = webhook_headers(make_message(), SECRET, make_message().raw_body())
    assert all(isinstance(v, str) for v in headers.values())
    assert SECRET not in "".join(headers.values())
