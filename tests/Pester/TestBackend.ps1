# Helpers dot-sourced by Repair.Tests.ps1, IPv6.Tests.ps1 and Audit.Tests.ps1 (in their BeforeAll):
# a fresh copy of the sample root, used directly (offline) or served by the stand-in qubesd (live).

$script:SampleRoot = Join-Path $PSScriptRoot '../../examples/qubes-root'

function New-TestRoot {
    $path = Join-Path $TestDrive ([guid]::NewGuid().ToString('N').Substring(0, 8))
    # Copy-Item -Recurse takes about 2 s per copy on Linux; this takes milliseconds and keeps the modes
    [Microsoft.VisualBasic.FileIO.FileSystem]::CopyDirectory($script:SampleRoot, $path)
    $path
}

# The stand-in qubesd (tools/TestQubesd): serves a root on a socket the way qubesd serves dom0 and
# writes its changes back to that root; --log records one line per call ("method+arg dest").
function Start-TestQubesd([string] $Root, [string] $Socket, [string] $Log) {
    $dll = $env:QUBESFW_TEST_QUBESD
    if (-not $dll -or -not (Test-Path $dll)) {
        $dll = Get-ChildItem (Join-Path $PSScriptRoot '../../tools/TestQubesd/bin') -Recurse -Filter TestQubesd.dll -ErrorAction SilentlyContinue |
            Sort-Object LastWriteTime -Descending | Select-Object -First 1 -ExpandProperty FullName
    }
    if (-not $dll) { throw 'TestQubesd.dll is not built: run build.ps1 -Task Build first.' }
    $start = [System.Diagnostics.ProcessStartInfo]::new('dotnet')
    foreach ($a in @($dll, $Root, $Socket) + $(if ($Log) { '--log', $Log })) { $start.ArgumentList.Add($a) }
    $start.RedirectStandardInput = $true   # the server stops when its standard input closes
    $start.RedirectStandardOutput = $true
    $start.UseShellExecute = $false
    $process = [System.Diagnostics.Process]::Start($start)
    $deadline = (Get-Date).AddSeconds(20)
    while (-not (Test-Path $Socket)) {
        if ($process.HasExited) { throw "TestQubesd exited with code $($process.ExitCode)" }
        if ((Get-Date) -gt $deadline) { Stop-Process -Id $process.Id; throw 'TestQubesd did not start within 20 s' }
        Start-Sleep -Milliseconds 50
    }
    $process
}

function Stop-TestQubesd($Process) {
    if (-not $Process) { return }
    $Process.StandardInput.Close()
    if (-not $Process.WaitForExit(5000)) { Stop-Process -Id $Process.Id }
    $Process.Dispose()
}

# Points the cmdlets at a fresh copy of the sample root. $PowerStates (qube -> state) are written into
# the state folder first, so the stand-in qubesd starts with them too.
function Use-TestBackend([string] $Backend, [hashtable] $PowerStates = @{}) {
    $script:root = New-TestRoot
    foreach ($qube in $PowerStates.Keys) {
        $dir = Join-Path $script:root "qubesfirewall-state/$qube"
        New-Item -ItemType Directory -Force -Path $dir | Out-Null
        Set-Content -Path (Join-Path $dir 'power-state') -Value $PowerStates[$qube]
    }
    $script:server = $null
    $script:callLog = $null
    if ($Backend -eq 'live') {
        $script:socket = Join-Path $TestDrive ('q' + [guid]::NewGuid().ToString('N').Substring(0, 8) + '.sock')
        $script:callLog = "$($script:socket).log"
        $script:server = Start-TestQubesd -Root $script:root -Socket $script:socket -Log $script:callLog
        $env:QUBESFW_ROOT = $null
        $env:QUBESFW_QUBESD_SOCKET = $script:socket
    }
    else {
        $env:QUBESFW_ROOT = $script:root
        $env:QUBESFW_QUBESD_SOCKET = $null
    }
    $script:root
}

function Reset-TestBackend {
    Stop-TestQubesd $script:server
    $script:server = $null
    $env:QUBESFW_QUBESD_SOCKET = $null
    $env:QUBESFW_ROOT = $null
}

# The calls the stand-in qubesd logged (live only), e.g. 'admin.vm.property.Set+netvm work'.
function Get-TestCalls {
    if ($script:callLog -and (Test-Path $script:callLog)) { Get-Content $script:callLog } else { @() }
}
