# The package build.ps1 -Task Package writes (out/QubesFirewall.<version>.nupkg): what it holds, the
# one version it carries, and its life under PSResourceGet (register a folder repository, install,
# import, run, update, uninstall) in child pwsh processes whose home is a temporary folder, so the
# user's own module path and repository list are never touched.
BeforeAll {
    $script:ModulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    $script:ModuleDir = Split-Path -Parent (Resolve-Path -LiteralPath $script:ModulePath).Path
    $script:OutDir = Split-Path -Parent $script:ModuleDir
    $script:RepoRoot = (Resolve-Path -LiteralPath (Join-Path $PSScriptRoot '../..')).Path
    $script:SourceManifest = Import-PowerShellDataFile -LiteralPath (Join-Path $script:RepoRoot 'QubesFirewall.psd1')
    $script:Version = $script:SourceManifest.ModuleVersion
    $script:Nupkg = Join-Path $script:OutDir "QubesFirewall.$($script:Version).nupkg"

    # Relative path (with /) -> SHA-256 of every file under a folder.
    function Get-FileHashTable([string] $Folder) {
        $table = @{}
        foreach ($file in Get-ChildItem -LiteralPath $Folder -Recurse -File -Force) {
            $relative = [System.IO.Path]::GetRelativePath($Folder, $file.FullName).Replace('\', '/')
            $table[$relative] = (Get-FileHash -LiteralPath $file.FullName -Algorithm SHA256).Hash
        }
        $table
    }

    # NuGet's own parts of a .nupkg (Open Packaging Conventions), which are not module files.
    function Test-NuGetPart([string] $Name) {
        $Name -eq '[Content_Types].xml' -or $Name -eq 'QubesFirewall.nuspec' -or $Name.StartsWith('_rels/') -or $Name.StartsWith('package/services/metadata/')
    }

    function Read-Nuspec {
        $zip = [System.IO.Compression.ZipFile]::OpenRead($script:Nupkg)
        try {
            $reader = [System.IO.StreamReader]::new($zip.GetEntry('QubesFirewall.nuspec').Open())
            try { [xml] $reader.ReadToEnd() } finally { $reader.Dispose() }
        } finally { $zip.Dispose() }
    }

    # CHANGELOG.md's section for a version: the lines after '## <version>' up to the next '## '.
    function Get-ChangelogSection([string] $Version) {
        $lines = Get-Content -LiteralPath (Join-Path $script:RepoRoot 'CHANGELOG.md')
        $start = [array]::FindIndex([string[]] $lines, [Predicate[string]] { param($l) $l -match "^## \[?$([regex]::Escape($Version))\]?( |$)" })
        if ($start -lt 0) { return $null }
        $section = foreach ($line in $lines[($start + 1)..($lines.Count - 1)]) { if ($line -match '^## ') { break }; $line }
        $section
    }
}

Describe 'The package file' {
    It 'is written by the Package task, named after the manifest version' {
        $script:Nupkg | Should -Exist
        @(Get-ChildItem -LiteralPath $script:OutDir -Filter 'QubesFirewall.*.nupkg').Name | Should -Be "QubesFirewall.$($script:Version).nupkg"
    }

    It 'holds exactly the files of out/QubesFirewall/, byte for byte, besides NuGet''s own parts' {
        $staged = Get-FileHashTable $script:ModuleDir
        $packed = @{}
        $zip = [System.IO.Compression.ZipFile]::OpenRead($script:Nupkg)
        try {
            foreach ($entry in $zip.Entries) {
                $name = [uri]::UnescapeDataString($entry.FullName)
                if ($name.EndsWith('/') -or (Test-NuGetPart $name)) { continue }
                $stream = $entry.Open()
                try { $packed[$name] = (Get-FileHash -InputStream $stream -Algorithm SHA256).Hash } finally { $stream.Dispose() }
            }
        } finally { $zip.Dispose() }
        $staged.Count | Should -BeGreaterThan 5
        # A package holds files only: the staged folder has no empty folder the package would lose.
        Get-ChildItem -LiteralPath $script:ModuleDir -Recurse -Directory -Force | Where-Object { -not (Get-ChildItem -LiteralPath $_.FullName -Force) } | Should -BeNullOrEmpty
        ($packed.Keys | Sort-Object) | Should -Be ($staged.Keys | Sort-Object)
        foreach ($name in $staged.Keys) { $packed[$name] | Should -Be $staged[$name] -Because $name }
        $packed.Keys | Should -Contain 'QubesFirewall.psd1'
        $packed.Keys | Should -Contain 'en-US/QubesFirewall.PowerShell.dll-Help.xml'
    }

    It 'describes the module with the manifest''s id, version, description, tags, license and release notes' {
        $metadata = (Read-Nuspec).package.metadata
        $staged = Import-PowerShellDataFile -LiteralPath $script:ModulePath
        $metadata.id | Should -Be 'QubesFirewall'
        $metadata.version | Should -Be $script:Version
        $metadata.description | Should -Be $staged.Description
        $metadata.licenseUrl | Should -Be $staged.PrivateData.PSData.LicenseUri
        foreach ($tag in $staged.PrivateData.PSData.Tags) { -split $metadata.tags | Should -Contain $tag }
        $metadata.releaseNotes.Replace("`r`n", "`n") | Should -Be $staged.PrivateData.PSData.ReleaseNotes.Replace("`r`n", "`n")
    }
}

Describe 'One version' {
    It 'Test-ModuleManifest accepts the staged manifest: Core only, PowerShell 7.4 or later, the source''s version' {
        $manifest = Test-ModuleManifest -Path $script:ModulePath -ErrorAction Stop
        "$($manifest.Version)" | Should -Be $script:Version
        $manifest.CompatiblePSEditions | Should -Be @('Core')
        "$($manifest.PowerShellVersion)" | Should -Be '7.4'
        ($manifest.ExportedCmdlets.Keys | Sort-Object) | Should -Be ($script:SourceManifest.CmdletsToExport | Sort-Object)
        $manifest.Tags | Should -Contain 'Qubes'
        "$($manifest.LicenseUri)" | Should -Match '^https://'
    }

    It 'the engine and cmdlet assemblies carry the manifest''s version' {
        foreach ($dll in 'QubesFirewall.PowerShell.dll', 'QubesFirewall.Engine.dll') {
            $v = [System.Reflection.AssemblyName]::GetAssemblyName((Join-Path $script:ModuleDir $dll)).Version
            "$($v.Major).$($v.Minor).$($v.Build)" | Should -Be $script:Version -Because $dll
        }
    }

    It 'ModuleVersion is written in the manifest source only: Directory.Build.props reads it from there' {
        $props = Get-Content -Raw -LiteralPath (Join-Path $script:RepoRoot 'Directory.Build.props')
        $props | Should -Match 'QubesFirewall\.psd1'
        $props | Should -Not -Match ([regex]::Escape($script:Version))
    }

    It 'the release notes are CHANGELOG.md''s section for the version' {
        $section = Get-ChangelogSection $script:Version
        $section | Should -Not -BeNullOrEmpty -Because "CHANGELOG.md needs a '## $($script:Version)' section"
        $notes = (Import-PowerShellDataFile -LiteralPath $script:ModulePath).PrivateData.PSData.ReleaseNotes
        $notes.Trim() | Should -Be (($section -join "`n").Trim())
    }
}

Describe 'Installed with PSResourceGet from a local folder repository' {
    BeforeAll {
        # Not TestDrive: Pester empties what an It block adds there, and the three steps build on
        # each other (registered repository, installed versions).
        $script:Work = Join-Path ([System.IO.Path]::GetTempPath()) ('qfw-package-' + [guid]::NewGuid().ToString('N').Substring(0, 12))
        $script:TempHome = Join-Path $script:Work 'home'
        $script:Repository = Join-Path $script:Work 'repository'
        $script:RepositoryName = 'QubesFirewallTest' + [guid]::NewGuid().ToString('N').Substring(0, 6)
        $script:UserModules = Join-Path $script:TempHome '.local/share/powershell/Modules'
        # .NET gives PSResourceGet an empty data folder (so a store relative to the working
        # directory) unless the XDG folders exist: make them first.
        $script:Xdg = @{ XDG_DATA_HOME = '.local/share'; XDG_CONFIG_HOME = '.config'; XDG_CACHE_HOME = '.cache' }
        foreach ($folder in $script:Xdg.Values) { New-Item -ItemType Directory -Path (Join-Path $script:TempHome $folder) | Out-Null }
        New-Item -ItemType Directory -Path $script:Repository | Out-Null
        Copy-Item -LiteralPath $script:Nupkg -Destination $script:Repository

        # Runs a script in a new pwsh whose home (and so its module path, PSResourceGet's repository
        # list and installs) is the temporary folder; its last output line is JSON.
        function Invoke-IsolatedPwsh([string] $Script) {
            $file = Join-Path $script:Work ([guid]::NewGuid().ToString('N') + '.ps1')
            Set-Content -LiteralPath $file -Value $Script
            $start = [System.Diagnostics.ProcessStartInfo]::new((Join-Path $PSHOME 'pwsh'))
            foreach ($a in '-NoProfile', '-NonInteractive', '-File', $file, $script:RepositoryName, $script:Repository) { $start.ArgumentList.Add($a) }
            $start.Environment['HOME'] = $script:TempHome
            foreach ($name in $script:Xdg.Keys) { $start.Environment[$name] = Join-Path $script:TempHome $script:Xdg[$name] }
            $start.WorkingDirectory = $script:Work
            $start.Environment['POWERSHELL_TELEMETRY_OPTOUT'] = '1'
            $start.Environment['POWERSHELL_UPDATECHECK'] = 'Off'
            $start.Environment['NO_COLOR'] = '1'
            [void] $start.Environment.Remove('PSModulePath')
            [void] $start.Environment.Remove('QUBESFW_ROOT')
            $start.RedirectStandardOutput = $true
            $start.RedirectStandardError = $true
            $start.UseShellExecute = $false
            $process = [System.Diagnostics.Process]::Start($start)
            $stderr = $process.StandardError.ReadToEndAsync()
            $stdout = $process.StandardOutput.ReadToEnd()
            $process.WaitForExit()
            $lines = @($stdout -split "`n" | Where-Object { $_.Trim() })
            $lines[0..($lines.Count - 2)] | ForEach-Object { Write-Host "    | $_" }
            if ($process.ExitCode -ne 0) { throw "pwsh exited with $($process.ExitCode): $stdout $($stderr.Result)" }
            Join-Path $script:Work 'PSResourceGet' | Should -Not -Exist -Because 'PSResourceGet must keep its repository list in the temporary home'
            $lines[-1] | ConvertFrom-Json
        }
    }

    It 'Install-PSResource installs it into the user''s module path; it imports and runs from there' {
        $result = Invoke-IsolatedPwsh @'
param($Name, $Uri)
$ErrorActionPreference = 'Stop'
Register-PSResourceRepository -Name $Name -Uri $Uri -Trusted
Install-PSResource -Name QubesFirewall -Repository $Name -Scope CurrentUser
$installed = Get-InstalledPSResource -Name QubesFirewall
Write-Output "installed $($installed.Name) $($installed.Version) in $($installed.InstalledLocation)"
Import-Module QubesFirewall
$module = Get-Module QubesFirewall
$qubes = Get-Qube -Root (Join-Path $module.ModuleBase 'examples/qubes-root')
Write-Output "imported $($module.Name) $($module.Version) from $($module.ModuleBase); Get-Qube listed $(@($qubes).Count) qubes"
# A copy of the installed sample root takes a rule for a qube whose folder the package left out (it was empty).
$root = Join-Path $PWD 'root'
Copy-Item -LiteralPath (Join-Path $module.ModuleBase 'examples/qubes-root') -Destination $root -Recurse
Add-QubeFirewallRule -Root $root -VMName untrusted -Action Accept -DstHost 192.0.2.0/24 -Comment 'after install' -Confirm:$false
$added = @(Get-QubeFirewallRule -Root $root -VMName untrusted | Where-Object Comment -EQ 'after install')
Write-Output "Add-QubeFirewallRule on a copy of the installed sample root: $($added.Text)"
[pscustomobject]@{
    InstalledVersion = "$($installed.Version)"
    InstalledLocation = $installed.InstalledLocation
    ModuleBase = $module.ModuleBase
    ModuleVersion = "$($module.Version)"
    Commands = @((Get-Command -Module QubesFirewall).Name)
    Qubes = @($qubes.Name)
    Added = @($added.DstHost)
    ModulePath = @($env:PSModulePath -split [System.IO.Path]::PathSeparator)
    PSHome = $PSHOME
} | ConvertTo-Json -Compress
'@
        Get-Content -Raw -LiteralPath (Join-Path $script:TempHome '.local/share/PSResourceGet/PSResourceRepository.xml') | Should -Match $script:RepositoryName
        $result.InstalledVersion | Should -Be $script:Version
        $result.InstalledLocation | Should -Be $script:UserModules
        $result.ModuleBase | Should -Be (Join-Path $script:UserModules "QubesFirewall/$($script:Version)")
        $result.ModuleVersion | Should -Be $script:Version
        ($result.Commands | Sort-Object) | Should -Be ($script:SourceManifest.CmdletsToExport | Sort-Object)
        $result.Qubes | Should -Contain 'work'
        $result.Qubes | Should -Contain 'sys-firewall'
        $result.Added | Should -Be @('192.0.2.0/24')
        # Nothing of the real user's home is on its module path: only the temporary home, pwsh's own
        # folder and the machine-wide folder.
        $result.ModulePath | Should -Contain $script:UserModules
        foreach ($path in $result.ModulePath) {
            ($path.StartsWith($script:TempHome) -or $path.StartsWith($result.PSHome) -or -not $path.StartsWith($HOME)) | Should -BeTrue -Because "$path is on the module path"
        }
        # What was installed is what was staged.
        $installed = Get-FileHashTable $result.ModuleBase
        $staged = Get-FileHashTable $script:ModuleDir
        ($installed.Keys | Where-Object { $_ -ne 'PSGetModuleInfo.xml' } | Sort-Object) | Should -Be ($staged.Keys | Sort-Object)
        foreach ($name in $staged.Keys) { $installed[$name] | Should -Be $staged[$name] -Because $name }
    }

    It 'Update-PSResource takes a newer version from the repository, and Import-Module loads the newest' {
        # A newer package of the same module folder: only the manifest's version differs.
        $next = [version] $script:Version
        $nextVersion = "$($next.Major).$($next.Minor).$($next.Build + 1)"
        $copy = Join-Path $script:Work 'next/QubesFirewall'
        New-Item -ItemType Directory -Path (Split-Path $copy) | Out-Null
        Copy-Item -LiteralPath $script:ModuleDir -Destination $copy -Recurse
        $manifest = Join-Path $copy 'QubesFirewall.psd1'
        (Get-Content -Raw -LiteralPath $manifest) -replace "ModuleVersion(\s*)=(\s*)'$([regex]::Escape($script:Version))'", "ModuleVersion`$1=`$2'$nextVersion'" | Set-Content -LiteralPath $manifest -NoNewline
        Compress-PSResource -Path $copy -DestinationPath $script:Repository
        Join-Path $script:Repository "QubesFirewall.$nextVersion.nupkg" | Should -Exist

        $result = Invoke-IsolatedPwsh @'
param($Name, $Uri)
$ErrorActionPreference = 'Stop'
Update-PSResource -Name QubesFirewall -Repository $Name -Scope CurrentUser
$versions = @(Get-InstalledPSResource -Name QubesFirewall | ForEach-Object { "$($_.Version)" })
Import-Module QubesFirewall
Write-Output "installed versions: $($versions -join ', '); imported $((Get-Module QubesFirewall).Version)"
[pscustomobject]@{ Versions = $versions; Imported = "$((Get-Module QubesFirewall).Version)" } | ConvertTo-Json -Compress
'@
        ($result.Versions | Sort-Object) | Should -Be (@($script:Version, $nextVersion) | Sort-Object)
        $result.Imported | Should -Be $nextVersion
    }

    It 'Uninstall-PSResource removes every version; Unregister-PSResourceRepository forgets the repository' {
        $result = Invoke-IsolatedPwsh @'
param($Name, $Uri)
$ErrorActionPreference = 'Stop'
Uninstall-PSResource -Name QubesFirewall -Version '*' -Scope CurrentUser
Unregister-PSResourceRepository -Name $Name
$left = @(Get-InstalledPSResource -Name QubesFirewall -ErrorAction SilentlyContinue)
Write-Output "after uninstall: $($left.Count) installed; repositories: $((Get-PSResourceRepository).Name -join ', ')"
[pscustomobject]@{ Left = $left.Count; Repositories = @((Get-PSResourceRepository).Name) } | ConvertTo-Json -Compress
'@
        $result.Left | Should -Be 0
        $result.Repositories | Should -Not -Contain $script:RepositoryName
        @(Get-ChildItem -LiteralPath (Join-Path $script:UserModules 'QubesFirewall') -Recurse -File -ErrorAction SilentlyContinue) | Should -BeNullOrEmpty
    }

    AfterAll {
        if ($script:Work -and (Test-Path -LiteralPath $script:Work)) { Remove-Item -LiteralPath $script:Work -Recurse -Force }
    }
}
