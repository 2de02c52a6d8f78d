# Halted qubes on the way of a port forward or binding, in real pwsh: the live backend names them (sys-firewall
# in the sample is a disposable of default-dvm, which is halted), -Start starts them outermost first; the
# offline root records the new power states in its state folder.
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')

    function Get-PowerState([string] $Qube) {
        $file = Join-Path $script:root "qubesfirewall-state/$Qube/power-state"
        if (Test-Path -LiteralPath $file) { (Get-Content -LiteralPath $file -Raw).Trim() } else { 'Halted' }
    }
}

Describe '-Start (offline)' {
    AfterEach { Reset-TestBackend }

    It 'starts the halted qubes of a forward outermost first, after saying so under -WhatIf' {
        Use-TestBackend 'offline' -PowerStates @{ 'sys-net' = 'Halted'; 'sys-firewall' = 'Halted'; 'work' = 'Halted' } | Out-Null
        $null = Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -Start -WhatIf -WarningAction SilentlyContinue
        Get-PowerState sys-net | Should -Be 'Halted'

        $verbose = Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -Start -Verbose -WarningAction SilentlyContinue 4>&1 |
            Where-Object { $_ -is [System.Management.Automation.VerboseRecord] } | ForEach-Object Message
        $verbose | Should -Contain 'Started sys-net, sys-firewall, default-dvm, work.'
        foreach ($q in 'sys-net', 'sys-firewall', 'default-dvm', 'work') { Get-PowerState $q | Should -Be 'Running' }
        (Get-QubePortForward work).Port | Should -Be 443
    }

    It 'leaves halted qubes as they are without -Start (their files are written offline)' {
        Use-TestBackend 'offline' -PowerStates @{ 'sys-net' = 'Halted' } | Out-Null
        $hops = Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -PassThru -WarningAction SilentlyContinue
        $hops.Status | Select-Object -Unique | Should -Be 'Recorded'
        Get-PowerState sys-net | Should -Be 'Halted'
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

    It 'refuses a forward whose qubes are halted, naming each, and changes nothing' {
        Use-TestBackend 'live' -PowerStates @{ 'sys-net' = 'Halted' } | Out-Null
        $err = $null
        Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'QubesNotRunning,QubesFirewall.PowerShell.Cmdlets.AddQubePortForwardCommand'
        "$($err[0])" | Should -Match 'sys-net \(halted\), default-dvm \(halted\)'
        "$($err[0])" | Should -Match '-Start'
        Get-QubePortForward | Should -BeNullOrEmpty
        Get-TestCalls | Where-Object { $_ -like 'admin.vm.feature.Set*' -or $_ -like 'admin.vm.Start*' } | Should -BeNullOrEmpty
    }

    It 'with -Start -WhatIf says what it would start and starts nothing' {
        Use-TestBackend 'live' | Out-Null
        $warnings = @()
        $null = Add-QubePortForward work 443 -AllowFrom 192.168.1.0/24 -Force -Start -WhatIf -WarningVariable warnings -WarningAction SilentlyContinue
        ($warnings -join "`n") | Should -Match 'only once default-dvm runs'
        Get-TestCalls | Where-Object { $_ -like 'admin.vm.Start*' } | Should -BeNullOrEmpty
        Get-PowerState default-dvm | Should -Be 'Halted'
    }

    It 'refuses a permanent binding of a halted client by name' {
        Use-TestBackend 'live' | Out-Null
        { Add-QubeTcpBinding untrusted work 444 -Permanent -ErrorAction Stop } | Should -Throw -ErrorId 'QubesNotRunning,QubesFirewall.PowerShell.Cmdlets.AddQubeTcpBindingCommand'
    }

    It 'refuses an inter-qube link whose qubes are halted, naming each; -Start -WhatIf names them and starts none' {
        Use-TestBackend 'live' | Out-Null
        $err = $null
        Enable-QubeInterVmNetwork -From work -To untrusted -Port 8080 -Force -ErrorVariable err -ErrorAction SilentlyContinue
        $err[0].FullyQualifiedErrorId | Should -Be 'QubesNotRunning,QubesFirewall.PowerShell.Cmdlets.EnableQubeInterVmNetworkCommand'
        "$($err[0])" | Should -Match 'default-dvm \(halted\), untrusted \(halted\)'
        Get-QubeInterVmNetwork | Should -BeNullOrEmpty

        $warnings = @()
        $null = Enable-QubeInterVmNetwork -From work -To untrusted -Port 8080 -Force -Start -WhatIf -WarningVariable warnings -WarningAction SilentlyContinue
        ($warnings -join "`n") | Should -Match 'only once default-dvm, untrusted run'
        Get-TestCalls | Where-Object { $_ -like 'admin.vm.Start*' -or $_ -like 'admin.vm.feature.Set*' } | Should -BeNullOrEmpty
        Get-PowerState untrusted | Should -Be 'Halted'
    }
}
