// A user-assigned managed identity. main.bicep makes two: the function app's, which serves the
// host storage, the deployment package, Application Insights and the code's calls to OpenAI and
// Search (the code receives its client id as AZURE_CLIENT_ID); and, in entra mode only, the one
// the platform's sign-in presents instead of a client secret.

@description('Name of the identity.')
param name string

@description('Region of the identity.')
param location string

@description('Tags of the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
