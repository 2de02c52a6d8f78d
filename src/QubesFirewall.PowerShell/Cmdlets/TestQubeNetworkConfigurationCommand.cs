using System.Management.Automation;
using QubesFirewall.Engine.Configuration;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>The drift between a configuration file and the system: one object per difference, nothing when they agree.</summary>
[Cmdlet(VerbsDiagnostic.Test, "QubeNetworkConfiguration")]
[OutputType(typeof(ConfigurationDrift))]
public sealed class TestQubeNetworkConfigurationCommand : NetworkConfigurationCmdlet
{
    protected override void ProcessRecord()
    {
        if (!TryReadConfiguration(out var configuration, out _)) return;
        if (TryEngine(() => ConfigurationComparer.Compare(configuration, Backend.GetInventory(), Backend.GetFirewall, Now), out var drift))
            WriteObject(drift, enumerateCollection: true);
    }
}
