# Test-QubeFirewall's port forward checks and IPv6 forwards in real pwsh, on a copy of the sample root
# (sys-firewall there is a disposable of default-dvm; the qubes of a forward record the agent).
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Test-QubeFirewall: port forward checks' {
    BeforeEach {
        $env:QUBESFW_ROOT = New-TestRoot
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -WarningAction SilentlyContinue
    }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'finds nothing to say about the disposable sys-firewall on the way: its keys are its own' {
        Test-QubeFirewall work | Where-Object Check -like 'Forward*' | Should -BeNullOrEmpty
        Test-QubeFirewall sys-firewall | Where-Object Check -like 'Agent*' | Should -BeNullOrEmpty
    }

    It 'warns about custom-persist on a hop (ForwardCustomPersist)' {
        Set-TestFeature sys-net service.custom-persist 1
        $finding = Test-QubeFirewall work | Where-Object Check -eq ForwardCustomPersist
        $finding.Severity | Should -Be 'Warning'
        $finding.Message | Should -Match "'sys-net' \(hop 1 of 2\), which has the R4.3 custom-persist service on"
        $finding.Message | Should -Match 'qvm-service --disable sys-net custom-persist'
        $finding.Fix | Should -BeNullOrEmpty
    }

    It 'reports keys that differ from the declarations (AgentKeysStale) and a change derives them again' {
        $b = [QubesFirewall.Engine.Backends.BackendSelector]::Open($null)
        try {
            $key = $b.GetInventory().Get('sys-net').Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.hop4.*' }
            $null = $b.RemoveFeature('sys-net', $key)
        }
        finally { $b.Dispose() }
        $finding = Test-QubeFirewall sys-net | Where-Object Check -eq AgentKeysStale
        $finding.Severity | Should -Be 'Error'
        $finding.Message | Should -Match '1 key\(s\) missing or different'
        Get-QubePortForward work | Add-QubePortForward -WarningAction SilentlyContinue
        Test-QubeFirewall sys-net | Where-Object Check -eq AgentKeysStale | Should -BeNullOrEmpty
    }

    It 'reports forward rules an earlier version left in a hook file (ForwardUndeclaredPart) with -Deep; its fix is the agent install' {
        $file = Get-StateFilePath sys-net /rw/config/qubes-firewall-user-script
        New-Item -ItemType Directory -Force -Path (Split-Path $file) | Out-Null
        Set-Content -LiteralPath $file -Value "#!/bin/sh`n# >>> qubesfirewall managed block: do not edit >>>`nadd rule ip qubes qubesfw-dnat tcp dport 443 dnat to 10.138.10.201 comment `"tcp/443 to work`"`n# <<< qubesfirewall <<<`n" -NoNewline
        Test-QubeFirewall work | Where-Object Check -eq ForwardUndeclaredPart | Should -BeNullOrEmpty   # dom0 facts only: the file is not read
        $finding = @(Test-QubeFirewall work -Deep | Where-Object Check -eq ForwardUndeclaredPart)[0]
        $finding.Severity | Should -Be 'Error'
        $finding.Message | Should -Match 'sys-net'
        $finding.Fix | Should -Be 'Install-QubeFirewallAgent -VMName sys-net'
    }
}

Describe 'Add-QubePortForward over IPv6' {
    BeforeEach { $env:QUBESFW_ROOT = New-TestRoot }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'refuses IPv6 sources while the chain has no IPv6' {
        { Add-QubePortForward work 443 -AllowFrom 2001:db8::/32 -ErrorAction Stop } |
            Should -Throw -ErrorId 'IPv6NotEnabled,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        Get-QubePortForward | Should -BeNullOrEmpty
    }

    It 'generates ip6 rules once IPv6 is on, each family filtered by its own sources' {
        Set-QubeIPv6 -VMName sys-net -Enabled $true -Confirm:$false
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24, 2001:db8::/32 -WarningAction SilentlyContinue
        (Get-QubePortForward -VMName work).IPv6 | Should -BeTrue
        $sysNet = (Get-Qube sys-net).Features.Values -join "`n"
        $sysNet | Should -Match ' proto=tcp port=443 to=443 in=out nat=fd09:24ef:4179::a8a:[0-9a-f]+ dst=local src=2001:db8::/32 vm=work'
        $sysNet | Should -Match ' proto=tcp port=443 to=443 in=out nat=10\.138\.[0-9.]+ dst=local src=192\.168\.1\.0/24 vm=work'
        ((Get-Qube work).Features.Values -join "`n") | Should -Match ' proto=tcp port=443 to=443 dst=fd09:24ef:4179::a89:b src=2001:db8::/32 vm=work'

        Remove-QubePortForward -VMName work -Port 443 -Confirm:$false
        (Get-Qube sys-net).Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.*' } | Should -BeNullOrEmpty
    }
}
