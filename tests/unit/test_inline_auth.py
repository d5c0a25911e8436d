"""GET /sell inline authentication: the matrix of each format, the JWT rules shared with the Bearer
header, JavaScript's encoding and sort, and the replay key.

Matrix rows build a multi-value query (as API Gateway hands it over) and expect either a grant or an
`AuthError` with a status and a keyword of its message; every refusal is also checked never to echo a
query value (token, signature, field) or the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import pytest

from distiller.api.auth import DEFAULT_AUTH_SETTINGS, AuthError, AuthSettings, authenticate
from distiller.api.inline_auth import (
    SHORT_KEYS,
    SIGNED_QUERY_SKEW_SECONDS,
    InlineGrant,
    authenticate_inline,
    canonical_query,
    encode_uri_component,
    sign_query,
)
from tests.unit.test_api_auth import (
    NOW,
    OTHER,
    PARTNER,
    SECRET,
    STORED,
    WRONG_SECRET,
    claims,
    hs,
    manual_hmac,
    tampered_payload,
    unsigned,
)

WRONG_STORED = base64.b64encode(WRONG_SECRET.encode()).decode()
Query = dict[str, list[str]]

#: Format 3 fields as a partner would sign them (short keys), including values that need encoding.
FIELDS = {
    "v": "1HGBH41JXMN109186",
    "y": "2021",
    "m": "Honda",
    "o": "Civic",
    "a": "18500",
    "be": "buyer+tag@example.com",
    "bn": "Zoë O'Brien",
    "r": "https://yoursite.com/thanks?deal=1&x=a b",
}


def hand_hmac(canonical: str, key: str = SECRET) -> str:
    return hmac.new(key.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def signed(fields: Mapping[str, str] = FIELDS, ts: int = NOW, key: str = SECRET, **extra: str) -> dict[str, str]:
    """Format 3 params signed at ``ts`` with ``key``; ``extra`` is added after signing (unsigned)."""
    params = {**fields, "ts": str(ts)}
    return {**params, "sig": hand_hmac(canonical_query(params), key), **extra}


def multi(params: Mapping[str, str]) -> Query:
    return {name: [value] for name, value in params.items()}


def with_value(params: Mapping[str, str], **changes: str) -> dict[str, str]:
    return {**params, **changes}


def without(params: Mapping[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in params.items() if k not in names}


@dataclass(frozen=True)
class Row:
    id: str
    query: Callable[[], Query | None]
    status: int | None = None  # None: accepted
    keyword: str = ""
    secret: str | None = STORED


def ok(id: str, make: Callable[[], Query | None], **kw: Any) -> Row:
    return Row(id, make, **kw)


def no(id: str, make: Callable[[], Query | None], status: int, keyword: str, **kw: Any) -> Row:
    return Row(id, make, status, keyword, **kw)


def fmt3(params: Callable[[], Mapping[str, str]]) -> Callable[[], Query]:
    return lambda: multi(params())


FORMAT_3: list[Row] = [
    ok("valid", fmt3(signed)),
    ok("sig in upper case", fmt3(lambda: with_value(signed(), sig=signed()["sig"].upper()))),
    ok("ts exactly 300 s old", fmt3(lambda: signed(ts=NOW - SIGNED_QUERY_SKEW_SECONDS))),
    ok("ts exactly 300 s ahead", fmt3(lambda: signed(ts=NOW + SIGNED_QUERY_SKEW_SECONDS))),
    ok("only ts and sig (fields are the route's business)", fmt3(lambda: signed({}))),
    ok("every short key", fmt3(lambda: signed({k: f"value-{k}" for k in SHORT_KEYS}))),
    # secret
    no("wrong secret", fmt3(lambda: signed(key=WRONG_SECRET)), 401, "invalid signature"),
    no("signed with the raw base64 text", fmt3(lambda: signed(key=STORED)), 401, "invalid signature"),
    no("unknown partner", fmt3(signed), 401, "invalid signature", secret=None),
    # ts
    no("ts 301 s old", fmt3(lambda: signed(ts=NOW - 301)), 401, "expired"),
    no("ts 301 s ahead", fmt3(lambda: signed(ts=NOW + 301)), 401, "in the future"),
    no("ts an hour old, unknown partner", fmt3(lambda: signed(ts=NOW - 3600)), 401, "expired", secret=None),
    no("ts in milliseconds", fmt3(lambda: signed(ts=NOW * 1000)), 401, "integer epoch seconds"),
    *(
        no(f"ts {bad!r}", fmt3(lambda bad=bad: signed(ts=bad)), 401, "integer epoch seconds")  # type: ignore[misc]
        for bad in ("1750000000.5", "abc", "", "-1750000000", " 1750000000", "1_750_000_000", "1e9", "١٧٥٠٠٠٠٠٠٠")
    ),
    # sig
    *(
        no(f"sig {label}", fmt3(lambda bad=bad: with_value(signed(), sig=bad)), 401, "64 hex characters")
        for label, bad in (
            ("not hex", "z" * 64),
            ("63 chars", "a" * 63),
            ("65 chars", "a" * 65),
            ("empty", ""),
            ("sha1 length", "a" * 40),
            ("base64", base64.b64encode(b"x" * 32).decode()),
            ("with 0x", "0x" + "a" * 62),
        )
    ),
    no("sig of other params", fmt3(lambda: with_value(signed(), sig=signed({"v": "x"})["sig"])), 401, "signature"),
    # tampering after signing
    no("value changed", fmt3(lambda: with_value(signed(), a="1")), 401, "invalid signature"),
    no("redirect changed", fmt3(lambda: with_value(signed(), r="https://evil.example/")), 401, "invalid signature"),
    no("ts moved", fmt3(lambda: with_value(signed(), ts=str(NOW + 1))), 401, "invalid signature"),
    no("param added", fmt3(lambda: signed(ro="seller")), 401, "invalid signature"),
    no("param removed", fmt3(lambda: without(signed(), "r")), 401, "invalid signature"),
    no("value moved to another key", fmt3(lambda: {**without(signed(), "m"), "t": "Honda"}), 401, "signature"),
    # missing credentials
    no("missing ts", fmt3(lambda: without(signed(), "ts")), 401, "ts parameter required"),
    no("missing sig", fmt3(lambda: without(signed(), "sig")), 401, "sig parameter required"),
    no("neither ts nor sig", fmt3(lambda: FIELDS), 401, "missing credentials"),
    no("empty query", lambda: {}, 401, "missing credentials"),
    no("no query at all", lambda: None, 401, "missing credentials"),
    # parameter names
    no("unknown parameter", fmt3(lambda: signed({**FIELDS, "utm": "x"})), 401, "unknown parameter: utm"),
    no("full name instead of short key", fmt3(lambda: signed({"vin": "1HG"})), 401, "short keys: v for vin"),
    no("p is not a field", fmt3(lambda: signed({"p": PARTNER})), 401, "unknown parameter: p"),
]

TOKEN_PARAMS = (pytest.param(1, "jwt", id="format1-jwt"), pytest.param(2, "v", id="format2-v"))


def jwt_row_query(param: str, token: Callable[[], str], **extra: str) -> Callable[[], Query]:
    return lambda: multi({param: token(), **extra})


def jwt_rows(param: str) -> list[Row]:
    """The JWT-specific rows of one token parameter (the shared Bearer rules are in `BEARER_RULES`)."""
    return [
        ok("full names", jwt_row_query(param, lambda: hs(claims(vin="1HG", year=2021, redirectUrl="https://x/")))),
        ok("short keys", jwt_row_query(param, lambda: hs(claims(v="1HG", y=2021, r="https://x/", ro="seller")))),
        ok("registered claims are not fields", jwt_row_query(param, lambda: hs(claims(jti="j", iss="i", aud="a")))),
        no(
            "unsigned field next to the token",
            jwt_row_query(param, hs, r="https://evil.example/"),
            401,
            "not covered by the JWT: r",
        ),
        no(
            "ts and sig next to the token",
            jwt_row_query(param, hs, ts=str(NOW), sig="a" * 64),
            401,
            "not covered by the JWT: sig, ts",
        ),
        no("short and full key", jwt_row_query(param, lambda: hs(claims(v="1", vin="1"))), 401, "both v and vin"),
        no(
            "full and short key",
            jwt_row_query(param, lambda: hs(claims(redirectUrl="https://a/", r="https://b/"))),
            401,
            "both r and redirectUrl",
        ),
        no(
            "unknown claim",
            jwt_row_query(param, lambda: hs(claims(colour="red"))),
            401,
            "unknown claim in token: colour",
        ),
        no("wrong secret", jwt_row_query(param, lambda: hs(key=WRONG_SECRET)), 401, "invalid signature"),
        no("unknown partner", jwt_row_query(param, hs), 401, "invalid signature", secret=None),
        no("repeated token", lambda: {param: [hs(), hs()]}, 401, f"more than once: {param}"),
    ]


FORMAT_1 = [*jwt_rows("jwt"), no("VIN next to an explicit JWT", lambda: multi({"jwt": hs(), "v": "1HG"}), 401, ": v")]
FORMAT_2 = [*jwt_rows("v"), no("v with a dot that is no JWT", lambda: multi({"v": "1HG.B41"}), 401, "malformed token")]

COMMON: list[Row] = [
    no("repeated field", lambda: {**multi(signed()), "v": ["1HG", "2HG"]}, 401, "more than once: v"),
    no("repeated sig", lambda: {**multi(signed()), "sig": [signed()["sig"]] * 2}, 401, "more than once: sig"),
    no("repeated ts, unknown partner", lambda: {**multi(signed()), "ts": ["1", "2"]}, 401, "once: ts", secret=None),
    no("lone surrogate in a value", lambda: multi(with_value(signed(), o="\ud800")), 401, "not valid text: o"),
]

MATRIX = [
    *(pytest.param(row, 3, id=f"format3: {row.id}") for row in FORMAT_3),
    *(pytest.param(row, 1, id=f"format1: {row.id}") for row in FORMAT_1),
    *(pytest.param(row, 2, id=f"format2: {row.id}") for row in FORMAT_2),
    *(pytest.param(row, None, id=f"any: {row.id}") for row in COMMON),
]


@pytest.mark.parametrize(("row", "format"), MATRIX)
def test_matrix(row: Row, format: int | None) -> None:
    query = row.query()
    if row.status is None:
        grant = authenticate_inline(query, PARTNER, row.secret, now=NOW)
        assert grant.format == format
        return
    with pytest.raises(AuthError) as caught:
        authenticate_inline(query, PARTNER, row.secret, now=NOW)
    error = caught.value
    assert (error.status, row.keyword.lower() in error.message.lower()) == (row.status, True), error.message
    assert_leaks_nothing(error.message, query)


def assert_leaks_nothing(message: str, query: Query | None) -> None:
    forbidden = {SECRET, STORED, WRONG_SECRET, WRONG_STORED}
    for values in (query or {}).values():
        for value in values:
            forbidden.add(value)
            forbidden.update(part for part in value.split(".") if len(part) >= 6)  # JWT segments
    leaked = [text for text in forbidden if len(text) >= 4 and text in message]
    assert not leaked, f"{message!r} echoes {leaked!r}"


def test_unknown_partner_is_indistinguishable_from_a_wrong_secret() -> None:
    query = multi(signed())
    with pytest.raises(AuthError) as unknown:
        authenticate_inline(query, PARTNER, None, now=NOW)
    with pytest.raises(AuthError) as wrong:
        authenticate_inline(query, PARTNER, WRONG_STORED, now=NOW)
    assert (unknown.value.status, unknown.value.message) == (wrong.value.status, wrong.value.message)
    assert (unknown.value.status, unknown.value.message) == (401, "invalid signature")


# -- Formats 1 and 2 hold a JWT to exactly the Bearer rules --------------------------------------

BEARER_RULES = [
    pytest.param(lambda: unsigned({"alg": "none", "typ": "JWT"}), STORED, 401, "algorithm", id="alg none"),
    pytest.param(lambda: hs(key=WRONG_SECRET), STORED, 401, "invalid signature", id="HS256 with the wrong key"),
    pytest.param(lambda: hs(alg="HS512", key=WRONG_SECRET), STORED, 401, "invalid signature", id="HS512 wrong key"),
    pytest.param(tampered_payload, STORED, 401, "invalid signature", id="payload swapped after signing"),
    pytest.param(hs, None, 401, "invalid signature", id="unknown partner"),
    pytest.param(lambda: hs(claims(iat=NOW - 400, exp=NOW - 100)), STORED, 401, "expired", id="expired"),
    pytest.param(lambda: hs(claims(exp=None)), STORED, 401, "exp claim required", id="missing exp"),
    pytest.param(lambda: hs(claims(p=None)), STORED, 401, "p claim required", id="missing p"),
    pytest.param(lambda: hs(claims(p=7)), STORED, 401, "p claim must be a string", id="p a number"),
    pytest.param(lambda: hs(claims(p=OTHER)), STORED, 403, "another partner", id="other partner"),
    pytest.param(lambda: hs(claims(exp=NOW + 901)), STORED, 401, "lifetime exceeds 900", id="lifetime too long"),
    pytest.param(lambda: hs(claims(iat=NOW + 60, exp=NOW + 360)), STORED, 401, "iat is in the future", id="iat"),
    pytest.param(
        lambda: manual_hmac({"alg": "hs256"}, claims(), SECRET.encode()), STORED, 401, "algorithm", id="alg hs256"
    ),
    pytest.param(lambda: "a.b", STORED, 401, "malformed token", id="two segments"),
    pytest.param(lambda: hs(claims(pad="x" * 9000)), STORED, 401, "malformed token", id="oversized"),
]


@pytest.mark.parametrize(("format", "param"), TOKEN_PARAMS)
@pytest.mark.parametrize(("make_token", "secret", "status", "keyword"), BEARER_RULES)
def test_a_jwt_fails_every_bearer_rule_the_same_way_inline(
    format: int, param: str, make_token: Callable[[], str], secret: str | None, status: int, keyword: str
) -> None:
    token = make_token()
    with pytest.raises(AuthError) as as_bearer:
        authenticate(f"Bearer {token}", PARTNER, secret, now=NOW)
    with pytest.raises(AuthError) as inline:
        authenticate_inline({param: [token]}, PARTNER, secret, now=NOW)
    assert (inline.value.status, inline.value.message) == (as_bearer.value.status, as_bearer.value.message)
    assert (inline.value.status, keyword in inline.value.message) == (status, True), inline.value.message
    assert_leaks_nothing(inline.value.message, {param: [token]})


@pytest.mark.parametrize(("format", "param"), TOKEN_PARAMS)
def test_a_jwt_grant_carries_the_payload_fields_under_full_names(format: int, param: str) -> None:
    payload = claims(v="1HGBH41JXMN109186", y=2021, bl=True, sellerEmail="s@example.com", r="https://x/?a=1", jti="j1")
    token = hs(payload, alg="HS384")
    grant = authenticate_inline({param: [token]}, PARTNER, STORED, now=NOW)
    assert grant.format == format
    assert grant.fields == {
        "vin": "1HGBH41JXMN109186",
        "year": 2021,
        "buyerSendLink": True,
        "sellerEmail": "s@example.com",
        "redirectUrl": "https://x/?a=1",
    }
    assert grant.expires_at == NOW + 300 + DEFAULT_AUTH_SETTINGS.leeway_seconds
    custom = authenticate_inline({param: [token]}, PARTNER, STORED, AuthSettings(900, 5), now=NOW)
    assert custom.expires_at == NOW + 300 + 5


def test_a_jwt_is_accepted_until_its_expires_at_and_refused_after() -> None:
    token = hs(claims(iat=NOW, exp=NOW + 60))
    grant = authenticate_inline({"jwt": [token]}, PARTNER, STORED, now=NOW)
    authenticate_inline({"jwt": [token]}, PARTNER, STORED, now=grant.expires_at - 0.5)
    with pytest.raises(AuthError, match="expired"):
        authenticate_inline({"jwt": [token]}, PARTNER, STORED, now=grant.expires_at)


def test_format_1_wins_over_a_jwt_in_v_and_format_2_needs_a_dot() -> None:
    token = hs()
    with pytest.raises(AuthError, match="not covered by the JWT: v"):
        authenticate_inline({"jwt": [token], "v": [token]}, PARTNER, STORED, now=NOW)
    # A VIN (no dot) in v is Format 3, so it needs ts and sig.
    with pytest.raises(AuthError, match="missing credentials"):
        authenticate_inline({"v": ["1HGBH41JXMN109186"]}, PARTNER, STORED, now=NOW)


# -- Format 3 grant -------------------------------------------------------------------------------


def test_a_signed_query_grant_carries_the_values_as_strings_under_full_names() -> None:
    grant = authenticate_inline(multi(signed(ts=NOW - 10)), PARTNER, STORED, now=NOW)
    assert grant == InlineGrant(
        format=3,
        fields={
            "vin": "1HGBH41JXMN109186",
            "year": "2021",
            "make": "Honda",
            "model": "Civic",
            "amount": "18500",
            "buyerEmail": "buyer+tag@example.com",
            "buyerName": "Zoë O'Brien",
            "redirectUrl": "https://yoursite.com/thanks?deal=1&x=a b",
        },
        replay_key=grant.replay_key,
        expires_at=NOW - 10 + SIGNED_QUERY_SKEW_SECONDS + 1,
    )
    with pytest.raises(FrozenInstanceError):
        grant.format = 1  # type: ignore[misc]


def test_a_signed_query_is_accepted_until_its_expires_at_and_refused_after() -> None:
    query = multi(signed())
    grant = authenticate_inline(query, PARTNER, STORED, now=NOW)
    authenticate_inline(query, PARTNER, STORED, now=grant.expires_at - 1)
    with pytest.raises(AuthError, match="expired"):
        authenticate_inline(query, PARTNER, STORED, now=grant.expires_at)


def test_sign_query_is_what_the_verifier_checks() -> None:
    params = {**FIELDS, "ts": str(NOW)}
    sig = sign_query(params, STORED)
    assert sig == hand_hmac(canonical_query(params))
    assert sign_query({**params, "sig": "ignored"}, STORED) == sig
    assert authenticate_inline(multi({**params, "sig": sig}), PARTNER, STORED, now=NOW).format == 3


def test_an_unusable_stored_secret_is_a_server_error_not_an_auth_error() -> None:
    with pytest.raises(ValueError, match="base64") as caught:
        authenticate_inline(multi(signed()), PARTNER, "definitely not base64!", now=NOW)
    assert not isinstance(caught.value, AuthError)


def test_query_values_must_be_lists() -> None:
    with pytest.raises(TypeError, match="list of values"):
        authenticate_inline(signed(), PARTNER, STORED, now=NOW)  # type: ignore[arg-type]


# -- replay key -----------------------------------------------------------------------------------


def test_replay_key_is_stable_for_one_signed_request() -> None:
    params = signed()
    first = authenticate_inline(multi(params), PARTNER, STORED, now=NOW).replay_key
    reordered = dict(reversed(list(params.items())))
    assert authenticate_inline(multi(reordered), PARTNER, STORED, now=NOW + 100).replay_key == first
    upper = with_value(params, sig=params["sig"].upper())  # the same signature, spelled differently
    assert authenticate_inline(multi(upper), PARTNER, STORED, now=NOW).replay_key == first
    assert len(first) == 64 and int(first, 16) >= 0

    token = hs(claims(v="1HG"))
    by_jwt = authenticate_inline({"jwt": [token]}, PARTNER, STORED, now=NOW).replay_key
    assert authenticate_inline({"jwt": [token]}, PARTNER, STORED, now=NOW + 10).replay_key == by_jwt
    # The same token is the same authorization, whichever parameter carries it.
    assert authenticate_inline({"v": [token]}, PARTNER, STORED, now=NOW).replay_key == by_jwt
    assert by_jwt != first


@pytest.mark.parametrize("name", [*FIELDS, "ts"])
def test_replay_key_changes_with_any_signed_value(name: str) -> None:
    base = authenticate_inline(multi(signed()), PARTNER, STORED, now=NOW).replay_key
    fields = {**FIELDS, "ts": str(NOW)}
    changed = {**fields, name: fields[name] + "1" if name != "ts" else str(NOW + 1)}
    ts = int(changed.pop("ts"))
    assert authenticate_inline(multi(signed(changed, ts=ts)), PARTNER, STORED, now=NOW).replay_key != base


def test_replay_key_changes_with_the_token_and_the_partner() -> None:
    def key(token: str, partner: str = PARTNER, stored: str = STORED) -> str:
        return authenticate_inline({"jwt": [token]}, partner, stored, now=NOW).replay_key

    assert key(hs(claims(v="1HG"))) != key(hs(claims(v="2HG")))
    assert key(hs(claims(v="1HG"))) != key(hs(claims(v="1HG"), alg="HS512"))
    # One secret shared by two partners: the same signed query names two different requests.
    query = multi(signed())
    assert (
        authenticate_inline(query, PARTNER, STORED, now=NOW).replay_key
        != authenticate_inline(query, OTHER, STORED, now=NOW).replay_key
    )


# -- JavaScript's encodeURIComponent and sort ----------------------------------------------------

#: Outputs of node v20's encodeURIComponent.
JS_ENCODED = [
    ("!'()*~-_.", "!'()*~-_."),
    ("AZaz09", "AZaz09"),
    (" ", "%20"),
    ("@", "%40"),
    ("+", "%2B"),
    ("/", "%2F"),
    ("?", "%3F"),
    ("&", "%26"),
    ("=", "%3D"),
    ("#", "%23"),
    ("%", "%25"),
    (":", "%3A"),
    (",", "%2C"),
    (";", "%3B"),
    ("$", "%24"),
    ("[", "%5B"),
    ("\n", "%0A"),
    ("é", "%C3%A9"),
    ("😀", "%F0%9F%98%80"),  # a surrogate pair in JavaScript, one code point here
    ("\uff61", "%EF%BD%A1"),
    ("buyer@example.com", "buyer%40example.com"),
]


@pytest.mark.parametrize(("text", "encoded"), JS_ENCODED)
def test_encode_uri_component_matches_javascript(text: str, encoded: str) -> None:
    assert encode_uri_component(text) == encoded


def test_encode_uri_component_refuses_a_lone_surrogate_as_javascript_throws() -> None:
    with pytest.raises(ValueError):
        encode_uri_component("\ud800")


def test_canonical_query_of_the_spec_example() -> None:
    params = {"v": "1HGBH41JXMN109186", "y": "2021", "m": "Honda", "o": "Civic", "a": "18500"}
    params |= {"be": "buyer@example.com", "ts": "1750000000", "sig": "f" * 64}
    # node: the spec's snippet with ts 1750000000
    expected = "a=18500&be=buyer%40example.com&m=Honda&o=Civic&ts=1750000000&v=1HGBH41JXMN109186&y=2021"
    assert canonical_query(params) == expected


def test_canonical_query_sorts_by_utf16_code_units_like_javascript() -> None:
    # node: ["\uff61","😀","B","a","bn","b"].sort() → B a b bn 😀 ｡ (U+1F600 is D83D DE00, below U+FF61)
    params = {"\uff61": "1", "😀": "2", "B": "3", "a": "4", "bn": "5", "b": "6"}
    assert canonical_query(params) == "B=3&a=4&b=6&bn=5&%F0%9F%98%80=2&%EF%BD%A1=1"


def test_canonical_query_encodes_keys_and_values_and_leaves_out_only_sig() -> None:
    params = {"a b": "x&y=z", "sig": "s", "sigs": "kept", "r": "https://x/?q=1#f"}
    assert canonical_query(params) == "a%20b=x%26y%3Dz&r=https%3A%2F%2Fx%2F%3Fq%3D1%23f&sigs=kept"
    assert canonical_query({}) == ""


# -- messages -------------------------------------------------------------------------------------


def unknown_parameter_message(names: list[str]) -> str:
    with pytest.raises(AuthError) as caught:
        authenticate_inline(multi(signed(dict.fromkeys(names, "x"))), PARTNER, STORED, now=NOW)
    assert caught.value.message.startswith("unknown parameter: ")
    return caught.value.message


def test_parameter_names_in_messages_are_sorted_escaped_and_shortened() -> None:
    message = unknown_parameter_message(["zz", "\x1b[31mred", "n" * 200, "", "b"])
    assert "\x1b" not in message
    assert message == f'unknown parameter: "", \\x1b[31mred, b, {"n" * 40}…, zz'


def test_parameter_names_in_messages_are_capped() -> None:
    message = unknown_parameter_message([f"k{i:02}" for i in range(14)])
    assert message == "unknown parameter: k00, k01, k02, k03, k04, k05, k06, k07, k08, k09, and 4 more"
