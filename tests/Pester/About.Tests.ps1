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
}
