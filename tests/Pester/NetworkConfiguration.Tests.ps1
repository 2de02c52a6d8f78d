# Get-/Show-QubeNetwork and Export-/Test-/Invoke-QubeNetworkConfiguration in real pwsh, on both backends.
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Network configuration as code (<Backend>)' -ForEach @(@{ Backend = 'offline' }, @{ Backend = 'live' }) {
    BeforeEach { $null = Use-TestBackend $Backend }
    AfterEach { Reset-TestBackend }

    It 'exports, finds no drift, finds the edit, applies it once, then has nothing to do' {
        $file = Join-Path $TestDrive "net-$Backend.psd1"
        Export-QubeNetworkConfiguration -Path $file
        Test-QubeNetworkConfiguration -Path $file | Should -BeNullOrEmpty

        $text = Get-Content -Raw $file
        $text = $text.Replace("'untrusted' = @{`n            NetVM = '(default)'", "'untrusted' = @{`n            NetVM = 'sys-net'")
        $text = $text.Replace("'personal' = @{`n            NetVM = '(default)'`n            IPv6 = 'Inherit'", "'personal' = @{`n            NetVM = '(default)'`n            IPv6 = 'Disabled'")
        $text = $text.Replace("                'action=accept proto=tcp dstports=443-443'`n                'action=drop'", "                'action=accept proto=tcp dstports=443-443'`n                'action=accept dst4=10.9.0.0/16 proto=udp dstports=53-53'`n                'action=drop'")
        Set-Content -Path $file -Value $text -NoNewline

        $drift = Test-QubeNetworkConfiguration -Path $file
        @($drift | ForEach-Object { "$($_.VMName) $($_.Kind)" }) | Should -Be @('personal IPv6', 'untrusted NetVM', 'work Rules')
        ($drift | Where-Object Kind -eq NetVM).Expected | Should -Be 'sys-net'

        Invoke-QubeNetworkConfiguration -Path $file -Confirm:$false
        Test-QubeNetworkConfiguration -Path $file | Should -BeNullOrEmpty
        (Get-Qube untrusted).NetVM | Should -Be 'sys-net'
        (Get-Qube personal).Features['ipv6'] | Should -Be ''
        (Get-QubeFirewallRule work)[6].Text | Should -Be 'action=accept dst4=10.9.0.0/16 proto=udp dstports=53-53'

        $calls = @(Get-TestCalls).Count
        Invoke-QubeNetworkConfiguration -Path $file -Confirm:$false -Verbose 4>&1 | Where-Object { "$_" -like 'Apply the network configuration:*' } | Should -BeNullOrEmpty
        if ($Backend -eq 'live') { @(Get-TestCalls | Select-Object -Skip $calls) -match '\.Set|\.Reset|\.Remove' | Should -BeNullOrEmpty }
    }

    It 'writes a file PowerShell itself reads as data' {
        $file = Join-Path $TestDrive "data-$Backend.psd1"
        Export-QubeNetworkConfiguration -Path $file
        $data = Import-PowerShellDataFile -Path $file
        $data.Version | Should -Be 1
        $data.Qubes.work.Rules[-1] | Should -Be 'action=drop'
        $data.Qubes.untrusted.NetVM | Should -Be '(default)'
    }

    It 'never runs what the file holds' {
        $marker = Join-Path $TestDrive "ran-$Backend"
        $file = Join-Path $TestDrive "evil-$Backend.psd1"
        Set-Content -Path $file -Value "@{ Version = 1; Qubes = @{ 'work' = @{ NetVM = `"`$(New-Item '$marker')`" } } }"
        { Test-QubeNetworkConfiguration -Path $file -ErrorAction Stop } | Should -Throw -ErrorId 'InvalidConfiguration,QubesFirewall.PowerShell.Cmdlets.TestQubeNetworkConfigurationCommand'
        Test-Path $marker | Should -BeFalse
    }
}

Describe 'Show-QubeNetwork' {
    BeforeEach { $null = Use-TestBackend 'offline' }
    AfterEach { Reset-TestBackend }

    It 'is plain ASCII when the output goes on or PlainText is asked for' {
        $piped = Show-QubeNetwork | ForEach-Object { $_ }
        $piped | Should -Match '(?m)^`-- sys-firewall \[DispVM\]  10\.138\.10\.201'
        $piped | Should -Not -Match "`e\["
        $saved = $PSStyle.OutputRendering
        try {
            $PSStyle.OutputRendering = 'PlainText'
            $text = Show-QubeNetwork
            $text | Should -Not -Match '[^\x00-\x7F]'
        }
        finally { $PSStyle.OutputRendering = $saved }
    }

    It 'draws Mermaid and Dot' {
        (Show-QubeNetwork -As Mermaid) | Should -Match '(?m)^    sys_firewall --> work$'
        (Show-QubeNetwork -As Dot) | Should -Match '(?m)^    "sys-firewall" -> "work";$'
    }

    It 'gives objects that pipe into the other cmdlets by name' {
        $nodes = Get-QubeNetwork -Name work, personal
        @($nodes.Name) | Should -Be @('work', 'personal')
        @(Get-QubeNetwork work | Get-QubeFirewallRule).Count | Should -Be 7
    }
}
