"""Refusing webhook endpoints that point inside: the address classifier and endpoint resolution.

A partner URL is resolved once, every address it resolves to is classified, and the dispatcher
then connects to the address that was checked (never resolving again), so DNS rebinding has no
window. Nothing here opens a connection.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

#: Cloud metadata services, refused by name even where a range check would also catch them.
METADATA_ADDRESSES: dict[IPAddress, str] = {
    ipaddress.ip_address("169.254.169.254"): "AWS/GCP/Azure instance metadata",
    ipaddress.ip_address("169.254.170.2"): "AWS ECS task metadata",
    ipaddress.ip_address("fd00:ec2::254"): "AWS IPv6 instance metadata",
    ipaddress.ip_address("100.100.100.200"): "Alibaba Cloud metadata",
    ipaddress.ip_address("192.0.0.192"): "Oracle Cloud metadata",
}

#: Ranges checked by name, in order, so the refusal says what the address is (and where that
#: class of address is defined, for the partner-visible text that must not name the address).
NAMED_V4_RANGES: tuple[tuple[_V4, str, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified/this-network", "RFC 1122"),
    (_V4("127.0.0.0/8"), "loopback", "RFC 1122"),
    (_V4("10.0.0.0/8"), "private", "RFC 1918"),
    (_V4("172.16.0.0/12"), "private", "RFC 1918"),
    (_V4("192.168.0.0/16"), "private", "RFC 1918"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT", "RFC 6598"),
    (_V4("169.254.0.0/16"), "link-local", "RFC 3927"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments", "RFC 6890"),
    (_V4("192.0.2.0/24"), "documentation", "RFC 5737"),
    (_V4("198.51.100.0/24"), "documentation", "RFC 5737"),
    (_V4("203.0.113.0/24"), "documentation", "RFC 5737"),
    (_V4("198.18.0.0/15"), "benchmarking", "RFC 2544"),
    (_V4("224.0.0.0/4"), "multicast", "RFC 5771"),
    (_V4("255.255.255.255/32"), "broadcast", "RFC 919"),
    (_V4("240.0.0.0/4"), "reserved", "RFC 1112"),
)

NAMED_V6_RANGES: tuple[tuple[_V6, str, str], ...] = (
    (_V6("::/128"), "unspecified", "RFC 4291"),
    (_V6("::1/128"), "loopback", "RFC 4291"),
    (_V6("fe80::/10"), "link-local", "RFC 4291"),
    (_V6("fec0::/10"), "site-local", "RFC 3879"),
    (_V6("fc00::/7"), "unique local (private)", "RFC 4193"),
    (_V6("ff00::/8"), "multicast", "RFC 4291"),
    (_V6("100::/64"), "discard-only", "RFC 6666"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64", "RFC 8215"),
    (_V6("::ffff:0:0:0/96"), "IPv4-translated (SIIT)", "RFC 6145"),
    (_V6("2001:2::/48"), "benchmarking", "RFC 5180"),
    (_V6("2001:db8::/32"), "documentation", "RFC 3849"),
    (_V6("2001:10::/28"), "ORCHID", "RFC 4843"),
)

NAT64_PREFIXES = (_V6("64:ff9b::/96"), _V6("64:ff9b:1::/48"))
SIXTO4 = _V6("2002::/16")
TEREDO = _V6("2001::/32")


PATH_SAFE = "/%:@!$&'()*+,;=-._~?"
"""Characters left as they are in the request target; everything else is percent-encoded."""


class EndpointRefused(ValueError):
    """The endpoint may not be called; the message says why. Refusals are final, not retried.

    The message is partner-visible (it becomes the delivery log's `error`): for a host name it
    names the host and the class of address it resolves to, never the address itself, which
    would tell a partner what our internal names resolve to. The address and the full reason
    are kept on `address` and `detail`, for the operator's log only; never persist them.
    """

    def __init__(
        self, message: str, *, host: str | None = None, address: str | None = None, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.host = host
        self.address = address
        """The resolved address that was refused (None when the refusal is not about an address)."""
        self.detail = detail
        """The operator's reason, naming the address (e.g. `10.1.2.3 is private (10.0.0.0/8)`)."""


class EndpointUnresolved(EndpointRefused):
    """The host name did not resolve now. Not a verdict on the endpoint: DNS outages and a
    partner's expired record pass, so a sender treats this as transient and retries on schedule.
    Still an `EndpointRefused` for callers that only ask "may I call it right now?"."""


def refusal_reason(address: IPAddress) -> str | None:
    """Why `address` must not be contacted, or None when it is a public unicast address.

    Names the address: for operators, and for literal-address URLs (the partner typed it). What
    a host name resolves to is described to partners by `refusal_class` instead."""
    verdict = _refusal(address)
    return None if verdict is None else verdict[0]


def refusal_class(address: IPAddress) -> str | None:
    """The class of address `address` is, without the address (nor its range): what a partner may
    be told about a refused host name, e.g. `a private address (RFC 1918)`. None when public.
    Refuses exactly what `refusal_reason` refuses (both read one classification)."""
    verdict = _refusal(address)
    return None if verdict is None else verdict[1]


def _refusal(address: IPAddress) -> tuple[str, str] | None:
    """(reason naming the address and its range, class without either), or None when public."""
    if address in METADATA_ADDRESSES:
        what = f"a cloud metadata address ({METADATA_ADDRESSES[address]})"
        return f"{address} is {what}", what
    ranges: tuple[tuple[_V4 | _V6, str, str], ...] = NAMED_V4_RANGES
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        inner = None if embedded is None else _refusal(embedded)
        if inner is not None:
            return f"{address} embeds {embedded}: {inner[0]}", f"an IPv6 address that embeds {inner[1]}"
        ranges = NAMED_V6_RANGES
    for network, name, reference in ranges:
        if address in network:
            article = "an" if name[0].lower() in "aeio" or name.startswith("unspecified") else "a"
            return f"{address} is {name} ({network})", f"{article} {name} address ({reference})"
    if not address.is_global:
        return f"{address} is not a globally routable address", "an address that is not globally routable"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address carried by IPv4-mapped, IPv4-compatible, NAT64, 6to4 and Teredo forms."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = address.packed
    if any(address in prefix for prefix in NAT64_PREFIXES):
        return ipaddress.IPv4Address(packed[-4:])
    if packed[:12] == bytes(12) and packed[12:] != bytes(4) and int(address) > 1:
        return ipaddress.IPv4Address(packed[-4:])  # deprecated IPv4-compatible ::a.b.c.d
    return None


@dataclass(frozen=True, slots=True)
class ResolvedEndpoint:
    """A partner URL with the one address that was checked and will be connected to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str
    path: str

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


Resolver = Callable[[str, int], list[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver returns for `host` (A and AAAA)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def resolve_endpoint(
    url: str, *, allow_private: bool = False, resolver: Resolver = system_resolver
) -> ResolvedEndpoint:
    """Validate and resolve a partner endpoint, refusing anything that is not public https.

    `allow_private` is the explicit local-development switch: it permits http and
    private/loopback hosts (for the local pipeline and its receiver on 127.0.0.1).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EndpointRefused(f"invalid URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_private and scheme == "http"):
        raise EndpointRefused(f"scheme {scheme or '(none)'!r} refused: only https endpoints are allowed")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused("credentials in the URL are not allowed")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointRefused("URL has no host")
    if port == 0:
        raise EndpointRefused("port 0 is not a valid endpoint port")
    port = port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    path = quote(path, safe=PATH_SAFE)  # non-ASCII or spaces: percent-encoded, as a browser sends them

    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is None and _looks_numeric(host):
        # 2130706433, 0x7f.1, 017700000001: forms some resolvers read as addresses.
        raise EndpointRefused(f"host {host!r} is a non-canonical numeric address")
    if literal is not None:
        reason = refusal_reason(literal)
        if reason is not None and (not allow_private or _is_metadata(literal)):
            # The partner typed the address: the refusal may name it.
            raise EndpointRefused(f"address {reason}", host=host, address=str(literal), detail=reason)
        addresses = [str(literal)]
    else:
        host = _ascii_host(host)
        try:
            addresses = resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise EndpointUnresolved(f"host {host!r} does not resolve: {exc}") from exc
        if not addresses:
            raise EndpointUnresolved(f"host {host!r} does not resolve")

    checked: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(str(text).split("%", 1)[0])
        except ValueError as exc:
            raise EndpointRefused(f"host {host!r} resolved to something that is not an address") from exc
        reason = refusal_reason(address)
        # Not even local development may reach a metadata service. Otherwise one internal answer
        # taints the name: a rebinding service answers both ways.
        if reason is not None and (not allow_private or _is_metadata(address)):
            # The message is partner-visible: the class of address, never the address itself.
            raise EndpointRefused(
                f"host {host!r} resolves to {refusal_class(address)}", host=host, address=str(address), detail=reason
            )
        checked.append(str(address))
    return ResolvedEndpoint(url=url, scheme=scheme, host=host, port=port, address=checked[0], path=path)


def _ascii_host(host: str) -> str:
    """The host as the wire carries it: an international name becomes its IDNA A-labels
    (`bücher.example` -> `xn--bcher-kva.example`) for DNS, SNI and the Host header."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise EndpointRefused(f"host {host!r} is not a valid international domain name: {exc}") from exc


def _is_metadata(address: IPAddress) -> bool:
    """A cloud metadata address, as it is or embedded in an IPv6 form."""
    if address in METADATA_ADDRESSES:
        return True
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        return embedded is not None and embedded in METADATA_ADDRESSES
    return False


def _looks_numeric(host: str) -> bool:
    return all(part.isdigit() or part.lower().startswith("0x") for part in host.split("."))
