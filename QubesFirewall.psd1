# Module manifest source for QubesFirewall; build.ps1 -Task Package stages it into out/QubesFirewall/.
# ModuleVersion is the one version: the assemblies (Directory.Build.props) and the package take it from here.
@{
    RootModule           = 'QubesFirewall.PowerShell.dll'
    ModuleVersion        = '0.1.0'
    GUID                 = '3f6c9d2e-8a41-4b7e-9c55-2d1e0a7b6f13'
    Author               = 'QubesFirewall contributors'
    CompanyName          = 'QubesFirewall'
    Copyright            = '(c) QubesFirewall contributors. MIT License.'
    Description          = 'Scripted administration of Qubes OS networking from dom0: firewall rules, port forwarding and qube-to-qube networking, planned, validated and applied idempotently, on an offline Qubes root or through qubesd''s Admin API.'
    PowerShellVersion    = '7.4'
    CompatiblePSEditions = @('Core')
    RequiredAssemblies   = @('QubesFirewall.Engine.dll')
    FormatsToProcess     = @('QubesFirewall.format.ps1xml')
    CmdletsToExport      = @(
        'Get-Qube'
        'Get-QubeFirewallRule'
        'Add-QubeFirewallRule'
        'Set-QubeFirewallRule'
        'Remove-QubeFirewallRule'
        'Sync-QubeFirewall'
        'Get-QubePortForward'
        'Add-QubePortForward'
        'Remove-QubePortForward'
        'Export-QubeFirewallScript'
        'Get-QubeTcpBinding'
        'Add-QubeTcpBinding'
        'Remove-QubeTcpBinding'
        'Repair-QubeNetVm'
        'Set-QubeIPv6'
        'Test-QubeFirewall'
        'Get-QubeInterVmNetwork'
        'Enable-QubeInterVmNetwork'
        'Disable-QubeInterVmNetwork'
        'Install-QubeFirewallAgent'
        'Test-QubeFirewallAgent'
        'Uninstall-QubeFirewallAgent'
        'Get-QubeNetwork'
        'Show-QubeNetwork'
        'Export-QubeNetworkConfiguration'
        'Test-QubeNetworkConfiguration'
        'Invoke-QubeNetworkConfiguration'
    )
    FunctionsToExport    = @()
    AliasesToExport      = @()
    VariablesToExport    = @()
    PrivateData          = @{
        PSData = @{
            Tags         = @('Qubes', 'QubesOS', 'dom0', 'Firewall', 'nftables', 'PortForwarding', 'Linux', 'PSEdition_Core')
            LicenseUri   = 'https://opensource.org/license/mit'
            # build.ps1 fills this with the section of CHANGELOG.md for ModuleVersion in the packaged copy.
            ReleaseNotes = ''
        }
    }
}
