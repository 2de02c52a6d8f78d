#Requires -Version 7.4
<#
    The help that ships with the module: Get-Help shows the docs/cmdlets pages for every exported
    cmdlet, and every example in those pages runs, for real, against a fresh copy of the sample
    Qubes root.

    The module comes from $env:QUBESFW_TEST_MODULE (tests/Pester/Invoke-Tests.ps1 sets it), else
    from the staged out/QubesFirewall folder (dotnet pwsh ./build.ps1 -Task Package).
#>

BeforeDiscovery {
    $repoRoot = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
    $docsDir = Join-Path $repoRoot 'docs/cmdlets'
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $repoRoot 'out/QubesFirewall/QubesFirewall.psd1' }

    # The text of a '## NAME' section of a page, its lines joined as markdown joins them.
    function Get-DocSection([string[]] $Lines, [string] $Name) {
        $start = [array]::IndexOf($Lines, "## $Name")
        if ($start -lt 0) { return $null }
        $body = for ($i = $start + 1; $i -lt $Lines.Count -and $Lines[$i] -notmatch '^## '; $i++) { $Lines[$i] }
        (($body | Where-Object { $_.Trim() }) -join ' ').Trim()
    }

    # Every '### Example' of a page: its title and the code of its first fenced block.
    function Get-DocExample([System.IO.FileInfo] $File) {
        $lines = Get-Content -LiteralPath $File.FullName
        $inExamples = $false; $title = $null; $code = $null; $inCode = $false
        foreach ($line in $lines) {
            if ($line -match '^## ') {
                $inExamples = $line -eq '## EXAMPLES'
                continue
            }
            if (-not $inExamples) { continue }
            if ($inCode) {
                if ($line -match '^```\s*$') {
                    $inCode = $false
                    # Hashtables: Pester turns their keys into variables ($Title, $Code) in each test.
                    @{ File = $File.Name; Cmdlet = $File.BaseName; Title = $title; Code = ($code -join "`n") }
                    $title = $null
                }
                else { $code += $line }
                continue
            }
            if ($line -match '^### (.+)$') { $title = $Matches[1].Trim(); continue }
            if ($title -and $line -match '^```(powershell|pwsh|ps1|ps)?\s*$') { $inCode = $true; $code = @() }
        }
    }

    $pages = Get-ChildItem -LiteralPath $docsDir -Filter '*-*.md' | Sort-Object Name
    $examples = @(foreach ($page in $pages) { Get-DocExample $page })

    $exported = if (Test-Path -LiteralPath $modulePath) { (Import-PowerShellDataFile -LiteralPath $modulePath).CmdletsToExport } else { @() }
    $helpCases = @(foreach ($name in $exported) {
            $page = Join-Path $docsDir "$name.md"
            $synopsis = if (Test-Path -LiteralPath $page) { Get-DocSection (Get-Content -LiteralPath $page) 'SYNOPSIS' }
            @{ Name = $name; Synopsis = $synopsis }
        })
}

BeforeAll {
    $script:RepoRoot = (Resolve-Path (Join-Path $PSScriptRoot '../..')).Path
    $script:ModulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $RepoRoot 'out/QubesFirewall/QubesFirewall.psd1' }
    if (-not (Test-Path -LiteralPath $ModulePath)) {
        throw "The staged module is missing ($ModulePath). Run 'dotnet pwsh ./build.ps1 -Task Package' first."
    }
    $script:ModulePath = (Resolve-Path -LiteralPath $ModulePath).Path
    Import-Module $ModulePath -Force

    # The module's own copy of the sample root, else the repository's.
    $script:SampleRoot = Join-Path (Split-Path $ModulePath) 'examples/qubes-root'
    if (-not (Test-Path -LiteralPath $SampleRoot)) { $script:SampleRoot = Join-Path $RepoRoot 'examples/qubes-root' }

    $script:CommonParameters = [System.Management.Automation.Cmdlet]::CommonParameters
}

Describe 'Module manifest' {
    It 'exports at least one cmdlet' {
        (Get-Module QubesFirewall).ExportedCmdlets.Count | Should -BeGreaterThan 0
    }
}

