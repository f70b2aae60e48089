// Role assignments on an Azure OpenAI account (created by this template or reused), and the
// account's endpoint. Scoped to the account's resource group by main.bicep.

@description('Name of the Azure OpenAI account in this resource group.')
param accountName string

@description('Role assignments: objects with principalId, principalType and roleDefinitionId (a built-in role GUID).')
param assignments array

resource account 'Microsoft.CognitiveServices/accounts@2025-06-01' existing = {
  name: accountName
}

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for assignment in assignments: {
  name: guid(account.id, assignment.principalId, assignment.roleDefinitionId)
  scope: account
  properties: {
    principalId: assignment.principalId
    principalType: assignment.principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', assignment.roleDefinitionId)
  }
}]

output endpoint string = account.properties.endpoint
