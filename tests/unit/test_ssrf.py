"""SSRF refusals: hostile webhook URLs, the address classifier, and the sender's refusal path.

Every resolver here is a fake dict lookup; an autouse guard makes any real connection or real DNS
lookup fail the test, so nothing in this file can reach the network.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distiller.deliver.sender import SendResult, WebhookSender, header_problem
from distiller.deliver.ssrf import (
    EndpointRefused,
    EndpointUnresolved,
    ResolvedEndpoint,
    refusal_class,
    refusal_reason,
    resolve_endpoint,
    system_resolver,
)
from tests.network_guard import NetworkBlocked, block_network


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    block_network(monkeypatch)


FAKE_DNS: dict[str, list[str]] = {
    "example.com": ["93.184.216.34"],
    "v6.example.com": ["2606:4700::1111"],
    "dual.example.com": ["93.184.216.34", "2606:4700::1111"],
    "localhost": ["127.0.0.1", "::1"],
    "ip6-localhost.test": ["::1"],
    "internal.corp.example": ["192.168.1.10"],
    "ula.corp.example": ["fd12:3456::1"],
    "scoped.corp.example": ["fe80::1%eth0"],
    "metadata.attacker.example": ["169.254.169.254"],
    "metadata.google.internal": ["169.254.169.254"],
    # DNS rebinding style: one public and one internal answer, in either order.
    "rebind.attacker.example": ["93.184.216.34", "10.0.0.5"],
    "rebind-reverse.attacker.example": ["10.0.0.5", "93.184.216.34"],
    "rebind-metadata.attacker.example": ["2606:4700::1111", "169.254.169.254"],
    "empty.example.com": [],
}


class FakeResolver:
    """A dict lookup that records every (host, port) it is asked about."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = FAKE_DNS if table is None else table
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


# Teredo: 2001:0:<server v4>:<flags>:<port>:<client v4 XOR ffff:ffff>.
def teredo(client: str, server: str = "65.54.227.120") -> str:
    server_hex = int(ipaddress.IPv4Address(server))
    client_hex = int(ipaddress.IPv4Address(client)) ^ 0xFFFFFFFF
    value = (0x20010000 << 96) | (server_hex << 64) | (0x8000 << 48) | (0x63BF << 32) | client_hex
    return str(ipaddress.IPv6Address(value))


