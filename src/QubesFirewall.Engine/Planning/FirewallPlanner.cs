using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Planning;

/// <summary>
/// One qube's planned rule-list change: the snapshot it was planned on, the edit, and the list
/// it would produce. Each step describes itself for ShouldProcess / -WhatIf.
/// </summary>
public sealed record FirewallChange(string VMName, FirewallDocument Snapshot, FirewallEdit Edit, FirewallEditOutcome Preview, IReadOnlyList<FirewallChangeStep> Steps)
{
    /// <summary>The same change limited to the steps the user confirmed.</summary>
    public FirewallChange Restrict(IReadOnlyCollection<FirewallChangeStep> accepted)
    {
        // Set lookups by identity: a pipeline of 10,000 rules is 10,000 steps (a list scan per step was quadratic).
        var steps = new HashSet<FirewallChangeStep>(accepted, ReferenceEqualityComparer.Instance);
        if (steps.Count == Steps.Count && Steps.All(steps.Contains)) return this;
        var kept = new HashSet<object>(ReferenceEqualityComparer.Instance);
        foreach (var step in steps)
        {
            if (step.Insertion is { } i) kept.Add(i);
            if (step.Removal is { } r) kept.Add(r);
        }
        var insertions = Edit.Insertions.Where(kept.Contains).ToList();
        var removals = Edit.Removals.Where(kept.Contains).ToList();
        return this with { Edit = new FirewallEdit(insertions, removals), Steps = Steps.Where(steps.Contains).ToList() };
    }
}

/// <summary>One rule added or removed, with the words ShouldProcess shows.</summary>
public sealed record FirewallChangeStep(string Target, string Action, RuleInsertion? Insertion, RuleRemoval? Removal);

/// <summary>Plans additions and removals on a qube's rule list from one read of it.</summary>
public static class FirewallPlanner
{
    public static FirewallChange PlanInsert(IQubesBackend backend, string vmName, IReadOnlyList<RuleInsertion> insertions, DateTimeOffset now)
    {
        foreach (var insertion in insertions) insertion.Rule.Validate();
        return Insert(backend.GetFirewall(vmName), vmName, insertions, now);
    }

    /// <summary>The pure planner, on a rule list already read.</summary>
    public static FirewallChange PlanInsert(FirewallDocument snapshot, string vmName, IReadOnlyList<RuleInsertion> insertions, DateTimeOffset now)
    {
        foreach (var insertion in insertions) insertion.Rule.Validate();
        return Insert(snapshot, vmName, insertions, now);
    }

    // The insertions are validated (once: a 10,000-rule pipeline validated each rule twice here).
    private static FirewallChange Insert(FirewallDocument snapshot, string vmName, IReadOnlyList<RuleInsertion> insertions, DateTimeOffset now)
    {
        var visible = Visible(snapshot, now);
        var edit = FirewallEdit.Insert(insertions);
        var preview = edit.ApplyTo(visible);
        var steps = new List<FirewallChangeStep>(insertions.Count);
        var positions = new Dictionary<FirewallRule, int>(preview.Rules.Count, ReferenceEqualityComparer.Instance);
        for (var i = 0; i < preview.Rules.Count; i++) positions[preview.Rules[i]] = i;
        var present = new HashSet<FirewallRule>(preview.AlreadyPresent, ReferenceEqualityComparer.Instance);
        foreach (var insertion in insertions)
        {
            var isPresent = present.Contains(insertion.Rule);
            var index = positions.GetValueOrDefault(insertion.Rule, -1);
            var action = isPresent
                ? "Keep firewall rule (already present)"
                : $"Add firewall rule as number {index}";
            steps.Add(new FirewallChangeStep($"{vmName}: {insertion.Rule.Text}", action, insertion, null));
        }
        return new FirewallChange(vmName, snapshot, edit, preview, steps);
    }

    public static FirewallChange PlanRemove(IQubesBackend backend, string vmName, IReadOnlyList<(int Number, string? Text)> targets, DateTimeOffset now) =>
        PlanRemove(backend.GetFirewall(vmName), vmName, targets, now);

    /// <summary>The pure planner, on a rule list already read.</summary>
    public static FirewallChange PlanRemove(FirewallDocument snapshot, string vmName, IReadOnlyList<(int Number, string? Text)> targets, DateTimeOffset now)
    {
        var visible = Visible(snapshot, now);
        // A number alone takes its text from this read, so the write still checks that rule is unchanged.
        var removals = targets
            .Select(t => new RuleRemoval(t.Number, t.Text ?? (t.Number >= 0 && t.Number < visible.Count ? visible[t.Number].Text : "")))
            .ToList();
        var edit = FirewallEdit.Remove(removals);
        var preview = edit.ApplyTo(visible);
        var steps = removals
            .Select(r => new FirewallChangeStep($"{vmName}: {r.Text}", $"Remove firewall rule number {r.Number}", null, r))
            .ToList();
        return new FirewallChange(vmName, snapshot, edit, preview, steps);
    }

    /// <summary>
    /// The edit that undoes <paramref name="change"/> as planned: the rules it added are removed (by their
    /// number and text in the planned list), the rules it removed go back at their old numbers.
    /// </summary>
    public static FirewallEdit Inverse(FirewallChange change)
    {
        var kept = new HashSet<FirewallRule>(change.Preview.AlreadyPresent, ReferenceEqualityComparer.Instance);
        var added = change.Edit.Insertions.Select(i => i.Rule).Where(r => !kept.Contains(r)).ToHashSet(ReferenceEqualityComparer.Instance);
        var removals = change.Preview.Rules.Select((rule, number) => (rule, number)).Where(x => added.Contains(x.rule))
            .Select(x => new RuleRemoval(x.number, x.rule.Text)).ToList();
        var insertions = change.Preview.Removed.OrderBy(r => r.Number).Select(r => new RuleInsertion(RuleText.Parse(r.Text), r.Number)).ToList();
        return new FirewallEdit(insertions, removals);
    }

    public static FirewallEditOutcome Apply(IQubesBackend backend, FirewallChange change) =>
        change.Edit.IsEmpty ? change.Preview : backend.ApplyFirewallEdit(change.VMName, change.Edit, change.Snapshot);

    public static IReadOnlyList<FirewallRule> Visible(FirewallDocument document, DateTimeOffset now) =>
        document.Rules.Where(r => !r.IsExpiredAt(now)).ToList();
}
