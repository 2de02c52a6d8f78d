<#
.SYNOPSIS
    Times the offline pipelines of the packaged module against pwsh's own pipeline floor, measured
    in the same process (issue #21's table).
.DESCRIPTION
    Not run by .ci/run (tests/Pester/PipelineFloor.Tests.ps1 runs it small, with wide margins).
    Everything works on a copy of the sample root. Each row is the work's time over its floor's:
      text floor    Get-Content <10,000-line file> | Measure-Object
      object floor  $objs | Select-Object VMName, Action, Protocol, DstHost, DstPorts | Measure-Object
    - first pipeline: a new pwsh process per repetition imports the module (timed apart), pipes the
      file into Add-QubeFirewallRule as its first pipeline (JIT included), then times the text floor
      $Repeat times (warm; median). The row's ratio is the median of the processes' ratios.
    - the other rows run in this process, warmed up first, work and floor interleaved $Repeat times,
      medians of each; the rule list is put back before each Add so every run adds new rules.
    The machine may be shared with other builds: the ratios, not the times, are what to compare.
.EXAMPLE
    dotnet pwsh ./build.ps1 -Task Package; dotnet pwsh ./bench/Measure-PipelineFloor.ps1
#>
[CmdletBinding()]
param(
    [int] $Rules = 10000,
    [int] $Repeat = 7,
    # New processes for the first-pipeline row.
    [int] $FirstRepeat = 5,
    [string] $ModulePath = (Join-Path $PSScriptRoot '../out/QubesFirewall/QubesFirewall.psd1'),
    # Only the first-pipeline row (e.g. to compare ReadyToRun builds).
    [switch] $FirstOnly,
    # Return the rows as objects instead of printing the table.
    [switch] $PassThru
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$ModulePath = (Resolve-Path $ModulePath).Path
$sampleRoot = Join-Path $PSScriptRoot '../examples/qubes-root'
$work = Join-Path ([IO.Path]::GetTempPath()) ('qfw-floor-' + [guid]::NewGuid().ToString('N').Substring(0, 8))
$qube = 'work'

function Copy-Root([string] $To) {
    [Microsoft.VisualBasic.FileIO.FileSystem]::CopyDirectory($sampleRoot, $To)
    $To
}

function Get-Median([double[]] $Values) {
    $sorted = @($Values | Sort-Object)
    $n = $sorted.Count
    if ($n % 2) { $sorted[($n - 1) / 2] } else { ($sorted[$n / 2 - 1] + $sorted[$n / 2]) / 2 }
}

function Measure-Block([scriptblock] $Block) {
    $watch = [Diagnostics.Stopwatch]::StartNew()
    & $Block | Out-Null
    $watch.Stop()
    $watch.Elapsed.TotalMilliseconds
}

# Work and floor alternately, $Repeat times, after one untimed run of each; $Before (untimed) runs
# before every timed work run.
function Measure-Pair([scriptblock] $Work, [scriptblock] $Floor, [scriptblock] $Before = {}) {
    & $Before; Measure-Block $Work | Out-Null; Measure-Block $Floor | Out-Null
    $w = [Collections.Generic.List[double]]::new(); $f = [Collections.Generic.List[double]]::new()
    for ($i = 0; $i -lt $Repeat; $i++) {
        & $Before
        $w.Add((Measure-Block $Work))
        $f.Add((Measure-Block $Floor))
    }
    [pscustomobject]@{ WorkMs = Get-Median $w; FloorMs = Get-Median $f }
}

try {
    New-Item -ItemType Directory -Path $work | Out-Null
    $rulesFile = Join-Path $work 'rules.txt'
    $lines = for ($i = 0; $i -lt $Rules; $i++) {
        "action=accept dst4=10.$([math]::Floor($i / 62500) % 256).$([math]::Floor($i / 250) % 250).$($i % 250 + 1) proto=tcp dstports=$(1024 + $i % 60000)-$(1024 + $i % 60000) comment=bench rule $i"
    }
    [IO.File]::WriteAllLines($rulesFile, [string[]]$lines)
    $objects = for ($i = 0; $i -lt $Rules; $i++) {
        [pscustomobject]@{ VMName = $qube; Action = 'Accept'; Protocol = 'Udp'; DstHost = "10.$([math]::Floor($i / 62500) % 256).$([math]::Floor($i / 250) % 250).$($i % 250 + 1)"; DstPorts = "$(1024 + $i % 60000)" }
    }

    # First pipeline of a session: new processes.
    $child = Join-Path $work 'first.ps1'
    Set-Content $child @'
param($ModulePath, $RulesFile, $Root, $Qube, $Repeat)
$ErrorActionPreference = 'Stop'
$watch = [Diagnostics.Stopwatch]::StartNew()
Import-Module $ModulePath
$import = $watch.Elapsed.TotalMilliseconds
# JIT work on this thread (the pipeline's): what ReadyToRun code saves; background tier-1 recompiles not counted.
$jitted = [System.Runtime.JitInfo]::GetCompiledMethodCount($true)
$jitTime = [System.Runtime.JitInfo]::GetCompilationTime($true)
$watch.Restart()
Get-Content $RulesFile | Add-QubeFirewallRule -VMName $Qube -Root $Root
$first = $watch.Elapsed.TotalMilliseconds
$jitted = [System.Runtime.JitInfo]::GetCompiledMethodCount($true) - $jitted
$jitTime = ([System.Runtime.JitInfo]::GetCompilationTime($true) - $jitTime).TotalMilliseconds
$floors = for ($i = 0; $i -lt $Repeat; $i++) {
    $watch.Restart()
    Get-Content $RulesFile | Measure-Object | Out-Null
    $watch.Elapsed.TotalMilliseconds
}
[pscustomobject]@{ ImportMs = $import; FirstMs = $first; Jitted = $jitted; JitMs = $jitTime; FloorMs = ($floors | Sort-Object)[[math]::Floor($floors.Count / 2)] } | ConvertTo-Json -Compress
'@
    $pwsh = Join-Path $PSHOME 'pwsh'
    $firsts = @(for ($i = 0; $i -lt $FirstRepeat; $i++) {
        $root = Copy-Root (Join-Path $work "first-$i")
        $json = & $pwsh -NoProfile -NonInteractive -File $child -ModulePath $ModulePath -RulesFile $rulesFile -Root $root -Qube $qube -Repeat $Repeat
        if ($LASTEXITCODE -ne 0) { throw "The first-pipeline process failed: $json" }
        $json | ConvertFrom-Json
    })
    $firstRatio = Get-Median ($firsts | ForEach-Object { $_.FirstMs / $_.FloorMs })

    $firstRow = [pscustomobject]@{ Work = 'text lines, first pipeline of the session (JIT included)'; Key = 'First'; Ms = Get-Median ($firsts.FirstMs); FloorMs = Get-Median ($firsts.FloorMs); Ratio = $firstRatio; Goal = 3; Floor = 'text'; Jitted = Get-Median ($firsts.Jitted); JitMs = Get-Median ($firsts.JitMs); ImportMs = Get-Median ($firsts.ImportMs) }
    $rows = @($firstRow)
    if (-not $FirstOnly) {
    # Warm rows, in this process.
    Import-Module $ModulePath
    $root = Copy-Root (Join-Path $work 'warm')
    $firewall = Join-Path $root "appvms/$qube/firewall.xml"
    $original = Join-Path $work 'firewall.xml'
    Copy-Item $firewall $original
    $reset = { [IO.File]::Copy($original, $firewall, $true) }
    $textFloor = { Get-Content $rulesFile | Measure-Object }
    $objectFloor = { $objects | Select-Object VMName, Action, Protocol, DstHost, DstPorts | Measure-Object }

    $text = Measure-Pair -Work { Get-Content $rulesFile | Add-QubeFirewallRule -VMName $qube -Root $root } -Floor $textFloor -Before $reset
    $objs = Measure-Pair -Work { $objects | Add-QubeFirewallRule -Root $root } -Floor $objectFloor -Before $reset
    & $reset
    Get-Content $rulesFile | Add-QubeFirewallRule -VMName $qube -Root $root
    $count = @(Get-QubeFirewallRule $qube -Root $root).Count
    $get = Measure-Pair -Work { Get-QubeFirewallRule $qube -Root $root | Measure-Object } -Floor $textFloor
    $sync = Measure-Pair -Work { Sync-QubeFirewall $qube -Root $root -PassThru | Measure-Object } -Floor $textFloor

    $rows += @(
        [pscustomobject]@{ Work = "text lines, warm, $Rules new rules"; Key = 'Warm'; Ms = $text.WorkMs; FloorMs = $text.FloorMs; Ratio = $text.WorkMs / $text.FloorMs; Goal = 2; Floor = 'text' }
        [pscustomobject]@{ Work = 'objects by property name, warm'; Key = 'Objects'; Ms = $objs.WorkMs; FloorMs = $objs.FloorMs; Ratio = $objs.WorkMs / $objs.FloorMs; Goal = 2; Floor = 'object' }
        [pscustomobject]@{ Work = "Get-QubeFirewallRule of the $count-rule qube"; Key = 'Get'; Ms = $get.WorkMs; FloorMs = $get.FloorMs; Ratio = $get.WorkMs / $get.FloorMs; Goal = 1; Floor = 'text' }
        [pscustomobject]@{ Work = 'Sync-QubeFirewall -PassThru of it'; Key = 'Sync'; Ms = $sync.WorkMs; FloorMs = $sync.FloorMs; Ratio = $sync.WorkMs / $sync.FloorMs; Goal = 1; Floor = 'text' }
    )
    }
    if ($PassThru) { return $rows }

    "pwsh $($PSVersionTable.PSVersion), .NET $([Environment]::Version), $([Environment]::ProcessorCount) cores, load $((Get-Content /proc/loadavg -ErrorAction SilentlyContinue) -split ' ' | Select-Object -First 3)"
    "first pipeline (new process, median of $FirstRepeat): module import $([math]::Round((Get-Median ($firsts.ImportMs)), 1)) ms before it; during it $(Get-Median ($firsts.Jitted)) methods JIT-compiled on its thread in $([math]::Round((Get-Median ($firsts.JitMs)), 1)) ms"
    "module: $ModulePath; other rows: medians of $Repeat runs"
    ''
    '| work | ms | floor ms | ratio | goal |'
    '|---|---:|---:|---:|---:|'
    foreach ($r in $rows) { '| {0} | {1:N1} | {2:N1} ({3}) | {4:N2}x | <= {5}x |' -f $r.Work, $r.Ms, $r.FloorMs, $r.Floor, $r.Ratio, $r.Goal }
}
finally {
    Remove-Item -Recurse -Force $work -ErrorAction SilentlyContinue
}
