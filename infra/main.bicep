// Keyless deployment of the streaming RAG chat backend: a Python function app on the Flex
// Consumption plan, Azure OpenAI, Azure AI Search, Application Insights and the host storage.
// No resource in this template has a usable key: every caller authenticates with Microsoft
// Entra ID and is authorised by the role assignments at the end of this file.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Parameters (main.parameters.json maps each one to an azd environment variable)
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; used for the resource group name and the resource token.')
param environmentName string

@minLength(1)
@description('Region of every resource except, optionally, Azure OpenAI. It must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group to create or use; empty means rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the deploying user or principal; it gets the roles the ingest hook needs. Empty skips them.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principalId: User from a laptop, ServicePrincipal from a pipeline.')
param principalType string = 'User'

// Function app ---------------------------------------------------------------------------------

// Flex Consumption offers Python 3.10 to 3.14 for new apps; 3.10 reached its end of life in
// October 2026 and this project is tested on 3.11 to 3.13 (CI runs 3.11 and 3.13).
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
@description('Python version of the function app.')
param pythonVersion string = '3.11'

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance, in MB (512 MB is a quarter core, 2048 MB one core, 4096 MB two).')
param instanceMemoryMB int = 2048

// Sizing: concurrent streams = httpPerInstanceConcurrency x maximumInstanceCount, so the defaults
// allow 64 x 40 = 2,560 open streams. The capacity model of docs/performance.md (from measured CPU:
// 6.3 ms of CPU per second of stream, about 110 streams per core at 70%) puts 1,000 active users at
// about 94 concurrent streams, so 2,560 streams serve over 25,000 active users. In practice the chat
// deployment's tokens-per-minute quota is reached long before (30K TPM carries about 1.5 streams). 40 is the lowest value Flex Consumption
// accepts, 1000 the highest; this number is the hard ceiling of what the app can spend on compute.
@minValue(40)
@maxValue(1000)
@description('Most instances the app may scale out to (Flex Consumption accepts 40 to 1000). The cost ceiling.')
param maximumInstanceCount int = 40

// Flex Consumption adds an instance when the open HTTP executions of every instance reach this
// number. The platform default (16 on 2048 MB) would start a new instance for every 16 streams,
// although a stream is almost all waiting on the model. 64 is about 60% of the measured ~110
// streams a core carries at 70% CPU (docs/performance.md, capacity model), leaving room for bursts
// (64 arrivals queue about 0.4 s of setup CPU) and for the Functions host, which proxies every
// streamed byte on the same core. Scale it with the cores of instanceMemoryMB (16 on 512 MB,
// 128 on 4096 MB).
@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP executions (open streams) per instance before Flex Consumption adds an instance.')
param httpPerInstanceConcurrency int = 64

// A comma-separated string rather than an array: azd substitutes environment variables into
// main.parameters.json as text, inside JSON strings.
@description('Comma-separated origins (no spaces) allowed to call the API from browser pages on other origins. The page served by the app itself needs none.')
param corsAllowedOrigins string = ''

// Who may call -----------------------------------------------------------------------------------

// entra: the platform's built-in authentication signs people of your tenant in; API calls without
// a session get 401. keys: function keys for server-to-server callers. anonymous: open to the
// internet, for demos only. The README's Security section says what each protects.
@allowed([
  'entra'
  'keys'
  'anonymous'
])
@description('Who may call the chat API (CHAT_AUTH_MODE): entra, keys or anonymous.')
param authMode string = 'entra'

@description('Client id of the Microsoft Entra app registration used in entra mode. The preprovision hook creates or reuses one and sets AZURE_AUTH_CLIENT_ID.')
param authClientId string = ''

@minValue(1)
@description('Most streams one client may have open at once on one instance (CHAT_MAX_STREAMS_PER_CLIENT).')
param chatMaxStreamsPerClient int = 4

@minValue(1)
@description('Most requests one client may start per minute on one instance (CHAT_REQUESTS_PER_MINUTE_PER_CLIENT).')
param chatRequestsPerMinutePerClient int = 20

// Azure OpenAI ---------------------------------------------------------------------------------

@description('Region of the Azure OpenAI account; empty means the same as location. Pick one with quota for the models.')
param openAiLocation string = ''

@description('Name of an existing Azure OpenAI account to use instead of creating one. Its deployments must already exist.')
param existingOpenAiAccountName string = ''

