using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Re-attaches running qubes to their network qube, parents first, the way
/// <c>qvm-prefs &lt;qube&gt; netvm &lt;same value&gt;</c> does: after a network qube restarted, or when
/// qubesd's own re-attach failed. One result object per qube; a failure half-way puts back every netvm changed.
/// </summary>
[Cmdlet(VerbsDiagnostic.Repair, "QubeNetVm", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(NetVmRepairResult))]
public sealed class RepairQubeNetVmCommand : QubeCmdlet
{
    private readonly List<string> _netVms = [];

    /// <summary>Only the running clients of these network qubes; without it, the clients of every network qube.</summary>
    [Parameter(Position = 0, ValueFromPipeline = true)]
    [ArgumentCompleter(typeof(NetworkQubeCompleter))]
    [ValidateNotNullOrEmpty]
    public string[]? NetVM { get; set; }

    /// <summary>Start a halted network qube (and its halted upstream) first, instead of refusing its clients.</summary>
    [Parameter]
    public SwitchParameter Start { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var name in NetVM ?? []) if (!_netVms.Contains(name, StringComparer.Ordinal)) _netVms.Add(name);
    }

    protected override void EndProcessing()
    {
        if (TryEngine(() => NetVmRepairPlanner.Plan(Backend.GetInventory(), _netVms, Start), out var plan))
        {
            if (plan.Steps.Count == 0)
                WriteVerbose(_netVms.Count == 0 ? "No running qube has a network qube: nothing to re-attach." : $"No running qube has {string.Join(" or ", _netVms)} as its network qube: nothing to re-attach.");
            // Errors per qube (below), not one for the plan.
            var deployed = Deploy(NetVmRepairPlanner.AsPlan(plan), start: false, replan: null, (p, options, _) => p.Apply(Backend, options), _ => null);
            foreach (var result in NetVmRepairPlanner.Results(plan, deployed?.Result))
            {
                if (result.Action == NetVmRepairAction.Failed)
                {
                    var refused = plan.Steps.Any(s => s.VMName == result.VMName && s.Kind == NetVmRepairStepKind.Refuse);
                    WriteError(ToErrorRecord(new QubesFirewallException(refused ? ErrorIds.NetVmNotRunning : ErrorIds.NetVmRepairFailed,
                        refused ? FailureKind.ResourceUnavailable : FailureKind.InvalidOperation, $"{result.VMName}: {result.Reason}", result.VMName)));
                }
                else if (result.Action == NetVmRepairAction.Skipped)
                    WriteVerbose($"{result.VMName}: skipped. {result.Reason}");
                WriteObject(result);
            }
        }
        base.EndProcessing();
    }
}
