# What a new user sees first in real pwsh (format views, help examples), on a copy of the sample root.
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
}

Describe 'Default views' {
    BeforeEach { $null = Use-TestBackend offline }
    AfterEach { Reset-TestBackend }

    It 'Set-QubeIPv6 -PassThru shows the IPv6 address' {
        $text = Set-QubeIPv6 sys-net -Enabled $true -PassThru | Out-String -Width 200
        $text | Should -Match 'IP\s+IPv6\s+ProvidesNetwork'
        $text | Should -Match 'fd09:24ef:4179::a89:5'
    }

    It 'Get-Qube shows the columns its help example names, and only those' {
        $columns = (Get-FormatData -TypeName QubesFirewall.Engine.Model.Qube).FormatViewDefinition[0].Control.Headers.Label
        $example = (Get-Help Get-Qube -Examples).examples.example | Select-Object -First 1
        $said = ($example.remarks | Out-String)
        foreach ($column in $columns) { $said | Should -Match "\b$column\b" }
        # the example says Template and Label are properties to select, not columns of the view
        $columns | Should -Not -Contain 'Template'
        $said | Should -Match 'Format-Table Name, Template, Label'
        (Get-Qube | Out-String -Width 200) | Should -Match 'Name\s+Class\s+State\s+NetVM\s+IP\s+IPv6\s+ProvidesNetwork'
    }

    It 'Get-QubePortForward shows a comment whole, wrapped, not cut' {
        $comment = 'web server for the whole team, reachable from the office LAN only'
        Add-QubePortForward -VMName work -Port 443 -AllowFrom 192.168.1.0/24 -Comment $comment -WarningAction SilentlyContinue
        $text = Get-QubePortForward | Out-String -Width 120
        ($text -replace '\s+', ' ') | Should -Match ([regex]::Escape('web server for the whole team,'))
        ($text -replace '\s+', ' ') | Should -Match ([regex]::Escape('LAN only'))
        $text | Should -Not -Match '…'
    }
}
