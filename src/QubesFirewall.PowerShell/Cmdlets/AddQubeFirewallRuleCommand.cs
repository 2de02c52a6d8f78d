using System.Management.Automation;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.PowerShell.Cmdlets;

/// <summary>
/// Adds rules to a qube's firewall. Without -Position a rule goes in before the final catch-all,
/// where it can match. Piped rules are collected and written once per qube in EndProcessing.
/// </summary>
// No default parameter set: PowerShell then picks the set per pipeline object (a string binds
// -Rule, an object with rule properties binds the fields).
[Cmdlet(VerbsCommon.Add, "QubeFirewallRule", SupportsShouldProcess = true)]
[OutputType(typeof(QubeFirewallRule))]
public sealed class AddQubeFirewallRuleCommand : FirewallRuleInputCmdlet
{
    private readonly Dictionary<string, List<RuleInsertion>> _pending = new(StringComparer.Ordinal);
    private readonly HashSet<string> _refused = new(StringComparer.Ordinal);

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string VMName { get; set; } = "";

    /// <summary>0-based index the rule takes, as qvm-firewall's --before; the list's length appends.</summary>
    // By property name only with the fields: a piped line of text has no Position, and looking for one on each
    // line (two member look-ups per line) was a fifth of a 10,000-line pipeline's time.
    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [Parameter(ParameterSetName = TextSet)]
    [EmptyAsNull]
    public int? Position { get; set; }

    [Parameter]
    public SwitchParameter PassThru { get; set; }

    protected override void ProcessRecord()
    {
        try
        {
            if (ReadRule() is not { } rule) return; // blank lines and comments in a rules file
            if (!_pending.TryGetValue(VMName, out var list)) _pending[VMName] = list = [];
            list.Add(new RuleInsertion(rule, Position));
        }
        catch (QubesFirewallException ex)
        {
            _refused.Add(VMName);
            WriteError(ToErrorRecord(ex));
        }
    }

    protected override void EndProcessing()
    {
        foreach (var (vmName, insertions) in WithProgress(_pending, "Adding firewall rules", p => p.Key))
        {
            if (_refused.Contains(vmName))
            {
                WriteError(ToErrorRecord(new QubesFirewallException(ErrorIds.RulesNotAdded, FailureKind.InvalidArgument,
                    $"No rule was added to '{vmName}': some of its input was invalid (see the errors above). Fix it and run the command again.", vmName)));
                continue;
            }
            if (!TryEngine(() => FirewallPlanner.PlanInsert(Backend, vmName, insertions, Now), out var change)) continue;
            WarnIfNotEnforced(vmName);
            if (Deploy(FirewallPlanner.AsPlan(change, PlanOperation.Add)) is not { Failure: null } done) continue;
            var outcome = done.Result.Steps.Single().FirewallOutcome!;
            foreach (var skipped in outcome.AlreadyPresent)
                WriteVerbose($"{vmName}: already present, not added again: {skipped.Text}");
            if (!PassThru) continue;
            var added = new HashSet<FirewallRule>(insertions.Select(i => i.Rule), ReferenceEqualityComparer.Instance);
            for (var i = 0; i < outcome.Rules.Count; i++)
                if (added.Contains(outcome.Rules[i])) WriteObject(new QubeFirewallRule(vmName, i, outcome.Rules[i]));
        }
        base.EndProcessing();
    }
}
