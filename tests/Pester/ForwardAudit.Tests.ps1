# Test-QubeFirewall's port forward checks and IPv6 forwards in real pwsh, on a copy of the sample root
# (sys-firewall there is a disposable of default-dvm).
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Test-QubeFirewall: port forward checks' {
    BeforeEach {
        $env:QUBESFW_ROOT = New-TestRoot
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -WarningAction SilentlyContinue
    }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'warns about the disposable sys-firewall on the way (ForwardDisposableHop)' {
        $finding = Test-QubeFirewall work | Where-Object Check -like 'Forward*'
        $finding.Check | Should -Be 'ForwardDisposableHop'
        $finding.Severity | Should -Be 'Warning'
        $finding.VMName | Should -Be 'work'
        $finding.Message | Should -Match "'sys-firewall' \(hop 2 of 2\), a disposable of 'default-dvm'"
        $finding.Fix | Should -Match 'qvm-create --class AppVM'
    }

    It 'warns about custom-persist on a hop (ForwardCustomPersist)' {
        Set-TestFeature sys-net service.custom-persist 1
        $finding = Test-QubeFirewall work | Where-Object Check -eq ForwardCustomPersist
        $finding.Severity | Should -Be 'Warning'
        $finding.Message | Should -Match "'sys-net' \(hop 1 of 2\), which has the R4.3 custom-persist service on"
        $finding.Fix | Should -Match 'qvm-service --disable sys-net custom-persist'
    }

    It 'reports a hop file without the forward (ForwardMissingPart) and its fix restores it' {
        $file = Get-StateFilePath sys-net /rw/config/qubes-firewall-user-script
        Set-Content -LiteralPath $file -Value "#!/bin/sh`n" -NoNewline
        $finding = Test-QubeFirewall work | Where-Object Check -eq ForwardMissingPart
        $finding.Severity | Should -Be 'Error'
        $finding.Message | Should -Match 'sys-net:/rw/config/qubes-firewall-user-script does not hold its part'
        Invoke-Expression ($finding.Fix -replace ' \(rewrites.*$', '')
        Test-QubeFirewall work | Where-Object Check -eq ForwardMissingPart | Should -BeNullOrEmpty
        Get-Content -Raw -LiteralPath $file | Should -Match 'add rule ip qubes qubesfw-dnat'
    }

    It 'reports forward rules no declaration gives (ForwardUndeclaredPart) and its fix removes them' {
        Remove-TestFeature work qubesfirewall.forward.tcp.443
        $findings = @(Test-QubeFirewall work | Where-Object Check -eq ForwardUndeclaredPart)
        $findings.Count | Should -Be 2
        $findings[0].Severity | Should -Be 'Error'
        $findings[0].Message | Should -Match 'no declaration gives it'
        $findings[0].Fix | Should -Not -Match 'Add-Qube'   # derived from a file's content: it opens nothing
        Invoke-Expression ($findings[0].Fix -replace ' \(.*$', '') -WarningAction SilentlyContinue
        Test-QubeFirewall work | Where-Object Check -like 'Forward*Part' | Should -BeNullOrEmpty
        Get-Content -Raw -LiteralPath (Get-StateFilePath sys-net /rw/config/qubes-firewall-user-script) | Should -Not -Match 'qubesfw'
    }
}

Describe 'Add-QubePortForward over IPv6' {
    BeforeEach { $env:QUBESFW_ROOT = New-TestRoot }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'refuses IPv6 sources while the chain has no IPv6' {
        { Add-QubePortForward work 443 -AllowFrom 2001:db8::/32 -Force -ErrorAction Stop } |
            Should -Throw -ErrorId 'IPv6NotEnabled,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        Get-QubePortForward | Should -BeNullOrEmpty
    }

    It 'generates ip6 rules once IPv6 is on, each family filtered by its own sources' {
        Set-QubeIPv6 -VMName sys-net -Enabled $true -Confirm:$false
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24, 2001:db8::/32 -Force -WarningAction SilentlyContinue
        (Get-QubePortForward -VMName work).IPv6 | Should -BeTrue
        $sysNet = Get-Content -Raw -LiteralPath (Get-StateFilePath sys-net /rw/config/qubes-firewall-user-script)
        $sysNet | Should -Match 'add rule ip6 qubes qubesfw-dnat .*ip6 saddr 2001:db8::/32 tcp dport 443 dnat to fd09:24ef:4179::a8a:'
        $sysNet | Should -Match 'add rule ip qubes qubesfw-dnat .*ip saddr 192.168.1.0/24 tcp dport 443 dnat to 10.138.'
        Get-Content -Raw -LiteralPath (Get-StateFilePath work /rw/config/rc.local) | Should -Match 'add rule ip6 qubes qubesfw-input iifgroup 1 ip6 saddr 2001:db8::/32 ip6 daddr fd09:24ef:4179::a89:b tcp dport 443 accept'

        Remove-QubePortForward -VMName work -Port 443 -Confirm:$false
        Get-Content -Raw -LiteralPath (Get-StateFilePath sys-net /rw/config/qubes-firewall-user-script) | Should -Not -Match 'qubesfw'
    }
}
