# Test-QubeFirewall in real pwsh, on both backends, against a copy of the sample root.
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Test-QubeFirewall (<Backend>)' -ForEach @(@{ Backend = 'offline' }, @{ Backend = 'live' }) {
    BeforeEach { $null = Use-TestBackend $Backend }
    AfterEach { Reset-TestBackend }

    It 'audits every qube with a network qube, and sys-net for its agent keys, in qubes.xml order' {
        $findings = Test-QubeFirewall -Severity Info
        $findings.VMName | Select-Object -Unique | Should -Be @('anon-whonix', 'default-dvm', 'personal', 'sys-firewall', 'sys-net', 'sys-whonix', 'untrusted', 'whonix-workstation-18-dvm', 'work')
        ($findings | Where-Object Severity -eq Error) | Should -BeNullOrEmpty
        $personal = $findings | Where-Object VMName -eq personal
        $personal | ForEach-Object { "$($_.Severity) $($_.Check) $($_.Number)" } | Should -Be @('Info EnforcedIn ', 'Warning HostName 3', 'Info QubeManagerShape 4')
    }

    It 'finds the rule added after the final drop and its fix moves it' {
        Add-QubeFirewallRule -VMName work -Rule 'action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080' -Position 7
        $dead = Test-QubeFirewall work | Where-Object Check -eq DeadRule
        $dead.Severity | Should -Be 'Error'
        $dead.Number | Should -Be 7
        $dead.Rule.Text | Should -Be 'action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080-8080'
        Invoke-Expression $dead.Fix
        (Get-QubeFirewallRule work)[6].Text | Should -Be 'action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080-8080'
        (Get-QubeFirewallRule work)[7].Text | Should -Be 'action=drop'
        Test-QubeFirewall work | Where-Object Check -eq DeadRule | Should -BeNullOrEmpty
    }

    It 'reports rules a Whonix gateway does not enforce as an error once they restrict' {
        Add-QubeFirewallRule -VMName anon-whonix -Rule 'action=drop dst4=198.51.100.0/24' -Position 0
        $finding = Test-QubeFirewall anon-whonix | Where-Object Check -eq NotEnforced
        $finding.Severity | Should -Be 'Error'
        $finding.Message | Should -Match 'Whonix gateway'
    }

    It 'warns about host names and /0 networks' {
        'action=accept dsthost=updates.example.org proto=tcp dstports=443', 'action=accept dst4=10.0.0.0/0 proto=udp dstports=123' | Add-QubeFirewallRule -VMName work
        $warnings = Test-QubeFirewall work | Where-Object Severity -eq Warning
        $warnings | ForEach-Object { "$($_.Check) $($_.Number)" } | Should -Be @('HostName 6', 'ZeroPrefix 7')
    }

    It 'binds qubes and rules from the pipeline, each qube once' {
        (Get-Qube -NetVM sys-whonix | Test-QubeFirewall -Severity Info).VMName | Should -Be @('anon-whonix', 'whonix-workstation-18-dvm')
        @(Get-QubeFirewallRule work | Test-QubeFirewall -Severity Info).Count | Should -Be 1
        (Test-QubeFirewall vault -Severity Info).Check | Should -Be 'NoNetVM'
    }

    It 'reports an unknown qube with QubeNotFound' {
        { Test-QubeFirewall nosuchqube -ErrorAction Stop } | Should -Throw -ErrorId 'QubeNotFound,QubesFirewall.PowerShell.Cmdlets.TestQubeFirewallCommand'
    }

    It 'shows findings grouped by qube by default' {
        $text = Test-QubeFirewall personal | Out-String -Width 250
        $text | Should -Match 'Qube: personal'
        $text | Should -Match 'Severity\s+Check\s+No\s+Message'
        $text | Should -Match 'Warning\s+HostName\s+3'
    }

    It 'returns warnings and errors by default, everything with -Severity Info' {
        # The sample: one warning (personal's host name) among eleven findings, ten of them Info.
        @(Test-QubeFirewall).ForEach({ "$($_.VMName) $($_.Severity) $($_.Check)" }) | Should -Be @('personal Warning HostName')
        @(Test-QubeFirewall -Severity Info).Count | Should -Be 11
        @(Test-QubeFirewall -Severity Error) | Should -BeNullOrEmpty
    }

    It 'shows the Fix under the message in the default view' {
        Add-QubeFirewallRule -VMName work -Rule 'action=accept dst4=192.168.10.0/24 proto=tcp dstports=8080' -Position 7
        $text = Test-QubeFirewall work | Out-String -Width 400
        $text | Should -Match '(?s)Fix: ''action=accept specialtarget=dns'', .* \| Set-QubeFirewallRule -VMName work'
        # a finding without a Fix shows none
        Test-QubeFirewall personal | Out-String -Width 400 | Should -Not -Match 'Fix:'
    }

    It 'asks no agent without -Deep; with -Deep, each qube that records the agent, a halted one said to be skipped' {
        @(Test-QubeFirewall -Severity Info | Where-Object Check -like 'Agent*') | Should -BeNullOrEmpty
        $agents = @(Test-QubeFirewall -Severity Info -Deep | Where-Object Check -like 'Agent*')
        # the sample's qubes that record the agent (sys-net too, though it has no network qube); untrusted is halted
        $agents.VMName | Should -Be @('personal', 'sys-firewall', 'sys-net', 'untrusted', 'work')
        $untrusted = $agents | Where-Object VMName -eq untrusted
        "$($untrusted.Severity) $($untrusted.Check)" | Should -Be 'Info AgentStatusNotRead'
        if ($Backend -eq 'offline') {
            $agents.ForEach({ "$($_.Severity) $($_.Check)" }) | Select-Object -Unique | Should -Be 'Info AgentStatusNotRead'
            $agents.Message | Should -Match 'the offline root runs no qube'
        }
        else {
            # the running ones are asked, here where no qvm-run exists: each read fails, and says so
            $asked = $agents | Where-Object VMName -ne untrusted
            $asked.ForEach({ "$($_.Severity) $($_.Check)" }) | Should -Be @('Warning AgentNoStatus', 'Warning AgentNoStatus', 'Warning AgentNoStatus', 'Warning AgentNoStatus')
            $untrusted.Message | Should -Match "'untrusted' is not running"
        }
    }

    It 'changes nothing' {
        $before = Get-ChildItem $script:root -Recurse -File | Where-Object Name -notlike '*.lock' | Where-Object Name -notlike '*.log' | Get-FileHash | ForEach-Object Hash
        Test-QubeFirewall | Out-Null
        Test-QubeFirewall -Deep | Out-Null
        Get-ChildItem $script:root -Recurse -File | Where-Object Name -notlike '*.lock' | Where-Object Name -notlike '*.log' | Get-FileHash | ForEach-Object Hash | Should -Be $before
    }
}
