"""The Microsoft Entra app registration behind entra mode: created or reused before provisioning,
finished after it.

    python infra/hooks/auth_app.py prepare   # azd preprovision hook
    python infra/hooks/auth_app.py finish    # azd postprovision hook

``prepare`` reads AZURE_AUTH_MODE (default entra). In entra mode it reuses the registration named
by AZURE_AUTH_CLIENT_ID, or finds or creates one named after the azd environment, and stores its
client id with ``azd env set AZURE_AUTH_CLIENT_ID`` so that Bicep configures the platform's sign-in
with it. In anonymous mode it prints a warning; in keys mode a note.

``finish`` completes what only exists after provisioning: the redirect URI of the app's sign-in
(``https://<app>/.auth/login/aad/callback``) and the federated identity credential that lets the
sign-in present a managed identity instead of a client secret (issuer
``https://login.microsoftonline.com/<tenant>/v2.0``, subject the identity's principal id, audience
``api://AzureADTokenExchange``). Both steps are idempotent, so re-running the hooks is safe.

Microsoft Graph is reached through the Azure CLI (``az ad ...``), signed in to the same tenant as
azd (``az login``), so the script needs nothing but the standard library. Whoever runs it needs
the right to create app registrations (allowed for members by default) or to own the one reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

MODES = ("entra", "keys", "anonymous")
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
CALLBACK_PATH = "/.auth/login/aad/callback"


class HookError(Exception):
    """A problem the person running azd must fix; the message says how."""


class NotPermitted(HookError):
    """Microsoft Graph refused the signed-in identity (a deployment pipeline's, typically)."""


# How Microsoft Graph refusals read in the Azure CLI's error output.
REFUSALS = ("Authorization_RequestDenied", "Insufficient privileges", "Forbidden")


class Tool:
    """A command-line tool (az, azd) found on PATH, run without a shell."""

    def __init__(self, name: str, install_hint: str) -> None:
        self.name = name
        self.install_hint = install_hint

    def path(self) -> str:
        found = shutil.which(self.name)
        if found is None:
            raise HookError(f"{self.name} is not on PATH: {self.install_hint}")
        return found

    def run(self, *args: str) -> str:
        completed = subprocess.run([self.path(), *args], capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            detail = (completed.stderr or completed.stdout).strip().splitlines()
            message = f"`{self.name} {' '.join(args[:3])} ...` failed: {detail[-1] if detail else 'no output'}"
            refused = any(refusal in completed.stderr for refusal in REFUSALS)
            raise (NotPermitted if refused else HookError)(message)
        return completed.stdout


AZ = Tool("az", "install the Azure CLI and run `az login` with the tenant of your subscription")
AZD = Tool("azd", "install the Azure Developer CLI")


def az_json(*args: str) -> Any:
    """The JSON answer of an ``az`` command (None when it prints nothing)."""
    output = AZ.run(*args, "--only-show-errors", "--output", "json")
    return json.loads(output) if output.strip() else None


def mode_of(env: Mapping[str, str]) -> str:
    mode = env.get("AZURE_AUTH_MODE", "").strip() or "entra"
    if mode not in MODES:
        choices = ", ".join(MODES)
        raise HookError(f"AZURE_AUTH_MODE must be one of {choices}, not {mode!r}: azd env set AZURE_AUTH_MODE entra")
    return mode


def registration_name(env: Mapping[str, str]) -> str:
    """Display name of the registration this environment creates: one per azd environment and subscription."""
    environment = env.get("AZURE_ENV_NAME", "").strip()
    if not environment:
        raise HookError("AZURE_ENV_NAME is not set: run this through azd (azd provision, azd hooks run preprovision)")
    subscription = env.get("AZURE_SUBSCRIPTION_ID", "").strip()
    suffix = f"-{subscription[:8]}" if subscription else ""
    return f"streaming-rag-chat-{environment}{suffix}"


def check_tenant(env: Mapping[str, str]) -> None:
    """The Azure CLI must be signed in to the tenant of the deployment's subscription.

    The registration is made in the CLI's tenant, and the app's sign-in trusts the subscription's
    tenant (tenant() in Bicep): if they differ, nobody could sign in.
    """
    signed_in = az_json("account", "show", "--query", "tenantId")
    expected = env.get("AZURE_TENANT_ID", "").strip()
    subscription = env.get("AZURE_SUBSCRIPTION_ID", "").strip()
    if not expected and subscription:
        try:
            expected = az_json("account", "show", "--subscription", subscription, "--query", "tenantId")
        except HookError:
            raise HookError(
                f"the Azure CLI does not see the subscription {subscription}: az login with an account of its tenant"
            ) from None
    if expected and signed_in != expected:
        raise HookError(
            f"the Azure CLI is signed in to tenant {signed_in}, the deployment uses {expected}: "
            f"az login --tenant {expected}"
        )


def find_or_create_registration(name: str) -> str:
    """The client id of the single registration with this display name, created if there is none."""
    found = az_json("ad", "app", "list", "--display-name", name, "--query", "[].appId")
    if len(found) > 1:
        raise HookError(
            f"{len(found)} app registrations are named {name}: "
            "pick one with azd env set AZURE_AUTH_CLIENT_ID <client id>"
        )
    if found:
        print(f"Reusing the app registration {name} ({found[0]}).")
        return str(found[0])
    created = az_json(
        "ad",
        "app",
        "create",
        "--display-name",
        name,
        "--sign-in-audience",
        "AzureADMyOrg",
        "--enable-id-token-issuance",
        "true",
    )
    client_id = str(created["appId"])
    print(f"Created the app registration {name} ({client_id}).")
    return client_id


def ensure_service_principal(client_id: str) -> None:
    """People of the tenant sign in through the registration's service principal (enterprise app)."""
    if not az_json("ad", "sp", "list", "--filter", f"appId eq '{client_id}'", "--query", "[].id"):
        az_json("ad", "sp", "create", "--id", client_id)


def prepare(env: Mapping[str, str]) -> None:
    mode = mode_of(env)
    if mode == "anonymous":
        print(
            "WARNING: AZURE_AUTH_MODE=anonymous: anyone on the internet can call the chat API and read what it\n"
            "         retrieves from your documents, and spend your Azure OpenAI quota. Use it for demos with\n"
            "         sample data only; azd env set AZURE_AUTH_MODE entra (the default) closes it.",
            file=sys.stderr,
        )
        return
    if mode == "keys":
        print("AZURE_AUTH_MODE=keys: the chat routes need a function key (README, Security).")
        return
    client_id = env.get("AZURE_AUTH_CLIENT_ID", "").strip()
    if client_id:
        print(f"Using the app registration {client_id} (AZURE_AUTH_CLIENT_ID).")
        return
    check_tenant(env)
    client_id = find_or_create_registration(registration_name(env))
    ensure_service_principal(client_id)
    AZD.run("env", "set", "AZURE_AUTH_CLIENT_ID", client_id)


def required(env: Mapping[str, str], names: Sequence[str]) -> list[str]:
    values = [env.get(name, "").strip() for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        raise HookError(f"{', '.join(missing)} not set: run azd provision first")
    return values


def ensure_redirect_uri(client_id: str, app_url: str) -> None:
    callback = app_url.rstrip("/") + CALLBACK_PATH
    current = az_json("ad", "app", "show", "--id", client_id, "--query", "web.redirectUris") or []
    if callback in current:
        return
    az_json("ad", "app", "update", "--id", client_id, "--web-redirect-uris", *current, callback)
    print(f"Added the redirect URI {callback}.")


def ensure_federated_credential(client_id: str, tenant_id: str, principal_id: str) -> None:
    issuer = f"https://login.microsoftonline.com/{tenant_id}/v2.0"
    existing = az_json("ad", "app", "federated-credential", "list", "--id", client_id) or []
    if any(item.get("issuer") == issuer and item.get("subject") == principal_id for item in existing):
        return
    credential = {
        "name": f"app-service-sign-in-{principal_id}",
        "issuer": issuer,
        "subject": principal_id,
        "audiences": [TOKEN_EXCHANGE_AUDIENCE],
        "description": "The function app's sign-in presents this managed identity instead of a client secret.",
    }
    az_json("ad", "app", "federated-credential", "create", "--id", client_id, "--parameters", json.dumps(credential))
    print(f"Trusted the managed identity {principal_id} as the registration's credential (no client secret).")


def finish(env: Mapping[str, str]) -> None:
    mode = mode_of(env)
    if mode != "entra":
        return
    client_id, app_url, tenant_id, principal_id = required(
        env, ["AZURE_AUTH_CLIENT_ID", "AZURE_FUNCTION_APP_URL", "AZURE_TENANT_ID", "AZURE_AUTH_IDENTITY_PRINCIPAL_ID"]
    )
    check_tenant(env)
    try:
        ensure_redirect_uri(client_id, app_url)
        ensure_federated_credential(client_id, tenant_id, principal_id)
    except NotPermitted as refusal:
        # A deployment pipeline's identity may not read app registrations. Its app URL and sign-in
        # identity are the ones `azd up` registered from a laptop, so usually nothing is missing.
        print(
            f"WARNING: {refusal}\n"
            f"         The sign-in needs, on the app registration {client_id}, the redirect URI\n"
            f"         {app_url.rstrip('/')}{CALLBACK_PATH} and a federated credential for {principal_id}.\n"
            "         If `azd up` set them up before, nothing is missing; otherwise run\n"
            "         `azd hooks run postprovision` signed in (az login) as an owner of the registration.",
            file=sys.stderr,
        )
        return
    page = env.get("AZURE_FUNCTION_APP_PAGE_URL", "").strip() or app_url
    print(f"Sign in and chat at {page}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("step", choices=("prepare", "finish"), help="prepare: preprovision; finish: postprovision")
    step = parser.parse_args(argv).step
    try:
        (prepare if step == "prepare" else finish)(os.environ)
    except HookError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