@description('Resource group of existingOpenAiAccountName (same subscription); empty means the environment resource group.')
param existingOpenAiResourceGroupName string = ''

// 2025-04-01-preview is the last dated data-plane version (Microsoft calls it the "last
// generation" API; newer features come only through the v1 API). It takes max_completion_tokens and
// reasoning_effort, which GPT-5 family models need; the GA version 2024-10-21 has no reasoning_effort.
@description('Data-plane API version the code uses (AZURE_OPENAI_API_VERSION).')
param openAiApiVersion string = '2025-04-01-preview'

// Defaults checked against Microsoft's model retirement schedule (README, Deploy): gpt-5.6-luna
// 2026-07-09 is generally available with a retirement date of 2028-01-11. When a model retires,
// set these four with azd env set and run azd provision (README, "When a model retires").
@description('Chat model.')
param chatModelName string = 'gpt-5.6-luna'

@description('Version of the chat model.')
param chatModelVersion string = '2026-07-09'

// GPT-5 family and o-series models are reasoning models: max_completion_tokens instead of
// max_tokens, no temperature, a reasoning effort. Set chat for a model such as gpt-4.1.
@allowed([
  'chat'
  'reasoning'
])
@description('Kind of the chat model (AZURE_OPENAI_CHAT_MODEL_KIND): reasoning for GPT-5 family and o-series models, chat otherwise.')
param chatModelKind string = 'reasoning'

@description('Name of the chat deployment (AZURE_OPENAI_CHAT_DEPLOYMENT).')
param chatDeploymentName string = 'gpt-5.6-luna'

@description('SKU of the chat deployment.')
param chatDeploymentSkuName string = 'GlobalStandard'

@minValue(1)
@description('Capacity of the chat deployment, in thousands of tokens per minute.')
param chatDeploymentCapacity int = 30

@description('Embedding model.')
param embeddingModelName string = 'text-embedding-3-small'

@description('Version of the embedding model.')
param embeddingModelVersion string = '1'

@description('Name of the embedding deployment (AZURE_OPENAI_EMBEDDING_DEPLOYMENT).')
param embeddingDeploymentName string = 'text-embedding-3-small'

@description('SKU of the embedding deployment.')
param embeddingDeploymentSkuName string = 'GlobalStandard'

@minValue(1)
@description('Capacity of the embedding deployment, in thousands of tokens per minute.')
param embeddingDeploymentCapacity int = 30

// Azure AI Search ------------------------------------------------------------------------------

@description('Name of an existing Azure AI Search service to use instead of creating one.')
param existingSearchServiceName string = ''

@description('Resource group of existingSearchServiceName (same subscription); empty means the environment resource group.')
param existingSearchResourceGroupName string = ''

@allowed([
  'free'
  'basic'
  'standard'
  'standard2'
  'standard3'
  'storage_optimized_l1'
  'storage_optimized_l2'
])
@description('SKU of the search service. basic is the smallest tier with an SLA option and semantic ranker.')
param searchServiceSku string = 'basic'

@allowed([
  'disabled'
  'free'
  'standard'
])
@description('Semantic ranker plan. Ignored (treated as disabled) on the free search tier.')
param searchSemanticSearch string = 'free'

@description('Index the ingest CLI creates and the app queries (AZURE_SEARCH_INDEX). Bicep does not create it.')
param searchIndexName string = 'documents'

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
// Flex Consumption pulls the app package from this container.
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

var reuseOpenAi = !empty(existingOpenAiAccountName)
var openAiAccountName = reuseOpenAi ? existingOpenAiAccountName : '${abbrs.cognitiveServicesOpenAI}${resourceToken}'
var openAiResourceGroupName = reuseOpenAi && !empty(existingOpenAiResourceGroupName) ? existingOpenAiResourceGroupName : rg.name

var reuseSearch = !empty(existingSearchServiceName)
var searchServiceName = reuseSearch ? existingSearchServiceName : '${abbrs.searchSearchServices}${resourceToken}'
var searchResourceGroupName = reuseSearch && !empty(existingSearchResourceGroupName) ? existingSearchResourceGroupName : rg.name
var searchEndpoint = 'https://${searchServiceName}.search.windows.net'
// entra mode adds the platform's sign-in, its identity and the hook-made app registration.
var signInEnabled = authMode == 'entra'

// The free tier has no semantic ranker, whatever searchSemanticSearch says.
var semanticRankerEnabled = searchSemanticSearch != 'disabled' && (reuseSearch || searchServiceSku != 'free')

