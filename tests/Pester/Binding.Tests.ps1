# Pipeline binding edge cases of the firewall cmdlets, on a copy of the sample root.
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Binding' {
    BeforeEach { $env:QUBESFW_ROOT = New-TestRoot }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'binds a minimal object by property name, never as rule text' {
        [pscustomobject]@{ VMName = 'untrusted'; Action = 'Drop' } | Add-QubeFirewallRule -Position 0 -ErrorAction Stop
        (Get-QubeFirewallRule untrusted)[0].Text | Should -Be 'action=drop'
    }

    It 'binds strings as rule text' {
        'action=drop dsthost=198.51.100.9' | Add-QubeFirewallRule -VMName untrusted -Position 0 -ErrorAction Stop
        Add-QubeFirewallRule untrusted 'action=drop dsthost=198.51.100.10' -Position 0 -ErrorAction Stop
        (Get-QubeFirewallRule untrusted)[0..1].Text | Should -Be @('action=drop dst4=198.51.100.10/32', 'action=drop dst4=198.51.100.9/32')
    }

    It 'adds a rule to every qube piped from Get-Qube' {
        Get-Qube -NetVM sys-firewall | Where-Object Class -eq AppVM |
            Add-QubeFirewallRule -Action Drop -DstHost 203.0.113.7 -ErrorAction Stop
        foreach ($q in 'work', 'personal', 'untrusted') {
            (Get-QubeFirewallRule $q).Text | Should -Contain 'action=drop dst4=203.0.113.7/32'
        }
    }

    It 'treats dom0 as having no firewall' {
        (Get-Qube | Get-QubeFirewallRule).VMName | Should -Not -Contain 'dom0'
        { Add-QubeFirewallRule -VMName dom0 -Action Drop -ErrorAction Stop } | Should -Throw -ErrorId 'NoFirewall,QubesFirewall.PowerShell.Cmdlets.AddQubeFirewallRuleCommand'
        Join-Path $env:QUBESFW_ROOT 'appvms/dom0/firewall.xml' | Should -Not -Exist
    }
}
