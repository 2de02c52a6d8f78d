<#
.SYNOPSIS
    Runs the Pester suite in its own pwsh process (build.ps1 -Task Test calls it), so the
    module under test is imported fresh from the staged folder.
#>
param(
    [Parameter(Mandatory)] [string] $PesterPath,
    [Parameter(Mandatory)] [string] $ModulePath,
    [Parameter(Mandatory)] [string] $ResultPath
)
$ErrorActionPreference = 'Stop'
Import-Module $PesterPath -Force
$env:QUBESFW_TEST_MODULE = $ModulePath
$config = New-PesterConfiguration
# The suite, and the example of a user's own Pester suite (examples/*.Tests.ps1), which imports the module by
# name as a user would: the staged module's folder goes first on PSModulePath.
$env:PSModulePath = (Split-Path (Split-Path $ModulePath)) + [IO.Path]::PathSeparator + $env:PSModulePath
$config.Run.Path = @($PSScriptRoot, (Join-Path $PSScriptRoot '../../examples'))
$config.Run.PassThru = $true
$config.Run.Exit = $false
$config.Output.Verbosity = 'Normal'
$config.TestResult.Enabled = $true
$config.TestResult.OutputPath = $ResultPath
$result = Invoke-Pester -Configuration $config
Set-Content -Path (Join-Path (Split-Path $ResultPath) 'pester-summary.txt') -Value "$($result.PassedCount) $($result.FailedCount)"
if ($result.FailedCount -gt 0 -or $result.Result -ne 'Passed' -or $result.PassedCount -eq 0) { exit 1 }
exit 0
