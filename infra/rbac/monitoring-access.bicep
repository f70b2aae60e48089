// Role assignments on the Application Insights component (Entra ID authenticated telemetry).

@description('Name of the Application Insights component in this resource group.')
param applicationInsightsName string

@description('Role assignments: objects with principalId, principalType and roleDefinitionId (a built-in role GUID).')
param assignments array

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for assignment in assignments: {
  name: guid(applicationInsights.id, assignment.principalId, assignment.roleDefinitionId)
  scope: applicationInsights
  properties: {
    principalId: assignment.principalId
    principalType: assignment.principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', assignment.roleDefinitionId)
  }
}]
