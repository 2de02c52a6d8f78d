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
            if (!TryEngine(() => AgentInstaller.PlanUninstall(Backend, name), out var plan)) continue;
            if (Deploy(plan, replan: () => AgentInstaller.PlanUninstall(Backend, name)) is { Failure: null } done)
                WriteObject(AgentInstaller.Uninstalled(Backend.GetInventory(), done));
        }
    }
}
