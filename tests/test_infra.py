"""Offline checks of the infrastructure code: Bicep, azd project, hooks and .funcignore.

Nothing here reaches Azure or needs azd, the Bicep CLI or Functions Core Tools. The Bicep files
are read with pycep (the parser checkov uses), and checkov itself runs from its own virtual
environment (``.venv-checkov`` or ``$CHECKOV_BIN``) because its pinned dependencies clash with
the app's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from chat import settings
from tests.conftest import require, require_module

pycep = require_module("pycep", "pycep-parser is not installed (pip install -r requirements-infra.txt)")

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"
FUNCTION_APP_BICEP = INFRA / "app" / "function-app.bicep"
HOOK_SH = INFRA / "hooks" / "ingest.sh"
HOOK_PS1 = INFRA / "hooks" / "ingest.ps1"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Built-in Azure role definitions (Azure built-in roles reference), id -> role name.
BUILT_IN_ROLES = {
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd": "Cognitive Services OpenAI User",
    "1407120a-92aa-4202-b7e9-c0e197c71c8f": "Search Index Data Reader",
    "8ebe5a00-799e-43f5-93ac-243d3dce84a7": "Search Index Data Contributor",
    "7ca78c08-252a-4471-8644-bb5ff32d4ba0": "Search Service Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
}
FUNCTION_IDENTITY_ROLES = {
    "Cognitive Services OpenAI User",
    "Search Index Data Reader",
    "Storage Blob Data Owner",
    "Storage Queue Data Contributor",
    "Storage Table Data Contributor",
    "Monitoring Metrics Publisher",
}
DEPLOYING_USER_ROLES = {
    "Cognitive Services OpenAI User",
    "Search Index Data Contributor",
    "Search Service Contributor",
}

# App settings the Functions platform reads, as opposed to the code's own (chat/settings.py).
PLATFORM_PREFIXES = ("AzureWebJobs", "FUNCTIONS_", "WEBSITE_", "PYTHON_")
PLATFORM_NAMES = {"APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
REQUIRED_PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__credential": "managedidentity",
    "AzureWebJobsStorage__clientId": None,
    "AzureWebJobsStorage__blobServiceUri": None,
    "AzureWebJobsStorage__queueServiceUri": None,
    "AzureWebJobsStorage__tableServiceUri": None,
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=${identityClientId};Authorization=AAD",
    "PYTHON_ENABLE_INIT_INDEXING": "1",
    "AzureWebJobsDisableHomepage": "true",
}
# Not allowed on Flex Consumption (runtime and deployment live in functionAppConfig), or keyed.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "AzureWebJobsStorage",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
}

# Outputs that are not code variables but are for people and scripts.
NON_CODE_OUTPUTS = {
    "AZURE_LOCATION",
    "AZURE_TENANT_ID",
    "AZURE_RESOURCE_GROUP",
    "AZURE_FUNCTION_APP_NAME",
    "AZURE_FUNCTION_APP_URL",
}
# Code variables that must not be outputs: azd writes outputs into the environment of the hooks,
# where AZURE_CLIENT_ID would select a managed identity that does not exist on a laptop, and a
# connection string would send a local run's telemetry to Azure.
NOT_OUTPUTS = {"AZURE_CLIENT_ID", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
# Variables azd itself puts into a hook's environment, and ones the hooks only remove or read from
# the operating system.
SET_BY_AZD = {"AZURE_ENV_NAME", "AZURE_LOCATION", "AZURE_SUBSCRIPTION_ID", "AZURE_PRINCIPAL_ID", "AZURE_PRINCIPAL_TYPE"}
REMOVED_BY_HOOKS = {"AZURE_CLIENT_ID", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
OPERATING_SYSTEM = {"OS", "PATH", "HOME"}

# checkov findings suppressed inline, each with its reason in the Bicep. A new suppression must be
# added here on purpose.
EXPECTED_SUPPRESSIONS = {
    "CKV_AZURE_17",
    "CKV_AZURE_35",
    "CKV_AZURE_59",
    "CKV_AZURE_134",
    "CKV_AZURE_206",
    "CKV_AZURE_208",
    "CKV_AZURE_209",
    "CKV_AZURE_212",
    "CKV_AZURE_213",
    "CKV_AZURE_222",
    "CKV_AZURE_225",
}

GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


# ----------------------------------------------------------------------------------------------
# Reading pycep's JSON
# ----------------------------------------------------------------------------------------------


@cache
def parse(path: Path) -> dict[str, Any]:
    """The pycep JSON of one Bicep file."""
    result: dict[str, Any] = pycep.BicepParser().parse(file_path=path)
    return result


def expression(node: Any) -> Any:
    """A property chain such as ``identity.outputs.principalId`` as a dotted string; other nodes unchanged."""
    if isinstance(node, dict) and "operator" in node and node["operator"]["type"] == "property_accessor":
        operands = node["operator"]["operands"]
        return f"{expression(operands['operand_1'])}.{expression(operands['operand_2'])}"
    return node


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """A resource's or module's declaration, whether plain, conditional (``if``) or a loop (``for``)."""
    config: dict[str, Any] = resource["config"]
    while "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def resources(path: Path, resource_type: str, *, existing: bool = False) -> list[dict[str, Any]]:
    """Declarations of one resource type in a file (created ones unless existing=True)."""
    return [
        body(resource)
        for resource in parse(path).get("resources", {}).values()
        if resource["type"].lower() == resource_type.lower() and resource["existing"] == existing
    ]


def all_resources(resource_type: str) -> list[dict[str, Any]]:
    return [found for path in BICEP_FILES for found in resources(path, resource_type)]


def key(mapping: dict[str, Any], name: str) -> Any:
    """A property looked up the way ARM does: case-insensitively."""
    matches = [value for field, value in mapping.items() if field.strip("'").lower() == name.lower()]
    assert matches, f"{name} is not set in {sorted(mapping)}"
    return matches[0]


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def function_app() -> dict[str, Any]:
    (site,) = resources(FUNCTION_APP_BICEP, "Microsoft.Web/sites")
    return site


def app_settings() -> dict[str, Any]:
    """The function app's app settings, name -> value node."""
    entries = function_app()["properties"]["siteConfig"]["appSettings"]
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"duplicate app settings: {names}"
    return {entry["name"]: entry["value"] for entry in entries}


