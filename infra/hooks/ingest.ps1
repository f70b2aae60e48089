# postprovision hook: index data/docs into the Azure AI Search index, as the deploying user.
#
# azd runs this after `azd provision` / `azd up` with the environment's values (the outputs of
# infra/main.bicep) set. Run it again with `azd hooks run postprovision`; re-running is safe
# because the ingest CLI uses stable chunk ids.
#
# A failed ingest exits non-zero with a message saying how to rerun it. azure.yaml marks this
# hook continueOnError, so azd still deploys the app (see ingest.sh).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
$PSNativeCommandUseErrorActionPreference = $true

Set-Location (Join-Path $PSScriptRoot '..' '..')

# Outside azd (e.g. `pwsh infra/hooks/ingest.ps1`), load the values of the current azd environment.
if (-not $env:AZURE_SEARCH_ENDPOINT -and (Get-Command azd -ErrorAction SilentlyContinue)) {
    Write-Host 'Loading the azd environment values...'
    foreach ($line in (azd env get-values)) {
        if ($line -match '^([^=]+)="(.*)"$') {
            Set-Item -Path "Env:$($Matches[1])" -Value $Matches[2]
        }
    }
}

$required = @(
    @{ Name = 'OPENAI_HOST'; Value = $env:OPENAI_HOST },
    @{ Name = 'SEARCH_HOST'; Value = $env:SEARCH_HOST },
    @{ Name = 'AZURE_OPENAI_ENDPOINT'; Value = $env:AZURE_OPENAI_ENDPOINT },
    @{ Name = 'AZURE_OPENAI_EMBEDDING_DEPLOYMENT'; Value = $env:AZURE_OPENAI_EMBEDDING_DEPLOYMENT },
    @{ Name = 'AZURE_SEARCH_ENDPOINT'; Value = $env:AZURE_SEARCH_ENDPOINT },
    @{ Name = 'AZURE_SEARCH_INDEX'; Value = $env:AZURE_SEARCH_INDEX }
)
foreach ($variable in $required) {
    if (-not $variable.Value) {
        throw "$($variable.Name) is not set: run azd provision first"
    }
}

# AZURE_CLIENT_ID would make the code use ManagedIdentityCredential, which only works inside
# Azure. Without it DefaultAzureCredential signs in as the deploying user (azd auth login).
Remove-Item Env:AZURE_CLIENT_ID -ErrorAction SilentlyContinue
# Only the azd sign-in: the one that received the roles in main.bicep. Otherwise
# DefaultAzureCredential may pick another account signed in to VS Code or the Azure CLI.
$env:AZURE_TOKEN_CREDENTIALS = 'AzureDeveloperCliCredential'
# Keep telemetry of this local run local.
Remove-Item Env:APPLICATIONINSIGHTS_CONNECTION_STRING -ErrorAction SilentlyContinue

if ($IsWindows -or $env:OS -eq 'Windows_NT') {
    $python = Join-Path '.venv' 'Scripts' 'python.exe'
} else {
    $python = Join-Path '.venv' 'bin' 'python'
}

try {
    if (-not (Test-Path $python)) {
        Write-Host 'Creating the virtual environment .venv...'
        $base = Get-Command python3 -ErrorAction SilentlyContinue
        if (-not $base) { $base = Get-Command python -ErrorAction Stop }
        & $base.Source -m venv .venv
        if ($LASTEXITCODE -ne 0) { throw 'python -m venv .venv failed' }
    }

    Write-Host 'Installing the ingest requirements...'
    & $python -m pip install --disable-pip-version-check --quiet -r requirements-ingest.txt
    if ($LASTEXITCODE -ne 0) { throw 'pip install -r requirements-ingest.txt failed' }

    Write-Host "Indexing data/docs into $($env:AZURE_SEARCH_INDEX) at $($env:AZURE_SEARCH_ENDPOINT)..."
    & $python -m chat.ingest data/docs --target azure
    if ($LASTEXITCODE -ne 0) { throw 'python -m chat.ingest failed' }
} catch {
    [Console]::Error.WriteLine("")
    [Console]::Error.WriteLine("The sample documents were not indexed ($($_.Exception.Message)). The app is deployed anyway;")
    [Console]::Error.WriteLine("it answers without sources until the index is filled. Fix the cause, then run:")
    [Console]::Error.WriteLine("    azd hooks run postprovision")
    exit 1
}
