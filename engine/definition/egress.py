"""Where an ``http`` step may connect: the egress policy, asked about resolved addresses.

A workflow's URLs are templates, and templates read the event, so whoever can start a
run can name the address a worker connects to. The policy is asked about each address
a host name resolves to, just before connecting (the ``http`` step resolves, asks, and
connects to the address it asked about: :mod:`engine.steps.http`). Pure: no sockets.

Refused by default, whatever the host name that led there:

    0.0.0.0/8        "this network": 0.0.0.0 reaches the worker's own host on Linux
    127.0.0.0/8      loopback (the worker's own services: Redis, the API, sidecars)
    ::/128, ::1/128  the IPv6 unspecified and loopback addresses
    169.254.0.0/16   IPv4 link-local, where clouds serve instance metadata
    fe80::/10        IPv6 link-local

and the cloud metadata addresses (:data:`METADATA`), some of which sit outside those
networks. An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) is judged as the IPv4
address it maps to, since that is where the connection goes.

``SIGNOFF_HTTP_ALLOW`` and ``SIGNOFF_HTTP_DENY`` list host names and addresses or CIDRs.
In order, the first rule that matches decides:

1. the host name, or the address, is in DENY: refused;
2. the host name is in ALLOW: allowed (the connection still goes to the address it
   resolved to, so the name cannot be re-pointed between check and connect);
3. a metadata address is allowed only when ALLOW names that very address (``/32`` or
   ``/128``): ``169.254.0.0/16`` re-allows link-local services, not the credentials
   endpoint in their midst;
4. the address is in an ALLOW network: allowed;
5. the address is in a network refused by default: refused;
6. anything else (public and private networks alike) is allowed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

from engine.errors import SettingsInvalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Refused by default, each with what it is (said in the step's error).
BLOCKED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(cidr), what) for cidr, what in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback (127.0.0.0/8)"),
        ("::/128", "the unspecified address (::)"),
        ("::1/128", "loopback (::1)"),
        ("169.254.0.0/16", "link-local (169.254.0.0/16)"),
        ("fe80::/10", "link-local (fe80::/10)"),
    ))

# Cloud metadata services: they hand out the instance's credentials to anyone who asks.
METADATA: dict[IPAddress, str] = {
    ipaddress.ip_address(address): who for address, who in (
        ("169.254.169.254", "the instance metadata of AWS, Google Cloud, Azure, Oracle, "
                            "OpenStack, DigitalOcean and others"),
        ("169.254.170.2", "AWS ECS task metadata and credentials"),
        ("169.254.170.23", "AWS EKS Pod Identity credentials"),
        ("fd00:ec2::254", "AWS instance metadata over IPv6"),
        ("fd00:ec2::23", "AWS EKS Pod Identity credentials over IPv6"),
        ("100.100.100.200", "Alibaba Cloud instance metadata"),
        ("192.0.0.192", "Oracle Cloud instance metadata (legacy address)"),
    )}

# Request headers that carry credentials: a connection's file must give their values as
# ${ENV_VAR} references, and an http step drops them when a redirect leaves their origin.
_CREDENTIAL_HEADER = re.compile(
    r"^(authorization|proxy-authorization|cookie)$|key|token|secret|auth|passw|session|signature",
    re.IGNORECASE)

_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


@dataclass(frozen=True)
class EgressRules:
    """One list (ALLOW or DENY): host names and networks."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str], setting: str) -> EgressRules:
        """``entries`` as written in ``setting``; SettingsInvalid names the first bad one."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = _host_key(entry)
            if not _HOST_NAME.match(name):
                raise SettingsInvalid(f"{setting}: {entry!r} is neither a host name nor an "
                                         "address or CIDR (e.g. iam.corp.example, 10.0.0.0/8)")
            hosts.add(name)
        return cls(frozenset(hosts), tuple(networks))

    def network_of(self, address: IPAddress) -> IPNetwork | None:
        return next((n for n in self.networks if n.version == address.version and address in n),
                    None)

    def names_exactly(self, address: IPAddress) -> bool:
        return any(n.num_addresses == 1 and n.network_address == address for n in self.networks)


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses an ``http`` step may connect to; the default refuses :data:`BLOCKED`
    and :data:`METADATA`."""

    allow: EgressRules = EgressRules()
    deny: EgressRules = EgressRules()

    @classmethod
    def from_entries(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> EgressPolicy:
        """The policy of SIGNOFF_HTTP_ALLOW and SIGNOFF_HTTP_DENY's entries."""
        return cls(EgressRules.parse(allow, "SIGNOFF_HTTP_ALLOW"),
                   EgressRules.parse(deny, "SIGNOFF_HTTP_DENY"))

    def refusal(self, host: str, address: str) -> str | None:
        """Why ``address``, which ``host`` resolved to, may not be reached; None if it may."""
        ip = _effective_address(address)
        name = _host_key(host)
        if name in self.deny.hosts:
            return f"the host {name} is listed in SIGNOFF_HTTP_DENY"
        denied = self.deny.network_of(ip)
        if denied is not None:
            return f"{ip} is in {denied}, listed in SIGNOFF_HTTP_DENY"
        if name in self.allow.hosts:
            return None
        if ip in METADATA:
            if self.allow.names_exactly(ip):
                return None
            return (f"{ip} is a cloud metadata address, {METADATA[ip]}; only "
                    "SIGNOFF_HTTP_ALLOW naming this very address re-allows it")
        if self.allow.network_of(ip) is not None:
            return None
        for network, what in BLOCKED:
            if network.version == ip.version and ip in network:
                return f"{ip} is {what}; SIGNOFF_HTTP_ALLOW re-allows it"
        return None


DEFAULT_POLICY = EgressPolicy()  # the built-in refusals alone


def is_credential_header(name: str) -> bool:
    """Whether a request header named ``name`` carries a credential (Authorization,
    Cookie, X-Api-Key, X-Auth-Token, ...)."""
    return bool(_CREDENTIAL_HEADER.search(name.strip()))


def _host_key(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _effective_address(address: str) -> IPAddress:
    """The address a connection to ``address`` reaches: IPv4 for an IPv4-mapped IPv6 one."""
    ip = ipaddress.ip_address(address.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.scope_id is not None:  # fe80::1%eth0: the zone does not change what it is
            return ipaddress.IPv6Address(address.strip("[]").split("%", 1)[0])
    return ip


# -- a base URL and the paths under it ----------------------------------------------------------
# An http step with a connection joins its `path` to the connection's base URL, and sends the
# connection's headers (its credentials) only there: a path may not leave the base.

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")


def path_refusal(path: str) -> str | None:
    """Why ``path`` may not be joined to a base URL (it would leave it); None if it may."""
    if _SCHEME.match(path.strip()):
        return "is an absolute URL"
    decoded = unquote(path.split("?", 1)[0].split("#", 1)[0])
    if path.lstrip().startswith(("//", "\\", "/\\")) or decoded.startswith("//"):
        return "is scheme-relative (//host), which names another host"
    if "\\" in decoded:
        return "has a backslash, which some servers read as /"
    if _DOT_SEGMENT.search(decoded):
        return "has a . or .. segment, which climbs out of the base path"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return "has a control character"
    return None


def join_base(base: str, path: str) -> str:
    """``path`` under ``base``, as Kibana's HTTP connector joins them (one ``/`` between);
    ValueError if the path may not be joined (:func:`path_refusal`)."""
    reason = path_refusal(path)
    if reason is not None:
        raise ValueError(f"path {path!r} {reason}")
    joined = base.rstrip("/") + ("/" + path.lstrip("/") if path else "")
    if not within_base(joined, base):  # what the checks above mean to guarantee
        raise ValueError(f"path {path!r} leaves the base URL {base}")
    return joined


def within_base(url: str, base: str) -> bool:
    """Whether ``url`` is ``base`` or under it: same scheme, host and port, and a path
    that continues the base's path at a ``/``."""
    target, root = urlsplit(url.strip()), urlsplit(base.strip())
    if target.username is not None or target.password is not None:
        return False
    if (target.scheme.lower(), target.hostname, _port(target)) != \
            (root.scheme.lower(), root.hostname, _port(root)) or not target.hostname:
        return False
    prefix = root.path.rstrip("/")
    return not prefix or target.path == prefix or target.path.startswith(prefix + "/")


def _port(parts: SplitResult) -> int | None:
    try:
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return None
