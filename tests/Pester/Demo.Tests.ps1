# The README's first command runs examples/Demo.ps1: it must run to the end, in a pwsh of its own,
# show each part of the tour and leave no temporary root behind.
Describe 'examples/Demo.ps1' {
    It 'tours rules, a port forward, a link and the audit without an error' {
        $demo = Join-Path $PSScriptRoot '../../examples/Demo.ps1'
        $before = @(Get-ChildItem ([IO.Path]::GetTempPath()) -Filter 'qubes-root-*' -Directory -ErrorAction Ignore).Count
        $output = & (Join-Path $PSHOME 'pwsh') -NoProfile -NonInteractive -File $demo 2>&1
        $text = ($output | Out-String) -replace '\x1b\[[0-9;]*m', ''
        $LASTEXITCODE | Should -Be 0 -Because "the demo printed:`n$text"
        $text | Should -Match 'Refused \(InvalidDstHost'
        $text | Should -Match 'Port forward: tcp/8443 -> work:8443'
        $text | Should -Match 'work\s+personal\s+Tcp\s+5432\s+sys-firewall\s+False\s+present\s+present\s+present'
        $text | Should -Not -Match 'ForwardDisposableHop|AgentKeysStale|AgentMissing' # the forward through the disposable sys-firewall: its keys are its own
        $text | Should -Match '(?m)^work\s+Forward\s+tcp/8443\s+target=8443 type=external allow=192\.168\.1\.0/24'
        $text | Should -Match '=> forward tcp/8443 from 192\.168\.1\.0/24 \(external, via sys-net, sys-firewall\)'
        @(Get-ChildItem ([IO.Path]::GetTempPath()) -Filter 'qubes-root-*' -Directory -ErrorAction Ignore).Count | Should -Be $before
    }
}
