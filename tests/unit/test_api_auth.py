"""Partner read API authentication: the JWT attack matrix, the spec's signing snippet, and shared secrets.

Every matrix row builds an ``Authorization`` value and expects either acceptance or an `AuthError` with a
status and a keyword of its message; every refusal is also checked never to echo the token, a part of
it, or the secret (decoded or stored).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import boto3
import jwt
import pytest
from aws_lambda_powertools.utilities import parameters
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from distiller.adapters.secrets import SecretsManagerSharedSecrets, SecretUnavailable
from distiller.api import auth as auth_module
from distiller.api.auth import (
    ALLOWED_ALGORITHMS,
    DEFAULT_AUTH_SETTINGS,
    MAX_TOKEN_LENGTH,
    AuthError,
    AuthSettings,
    SharedSecrets,
    StaticSharedSecrets,
    authenticate,
    decode_shared_secret,
)
from distiller.settings import ApiSettings

REGION = "us-east-2"
PARTNER = "partner-acme"
OTHER = "partner-globex"
NOW = 1_750_000_000
SECRET = "acme-shared-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP"  # ≥ 64 bytes (HS512)
STORED = base64.b64encode(SECRET.encode()).decode()  # what partners receive and what is stored
WRONG_SECRET = "not-the-acme-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKL"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PUBLIC_PEM = _RSA.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)
_EC = ec.generate_private_key(ec.SECP256R1())
_ED = ed25519.Ed25519PrivateKey.generate()


# -- token construction ------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    """A good payload at NOW; an override of None removes the claim."""
    base: dict[str, Any] = {"p": PARTNER, "iat": NOW, "exp": NOW + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict[str, Any] | None = None, alg: str = "HS256", key: str | bytes = SECRET, **headers: Any) -> str:
    return jwt.encode(claims() if payload is None else payload, key, algorithm=alg, headers=headers or None)


def manual_hmac(header: dict[str, Any], payload: dict[str, Any], key: bytes, digest: Any = hashlib.sha256) -> str:
    """Sign by hand (PyJWT refuses some of these keys, e.g. a PEM as an HMAC secret)."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    return f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), digest).digest())}"


def unsigned(header: dict[str, Any], payload: dict[str, Any] | None = None) -> str:
    return f"{segment(header)}.{segment(claims() if payload is None else payload)}."


def tampered_payload() -> str:
    """Signed for another partner, then the payload swapped to name this one."""
    header, _, signature = hs(claims(p=OTHER)).split(".")
    return f"{header}.{segment(claims())}.{signature}"


def tampered_header() -> str:
    """Signed HS256, then the header claims HS512."""
    _, payload, signature = hs().split(".")
    return f"{segment({'alg': 'HS512', 'typ': 'JWT'})}.{payload}.{signature}"


def stripped_signature() -> str:
    header, payload, _ = hs().split(".")
    return f"{header}.{payload}."


def bearer(token: str) -> str:
    return f"Bearer {token}"


@dataclass(frozen=True)
class Row:
    id: str
    authorization: Callable[[], str | None]
    status: int | None = None  # None: accepted
    keyword: str = ""
    secret: str | None = STORED
    auth: AuthSettings = DEFAULT_AUTH_SETTINGS


def ok(id: str, make: Callable[[], str | None], **kw: Any) -> Row:
    return Row(id, make, **kw)


def no(id: str, make: Callable[[], str | None], status: int, keyword: str, **kw: Any) -> Row:
    return Row(id, make, status, keyword, **kw)


