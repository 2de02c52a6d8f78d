# Helpers every Pester file dot-sources in its BeforeAll: a fresh copy of the sample root, used directly
# (offline) or served by the stand-in qubesd (live), and small readers of what the cmdlets wrote.

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
        # dom0's own files (the qrexec policy) go to the copy, never to this machine's /etc
        $env:QUBESFW_DOM0_ROOT = Join-Path $script:root 'qubesfirewall-state/dom0'
        # the deployment lock and its stamp too: another run on this machine must not make these commands read again
        if (-not (Test-Path variable:script:runtimeDir)) { $script:runtimeDir = $env:XDG_RUNTIME_DIR }
        $env:XDG_RUNTIME_DIR = (New-Item -ItemType Directory -Force -Path (Join-Path $script:root 'run')).FullName
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
    $env:QUBESFW_DOM0_ROOT = $null
    $env:QUBESFW_ROOT = $null
    if (Test-Path variable:script:runtimeDir) {
        $env:XDG_RUNTIME_DIR = $script:runtimeDir
        Remove-Variable -Scope Script -Name runtimeDir
    }
}

# The calls the stand-in qubesd logged (live only), e.g. 'admin.vm.property.Set+netvm work'.
function Get-TestCalls {
    if ($script:callLog -and (Test-Path $script:callLog)) { Get-Content $script:callLog } else { @() }
}

# A file inside a qube, as the offline root keeps it in its state folder: the path, or the text ($null if absent).
function Get-StateFilePath([string] $Qube, [string] $Path) {
    Join-Path $env:QUBESFW_ROOT "qubesfirewall-state/$Qube/$($Path.TrimStart('/'))"
}

function Get-StateFile([string] $Qube, [string] $Path) {
    $file = Get-StateFilePath $Qube $Path
    if (Test-Path -LiteralPath $file) { Get-Content -LiteralPath $file -Raw }
}

# qvm-features on the offline copy, through the module's own offline backend (as qubesd stores features in qubes.xml).
function Set-TestFeature([string] $Qube, [string] $Name, [string] $Value) {
    $backend = [QubesFirewall.Engine.Backends.OfflineRoot]::new($env:QUBESFW_ROOT, $null)
    try { $backend.SetFeature($Qube, $Name, $Value) } finally { $backend.Dispose() }
}

function Remove-TestFeature([string] $Qube, [string] $Name) {
    $backend = [QubesFirewall.Engine.Backends.OfflineRoot]::new($env:QUBESFW_ROOT, $null)
    try { $backend.RemoveFeature($Qube, $Name) } finally { $backend.Dispose() }
}

# Every file of a root with its hash (locks left out): equal before and after means nothing was written.
function Get-RootHash([string] $Root) {
    Get-ChildItem $Root -Recurse -File | Where-Object Name -notlike '*.lock' | Sort-Object FullName |
        ForEach-Object { '{0} {1}' -f $_.FullName, (Get-FileHash $_.FullName -Algorithm SHA256).Hash }
}
