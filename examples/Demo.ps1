#!/usr/bin/env pwsh
<#
.SYNOPSIS
    A tour of QubesFirewall on a copy of the sample Qubes root: qubes, firewall rules,
    adding and removing rules, what the firewall qube will enforce, a port forward, a
    qube-to-qube link and the audit.
.DESCRIPTION
    Runs anywhere pwsh runs: it builds the module if out/QubesFirewall is missing, copies
    examples/qubes-root to a temporary folder (the cmdlets write to it) and points
    $env:QUBESFW_ROOT at that copy.
.PARAMETER KeepRoot
    Leave the temporary root in place and print its path, to keep experimenting.
#>
param([switch] $KeepRoot)
$ErrorActionPreference = 'Stop'
$repo = Split-Path $PSScriptRoot
$manifest = Join-Path $repo 'out/QubesFirewall/QubesFirewall.psd1'
if (-not (Test-Path $manifest)) {
    & (Join-Path $repo 'build.ps1') -Task Package
}
Import-Module $manifest -Force

$root = Join-Path ([IO.Path]::GetTempPath()) ("qubes-root-" + [guid]::NewGuid().ToString('N').Substring(0, 8))
[Microsoft.VisualBasic.FileIO.FileSystem]::CopyDirectory((Join-Path $PSScriptRoot 'qubes-root'), $root)
$env:QUBESFW_ROOT = $root

function Show-DemoStep([string] $Title, [scriptblock] $Block) {
    Write-Host ''
    Write-Host "PS> $($Block.ToString().Trim())" -ForegroundColor Cyan
    & $Block | Out-Host
}

Write-Host "QubesFirewall demo on a copy of the sample root: $root" -ForegroundColor Green
Show-DemoStep 'qubes' { Get-Qube | Where-Object Class -ne TemplateVM }
Show-DemoStep 'rules' { Get-QubeFirewallRule work }
Show-DemoStep 'add' { 'action=accept dsthost=10.20.0.0/16 proto=tcp dstports=22 comment=admin network ssh' | Add-QubeFirewallRule -VMName work -PassThru }
Show-DemoStep 'add expiring' { Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstHost updates.example.com -DstPorts 443 -Expire ([timespan]::FromHours(2)) -Comment 'temporary updates' -PassThru }
Show-DemoStep 'whatif' { Get-QubeFirewallRule work | Where-Object Comment -eq 'temporary updates' | Remove-QubeFirewallRule -WhatIf }
Show-DemoStep 'bad input' { try { Add-QubeFirewallRule -VMName work -Action Accept -DstHost 1.2.3.4/33 -ErrorAction Stop } catch { "Refused ($($_.FullyQualifiedErrorId)): $($_.Exception.Message)" } }
Show-DemoStep 'sync' { Sync-QubeFirewall work -PassThru }
Show-DemoStep 'remove' { Get-QubeFirewallRule work | Where-Object Comment -eq 'temporary updates' | Remove-QubeFirewallRule -Confirm:$false -PassThru }
# sys-firewall in the sample is a disposable of default-dvm (as on a default install): it keeps its own agent keys
Show-DemoStep 'forward' { Add-QubePortForward work 8443 -AllowFrom 192.168.1.0/24 -PassThru -WarningAction SilentlyContinue }
Show-DemoStep 'forwards' { Get-QubePortForward }
Show-DemoStep 'link' { Enable-QubeInterVmNetwork -From work -To personal -Port 5432 -PassThru -WarningAction SilentlyContinue }
Show-DemoStep 'audit' { Test-QubeFirewall work, untrusted | Format-Table Severity, VMName, Check, Message -Wrap }
Show-DemoStep 'picture' { Show-QubeNetwork }
$file = Join-Path $root 'work.psd1'
Show-DemoStep 'as code' { Export-QubeNetworkConfiguration -VMName work -Path $file; Get-Content $file | Select-Object -Skip 2 }
Show-DemoStep 'undo' { Disable-QubeInterVmNetwork -From work -To personal -Port 5432 -Confirm:$false; Remove-QubePortForward work 8443 -Confirm:$false; Get-QubePortForward; Get-QubeInterVmNetwork }
Show-DemoStep 'drift' { Test-QubeNetworkConfiguration $file | Format-Table VMName, Kind, Item, Expected, Actual -Wrap }
Show-DemoStep 'back as the file says' { Invoke-QubeNetworkConfiguration $file -Confirm:$false -WarningAction SilentlyContinue; Test-QubeNetworkConfiguration $file; Show-QubeNetwork }

if ($KeepRoot) { Write-Host "`nThe root stays at $root (`$env:QUBESFW_ROOT = '$root')." -ForegroundColor Green }
else { Remove-Item -Recurse -Force $root }