MATRIX: list[Row] = [
    # accepted
    ok("HS256", lambda: bearer(hs(alg="HS256"))),
    ok("HS384", lambda: bearer(hs(alg="HS384"))),
    ok("HS512", lambda: bearer(hs(alg="HS512"))),
    ok("no iat, exp 5 min ahead (Node/CLI expiresIn)", lambda: bearer(hs(claims(iat=None)))),
    ok("scheme is case-insensitive", lambda: f"bearer {hs()}"),
    ok("surrounding whitespace", lambda: f"  Bearer   {hs()}  "),
    ok("expired 10 s ago, within 30 s leeway", lambda: bearer(hs(claims(iat=NOW - 310, exp=NOW - 10)))),
    ok("iat 10 s ahead, within leeway", lambda: bearer(hs(claims(iat=NOW + 10, exp=NOW + 310)))),
    ok("nbf 10 s ahead, within leeway", lambda: bearer(hs(claims(nbf=NOW + 10)))),
    ok("lifetime exactly the maximum", lambda: bearer(hs(claims(iat=NOW, exp=NOW + 900)))),
    ok("no iat, exp − now = maximum + leeway", lambda: bearer(hs(claims(iat=None, exp=NOW + 930)))),
    ok("float exp and iat", lambda: bearer(hs(claims(iat=NOW + 0.5, exp=NOW + 300.5)))),
    ok(
        "aud, kid, jku and extra claims are ignored",
        lambda: bearer(hs(claims(aud="x", x=1), kid="k", jku="http://evil")),
    ),
    ok("custom maximum lifetime", lambda: bearer(hs(claims(exp=NOW + 3600))), auth=AuthSettings(3600, 30)),
    # alg none and friends
    no("alg none", lambda: bearer(unsigned({"alg": "none", "typ": "JWT"})), 401, "algorithm"),
    no("alg None", lambda: bearer(unsigned({"alg": "None"})), 401, "algorithm"),
    no("alg NONE", lambda: bearer(unsigned({"alg": "NONE"})), 401, "algorithm"),
    no("alg empty", lambda: bearer(unsigned({"alg": ""})), 401, "algorithm"),
    no("alg missing", lambda: bearer(unsigned({"typ": "JWT"})), 401, "algorithm"),
    no(
        "alg lowercase hs256",
        lambda: bearer(manual_hmac({"alg": "hs256"}, claims(), SECRET.encode())),
        401,
        "algorithm",
    ),
    no(
        "alg not a string", lambda: bearer(manual_hmac({"alg": ["HS256"]}, claims(), SECRET.encode())), 401, "algorithm"
    ),
    no(
        "alg none with a valid HS256 signature attached",
        lambda: bearer(
            f"{segment({'alg': 'none'})}.{segment(claims())}.{hs().split('.')[2]}",
        ),
        401,
        "algorithm",
    ),
    # asymmetric algorithms and HS/RS confusion
    no(
        "RS256 signed with the private key",
        lambda: bearer(jwt.encode(claims(), _RSA, algorithm="RS256")),
        401,
        "algorithm",
    ),
    no(
        "HS256 signed with the RSA public key PEM as HMAC secret",
        lambda: bearer(manual_hmac({"alg": "HS256", "typ": "JWT"}, claims(), RSA_PUBLIC_PEM)),
        401,
        "invalid signature",
    ),
    no(
        "RS256 header, HMAC-signed with the public key PEM",
        lambda: bearer(manual_hmac({"alg": "RS256", "typ": "JWT"}, claims(), RSA_PUBLIC_PEM)),
        401,
        "algorithm",
    ),
    no("ES256", lambda: bearer(jwt.encode(claims(), _EC, algorithm="ES256")), 401, "algorithm"),
    no("PS256", lambda: bearer(jwt.encode(claims(), _RSA, algorithm="PS256")), 401, "algorithm"),
    no("EdDSA", lambda: bearer(jwt.encode(claims(), _ED, algorithm="EdDSA")), 401, "algorithm"),
    # signature
    no("tampered payload (p changed after signing)", lambda: bearer(tampered_payload()), 401, "invalid signature"),
    no("tampered header (HS256 → HS512)", lambda: bearer(tampered_header()), 401, "invalid signature"),
    no("signature stripped", lambda: bearer(stripped_signature()), 401, "invalid signature"),
    no("wrong secret", lambda: bearer(hs(key=WRONG_SECRET)), 401, "invalid signature"),
    no("signed with the raw base64 text (not decoded)", lambda: bearer(hs(key=STORED)), 401, "invalid signature"),
    no("unknown partner (no secret)", lambda: bearer(hs()), 401, "invalid signature", secret=None),
    # exp
    no("expired", lambda: bearer(hs(claims(iat=NOW - 331, exp=NOW - 31))), 401, "token expired"),
    no("expired exactly at the leeway", lambda: bearer(hs(claims(iat=NOW - 330, exp=NOW - 30))), 401, "expired"),
    no(
        "expired beyond zero leeway",
        lambda: bearer(hs(claims(iat=NOW - 301, exp=NOW - 1))),
        401,
        "expired",
        auth=AuthSettings(900, 0),
    ),
    no("no exp", lambda: bearer(hs(claims(exp=None))), 401, "exp claim required"),
    no(
        "exp null",
        lambda: bearer(manual_hmac({"alg": "HS256"}, {"p": PARTNER, "exp": None}, SECRET.encode())),
        401,
        "exp claim required",
    ),
    no("exp a string", lambda: bearer(hs(claims(exp=str(NOW + 300)))), 401, "exp claim must be a number"),
    no("exp true", lambda: bearer(hs(claims(exp=True))), 401, "exp claim must be a number"),
    no("exp NaN", lambda: bearer(hs(claims(exp=float("nan")))), 401, "exp claim must be a number"),
    no("exp Infinity", lambda: bearer(hs(claims(exp=float("inf")))), 401, "exp claim must be a number"),
    no("exp a huge integer", lambda: bearer(hs(claims(exp=10**400))), 401, "exp claim must be a number"),
    # lifetime
    no(
        "lifetime exp − iat too long",
        lambda: bearer(hs(claims(iat=NOW, exp=NOW + 901))),
        401,
        "lifetime exceeds 900 seconds",
    ),
    no("old iat, far exp", lambda: bearer(hs(claims(iat=NOW - 1000, exp=NOW + 100))), 401, "lifetime exceeds 900"),
    no("no iat, exp − now too long", lambda: bearer(hs(claims(iat=None, exp=NOW + 931))), 401, "lifetime exceeds 900"),
    no("no iat, exp years ahead", lambda: bearer(hs(claims(iat=None, exp=NOW + 10**8))), 401, "lifetime"),
    no(
        "custom maximum lifetime",
        lambda: bearer(hs(claims(exp=NOW + 120))),
        401,
        "exceeds 60 seconds",
        auth=AuthSettings(60, 30),
    ),
    # iat / nbf
    no("iat in the future", lambda: bearer(hs(claims(iat=NOW + 31, exp=NOW + 331))), 401, "iat is in the future"),
    no("iat not a number", lambda: bearer(hs(claims(iat="yesterday"))), 401, "iat claim must be a number"),
    no("nbf in the future", lambda: bearer(hs(claims(nbf=NOW + 31))), 401, "nbf is in the future"),
    no("nbf not a number", lambda: bearer(hs(claims(nbf=[1]))), 401, "nbf claim must be a number"),
    # p
    no("no p", lambda: bearer(hs(claims(p=None))), 401, "p claim required"),
    no("p a number", lambda: bearer(hs(claims(p=123))), 401, "p claim must be a string"),
    no("p is another partner", lambda: bearer(hs(claims(p=OTHER))), 403, "another partner"),
    no("p differs in case", lambda: bearer(hs(claims(p=PARTNER.upper()))), 403, "another partner"),
    no("p empty", lambda: bearer(hs(claims(p=""))), 403, "another partner"),
    # malformed Authorization values
    no("no header", lambda: None, 401, "missing bearer token"),
    no("empty header", lambda: "", 401, "missing bearer token"),
    no("Basic credentials", lambda: "Basic dXNlcjpwYXNz", 401, "missing bearer token"),
    no("Basic x", lambda: "Basic x", 401, "missing bearer token"),
    no("Bearer alone", lambda: "Bearer", 401, "missing bearer token"),
    no("Bearer and a space", lambda: "Bearer ", 401, "missing bearer token"),
    no("token without scheme", lambda: hs(), 401, "missing bearer token"),
    no("other scheme", lambda: f"Token {hs()}", 401, "missing bearer token"),
    no("extra words", lambda: f"Bearer {hs()} extra", 401, "missing bearer token"),
    no("garbage", lambda: "garbage \x00\xff ☃", 401, "missing bearer token"),
    no("Bearer a.b", lambda: "Bearer a.b", 401, "malformed token"),
    no("Bearer a.b.c.d", lambda: "Bearer a.b.c.d", 401, "malformed token"),
    no("JWE-shaped (5 segments)", lambda: "Bearer aaaa.bbbb.cccc.dddd.eeee", 401, "malformed token"),
    no("non-base64url characters", lambda: "Bearer !!!.???.###", 401, "malformed token"),
    no("header not JSON", lambda: f"Bearer {b64url(b'not json')}.{segment(claims())}.", 401, "malformed token"),
    no("header a JSON array", lambda: f"Bearer {segment(['HS256'])}.{segment(claims())}.", 401, "malformed token"),
    no(
        "kid not a string",
        lambda: bearer(manual_hmac({"alg": "HS256", "kid": 7}, claims(), SECRET.encode())),
        401,
        "malformed",
    ),
    no(
        "payload not a JSON object",
        lambda: bearer(manual_hmac({"alg": "HS256"}, ["p", PARTNER], SECRET.encode())),  # type: ignore[arg-type]
        401,
        "malformed token",
    ),
    no("oversized token", lambda: bearer(hs(claims(pad="x" * MAX_TOKEN_LENGTH))), 401, "malformed token"),
]


