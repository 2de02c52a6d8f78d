# Inter-qube links in real pwsh, on a copy of the sample root (work, personal and untrusted share
# sys-firewall, a disposable of default-dvm with its own agent keys; anon-whonix is behind sys-whonix).
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Enable-, Get- and Disable-QubeInterVmNetwork' {
    BeforeEach { $env:QUBESFW_ROOT = New-TestRoot }
    AfterAll { $env:QUBESFW_ROOT = $null }

    It 'links qubes piped from Get-Qube and shows the three parts present' {
        Get-Qube -Name work, untrusted | Enable-QubeInterVmNetwork -To personal -Port 5432 -WarningAction SilentlyContinue
        $links = @(Get-QubeInterVmNetwork -To personal)
        $links.From | Should -Be @('untrusted', 'work')
        $links | ForEach-Object {
            $_.ForwardRulePresent | Should -BeTrue
            $_.InputRulePresent | Should -BeTrue
            $_.FirewallRulePresent | Should -BeTrue
        }
        (Get-Qube work).Features.Keys | Should -Contain 'qubesfirewall.link.personal.tcp.5432'
        (Get-QubeFirewallRule work | Where-Object { $_.Rule.Comment -eq 'qubesfirewall link to personal' }).Rule.Text |
            Should -Be 'action=accept dst4=10.137.0.10/32 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal'
        ((Get-Qube personal).Features.Values -join "`n") | Should -Match ' proto=tcp ports=5432 src=10\.137\.0\.11 dst=10\.137\.0\.10 from=work vm=personal'
        ((Get-Qube sys-firewall).Features.Values -join "`n") | Should -Match ' proto=tcp ports=5432 src=10\.137\.0\.12 dst=10\.137\.0\.10 from=untrusted vm=personal'
        Get-StateFile personal /rw/config/rc.local | Should -BeNullOrEmpty
        (Get-QubeInterVmNetwork | Out-String) | Should -Match 'present'
    }

    It 'refuses qubes behind different network qubes, naming both' {
        { Enable-QubeInterVmNetwork -From work -To anon-whonix -Port 80 -ErrorAction Stop } |
            Should -Throw -ErrorId 'DifferentNetVM,QubesFirewall.PowerShell.Cmdlets.EnableQubeInterVmNetworkCommand' -ExpectedMessage "*'sys-firewall'*'sys-whonix'*"
    }

    It 'writes nothing with -WhatIf' {
        $before = Get-ChildItem $env:QUBESFW_ROOT -Recurse -File | Get-FileHash | ForEach-Object Hash
        Enable-QubeInterVmNetwork -From work -To personal -Protocol Any -Bidirectional -WhatIf -WarningAction SilentlyContinue
        Get-ChildItem $env:QUBESFW_ROOT -Recurse -File | Get-FileHash | ForEach-Object Hash | Should -Be $before
    }

    It 'Disable from the pipeline removes exactly what Enable added' {
        $rules = (Get-QubeFirewallRule work).Rule.Text
        Enable-QubeInterVmNetwork -From work -To personal -Port 5432, '6000-6010' -Protocol Any -WarningAction SilentlyContinue
        @(Get-QubeInterVmNetwork).Count | Should -Be 4
        Get-QubeInterVmNetwork | Disable-QubeInterVmNetwork -Confirm:$false -WarningAction SilentlyContinue
        @(Get-QubeInterVmNetwork).Count | Should -Be 0
        (Get-QubeFirewallRule work).Rule.Text | Should -Be $rules
        foreach ($q in 'personal', 'sys-firewall') { (Get-Qube $q).Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.*' } | Should -BeNullOrEmpty }
        { Disable-QubeInterVmNetwork work personal -Port 5432 -Confirm:$false -ErrorAction Stop } |
            Should -Throw -ErrorId 'LinkNotFound,QubesFirewall.PowerShell.Cmdlets.DisableQubeInterVmNetworkCommand'
    }

    It 'Test-QubeFirewall reports a link that lost a part' {
        Enable-QubeInterVmNetwork -From work -To personal -Port 5432 -WarningAction SilentlyContinue
        $b = [QubesFirewall.Engine.Backends.BackendSelector]::Open($null)
        try { $null = $b.RemoveFeature('personal', ($b.GetInventory().Get('personal').Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.ldst4.*' })) }
        finally { $b.Dispose() }
        $finding = Test-QubeFirewall work | Where-Object Check -eq 'LinkIncomplete'
        $finding.Severity | Should -Be 'Error'
        $finding.Message | Should -Match "input accept in personal's agent keys"
        $finding.Fix | Should -Be 'Enable-QubeInterVmNetwork -From work -To personal -Protocol Tcp -Port 5432'
    }
}

Describe 'Inter-qube links on the live backend' {
    BeforeAll {
        $script:LiveRoot = New-TestRoot
        $script:Socket = Join-Path $TestDrive 'qubesd.sock'
        $script:Server = Start-TestQubesd $LiveRoot $Socket
        $env:QUBESFW_ROOT = $null
        $env:QUBESFW_QUBESD_SOCKET = $Socket
    }
    AfterAll {
        $env:QUBESFW_QUBESD_SOCKET = $null
        Stop-TestQubesd $script:Server
    }

    It 'refuses qubes behind different network qubes through qubesd too' {
        { Enable-QubeInterVmNetwork -From work -To anon-whonix -Port 80 -ErrorAction Stop } |
            Should -Throw -ErrorId 'DifferentNetVM,QubesFirewall.PowerShell.Cmdlets.EnableQubeInterVmNetworkCommand'
        @(Get-QubeInterVmNetwork).Count | Should -Be 0
    }
}
