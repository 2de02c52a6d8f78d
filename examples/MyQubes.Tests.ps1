# A Pester suite of your own: what your qubes' firewalls must be, checked against a COPY of your Qubes
# root, so nothing runs against the live system. Run it with:
#
#   Invoke-Pester ./MyQubes.Tests.ps1                                   # against the sample root
#   $env:MY_QUBES_ROOT = "$HOME/qubes-copy"; Invoke-Pester ./MyQubes.Tests.ps1   # against your copy
#
# A copy of dom0's root needs only qubes.xml and the firewall.xml files (never the disk images):
#   mkdir -p ~/qubes-copy && sudo cp /var/lib/qubes/qubes.xml ~/qubes-copy/
#   cd /var/lib/qubes && sudo find appvms vm-templates -name firewall.xml -exec cp --parents {} ~/qubes-copy/ \;
#   sudo chown -R "$USER" ~/qubes-copy
# The module's own CI runs this file, against the sample root, with the rest of its Pester suite.

BeforeAll {
    Import-Module QubesFirewall
    # Each run works on a fresh copy in Pester's TestDrive: a test that changes rules changes the copy only.
    $source = if ($env:MY_QUBES_ROOT) { $env:MY_QUBES_ROOT } else { Join-Path (Get-Module QubesFirewall).ModuleBase 'examples/qubes-root' }
    $script:root = Join-Path $TestDrive 'qubes-root'
    Copy-Item -Recurse -Path $source -Destination $root
    # Every cmdlet of the module gets -Root, so no test can reach the live system by mistake.
    $PSDefaultParameterValues['*-Qube*:Root'] = $root
}

AfterAll {
    $PSDefaultParameterValues.Remove('*-Qube*:Root')
}

Describe 'My qubes' {
    It 'the audit finds no error' {
        Test-QubeFirewall -Severity Error | Should -BeNullOrEmpty
    }

    It 'work ends with a drop, so only what its list allows gets out' {
        (Get-QubeFirewallRule work)[-1].Text | Should -Be 'action=drop'
    }

    It 'work reaches the intranet over https' {
        (Get-QubeFirewallRule work).Text | Should -Contain 'action=accept dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet https'
    }

    It 'the rules of work are enforced, and those behind sys-whonix are not filtered by a Qubes firewall' {
        (Test-QubeFirewall work -Severity Info | Where-Object Check -eq EnforcedIn).Message | Should -Match "enforced in 'sys-firewall'"
        Test-QubeFirewall anon-whonix -Severity Info | Where-Object Check -eq NotEnforced | Should -Not -BeNullOrEmpty
    }

    It 'no port of any qube is open to everyone' {
        Get-QubePortForward | Where-Object { $_.AllowFrom.Count -eq 0 } | Should -BeNullOrEmpty
    }

    It 'my rules file, set as the whole list of untrusted, leaves no dead rule' {
        'action=accept specialtarget=dns', 'action=drop dst4=192.168.0.0/16', 'action=accept' | Set-QubeFirewallRule -VMName untrusted
        Test-QubeFirewall untrusted | Where-Object Check -eq DeadRule | Should -BeNullOrEmpty
        (Get-QubeFirewallRule untrusted).Count | Should -Be 3
    }
}