def main_outputs() -> dict[str, Any]:
    outputs: dict[str, Any] = parse(MAIN_BICEP)["outputs"]
    return outputs


def code_variables() -> frozenset[str]:
    """Every environment variable chat/settings.py reads, in any mode."""
    groups = [field.annotation for field in settings.Settings.model_fields.values()]
    return frozenset().union(
        *(group.variables() for group in groups if isinstance(group, type) and issubclass(group, settings._EnvGroup))
    )


# ----------------------------------------------------------------------------------------------
# Bicep syntax that checkov's parser (pycep) understands
# ----------------------------------------------------------------------------------------------


def test_bicep_files_exist() -> None:
    names = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert {"main.bicep", "app/function-app.bicep"} <= names
    assert (INFRA / "main.parameters.json").is_file()
    assert (INFRA / "abbreviations.json").is_file()
    assert not list(INFRA.rglob("*.bicepparam")), "azd reads main.parameters.json; .bicepparam is not parsed by pycep"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.relative_to(INFRA).as_posix())
def test_bicep_parses_with_pycep(path: Path) -> None:
    parsed = parse(path)
    assert parsed.get("resources") or parsed.get("modules"), f"{path} declares nothing"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda path: path.relative_to(INFRA).as_posix())
def test_bicep_avoids_syntax_checkov_cannot_follow(path: Path) -> None:
    code = "\n".join(line.split("//", 1)[0] for line in path.read_text().splitlines())
    assert not re.search(r"^\s*(import|extension)\s", code, re.MULTILINE), "import/extension statements"
    assert "..." not in code, "spread operator"
    assert "=>" not in code, "lambda"
    assert not re.search(r"'br[:/]", code), "registry modules cannot be resolved offline"
    assert not re.search(r"'ts[:/]", code), "template spec modules cannot be resolved offline"


