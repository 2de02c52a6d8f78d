using System.Management.Automation;
using QubesFirewall.Engine.Agent;

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
            if (!TryEngine(() => Backend.GetInventory(), out var inventory)) continue;
            if (!TryEngine(() => inventory.Get(Engine.Validation.QubeName.Validate(name)), out var qube)) continue;
            var storage = AgentInstaller.StorageOf(inventory, qube);
            var where = storage.Name == qube.Name ? "" : $" (kept in {storage.Name})";
            if (!ShouldProcess(qube.Name + where, $"Install the QubesFirewall agent {AgentScript.Version} ({AgentScript.AgentPath}, {AgentInstaller.HookPathFor(qube)})")) continue;
            if (AgentInstaller.DisposableQuestion(inventory, qube) is { } question && !Force &&
                !ShouldContinue(question + " Install it there?", $"Install the agent in {storage.Name}", ref _yesToAll, ref _noToAll)) continue;
            if (TryEngine(() => AgentInstaller.Install(Backend, qube.Name), out var result))
            {
                if (result.Message is { } m) WriteVerbose($"{result.VMName}: {m}");
                WriteObject(result);
            }
        }
    }
}
