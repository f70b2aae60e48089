"""Checks of a configuration: settings, tokens, model deployments and the search index.

Each probe is the smallest real call that proves a piece works with the configured credential:
a token per scope, a one-token completion and one embedding (a model list for local servers),
the index definition and its document count. Failures are explained in terms of what to change:
a 403 names the role and the identity it must be assigned to.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import openai
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.search.documents.indexes.aio import SearchIndexClient

from chat.doctor.report import Check, fail, ok, skip, warn
from chat.errors import ChatError
from chat.providers.azure_search import index_schema, search_client
from chat.providers.identity import azure_credential
from chat.providers.llm import COGNITIVE_SERVICES_SCOPE, OpenAIClients, build_openai_clients
from chat.settings import ConfigurationError, Settings, get_settings

T = TypeVar("T")
SEARCH_SCOPE = "https://search.azure.com/.default"
PROBE_TIMEOUT_SECONDS = 15.0
INGEST_AZURE = "python -m chat.ingest data/docs --target azure (azd provision runs it)"
ROLE_HELP = (
    "azd provision assigns it to the deploying user and the app; otherwise "
    "az role assignment create --assignee <object id> --role '{role}' --scope <resource id>. "
    "A new assignment can take a few minutes to apply."
)


@dataclass(frozen=True)
class Service:
    """What a probe talks to, as a person would name it, and the role that grants access."""

    name: str
    endpoint: str
    role: str = ""


def token_identity(token: str) -> str:
    """Who a token was issued to, read from its claims (unverified: used only to name the identity)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return "the signed-in identity"
    name = claims.get("upn") or claims.get("unique_name") or claims.get("preferred_username")
    if name is None and claims.get("appid"):
        name = f"the application or managed identity with client id {claims['appid']}"
    object_id = f" (object id {claims['oid']})" if claims.get("oid") else ""
    return f"{name or 'the signed-in identity'}{object_id}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:200]


def explain_status(status: int, service: Service, identity: str) -> tuple[str, str]:
    """The detail and the fix for an HTTP status a service answered a probe with."""
    if status == 403 and service.role:
        return f"403 from {service.name}: assign {service.role} to {identity}", ROLE_HELP.format(role=service.role)
    if status == 401:
        return f"401 from {service.name}: the credential was refused", (
            "sign in to the service's tenant (azd auth login --tenant-id <tenant>); key access is disabled by design"
        )
    return f"{service.name} at {service.endpoint} answered HTTP {status}", "see the service's status and its log"


def explain_openai(error: Exception, service: Service, what: str, identity: str) -> tuple[str, str]:
    """The detail and fix for an exception of the OpenAI SDK (or any other, named by its type)."""
    if isinstance(error, openai.NotFoundError):
        return f"404 from {service.name}: no {what} at {service.endpoint}", (
            f"check the {what} name against the deployments (or models) the service has"
        )
    if isinstance(error, openai.APIStatusError):
        return explain_status(error.status_code, service, identity)
    if isinstance(error, openai.APIConnectionError | TimeoutError):
        return f"cannot reach {service.endpoint} ({service.name}): refused, unknown or silent", (
            "check the endpoint setting, DNS and your network (a private endpoint is reachable only from its network)"
        )
    return f"{service.name} failed: {type(error).__name__}: {_first_line(error)}", "see the message above"


async def _bounded(call: Callable[[], Awaitable[T]]) -> T:
    async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
        return await call()


async def token_check(credential: AsyncTokenCredential, service: str, scope: str) -> tuple[Check, str | None]:
    """A token for ``scope``, and whom it names (None when there is no token)."""
    name = f"token for {service}"
    try:
        token = await _bounded(lambda: credential.get_token(scope))
    except Exception as error:  # every credential failure is a finding, whatever its type
        fix = "sign in with azd auth login (or az login); with AZURE_CLIENT_ID set, run where that identity exists"
        return fail(name, f"{type(credential).__name__} got no token for {scope}: {_first_line(error)}", fix), None
    identity = token_identity(token.token)
    return ok(name, f"{scope} for {identity}"), identity