def test_main_is_subscription_scoped_with_unique_names() -> None:
    parsed = parse(MAIN_BICEP)
    assert parsed["globals"]["scope"]["value"] == "subscription"
    token = parsed["variables"]["resourceToken"]["value"]
    assert "unique_string" in json.dumps(token)
    assert json.loads((INFRA / "abbreviations.json").read_text())


def test_every_local_module_exists() -> None:
    for path in BICEP_FILES:
        for name, module in parse(path).get("modules", {}).items():
            target = path.parent / module["detail"]["path"]
            assert target.is_file(), f"{path.name}: module {name} points to missing {target}"


# ----------------------------------------------------------------------------------------------
# checkov
# ----------------------------------------------------------------------------------------------


def checkov_binary() -> str | None:
    candidates = [os.environ.get("CHECKOV_BIN", ""), str(ROOT / ".venv-checkov" / "bin" / "checkov")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("checkov")


@cache
def checkov_report() -> dict[str, Any]:
    binary = checkov_binary()
    require(binary is not None, "checkov is not installed (make dev installs it into .venv-checkov)")
    assert binary is not None
    completed = subprocess.run(
        [binary, "-d", str(INFRA), "--framework", "bicep", "--skip-download", "--compact", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "BC_API_KEY": "", "PRISMA_API_URL": ""},
    )
    assert completed.stdout.strip(), (
        f"checkov printed nothing (exit {completed.returncode}): {completed.stderr[-2000:]}"
    )
    report = json.loads(completed.stdout)
    reports = report if isinstance(report, list) else [report]
    (bicep,) = [entry for entry in reports if entry.get("check_type") == "bicep"]
    result: dict[str, Any] = bicep
    return result


def test_checkov_parses_every_bicep_file() -> None:
    summary = checkov_report()["summary"]
    assert summary["parsing_errors"] == 0, summary
    assert summary["passed"] > 0, summary


def test_checkov_has_no_failed_checks() -> None:
    # Without a Prisma Cloud key checkov reports no severity, so every failure counts, whatever
    # its severity would be.
    failed = checkov_report()["results"]["failed_checks"]
    assert not failed, "\n".join(
        f"{check['check_id']} {check['check_name']} at {check['file_path']}:{check['resource']}"
        f" (severity {check.get('severity')})"
        for check in failed
    )


def test_checkov_suppressions_are_justified_and_expected() -> None:
    skipped = checkov_report()["results"]["skipped_checks"]
    for check in skipped:
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert reason != "No comment provided", f"{check['check_id']} needs a reason"
        assert len(reason.strip()) >= 30, f"{check['check_id']}: the reason is too short to explain anything"
    assert {check["check_id"] for check in skipped} == EXPECTED_SUPPRESSIONS


# ----------------------------------------------------------------------------------------------
# The function app
# ----------------------------------------------------------------------------------------------


def test_function_app_runs_python_on_flex_consumption() -> None:
    (plan,) = resources(FUNCTION_APP_BICEP, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True

    site = function_app()
    assert site["kind"] == "functionapp,linux"
    config = site["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    assert config["scaleAndConcurrency"] == {
        "instanceMemoryMB": "instanceMemoryMB",
        "maximumInstanceCount": "maximumInstanceCount",
    }
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": "identityId"}
    assert site["identity"]["type"] == "UserAssigned"
    assert site["properties"]["httpsOnly"] is True
    assert site["properties"]["siteConfig"]["cors"] == {"allowedOrigins": "corsAllowedOrigins"}


def test_python_version_and_scale_are_parameters() -> None:
    parameters = parse(MAIN_BICEP)["parameters"]
    python = parameters["pythonVersion"]
    assert python["default"] == "3.11"
    allowed = [decorator["argument"] for decorator in python["decorators"] if decorator["type"] == "allowed"]
    assert allowed == [["3.10", "3.11", "3.12"]]
    assert parameters["instanceMemoryMB"]["type"] == "int"
    assert parameters["maximumInstanceCount"]["type"] == "int"
    assert parameters["corsAllowedOrigins"]["default"] == ""


def test_function_app_is_tagged_with_the_azd_service_name() -> None:
    tags = function_app()["tags"]
    assert tags["function"]["type"] == "union"
    extra = tags["function"]["parameters"]["arg_2"]
    assert extra == {"'azd-service-name'": "serviceName"}
    (module,) = [m for m in parse(MAIN_BICEP)["modules"].values() if m["detail"]["path"] == "app/function-app.bicep"]
    service = module["config"]["params"]["serviceName"]
    assert service == "api"
    assert service in azure_yaml()["services"]


def test_app_settings_are_the_code_variables_plus_platform_settings() -> None:
    names = set(app_settings())
    platform = {name for name in names if name.startswith(PLATFORM_PREFIXES) or name in PLATFORM_NAMES}
    assert names - platform == settings.azure_mode_variables()


def test_platform_app_settings() -> None:
    values = app_settings()
    for name, expected in REQUIRED_PLATFORM_SETTINGS.items():
        assert name in values, name
        if expected is not None:
            assert values[name] == expected, name
    assert not FORBIDDEN_SETTINGS & set(values)


def test_code_app_settings_select_azure_and_the_managed_identity() -> None:
    values = app_settings()
    assert values["OPENAI_HOST"] == "azure"
    assert values["SEARCH_HOST"] == "azure"
    assert values["AZURE_CLIENT_ID"] == "identityClientId"
    assert values["AzureWebJobsStorage__clientId"] == "identityClientId"


def test_defaults_match_the_code() -> None:
    parameters = parse(MAIN_BICEP)["parameters"]
    openai_fields = settings.AzureOpenAISettings.model_fields
    search_fields = settings.AzureSearchSettings.model_fields
    assert parameters["openAiApiVersion"]["default"] == openai_fields["azure_openai_api_version"].default
    assert parameters["searchIndexName"]["default"] == search_fields["azure_search_index"].default


# ----------------------------------------------------------------------------------------------
# Outputs, parameters, hooks
# ----------------------------------------------------------------------------------------------


def test_outputs_cover_the_code_variables_except_the_identity() -> None:
    outputs = set(main_outputs())
    wanted = settings.azure_mode_variables() - NOT_OUTPUTS
    assert wanted <= outputs, f"missing outputs: {sorted(wanted - outputs)}"
    assert not NOT_OUTPUTS & outputs
    assert {"AZURE_LOCATION", "AZURE_TENANT_ID", "AZURE_RESOURCE_GROUP"} <= outputs
    assert main_outputs()["OPENAI_HOST"]["value"] == "azure"
    assert main_outputs()["SEARCH_HOST"]["value"] == "azure"


def test_outputs_named_like_code_variables_are_code_variables() -> None:
    known = code_variables()
    for name in main_outputs():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f"{name} is not an environment variable name"
        assert name in known or name in NON_CODE_OUTPUTS, f"output {name} is neither a code variable nor expected"


def test_main_parameters_map_azd_variables_to_declared_parameters() -> None:
    text = (INFRA / "main.parameters.json").read_text()
    values = json.loads(text)["parameters"]
    declared = parse(MAIN_BICEP)["parameters"]
    assert set(values) <= set(declared), sorted(set(values) - set(declared))
    required = {name for name, parameter in declared.items() if "default" not in parameter}
    assert required <= set(values), sorted(required - set(values))
    assert values["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert values["location"]["value"] == "${AZURE_LOCATION}"
    assert values["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"
    for name, entry in values.items():
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", entry["value"]), f"{name}: {entry['value']}"


def hook_variables() -> set[str]:
    names = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", HOOK_SH.read_text()))
    names |= set(re.findall(r"(?:\$env:|Env:)([A-Za-z_][A-Za-z0-9_]*)", HOOK_PS1.read_text(), re.IGNORECASE))
    names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "azure.yaml").read_text()))
    return names


def test_hook_variables_come_from_azd_or_bicep_outputs() -> None:
    used = hook_variables() - SET_BY_AZD - REMOVED_BY_HOOKS - OPERATING_SYSTEM
    assert used, "the hooks check the variables they need"
    assert used <= set(main_outputs()), f"not outputs of main.bicep: {sorted(used - set(main_outputs()))}"


# ----------------------------------------------------------------------------------------------
# Keyless
# ----------------------------------------------------------------------------------------------


def infra_text_files() -> list[Path]:
    return sorted(
        path for path in INFRA.rglob("*") if path.is_file() and path.suffix in {".bicep", ".json", ".sh", ".ps1"}
    )


@pytest.mark.parametrize("path", infra_text_files(), ids=lambda path: path.relative_to(INFRA).as_posix())
def test_no_keys_anywhere_in_infra(path: Path) -> None:
    text = path.read_text()
    for pattern in (
        r"list\w*keys\s*\(",
        r"listkeys",
        r"accountkey",
        r"api[-_]?key",
        r"openai_api_key",
        r"sharedaccesskey",
    ):
        assert not re.search(pattern, text, re.IGNORECASE), f"{pattern} in {path}"
    assert not re.search(r"@secure\(\)", text), "a secure parameter means a secret is being passed"


def test_local_auth_is_disabled() -> None:
    accounts = all_resources("Microsoft.CognitiveServices/accounts")
    assert accounts
    for account in accounts:
        assert account["kind"] == "OpenAI"
        assert key(account["properties"], "disableLocalAuth") is True
        assert key(account["properties"], "customSubDomainName") == "name"

    services = all_resources("Microsoft.Search/searchServices")
    assert services
    for service in services:
        assert key(service["properties"], "disableLocalAuth") is True
        assert "authOptions" not in service["properties"], "authOptions and disableLocalAuth exclude each other"

    components = all_resources("Microsoft.Insights/components")
    assert components
    for component in components:
        assert key(component["properties"], "DisableLocalAuth") is True
        assert key(component["properties"], "WorkspaceResourceId")


def test_storage_is_keyless_and_private_to_entra_id() -> None:
    accounts = all_resources("Microsoft.Storage/storageAccounts")
    assert accounts
    for account in accounts:
        properties = account["properties"]
        assert key(properties, "allowSharedKeyAccess") is False
        assert key(properties, "allowBlobPublicAccess") is False
        assert key(properties, "minimumTlsVersion") == "TLS1_2"
        assert key(properties, "supportsHttpsTrafficOnly") is True


def test_search_index_is_left_to_the_ingest_cli() -> None:
    for path in BICEP_FILES:
        for resource in parse(path).get("resources", {}).values():
            assert "indexes" not in resource["type"].lower(), f"{path} declares a search index"


def test_openai_deployments_default_to_the_documented_models() -> None:
    parameters = parse(MAIN_BICEP)["parameters"]
    assert parameters["chatModelName"]["default"] == "gpt-4o-mini"
    assert parameters["embeddingModelName"]["default"] == "text-embedding-3-small"
    for name in ("chatDeploymentCapacity", "embeddingDeploymentCapacity"):
        assert parameters[name]["type"] == "int"
    assert len(all_resources("Microsoft.CognitiveServices/accounts/deployments")) == 2
    search = parameters["searchServiceSku"]
    assert search["default"] == "basic"
    assert parameters["searchSemanticSearch"]["default"] == "free"


def test_role_definition_table_is_the_built_in_roles() -> None:
    table = parse(MAIN_BICEP)["variables"]["roleDefinitionIds"]["value"]
    assert set(table.values()) == set(BUILT_IN_ROLES)
    for name, role_id in table.items():
        assert name.lower() == BUILT_IN_ROLES[role_id].replace(" ", "").lower(), (
            f"{name} is not {BUILT_IN_ROLES[role_id]}"
        )


def test_role_ids_appear_only_in_the_table() -> None:
    for path in BICEP_FILES:
        found = set(GUID.findall(path.read_text()))
        if path == MAIN_BICEP:
            assert found == set(BUILT_IN_ROLES)
        else:
            assert not found, f"{path} has role ids outside the table in main.bicep: {found}"


def role_grants() -> dict[str, set[str]]:
    """Roles granted in main.bicep, by principal expression."""
    table = parse(MAIN_BICEP)["variables"]["roleDefinitionIds"]["value"]
    grants: dict[str, set[str]] = {}
    for node in walk(parse(MAIN_BICEP)):
        if isinstance(node, dict) and {"principalId", "principalType", "roleDefinitionId"} <= set(node):
            role = expression(node["roleDefinitionId"])
            assert isinstance(role, str), role
            assert role.startswith("roleDefinitionIds."), role
            grants.setdefault(expression(node["principalId"]), set()).add(BUILT_IN_ROLES[table[role.split(".", 1)[1]]])
    return grants


def test_roles_of_the_function_identity_and_the_deploying_user() -> None:
    grants = role_grants()
    assert grants.pop("identity.outputs.principalId") == FUNCTION_IDENTITY_ROLES
    assert grants.pop("principalId") == DEPLOYING_USER_ROLES
    assert not grants
    principal_type = parse(MAIN_BICEP)["parameters"]["principalType"]
    assert principal_type["default"] == "User"


def test_role_assignments_have_deterministic_names_and_built_in_definitions() -> None:
    assignments = all_resources("Microsoft.Authorization/roleAssignments")
    assert len(assignments) >= 4
    for assignment in assignments:
        assert assignment["name"]["function"]["type"] == "guid"
        definition = assignment["properties"]["roleDefinitionId"]["function"]
        assert definition["type"] == "subscription_resource_id"
        assert definition["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"


# ----------------------------------------------------------------------------------------------
# azure.yaml and the postprovision hook
# ----------------------------------------------------------------------------------------------


@cache
def azure_yaml() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "azure.yaml").read_text())
    return loaded


