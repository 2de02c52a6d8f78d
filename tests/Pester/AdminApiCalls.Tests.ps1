# Pins the exact Admin API calls of each command (AdminApiCalls.psd1: method, argument, destination, count) on the
# sample root through the stand-in qubesd, the way qubesadmin's tests declare expected_calls, so a change in what a
# command costs on a real dom0 is a visible decision; and checks that the README's table is made from that list.
BeforeDiscovery {
    $scenarios = (Import-PowerShellDataFile (Join-Path $PSScriptRoot 'AdminApiCalls.psd1')).Scenarios
}

BeforeAll {
    $modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    Import-Module $modulePath -Force
    . (Join-Path $PSScriptRoot 'TestBackend.ps1')
    $script:expected = (Import-PowerShellDataFile (Join-Path $PSScriptRoot 'AdminApiCalls.psd1')).Scenarios

    # The README's table, made from the pinned calls: per command, the number of calls and of each method.
    function Get-CallTable {
        $lines = @('| command (sample root) | Admin API calls | which | why |', '| --- | ---: | --- | --- |')
        foreach ($s in $script:expected) {
            $byMethod = [ordered]@{}
            foreach ($call in $s.Calls) {
                $count, $key, $dest = $call -split ' ', 3
                $method = ($key -split '\+', 2)[0] -replace '^admin\.(vm\.)?', ''
                $byMethod[$method] = [int]$byMethod[$method] + [int]$count
            }
            $total = ($byMethod.Values | Measure-Object -Sum).Sum
            $which = ($byMethod.GetEnumerator() | ForEach-Object { "$($_.Value) ``$($_.Key)``" }) -join ', '
            $lines += "| ``$($s.Command -replace '\|', '\|')`` | $total | $which | $($s.Why) |"
        }
        $lines -join "`n"
    }
}

Describe 'Admin API calls of each command' {
    BeforeAll {
        Use-TestBackend live | Out-Null
        $script:actual = [ordered]@{}
        foreach ($s in $script:expected) {
            Set-Content $script:callLog -Value $null -NoNewline
            & { $ErrorActionPreference = 'Stop'; $WarningPreference = 'SilentlyContinue'; & ([scriptblock]::Create($s.Command)) | Out-Null }
            $script:actual[$s.Command] = @(Get-TestCalls | Where-Object { $_ } | Group-Object | Sort-Object Name | ForEach-Object { "$($_.Count) $($_.Name)" })
        }
    }
    AfterAll { Reset-TestBackend }

    It '<Command>' -ForEach $scenarios {
        $script:actual[$Command] | Should -Be @($Calls | Sort-Object { ($_ -split ' ', 2)[1] })
    }

    It 'the README''s table is made from these calls' {
        $readme = Get-Content -Raw (Join-Path $PSScriptRoot '../../README.md')
        $table = Get-CallTable
        $block = "<!-- admin-api-calls: made from tests/Pester/AdminApiCalls.psd1 -->`n$table`n<!-- /admin-api-calls -->"
        $readme.Replace("`r", '').Contains($block) | Should -BeTrue -Because "the README should hold this table:`n$table"
    }
}
