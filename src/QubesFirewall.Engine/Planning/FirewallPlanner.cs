using System.Globalization;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Planning;

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
        var visible = snapshot.VisibleAt(now);
        var edit = FirewallEdit.Insert(insertions);
        var preview = edit.ApplyTo(visible, out var insertedAt);
        var steps = new List<FirewallChangeStep>(insertions.Count);
        var present = new HashSet<FirewallRule>(preview.AlreadyPresent, ReferenceEqualityComparer.Instance);
        for (var i = 0; i < insertions.Count; i++)
        {
            var insertion = insertions[i];
            steps.Add(FirewallChangeStep.Insert(vmName, insertion, insertedAt[i], present.Contains(insertion.Rule)));
        }
        return new FirewallChange(vmName, snapshot, edit, preview, steps);
    }

    public static FirewallChange PlanRemove(IQubesBackend backend, string vmName, IReadOnlyList<(int Number, string? Text)> targets, DateTimeOffset now) =>
        PlanRemove(backend.GetFirewall(vmName), vmName, targets, now);

    /// <summary>The pure planner, on a rule list already read.</summary>
    public static FirewallChange PlanRemove(FirewallDocument snapshot, string vmName, IReadOnlyList<(int Number, string? Text)> targets, DateTimeOffset now)
    {
        var visible = snapshot.VisibleAt(now);
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

    /// <summary>The plan of Add- or Remove-QubeFirewallRule for one qube: one rule-list edit, each rule a line of it.</summary>
    public static Plan AsPlan(FirewallChange change, PlanOperation operation)
    {
        var removing = operation == PlanOperation.Remove;
        var count = change.Steps.Count.ToString(CultureInfo.InvariantCulture);
        var purpose = removing ? $"remove firewall rules of {change.VMName}" : $"add firewall rules to {change.VMName}";
        return new Plan
        {
            Operation = operation,
            Target = change.VMName,
            Purpose = purpose,
            Description = $"{(removing ? "Remove firewall rules of" : "Add firewall rules to")} {change.VMName}:",
            Steps = change.Edit.IsEmpty ? [] : [DeploymentStep.EditFirewall(change, $"{change.VMName}: {(removing ? "remove" : "add")} {count} rule(s) of the Qubes firewall")],
        };
    }

    /// <summary>Sync-QubeFirewall's plan for one qube: its rules written into its network qube's QubesDB, as qubesd does on a reload.</summary>
    public static Plan SyncPlan(QubesInventory inventory, Qube qube)
    {
        var who = Enforcement.Of(inventory, qube);
        return new Plan
        {
            Operation = PlanOperation.Sync,
            Target = $"{qube.Name} ({who.Summary})",
            Purpose = $"write the firewall entries of {qube.Name} into its network qube's QubesDB",
            Description = $"Sync the firewall of {qube.Name}:",
            Steps = [new DeploymentStep
            {
                Kind = DeploymentStepKind.ReloadFirewall,
                VMName = qube.Name,
                Description = $"{qube.Name}: write its rules into the QubesDB of {qube.NetVM ?? "its network qube"} ({who.Summary})",
            }],
        };
    }
}
