# qubes.ConnectTCP bindings in real pwsh, on a copy of the sample root: offline, and live through the stand-in qubesd
# with dom0's files under the root's qubesfirewall-state/dom0 ($env:QUBESFW_DOM0_ROOT).
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')

    function Get-PolicyLines {
        $file = Join-Path $script:root 'qubesfirewall-state/dom0/etc/qubes/policy.d/70-qubesfirewall.policy'
        if (Test-Path -LiteralPath $file) {
            Get-Content -LiteralPath $file | Where-Object { $_ -and -not $_.StartsWith('#') } | ForEach-Object { , ($_ -split '\s+') }
        }
    }
}

Describe 'qubes.ConnectTCP bindings (<Backend>)' -ForEach @(@{ Backend = 'offline' }, @{ Backend = 'live' }) {
    BeforeEach { Use-TestBackend $Backend }
    AfterEach { Reset-TestBackend }

    It 'declares a binding and allows exactly it in the dom0 policy' {
        $b = Add-QubeTcpBinding -From personal -To work -Port 5432 -PassThru
        $b.From | Should -Be 'personal'
        $b.Permanent | Should -BeFalse
        $b.Command | Should -Be 'qvm-connect-tcp 5432:@default:5432'
        (Get-Qube personal).Features['qubesfirewall.tcp.work.5432'] | Should -Be 'uuid=30f0be04-363a-548e-b2e8-c23ae627912a localport=5432 permanent=no' # bound to personal's uuid
        $lines = @(Get-PolicyLines)
        $lines.Count | Should -Be 1
        $lines[0] | Should -Be @('qubes.ConnectTCP', '+5432', 'personal', '@default', 'allow', 'target=work')
    }

    It 'lists bindings as a table and removes what Get pipes' {
        Add-QubeTcpBinding personal work 5432
        Add-QubeTcpBinding work personal 22 -WarningAction SilentlyContinue
        (Get-QubeTcpBinding | Format-Table | Out-String -Width 200) | Should -Match 'From\s+To\s+Port\s+LocalPort\s+Permanent\s+Listener'
        Get-QubeTcpBinding -From personal | Remove-QubeTcpBinding -Confirm:$false
        (Get-QubeTcpBinding).From | Should -Be 'work'
        @(Get-PolicyLines).Count | Should -Be 1
        Remove-QubeTcpBinding work personal 22 -Confirm:$false
        Get-QubeTcpBinding | Should -BeNullOrEmpty
        Get-PolicyLines | Should -BeNullOrEmpty
    }

    It 'refuses conflicts, dom0 and unknown bindings with their error ids' {
        Add-QubeTcpBinding personal work 5432
        { Add-QubeTcpBinding personal vault 5432 -ErrorAction Stop } | Should -Throw -ErrorId 'TcpBindingConflict,QubesFirewall.PowerShell.Cmdlets.AddQubeTcpBindingCommand'
        { Add-QubeTcpBinding personal dom0 22 -ErrorAction Stop } | Should -Throw -ErrorId 'Dom0NotAllowed,QubesFirewall.PowerShell.Cmdlets.AddQubeTcpBindingCommand'
        { Remove-QubeTcpBinding personal work 1 -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'TcpBindingNotFound,QubesFirewall.PowerShell.Cmdlets.RemoveQubeTcpBindingCommand'
    }

    It 'writes nothing with -WhatIf' {
        $policy = Join-Path $script:root 'qubesfirewall-state/dom0/etc/qubes/policy.d/70-qubesfirewall.policy'
        Add-QubeTcpBinding personal work 5432 -WhatIf
        Test-Path -LiteralPath $policy | Should -BeFalse
        Get-QubeTcpBinding | Should -BeNullOrEmpty
    }
}

Describe 'Permanent bindings (offline)' {
    BeforeEach { Use-TestBackend 'offline' }
    AfterEach { Reset-TestBackend }

    It 'installs the socket units from the client''s rc.local managed block' {
        Get-Qube untrusted | Add-QubeTcpBinding -To work -Port 444 -LocalPort 10444 -Permanent
        $rc = Get-Content -Raw (Join-Path $script:root 'qubesfirewall-state/untrusted/rw/config/rc.local')
        $rc | Should -Match '(?m)^# >>> qubesfirewall managed block: do not edit >>>$'
        $rc | Should -Match '(?m)^ListenStream=127\.0\.0\.1:10444$'
        $rc | Should -Match '(?m)^ExecStart=/usr/bin/qrexec-client-vm @default qubes\.ConnectTCP\+444$'
        (Get-QubeTcpBinding untrusted).Unit | Should -Be 'qubesfirewall-tcp-10444.socket'
        Remove-QubeTcpBinding untrusted work 444 -Confirm:$false
        Get-Content -Raw (Join-Path $script:root 'qubesfirewall-state/untrusted/rw/config/rc.local') | Should -BeExactly "#!/bin/sh`n"
    }
}

Describe 'Permanent bindings (live)' {
    BeforeEach { Use-TestBackend 'live' }
    AfterEach { Reset-TestBackend }

    It 'refuses a listener in a halted qube and writes nothing' {
        { Add-QubeTcpBinding untrusted work 444 -Permanent -ErrorAction Stop } | Should -Throw -ErrorId 'QubesNotRunning,QubesFirewall.PowerShell.Cmdlets.AddQubeTcpBindingCommand'
        Get-QubeTcpBinding | Should -BeNullOrEmpty
        Get-PolicyLines | Should -BeNullOrEmpty
    }
}
