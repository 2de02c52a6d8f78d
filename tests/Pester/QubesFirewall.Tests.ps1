# Pester tests of the public cmdlets in real pwsh, against a copy of the sample root in TestDrive.
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Get-Qube (<Backend>)' -ForEach @(@{ Backend = 'offline' }, @{ Backend = 'live' }) {
    BeforeEach { $null = Use-TestBackend $Backend }
    AfterEach { Reset-TestBackend }

    It 'lists the qubes of a default install' {
        $names = (Get-Qube).Name
        foreach ($n in 'dom0', 'sys-net', 'sys-firewall', 'sys-usb', 'work', 'personal', 'untrusted', 'vault', 'sys-whonix', 'anon-whonix') {
            $names | Should -Contain $n
        }
    }

    It 'resolves the network chain settings' {
        (Get-Qube work).NetVM | Should -Be 'sys-firewall'
        (Get-Qube vault).NetVM | Should -BeNullOrEmpty
        (Get-Qube sys-firewall).NetVM | Should -Be 'sys-net'
        (Get-Qube work).IP | Should -Match '^10\.137\.0\.\d+$'
    }

    It 'filters by wildcard and network qube' {
        (Get-Qube -Name 'sys-*' -NetVM sys-firewall).Name | Should -Be @('sys-whonix')
        @(Get-Qube -NetVM sys-firewall).Count | Should -BeGreaterThan 2
    }

    It 'reports an unknown qube with QubeNotFound' {
        { Get-Qube -Name nosuchqube -ErrorAction Stop } | Should -Throw -ErrorId 'QubeNotFound,QubesFirewall.PowerShell.Cmdlets.GetQubeCommand'
    }

    It 'shows a table by default' {
        $text = Get-Qube work | Out-String
        $text | Should -Match 'Name\s+Class\s+State\s+NetVM\s+IP'
    }

    It 'fails clearly without a root or qubesd' {
        $env:QUBESFW_ROOT = $null
        $env:QUBESFW_QUBESD_SOCKET = '/nonexistent/qubesd.sock'
        try {
            { Get-Qube -ErrorAction Stop } | Should -Throw -ErrorId 'NoBackend,QubesFirewall.PowerShell.Cmdlets.GetQubeCommand'
        }
        finally { $env:QUBESFW_QUBESD_SOCKET = $null }
    }
}

