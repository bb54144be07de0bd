"""Which webhook URLs may be called: SSRF rules, checked at registration and at send time.

An endpoint URL must be https on port 443 and its host must resolve only to public
addresses: never private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback,
link-local (169.254.169.254, the instance metadata service), shared (100.64/10),
multicast, reserved or unspecified ones. DNS can change after registration, so
the sender resolves again and connects to the address it checked (no second
lookup an attacker could answer differently). CHAT_WEBHOOK_ALLOW_PRIVATE=true
(tests, local mode) allows http, any port and any address.
"""

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2048


class UrlRefused(ValueError):
    """The URL may not be used as a webhook endpoint; the message says why."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written (the TLS server name and the Host header)
    port: int
    path: str  # path and query
    address: str  # the checked IP address to connect to


def allow_private() -> bool:
    return bool(getattr(settings, "CHAT_WEBHOOK_ALLOW_PRIVATE", False))


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def parse(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an acceptable URL, or UrlRefused. No DNS."""
    if not isinstance(url, str) or not url:
        raise UrlRefused("must be an https URL")
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 32 or ord(char) == 127 for char in url):
        raise UrlRefused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused(f"is not a valid URL: {exc}") from exc
    schemes = ("https", "http") if allow_private() else ("https",)
    if parts.scheme.lower() not in schemes:
        raise UrlRefused("must be an https URL")
    if not parts.hostname:
        raise UrlRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("must not contain credentials (user:password@)")
    if parts.fragment:
        raise UrlRefused("must not contain a fragment (#...)")
    scheme = parts.scheme.lower()
    if not allow_private() and port not in (None, 443):
        # The tasks' security group lets HTTPS out on 443 only (security-groups.yaml).
        raise UrlRefused("must use port 443 (the default https port)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), path


def resolve(url: str) -> Target:
    """The URL with the address to connect to, or UrlRefused (also when the host does
    not resolve, or resolves to any address that is not public)."""
    scheme, host, port, path = parse(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UrlRefused(f"host {host} does not resolve") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise UrlRefused(f"host {host} does not resolve")
    if not allow_private():
        refused = [address for address in addresses if not is_public(address)]
        if refused:
            raise UrlRefused(
                f"host {host} resolves to a non-public address ({refused[0]}); "
                "webhooks are only sent to public addresses"
            )
    return Target(scheme=scheme, host=host, port=port, path=path, address=addresses[0])


def check(url: str) -> str:
    """The URL if it may be registered, else UrlRefused."""
    resolve(url)
    return url