def test_azure_yaml_describes_one_python_function_service() -> None:
    project = azure_yaml()
    assert project["name"]
    assert project["metadata"]["template"]
    api = project["services"]["api"]
    assert api["project"] == "."
    assert api["language"] in {"python", "py"}
    assert api["host"] == "function"


def test_postprovision_hook_has_posix_and_windows_scripts() -> None:
    hook = azure_yaml()["hooks"]["postprovision"]
    assert hook["posix"]["shell"] == "sh"
    assert hook["windows"]["shell"] == "pwsh"
    for platform in ("posix", "windows"):
        assert (ROOT / hook[platform]["run"]).is_file(), hook[platform]["run"]
    assert (ROOT / hook["posix"]["run"]).resolve() == HOOK_SH
    assert (ROOT / hook["windows"]["run"]).resolve() == HOOK_PS1


def test_hooks_fail_fast_and_ingest_as_the_deploying_user() -> None:
    sh = HOOK_SH.read_text()
    ps1 = HOOK_PS1.read_text()
    assert re.search(r"^set -eu$", sh, re.MULTILINE)
    assert "pipefail" in sh
    assert "$ErrorActionPreference = 'Stop'" in ps1
    for script in (sh, ps1):
        assert "-m venv .venv" in script
        assert "-r requirements-ingest.txt" in script
        assert "-m chat.ingest data/docs --target azure" in script
    assert "unset AZURE_CLIENT_ID" in sh
    assert "Remove-Item Env:AZURE_CLIENT_ID" in ps1