def _run(row: Row, authorization: str | None) -> dict[str, Any]:
    return authenticate(authorization, PARTNER, row.secret, row.auth, now=NOW)


@pytest.mark.parametrize("row", MATRIX, ids=[row.id for row in MATRIX])
def test_attack_matrix(row: Row) -> None:
    authorization = row.authorization()
    if row.status is None:
        result = _run(row, authorization)
        assert result["p"] == PARTNER
        return
    with pytest.raises(AuthError) as caught:
        _run(row, authorization)
    error = caught.value
    assert (error.status, row.keyword.lower() in error.message.lower()) == (row.status, True), error.message
    assert str(error) == error.message
    _assert_leaks_nothing(error.message, authorization)


def _assert_leaks_nothing(message: str, authorization: str | None) -> None:
    forbidden = {SECRET, STORED, WRONG_SECRET, RSA_PUBLIC_PEM.decode()}
    if authorization:
        forbidden.add(authorization.strip())
        for word in authorization.split():
            forbidden.add(word)
            forbidden.update(part for part in word.split(".") if len(part) >= 6)
    leaked = [f for f in forbidden if f and f in message]
    assert not leaked, f"{message!r} echoes {leaked!r}"


def test_matrix_covers_every_allowed_algorithm_and_both_statuses() -> None:
    accepted = {row.id for row in MATRIX if row.status is None}
    assert set(ALLOWED_ALGORITHMS) <= accepted
    assert {row.status for row in MATRIX} == {None, 401, 403}


