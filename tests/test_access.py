"""chat.http.access: which caller a request is, and which headers may say so."""

from __future__ import annotations

import pytest

from chat.http.access import Unauthenticated, client_address, identify, require_principal
from chat.settings import SecuritySettings


@pytest.mark.parametrize(
    ("forwarded_for", "peer", "address"),
    [
        ([], "10.0.0.9", "10.0.0.9"),
        ([], None, None),
        (["203.0.113.5"], "10.0.0.9", "203.0.113.5"),
        # Azure appends what it saw, with the client's port: the port is not part of the client.
        (["203.0.113.5:51234"], "10.0.0.9", "203.0.113.5"),
        # Entries on the left are the client's own words: only the right-most counts.
        (["1.1.1.1, 8.8.8.8, 203.0.113.5:443"], "10.0.0.9", "203.0.113.5"),
        (["1.1.1.1", "203.0.113.5"], "10.0.0.9", "203.0.113.5"),  # two header lines: the last one's last hop
        (["[2001:db8::1]:51234"], None, "2001:db8::1"),
        (["2001:DB8:0::1"], None, "2001:db8::1"),  # one spelling per address
        (["1.1.1.1, "], None, "1.1.1.1"),
        ([" , "], "10.0.0.9", "10.0.0.9"),
    ],
)
def test_client_address(forwarded_for: list[str], peer: str | None, address: str | None) -> None:
    assert client_address(forwarded_for, peer) == address


def principal_of(security: SecuritySettings, principal_id: str | None) -> str | None:
    caller = identify(principal_id=principal_id, principal_name="ada", forwarded_for=[], peer=None, security=security)
    return caller.principal_id


def test_principal_headers_count_only_when_the_platform_sets_them() -> None:
    platform_off = SecuritySettings(chat_auth_mode="entra", website_auth_enabled=False)
    platform_on = SecuritySettings(chat_auth_mode="entra", website_auth_enabled=True)
    assert principal_of(platform_off, "forged-id") is None
    assert principal_of(platform_on, "user-1") == "user-1"
    assert principal_of(platform_on, "") is None


def test_the_key_is_the_user_else_the_address() -> None:
    on = SecuritySettings(website_auth_enabled=True)
    off = SecuritySettings(website_auth_enabled=False)
    signed_in = identify(principal_id="u1", principal_name="ada", forwarded_for=["203.0.113.5"], peer=None, security=on)
    forged = identify(principal_id="u1", principal_name="ada", forwarded_for=["203.0.113.5"], peer=None, security=off)
    assert signed_in.key == "user:u1"
    assert signed_in.principal_name == "ada"
    assert forged.key == "address:203.0.113.5"
    assert forged.principal_name is None
    assert identify(principal_id=None, principal_name=None, forwarded_for=[], peer=None, security=off).key == (
        "address:unknown"
    )


@pytest.mark.parametrize(
    ("mode", "platform", "principal_id", "refused"),
    [
        ("entra", True, "u1", False),
        ("entra", True, None, True),  # the platform let a request through without a user: misconfigured
        ("entra", False, "forged", True),  # a caller's own header is no sign-in
        ("keys", False, None, False),
        ("anonymous", False, None, False),
    ],
)
def test_entra_mode_needs_a_principal(mode: str, platform: bool, principal_id: str | None, refused: bool) -> None:
    security = SecuritySettings(chat_auth_mode=mode, website_auth_enabled=platform)
    caller = identify(principal_id=principal_id, principal_name=None, forwarded_for=[], peer="::1", security=security)
    if refused:
        with pytest.raises(Unauthenticated) as raised:
            require_principal(caller, security)
        assert raised.value.status == 401
    else:
        require_principal(caller, security)