@pytest.mark.skipif(sys.platform == "win32" or shutil.which("sh") is None, reason="needs a POSIX sh")
def test_sh_hook_runs_the_ingest_without_the_managed_identity(tmp_path: Path) -> None:
    hooks = tmp_path / "infra" / "hooks"
    hooks.mkdir(parents=True)
    shutil.copy(HOOK_SH, hooks / "ingest.sh")
    fake_python = tmp_path / ".venv" / "bin" / "python"
    fake_python.parent.mkdir(parents=True)
    fake_python.write_text('#!/bin/sh\necho "python $* client=${AZURE_CLIENT_ID-unset}" >> "$(dirname "$0")/calls"\n')
    fake_python.chmod(fake_python.stat().st_mode | stat.S_IEXEC)
    environment = {
        "PATH": "/usr/bin:/bin",
        "OPENAI_HOST": "azure",
        "SEARCH_HOST": "azure",
        "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com/",
        "AZURE_OPENAI_EMBEDDING_DEPLOYMENT": "text-embedding-3-small",
        "AZURE_SEARCH_ENDPOINT": "https://example.search.windows.net",
        "AZURE_SEARCH_INDEX": "documents",
        "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000000",
    }

    ran = subprocess.run(["sh", str(hooks / "ingest.sh")], env=environment, capture_output=True, text=True, check=False)
    assert ran.returncode == 0, ran.stderr
    calls = (fake_python.parent / "calls").read_text().splitlines()
    assert calls == [
        "python -m pip install --disable-pip-version-check --quiet -r requirements-ingest.txt client=unset",
        "python -m chat.ingest data/docs --target azure client=unset",
    ]

    del environment["AZURE_SEARCH_ENDPOINT"]
    failed = subprocess.run(
        ["sh", str(hooks / "ingest.sh")], env=environment, capture_output=True, text=True, check=False
    )
    assert failed.returncode != 0
    assert "AZURE_SEARCH_ENDPOINT" in failed.stderr


