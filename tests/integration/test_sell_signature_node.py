"""The spec's own Node snippet for Format 3 (GET /sell signed query) against our verifier.

The snippet below is the spec's text ("DealNow deal initiation", Node example) with only the secret,
the params and ``ts`` substituted. Node prints ``canonical + "&sig=" + sig``; we hand that line over as
API Gateway would (percent-decoded, multi-value) and check that we rebuild Node's canonical string byte
for byte, accept the signature, return the original values, and refuse the URL once a value changes.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from typing import Any
from urllib.parse import unquote

import pytest

from distiller.api.auth import AuthError
from distiller.api.inline_auth import SHORT_KEYS, authenticate_inline, canonical_query, sign_query
from distiller_tools.local.api_server import api_gateway_event

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")

#: Verbatim from the spec (partner-api.txt, "Node example"); only SPEC_SECRET and SPEC_PARAMS are replaced.
SPEC_SNIPPET = """
const crypto = require("crypto");
const secret = Buffer.from("YOUR_BASE64_SECRET", "base64").toString("utf-8");
const params = { v: "1HGBH41JXMN109186", y: 2021, m: "Honda", o: "Civic",
a: 18500, be: "buyer@example.com", ts: Math.floor(Date.now()/1000) };
const canonical = Object.keys(params).sort()
.map(k => encodeURIComponent(k) + "=" + encodeURIComponent(params[k]))
.join("&");
const sig = crypto.createHmac("sha256", secret).update(canonical).digest("hex");
console.log(canonical + "&sig=" + sig);
"""
SPEC_SECRET = '"YOUR_BASE64_SECRET"'
SPEC_PARAMS = """{ v: "1HGBH41JXMN109186", y: 2021, m: "Honda", o: "Civic",
a: 18500, be: "buyer@example.com", ts: Math.floor(Date.now()/1000) }"""

PARTNER = "partner-acme"
SECRET = "test-sell-secret-ünïcode-0123456789-abcdefghijklmnopqrstuvwxyz"
STORED = base64.b64encode(SECRET.encode()).decode()
TS = 1_750_000_000

#: Values that need encoding; numbers stay numbers, as in the spec's snippet.
PARAMS: dict[str, Any] = {
    "v": "1HGBH41JXMN109186",
    "y": 2021,
    "m": "Honda",
    "o": "Civic/Si",
    "t": "EX-L ~ 100% · é",
    "a": 18500,
    "bn": "Zoë 😀 O'Brien (test)!*",
    "be": "buyer+tag@example.com",
    "sn": "Jöhn = Seller; & co",
    "r": "https://yoursite.com/thanks?deal=1&src=dealnow&q=a b#top",
    "ro": "seller",
}


def node_signed_line(params: dict[str, Any], ts: int, stored: str = STORED) -> str:
    """Run the spec's snippet with our secret, params and ts; return its output line."""
    literal = json.dumps({**params, "ts": ts})  # a JSON object is a JavaScript object literal
    assert SPEC_SNIPPET.count(SPEC_SECRET) == 1 and SPEC_SNIPPET.count(SPEC_PARAMS) == 1
    snippet = SPEC_SNIPPET.replace(SPEC_SECRET, json.dumps(stored)).replace(SPEC_PARAMS, literal)
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run([node, "-e", snippet], capture_output=True, text=True, check=True, timeout=60)
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    return lines[0]


def as_api_gateway(line: str) -> dict[str, list[str]]:
    """The output line as the query string of GET /sell, as API Gateway hands it to the function."""
    query = api_gateway_event("GET", f"/sell/{PARTNER}?{line}", {}, b"")["multiValueQueryStringParameters"]
    # Node's output holds no "+" (it is %2B), so plain percent-decoding gives the same parameters.
    plain: dict[str, list[str]] = {}
    for pair in line.split("&"):
        name, _, value = pair.partition("=")
        plain.setdefault(unquote(name, errors="strict"), []).append(unquote(value, errors="strict"))
    assert query == plain
    return query


@pytest.fixture(scope="module")
def line() -> str:
    return node_signed_line(PARAMS, TS)


def test_we_rebuild_nodes_canonical_string_byte_for_byte(line: str) -> None:
    canonical, _, sig = line.rpartition("&sig=")
    params = {name: values[0] for name, values in as_api_gateway(line).items()}
    assert canonical_query(params).encode() == canonical.encode()
    assert params["sig"] == sig
    assert sign_query(params, STORED) == sig
    # The line holds each character that matters, encoded (or left alone) as JavaScript does.
    for encoded in ("%20", "%40", "%2B", "%2F", "%3F", "%26", "%3D", "%23", "%25", "%C3%A9", "%F0%9F%98%80"):
        assert encoded in canonical, encoded
    for unreserved in ("O'Brien", "(test)!*", "EX-L%20~%20"):
        assert unreserved in canonical, unreserved


def test_authenticate_inline_accepts_nodes_url_and_returns_the_original_values(line: str) -> None:
    grant = authenticate_inline(as_api_gateway(line), PARTNER, STORED, now=TS + 5)
    assert grant.format == 3
    assert grant.fields == {SHORT_KEYS[key]: str(value) for key, value in PARAMS.items()}
    assert grant.expires_at == TS + 301
    # The same URL again is the same request; Node signing the same values again gives the same URL.
    assert node_signed_line(PARAMS, TS) == line
    assert authenticate_inline(as_api_gateway(line), PARTNER, STORED, now=TS).replay_key == grant.replay_key


@pytest.mark.parametrize(
    ("signed", "altered"),
    [
        ("a=18500", "a=18501"),
        ("ro=seller", "ro=buyer"),
        ("src%3Ddealnow", "src%3Devil"),
        ("https%3A%2F%2Fyoursite.com", "https%3A%2F%2Fevil.example"),
        ("Zo%C3%AB", "Zo%C3%A8"),
        (f"ts={TS}", f"ts={TS + 1}"),
    ],
)
def test_the_same_url_with_one_value_altered_is_refused(line: str, signed: str, altered: str) -> None:
    assert line.count(signed) == 1
    with pytest.raises(AuthError) as caught:
        authenticate_inline(as_api_gateway(line.replace(signed, altered)), PARTNER, STORED, now=TS + 5)
    assert (caught.value.status, caught.value.message) == (401, "invalid signature")


def test_nodes_url_is_refused_for_another_secret_and_after_the_skew_window(line: str) -> None:
    other = base64.b64encode(b"another-partner-secret-0123456789").decode()
    with pytest.raises(AuthError, match="invalid signature"):
        authenticate_inline(as_api_gateway(line), PARTNER, other, now=TS)
    with pytest.raises(AuthError, match="expired"):
        authenticate_inline(as_api_gateway(line), PARTNER, STORED, now=TS + 301)