Describe 'Get-Help <Name> -Full' -ForEach $helpCases {
    BeforeAll {
        $script:Help = Get-Help -Name $Name -Full
        $script:Command = Get-Command -Name $Name -Module QubesFirewall
    }

    It 'has a page in docs/cmdlets' {
        $Synopsis | Should -Not -BeNullOrEmpty -Because "docs/cmdlets/$Name.md must exist and have a ## SYNOPSIS"
    }

    It 'shows the synopsis from the docs, not the generated one' {
        $Help.Synopsis.Trim() | Should -Not -BeLike "$Name *" -Because 'without MAML help Get-Help shows the syntax line as the synopsis'
        ($Help.Synopsis -replace '\s+', ' ').Trim() | Should -BeExactly $Synopsis
    }

    It 'shows a description' {
        (@($Help.description) | ForEach-Object Text) -join '' | Should -Not -BeNullOrEmpty
    }

    It 'describes every parameter' {
        $names = $Command.Parameters.Keys | Where-Object { $_ -notin $CommonParameters }
        $undescribed = foreach ($parameterName in $names) {
            $entry = @($Help.parameters.parameter) | Where-Object { $_.name -eq $parameterName }
            $text = (@($entry.description) | ForEach-Object Text) -join ''
            if ([string]::IsNullOrWhiteSpace($text)) { "-$parameterName" }
        }
        $undescribed | Should -BeNullOrEmpty -Because "every parameter of $Name needs a description in its help"
    }

    It 'shows at least one example with code' {
        $withCode = @($Help.examples.example) | Where-Object { -not [string]::IsNullOrWhiteSpace($_.code) }
        @($withCode).Count | Should -BeGreaterOrEqual 1
    }
}

Describe 'Examples in docs/cmdlets' {
    BeforeAll {
        $script:SavedRoot = $env:QUBESFW_ROOT
    }

    AfterAll {
        $env:QUBESFW_ROOT = $SavedRoot
    }

    Context '<File>' -ForEach ($examples | Group-Object { $_.File } | ForEach-Object { @{ File = $_.Name; Examples = @($_.Group) } }) {
        It '<Title>' -ForEach $Examples {
            $Code | Should -Not -BeNullOrEmpty -Because 'each example needs a ```powershell block'
            # A fresh copy of the sample root and an empty working folder for each example.
            $work = Join-Path $TestDrive ([guid]::NewGuid().ToString('N').Substring(0, 12))
            $root = Join-Path $work 'qubes-root'
            $cwd = Join-Path $work 'cwd'
            New-Item -ItemType Directory -Path $work, $cwd | Out-Null
            [Microsoft.VisualBasic.FileIO.FileSystem]::CopyDirectory($SampleRoot, $root) # fast, keeps the modes

            $env:QUBESFW_ROOT = $root
            Push-Location -LiteralPath $cwd
            # Its own runspace: the example's variables stay there, and a confirmation prompt
            # fails (there is no interactive host) instead of waiting for an answer.
            $runspace = [runspacefactory]::CreateRunspace()
            $ps = $null
            try {
                $runspace.Open()
                $ps = [powershell]::Create($runspace)
                $null = $ps.AddScript('param($Module, $Location) Import-Module $Module -ErrorAction Stop; Set-Location -LiteralPath $Location').
                    AddArgument($ModulePath).AddArgument($cwd)
                $null = $ps.Invoke()
                $ps.Commands.Clear()
                $null = $ps.AddScript("`$ErrorActionPreference = 'Stop'`n" + $Code).AddCommand('Out-String')
                $failure = $null
                $text = try { $ps.Invoke() } catch { $failure = $_.Exception.InnerException ?? $_.Exception }
                $errors = @($ps.Streams.Error | ForEach-Object { "$($_.FullyQualifiedErrorId): $_" })
                if ($failure) { $errors += "$($failure.GetType().Name): $($failure.Message)" }
                $errors | Should -BeNullOrEmpty -Because "the example must run without error. It printed:`n$text"
            }
            finally {
                if ($ps) { $ps.Dispose() }
                $runspace.Dispose()
                Pop-Location
                $env:QUBESFW_ROOT = $SavedRoot
            }
        }
    }

    It 'asks no confirmation in any example' {
        # Remove-QubeFirewallRule asks by default (ConfirmImpact High): examples must say -Confirm:$false or -WhatIf.
        $prompting = foreach ($example in $examples) {
            foreach ($line in ($example.Code -split "`n")) {
                if ($line -match 'Remove-QubeFirewallRule' -and $line -notmatch '-Confirm:\$false|-WhatIf') { "$($example.File) / $($example.Title): $($line.Trim())" }
            }
        }
        $prompting | Should -BeNullOrEmpty
    } -TestCases @{ examples = $examples }
}
