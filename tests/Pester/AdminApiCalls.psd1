# The exact Admin API calls each command makes on the sample root through the stand-in qubesd (tests/Pester/
# AdminApiCalls.Tests.ps1 runs them in this order on one copy, and checks the README table made from this list):
# 'COUNT METHOD[+ARGUMENT] DESTINATION', the way qubesadmin's own tests declare expected_calls. A change here is
# a decision about what a command costs on a real dom0 (each call is one connection to qubesd and its work).
# Why: what the command needs to read, the reason for each call.
@{
    Scenarios = @(
        @{
            Command = 'Get-Qube'
            Why = 'the list, then the properties of every qube listed'
            Calls = @(
                '1 admin.vm.List dom0'
                '1 admin.vm.property.GetAll anon-whonix'
                '1 admin.vm.property.GetAll debian-13-xfce'
                '1 admin.vm.property.GetAll default-dvm'
                '1 admin.vm.property.GetAll default-mgmt-dvm'
                '1 admin.vm.property.GetAll dom0'
                '1 admin.vm.property.GetAll fedora-42-xfce'
                '1 admin.vm.property.GetAll personal'
                '1 admin.vm.property.GetAll sys-firewall'
                '1 admin.vm.property.GetAll sys-net'
                '1 admin.vm.property.GetAll sys-usb'
                '1 admin.vm.property.GetAll sys-whonix'
                '1 admin.vm.property.GetAll untrusted'
                '1 admin.vm.property.GetAll vault'
                '1 admin.vm.property.GetAll whonix-gateway-18'
                '1 admin.vm.property.GetAll whonix-workstation-18'
                '1 admin.vm.property.GetAll whonix-workstation-18-dvm'
                '1 admin.vm.property.GetAll work'
            )
        }
        @{
            Command = 'Get-Qube work'
            Why = 'the list, then that qube only'
            Calls = @(
                '1 admin.vm.List dom0'
                '1 admin.vm.property.GetAll work'
            )
        }
        @{
            Command = 'Get-QubeFirewallRule work'
            Why = 'no inventory: one Get'
            Calls = @(
                '1 admin.vm.firewall.Get work'
            )
        }
        @{
            Command = '"action=drop dsthost=198.51.100.1" | Add-QubeFirewallRule -VMName work'
            Why = 'Get to plan, Get again just before the Set (refused if the list changed), Set'
            Calls = @(
                '2 admin.vm.firewall.Get work'
                '1 admin.vm.firewall.Set work'
            )
        }
        @{
            Command = 'Remove-QubeFirewallRule work 0 -Confirm:$false'
            Why = 'as Add'
            Calls = @(
                '2 admin.vm.firewall.Get work'
                '1 admin.vm.firewall.Set work'
            )
        }
        @{
            Command = 'Sync-QubeFirewall work'
            Why = 'the qube (its netvm and addresses), its rules, Reload'
            Calls = @(
                '1 admin.vm.firewall.Get work'
                '1 admin.vm.firewall.Reload work'
                '1 admin.vm.List dom0'
                '1 admin.vm.property.GetAll work'
            )
        }
        @{
            Command = 'Set-QubeIPv6 work $true'
            Why = 'the chain work, sys-firewall, sys-net and their ipv6 feature by name; one Set'
            Calls = @(
                '1 admin.vm.feature.Get+ipv6 sys-firewall'
                '1 admin.vm.feature.Get+ipv6 sys-net'
                '1 admin.vm.feature.Get+ipv6 work'
                '1 admin.vm.feature.Set+ipv6 work'
                '1 admin.vm.List dom0'
                '1 admin.vm.property.GetAll sys-firewall'
                '1 admin.vm.property.GetAll sys-net'
                '1 admin.vm.property.GetAll work'
            )
        }
        @{
            Command = 'Test-QubeFirewall work'
            Why = 'every qube (forward and link declarations anywhere can concern work): names of their features; the features the checks ask for by name; tags of the network qubes and templates; work''s rules'
            Calls = @(
                '1 admin.vm.feature.Get+ipv6 work'
                '1 admin.vm.feature.Get+qubes-firewall default-dvm'
                '1 admin.vm.feature.Get+qubes-firewall fedora-42-xfce'
                '1 admin.vm.feature.Get+qubes-firewall sys-firewall'
                '1 admin.vm.feature.Get+service.qubes-firewall sys-firewall'
                '1 admin.vm.feature.Get+service.qubes-firewall sys-net'
                '1 admin.vm.feature.Get+whonix-gw default-dvm'
                '1 admin.vm.feature.Get+whonix-gw fedora-42-xfce'
                '1 admin.vm.feature.Get+whonix-gw sys-firewall'
                '1 admin.vm.feature.List anon-whonix'
                '1 admin.vm.feature.List debian-13-xfce'
                '1 admin.vm.feature.List default-dvm'
                '1 admin.vm.feature.List default-mgmt-dvm'
                '1 admin.vm.feature.List fedora-42-xfce'
                '1 admin.vm.feature.List personal'
                '1 admin.vm.feature.List sys-firewall'
                '1 admin.vm.feature.List sys-net'
                '1 admin.vm.feature.List sys-usb'
                '1 admin.vm.feature.List sys-whonix'
                '1 admin.vm.feature.List untrusted'
                '1 admin.vm.feature.List vault'
                '1 admin.vm.feature.List whonix-gateway-18'
                '1 admin.vm.feature.List whonix-workstation-18'
                '1 admin.vm.feature.List whonix-workstation-18-dvm'
                '1 admin.vm.feature.List work'
                '1 admin.vm.firewall.Get work'
                '1 admin.vm.List dom0'
                '1 admin.vm.property.GetAll anon-whonix'
                '1 admin.vm.property.GetAll debian-13-xfce'
                '1 admin.vm.property.GetAll default-dvm'
                '1 admin.vm.property.GetAll default-mgmt-dvm'
                '1 admin.vm.property.GetAll dom0'
                '1 admin.vm.property.GetAll fedora-42-xfce'
                '1 admin.vm.property.GetAll personal'
                '1 admin.vm.property.GetAll sys-firewall'
                '1 admin.vm.property.GetAll sys-net'
                '1 admin.vm.property.GetAll sys-usb'
                '1 admin.vm.property.GetAll sys-whonix'
                '1 admin.vm.property.GetAll untrusted'
                '1 admin.vm.property.GetAll vault'
                '1 admin.vm.property.GetAll whonix-gateway-18'
                '1 admin.vm.property.GetAll whonix-workstation-18'
                '1 admin.vm.property.GetAll whonix-workstation-18-dvm'
                '1 admin.vm.property.GetAll work'
                '1 admin.vm.tag.List default-dvm'
                '1 admin.vm.tag.List fedora-42-xfce'
                '1 admin.vm.tag.List sys-firewall'
            )
        }
        @{
            Command = 'Get-QubePortForward'
            Why = 'every qube and the names of its features (a declaration is a feature)'
            Calls = @(
                '1 admin.vm.feature.List anon-whonix'
                '1 admin.vm.feature.List debian-13-xfce'
                '1 admin.vm.feature.List default-dvm'
                '1 admin.vm.feature.List default-mgmt-dvm'
                '1 admin.vm.feature.List dom0'
                '1 admin.vm.feature.List fedora-42-xfce'
                '1 admin.vm.feature.List personal'
                '1 admin.vm.feature.List sys-firewall'
                '1 admin.vm.feature.List sys-net'
                '1 admin.vm.feature.List sys-usb'
                '1 admin.vm.feature.List sys-whonix'
                '1 admin.vm.feature.List untrusted'
                '1 admin.vm.feature.List vault'
                '1 admin.vm.feature.List whonix-gateway-18'
                '1 admin.vm.feature.List whonix-workstation-18'
                '1 admin.vm.feature.List whonix-workstation-18-dvm'
                '1 admin.vm.feature.List work'
                '1 admin.vm.List dom0'
                '1 admin.vm.property.GetAll anon-whonix'
                '1 admin.vm.property.GetAll debian-13-xfce'
                '1 admin.vm.property.GetAll default-dvm'
                '1 admin.vm.property.GetAll default-mgmt-dvm'
                '1 admin.vm.property.GetAll dom0'
                '1 admin.vm.property.GetAll fedora-42-xfce'
                '1 admin.vm.property.GetAll personal'
                '1 admin.vm.property.GetAll sys-firewall'
                '1 admin.vm.property.GetAll sys-net'
                '1 admin.vm.property.GetAll sys-usb'
                '1 admin.vm.property.GetAll sys-whonix'
                '1 admin.vm.property.GetAll untrusted'
                '1 admin.vm.property.GetAll vault'
                '1 admin.vm.property.GetAll whonix-gateway-18'
                '1 admin.vm.property.GetAll whonix-workstation-18'
                '1 admin.vm.property.GetAll whonix-workstation-18-dvm'
                '1 admin.vm.property.GetAll work'
            )
        }
        @{
            Command = 'Repair-QubeNetVm -WhatIf'
            Why = 'every qube (the clients of each network qube); -WhatIf sends nothing else'
            Calls = @(
                '1 admin.vm.List dom0'
                '1 admin.vm.property.GetAll anon-whonix'
                '1 admin.vm.property.GetAll debian-13-xfce'
                '1 admin.vm.property.GetAll default-dvm'
                '1 admin.vm.property.GetAll default-mgmt-dvm'
                '1 admin.vm.property.GetAll dom0'
                '1 admin.vm.property.GetAll fedora-42-xfce'
                '1 admin.vm.property.GetAll personal'
                '1 admin.vm.property.GetAll sys-firewall'
                '1 admin.vm.property.GetAll sys-net'
                '1 admin.vm.property.GetAll sys-usb'
                '1 admin.vm.property.GetAll sys-whonix'
                '1 admin.vm.property.GetAll untrusted'
                '1 admin.vm.property.GetAll vault'
                '1 admin.vm.property.GetAll whonix-gateway-18'
                '1 admin.vm.property.GetAll whonix-workstation-18'
                '1 admin.vm.property.GetAll whonix-workstation-18-dvm'
                '1 admin.vm.property.GetAll work'
            )
        }
        @{
            Command = 'Export-QubeFirewallScript sys-net'
            Why = 'as Get-QubePortForward: the forwards through sys-net can be declared on any qube'
            Calls = @(
                '1 admin.vm.feature.Get+service.qubes-firewall sys-net'
                '1 admin.vm.feature.List anon-whonix'
                '1 admin.vm.feature.List debian-13-xfce'
                '1 admin.vm.feature.List default-dvm'
                '1 admin.vm.feature.List default-mgmt-dvm'
                '1 admin.vm.feature.List fedora-42-xfce'
                '1 admin.vm.feature.List personal'
                '1 admin.vm.feature.List sys-firewall'
                '1 admin.vm.feature.List sys-net'
                '1 admin.vm.feature.List sys-usb'
                '1 admin.vm.feature.List sys-whonix'
                '1 admin.vm.feature.List untrusted'
                '1 admin.vm.feature.List vault'
                '1 admin.vm.feature.List whonix-gateway-18'
                '1 admin.vm.feature.List whonix-workstation-18'
                '1 admin.vm.feature.List whonix-workstation-18-dvm'
                '1 admin.vm.feature.List work'
                '1 admin.vm.List dom0'
                '1 admin.vm.property.GetAll anon-whonix'
                '1 admin.vm.property.GetAll debian-13-xfce'
                '1 admin.vm.property.GetAll default-dvm'
                '1 admin.vm.property.GetAll default-mgmt-dvm'
                '1 admin.vm.property.GetAll dom0'
                '1 admin.vm.property.GetAll fedora-42-xfce'
                '1 admin.vm.property.GetAll personal'
                '1 admin.vm.property.GetAll sys-firewall'
                '1 admin.vm.property.GetAll sys-net'
                '1 admin.vm.property.GetAll sys-usb'
                '1 admin.vm.property.GetAll sys-whonix'
                '1 admin.vm.property.GetAll untrusted'
                '1 admin.vm.property.GetAll vault'
                '1 admin.vm.property.GetAll whonix-gateway-18'
                '1 admin.vm.property.GetAll whonix-workstation-18'
                '1 admin.vm.property.GetAll whonix-workstation-18-dvm'
                '1 admin.vm.property.GetAll work'
            )
        }
    )
}