# (id, url, keywords that must all appear in the refusal message)
HOSTILE_URLS: list[tuple[str, str, tuple[str, ...]]] = [
    # schemes
    ("http", "http://example.com/hook", ("scheme", "'http'")),
    ("http-upper", "HTTP://example.com/hook", ("scheme",)),
    ("ftp", "ftp://example.com/hook", ("scheme", "'ftp'")),
    ("file", "file:///etc/passwd", ("scheme", "'file'")),
    ("gopher", "gopher://127.0.0.1:6379/_INFO", ("scheme", "'gopher'")),
    ("no-scheme", "//example.com/hook", ("scheme", "(none)")),
    # loopback
    ("v4-loopback", "https://127.0.0.1/hook", ("loopback",)),
    ("v4-loopback-other", "https://127.1.2.3/hook", ("loopback",)),
    ("localhost-v4-and-v6", "https://localhost/hook", ("loopback", "RFC 1122")),
    ("localhost-v6-only", "https://ip6-localhost.test/hook", ("loopback", "RFC 4291")),
    ("v6-loopback", "https://[::1]/hook", ("loopback",)),
    ("v6-loopback-port", "https://[::1]:8443/hook", ("loopback",)),
    # unspecified
    ("v4-unspecified", "https://0.0.0.0/hook", ("unspecified",)),
    ("v6-unspecified", "https://[::]/hook", ("unspecified",)),
    # private
    ("10/8", "https://10.0.0.1/hook", ("private",)),
    ("10/8-top", "https://10.255.255.254/hook", ("private",)),
    ("172.16/12-bottom", "https://172.16.0.1/hook", ("private",)),
    ("172.16/12-top", "https://172.31.255.254/hook", ("private",)),
    ("192.168/16", "https://192.168.0.1/hook", ("private",)),
    ("private-via-dns", "https://internal.corp.example/hook", ("private", "RFC 1918")),
    ("cgnat", "https://100.64.0.1/hook", ("carrier-grade NAT",)),
    ("cgnat-top", "https://100.127.255.254/hook", ("carrier-grade NAT",)),
    # cloud metadata
    ("aws-metadata", "https://169.254.169.254/latest/meta-data/", ("metadata",)),
    ("aws-metadata-via-dns", "https://metadata.attacker.example/latest", ("metadata",)),
    ("ecs-metadata", "https://169.254.170.2/v2/credentials", ("metadata",)),
    ("aws-v6-metadata", "https://[fd00:ec2::254]/latest", ("metadata",)),
    ("alibaba-metadata", "https://100.100.100.200/latest", ("metadata",)),
    ("oracle-metadata", "https://192.0.0.192/opc/v2", ("metadata",)),
    ("gcp-metadata-name", "https://metadata.google.internal/computeMetadata/v1/", ("metadata",)),
    # link-local
    ("v4-link-local", "https://169.254.1.1/hook", ("link-local",)),
    ("v6-link-local", "https://[fe80::1]/hook", ("link-local",)),
    ("v6-link-local-zone", "https://[fe80::1%25eth0]/hook", ("link-local",)),
    ("v6-link-local-via-dns-zone", "https://scoped.corp.example/hook", ("link-local",)),
    # IPv6 unique local / site-local
    ("ula-fc00", "https://[fc00::1]/hook", ("unique local",)),
    ("ula-fd", "https://[fd12:3456:789a::1]/hook", ("unique local",)),
    ("ula-via-dns", "https://ula.corp.example/hook", ("unique local",)),
    ("site-local", "https://[fec0::1]/hook", ("site-local",)),
    # multicast / reserved / broadcast
    ("v6-multicast", "https://[ff02::1]/hook", ("multicast",)),
    ("v4-multicast", "https://224.0.0.1/hook", ("multicast",)),
    ("v4-reserved", "https://240.0.0.1/hook", ("reserved",)),
    ("v4-broadcast", "https://255.255.255.255/hook", ("broadcast",)),
    ("v6-discard", "https://[100::1]/hook", ("discard",)),
    # IPv4 embedded in IPv6
    ("mapped-loopback", "https://[::ffff:127.0.0.1]/hook", ("embeds", "loopback")),
    ("mapped-loopback-hex", "https://[::ffff:7f00:1]/hook", ("embeds", "loopback")),
    ("mapped-metadata", "https://[::ffff:169.254.169.254]/latest", ("embeds", "metadata")),
    ("mapped-private", "https://[::ffff:10.0.0.1]/hook", ("embeds", "private")),
    ("mapped-cgnat", "https://[::ffff:100.64.0.1]/hook", ("embeds", "carrier-grade NAT")),
    ("nat64-metadata", "https://[64:ff9b::a9fe:a9fe]/latest", ("embeds", "metadata")),
    ("nat64-loopback", "https://[64:ff9b::7f00:1]/hook", ("embeds", "loopback")),
    ("nat64-private", "https://[64:ff9b::c0a8:101]/hook", ("embeds", "private")),
    ("6to4-loopback", "https://[2002:7f00:1::]/hook", ("embeds", "loopback")),
    ("6to4-metadata", "https://[2002:a9fe:a9fe::1]/latest", ("embeds", "metadata")),
    ("teredo-private", f"https://[{teredo('10.0.0.1')}]/hook", ("embeds", "10.0.0.1", "private")),
    ("teredo-loopback", f"https://[{teredo('127.0.0.1')}]/hook", ("embeds", "loopback")),
    ("teredo-metadata", f"https://[{teredo('169.254.169.254')}]/hook", ("embeds", "metadata")),
    ("v4-compatible-loopback", "https://[::127.0.0.1]/hook", ("embeds", "loopback")),
    ("v4-compatible-private", "https://[::10.0.0.1]/hook", ("embeds", "private")),
    # non-canonical numeric hosts (inet_aton forms)
    ("decimal", "https://2130706433/hook", ("non-canonical",)),
    ("hex", "https://0x7f000001/hook", ("non-canonical",)),
    ("octal", "https://017700000001/hook", ("non-canonical",)),
    ("dotted-hex", "https://0x7f.0.0.1/hook", ("non-canonical",)),
    ("dotted-octal", "https://0177.0.0.1/hook", ("non-canonical",)),
    ("short-form", "https://127.1/hook", ("non-canonical",)),
    ("decimal-metadata", "https://2852039166/latest", ("non-canonical",)),
    ("fullwidth-digits", "https://１２７.０.０.１/hook", ("non-canonical",)),
    # DNS rebinding: any internal answer taints the name
    ("rebind-public-first", "https://rebind.attacker.example/hook", ("private", "RFC 1918")),
    ("rebind-private-first", "https://rebind-reverse.attacker.example/hook", ("private", "RFC 1918")),
    ("rebind-v6-then-metadata", "https://rebind-metadata.attacker.example/hook", ("metadata",)),
    # credentials
    ("user-and-password", "https://user:pass@example.com/hook", ("credentials",)),
    ("user-only", "https://user@example.com/hook", ("credentials",)),
    ("empty-credentials", "https://:@example.com/hook", ("credentials",)),
    ("credentials-before-internal", "https://example.com@127.0.0.1/hook", ("credentials",)),
    # special-purpose public-looking ranges
    ("doc-192.0.2", "https://192.0.2.1/hook", ("documentation",)),
    ("doc-198.51.100", "https://198.51.100.7/hook", ("documentation",)),
    ("doc-203.0.113", "https://203.0.113.9/hook", ("documentation",)),
    ("doc-v6", "https://[2001:db8::1]/hook", ("documentation",)),
    ("benchmarking", "https://198.18.0.1/hook", ("benchmarking",)),
    ("benchmarking-top", "https://198.19.255.254/hook", ("benchmarking",)),
    ("ietf-protocol", "https://192.0.0.8/hook", ("IETF protocol",)),
    # malformed / unresolvable
    ("does-not-resolve", "https://nonexistent.invalid/hook", ("does not resolve",)),
    ("resolves-to-nothing", "https://empty.example.com/hook", ("does not resolve",)),
    ("no-host", "https:///hook", ("no host",)),
    ("bad-port", "https://example.com:99999/hook", ("invalid URL",)),
]


