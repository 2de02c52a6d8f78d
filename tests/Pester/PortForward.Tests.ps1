# Port forwarding in real pwsh, on a copy of the sample root (sys-firewall there is a disposable of default-dvm).
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Add-QubePortForward' {
    BeforeEach { $env:QUBESFW_ROOT = New-TestRoot }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'forwards a port to a qube piped from Get-Qube and returns each hop' {
        $hops = Get-Qube work | Add-QubePortForward -Port 443 -AllowFrom 192.168.1.0/24 -Force -PassThru -WarningAction SilentlyContinue
        $hops.VMName | Should -Be @('work', 'sys-firewall', 'sys-net')
        $hops.Status | Select-Object -Unique | Should -Be 'Recorded'
        (Get-Qube work).Features['qubesfirewall.forward.tcp.443'] | Should -Be 'uuid=cf61609e-57bb-57dc-ad09-54ed6950a50b target=443 type=external allow=192.168.1.0/24' # bound to work's uuid
        Get-StateFile sys-net /rw/config/qubes-firewall-user-script | Should -Match '(?m)^# >>> qubesfirewall managed block: do not edit >>>$'
        Get-StateFile default-dvm /rw/config/qubes-firewall-user-script | Should -Match "qubesdb-read /name 2>/dev/null\)`" = 'sys-firewall'"
        Get-StateFile work /rw/config/rc.local | Should -Match 'add rule ip qubes qubesfw-input iifgroup 1 ip saddr 192.168.1.0/24 ip daddr 10.137.0.11 tcp dport 443 accept'
    }

    It 'refuses a disposable on the way without -Force and changes nothing' {
        $before = Get-Content (Join-Path $env:QUBESFW_ROOT 'qubes.xml') -Raw
        { Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24 -ErrorAction Stop } |
            Should -Throw -ErrorId 'DisposableHop,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        Get-Content (Join-Path $env:QUBESFW_ROOT 'qubes.xml') -Raw | Should -BeExactly $before
    }

    It 'refuses a Whonix qube, a qube without network and a port already taken' {
        { Add-QubePortForward anon-whonix 80 -Force -ErrorAction Stop } | Should -Throw -ErrorId 'WhonixInChain,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        { Add-QubePortForward vault 80 -Force -ErrorAction Stop } | Should -Throw -ErrorId 'NoNetVM,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        Add-QubePortForward work 443 -AllowFrom 10.0.0.0/8 -Force -WarningAction SilentlyContinue
        { Add-QubePortForward personal 443 -AllowFrom 10.0.0.0/8 -Force -ErrorAction Stop -WarningAction SilentlyContinue } |
            Should -Throw -ErrorId 'PortAlreadyForwarded,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
    }

    It 'prints the whole plan with -WhatIf and writes nothing' {
        $before = Get-ChildItem $env:QUBESFW_ROOT -Recurse -File | Get-FileHash | ForEach-Object Hash
        $null = Add-QubePortForward work 8443 -TargetPort 443 -AllowFrom 203.0.113.0/24 -Force -WhatIf -WarningAction SilentlyContinue
        (Get-ChildItem $env:QUBESFW_ROOT -Recurse -File | Get-FileHash | ForEach-Object Hash) | Should -Be $before
        Get-QubePortForward | Should -BeNullOrEmpty
    }

    It 'warns which clients their own firewall keeps out of an internal forward' {
        $warnings = @()
        Add-QubePortForward untrusted 8080 -Type Internal -AllowFrom 10.137.0.11 -Force -WarningVariable warnings -WarningAction SilentlyContinue
        $warnings | Where-Object { "$_" -like "'work' cannot use*" } | Should -Not -BeNullOrEmpty
        ($warnings -join "`n") | Should -Match 'Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstHost 10\.137\.0\.12 -DstPorts 8080'
    }
}

Describe 'Get-QubePortForward and Remove-QubePortForward' {
    BeforeEach {
        $env:QUBESFW_ROOT = New-TestRoot
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Comment 'web' -Force -WarningAction SilentlyContinue
        Add-QubePortForward personal 51820 -Protocol Udp -AllowFrom 198.51.100.0/24 -Force -WarningAction SilentlyContinue
    }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'lists the forwards with their path, as a table by default' {
        $all = Get-QubePortForward
        $all.Count | Should -Be 2
        ($all | Where-Object VMName -eq work).Path | Should -Be 'sys-net -> sys-firewall -> work'
        (Get-QubePortForward | Format-Table | Out-String -Width 200) | Should -Match 'VMName\s+Protocol\s+Port\s+TargetPort\s+Type\s+AllowFrom\s+Path'
    }

    It 'removes what is piped from Get-QubePortForward and keeps the other forward' {
        Get-QubePortForward work | Remove-QubePortForward -Confirm:$false
        (Get-QubePortForward).VMName | Should -Be 'personal'
        Get-StateFile work /rw/config/rc.local | Should -BeExactly "#!/bin/sh`n"
        Get-StateFile sys-net /rw/config/qubes-firewall-user-script | Should -Match 'udp dport 51820'
        Get-StateFile sys-net /rw/config/qubes-firewall-user-script | Should -Not -Match 'tcp dport 443'
    }

    It 'gives each hop file back without its block when the last forward goes' {
        Get-QubePortForward | Remove-QubePortForward -Confirm:$false
        Get-QubePortForward | Should -BeNullOrEmpty
        foreach ($q in 'sys-net', 'default-dvm') { Get-StateFile $q /rw/config/qubes-firewall-user-script | Should -BeExactly "#!/bin/sh`n" }
        Export-QubeFirewallScript sys-net -WarningAction SilentlyContinue | Should -BeNullOrEmpty
    }

    It 'reports a forward that is not declared' {
        { Remove-QubePortForward work 80 -Confirm:$false -ErrorAction Stop } |
            Should -Throw -ErrorId 'PortForwardNotFound,QubesFirewall.PowerShell.Cmdlets.RemoveQubePortForwardCommand'
    }
}

Describe 'Export-QubeFirewallScript' {
    BeforeEach {
        $env:QUBESFW_ROOT = New-TestRoot
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -WarningAction SilentlyContinue
    }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'returns the block kept in the qube''s hook file' {
        $script = Export-QubeFirewallScript sys-net
        $script | Should -BeOfType [string]
        (Get-StateFile sys-net /rw/config/qubes-firewall-user-script).Contains($script) | Should -BeTrue
        $script | Should -Match 'nft -a list table ip qubes'
    }

    It 'gives scripts that bash and sh parse' -Skip:(-not (Get-Command bash -ErrorAction Ignore)) {
        foreach ($q in 'sys-net', 'sys-firewall', 'work') {
            $file = Join-Path $TestDrive "$q.sh"
            Export-QubeFirewallScript $q | Set-Content -LiteralPath $file
            & bash -n $file; $LASTEXITCODE | Should -Be 0
            & sh -n $file; $LASTEXITCODE | Should -Be 0
        }
    }
}
