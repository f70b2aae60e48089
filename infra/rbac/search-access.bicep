// Role assignments on an Azure AI Search service (created by this template or reused).
// Scoped to the service's resource group by main.bicep.

@description('Name of the search service in this resource group.')
param searchServiceName string

@description('Role assignments: objects with principalId, principalType and roleDefinitionId (a built-in role GUID).')
param assignments array

resource search 'Microsoft.Search/searchServices@2025-05-01' existing = {
  name: searchServiceName
}

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for assignment in assignments: {
  name: guid(search.id, assignment.principalId, assignment.roleDefinitionId)
  scope: search
  properties: {
    principalId: assignment.principalId
    principalType: assignment.principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', assignment.roleDefinitionId)
  }
}]
