using System.Management.Automation;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Removes rules by number or piped rule objects. A piped rule is matched on its number and its
/// text; if the list changed since it was read, the removal is refused, never guessed.
/// </summary>
// No default parameter set: a piped rule object binds -InputObject (matched on number and text),
// never -VMName/-Number by property name (which would remove whatever rule now has that number).
[Cmdlet(VerbsCommon.Remove, "QubeFirewallRule", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.High)]
[OutputType(typeof(QubeFirewallRule))]
public sealed class RemoveQubeFirewallRuleCommand : QubeCmdlet
{
    private const string NumberSet = "Number";
    private const string InputObjectSet = "InputObject";

    private readonly Dictionary<string, List<(int Number, string? Text)>> _pending = new(StringComparer.Ordinal);

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = NumberSet, ValueFromPipelineByPropertyName = true)]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string VMName { get; set; } = "";

    [Parameter(Mandatory = true, Position = 1, ParameterSetName = NumberSet, ValueFromPipelineByPropertyName = true)]
    [ValidateRange(0, int.MaxValue)]
    [ArgumentCompleter(typeof(RuleNumberCompleter))]
    public int[] Number { get; set; } = [];

    [Parameter(Mandatory = true, ParameterSetName = InputObjectSet, ValueFromPipeline = true)]
    public QubeFirewallRule[] InputObject { get; set; } = [];

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        if (ParameterSetName == InputObjectSet)
            foreach (var rule in InputObject) Collect(rule.VMName, rule.Number, rule.Text);
        else
            foreach (var number in Number) Collect(VMName, number, null);
    }

    private void Collect(string vmName, int number, string? text)
    {
        if (!_pending.TryGetValue(vmName, out var list)) _pending[vmName] = list = [];
        list.Add((number, text));
    }

    protected override void EndProcessing()
    {
        foreach (var (vmName, targets) in WithProgress(_pending, "Removing firewall rules", p => p.Key))
        {
            if (!TryEngine(() => FirewallPlanner.PlanRemove(Backend, vmName, targets, Now), out var change)) continue;
            if (Deploy(FirewallPlanner.AsPlan(change, PlanOperation.Remove)) is not { Failure: null } done || !PassThru) continue;
            var visible = change.Snapshot.VisibleAt(Now);
            foreach (var removed in done.Result.Steps.Single().FirewallOutcome!.Removed.OrderBy(r => r.Number))
                WriteObject(new QubeFirewallRule(vmName, removed.Number, visible[removed.Number]));
        }
        base.EndProcessing();
    }
}