def test_unknown_partner_is_indistinguishable_from_a_wrong_secret() -> None:
    token = bearer(hs(claims(iat=NOW - 5000, exp=NOW - 4000)))  # also expired: signature is checked first
    with pytest.raises(AuthError) as unknown:
        authenticate(token, PARTNER, None, now=NOW)
    with pytest.raises(AuthError) as wrong:
        authenticate(token, PARTNER, base64.b64encode(WRONG_SECRET.encode()).decode(), now=NOW)
    assert (unknown.value.status, unknown.value.message) == (wrong.value.status, wrong.value.message)
    assert (unknown.value.status, unknown.value.message) == (401, "invalid signature")


def test_returns_the_verified_claims() -> None:
    payload = claims(extra={"k": [1, 2]})
    assert authenticate(bearer(hs(payload, alg="HS384")), PARTNER, STORED, now=NOW) == payload


def test_real_clock_with_the_spec_python_snippet() -> None:
    secret = base64.b64decode(STORED).decode("utf-8")
    now = int(time.time())
    token = jwt.encode({"p": PARTNER, "iat": now, "exp": now + 300}, secret, algorithm="HS256")
    assert authenticate(f"Bearer {token}", PARTNER, STORED)["p"] == PARTNER
    stale = jwt.encode({"p": PARTNER, "iat": now - 400, "exp": now - 100}, secret, algorithm="HS256")
    with pytest.raises(AuthError, match="token expired"):
        authenticate(f"Bearer {stale}", PARTNER, STORED)


