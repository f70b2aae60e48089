"""Who is calling: the signed-in user the platform vouches for, else the client address it reports.

Framework-free on purpose: the HTTP layer hands in the header values and the socket peer. The
principal headers count only when the platform's built-in authentication is on
(``WEBSITE_AUTH_ENABLED``): it then strips any such header a caller sends and sets its own, while
without it they are whatever the caller typed, and are ignored.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from chat.errors import ChatError
from chat.settings import SecuritySettings

PRINCIPAL_ID_HEADER = "x-ms-client-principal-id"
PRINCIPAL_NAME_HEADER = "x-ms-client-principal-name"
FORWARDED_FOR_HEADER = "x-forwarded-for"


class Unauthenticated(ChatError):
    code = "unauthenticated"
    status = 401


@dataclass(frozen=True, slots=True)
class Caller:
    principal_id: str | None
    principal_name: str | None
    address: str | None

    @property
    def key(self) -> str:
        """What per-client limits count by: the user when signed in, else the address."""
        if self.principal_id:
            return f"user:{self.principal_id}"
        return f"address:{self.address or 'unknown'}"


def identify(
    *,
    principal_id: str | None,
    principal_name: str | None,
    forwarded_for: Sequence[str],
    peer: str | None,
    security: SecuritySettings,
) -> Caller:
    """The caller of one request; ``forwarded_for`` holds every X-Forwarded-For header value in order."""
    if not security.website_auth_enabled:
        principal_id = principal_name = None
    return Caller(principal_id or None, principal_name or None, client_address(forwarded_for, peer))


def require_principal(caller: Caller, security: SecuritySettings) -> None:
    """In entra mode, refuse a call the platform let through without a user (its authentication misconfigured)."""
    if security.chat_auth_mode == "entra" and not caller.principal_id:
        raise Unauthenticated("Sign in to use this API.")


def client_address(forwarded_for: Sequence[str], peer: str | None) -> str | None:
    """The address the platform saw: the right-most X-Forwarded-For hop, else the socket peer.

    Azure's front end appends the address it received the connection from to X-Forwarded-For;
    entries to its left came with the request and are whatever the client chose to send, so only
    the right-most one can be trusted. Azure writes it with the client's port (``203.0.113.5:51234``,
    ``[2001:db8::1]:51234``): the port is dropped, or each new connection would count as a new client.
    """
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    return _host(hops[-1]) if hops else peer


def _host(hop: str) -> str:
    if hop.startswith("["):  # [IPv6]:port
        hop = hop[1:].split("]", 1)[0]
    elif hop.count(":") == 1:  # IPv4:port or name:port; a bare IPv6 address has several colons
        hop = hop.split(":", 1)[0]
    return _normalized(hop)


@functools.lru_cache(maxsize=4096)
def _normalized(host: str) -> str:
    """One spelling per address (IPv6 has many), remembered: parsing costs more than the rest of a
    refusal's bookkeeping, and a flooding client sends the same address thousands of times a second."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host
