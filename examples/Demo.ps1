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

function Show([string] $Title, [scriptblock] $Block) {
    Write-Host ''
    Write-Host "PS> $($Block.ToString().Trim())" -ForegroundColor Cyan
    & $Block | Out-Host
}

Write-Host "QubesFirewall demo on a copy of the sample root: $root" -ForegroundColor Green
Show 'qubes' { Get-Qube | Where-Object Class -ne TemplateVM }
Show 'rules' { Get-QubeFirewallRule work }
Show 'add' { 'action=accept dsthost=10.20.0.0/16 proto=tcp dstports=22 comment=admin network ssh' | Add-QubeFirewallRule -VMName work -PassThru }
Show 'add expiring' { Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstHost updates.example.com -DstPorts 443 -Expire ([timespan]::FromHours(2)) -Comment 'temporary updates' -PassThru }
Show 'whatif' { Get-QubeFirewallRule work | Where-Object Comment -eq 'temporary updates' | Remove-QubeFirewallRule -WhatIf }
Show 'bad input' { try { Add-QubeFirewallRule -VMName work -Action Accept -DstHost 1.2.3.4/33 -ErrorAction Stop } catch { "Refused ($($_.FullyQualifiedErrorId)): $($_.Exception.Message)" } }
Show 'sync' { Sync-QubeFirewall work -PassThru }
Show 'remove' { Get-QubeFirewallRule work | Where-Object Comment -eq 'temporary updates' | Remove-QubeFirewallRule -Confirm:$false -PassThru }
# sys-firewall in the sample is a disposable of default-dvm (as on a default install): -Force accepts that, the warning says what it means
Show 'forward' { Add-QubePortForward work 8443 -AllowFrom 192.168.1.0/24 -Force -PassThru -WarningAction SilentlyContinue }
Show 'forwards' { Get-QubePortForward }
Show 'link' { Enable-QubeInterVmNetwork -From work -To personal -Port 5432 -Force -PassThru -WarningAction SilentlyContinue }
Show 'audit' { Test-QubeFirewall work, untrusted | Format-Table Severity, VMName, Check, Message -Wrap }
Show 'picture' { Show-QubeNetwork }
$file = Join-Path $root 'work.psd1'
Show 'as code' { Export-QubeNetworkConfiguration -VMName work -Path $file; Get-Content $file | Select-Object -Skip 2 }
Show 'undo' { Disable-QubeInterVmNetwork -From work -To personal -Port 5432 -Confirm:$false; Remove-QubePortForward work 8443 -Confirm:$false; Get-QubePortForward; Get-QubeInterVmNetwork }
Show 'drift' { Test-QubeNetworkConfiguration $file | Format-Table VMName, Kind, Item, Expected, Actual -Wrap }
Show 'back as the file says' { Invoke-QubeNetworkConfiguration $file -Force -Confirm:$false -WarningAction SilentlyContinue; Test-QubeNetworkConfiguration $file; Show-QubeNetwork }

if ($KeepRoot) { Write-Host "`nThe root stays at $root (`$env:QUBESFW_ROOT = '$root')." -ForegroundColor Green }
else { Remove-Item -Recurse -Force $root }