def _model_services(settings: Settings) -> tuple[Service, Service]:
    host = settings.mode.openai_host
    if host == "azure":
        endpoint = settings.azure_openai.azure_openai_endpoint
        service = Service("Azure OpenAI", endpoint, "Cognitive Services OpenAI User")
        return service, service
    if host == "openai":
        service = Service("OpenAI", "https://api.openai.com/v1")
        return service, service
    local = settings.local_openai
    return (
        Service("the local model server", local.local_openai_endpoint),
        Service("the local embedding server", local.local_embedding_endpoint),
    )


async def model_checks(settings: Settings, clients: OpenAIClients, identity: str) -> tuple[list[Check], int | None]:
    """Chat and embeddings answer; the embedding dimensions when a real embedding was made."""
    chat_service, embedding_service = _model_services(settings)
    chat = clients.chat.client.with_options(max_retries=0, timeout=PROBE_TIMEOUT_SECONDS)
    embedder = clients.embedder.client.with_options(max_retries=0, timeout=PROBE_TIMEOUT_SECONDS)
    chat_model, embedding_model = clients.chat.model, clients.embedder.model
    checks: list[Check] = []
    dimensions: int | None = None
    try:
        if settings.mode.openai_host == "local":
            page = await _bounded(chat.models.list)
            checks.append(ok("chat model", f"{chat_service.endpoint} lists {', '.join(m.id for m in page.data)}"))
        else:
            await _bounded(
                lambda: chat.chat.completions.create(
                    model=chat_model, messages=[{"role": "user", "content": "Say OK."}], max_completion_tokens=1
                )
            )
            checks.append(ok("chat model", f"{chat_model} answered a one-token call at {chat_service.endpoint}"))
    except Exception as error:  # a probe reports every failure instead of raising it
        checks.append(fail("chat model", *explain_openai(error, chat_service, f"deployment {chat_model}", identity)))
    try:
        if settings.mode.openai_host == "local":
            page = await _bounded(embedder.models.list)
            listed = ", ".join(m.id for m in page.data)
            checks.append(ok("embedding model", f"{embedding_service.endpoint} lists {listed}"))
        else:
            response = await _bounded(lambda: embedder.embeddings.create(model=embedding_model, input=["doctor"]))
            dimensions = len(response.data[0].embedding)
            detail = f"{embedding_model} made a {dimensions}-dimension embedding at {embedding_service.endpoint}"
            checks.append(ok("embedding model", detail))
    except Exception as error:  # a probe reports every failure instead of raising it
        what = f"deployment {embedding_model}"
        checks.append(fail("embedding model", *explain_openai(error, embedding_service, what, identity)))
    return checks, dimensions


async def azure_search_checks(
    settings: Settings, credential: AsyncTokenCredential, identity: str, dimensions: int | None
) -> list[Check]:
    """The index exists with the fields ingest creates (and the embedding's dimensions), and its size."""
    endpoint, name = settings.azure_search.azure_search_endpoint, settings.azure_search.azure_search_index
    schema_reader = Service("Azure AI Search", endpoint, "Search Service Contributor (or Reader)")
    data_reader = Service("Azure AI Search", endpoint, "Search Index Data Reader")
    unreachable = (
        f"cannot reach {endpoint} (Azure AI Search): refused, unknown or silent",
        "check AZURE_SEARCH_ENDPOINT, DNS and your network",
    )
    async with SearchIndexClient(endpoint=endpoint, credential=credential) as indexes:
        try:
            index = await _bounded(lambda: indexes.get_index(name))
        except ResourceNotFoundError:
            return [fail("search index", f"{endpoint} has no index {name!r}", f"create and fill it: {INGEST_AZURE}")]
        except HttpResponseError as error:
            return [fail("search index", *explain_status(error.status_code or 0, schema_reader, identity))]
        except (AzureError, TimeoutError):
            return [fail("search index", *unreachable)]
    present = {field.name: field for field in index.fields}
    expected = index_schema(name, dimensions or 1).fields
    missing = [field.name for field in expected if field.name not in present]
    if missing:
        detail = f"index {name!r} lacks the fields {', '.join(missing)}"
        return [fail("search index", detail, f"delete the index and run {INGEST_AZURE}")]
    indexed_dimensions = present["embedding"].vector_search_dimensions
    if dimensions is not None and indexed_dimensions != dimensions:
        detail = f"index {name!r} holds {indexed_dimensions}-dimension vectors, the embedding model makes {dimensions}"
        return [fail("search index", detail, f"delete the index and run {INGEST_AZURE}")]
    checks = [ok("search index", f"{name!r} has the expected fields ({len(expected)})")]
    async with search_client(endpoint, name, credential) as client:
        try:
            count = await _bounded(client.get_document_count)
        except HttpResponseError as error:
            return [*checks, fail("search documents", *explain_status(error.status_code or 0, data_reader, identity))]
        except (AzureError, TimeoutError):
            return [*checks, fail("search documents", *unreachable)]
    if count == 0:
        return [*checks, fail("search documents", f"index {name!r} is empty", f"fill it: {INGEST_AZURE}")]
    return [*checks, ok("search documents", f"{count} chunks in {name!r}")]


