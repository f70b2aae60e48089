"""The Azure credential of this process: the function's managed identity, or the signed-in user on a laptop."""

from __future__ import annotations

from azure.core.credentials import TokenCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.identity import DefaultAzureCredential, ManagedIdentityCredential, aio

from chat.settings import IdentitySettings


def azure_credential(identity: IdentitySettings) -> AsyncTokenCredential:
    """ManagedIdentityCredential for the function's user-assigned identity when AZURE_CLIENT_ID is set.

    Otherwise DefaultAzureCredential, which on a laptop finds `azd auth login` or `az login`.
    Shared by the Azure OpenAI and Azure AI Search clients.
    """
    if identity.azure_client_id:
        return aio.ManagedIdentityCredential(client_id=identity.azure_client_id)
    return aio.DefaultAzureCredential()


def blocking_azure_credential(identity: IdentitySettings) -> TokenCredential:
    """The same choice as :func:`azure_credential`, for SDKs that sign in synchronously (Azure Monitor's exporter)."""
    if identity.azure_client_id:
        return ManagedIdentityCredential(client_id=identity.azure_client_id)
    return DefaultAzureCredential()
