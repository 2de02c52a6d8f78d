using System.Management.Automation;
using QubesFirewall.Engine.Agent;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>Stops the agent in qubes and removes its files and version record.</summary>
[Cmdlet(VerbsLifecycle.Uninstall, "QubeFirewallAgent", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(QubeFirewallAgent))]
public sealed class UninstallQubeFirewallAgentCommand : QubeNamesCmdlet
{
    protected override void ProcessRecord()
    {
        foreach (var name in VMName)
        {
            if (!TryEngine(() => Backend.GetInventory(), out var inventory)) continue;
            if (!TryEngine(() => inventory.Get(Engine.Validation.QubeName.Validate(name)), out var qube)) continue;
            if (!ShouldProcess(qube.Name, $"Stop the QubesFirewall agent and remove {AgentScript.AgentPath}, {AgentInstaller.HookPathFor(qube)} and feature {AgentScript.VersionFeature}")) continue;
            if (TryEngine(() => AgentInstaller.Uninstall(Backend, qube.Name), out var result)) WriteObject(result);
        }
    }
}
