using System.Management.Automation;
using QubesFirewall.Engine.Formats;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Makes the qube's network qube enforce its current rules: writes the QubesDB entries qubesd
/// would write on a reload (offline: into the state folder); and brings the qube's own QubesFirewall
/// agent keys to what every forward and link declares.
/// </summary>
[Cmdlet(VerbsData.Sync, "QubeFirewall", SupportsShouldProcess = true)]
[OutputType(typeof(QubesDbEntry))]
public sealed class SyncQubeFirewallCommand : QubeNamesCmdlet
{
    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var name in WithProgress(VMName, "Syncing firewall rules into network qubes", n => n))
        {
            Engine.Model.QubesInventory? inventory = null;
            if (!TryEngine(() => (inventory = Backend.GetInventory()).Find(Engine.Validation.QubeName.Validate(name)) ?? throw Engine.Model.QubesInventory.NotFound(name, Backend.Description), out var qube)) continue;
            // Says who enforces the rules, as Test-QubeFirewall does (a Whonix gateway receives the entries and ignores them).
            var who = Engine.Planning.Enforcement.Of(inventory!, qube);
            WriteVerbose(who.Message);
            // No netvm: nobody enforces its rules (NoNetVM). A network qube such as sys-net records the agent, though: its keys are
            // then what there is to sync, and only they are.
            var keysOnly = qube.NetVM is null && Engine.Agent.AgentDelivery.AllHaveAgent(inventory!, [qube.Name]);
            if (!keysOnly && Deploy(Engine.Planning.FirewallPlanner.SyncPlan(inventory!, qube)) is { Failure: null } done && PassThru)
                WriteObject(done.Result.Steps.Single().Entries, enumerateCollection: true);
            // and its agent keys, where a forward or link change does not reach (a change rewrites only the qubes on its way)
            if (TryEngine(() => Engine.Agent.AgentDelivery.RepairPlan(Backend.GetInventory(), Backend.GetInventory().Get(qube.Name)), out var keys)) Deploy(keys);
        }
    }
}
