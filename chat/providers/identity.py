"""The async Azure credential shared by the Azure OpenAI and Azure AI Search clients."""

from __future__ import annotations

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from chat.settings import IdentitySettings


def azure_credential(identity: IdentitySettings) -> AsyncTokenCredential:
    """ManagedIdentityCredential for the function's user-assigned identity when AZURE_CLIENT_ID is set.

    Otherwise DefaultAzureCredential, which on a laptop finds `azd auth login` or `az login`.
    """
    if identity.azure_client_id:
        return ManagedIdentityCredential(client_id=identity.azure_client_id)
    return DefaultAzureCredential()