// ---------------------------------------------------------------------------------------------
// Built-in role definitions: the only place their ids appear. Each id is a public, fixed GUID
// (Azure built-in roles reference); tests/test_infra.py checks this table against the names.
// ---------------------------------------------------------------------------------------------

var roleDefinitionIds = {
  // Cognitive Services OpenAI User: chat completions and embeddings, no management.
  cognitiveServicesOpenAIUser: '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
  // Search Index Data Reader: query the documents of every index.
  searchIndexDataReader: '1407120a-92aa-4202-b7e9-c0e197c71c8f'
  // Search Index Data Contributor: upload, merge and delete documents.
  searchIndexDataContributor: '8ebe5a00-799e-43f5-93ac-243d3dce84a7'
  // Search Service Contributor: create and update index definitions.
  searchServiceContributor: '7ca78c08-252a-4471-8644-bb5ff32d4ba0'
  // Storage Blob Data Owner: host storage (keys, locks) and the deployment package container.
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Storage Queue Data Contributor: the queue part of the AzureWebJobsStorage connection.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Storage Table Data Contributor: the host's diagnostic events table (AzureWebJobsStorage).
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Monitoring Metrics Publisher: send telemetry to Application Insights with Entra ID auth.
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

// The function app's only identity: host storage, deployment package, telemetry, OpenAI, Search.
module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

// entra mode only: an identity used for nothing but the app registration's federated credential,
// so that the platform's sign-in needs no client secret. Microsoft's guidance is to give this
// identity to no other resource and no roles: whoever holds it can act as the app registration.
module authIdentity 'app/identity.bicep' = if (signInEnabled) {
  name: 'auth-identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}auth-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'storage/storage-account.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module monitoring 'monitoring/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module openAi 'ai/openai.bicep' = if (!reuseOpenAi) {
  name: 'openai'
  scope: rg
  params: {
    name: openAiAccountName
    location: !empty(openAiLocation) ? openAiLocation : location
    tags: tags
    chatDeployment: {
      name: chatDeploymentName
      modelName: chatModelName
      modelVersion: chatModelVersion
      skuName: chatDeploymentSkuName
      capacity: chatDeploymentCapacity
    }
    embeddingDeployment: {
      name: embeddingDeploymentName
      modelName: embeddingModelName
      modelVersion: embeddingModelVersion
      skuName: embeddingDeploymentSkuName
      capacity: embeddingDeploymentCapacity
    }
  }
}

module search 'search/search-service.bicep' = if (!reuseSearch) {
  name: 'search'
  scope: rg
  params: {
    name: searchServiceName
    location: location
    tags: tags
    sku: searchServiceSku
    semanticSearch: semanticRankerEnabled ? searchSemanticSearch : 'disabled'
  }
}

// Role assignments -----------------------------------------------------------------------------
// Each access module declares the target resource as `existing` in the resource group it is
// scoped to, so the same module serves a resource created here and one reused from elsewhere.

var functionOpenAiAssignments = [
  {
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionIds.cognitiveServicesOpenAIUser
  }
]
var userOpenAiAssignments = empty(principalId) ? [] : [
  {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: roleDefinitionIds.cognitiveServicesOpenAIUser
  }
]

module openAiAccess 'rbac/openai-access.bicep' = {
  name: 'openai-access'
  scope: resourceGroup(openAiResourceGroupName)
  dependsOn: [
    rg
    openAi
  ]
  params: {
    accountName: openAiAccountName
    assignments: concat(functionOpenAiAssignments, userOpenAiAssignments)
  }
}

var functionSearchAssignments = [
  {
    principalId: identity.outputs.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: roleDefinitionIds.searchIndexDataReader
  }
]
var userSearchAssignments = empty(principalId) ? [] : [
  {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: roleDefinitionIds.searchIndexDataContributor
  }
  {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: roleDefinitionIds.searchServiceContributor
  }
]

module searchAccess 'rbac/search-access.bicep' = {
  name: 'search-access'
  scope: resourceGroup(searchResourceGroupName)
  dependsOn: [
    rg
    search
  ]
  params: {
    searchServiceName: searchServiceName
    assignments: concat(functionSearchAssignments, userSearchAssignments)
  }
}

// Blob Data Owner covers the host's blobs and the deployment package. Queue and table are granted
// because the AzureWebJobsStorage connection names their endpoints: the host keeps diagnostic
// events in a table (it logs authorisation failures without the table role), and queue access is
// what any queue-backed host feature needs (e.g. a blob or queue trigger added later). Both are
// scoped to this account, which holds only host data, as in the official Flex templates.
module storageAccess 'rbac/storage-access.bicep' = {
  name: 'storage-access'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    assignments: [
      {
        principalId: identity.outputs.principalId
        principalType: 'ServicePrincipal'
        roleDefinitionId: roleDefinitionIds.storageBlobDataOwner
      }
      {
        principalId: identity.outputs.principalId
        principalType: 'ServicePrincipal'
        roleDefinitionId: roleDefinitionIds.storageQueueDataContributor
      }
      {
        principalId: identity.outputs.principalId
        principalType: 'ServicePrincipal'
        roleDefinitionId: roleDefinitionIds.storageTableDataContributor
      }
    ]
  }
}