def test_path_partner_is_compared_exactly() -> None:
    with pytest.raises(AuthError) as caught:
        authenticate(bearer(hs()), OTHER, STORED, now=NOW)
    assert caught.value.status == 403


def test_checks_run_in_order_signature_before_claims() -> None:
    # Wrong secret AND missing p AND expired AND another partner: the signature is reported.
    token = bearer(hs(claims(p=None, iat=NOW - 5000, exp=NOW - 4000), key=WRONG_SECRET))
    with pytest.raises(AuthError, match="invalid signature"):
        authenticate(token, PARTNER, STORED, now=NOW)
    # Algorithm before signature.
    with pytest.raises(AuthError, match="algorithm"):
        authenticate(bearer(unsigned({"alg": "none"})), PARTNER, None, now=NOW)
    # Every 401 check before the 403.
    with pytest.raises(AuthError, match="expired") as caught:
        authenticate(bearer(hs(claims(p=OTHER, iat=NOW - 5000, exp=NOW - 4000))), PARTNER, STORED, now=NOW)
    assert caught.value.status == 401


# -- the stored secret -------------------------------------------------------------------------


def test_decode_shared_secret() -> None:
    assert decode_shared_secret(STORED) == SECRET
    assert decode_shared_secret(f"  {STORED}\n") == SECRET
    assert decode_shared_secret(base64.b64encode("clé ☃".encode()).decode()) == "clé ☃"


@pytest.mark.parametrize(
    ("stored", "keyword"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not base64!", "base64"),
        ("abc", "base64"),  # bad padding
        ("YWJj\nZGVm", "base64"),  # inner whitespace is not accepted
        ("c2VjcmV0_-", "base64"),  # url-safe alphabet is not the delivered form
        (base64.b64encode(b"\xff\xfe\xfd").decode(), "UTF-8"),
        ("", "empty"),
    ],
)
def test_decode_shared_secret_refuses_with_a_clear_message(stored: str, keyword: str) -> None:
    with pytest.raises(ValueError, match=keyword) as caught:
        decode_shared_secret(stored)
    if stored.strip():
        assert stored.strip() not in str(caught.value)


def test_an_unusable_stored_secret_is_a_server_error_not_an_auth_error() -> None:
    with pytest.raises(ValueError, match="base64") as caught:
        authenticate(bearer(hs()), PARTNER, "definitely not base64!", now=NOW)
    assert not isinstance(caught.value, AuthError)
    assert "definitely" not in str(caught.value)


def test_header_and_shape_are_checked_before_the_stored_secret_is_decoded() -> None:
    with pytest.raises(AuthError, match="missing bearer token"):
        authenticate(None, PARTNER, "not base64!", now=NOW)
    with pytest.raises(AuthError, match="algorithm"):
        authenticate(bearer(unsigned({"alg": "none"})), PARTNER, "not base64!", now=NOW)


