using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Planning;

/// <summary>What happens to one rule when a list is set: it stays where it is (relative to the others), moves, comes in or goes.</summary>
public enum RuleSetChange
{
    Kept,
    Moved,
    Added,
    Removed,
}

/// <summary>One line of a Set's diff: the rule, its number before (null when added) and after (null when removed).</summary>
public sealed record RuleSetLine(RuleSetChange Change, string Text, int? OldNumber, int? NewNumber)
{
    public override string ToString() => Change switch
    {
        RuleSetChange.Kept => $"  = {NewNumber,3} {Text}",
        RuleSetChange.Moved => $"  ~ {NewNumber,3} {Text} (was {OldNumber})",
        RuleSetChange.Added => $"  + {NewNumber,3} {Text}",
        _ => $"  - {OldNumber,3} {Text}",
    };
}

/// <summary>
/// Setting a qube's whole rule list (Set-QubeFirewallRule, the Fix of audit findings that rewrite a list):
/// the rules given become the list, in their order; a rule given twice is kept once. The diff says per rule
/// kept, moved, added or removed. An empty list is refused unless allowed: it drops every connection, and
/// since qubesd's Admin API cannot store an empty list, it is written as the single rule <c>action=drop</c>,
/// which does the same.
/// </summary>
public sealed record FirewallSetPlan(string VMName, FirewallChange Change, IReadOnlyList<RuleSetLine> Diff, IReadOnlyList<FirewallRule> Duplicates, bool EmptyInput)
{
    public bool IsNoOp => Diff.All(l => l.Change == RuleSetChange.Kept);

    public int Count(RuleSetChange change) => Diff.Count(l => l.Change == change);

    /// <summary>The rules after the Set, in order.</summary>
    public IReadOnlyList<FirewallRule> Rules => Change.Preview.Rules;

    /// <summary>One line for ShouldProcess, then the diff, one rule a line.</summary>
    public string Describe()
    {
        var head = IsNoOp
            ? $"{VMName}: the list already is these {Rules.Count} rule{(Rules.Count == 1 ? "" : "s")}; nothing changes"
            : $"{VMName}: set {Rules.Count} rule{(Rules.Count == 1 ? "" : "s")} (kept {Count(RuleSetChange.Kept)}, added {Count(RuleSetChange.Added)}, removed {Count(RuleSetChange.Removed)}, moved {Count(RuleSetChange.Moved)})";
        if (EmptyInput)
            head += $". The list given is EMPTY: every connection of {VMName} is dropped (written as the single rule 'action=drop', since qubesd cannot store an empty list)";
        return head + Environment.NewLine + string.Join(Environment.NewLine, Diff.Select(l => l.ToString()));
    }
}

public static class FirewallSet
{
    /// <summary>The rule an empty list is written as.</summary>
    public static FirewallRule DropAll { get; } = FirewallRule.Create(RuleAction.Drop);

    public static FirewallSetPlan Plan(IQubesBackend backend, string vmName, IReadOnlyList<FirewallRule> rules, bool allowEmpty, DateTimeOffset now)
    {
        foreach (var rule in rules) rule.Validate();
        if (rules.Count == 0 && !allowEmpty) throw EmptyRefused(vmName);
        return Plan(backend.GetFirewall(vmName), vmName, rules, allowEmpty, now);
    }

    public static QubesFirewallException EmptyRefused(string vmName) =>
        new(ErrorIds.EmptyRuleInput, FailureKind.InvalidArgument,
            $"No rule was given for '{vmName}': setting an empty list drops every connection of the qube. Give -AllowEmpty to do that (the list becomes 'action=drop'), or give the rules. Nothing was changed.", vmName);

