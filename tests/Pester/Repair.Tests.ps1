# Repair-QubeNetVm in real pwsh, on both backends. In the sample, sys-net, sys-firewall, work and
# personal run; work and personal follow default_netvm (sys-firewall). Order by hand: sys-firewall
# (one hop from sys-net), then personal and work (two hops, qubes.xml order).
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Repair-QubeNetVm (<Backend>)' -ForEach @(@{ Backend = 'offline' }, @{ Backend = 'live' }) {
    AfterEach { Reset-TestBackend }

    It 're-attaches every running client, parents first, and leaves qubes.xml as it was' {
        $root = Use-TestBackend $Backend
        $before = Get-FileHash (Join-Path $root 'qubes.xml')
        $results = Repair-QubeNetVm -Confirm:$false
        $results.VMName | Should -Be @('sys-firewall', 'personal', 'work')
        $results.Action | Select-Object -Unique | Should -Be 'Reattached'
        $results[2].Commands | Should -Be @('qvm-prefs work netvm sys-firewall', 'qvm-prefs --default work netvm')
        (Get-FileHash (Join-Path $root 'qubes.xml')).Hash | Should -Be $before.Hash
        (Get-Qube work).NetVmSource | Should -Be 'Default'
        if ($Backend -eq 'live') {
            Get-TestCalls | Where-Object { $_ -match '^admin\.vm\.(property\.(Set|Reset)|Start)' } | Should -Be @(
                'admin.vm.property.Set+netvm sys-firewall'
                'admin.vm.property.Set+netvm personal'
                'admin.vm.property.Reset+netvm personal'
                'admin.vm.property.Set+netvm work'
                'admin.vm.property.Reset+netvm work'
            )
        }
    }

    It 'refuses the clients of a halted network qube, and starts it first with -Start' {
        $null = Use-TestBackend $Backend -PowerStates @{ 'sys-firewall' = 'Halted' }
        $failed = Repair-QubeNetVm -NetVM sys-firewall -Confirm:$false -ErrorAction SilentlyContinue -ErrorVariable problems
        $failed.Action | Should -Be @('Failed', 'Failed')
        $problems.Count | Should -Be 2
        $problems[0].FullyQualifiedErrorId | Should -Be 'NetVmNotRunning,QubesFirewall.PowerShell.Cmdlets.RepairQubeNetVmCommand'
        { Repair-QubeNetVm -NetVM sys-firewall -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'NetVmNotRunning,QubesFirewall.PowerShell.Cmdlets.RepairQubeNetVmCommand'

        $results = 'sys-firewall' | Repair-QubeNetVm -Start -Confirm:$false
        $results | ForEach-Object { "$($_.VMName) $($_.Action)" } | Should -Be @('sys-firewall Started', 'personal Reattached', 'work Reattached')
        (Get-Qube sys-firewall).State | Should -Be 'Running'
    }

    It 'skips a paused qube and says why' {
        $null = Use-TestBackend $Backend -PowerStates @{ work = 'Paused' }
        $results = Repair-QubeNetVm sys-firewall -Confirm:$false
        $results | ForEach-Object { "$($_.VMName) $($_.Action)" } | Should -Be @('personal Reattached', 'work Skipped')
        $results[1].Reason | Should -Match 'unpaused'
    }

    It 'changes nothing with -WhatIf' {
        $root = Use-TestBackend $Backend -PowerStates @{ 'sys-firewall' = 'Halted' }
        $before = Get-ChildItem $root -Recurse -File | Where-Object Name -notlike '*.lock' | Get-FileHash | ForEach-Object Hash
        Repair-QubeNetVm -Start -WhatIf | Should -BeNullOrEmpty
        Get-ChildItem $root -Recurse -File | Where-Object Name -notlike '*.lock' |
            Get-FileHash | ForEach-Object Hash | Should -Be $before
    }

    It 'refuses a qube that is not a network qube' {
        $null = Use-TestBackend $Backend
        { Repair-QubeNetVm -NetVM work -Confirm:$false -ErrorAction Stop } | Should -Throw -ErrorId 'NotANetworkQube,QubesFirewall.PowerShell.Cmdlets.RepairQubeNetVmCommand'
    }

    It 'shows a table of the results' {
        $null = Use-TestBackend $Backend
        $text = Repair-QubeNetVm -NetVM sys-net -Confirm:$false | Out-String
        $text | Should -Match 'VMName\s+NetVM\s+Action\s+Reason'
        $text | Should -Match 'sys-firewall\s+sys-net\s+Reattached'
    }
}

Describe 'Repair-QubeNetVm on the offline root' {
    AfterEach { Reset-TestBackend }

    It 'records the re-attach and reloads the firewall into the network qube' {
        $root = Use-TestBackend 'offline'
        Repair-QubeNetVm -NetVM sys-firewall -Confirm:$false | Out-Null
        Get-Content (Join-Path $root 'qubesfirewall-state/work/applied.log') -Raw |
            Should -Match 'netvm re-attached to sys-firewall \(qvm-prefs work netvm sys-firewall; qvm-prefs --default work netvm\); firewall reloaded into sys-firewall'
        Get-Content (Join-Path $root 'qubesfirewall-state/sys-firewall/qubesdb.txt') | Should -Contain "/qubes-firewall/10.137.0.11/policy`tdrop"
    }
}