async def local_index_check(settings: Settings, clients: OpenAIClients) -> Check:
    """The index file exists, was built with the configured embedding model, and holds chunks."""
    try:
        from chat.providers.local_index import LocalIndexRetriever  # numpy: local requirements only
    except ImportError:
        return fail("local index", "numpy is not installed", "pip install -r requirements-local.txt (make install)")
    path = settings.local_search.index_path
    retriever = LocalIndexRetriever(path, clients.embedder)
    try:
        size = await retriever.check()
    except ChatError as error:
        # The app's message leaves out the path (error bodies never show the server's files); the doctor names it.
        detail = f"{path}: {error.message} (LOCAL_EMBEDDING_MODEL={clients.embedder.model})"
        return fail("local index", detail, "python -m chat.ingest data/docs --prune (make run does it)")
    finally:
        await retriever.aclose()
    return ok("local index", f"{path}: {size}, embedded with {clients.embedder.model}")


def setting_warnings(settings: Settings) -> list[Check]:
    """Optional settings whose absence changes what the app does."""
    if settings.mode.uses_azure and not settings.telemetry.applicationinsights_connection_string:
        detail = "APPLICATIONINSIGHTS_CONNECTION_STRING is not set: this configuration sends no traces"
        fix = "the deployed app gets it from Bicep; set it locally to trace a local run in Application Insights"
        return [warn("telemetry", detail, fix)]
    return []


async def check_configuration(origin: str) -> list[Check]:
    """Every check of the configuration in this process's environment (``origin`` says where it came from)."""
    try:
        settings = get_settings()
    except ConfigurationError as error:
        fix = "set the named variables (azd env set NAME VALUE, local.settings.json, or the shell)"
        return [fail("settings", f"{error} ({origin})", fix)]
    mode = settings.mode
    checks = [ok("settings", f"OPENAI_HOST={mode.openai_host}, SEARCH_HOST={mode.search_host} ({origin})")]
    checks += setting_warnings(settings)
    credential = azure_credential(settings.identity) if mode.uses_azure else None
    identity = "this app"
    try:
        if credential is not None:
            scopes = [("Cognitive Services", COGNITIVE_SERVICES_SCOPE)] if mode.openai_host == "azure" else []
            scopes += [("Search", SEARCH_SCOPE)] if mode.search_host == "azure" else []
            for service, scope in scopes:
                check, named = await token_check(credential, service, scope)
                checks.append(check)
                identity = named or identity
            if any(check.status == "fail" for check in checks):
                return [*checks, skip("services", "not probed without a token")]
        clients = build_openai_clients(settings, credential)
        try:
            found, dimensions = await model_checks(settings, clients, identity)
            checks += found
            if mode.search_host == "azure" and credential is not None:
                checks += await azure_search_checks(settings, credential, identity, dimensions)
            else:
                checks.append(await local_index_check(settings, clients))
        finally:
            await clients.aclose()
    finally:
        if credential is not None:
            await credential.close()
    return checks