Describe 'Firewall rules (<Backend>)' -ForEach @(@{ Backend = 'offline' }, @{ Backend = 'live' }) {
    BeforeEach { $root = Use-TestBackend $Backend }
    AfterEach { Reset-TestBackend }

    It 'lists rules numbered from 0 with their text' {
        $rules = Get-QubeFirewallRule work
        $rules.Number | Should -Be (0..($rules.Count - 1))
        $rules[-1].IsCatchAll | Should -BeTrue
        $rules.Text | Should -Contain 'action=accept specialtarget=dns'
    }

    It 'pipes qubes into Get-QubeFirewallRule by value and by property name' {
        (Get-Qube work | Get-QubeFirewallRule).VMName | Select-Object -Unique | Should -Be 'work'
        ('work', 'personal' | Get-QubeFirewallRule).VMName | Select-Object -Unique | Should -Be @('work', 'personal')
    }

    It 'adds text lines from a file before the catch-all, skipping blank and comment lines' {
        $file = Join-Path $TestDrive 'rules.txt'
        Set-Content $file -Value @('# intranet', 'action=accept dsthost=10.20.0.0/16 proto=tcp dstports=22', '', 'action=accept dsthost=example.com proto=tcp dstports=443 comment=web')
        $before = Get-QubeFirewallRule work
        $added = Get-Content $file | Add-QubeFirewallRule -VMName work -PassThru
        $added.Count | Should -Be 2
        $after = Get-QubeFirewallRule work
        $after.Count | Should -Be ($before.Count + 2)
        $after[-1].Text | Should -Be $before[-1].Text
        $after[-3].Text | Should -Be 'action=accept dst4=10.20.0.0/16 proto=tcp dstports=22-22'
        $after[-2].Text | Should -Be 'action=accept dsthost=example.com proto=tcp dstports=443-443 comment=web'
    }

    It 'adds objects from CSV by property name' {
        $csv = Join-Path $TestDrive 'rules.csv'
        @'
VMName,Action,Protocol,DstHost,DstPorts,IcmpType,Comment
work,Accept,Tcp,10.5.0.0/16,8443,,from csv
personal,Drop,Icmp,203.0.113.7,,8,
'@ | Set-Content $csv
        $added = Import-Csv $csv | Add-QubeFirewallRule -PassThru
        ($added | Where-Object VMName -eq work).Text | Should -Be 'action=accept dst4=10.5.0.0/16 proto=tcp dstports=8443-8443 comment=from csv'
        ($added | Where-Object VMName -eq personal).Text | Should -Be 'action=drop dst4=203.0.113.7/32 proto=icmp icmptype=8'
    }

    It 'round-trips rules through JSON' {
        $json = Get-QubeFirewallRule work | ConvertTo-Json -Depth 4
        $json | ConvertFrom-Json | Add-QubeFirewallRule -VMName untrusted -Position 0
        (Get-QubeFirewallRule untrusted | Select-Object -First (Get-QubeFirewallRule work).Count).Text |
            Should -Be (Get-QubeFirewallRule work).Text
    }

    It 'honours -Position and -Expire' {
        $r = Add-QubeFirewallRule -VMName work -Action Drop -DstHost 198.51.100.0/24 -Position 0 -Expire (New-TimeSpan -Hours 1) -PassThru
        $r.Number | Should -Be 0
        $r.Expire | Should -BeGreaterThan (Get-Date).AddMinutes(59)
        (Get-QubeFirewallRule work)[0].Text | Should -Match '^action=drop expire=\d+ dst4=198\.51\.100\.0/24$'
    }

    It 'is idempotent: adding the same rule twice keeps one copy' {
        Add-QubeFirewallRule -VMName work -Rule 'action=accept dsthost=example.net'
        Add-QubeFirewallRule -VMName work -Rule 'action=accept dsthost=example.net'
        @(Get-QubeFirewallRule work | Where-Object DstHost -eq 'example.net').Count | Should -Be 1
    }

    It '-WhatIf changes nothing' {
        $before = Get-RootHash $root
        'action=drop dsthost=a.example' | Add-QubeFirewallRule -VMName work -WhatIf
        Remove-QubeFirewallRule -VMName work -Number 0 -WhatIf
        Sync-QubeFirewall work -WhatIf
        Get-RootHash $root | Should -Be $before
    }

    It 'refuses <Case> with <ErrorId> and leaves every file byte-identical' -TestCases @(
        @{ Case = 'a /33 prefix'; ErrorId = 'InvalidDstHost'; Script = { Add-QubeFirewallRule -VMName work -Action Accept -DstHost 1.2.3.4/33 -ErrorAction Stop } }
        @{ Case = 'port 70000'; ErrorId = 'InvalidDstPorts'; Script = { Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstPorts 70000 -ErrorAction Stop } }
        @{ Case = 'icmptype with tcp'; ErrorId = 'IcmpTypeNeedsIcmp'; Script = { Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -IcmpType 8 -ErrorAction Stop } }
        @{ Case = 'a comment with quotes'; ErrorId = 'InvalidComment'; Script = { Add-QubeFirewallRule -VMName work -Action Accept -Comment 'say "hi"' -ErrorAction Stop } }
        @{ Case = 'a comment with a newline'; ErrorId = 'InvalidComment'; Script = { Add-QubeFirewallRule -VMName work -Action Accept -Comment "a`nb" -ErrorAction Stop } }
        @{ Case = 'a comment with a non-ASCII letter'; ErrorId = 'InvalidComment'; Script = { Add-QubeFirewallRule -VMName work -Action Accept -Comment 'Überweisung' -ErrorAction Stop } }
        @{ Case = 'a qube name with ;'; ErrorId = 'InvalidQubeName'; Script = { Add-QubeFirewallRule -VMName 'work;reboot' -Action Accept -ErrorAction Stop } }
        @{ Case = 'rule text dsthost=1.2.3.4/33'; ErrorId = 'InvalidRuleText'; Script = { 'action=accept dsthost=1.2.3.4/33' | Add-QubeFirewallRule -VMName work -ErrorAction Stop } }
        @{ Case = 'rule text dstports=70000'; ErrorId = 'InvalidRuleText'; Script = { 'action=accept proto=tcp dstports=70000' | Add-QubeFirewallRule -VMName work -ErrorAction Stop } }
        @{ Case = 'action=forward'; ErrorId = 'InvalidRuleText'; Script = { Add-QubeFirewallRule -VMName work -Rule 'action=forward proto=tcp dstports=80' -ErrorAction Stop } }
        @{ Case = 'an unknown qube'; ErrorId = 'QubeNotFound'; Script = { Add-QubeFirewallRule -VMName nosuch -Action Drop -ErrorAction Stop } }
    ) {
        param($Case, $ErrorId, $Script)
        $before = Get-RootHash $root
        $Script | Should -Throw -ErrorId "$ErrorId,QubesFirewall.PowerShell.Cmdlets.AddQubeFirewallRuleCommand"
        Get-RootHash $root | Should -Be $before
    }

    It 'writes nothing for a qube when one piped line is invalid' {
        $before = Get-RootHash $root
        'action=accept proto=tcp dstports=80', 'action=accept proto=tcp dstports=99999' | Add-QubeFirewallRule -VMName work -ErrorAction SilentlyContinue -ErrorVariable errs
        $errs.FullyQualifiedErrorId | Should -Contain 'RulesNotAdded,QubesFirewall.PowerShell.Cmdlets.AddQubeFirewallRuleCommand'
        Get-RootHash $root | Should -Be $before
    }

    It 'removes exactly the piped rules' {
        'action=drop dsthost=a.example', 'action=drop dsthost=b.example', 'action=drop dsthost=c.example' | Add-QubeFirewallRule -VMName work
        Get-QubeFirewallRule work | Where-Object DstHost -in 'a.example', 'c.example' | Remove-QubeFirewallRule -Confirm:$false
        $left = (Get-QubeFirewallRule work).DstHost
        $left | Should -Contain 'b.example'
        $left | Should -Not -Contain 'a.example'
        $left | Should -Not -Contain 'c.example'
    }

    It 'refuses a piped rule whose number has moved' {
        $stale = Get-QubeFirewallRule work | Where-Object IsCatchAll
        Add-QubeFirewallRule -VMName work -Action Drop -DstHost 192.0.2.1 -Position 0
        { $stale | Remove-QubeFirewallRule -Confirm:$false -ErrorAction Stop } |
            Should -Throw -ErrorId 'RuleMismatch,QubesFirewall.PowerShell.Cmdlets.RemoveQubeFirewallRuleCommand'
        (Get-QubeFirewallRule work)[-1].IsCatchAll | Should -BeTrue
    }

    It 'removes by number' {
        $before = Get-QubeFirewallRule work
        Remove-QubeFirewallRule -VMName work -Number 0 -Confirm:$false
        (Get-QubeFirewallRule work).Text | Should -Be ($before | Select-Object -Skip 1).Text
    }

    It 'syncs QubesDB entries into the network qube' {
        $entries = Sync-QubeFirewall work -PassThru
        $ip = (Get-Qube work).IP
        $entries[0].QubeName | Should -Be 'sys-firewall'
        $entries[0].Path | Should -Be "/qubes-firewall/$ip/policy"
        $entries[-1].Path | Should -Be "/qubes-firewall/$ip"
        $entries[-1].Value | Should -Be ''
        $stored = Get-Content (Join-Path $root 'qubesfirewall-state/sys-firewall/qubesdb.txt')
        $stored | Should -Contain "/qubes-firewall/$ip/policy`tdrop"
    }

    It 'completes qube names' {
        $line = "Get-QubeFirewallRule -VMName untr"
        (TabExpansion2 -inputScript $line -cursorColumn $line.Length).CompletionMatches.CompletionText | Should -Be 'untrusted'
    }
}