def test_table_is_large_and_ids_unique() -> None:
    ids = [row[0] for row in HOSTILE_URLS]
    assert len(ids) >= 40
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(("url", "keywords"), [row[1:] for row in HOSTILE_URLS], ids=[row[0] for row in HOSTILE_URLS])
def test_hostile_url_refused_with_reason(url: str, keywords: tuple[str, ...], resolver: FakeResolver) -> None:
    with pytest.raises(EndpointRefused) as refused:
        resolve_endpoint(url, resolver=resolver)
    message = str(refused.value)
    for keyword in keywords:
        assert keyword in message, f"{keyword!r} not in refusal {message!r}"


# --- issue 11: what a partner may read about a refused host name ------------------------------


def _resolves_inside(url: str) -> bool:
    """An https URL without credentials whose (fake) DNS answers include a refused address."""
    answers = FAKE_DNS.get(urlsplit(url).hostname or "", [])
    refused = any(refusal_reason(ipaddress.ip_address(a.split("%", 1)[0])) for a in answers)
    return url.startswith("https://") and "@" not in url and refused


DNS_REFUSALS = [(row_id, url) for row_id, url, _ in HOSTILE_URLS if _resolves_inside(url)]


def test_the_hostile_table_has_host_names_that_resolve_inside() -> None:
    assert len(DNS_REFUSALS) >= 8


