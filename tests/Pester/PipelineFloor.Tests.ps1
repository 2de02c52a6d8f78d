# Keeps the pipeline speed of issue #21 from regressing by a wide margin: bench/Measure-PipelineFloor.ps1 (run
# smaller here) times each pipeline against pwsh's own floor in the same process, and each ratio must stay within
# three times its goal, a margin machine noise does not reach (the goals and the measured figures are in
# bench/README.md).
BeforeAll {
    $script:modulePath = if ($env:QUBESFW_TEST_MODULE) { $env:QUBESFW_TEST_MODULE } else { Join-Path $PSScriptRoot '../../out/QubesFirewall/QubesFirewall.psd1' }
    $script:rows = & (Join-Path $PSScriptRoot '../../bench/Measure-PipelineFloor.ps1') -Rules 10000 -Repeat 3 -FirstRepeat 2 -ModulePath $script:modulePath -PassThru
}

Describe 'Pipeline speed against pwsh''s floor' {
    It 'measures every row of the table' {
        $script:rows.Key | Should -Be @('First', 'Warm', 'Objects', 'Get', 'Sync')
        foreach ($row in $script:rows) { $row.FloorMs | Should -BeGreaterThan 0 }
    }

    It '<Key>: within three times its goal' -ForEach @(
        @{ Key = 'First'; Goal = 3 }
        @{ Key = 'Warm'; Goal = 2 }
        @{ Key = 'Objects'; Goal = 2 }
        @{ Key = 'Get'; Goal = 1 }
        @{ Key = 'Sync'; Goal = 1 }
    ) {
        $row = $script:rows | Where-Object Key -eq $Key
        $row.Goal | Should -Be $Goal
        $row.Ratio | Should -BeLessOrEqual (3 * $Goal) -Because "$($row.Work) took $([math]::Round($row.Ms)) ms against a floor of $([math]::Round($row.FloorMs)) ms"
    }
}