# At least 8 characters: a shorter secret can be a substring of the fixed messages ("part" is in
# "another partner"), which would make the "never echoes the secret" check meaningless.
#: auth's fixed messages: a secret that is a substring of one ("invalid ") could not be told from an echo.
FIXED_MESSAGES = [value for name, value in vars(auth_module).items() if name.isupper() and isinstance(value, str)]
SECRETS = st.text(min_size=8, max_size=80).filter(lambda secret: not any(secret in m for m in FIXED_MESSAGES))
PARTNER_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=24)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(secret=SECRETS, partner_id=PARTNER_IDS, alg=st.sampled_from(ALLOWED_ALGORITHMS))
def test_spec_python_snippet_is_accepted_for_any_secret(secret: str, partner_id: str, alg: str) -> None:
    stored = base64.b64encode(secret.encode()).decode()  # as delivered and stored
    now = NOW
    signing_key = base64.b64decode(stored).decode("utf-8")  # the spec's snippet, verbatim
    token = jwt.encode({"p": partner_id, "iat": now, "exp": now + 300}, signing_key, algorithm=alg)
    assert authenticate(f"Bearer {token}", partner_id, stored, now=NOW)["p"] == partner_id

    raw = jwt.encode({"p": partner_id, "iat": now, "exp": now + 300}, stored, algorithm=alg)
    with pytest.raises(AuthError) as caught:
        authenticate(f"Bearer {raw}", partner_id, stored, now=NOW)
    assert (caught.value.status, caught.value.message) == (401, "invalid signature")

    with pytest.raises(AuthError) as other:
        authenticate(f"Bearer {token}", partner_id + "x", stored, now=NOW)
    assert other.value.status == 403
    for error in (caught.value, other.value):
        for text in (token, raw, stored, secret, *token.split("."), *raw.split(".")):
            if len(text) >= 4:
                assert text not in error.message


# -- settings and errors -----------------------------------------------------------------------


def test_auth_settings() -> None:
    assert (AuthSettings().max_lifetime_seconds, AuthSettings().leeway_seconds) == (900, 30)
    with pytest.raises(FrozenInstanceError):
        AuthSettings().leeway_seconds = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_lifetime_seconds"):
        AuthSettings(max_lifetime_seconds=0)
    with pytest.raises(ValueError, match="leeway_seconds"):
        AuthSettings(leeway_seconds=-1)
    # Read from the variables the template sets (JWT_*), in the one settings module.
    base = {"DELIVERY_QUEUE_URL": "https://sqs.example/q", "DOCUMENTS_BUCKET": "docs"}
    assert ApiSettings.from_env(base).auth == AuthSettings()
    configured = {**base, "JWT_MAX_LIFETIME_SECONDS": "300", "JWT_LEEWAY_SECONDS": "5"}
    assert ApiSettings.from_env(configured).auth == AuthSettings(300, 5)


def test_auth_error() -> None:
    error = AuthError(403, "token is for another partner")
    assert (error.status, error.message, str(error)) == (403, "token is for another partner", error.message)
    assert isinstance(error, Exception)


# -- shared secret sources ---------------------------------------------------------------------


def test_static_shared_secrets() -> None:
    source: SharedSecrets = StaticSharedSecrets({PARTNER: STORED})
    assert source.shared_secret(PARTNER) == STORED
    assert source.shared_secret(OTHER) is None
    assert STORED not in repr(source)
    assert PARTNER in repr(source)