@pytest.mark.parametrize("url", [row[1] for row in DNS_REFUSALS], ids=[row[0] for row in DNS_REFUSALS])
def test_a_host_name_refusal_names_the_class_never_the_resolved_address(url: str, resolver: FakeResolver) -> None:
    """The message becomes the partner-visible delivery log `error`: it must not tell a partner what
    our resolver answered for a name; the address travels on the exception for the operator's log."""
    host = urlsplit(url).hostname or ""
    with pytest.raises(EndpointRefused) as refused:
        resolve_endpoint(url, resolver=resolver)
    message = str(refused.value)
    assert message.startswith(f"host {host!r} resolves to ")
    assert "address" in message  # "... resolves to a private address (RFC 1918)"
    for answer in FAKE_DNS[host]:
        address = ipaddress.ip_address(answer.split("%", 1)[0])
        assert answer.split("%", 1)[0] not in message and str(address) not in message
        assert address.exploded not in message
    exc = refused.value
    assert exc.host == host
    assert exc.address is not None and exc.address in [a.split("%", 1)[0] for a in FAKE_DNS[host]]
    assert exc.detail is not None and exc.detail.startswith(exc.address)


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("10.1.2.3", "a private address (RFC 1918)"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00::1", "a unique local (private) address (RFC 4193)"),
        ("127.0.0.1", "a loopback address"),
        ("::ffff:10.1.2.3", "an IPv6 address that embeds a private address"),
        ("64:ff9b::a9fe:a9fe", "an IPv6 address that embeds a cloud metadata address"),
    ],
)
def test_a_name_resolving_inside_is_refused_with_why_and_not_where(answer: str, why: str) -> None:
    resolver = FakeResolver({"hooks.internal.example": [answer]})
    with pytest.raises(EndpointRefused) as refused:
        resolve_endpoint("https://hooks.internal.example/x", resolver=resolver)
    assert str(refused.value).startswith(f"host 'hooks.internal.example' resolves to {why}")
    assert answer not in str(refused.value)
    assert str(ipaddress.ip_address(answer)) not in str(refused.value)
    assert refused.value.address == str(ipaddress.ip_address(answer))


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("https://10.0.0.1/x", "10.0.0.1"),
        ("https://[fd00::1]/x", "fd00::1"),
        ("https://169.254.169.254/", "169.254.169.254"),
    ],
)
def test_a_literal_address_refusal_may_name_the_address_the_partner_typed(url: str, address: str) -> None:
    resolver = FakeResolver({})
    with pytest.raises(EndpointRefused, match="address ") as refused:
        resolve_endpoint(url, resolver=resolver)
    assert address in str(refused.value)
    assert refused.value.address == address
    assert resolver.calls == []


def test_the_sender_logs_the_resolved_address_for_operators_only(caplog: pytest.LogCaptureFixture) -> None:
    sender = WebhookSender(resolver=FakeResolver({"hooks.internal.example": ["10.1.2.3"]}))
    with caplog.at_level(logging.WARNING, logger="distiller.deliver.sender"):
        result = sender.post("https://hooks.internal.example/x", {}, b"{}")
    assert result.refused is True
    assert result.error == "endpoint refused: host 'hooks.internal.example' resolves to a private address (RFC 1918)"
    [record] = [r for r in caplog.records if r.name == "distiller.deliver.sender"]
    assert record.levelno == logging.WARNING
    assert "hooks.internal.example" in record.getMessage() and "10.1.2.3" in record.getMessage()


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://[::ffff:169.254.169.254]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://2130706433/",
        "https://0x7f.0.0.1/",
        "http://example.com/",
        "https://user:pass@example.com/",
    ],
)
def test_literal_and_malformed_hosts_never_reach_the_resolver(url: str, resolver: FakeResolver) -> None:
    with pytest.raises(EndpointRefused):
        resolve_endpoint(url, resolver=resolver)
    assert resolver.calls == []


def test_unresolvable_host_error_is_refusal_not_oserror() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise OSError("resolver exploded")

    with pytest.raises(EndpointRefused, match="does not resolve: resolver exploded"):
        resolve_endpoint("https://example.com/hook", resolver=failing)


