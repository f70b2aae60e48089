// Role assignments on the function host's storage account.

@description('Name of the storage account in this resource group.')
param storageAccountName string

@description('Role assignments: objects with principalId, principalType and roleDefinitionId (a built-in role GUID).')
param assignments array

resource storage 'Microsoft.Storage/storageAccounts@2025-01-01' existing = {
  name: storageAccountName
}

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for assignment in assignments: {
  name: guid(storage.id, assignment.principalId, assignment.roleDefinitionId)
  scope: storage
  properties: {
    principalId: assignment.principalId
    principalType: assignment.principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', assignment.roleDefinitionId)
  }
}]
