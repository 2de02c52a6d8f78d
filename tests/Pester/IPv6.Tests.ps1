# Set-QubeIPv6 in real pwsh, on both backends. Addresses by hand: fd09:24ef:4179::a89:<qid hex>
# (work qid 11 -> b, untrusted 12 -> c), disposables ::a8a:<dispid hex> (sys-firewall 2741 -> ab5).
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Set-QubeIPv6 (<Backend>)' -ForEach @(@{ Backend = 'offline' }, @{ Backend = 'live' }) {
    BeforeEach { $null = Use-TestBackend $Backend }
    AfterEach { Reset-TestBackend }

    It 'turns IPv6 on for the whole chain from sys-net' {
        (Get-Qube work).IPv6 | Should -BeNullOrEmpty
        Set-QubeIPv6 -VMName sys-net -Enabled $true
        (Get-Qube work).IPv6 | Should -Be 'fd09:24ef:4179::a89:b'
        (Get-Qube sys-firewall).IPv6 | Should -Be 'fd09:24ef:4179::a8a:ab5'
        (Get-Qube vault).IPv6 | Should -BeNullOrEmpty
    }

    It 'opts a qube out and back in' {
        Set-QubeIPv6 sys-net $true
        (Set-QubeIPv6 -VMName untrusted -Enabled $false -PassThru).IPv6 | Should -BeNullOrEmpty
        (Get-Qube untrusted).Features['ipv6'] | Should -Be ''
        (Set-QubeIPv6 -VMName untrusted -Inherit -PassThru).IPv6 | Should -Be 'fd09:24ef:4179::a89:c'
        (Get-Qube untrusted).Features.ContainsKey('ipv6') | Should -BeFalse
    }

    It 'refuses to enable IPv6 on a qube without network' {
        { Set-QubeIPv6 -VMName vault -Enabled $true -ErrorAction Stop } | Should -Throw -ErrorId 'NoNetwork,QubesFirewall.PowerShell.Cmdlets.SetQubeIPv6Command'
        (Get-Qube vault).Features.ContainsKey('ipv6') | Should -BeFalse
    }

    It 'warns when the network qube has no IPv6' {
        Set-QubeIPv6 -VMName work -Enabled $true -WarningVariable warnings -WarningAction SilentlyContinue
        $warnings.Count | Should -Be 1
        "$($warnings[0])" | Should -Match "'sys-firewall' has IPv6 off"
    }

    It 'takes qubes from the pipeline and changes nothing with -WhatIf' {
        Get-Qube -NetVM sys-firewall | Set-QubeIPv6 -Enabled $true -WhatIf
        Get-Qube -NetVM sys-firewall | Where-Object { $_.Features.ContainsKey('ipv6') } | Should -BeNullOrEmpty
    }

    It 'has two parameter sets' {
        (Get-Command Set-QubeIPv6).ParameterSets.Name | Sort-Object | Should -Be @('Enabled', 'Inherit')
        { Set-QubeIPv6 work -Enabled $true -Inherit -ErrorAction Stop } | Should -Throw -ErrorId 'AmbiguousParameterSet,QubesFirewall.PowerShell.Cmdlets.SetQubeIPv6Command'
    }
}