def test_unicode_error_from_resolver_is_refusal() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise UnicodeError("label too long")

    with pytest.raises(EndpointRefused, match="does not resolve"):
        resolve_endpoint("https://example.com/hook", resolver=failing)


# --- accepted endpoints ---------------------------------------------------------------------


def test_public_ipv4_literal_accepted(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("https://93.184.216.34/hook", resolver=resolver)
    assert endpoint == ResolvedEndpoint(
        url="https://93.184.216.34/hook",
        scheme="https",
        host="93.184.216.34",
        port=443,
        address="93.184.216.34",
        path="/hook",
    )
    assert endpoint.host_header == "93.184.216.34"
    assert resolver.calls == []


def test_public_ipv6_literal_accepted(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("https://[2606:4700::1111]/hook", resolver=resolver)
    assert endpoint.address == "2606:4700::1111"
    assert endpoint.host == "2606:4700::1111"
    assert endpoint.host_header == "[2606:4700::1111]"
    assert endpoint.port == 443


def test_public_ipv6_literal_non_default_port_host_header(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("https://[2606:4700::1111]:8443/hook", resolver=resolver)
    assert endpoint.host_header == "[2606:4700::1111]:8443"


def test_name_accepted_with_checked_address_port_and_path(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("https://Example.COM:8443/a/b?x=1&y=%20#frag", resolver=resolver)
    assert endpoint.scheme == "https"
    assert endpoint.host == "example.com"
    assert endpoint.port == 8443
    assert endpoint.address == "93.184.216.34"
    assert endpoint.host_header == "example.com:8443"
    assert endpoint.path == "/a/b?x=1&y=%20"
    assert resolver.calls == [("example.com", 8443)]


def test_default_port_omitted_from_host_header(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("https://example.com:443/hook", resolver=resolver)
    assert endpoint.port == 443
    assert endpoint.host_header == "example.com"
    assert resolver.calls == [("example.com", 443)]


def test_empty_path_becomes_slash(resolver: FakeResolver) -> None:
    assert resolve_endpoint("https://example.com", resolver=resolver).path == "/"
    assert resolve_endpoint("https://example.com?q=1", resolver=resolver).path == "/?q=1"


def test_trailing_dot_in_name_is_stripped(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("https://example.com./hook", resolver=resolver)
    assert endpoint.host == "example.com"
    assert endpoint.address == "93.184.216.34"


def test_address_is_the_first_resolved_and_all_are_checked(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("https://dual.example.com/hook", resolver=resolver)
    assert endpoint.address == "93.184.216.34"
    v6_first = FakeResolver({"dual.example.com": ["2606:4700::1111", "93.184.216.34"]})
    assert resolve_endpoint("https://dual.example.com/hook", resolver=v6_first).address == "2606:4700::1111"


def test_public_ipv6_via_dns_accepted(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("https://v6.example.com/hook", resolver=resolver)
    assert endpoint.address == "2606:4700::1111"
    assert endpoint.host_header == "v6.example.com"


def test_allow_private_accepts_http_loopback(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("http://127.0.0.1:8080/x", allow_private=True, resolver=resolver)
    assert endpoint.scheme == "http"
    assert endpoint.address == "127.0.0.1"
    assert endpoint.port == 8080
    assert endpoint.path == "/x"
    assert endpoint.host_header == "127.0.0.1:8080"


def test_allow_private_default_http_port(resolver: FakeResolver) -> None:
    endpoint = resolve_endpoint("http://localhost/x", allow_private=True, resolver=resolver)
    assert endpoint.port == 80
    assert endpoint.host_header == "localhost"
    assert endpoint.address == "127.0.0.1"
    assert resolver.calls == [("localhost", 80)]


@pytest.mark.parametrize(
    ("url", "keyword"),
    [
        ("ftp://127.0.0.1/x", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http://user:pass@127.0.0.1:8080/x", "credentials"),
        ("http://2130706433/x", "non-canonical"),
    ],
)
def test_allow_private_still_refuses_other_schemes_credentials_numeric(
    url: str, keyword: str, resolver: FakeResolver
) -> None:
    with pytest.raises(EndpointRefused, match=keyword):
        resolve_endpoint(url, allow_private=True, resolver=resolver)


def test_without_allow_private_the_same_local_url_is_refused(resolver: FakeResolver) -> None:
    with pytest.raises(EndpointRefused, match="scheme"):
        resolve_endpoint("http://127.0.0.1:8080/x", resolver=resolver)
    with pytest.raises(EndpointRefused, match="loopback"):
        resolve_endpoint("https://127.0.0.1:8080/x", resolver=resolver)


# --- refusal_reason ------------------------------------------------------------------------

REFUSED_ADDRESSES: list[tuple[str, tuple[str, ...]]] = [
    ("127.0.0.1", ("loopback",)),
    ("127.255.255.254", ("loopback",)),
    ("::1", ("loopback",)),
    ("0.0.0.0", ("unspecified",)),
    ("0.1.2.3", ("this-network",)),
    ("::", ("unspecified",)),
    ("10.1.2.3", ("private",)),
    ("172.16.0.0", ("private",)),
    ("172.31.255.255", ("private",)),
    ("192.168.255.255", ("private",)),
    ("100.64.0.0", ("carrier-grade NAT",)),
    ("100.127.255.255", ("carrier-grade NAT",)),
    ("169.254.0.1", ("link-local",)),
    ("169.254.169.254", ("metadata", "AWS")),
    ("169.254.170.2", ("metadata", "ECS")),
    ("fd00:ec2::254", ("metadata",)),
    ("100.100.100.200", ("metadata", "Alibaba")),
    ("192.0.0.192", ("metadata", "Oracle")),
    ("fe80::abcd", ("link-local",)),
    ("febf:ffff::1", ("link-local",)),
    ("fc00::", ("unique local",)),
    ("fdff:ffff::1", ("unique local",)),
    ("ff02::1", ("multicast",)),
    ("ff05::2", ("multicast",)),
    ("224.0.0.1", ("multicast",)),
    ("239.255.255.250", ("multicast",)),
    ("240.0.0.1", ("reserved",)),
    ("255.255.255.255", ("broadcast",)),
    ("192.0.2.255", ("documentation",)),
    ("2001:db8:1::1", ("documentation",)),
    ("198.18.0.1", ("benchmarking",)),
    ("::ffff:127.0.0.1", ("embeds", "loopback")),
    ("::ffff:169.254.169.254", ("embeds", "metadata")),
    ("64:ff9b::a9fe:a9fe", ("embeds", "metadata")),
    ("64:ff9b::7f00:1", ("embeds", "loopback")),
    ("2002:7f00:1::", ("embeds", "loopback")),
    ("2002:c0a8:101::1", ("embeds", "private")),
    (teredo("192.168.1.1"), ("embeds", "private")),
    ("::127.0.0.1", ("embeds", "loopback")),
    ("::2", ("embeds", "unspecified")),
]


@pytest.mark.parametrize(("text", "keywords"), REFUSED_ADDRESSES, ids=[row[0] for row in REFUSED_ADDRESSES])
def test_refusal_reason_names_the_range(text: str, keywords: tuple[str, ...]) -> None:
    reason = refusal_reason(ipaddress.ip_address(text))
    assert reason is not None
    assert reason.startswith(str(ipaddress.ip_address(text)))
    for keyword in keywords:
        assert keyword in reason


@pytest.mark.parametrize(("text", "keywords"), REFUSED_ADDRESSES, ids=[row[0] for row in REFUSED_ADDRESSES])
def test_refusal_class_names_the_class_without_the_address(text: str, keywords: tuple[str, ...]) -> None:
    address = ipaddress.ip_address(text)
    described = refusal_class(address)
    assert described is not None
    for keyword in keywords:
        assert keyword in described
    forms = {text, str(address), address.exploded}
    if isinstance(address, ipaddress.IPv6Address):
        for embedded in (address.ipv4_mapped, address.sixtofour, address.teredo and address.teredo[1]):
            if embedded:
                forms.add(str(embedded))
    for form in forms:
        assert form not in described
    assert "/" not in described.replace("unspecified/this-network", "").replace("AWS/GCP/Azure", "")  # no range


@pytest.mark.parametrize(
    "text",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "11.0.0.1",
        "172.15.255.255",  # just below 172.16/12
        "172.32.0.0",  # just above 172.16/12
        "192.167.255.255",
        "192.169.0.0",
        "100.63.255.255",  # just below CGNAT
        "100.128.0.0",  # just above CGNAT
        "169.253.255.255",
        "169.255.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.254",
        "2606:4700::1111",
        "2a00:1450:4001:80b::200e",
        "2600:1f18::1",
    ],
)
def test_refusal_reason_none_for_public_addresses(text: str) -> None:
    assert refusal_reason(ipaddress.ip_address(text)) is None
    assert refusal_class(ipaddress.ip_address(text)) is None


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_refusal_class_refuses_exactly_what_refusal_reason_refuses(address: ipaddress.IPv4Address) -> None:
    assert (refusal_class(address) is None) == (refusal_reason(address) is None)


def _nat64(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(v4))


def _sixtofour(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0x2002 << 112) | (int(v4) << 80) | 1)


def _mapped(v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address((0xFFFF << 32) | int(v4))


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_refused_ipv4_stays_refused_in_every_ipv6_wrapping(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    if refusal_reason(v4) is None:
        return
    for wrapped in (_mapped(v4), _nat64(v4), _sixtofour(v4), ipaddress.IPv6Address(teredo(str(v4)))):
        reason = refusal_reason(wrapped)
        assert reason is not None, f"{wrapped} wraps refused {v4} but is accepted"


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_literal_url_matches_classifier(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    resolver = FakeResolver({})
    if refusal_reason(v4) is None:
        assert resolve_endpoint(f"https://{v4}/h", resolver=resolver).address == str(v4)
    else:
        with pytest.raises(EndpointRefused):
            resolve_endpoint(f"https://{v4}/h", resolver=resolver)
    assert resolver.calls == []


# Forms outside the brief's table that the classifier lets through in this interpreter (3.12.1).
# Kept as failing tests on purpose: see the report.
@pytest.mark.parametrize(
    "text",
    [
        "64:ff9b:1::808:808",  # RFC 8215 local-use NAT64 prefix: IANA "globally reachable: false"
        "64:ff9b:1:a9fe:a9:fe00:808:808",  # RFC 6052 /48 encoding of 169.254.169.254 (suffix non-zero)
        "::ffff:0:7f00:1",  # RFC 2765 IPv4-translated (SIIT) form of 127.0.0.1
        "::ffff:0:a9fe:a9fe",  # same for 169.254.169.254
    ],
)
def test_uncommon_translation_forms_refused(text: str) -> None:
    assert refusal_reason(ipaddress.ip_address(text)) is not None


# --- system_resolver (with getaddrinfo faked) ----------------------------------------------


def test_system_resolver_dedupes_and_keeps_order(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, ...]] = []

    def fake_getaddrinfo(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        calls.append((host, port, kwargs.get("type")))
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1111", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert system_resolver("example.com", 443) == ["93.184.216.34", "2606:4700::1111"]
    assert calls == [("example.com", 443, socket.SOCK_STREAM)]


def test_network_guard_is_active() -> None:
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("example.com", 443)
    with pytest.raises(NetworkBlocked), socket.socket() as sock:
        sock.connect(("93.184.216.34", 443))


# --- WebhookSender.post on refused URLs ----------------------------------------------------


@pytest.mark.parametrize(
    ("url", "keyword"),
    [
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://rebind.attacker.example/hook", "private"),
        ("http://example.com/hook", "scheme"),
        ("https://[::ffff:127.0.0.1]/hook", "embeds"),
    ],
)
def test_sender_refuses_without_connecting(url: str, keyword: str, resolver: FakeResolver) -> None:
    sender = WebhookSender(resolver=resolver)
    result = sender.post(url, {"Content-Type": "application/json"}, b"{}")
    assert isinstance(result, SendResult)
    assert result.refused is True
    assert result.delivered is False
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith("endpoint refused")
    assert keyword in result.error
    assert sender._pools == {}  # no connection pool was even created


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/"],
)
def test_allow_private_never_reaches_a_metadata_service(url: str, resolver: FakeResolver) -> None:
    with pytest.raises(EndpointRefused, match="metadata"):
        resolve_endpoint(url, allow_private=True, resolver=resolver)


def test_allow_private_refuses_a_name_resolving_to_metadata() -> None:
    with pytest.raises(EndpointRefused, match="metadata"):
        resolve_endpoint(
            "http://metadata.internal/",
            allow_private=True,
            resolver=FakeResolver({"metadata.internal": ["169.254.169.254"]}),
        )


def test_port_zero_is_refused(resolver: FakeResolver) -> None:
    with pytest.raises(EndpointRefused, match="port 0"):
        resolve_endpoint("https://example.com:0/x", resolver=resolver)


def test_a_resolver_answer_that_is_not_an_address_is_a_refusal() -> None:
    with pytest.raises(EndpointRefused, match="not an address"):
        resolve_endpoint("https://example.com/x", resolver=FakeResolver({"example.com": ["not-an-ip"]}))


# --- transient resolution failures and international names ----------------------------------


def test_an_unresolvable_host_is_a_transient_failure_for_the_sender_not_a_refusal(resolver: FakeResolver) -> None:
    result = WebhookSender(resolver=resolver).post("https://nonexistent.invalid/hook", {}, b"{}")
    assert result.delivered is False and result.refused is False
    assert result.error is not None and result.error.startswith("DNS resolution failed")
    with pytest.raises(EndpointUnresolved):  # still "may not be called now" for resolve_endpoint's callers
        resolve_endpoint("https://nonexistent.invalid/hook", resolver=resolver)


def test_an_international_domain_name_is_resolved_and_sent_as_its_a_labels() -> None:
    resolver = FakeResolver({"xn--bcher-kva.example": ["93.184.216.34"]})
    endpoint = resolve_endpoint("https://Bücher.example/hooks/é?x=ü", resolver=resolver)
    assert resolver.calls == [("xn--bcher-kva.example", 443)]
    assert endpoint.host == endpoint.host_header == "xn--bcher-kva.example"
    assert endpoint.path == "/hooks/%C3%A9?x=%C3%BC"
    assert endpoint.path.isascii()


@pytest.mark.parametrize(
    "host", ["b\u00fc..example", "\u00fc" * 70 + ".example"], ids=["empty-label", "label-too-long"]
)
def test_an_unencodable_international_name_is_refused_without_resolving(host: str, resolver: FakeResolver) -> None:
    with pytest.raises(EndpointRefused, match="not a valid international domain name") as refused:
        resolve_endpoint(f"https://{host}/hook", resolver=resolver)
    assert not isinstance(refused.value, EndpointUnresolved)
    assert resolver.calls == []


@pytest.mark.parametrize(
    ("value", "phrase"),
    [
        pytest.param("acme\r\nX-Injected: 1", "line break", id="crlf"),
        pytest.param("acme\n", "line break", id="lf"),
        pytest.param("acme\x00", "line break or NUL", id="nul"),
        pytest.param("ａｃｍｅ-日本", "not Latin-1", id="non-latin-1"),
    ],
)
def test_header_values_that_cannot_go_on_the_wire_are_refused_before_connecting(
    value: str, phrase: str, resolver: FakeResolver
) -> None:
    assert phrase in (header_problem({"X-PA-Partner": value}) or "")
    result = WebhookSender(resolver=resolver).post("https://example.com/hook", {"X-PA-Partner": value}, b"{}")
    assert result.refused is True and "X-PA-Partner" in (result.error or "")


def test_latin_1_header_values_pass() -> None:
    assert header_problem({"X-PA-Partner": "concessionnaire-évry", "X-PA-Event": "deal.created"}) is None
