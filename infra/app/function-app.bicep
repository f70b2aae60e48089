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
  '3.11'
  '3.12'
  '3.13'
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
@description('Most instances the app may scale out to (sizing in main.bicep).')
param maximumInstanceCount int = 40

@minValue(1)
@maxValue(1000)
@description('Concurrent HTTP executions per instance before the platform adds an instance (sizing in main.bicep).')
param httpPerInstanceConcurrency int = 64

@allowed([
  'entra'
  'keys'
  'anonymous'
])
@description('CHAT_AUTH_MODE: entra adds the platform\'s Microsoft Entra ID sign-in in front of the app.')
param authMode string

@description('Client id of the app registration the sign-in uses (entra mode).')
param authClientId string = ''

@description('Resource id of the identity that replaces the client secret (entra mode; empty otherwise).')
param authIdentityId string = ''

@description('Client id of that identity (entra mode; empty otherwise).')
param authIdentityClientId string = ''

@minValue(1)
@description('CHAT_MAX_STREAMS_PER_CLIENT')
param chatMaxStreamsPerClient int = 4

@minValue(1)
@description('CHAT_REQUESTS_PER_MINUTE_PER_CLIENT')
param chatRequestsPerMinutePerClient int = 20

@description('Origins allowed by the platform CORS rules; empty allows no other origin.')
param corsAllowedOrigins array = []

@description('AZURE_OPENAI_ENDPOINT')
param openAiEndpoint string

@description('AZURE_OPENAI_CHAT_DEPLOYMENT')
param openAiChatDeployment string

@allowed([
  'chat'
  'reasoning'
])
@description('AZURE_OPENAI_CHAT_MODEL_KIND')
param openAiChatModelKind string

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

var signInEnabled = authMode == 'entra'
// The setting name the platform's sign-in reads instead of a client secret: it holds the client id
// of a managed identity that the app registration trusts through a federated identity credential
// ("Use a managed identity instead of a secret", App Service authentication docs).
var signInAssertionSettingName = 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'

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

// FUNCTIONS_WORKER_RUNTIME and FUNCTIONS_EXTENSION_VERSION are not set: on Flex Consumption the
// runtime comes from functionAppConfig.runtime and the platform sets the host version.
var siteSettings = [
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
    name: 'AZURE_OPENAI_CHAT_MODEL_KIND'
    value: openAiChatModelKind
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
  // Who may call, and what one caller may open (per instance).
  {
    name: 'CHAT_AUTH_MODE'
    value: authMode
  }
  {
    name: 'CHAT_MAX_STREAMS_PER_CLIENT'
    value: string(chatMaxStreamsPerClient)
  }
  {
    name: 'CHAT_REQUESTS_PER_MINUTE_PER_CLIENT'
    value: string(chatRequestsPerMinutePerClient)
  }
]

// Platform (entra mode): the sign-in presents this identity instead of a client secret.
var signInSettings = signInEnabled ? [
  {
    name: signInAssertionSettingName
    value: authIdentityClientId
  }
] : []

var appIdentity = {
  '${identityId}': {}
}
var signInIdentity = signInEnabled ? {
  '${authIdentityId}': {}
} : {}

resource functionApp 'Microsoft.Web/sites@2024-11-01' = {
  // checkov:skip=CKV_AZURE_222: the chat API and its page are meant to be reached from the internet; no virtual network yet (README, Deploy: virtual network).
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
    userAssignedIdentities: union(appIdentity, signInIdentity)
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
        triggers: {
          http: {
            perInstanceConcurrency: httpPerInstanceConcurrency
          }
        }
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
      appSettings: concat(siteSettings, signInSettings)
    }
  }
}

// Publishing goes through azd with Entra ID into the deployment container; the FTP and SCM
// (Kudu) basic-authentication credentials are turned off so no username and password can deploy.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-11-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// entra mode: the platform's authentication (Easy Auth) with Microsoft Entra ID in front of
// every route. Decisions:
// - Return401, not a redirect, for every caller without a session: API clients get a status they
//   can act on. People start at the sign-in address (output AZURE_FUNCTION_APP_PAGE_URL,
//   /.auth/login/aad?post_login_redirect_uri=/), and the page sends them there again when a call
//   answers 401 (an expired session).
// - /api/health stays anonymous for load balancers and uptime probes; it answers status only.
// - No token store: the app reads only the signed-in user's id and name from the headers the
//   platform adds, never the user's tokens. A store on Flex Consumption would also need a blob
//   container addressed by a SAS URL, which is a secret.
// - No client secret: the identity in OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID signs the platform's
//   token requests (a federated identity credential on the app registration, which the
//   postprovision hook adds because the identity exists only after provisioning).
// checkov applies its checks of the 'web' configuration to every Microsoft.Web/sites/config
// resource; the ones skipped below ask this authsettingsV2 resource for properties it cannot have.
resource authSettings 'Microsoft.Web/sites/config@2024-11-01' = if (signInEnabled) {
  // checkov:skip=CKV_AZURE_13: checkov reads the V1 authsettings shape (properties.enabled); this V2 resource turns authentication on with platform.enabled.
  // checkov:skip=CKV_AZURE_63: HTTP logging is a property of the 'web' configuration; Flex Consumption sends request telemetry to Application Insights instead.
  // checkov:skip=CKV_AZURE_65: detailed error pages are a property of the 'web' configuration; the app answers errors itself as JSON without internals.
  // checkov:skip=CKV_AZURE_66: failed request tracing is a property of the 'web' configuration; failures are traced in Application Insights.
  // checkov:skip=CKV_AZURE_80: the .NET Framework version is a property of the 'web' configuration, and this is a Python app.
  // checkov:skip=CKV_AZURE_88: Azure Files content shares are not used on Flex Consumption, which runs the package from a blob container.
  // checkov:skip=CKV_AZURE_222: public network access is set on the site, where the same check is skipped with its reason.
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/api/health'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          clientSecretSettingName: signInAssertionSettingName
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            authClientId
            'api://${authClientId}'
          ]
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output name string = functionApp.name
output url string = 'https://${functionApp.properties.defaultHostName}'
