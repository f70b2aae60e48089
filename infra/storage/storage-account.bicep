// Storage account of the function host (AzureWebJobsStorage) and of the Flex Consumption
// deployment package. Shared keys are disabled: the host and azd use Microsoft Entra ID only.

@description('Name of the storage account (3-24 lowercase letters and digits).')
param name string

@description('Region of the storage account.')
param location string

@description('Tags of the storage account.')
param tags object = {}

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' = {
  // checkov:skip=CKV_AZURE_35: no virtual network yet (README, Deploy: virtual network); the Flex Consumption host and azd reach this account over its public endpoint, with Entra ID only (shared keys off).
  // checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35; anonymous blob access and shared keys are both disabled, so the public endpoint accepts Entra ID tokens only.
  // checkov:skip=CKV_AZURE_206: holds only regenerable data (the deployment package, host locks and diagnostics); locally redundant storage is enough and cheapest.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2025-01-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2025-01-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output name string = storage.name
output id string = storage.id
