# Port forwarding in real pwsh, on a copy of the sample root (sys-firewall there is a disposable of default-dvm;
# sys-net, sys-firewall, work, personal and untrusted record the agent: a change is features only).
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Add-QubePortForward' {
    BeforeEach { $env:QUBESFW_ROOT = New-TestRoot }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'forwards a port to a qube piped from Get-Qube and returns each hop' {
        $hops = Get-Qube work | Add-QubePortForward -Port 443 -AllowFrom 192.168.1.0/24 -PassThru -WarningAction SilentlyContinue
        $hops.VMName | Should -Be @('sys-firewall', 'sys-net', 'work')
        $hops.Status | Select-Object -Unique | Should -Be 'Recorded'
        (Get-Qube work).Features['qubesfirewall.forward.tcp.443'] | Should -Be 'uuid=cf61609e-57bb-57dc-ad09-54ed6950a50b target=443 type=external allow=192.168.1.0/24' # bound to work's uuid
        ((Get-Qube sys-net).Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.hop4.*' }).Count | Should -Be 1
        (Get-Qube sys-firewall).Features['vm-config.qubesfw.gen'] | Should -Match '^for=sys-firewall gen=[0-9a-f]{16} keys=1$'
        (Get-Qube work).Features.Values | Where-Object { $_ -like '* proto=tcp port=443 to=443 dst=10.137.0.11 src=192.168.1.0/24 vm=work' } | Should -Not -BeNullOrEmpty
        # nothing is written into a qube: the disposable sys-firewall keeps its own features, default-dvm gets nothing
        Get-StateFile sys-net /rw/config/qubes-firewall-user-script | Should -BeNullOrEmpty
        Get-StateFile default-dvm /rw/config/qubes-firewall-user-script | Should -BeNullOrEmpty
        Get-StateFile work /rw/config/rc.local | Should -BeNullOrEmpty
    }

    It 'refuses a qube on the way without the agent, names the install command and changes nothing' {
        $b = [QubesFirewall.Engine.Backends.BackendSelector]::Open($null)
        try { $null = $b.RemoveFeature('sys-firewall', 'qubesfirewall.agent') } finally { $b.Dispose() }
        $before = Get-Content (Join-Path $env:QUBESFW_ROOT 'qubes.xml') -Raw
        $err = $null
        Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24 -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'QubeFirewallAgentMissing,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        "$($err[0])" | Should -Match 'Install-QubeFirewallAgent -VMName sys-firewall'
        Get-Content (Join-Path $env:QUBESFW_ROOT 'qubes.xml') -Raw | Should -BeExactly $before
    }

    It 'refuses a Whonix qube, a qube without network and a port already taken' {
        { Add-QubePortForward anon-whonix 80 -ErrorAction Stop } | Should -Throw -ErrorId 'WhonixInChain,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        { Add-QubePortForward vault 80 -ErrorAction Stop } | Should -Throw -ErrorId 'NoNetVM,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        Add-QubePortForward work 443 -AllowFrom 10.0.0.0/8 -WarningAction SilentlyContinue
        { Add-QubePortForward personal 443 -AllowFrom 10.0.0.0/8 -ErrorAction Stop -WarningAction SilentlyContinue } |
            Should -Throw -ErrorId 'PortAlreadyForwarded,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
    }

    It 'keeps the part another forward gave a shared hop, and refuses a hop key outside the agent''s grammar by name, changing nothing' {
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -WarningAction SilentlyContinue
        $key = (Get-Qube sys-net).Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.hop4.*' }
        $first = (Get-Qube sys-net).Features[$key]
        Add-QubePortForward personal 8080 -AllowFrom 10.0.0.0/8 -WarningAction SilentlyContinue
        $gen = (Get-Qube sys-net).Features['vm-config.qubesfw.gen'] -replace '^for=sys-net gen=([0-9a-f]{16}) keys=2$', '$1'
        $gen | Should -Match '^[0-9a-f]{16}$'
        (Get-Qube sys-net).Features[$key] | Should -BeExactly ($first -replace ' gen=[0-9a-f]{16} ', " gen=$gen ")

        Set-TestFeature sys-net $key ($first -replace ' src=192\.168\.1\.0/24 ', ' src=192.168.1.0/24;reboot ')
        $before = Get-Content (Join-Path $env:QUBESFW_ROOT 'qubes.xml') -Raw
        $err = $null
        Add-QubePortForward personal 8443 -AllowFrom 10.0.0.0/8 -ErrorVariable err -ErrorAction SilentlyContinue -WarningAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'InvalidAgentKey,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        "$($err[0])" | Should -Match ([regex]::Escape("qvm-features --unset sys-net $key"))
        Get-Content (Join-Path $env:QUBESFW_ROOT 'qubes.xml') -Raw | Should -BeExactly $before
    }

    It 'prints the whole plan with -WhatIf and writes nothing' {
        $before = Get-ChildItem $env:QUBESFW_ROOT -Recurse -File | Get-FileHash | ForEach-Object Hash
        $null = Add-QubePortForward work 8443 -TargetPort 443 -AllowFrom 203.0.113.0/24 -WhatIf -WarningAction SilentlyContinue
        (Get-ChildItem $env:QUBESFW_ROOT -Recurse -File | Get-FileHash | ForEach-Object Hash) | Should -Be $before
        Get-QubePortForward | Should -BeNullOrEmpty
    }

    It 'warns which clients their own firewall keeps out of an internal forward' {
        $warnings = @()
        Add-QubePortForward untrusted 8080 -Type Internal -AllowFrom 10.137.0.11 -WarningVariable warnings -WarningAction SilentlyContinue
        $warnings | Where-Object { "$_" -like "'work' cannot use*" } | Should -Not -BeNullOrEmpty
        ($warnings -join "`n") | Should -Match 'Add-QubeFirewallRule -VMName work -Action Accept -Protocol Tcp -DstHost 10\.137\.0\.12 -DstPorts 8080'
    }
}

Describe 'Get-QubePortForward and Remove-QubePortForward' {
    BeforeEach {
        $env:QUBESFW_ROOT = New-TestRoot
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Comment 'web' -WarningAction SilentlyContinue
        Add-QubePortForward personal 51820 -Protocol Udp -AllowFrom 198.51.100.0/24 -WarningAction SilentlyContinue
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
        (Get-Qube work).Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.*' } | Should -BeNullOrEmpty
        $sysNet = (Get-Qube sys-net).Features.Values -join "`n"
        $sysNet | Should -Match ' proto=udp port=51820 '
        $sysNet | Should -Not -Match ' proto=tcp port=443 '
    }

    It 'takes every key back when the last forward goes' {
        Get-QubePortForward | Remove-QubePortForward -Confirm:$false
        Get-QubePortForward | Should -BeNullOrEmpty
        foreach ($q in 'sys-net', 'sys-firewall', 'work', 'personal') { (Get-Qube $q).Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.*' } | Should -BeNullOrEmpty }
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
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -WarningAction SilentlyContinue
    }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'returns the rules the module derives for the qube, never written into it' {
        $script = Export-QubeFirewallScript sys-net
        $script | Should -BeOfType [string]
        Get-StateFile sys-net /rw/config/qubes-firewall-user-script | Should -BeNullOrEmpty
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
