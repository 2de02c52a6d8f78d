using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Re-attaches running qubes to their network qube, parents first, the way
/// <c>qvm-prefs &lt;qube&gt; netvm &lt;same value&gt;</c> does: after a network qube restarted, or when
/// qubesd's own re-attach failed. One result object per qube.
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
        if (!TryEngine(() => NetVmRepairPlanner.Plan(Backend.GetInventory(), _netVms, Start), out var plan))
        {
            base.EndProcessing();
            return;
        }
        if (plan.Steps.Count == 0)
            WriteVerbose(_netVms.Count == 0 ? "No running qube has a network qube: nothing to re-attach." : $"No running qube has {string.Join(" or ", _netVms)} as its network qube: nothing to re-attach.");

        // One question for the whole plan (during an outage it re-attaches many qubes), its text every step in order.
        var asked = plan.Steps.Where(s => s.Kind is NetVmRepairStepKind.Start or NetVmRepairStepKind.Reattach).ToList();
        var go = asked.Count == 0 || ShouldProcess(
            $"Repair network attachments, in this order:{Environment.NewLine}" + string.Join(Environment.NewLine, asked.Select((s, i) => $"  {i + 1}. {s.Target}: {s.Operation}")),
            $"Re-attach {asked.Count(s => s.Kind == NetVmRepairStepKind.Reattach)} qube(s) to their network qube" +
            (asked.Any(s => s.Kind == NetVmRepairStepKind.Start) ? ", starting the halted network qubes first?" : "?"),
            "Repair-QubeNetVm");
        var failedStarts = new HashSet<string>(StringComparer.Ordinal);
        foreach (var step in plan.Steps)
        {
            if (!go && step.Kind is NetVmRepairStepKind.Start or NetVmRepairStepKind.Reattach)
            {
                // Not started: its clients cannot be attached either.
                if (step.Kind == NetVmRepairStepKind.Start) failedStarts.Add(step.VMName);
                continue;
            }
            var result = NetVmRepairPlanner.Execute(Backend, step, failedStarts);
            if (result.Action == NetVmRepairAction.Failed)
                WriteError(ToErrorRecord(new QubesFirewallException(
                    step.Kind == NetVmRepairStepKind.Refuse ? ErrorIds.NetVmNotRunning : ErrorIds.NetVmRepairFailed,
                    step.Kind == NetVmRepairStepKind.Refuse ? FailureKind.ResourceUnavailable : FailureKind.InvalidOperation,
                    $"{step.VMName}: {result.Reason}", step.VMName)));
            else if (result.Action == NetVmRepairAction.Skipped)
                WriteVerbose($"{step.VMName}: skipped. {result.Reason}");
            WriteObject(result);
        }
        base.EndProcessing();
    }
}
