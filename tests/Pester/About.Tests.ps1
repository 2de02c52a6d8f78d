# The conceptual help topic ships with the module and Get-Help finds it.
BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
}

Describe 'about_QubesFirewall' {
    It 'is shown by Get-Help with its concepts' {
        $text = Get-Help about_QubesFirewall | Out-String
        foreach ($heading in 'OFFLINE ROOT AND LIVE BACKEND', 'WHERE RULES ARE ENFORCED', 'PERSISTENCE', 'IPV6 PORT FORWARDS', 'QUBES RELEASES') {
            $text | Should -Match $heading
        }
        $text | Should -Match 'qubesd'
    }

    It 'lists every cmdlet of the manifest under SEE ALSO' {
        # A cmdlet added to CmdletsToExport must be added to the topic's "See also" too.
        $manifest = Import-PowerShellDataFile (Join-Path $PSScriptRoot '../../QubesFirewall.psd1')
        $topic = Get-Content -Raw (Join-Path $PSScriptRoot '../../docs/about/about_QubesFirewall.md')
        $seeAlso = ($topic -split '(?m)^## See also\s*$')[1]
        $seeAlso | Should -Not -BeNullOrEmpty
        $listed = [regex]::Matches($seeAlso, '\b[A-Z][a-z]+-Qube[A-Za-z0-9]*\b').Value | Sort-Object -Unique
        $listed | Should -Be ($manifest.CmdletsToExport | Sort-Object -Unique)
        # and Get-Help shows them
        $text = Get-Help about_QubesFirewall | Out-String
        foreach ($cmdlet in $manifest.CmdletsToExport) { $text | Should -Match ([regex]::Escape($cmdlet)) }
    }

    It 'tells how to test your own rules with Pester, with the example that CI runs' {
        $text = Get-Help about_QubesFirewall | Out-String
        $text | Should -Match 'TESTING YOUR RULES WITH PESTER'
        $text | Should -Match 'MyQubes.Tests.ps1'
        Join-Path $PSScriptRoot '../../examples/MyQubes.Tests.ps1' | Should -Exist
    }
}
