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
public sealed record FirewallChangeStep(string Target, string Action, RuleInsertion? Insertion, RuleRemoval? Removal);
