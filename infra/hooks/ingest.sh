#!/bin/sh
# postprovision hook: index data/docs into the Azure AI Search index, as the deploying user.
#
# azd runs this after `azd provision` / `azd up` with the environment's values (the outputs of
# infra/main.bicep) exported. Run it again with `azd hooks run postprovision`; re-running is
# safe because the ingest CLI uses stable chunk ids.
#
# A failed ingest exits non-zero with a message saying how to rerun it. azure.yaml marks this
# hook continueOnError, so azd still deploys the app: a search index filled a few minutes later
# is better than no app, and the failure stays a failure for anyone running this script directly.
set -eu
# pipefail is not POSIX; use it where the shell has it.
# shellcheck disable=SC3040
(set -o pipefail) 2>/dev/null && set -o pipefail

cd "$(dirname "$0")/../.."

# Outside azd (e.g. `sh infra/hooks/ingest.sh`), load the values of the current azd environment.
if [ -z "${AZURE_SEARCH_ENDPOINT:-}" ] && command -v azd >/dev/null 2>&1; then
    echo "Loading the azd environment values..."
    set -a
    eval "$(azd env get-values)"
    set +a
fi

: "${OPENAI_HOST:?is not set: run azd provision first}"
: "${SEARCH_HOST:?is not set: run azd provision first}"
: "${AZURE_OPENAI_ENDPOINT:?is not set: run azd provision first}"
: "${AZURE_OPENAI_EMBEDDING_DEPLOYMENT:?is not set: run azd provision first}"
: "${AZURE_SEARCH_ENDPOINT:?is not set: run azd provision first}"
: "${AZURE_SEARCH_INDEX:?is not set: run azd provision first}"

# AZURE_CLIENT_ID would make the code use ManagedIdentityCredential, which only works inside
# Azure. Without it DefaultAzureCredential signs in as the deploying user (azd auth login).
unset AZURE_CLIENT_ID
# Only the azd sign-in: the one that received the roles in main.bicep. Otherwise
# DefaultAzureCredential may pick another account signed in to VS Code or the Azure CLI.
AZURE_TOKEN_CREDENTIALS=AzureDeveloperCliCredential
export AZURE_TOKEN_CREDENTIALS
# Keep telemetry of this local run local.
unset APPLICATIONINSIGHTS_CONNECTION_STRING

ingest() {
    if [ ! -x .venv/bin/python ]; then
        echo "Creating the virtual environment .venv..."
        if command -v python3 >/dev/null 2>&1; then python3 -m venv .venv || return 1; else python -m venv .venv || return 1; fi
    fi
    echo "Installing the ingest requirements..."
    .venv/bin/python -m pip install --disable-pip-version-check --quiet -r requirements-ingest.txt || return 1
    echo "Indexing data/docs into ${AZURE_SEARCH_INDEX} at ${AZURE_SEARCH_ENDPOINT}..."
    .venv/bin/python -m chat.ingest data/docs --target azure || return 1
}

if ! ingest; then
    echo "" >&2
    echo "The sample documents were not indexed (see the error above). The app is deployed anyway;" >&2
    echo "it answers without sources until the index is filled. Fix the cause, then run:" >&2
    echo "    azd hooks run postprovision" >&2
    exit 1
fi