def test_static_shared_secrets_from_partner_records() -> None:
    records = [
        {"partnerId": PARTNER, "sharedSecret": STORED, "webhook": {"url": "https://x"}},
        {"partnerId": OTHER},  # no shared secret: unknown to the API
        {"partnerId": "bad", "sharedSecret": 5},
        "not a record",
    ]
    source = StaticSharedSecrets.from_partner_records(records)
    assert source.shared_secret(PARTNER) == STORED
    assert source.shared_secret(OTHER) is None
    assert source.shared_secret("bad") is None
    token = bearer(hs())
    assert authenticate(token, PARTNER, source.shared_secret(PARTNER), now=NOW)["p"] == PARTNER
    with pytest.raises(AuthError, match="invalid signature"):
        authenticate(token, OTHER, source.shared_secret(OTHER), now=NOW)


@pytest.fixture
def secretsmanager(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        parameters.clear_caches()  # the powertools provider (and its boto3 client) is per test
        try:
            yield boto3.client("secretsmanager", region_name=REGION)
        finally:
            parameters.clear_caches()


def test_secrets_manager_present_and_absent(secretsmanager: Any) -> None:
    source: SharedSecrets = SecretsManagerSharedSecrets()
    assert isinstance(source, SecretsManagerSharedSecrets)
    assert source.name_for(PARTNER) == "trigger-distiller/partners/partner-acme/shared-secret"
    secretsmanager.create_secret(Name=source.name_for(PARTNER), SecretString=STORED)
    assert source.shared_secret(PARTNER) == STORED
    assert source.shared_secret(OTHER) is None
    token = jwt.encode({"p": PARTNER, "iat": NOW, "exp": NOW + 300}, SECRET, algorithm="HS256")
    assert authenticate(f"Bearer {token}", PARTNER, source.shared_secret(PARTNER), now=NOW)["p"] == PARTNER


def test_secrets_manager_custom_prefix_and_cache(secretsmanager: Any) -> None:
    source = SecretsManagerSharedSecrets(prefix="td/", max_age_seconds=300)
    name = source.name_for(PARTNER)
    assert name == "td/partner-acme/shared-secret"
    secretsmanager.create_secret(Name=name, SecretString=STORED)
    assert source.shared_secret(PARTNER) == STORED
    secretsmanager.put_secret_value(SecretId=name, SecretString="cm90YXRlZA==")
    assert source.shared_secret(PARTNER) == STORED  # cached for max_age
    parameters.clear_caches()  # what max_age expiry does on its own
    assert source.shared_secret(PARTNER) == "cm90YXRlZA=="


@pytest.mark.parametrize("partner_id", ["", "a/b", "../webhook-secret", "x" * 300, "sp ace", "*"])
def test_secrets_manager_partner_ids_that_cannot_name_a_secret_are_unknown(
    secretsmanager: Any, partner_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise AssertionError("Secrets Manager must not be called")

    monkeypatch.setattr(parameters, "get_secret", boom)
    assert SecretsManagerSharedSecrets().shared_secret(partner_id) is None


def test_secrets_manager_other_errors_raise(secretsmanager: Any) -> None:
    source = SecretsManagerSharedSecrets()
    name = source.name_for(PARTNER)
    secretsmanager.create_secret(Name=name, SecretString=STORED)
    secretsmanager.delete_secret(SecretId=name)  # scheduled for deletion: InvalidRequestException, not "absent"
    with pytest.raises(SecretUnavailable, match="could not be read") as caught:
        source.shared_secret(PARTNER)
    assert STORED not in str(caught.value)


def test_secrets_manager_binary_or_empty_secret_raises(secretsmanager: Any) -> None:
    source = SecretsManagerSharedSecrets()
    secretsmanager.create_secret(Name=source.name_for(PARTNER), SecretBinary=b"\x00\x01")
    with pytest.raises(SecretUnavailable, match="empty or not text"):
        source.shared_secret(PARTNER)
    secretsmanager.create_secret(Name=source.name_for(OTHER), SecretString="  ")
    with pytest.raises(SecretUnavailable, match="empty or not text"):
        source.shared_secret(OTHER)
