using System.Globalization;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Deployment;

/// <summary>
/// One qube's planned rule-list change: the snapshot it was planned on, the edit, and the list
/// it would produce. Each step (a rule) is a line of the plan's text. What an
/// <see cref="DeploymentStepKind.EditFirewall"/> step carries: <see cref="Apply"/> makes it, <see cref="Inverse"/> puts it back.
/// </summary>
public sealed record FirewallChange(string VMName, FirewallDocument Snapshot, FirewallEdit Edit, FirewallEditOutcome Preview, IReadOnlyList<FirewallChangeStep> Steps)
{
    /// <summary>Makes the change (qubesd, or the offline root, refuses when the list changed since <see cref="Snapshot"/>).</summary>
    public FirewallEditOutcome Apply(IQubesBackend backend) =>
        Edit.IsEmpty ? Preview : backend.ApplyFirewallEdit(VMName, Edit, Snapshot);

    /// <summary>
    /// The edit that undoes the change as planned: the rules it added are removed (by their
    /// number and text in the planned list), the rules it removed go back at their old numbers.
    /// </summary>
    public FirewallEdit Inverse()
    {
        var kept = new HashSet<FirewallRule>(Preview.AlreadyPresent, ReferenceEqualityComparer.Instance);
        var added = Edit.Insertions.Select(i => i.Rule).Where(r => !kept.Contains(r)).ToHashSet(ReferenceEqualityComparer.Instance);
        var removals = Preview.Rules.Select((rule, number) => (rule, number)).Where(x => added.Contains(x.rule))
            .Select(x => new RuleRemoval(x.number, x.rule.Text)).ToList();
        var insertions = Preview.Removed.OrderBy(r => r.Number).Select(r => new RuleInsertion(RuleText.Parse(r.Text), r.Number)).ToList();
        return new FirewallEdit(insertions, removals);
    }
}

/// <summary>One rule added or removed, with the words ShouldProcess shows.</summary>
public sealed record FirewallChangeStep
{
    private readonly string? _target;
    private readonly string? _action;
    private readonly string? _vmName;
    private readonly int _number;
    private readonly bool _present;

    public FirewallChangeStep(string target, string action, RuleInsertion? insertion, RuleRemoval? removal)
    {
        _target = target;
        _action = action;
        Insertion = insertion;
        Removal = removal;
    }

    // An insertion whose words are made only when asked for (-WhatIf, -Verbose): a 10,000-rule Add kept two strings per rule
    // alive through the whole command for a text that is mostly never shown.
    private FirewallChangeStep(string vmName, RuleInsertion insertion, int number, bool present)
    {
        _vmName = vmName;
        _number = number;
        _present = present;
        Insertion = insertion;
    }

    /// <summary>The step of an insertion planned as rule <paramref name="number"/>, or kept because its rule is already there.</summary>
    internal static FirewallChangeStep Insert(string vmName, RuleInsertion insertion, int number, bool present) => new(vmName, insertion, number, present);

    /// <summary>"work: action=accept proto=tcp dstports=443-443".</summary>
    public string Target => _target ?? $"{_vmName}: {Insertion!.Rule.Text}";

    /// <summary>"Add firewall rule as number 3", "Keep firewall rule (already present)".</summary>
    public string Action => _action ?? (_present ? "Keep firewall rule (already present)" : "Add firewall rule as number " + _number.ToString(CultureInfo.InvariantCulture));

    public RuleInsertion? Insertion { get; init; }

    public RuleRemoval? Removal { get; init; }
}

