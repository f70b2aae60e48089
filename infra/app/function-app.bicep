// The Python function app on a Flex Consumption (FC1) plan. Every connection it makes is keyless:
// host storage and the deployment package through the user-assigned identity, telemetry through
// Entra ID, OpenAI and Search through the same identity (AZURE_CLIENT_ID).

@description('Name of the function app.')
param name string

@description('Name of the Flex Consumption plan (one app per plan).')
param planName string

@description('Region of the plan and the app; it must offer Flex Consumption.')
param location string

@description('Tags of the plan and the app.')
param tags object = {}

@description('Service name in azure.yaml; azd finds the app by the azd-service-name tag.')
param serviceName string = 'api'

@description('Resource id of the user-assigned identity.')
param identityId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Storage account of the host and the deployment package.')
param storageAccountName string

@description('Blob container of the deployment package.')
param deploymentContainerName string

@description('Application Insights component the host and the code send telemetry to.')
param applicationInsightsName string

@allowed([
  '3.10'
  '3.11'
  '3.12'
])
@description('Python version.')
param pythonVersion string = '3.11'

@allowed([
  512
  2048
  4096
])
@description('Memory of each instance, in MB.')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Most instances the app may scale out to.')
param maximumInstanceCount int = 100

@description('Origins allowed by the platform CORS rules; empty allows no other origin.')
param corsAllowedOrigins array = []

@description('AZURE_OPENAI_ENDPOINT')
param openAiEndpoint string

@description('AZURE_OPENAI_CHAT_DEPLOYMENT')
param openAiChatDeployment string

@description('AZURE_OPENAI_EMBEDDING_DEPLOYMENT')
param openAiEmbeddingDeployment string

@description('AZURE_OPENAI_API_VERSION')
param openAiApiVersion string

@description('AZURE_SEARCH_ENDPOINT')
param searchEndpoint string

@description('AZURE_SEARCH_INDEX')
param searchIndexName string

@description('AZURE_SEARCH_SEMANTIC_RANKER')
param searchSemanticRanker bool

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-11-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex Consumption exists only in some regions and is billed for always-ready instances; left to production deployments.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-11-01' = {
  // checkov:skip=CKV_AZURE_222: the chat API and its page are meant to be reached from the internet; no virtual network yet (docs/deploy.md).
  // checkov:skip=CKV_AZURE_17: browsers calling the public chat API have no client certificates.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero by design; always-ready instances would be billed while idle.
  // checkov:skip=CKV_AZURE_213: platform health-check pings would keep a scale-to-zero app awake and billed; readiness is served at /api/health for external probes.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      cors: {
        allowedOrigins: corsAllowedOrigins
      }
      // FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION are not set: on Flex Consumption
      // the runtime comes from functionAppConfig.runtime and the platform sets the host version.
      appSettings: [
        // Platform: host storage through the user-assigned identity (no connection string).
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        // Platform: the app serves its own page at /, so the host's default home page goes.
        {
          name: 'AzureWebJobsDisableHomepage'
          value: 'true'
        }
        // Platform: HTTP streaming needs worker indexing at startup below Python 3.13.
        {
          name: 'PYTHON_ENABLE_INIT_INDEXING'
          value: '1'
        }
        // Platform: the host authenticates its telemetry with the identity (local auth is off).
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // Code (chat/settings.py, Azure mode): exactly chat.settings.azure_mode_variables().
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsights.properties.ConnectionString
        }
        {
          name: 'OPENAI_HOST'
          value: 'azure'
        }
        {
          name: 'SEARCH_HOST'
          value: 'azure'
        }
        {
          name: 'AZURE_OPENAI_ENDPOINT'
          value: openAiEndpoint
        }
        {
          name: 'AZURE_OPENAI_CHAT_DEPLOYMENT'
          value: openAiChatDeployment
        }
        {
          name: 'AZURE_OPENAI_EMBEDDING_DEPLOYMENT'
          value: openAiEmbeddingDeployment
        }
        {
          name: 'AZURE_OPENAI_API_VERSION'
          value: openAiApiVersion
        }
        {
          name: 'AZURE_SEARCH_ENDPOINT'
          value: searchEndpoint
        }
        {
          name: 'AZURE_SEARCH_INDEX'
          value: searchIndexName
        }
        {
          name: 'AZURE_SEARCH_SEMANTIC_RANKER'
          value: searchSemanticRanker ? 'true' : 'false'
        }
        // The code's credential: ManagedIdentityCredential for this client id.
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
      ]
    }
  }
}

output name string = functionApp.name
output url string = 'https://${functionApp.properties.defaultHostName}'
