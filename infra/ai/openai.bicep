// Azure OpenAI account with one chat and one embedding deployment. Local (API key)
// authentication is disabled: callers need the Cognitive Services OpenAI User role.

@description('Name of the account; also its custom subdomain (https://<name>.openai.azure.com/).')
param name string

@description('Region of the account; it must have quota for both deployments.')
param location string

@description('Tags of the account.')
param tags object = {}

@description('Chat deployment: name, modelName, modelVersion, skuName, capacity (thousands of tokens per minute).')
param chatDeployment object

@description('Embedding deployment: name, modelName, modelVersion, skuName, capacity (thousands of tokens per minute).')
param embeddingDeployment object

resource account 'Microsoft.CognitiveServices/accounts@2025-06-01' = {
  // checkov:skip=CKV_AZURE_134: no virtual network yet (README, Deploy: virtual network); the function app and the ingest hook on the deploying laptop call the public endpoint, with Entra ID only (local auth disabled).
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource chat 'Microsoft.CognitiveServices/accounts/deployments@2025-06-01' = {
  parent: account
  name: chatDeployment.name
  sku: {
    name: chatDeployment.skuName
    capacity: chatDeployment.capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: chatDeployment.modelName
      version: chatDeployment.modelVersion
    }
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}

// Deployments of one account are created one after the other: the service refuses concurrent
// changes to the same account.
resource embedding 'Microsoft.CognitiveServices/accounts/deployments@2025-06-01' = {
  parent: account
  name: embeddingDeployment.name
  dependsOn: [
    chat
  ]
  sku: {
    name: embeddingDeployment.skuName
    capacity: embeddingDeployment.capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: embeddingDeployment.modelName
      version: embeddingDeployment.modelVersion
    }
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
