using System.Management.Automation;
using QubesFirewall.Engine;
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
public sealed class AddQubeFirewallRuleCommand : QubeCmdlet
{
    private const string FieldsSet = "Fields";
    private const string TextSet = "Text";

    private readonly Dictionary<string, List<RuleInsertion>> _pending = new(StringComparer.Ordinal);
    private readonly HashSet<string> _refused = new(StringComparer.Ordinal);

    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [Alias("Name")]
    [ArgumentCompleter(typeof(QubeNameCompleter))]
    [ValidateNotNullOrEmpty]
    public string VMName { get; set; } = "";

    [Parameter(Mandatory = true, ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    public RuleAction Action { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public RuleProtocol? Protocol { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [Alias("RemoteAddress")]
    [EmptyAsNull]
    public string? DstHost { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [Alias("RemotePort")]
    [EmptyAsNull]
    public string? DstPorts { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public int? IcmpType { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public SpecialTarget? SpecialTarget { get; set; }

    /// <summary>A DateTime, a TimeSpan from now, Unix seconds or "+SECONDS".</summary>
    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [EmptyAsNull]
    public object? Expire { get; set; }

    [Parameter(ParameterSetName = FieldsSet, ValueFromPipelineByPropertyName = true)]
    [Alias("Description")]
    [EmptyAsNull]
    public string? Comment { get; set; }

    /// <summary>One rule in the qvm-firewall / Admin API text form.</summary>
    [Parameter(Mandatory = true, Position = 1, ParameterSetName = TextSet, ValueFromPipeline = true)]
    [AllowEmptyString]
    [RuleLineTransformation]
    public RuleLine Rule { get; set; } = new("");

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
        var line = Rule.Text;
        if (ParameterSetName == TextSet && (string.IsNullOrWhiteSpace(line) || line.TrimStart().StartsWith('#')))
            return; // blank lines and comments in a rules file
        try
        {
            var rule = ParameterSetName == TextSet
                ? RuleText.Parse(line.Trim(), Now)
                : FirewallRule.Create(Action, Protocol, DstHost, DstPorts, IcmpType, SpecialTarget, ExpireArgument.ToUnixTime(Expire, Now), Comment);
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
                WriteError(ToErrorRecord(new QubesFirewallException("RulesNotAdded", FailureKind.InvalidArgument,
                    $"No rule was added to '{vmName}': some of its input was invalid (see the errors above). Fix it and run the command again.", vmName)));
                continue;
            }
            if (!TryEngine(() => FirewallPlanner.PlanInsert(Backend, vmName, insertions, Now), out var change)) continue;
            var accepted = change.Steps.Where(s => ShouldProcess(s.Target, s.Action)).ToList();
            if (accepted.Count == 0)
            {
                ShowWhatIfDetails(() => FirewallPlanner.Apply(Backend, change));
                continue;
            }
            if (!TryEngine(() => FirewallPlanner.Apply(Backend, change.Restrict(accepted)), out var outcome)) continue;
            foreach (var skipped in outcome.AlreadyPresent)
                WriteVerbose($"{vmName}: already present, not added again: {skipped.Text}");
            if (!PassThru) continue;
            var added = new HashSet<FirewallRule>(accepted.Select(s => s.Insertion!.Rule), ReferenceEqualityComparer.Instance);
            for (var i = 0; i < outcome.Rules.Count; i++)
                if (added.Contains(outcome.Rules[i])) WriteObject(new QubeFirewallRule(vmName, i, outcome.Rules[i]));
        }
        base.EndProcessing();
    }
}