    /// <summary>The pure planner, on a rule list already read.</summary>
    public static FirewallSetPlan Plan(FirewallDocument snapshot, string vmName, IReadOnlyList<FirewallRule> rules, bool allowEmpty, DateTimeOffset now)
    {
        foreach (var rule in rules) rule.Validate();
        if (rules.Count == 0 && !allowEmpty) throw EmptyRefused(vmName);
        var empty = rules.Count == 0;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var wanted = new List<FirewallRule>();
        var duplicates = new List<FirewallRule>();
        foreach (var rule in empty ? [DropAll] : rules)
            (seen.Add(rule.Text) ? wanted : duplicates).Add(rule);

        var visible = snapshot.VisibleAt(now);
        var oldTexts = visible.Select(r => r.Text).ToList();
        var newTexts = wanted.Select(r => r.Text).ToList();
        var diff = Diff(oldTexts, newTexts);

        // As an edit: remove every visible rule (number and text, so a list changed meanwhile is refused), then
        // insert the new list from position 0. Nothing is written when the list stays the same.
        FirewallEdit edit;
        if (oldTexts.SequenceEqual(newTexts, StringComparer.Ordinal))
            edit = new FirewallEdit([], []);
        else
            edit = new FirewallEdit(
                wanted.Select((r, i) => new RuleInsertion(r, i)).ToList(),
                visible.Select((r, i) => new RuleRemoval(i, r.Text)).ToList());
        var preview = edit.IsEmpty ? new FirewallEditOutcome(visible, [], []) : edit.ApplyTo(visible);
        var change = new FirewallChange(vmName, snapshot, edit, preview, []);
        return new FirewallSetPlan(vmName, change, diff, duplicates, empty);
    }

    /// <summary>
    /// One plan for the lists set by one Set-QubeFirewallRule (a wildcard sets the same list on every match): a rule-list
    /// edit per qube whose list changes, its diff the detail lines. When none changes, the description says so per qube.
    /// </summary>
    public static Plan AsPlan(IReadOnlyList<FirewallSetPlan> plans, string target)
    {
        var changing = plans.Where(p => !p.IsNoOp).ToList();
        var steps = changing.Select(p =>
        {
            var lines = p.Describe().Split(Environment.NewLine);
            return DeploymentStep.EditFirewall(p.Change, lines[0]) with { Detail = string.Join("\n", lines.Skip(1)) };
        }).ToList();
        return new Plan
        {
            Operation = PlanOperation.Set,
            Target = target,
            Purpose = $"set the firewall rules of {target}",
            Description = changing.Count == 0 ? string.Join(Environment.NewLine, plans.Select(p => p.Describe())) : $"Set the firewall rules of {target}:",
            Steps = steps,
        };
    }

    /// <summary>
    /// Kept: rules on the longest common subsequence of the two lists (their order among each other is the same);
    /// moved: rules in both lists but not on it; added and removed: rules in one list only. New order, removed last.
    /// </summary>
    public static IReadOnlyList<RuleSetLine> Diff(IReadOnlyList<string> before, IReadOnlyList<string> after)
    {
        var n = before.Count;
        var m = after.Count;
        var lcs = new int[n + 1, m + 1];
        for (var i = n - 1; i >= 0; i--)
            for (var j = m - 1; j >= 0; j--)
                lcs[i, j] = before[i] == after[j] ? lcs[i + 1, j + 1] + 1 : Math.Max(lcs[i + 1, j], lcs[i, j + 1]);
        var keptAfter = new HashSet<int>();
        for (int i = 0, j = 0; i < n && j < m;)
        {
            if (before[i] == after[j]) { keptAfter.Add(j); i++; j++; }
            else if (lcs[i + 1, j] >= lcs[i, j + 1]) i++;
            else j++;
        }
        var oldIndex = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < n; i++) oldIndex.TryAdd(before[i], i);
        var inAfter = new HashSet<string>(after, StringComparer.Ordinal);
        var lines = new List<RuleSetLine>();
        for (var j = 0; j < m; j++)
        {
            if (oldIndex.TryGetValue(after[j], out var old))
                lines.Add(new RuleSetLine(keptAfter.Contains(j) ? RuleSetChange.Kept : RuleSetChange.Moved, after[j], old, j));
            else
                lines.Add(new RuleSetLine(RuleSetChange.Added, after[j], null, j));
        }
        for (var i = 0; i < n; i++)
            if (!inAfter.Contains(before[i])) lines.Add(new RuleSetLine(RuleSetChange.Removed, before[i], i, null));
        return lines;
    }

    /// <summary>
    /// The command that sets <paramref name="vmName"/>'s list to <paramref name="rules"/>: each rule's text through
    /// <see cref="FixCommand.Quote"/>, the name validated: what an audit Fix runs to rewrite a list.
    /// </summary>
    public static string Command(string vmName, IEnumerable<FirewallRule> rules) =>
        $"{string.Join(", ", rules.Select(r => FixCommand.Quote(r.Text)))} | Set-QubeFirewallRule -VMName {FixCommand.Name(vmName)}";
}
