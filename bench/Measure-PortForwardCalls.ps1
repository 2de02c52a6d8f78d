<#
.SYNOPSIS
    Times Add-QubePortForward from its start to its last admin.vm.feature.Set, for 1, 10 and 100 forwards,
    against the stand-in qubesd with qubesd's work modelled (issue #21).
.DESCRIPTION
    Each count gets a fresh copy of the sample root served by tools/TestQubesd with --service-time-ms and
    --latency-ms (one lock for the service time, as qubesd's single asyncio loop; latency per connection).
    The agent is recorded on work, sys-firewall and sys-net first (the feature qubesfirewall.agent, as
    Install-QubeFirewallAgent leaves it), so the forwards go through vm-config features only, no qvm-run.
    N forwards to work (TCP 20000.., from 192.0.2.0/24) are piped into one Add-QubePortForward -NoWait; with the
    agent its last Admin API call is the last feature.Set, so the command's wall time is the time asked for.
    A warm-up round on its own root comes first (module JIT). Not run by .ci/run.
    -ExtraQubes N adds N plain AppVMs (default netvm, no features) to each copy: what a forward costs on a larger dom0,
    where every plan still looks at every qube's feature names.
.EXAMPLE
    dotnet pwsh ./build.ps1 -Task Package; dotnet pwsh ./bench/Measure-PortForwardCalls.ps1
.EXAMPLE
    dotnet pwsh ./bench/Measure-PortForwardCalls.ps1 -Counts 1 -ExtraQubes 83   # one forward on a dom0 of 100 qubes
#>
[CmdletBinding()]
param(
    [int[]] $Counts = @(1, 10, 100),
    [double] $ServiceTimeMs = 1,
    [double] $LatencyMs = 0.2,
    [int] $ExtraQubes = 0,
    [string] $ModulePath = (Join-Path $PSScriptRoot '../out/QubesFirewall/QubesFirewall.psd1'),
    [string] $QubesdPath = (Join-Path $PSScriptRoot '../tools/TestQubesd/bin/Release/net10.0/TestQubesd.dll')
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

Import-Module (Resolve-Path $ModulePath).Path -Force
$QubesdPath = (Resolve-Path $QubesdPath).Path
$sampleRoot = Join-Path $PSScriptRoot '../examples/qubes-root'
$work = Join-Path ([IO.Path]::GetTempPath()) ('qfw-fwdbench-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
New-Item -ItemType Directory -Path $work | Out-Null

function Invoke-Round([string] $Name, [int] $Count) {
    $root = Join-Path $work $Name
    [Microsoft.VisualBasic.FileIO.FileSystem]::CopyDirectory($sampleRoot, $root)
    if ($ExtraQubes -gt 0) {
        $xmlPath = Join-Path $root 'qubes.xml'
        $domains = foreach ($i in 1..$ExtraQubes) {
            $qid = 200 + $i
            "    <domain id=`"domain-$qid`" class=`"AppVM`">`n      <properties>`n        <property name=`"label`">red</property>`n" +
            "        <property name=`"name`">extra-$('{0:D4}' -f $i)</property>`n        <property name=`"qid`">$qid</property>`n" +
            "        <property name=`"template`">fedora-42-xfce</property>`n      </properties>`n      <features/>`n      <tags/>`n    </domain>`n"
        }
        $xml = [IO.File]::ReadAllText($xmlPath).Replace('  </domains>', ($domains -join '') + '  </domains>')
        [IO.File]::WriteAllText($xmlPath, $xml)
    }
    $socket = Join-Path $work "$Name.sock"
    $log = Join-Path $work "$Name.log"
    $start = [System.Diagnostics.ProcessStartInfo]::new('dotnet')
    foreach ($a in @($QubesdPath, $root, $socket, '--log', $log, '--service-time-ms', "$ServiceTimeMs", '--latency-ms', "$LatencyMs")) {
        $start.ArgumentList.Add($a)
    }
    $start.RedirectStandardInput = $true   # the server stops when its standard input closes
    $start.RedirectStandardOutput = $true
    $start.UseShellExecute = $false
    $server = [System.Diagnostics.Process]::Start($start)
    try {
        while (-not (Test-Path $socket)) {
            if ($server.HasExited) { throw "TestQubesd exited with code $($server.ExitCode)" }
            Start-Sleep -Milliseconds 50
        }
        $env:QUBESFW_ROOT = $null
        $env:QUBESFW_QUBESD_SOCKET = $socket
        $env:QUBESFW_DOM0_ROOT = Join-Path $root 'qubesfirewall-state/dom0'
        $env:XDG_RUNTIME_DIR = $work   # the deployment lock and its stamp of this round alone
        $backend = [QubesFirewall.Engine.Backends.BackendSelector]::Open($null)
        try {
            foreach ($qube in 'sys-net', 'sys-firewall', 'work') {
                $backend.SetFeature($qube, [QubesFirewall.Engine.Agent.AgentScript]::VersionFeature, [QubesFirewall.Engine.Agent.AgentScript]::Version)
            }
        }
        finally { $backend.Dispose() }
        Set-Content $log -Value $null -NoNewline
        $forwards = foreach ($i in 1..$Count) { [pscustomobject]@{ VMName = 'work'; Port = 20000 + $i; AllowFrom = '192.0.2.0/24' } }
        $watch = [System.Diagnostics.Stopwatch]::StartNew()
        $forwards | Add-QubePortForward -NoWait
        $watch.Stop()
        $calls = @(Get-Content $log | Where-Object { $_ })
        $sets = @($calls | Where-Object { $_ -like 'admin.vm.feature.Set+*' })
        $last = [array]::LastIndexOf([string[]] $calls, $sets[-1])
        [pscustomobject]@{
            Qubes = @(Select-String -Path (Join-Path $root 'qubes.xml') -Pattern '<domain ').Count
            Forwards = $Count
            Milliseconds = [math]::Round($watch.Elapsed.TotalMilliseconds, 1)
            Calls = $calls.Count
            FeatureSet = $sets.Count
            CallsAfterLastSet = $calls.Count - 1 - $last
            ByMethod = ($calls | ForEach-Object { ($_ -split '[+ ]', 2)[0] -replace '^admin\.(vm\.)?', '' } | Group-Object |
                Sort-Object Name | ForEach-Object { "$($_.Count) $($_.Name)" }) -join ', '
        }
    }
    finally {
        $env:QUBESFW_QUBESD_SOCKET = $null
        $env:QUBESFW_DOM0_ROOT = $null
        $server.StandardInput.Close()
        if (-not $server.WaitForExit(5000)) { Stop-Process -Id $server.Id }
        $server.Dispose()
    }
}

try {
    Invoke-Round 'warmup' 1 | Out-Null
    foreach ($n in $Counts) { Invoke-Round "n$n" $n }
}
finally {
    Remove-Item -Recurse -Force $work
}