Describe 'Live backend only' {
    BeforeEach { $root = Use-TestBackend 'live' }
    AfterEach { Reset-TestBackend }

    It 'pipes 20 rules into one qube with one Get, one re-read and one Set' {
        Remove-Item $callLog -ErrorAction SilentlyContinue
        1..20 | ForEach-Object { "action=accept dst4=10.88.0.$_ proto=tcp dstports=443" } | Add-QubeFirewallRule -VMName work
        # three firewall calls for 20 rules; besides them only reads of the inventory, once (who enforces the rules)
        Get-Content $callLog | Where-Object { $_ -like 'admin.vm.firewall.*' } | Should -Be @('admin.vm.firewall.Get work', 'admin.vm.firewall.Get work', 'admin.vm.firewall.Set work')
        @(Get-Content $callLog | Where-Object { $_ -like 'admin.vm.List *' }).Count | Should -Be 1
        Get-Content $callLog | Where-Object { $_ -notlike 'admin.vm.firewall.*' } | Where-Object { $_ -notmatch '\.(List|Get|GetAll)[ +]' } | Should -BeNullOrEmpty
        @(Get-QubeFirewallRule work | Where-Object DstHost -like '10.88.0.*').Count | Should -Be 20
    }

    It 'writes what qubesd writes: firewall.xml in the root, rules in the network qube''s QubesDB on reload' {
        # qubesd reloads a qube's rules into its network qube only while the qube runs (core-admin
        # qubes/vm/mix/net.py on_firewall_changed): untrusted, halted in the sample, runs here.
        Reset-TestBackend
        $root = Use-TestBackend 'live' -PowerStates @{ untrusted = 'Running' }
        Add-QubeFirewallRule -VMName untrusted -Rule 'action=drop dst4=198.51.100.0/24'
        Get-Content (Join-Path $root 'appvms/untrusted/firewall.xml') -Raw | Should -Match '198\.51\.100\.0/24'
        Sync-QubeFirewall untrusted
        $ip = (Get-Qube untrusted).IP
        Get-Content (Join-Path $root 'qubesfirewall-state/sys-firewall/qubesdb.txt') | Should -Contain "/qubes-firewall/$ip/0000`taction=drop dst4=198.51.100.0/24"
    }

    It 'leaves the network qube''s QubesDB alone when the qube does not run, as qubesd does' {
        Add-QubeFirewallRule -VMName untrusted -Rule 'action=drop dst4=198.51.100.0/24'
        $entries = Sync-QubeFirewall untrusted -PassThru
        $entries[0].Path | Should -Be "/qubes-firewall/$((Get-Qube untrusted).IP)/policy"
        $db = Join-Path $root 'qubesfirewall-state/sys-firewall/qubesdb.txt'
        @(if (Test-Path $db) { Get-Content $db }) -match "^/qubes-firewall/$([regex]::Escape((Get-Qube untrusted).IP))/" | Should -BeNullOrEmpty
        Get-TestCalls | Should -Contain 'admin.vm.firewall.Reload untrusted'
    }
}