module monitoringAccess 'rbac/monitoring-access.bicep' = {
  name: 'monitoring-access'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    assignments: [
      {
        principalId: identity.outputs.principalId
        principalType: 'ServicePrincipal'
        roleDefinitionId: roleDefinitionIds.monitoringMetricsPublisher
      }
    ]
  }
}

// Function app ---------------------------------------------------------------------------------

module api 'app/function-app.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    httpPerInstanceConcurrency: httpPerInstanceConcurrency
    authMode: authMode
    authClientId: authClientId
    authIdentityId: signInEnabled ? authIdentity.outputs.id : ''
    authIdentityClientId: signInEnabled ? authIdentity.outputs.clientId : ''
    chatMaxStreamsPerClient: chatMaxStreamsPerClient
    chatRequestsPerMinutePerClient: chatRequestsPerMinutePerClient
    corsAllowedOrigins: empty(corsAllowedOrigins) ? [] : split(corsAllowedOrigins, ',')
    openAiEndpoint: openAiAccess.outputs.endpoint
    openAiChatDeployment: chatDeploymentName
    openAiChatModelKind: chatModelKind
    openAiEmbeddingDeployment: embeddingDeploymentName
    openAiApiVersion: openAiApiVersion
    searchEndpoint: searchEndpoint
    searchIndexName: searchIndexName
    searchSemanticRanker: semanticRankerEnabled
  }
}

// ---------------------------------------------------------------------------------------------
// Outputs: azd writes them into the environment (.azure/<env>/.env), which the postprovision
// hook runs with. Names match the variables chat/settings.py reads, so the ingest CLI on a
// laptop sees the same configuration as the function app.
//
// AZURE_CLIENT_ID is deliberately NOT an output: on a laptop it would make the code pick
// ManagedIdentityCredential for an identity that only exists inside Azure, instead of the
// deploying user's credential (DefaultAzureCredential -> Azure Developer CLI credential).
// APPLICATIONINSIGHTS_CONNECTION_STRING is not one either: local runs keep their telemetry local.
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name

output OPENAI_HOST string = 'azure'
output SEARCH_HOST string = 'azure'
output AZURE_OPENAI_ENDPOINT string = openAiAccess.outputs.endpoint
output AZURE_OPENAI_CHAT_DEPLOYMENT string = chatDeploymentName
output AZURE_OPENAI_CHAT_MODEL_KIND string = chatModelKind
output AZURE_OPENAI_EMBEDDING_DEPLOYMENT string = embeddingDeploymentName
output AZURE_OPENAI_API_VERSION string = openAiApiVersion
output AZURE_SEARCH_ENDPOINT string = searchEndpoint
output AZURE_SEARCH_INDEX string = searchIndexName
output AZURE_SEARCH_SEMANTIC_RANKER string = semanticRankerEnabled ? 'true' : 'false'

output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = api.outputs.url
// The address to open in a browser: the page's named route /chat, which every host version
// matches (the root route / serves it too where the host matches an empty route). In entra mode
// every path but /api/health answers 401 without a session, so people start at the platform's
// sign-in, which returns them to the page.
output AZURE_FUNCTION_APP_PAGE_URL string = signInEnabled ? '${api.outputs.url}/.auth/login/aad?post_login_redirect_uri=/chat' : '${api.outputs.url}/chat'

// For the postprovision hook (infra/hooks/auth_app.py): the federated credential of the app
// registration names this identity.
output AZURE_AUTH_IDENTITY_PRINCIPAL_ID string = signInEnabled ? authIdentity.outputs.principalId : ''
