using System.Management.Automation;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Deployment;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Installs the QubesFirewall agent in qubes (the one cmdlet that writes into qubes): the agent and its hook where the qube
/// keeps them across restarts, the managed blocks of earlier versions removed, the version recorded on the qube.
/// </summary>
[Cmdlet(VerbsLifecycle.Install, "QubeFirewallAgent", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium)]
[OutputType(typeof(QubeFirewallAgent))]
public sealed class InstallQubeFirewallAgentCommand : QubeNamesCmdlet
{
    private bool _yesToAll;
    private bool _noToAll;

    /// <summary>Installs into a disposable's template without asking.</summary>
    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var name in VMName)
        {
            if (!TryEngine(() => AgentInstaller.PlanInstall(Backend, name), out var plan)) continue;
            // Asked once more when the plan writes into a disposable's template.
            bool IntoTemplate(Plan p)
            {
                if (Force || !p.Steps.Any(s => s.Kind == DeploymentStepKind.WriteFile && s.VMName != p.Target)) return true;
                var inventory = Backend.GetInventory();
                return AgentInstaller.DisposableQuestion(inventory, inventory.Get(p.Target)) is not { } question ||
                    ShouldContinue(question + " Install it there?", $"Install the agent in {AgentInstaller.StorageOf(inventory, inventory.Get(p.Target)).Name}", ref _yesToAll, ref _noToAll);
            }
            if (Deploy(plan, replan: () => AgentInstaller.PlanInstall(Backend, name), confirmMore: IntoTemplate) is not { Failure: null } done) continue;
            var result = AgentInstaller.Installed(Backend.GetInventory(), done);
            if (result.Message is { } m) WriteVerbose($"{result.VMName}: {m}");
            WriteObject(result);
        }
    }
}
