// Azure AI Search service with API keys disabled: callers need Search roles. The index itself
// is not declared here; the ingest CLI (python -m chat.ingest) creates and fills it.

@description('Name of the search service; the endpoint is https://<name>.search.windows.net.')
param name string

@description('Region of the search service.')
param location string

@description('Tags of the search service.')
param tags object = {}

@allowed([
  'free'
  'basic'
  'standard'
  'standard2'
  'standard3'
  'storage_optimized_l1'
  'storage_optimized_l2'
])
@description('Pricing tier.')
param sku string = 'basic'

@allowed([
  'disabled'
  'free'
  'standard'
])
@description('Semantic ranker plan; must be disabled on the free tier.')
param semanticSearch string = 'free'

resource search 'Microsoft.Search/searchServices@2025-05-01' = {
  // checkov:skip=CKV_AZURE_208: one replica keeps the demo at the tier's base price; add replicas (3 for the read-write SLA) for production.
  // checkov:skip=CKV_AZURE_209: one replica keeps the demo at the tier's base price; add replicas (2 for the read SLA) for production.
  name: name
  location: location
  tags: tags
  sku: {
    name: sku
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    // Keys off; authOptions must then be absent (the service rejects both together).
    disableLocalAuth: true
    // The free tier has no semantic ranker, so the property is left out there.
    semanticSearch: sku == 'free' ? null : semanticSearch
    hostingMode: 'default'
    partitionCount: 1
    replicaCount: 1
    publicNetworkAccess: 'enabled'
  }
}

output name string = search.name
output endpoint string = 'https://${search.name}.search.windows.net'
