# Halted qubes on the way of a port forward, a link or a binding, in real pwsh. Forwards and links are features
# only: a halted qube gets its keys and its agent applies them when it starts, so nothing is started or refused.
# A binding's client must run: the live backend names it, -Start starts it; the offline root records the new power
# state in its state folder.
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')

    function Get-PowerState([string] $Qube) {
        $file = Join-Path $script:root "qubesfirewall-state/$Qube/power-state"
        if (Test-Path -LiteralPath $file) { (Get-Content -LiteralPath $file -Raw).Trim() } else { 'Halted' }
    }
}

Describe 'Halted qubes (offline)' {
    AfterEach { Reset-TestBackend }

    It 'gives halted qubes their keys and starts none; -Start is no parameter of a forward' {
        Use-TestBackend 'offline' -PowerStates @{ 'sys-net' = 'Halted'; 'sys-firewall' = 'Halted'; 'work' = 'Halted' } | Out-Null
        $hops = Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -PassThru -WarningAction SilentlyContinue
        $hops.Status | Select-Object -Unique | Should -Be 'Recorded'
        foreach ($q in 'sys-net', 'sys-firewall', 'work') { Get-PowerState $q | Should -Be 'Halted' }
        (Get-Qube sys-net).Features['vm-config.qubesfw.gen'] | Should -Match '^for=sys-net gen=[0-9a-f]{16} keys=1$'
        { Add-QubePortForward work 444 -AllowFrom 192.168.1.0/24 -Start -ErrorAction Stop } | Should -Throw -ErrorId 'NamedParameterNotFound,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
    }

    It 'starts the client of a permanent binding' {
        Use-TestBackend 'offline' | Out-Null
        Add-QubeTcpBinding untrusted work 444 -Permanent -Start
        Get-PowerState untrusted | Should -Be 'Running'
        (Get-QubeTcpBinding untrusted).Port | Should -Be 444
    }
}

Describe 'Halted qubes (live)' {
    AfterEach { Reset-TestBackend }

    It 'sets the keys of a forward whose qubes are halted, starting none' {
        Use-TestBackend 'live' -PowerStates @{ 'sys-net' = 'Halted' } | Out-Null
        $hops = Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -NoWait -PassThru
        $hops.Status | Select-Object -Unique | Should -Be 'Sent'
        (Get-QubePortForward work).Port | Should -Be 443
        (Get-TestCalls | Where-Object { $_ -like 'admin.vm.feature.Set*' }).Count | Should -Be 7
        Get-TestCalls | Where-Object { $_ -like 'admin.vm.Start*' } | Should -BeNullOrEmpty
        Get-PowerState sys-net | Should -Be 'Halted'
    }

    It 'with -WhatIf sets nothing and starts nothing' {
        Use-TestBackend 'live' | Out-Null
        $warnings = @()
        $null = Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -WhatIf -WarningVariable warnings -WarningAction SilentlyContinue
        $warnings | Should -BeNullOrEmpty
        Get-TestCalls | Where-Object { $_ -like 'admin.vm.Start*' -or $_ -like 'admin.vm.feature.Set*' } | Should -BeNullOrEmpty
        Get-PowerState default-dvm | Should -Be 'Halted'
    }

    It 'refuses a permanent binding of a halted client by name' {
        Use-TestBackend 'live' | Out-Null
        { Add-QubeTcpBinding untrusted work 444 -Permanent -ErrorAction Stop } | Should -Throw -ErrorId 'QubesNotRunning,QubesFirewall.PowerShell.Cmdlets.AddQubeTcpBindingCommand'
    }

    It 'sets the keys of an inter-qube link whose destination is halted, starting none' {
        Use-TestBackend 'live' | Out-Null
        $null = Enable-QubeInterVmNetwork -From work -To untrusted -Port 8080 -WhatIf -WarningAction SilentlyContinue
        Get-TestCalls | Where-Object { $_ -like 'admin.vm.Start*' -or $_ -like 'admin.vm.feature.Set*' } | Should -BeNullOrEmpty
        Enable-QubeInterVmNetwork -From work -To untrusted -Port 8080 -NoWait
        (Get-QubeInterVmNetwork -From work).To | Should -Be 'untrusted'
        (Get-Qube untrusted).Features.Keys | Where-Object { $_ -like 'vm-config.qubesfw.ldst4.*' } | Should -Not -BeNullOrEmpty
        Get-TestCalls | Where-Object { $_ -like 'admin.vm.Start*' } | Should -BeNullOrEmpty
        Get-PowerState untrusted | Should -Be 'Halted'
    }
}
