#!/usr/bin/env pwsh
<#
.SYNOPSIS
    Builds, documents, packages and tests the QubesFirewall module.
.DESCRIPTION
    Tasks (run in the order given):
      Build    compile the solution (engine, cmdlets, tests, tools)
      Docs     turn docs/cmdlets/*.md (PlatyPS layout) into the MAML help Get-Help reads
      Package  Build + Docs, then stage the importable module in out/QubesFirewall/ and pack it
               as out/QubesFirewall.<version>.nupkg, the package Install-PSResource installs
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
    $version = Get-ModuleVersion
    Write-StagedManifest -Version $version
    # CliWrap runs qvm-run for the live backend; it ships beside the engine.
    foreach ($file in 'QubesFirewall.PowerShell.dll', 'QubesFirewall.Engine.dll', 'CliWrap.dll', 'QubesFirewall.format.ps1xml') {
        Copy-Item (Join-Path $bin $file) $ModuleOut
    }
    Invoke-ReadyToRun $bin
    Copy-Item (Join-Path $HelpOut '*') (Join-Path $ModuleOut 'en-US') -Recurse
    # The sample Qubes root ships with the module so a user can try it anywhere (copy it before writing).
    Copy-Item (Join-Path $Root 'examples/qubes-root') (Join-Path $ModuleOut 'examples/qubes-root') -Recurse
    # .gitkeep files only keep empty qube folders in git: Install-PSResource drops dot files and a
    # package holds no empty folder, so the staged module has neither (the engine creates a qube's
    # folder when it first writes there).
    Get-ChildItem (Join-Path $ModuleOut 'examples') -Recurse -Force -File -Filter '.gitkeep' | Remove-Item -Force
    Get-ChildItem (Join-Path $ModuleOut 'examples') -Recurse -Directory | Sort-Object { $_.FullName.Length } -Descending |
        Where-Object { -not (Get-ChildItem -LiteralPath $_.FullName -Force) } | Remove-Item
    # The example of a user's own Pester suite, next to the root it runs against by default.
    Copy-Item (Join-Path $Root 'examples/MyQubes.Tests.ps1') (Join-Path $ModuleOut 'examples')
    Copy-Item (Join-Path $Root 'LICENSE') $ModuleOut
    $forbidden = Get-ChildItem $ModuleOut -Recurse -Include 'System.Management.Automation.dll', 'PowerShellStandard*'
    if ($forbidden) { throw "The staged module must not carry PowerShell's own assemblies: $($forbidden.Name -join ', ')" }
    Write-Host "Module staged in $ModuleOut"
    Assert-StagedVersion -Version $version
    Invoke-ModulePackage -Version $version
}

# One version: the manifest's ModuleVersion. Directory.Build.props gives it to the assemblies,
# these functions to the packaged manifest (with its release notes) and to the package.
function Get-ModuleVersion {
    $version = (Import-PowerShellDataFile -LiteralPath (Join-Path $Root 'QubesFirewall.psd1')).ModuleVersion
    if ($version -notmatch '^\d+\.\d+\.\d+$') { throw "QubesFirewall.psd1: ModuleVersion '$version' is not major.minor.patch." }
    $version
}

function Get-ReleaseNote {
    param([string] $Version)
    # The section '## <Version>' of CHANGELOG.md, up to the next '## ' heading.
    $changelog = Join-Path $Root 'CHANGELOG.md'
    $lines = if (Test-Path -LiteralPath $changelog) { Get-Content -LiteralPath $changelog } else { @() }
    $start = -1
    for ($i = 0; $i -lt $lines.Count; $i++) {
        if ($lines[$i] -match "^##\s+\[?$([regex]::Escape($Version))\]?(\s|$)") { $start = $i; break }
    }
    if ($start -lt 0) { throw "CHANGELOG.md has no section '## $Version' for the manifest's ModuleVersion: add one (see its head)." }
    $body = for ($i = $start + 1; $i -lt $lines.Count -and $lines[$i] -notmatch '^##\s'; $i++) { $lines[$i] }
    $notes = ($body -join "`n").Trim()
    if (-not $notes) { throw "CHANGELOG.md: the section '## $Version' is empty." }
    $notes
}

function Write-StagedManifest {
    param([string] $Version)
    # The manifest source with PSData.ReleaseNotes = '' filled from CHANGELOG.md (a single-quoted
    # string: only ' needs doubling).
    $text = Get-Content -Raw -LiteralPath (Join-Path $Root 'QubesFirewall.psd1')
    $pattern = "(?m)^(\s*ReleaseNotes\s*=\s*)''\s*$"
    if ([regex]::Matches($text, $pattern).Count -ne 1) { throw "QubesFirewall.psd1 needs exactly one line ReleaseNotes = '' for the build to fill." }
    $quoted = "'" + (Get-ReleaseNote -Version $Version).Replace("'", "''") + "'"
    $text = $text -replace $pattern, { $_.Groups[1].Value + $quoted }
    [System.IO.File]::WriteAllText((Join-Path $ModuleOut 'QubesFirewall.psd1'), $text, [System.Text.UTF8Encoding]::new($false))
}

function Assert-StagedVersion {
    param([string] $Version)
    $manifest = Test-ModuleManifest -Path (Join-Path $ModuleOut 'QubesFirewall.psd1') -ErrorAction Stop
    if ("$($manifest.Version)" -ne $Version) { throw "Staged manifest version $($manifest.Version), expected $Version." }
    foreach ($dll in 'QubesFirewall.PowerShell.dll', 'QubesFirewall.Engine.dll') {
        $v = [System.Reflection.AssemblyName]::GetAssemblyName((Join-Path $ModuleOut $dll)).Version
        if ("$($v.Major).$($v.Minor).$($v.Build)" -ne $Version) { throw "$dll has version $v, the manifest ${Version}: rebuild (dotnet build reads ModuleVersion from QubesFirewall.psd1)." }
    }
}

function Invoke-ModulePackage {
    param([string] $Version)
    # PSResourceGet (shipped with pwsh 7.4+) packs the staged folder as it is: the .nupkg holds exactly
    # out/QubesFirewall/ plus NuGet's own metadata; Install-PSResource installs it from a folder.
    Get-ChildItem -LiteralPath $Out -Filter 'QubesFirewall.*.nupkg' | Remove-Item -Force
    Write-Host '==> Compress-PSResource' -ForegroundColor Cyan
    # From out/: where the user's data folder does not exist yet, .NET gives PSResourceGet an empty
    # one and its repository list would land in the working directory.
    Push-Location $Out
    try { Compress-PSResource -Path $ModuleOut -DestinationPath $Out } finally { Pop-Location }
    $nupkg = Join-Path $Out "QubesFirewall.$Version.nupkg"
    if (-not (Test-Path -LiteralPath $nupkg)) { throw "Compress-PSResource did not write $nupkg." }
    Write-Host "Package written: $nupkg"
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

    # The network lab runs after the other two projects, not beside them: its agents answer within a
    # second on an idle machine, and the cmdlet tests start dozens of pwsh processes that would share its cores.
    $xunitExit = 0
    $xunitLines = @()
    $xunitResults = Join-Path $Out 'xunit-results'
    Remove-Item -LiteralPath $xunitResults -Recurse -Force -ErrorAction SilentlyContinue
    $lab = Join-Path $Root 'tests/QubesFirewall.Lab.Tests/QubesFirewall.Lab.Tests.csproj'
    $runs = @(
        @{ Name = 'engine and cmdlets'; Target = (Join-Path $Root 'QubesFirewall.slnx'); Filter = 'FullyQualifiedName!~QubesFirewall.Lab.Tests' },
        @{ Name = 'network lab'; Target = $lab; Filter = $null })
    foreach ($run in $runs) {
        Write-Host "==> xunit: $($run.Name) (dotnet test)" -ForegroundColor Cyan
        $filter = @($run.Filter, $TestFilter | Where-Object { $_ }) | ForEach-Object { "($_)" }
        $testArgs = @('test', $run.Target, '-c', $Configuration, '--no-build', '--nologo', '-v', 'quiet',
            '--logger', 'trx;LogFilePrefix=xunit', '--results-directory', $xunitResults)
        if ($filter) { $testArgs += @('--filter', ($filter -join '&')) }
        & dotnet @testArgs 2>&1 | ForEach-Object { "$_" } | Tee-Object -Variable runLines | Out-Host
        if ($LASTEXITCODE -ne 0) { $xunitExit = $LASTEXITCODE }
        $xunitLines += $runLines
    }
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
    # Each failed xunit test again, with its message, last, where the tail of a CI log shows it.
    foreach ($trx in Get-ChildItem -LiteralPath $xunitResults -Filter '*.trx' -ErrorAction SilentlyContinue) {
        $ns = @{ t = 'http://microsoft.com/schemas/VisualStudio/TeamTest/2010' }
        foreach ($node in Select-Xml -LiteralPath $trx.FullName -XPath "//t:UnitTestResult[@outcome='Failed']" -Namespace $ns) {
            Write-Host "FAILED $($node.Node.testName)" -ForegroundColor Red
            $message = Select-Xml -Xml $node.Node -XPath './/t:ErrorInfo/t:Message' -Namespace $ns | Select-Object -First 1
            if ($message) { Write-Host ($message.Node.InnerText -split "`n" | Select-Object -First 15 | Out-String).TrimEnd() }
        }
    }
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