# ----------------------------------------------------------------------------------------------
# .funcignore: the package holds only what the function app needs
# ----------------------------------------------------------------------------------------------


@cache
def funcignore() -> Any:
    pathspec = require_module("pathspec", "pathspec is not installed (pip install -r requirements-infra.txt)")
    return pathspec.GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text().splitlines())


@pytest.mark.parametrize(
    "path",
    ["function_app.py", "host.json", "requirements.txt", "chat/__init__.py", "chat/web/index.html", "chat/data/x.json"],
)
def test_funcignore_keeps(path: str) -> None:
    assert not funcignore().match_file(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".venv-checkov/bin/checkov",
        ".git/config",
        ".azure/dev/.env",
        ".env",
        "tests/test_infra.py",
        "benchmarks/run.py",
        "infra/main.bicep",
        "docs/web.md",
        "data/docs/guide.md",
        "data/index.sqlite",
        "node_modules/x/index.js",
        "chat/__pycache__/settings.cpython-311.pyc",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        ".pytest_cache/v/x",
        "local.settings.json",
        "requirements-dev.txt",
        "requirements-ingest.txt",
        "azure.yaml",
    ],
)
def test_funcignore_excludes(path: str) -> None:
    assert funcignore().match_file(path)


def test_package_of_this_checkout_holds_only_the_app() -> None:
    """Every file git would commit is either excluded or part of the running app."""
    require(shutil.which("git") is not None and (ROOT / ".git").exists(), "not a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--directory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    kept = {path for path in listed if not funcignore().match_file(path)}
    allowed_top_level = {"function_app.py", "host.json", "requirements.txt", ".funcignore", "LICENSE"}
    unexpected = {path for path in kept if not path.startswith("chat/") and path not in allowed_top_level}
    assert not unexpected, f"would be deployed: {sorted(unexpected)}"
