#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Builds, documents, packages and tests the QubesFirewall module.
.DESCRIPTION
    Tasks (run in the order given):
      Build    compile the solution (engine, cmdlets, tests, tools)
      Docs     turn docs/cmdlets/*.md (PlatyPS layout) into the MAML help Get-Help reads
      Package  Build + Docs, then stage the importable module in out/QubesFirewall/
      Test     Package, then the xunit suites (engine, cmdlets, network lab) and the Pester
               suite; fails when either fails
.EXAMPLE
    dotnet tool restore; dotnet pwsh ./build.ps1 -Task Test
#>
[CmdletBinding()]
param(
    [ValidateSet('Build', 'Docs', 'Package', 'Test', 'Clean')]
    [string[]] $Task = @('Package'),
    [ValidateSet('Debug', 'Release')]
    [string] $Configuration = 'Release',
    # Extra filter passed to dotnet test (for example 'FullyQualifiedName!~Lab').
    [string] $TestFilter
)

$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest
$env:DOTNET_CLI_TELEMETRY_OPTOUT = '1'
$env:DOTNET_NOLOGO = '1'

$Root = $PSScriptRoot
$Out = Join-Path $Root 'out'
$ModuleOut = Join-Path $Out 'QubesFirewall'
$HelpOut = Join-Path $Out 'help/en-US'
$Packages = Join-Path $Out 'packages'
$PesterVersion = '5.9.1'

function Invoke-Native {
    param([string] $What, [scriptblock] $Command)
    Write-Host "==> $What" -ForegroundColor Cyan
    & $Command
    if ($LASTEXITCODE -ne 0) { throw "$What failed (exit code $LASTEXITCODE)." }
}

function Invoke-Build {
    Invoke-Native 'dotnet build' { dotnet build (Join-Path $Root 'QubesFirewall.slnx') -c $Configuration --nologo -v quiet -clp:ErrorsOnly }
}

function Invoke-Docs {
    New-Item -ItemType Directory -Force -Path $HelpOut | Out-Null
    Invoke-Native 'help (docs/cmdlets -> MAML)' {
        dotnet run --project (Join-Path $Root 'tools/HelpBuilder') -c $Configuration --no-build -- (Join-Path $Root 'docs/cmdlets') $HelpOut (Join-Path $Root 'docs/about')
    }
}

function Invoke-Package {
    Invoke-Build
    Invoke-Docs
    $bin = Join-Path $Root "src/QubesFirewall.PowerShell/bin/$Configuration/net8.0"
    if (Test-Path $ModuleOut) { Remove-Item -Recurse -Force $ModuleOut }
    New-Item -ItemType Directory -Force -Path (Join-Path $ModuleOut 'en-US') | Out-Null
    Copy-Item (Join-Path $Root 'QubesFirewall.psd1') $ModuleOut
    # CliWrap runs qvm-run for the live backend; it ships beside the engine.
    foreach ($file in 'QubesFirewall.PowerShell.dll', 'QubesFirewall.Engine.dll', 'CliWrap.dll', 'QubesFirewall.format.ps1xml') {
        Copy-Item (Join-Path $bin $file) $ModuleOut
    }
    Invoke-ReadyToRun $bin
    Copy-Item (Join-Path $HelpOut '*') (Join-Path $ModuleOut 'en-US') -Recurse
    # The sample Qubes root ships with the module so a user can try it anywhere (copy it before writing).
    Copy-Item (Join-Path $Root 'examples/qubes-root') (Join-Path $ModuleOut 'examples/qubes-root') -Recurse
    Copy-Item (Join-Path $Root 'LICENSE') $ModuleOut
    $forbidden = Get-ChildItem $ModuleOut -Recurse -Include 'System.Management.Automation.dll', 'PowerShellStandard*'
    if ($forbidden) { throw "The staged module must not carry PowerShell's own assemblies: $($forbidden.Name -join ', ')" }
    Write-Host "Module staged in $ModuleOut"
}

# ReadyToRun (issue #21): tools/ReadyToRun precompiles the two module assemblies for linux-x64 against the .NET
# that pwsh 7.6 runs on, and the staged module takes them (the IL inside is unchanged: any other runtime or
# platform JIT-compiles it as before). See bench/README.md for what it measured.
function Invoke-ReadyToRun([string] $ModuleBin) {
    $r2r = Join-Path $Out 'r2r'
    Invoke-Native 'ReadyToRun (linux-x64)' {
        dotnet publish (Join-Path $Root 'tools/ReadyToRun') -c $Configuration -o $r2r --nologo -v quiet -clp:ErrorsOnly "-p:ModuleBin=$ModuleBin/"
    }
    foreach ($file in 'QubesFirewall.PowerShell.dll', 'QubesFirewall.Engine.dll') { Copy-Item (Join-Path $r2r $file) $ModuleOut -Force }
}

function Invoke-Tests {
    Invoke-Package
    $failures = @()
    $passed = 0; $failed = 0

    Write-Host '==> xunit (dotnet test)' -ForegroundColor Cyan
    $testArgs = @('test', (Join-Path $Root 'QubesFirewall.slnx'), '-c', $Configuration, '--no-build', '--nologo', '-v', 'quiet')
    if ($TestFilter) { $testArgs += @('--filter', $TestFilter) }
    & dotnet @testArgs 2>&1 | ForEach-Object { "$_" } | Tee-Object -Variable xunitLines | Out-Host
    $xunitExit = $LASTEXITCODE
    foreach ($line in $xunitLines) {
        if ($line -match 'Failed:\s*(\d+),\s*Passed:\s*(\d+)') { $failed += [int]$Matches[1]; $passed += [int]$Matches[2] }
    }
    if ($xunitExit -ne 0) { $failures += "xunit (exit code $xunitExit)" }
    if ($passed -eq 0 -and $failed -eq 0) { $failures += 'xunit ran no test' }

    Write-Host "==> Pester $PesterVersion" -ForegroundColor Cyan
    Invoke-Native 'restore Pester' { dotnet restore (Join-Path $Root 'tools/TestTools/TestTools.csproj') --packages $Packages -v quiet }
    $pesterChild = Join-Path $Root 'tests/Pester/Invoke-Tests.ps1'
    # The stand-in qubesd the Pester suite starts to run its tests against the live backend too.
    $env:QUBESFW_TEST_QUBESD = Join-Path $Root "tools/TestQubesd/bin/$Configuration/net10.0/TestQubesd.dll"
    & (Join-Path $PSHOME 'pwsh') -NoProfile -NonInteractive -File $pesterChild -PesterPath (Join-Path $Packages "pester/$PesterVersion/tools/Pester.psd1") -ModulePath (Join-Path $ModuleOut 'QubesFirewall.psd1') -ResultPath (Join-Path $Out 'testResults.xml')
    $pesterExit = $LASTEXITCODE
    $summary = Join-Path $Out 'pester-summary.txt'
    if (Test-Path $summary) {
        $p, $f = (Get-Content $summary).Split(' ')
        $passed += [int]$p; $failed += [int]$f
    }
    if ($pesterExit -ne 0) { $failures += "Pester (exit code $pesterExit)" }

    Write-Host ''
    Write-Host "Tests: $passed passed, $failed failed"
    if ($failures) { throw "Test run failed: $($failures -join '; ')" }
}

foreach ($t in $Task) {
    switch ($t) {
        'Build' { Invoke-Build }
        'Docs' { Invoke-Build; Invoke-Docs }
        'Package' { Invoke-Package }
        'Test' { Invoke-Tests }
        'Clean' { if (Test-Path $Out) { Remove-Item -Recurse -Force $Out }; Invoke-Native 'dotnet clean' { dotnet clean (Join-Path $Root 'QubesFirewall.slnx') -v quiet --nologo } }
    }
}
