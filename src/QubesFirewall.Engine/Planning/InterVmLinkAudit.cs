using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;

namespace QubesFirewall.Engine.Planning;

public static partial class FirewallAudit
{
    static partial void AddExtensionChecks(List<IAuditCheck> checks)
    {
        checks.Add(new InterVmLinkAuditCheck());
        checks.Add(new Agent.AgentAuditCheck());
    }
}

/// <summary>
/// Test-QubeFirewall's check of the inter-qube links a qube declares (as their source): a link works only
/// with all three parts in place (the network qube's forward accept, the destination's input accept, the
/// source's own Qubes firewall rule before its catch-all), and only while both qubes share their network qube.
/// </summary>
public sealed class InterVmLinkAuditCheck : IAuditCheck
{
    /// <summary>A declared link misses one of its parts, or cannot work as declared.</summary>
    public const string LinkIncomplete = "LinkIncomplete";

    /// <summary>A part of a link could not be checked (a hook file that cannot be read).</summary>
    public const string LinkUnchecked = "LinkUnchecked";

    /// <summary>A qube keeping a part of a link is a disposable (its /rw/config lives in its template) or has R4.3's custom-persist on (the hooks do not run).</summary>
    public const string LinkNotPersistent = "LinkNotPersistent";

    public string Name => "inter-qube-links";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        var links = InterVmLinkPlanner.List(context.Inventory, context.ReadQubeFile, vm => context.Firewall(vm), context.Now, name => name == qube.Name);
        foreach (var link in links)
        {
            var again = EnableCommand(link, NeedsForce(context.Inventory, link));
            if (link.Problem is not null)
            {
                yield return new AuditFinding(AuditSeverity.Error, qube.Name, LinkIncomplete, null,
                    $"The link {link} cannot work: {link.Problem} Fix that, or remove the link (the fix removes it).",
                    $"Disable-QubeInterVmNetwork -From {FixCommand.Name(link.From)} -To {FixCommand.Name(link.To)} -Protocol {link.Protocol} -Port {FixCommand.Word(link.Port)} -Confirm:$false");
                continue;
            }
            if (link.Change is not null && link.IPv4OnlyParts.Count == new[] { link.ForwardRulePresent, link.InputRulePresent, link.FirewallRulePresent }.Count(p => p == false))
            {
                // Not broken: IPv6 came on since the link was made, and only the IPv6 half is missing.
                yield return new AuditFinding(AuditSeverity.Warning, qube.Name, LinkIncomplete, null, $"The link {link} works over IPv4 only: {link.Change}", again);
                continue;
            }
            var missing = new List<string>();
            if (link.ForwardRulePresent == false) missing.Add($"the forward accept in {link.NetVM}'s managed block");
            if (link.InputRulePresent == false) missing.Add($"the input accept in {link.To}'s managed block");
            if (link.FirewallRulePresent == false) missing.Add($"the accept for {link.To} in {link.From}'s own Qubes firewall (before its catch-all)");
            if (missing.Count > 0)
                yield return new AuditFinding(AuditSeverity.Error, qube.Name, LinkIncomplete, null,
                    $"The link {link} is missing {string.Join(", and ", missing)}: its traffic is dropped there.", again);
            var unknown = new List<string>();
            if (link.ForwardRulePresent is null) unknown.Add($"{link.NetVM}'s hook file");
            if (link.InputRulePresent is null) unknown.Add($"{link.To}'s hook file");
            if (link.FirewallRulePresent is null) unknown.Add($"{link.From}'s rule list");
            if (unknown.Count > 0 && context.ReadQubeFile is not null)
                yield return new AuditFinding(AuditSeverity.Warning, qube.Name, LinkUnchecked, null,
                    $"The link {link} could not be checked completely: {string.Join(" and ", unknown)} could not be read (a qube that is not running?). Start the qubes of the link, then run Test-QubeFirewall again.",
                    null);
            foreach (var name in new[] { link.NetVM, link.To }.Distinct())
            {
                if (name is null || context.Inventory.Find(name) is not { } part) continue;
                var storage = ForwardPersistence.StorageOf(context.Inventory, part);
                if (storage.Name != part.Name)
                    yield return new AuditFinding(AuditSeverity.Warning, qube.Name, LinkNotPersistent, null,
                        $"'{part.Name}', which keeps a part of the link {link}, is a disposable of '{storage.Name}': its part lives in {storage.Name}'s {ForwardPersistence.HookPath(part)}, " +
                        $"which every disposable of {storage.Name} gets (the part checks the qube's name before it runs). To keep it to {part.Name} alone, make {part.Name} a non-disposable qube.",
                        null);
                if (ForwardPersistence.HasCustomPersist(context.Inventory, part))
                    yield return new AuditFinding(AuditSeverity.Warning, qube.Name, LinkNotPersistent, null,
                        $"'{part.Name}', which keeps a part of the link {link}, has the R4.3 custom-persist service on: Qubes does not run its /rw/config hooks, so its part is gone after it restarts. " +
                        $"Make {ForwardPersistence.HookPath(part)} persistent in {part.Name} (a custom-persist bind for /rw/config), or turn custom-persist off (qvm-service {part.Name} custom-persist off).",
                        null);
            }
        }
    }

    private static string EnableCommand(QubeInterVmLink link, bool force) =>
        $"Enable-QubeInterVmNetwork -From {FixCommand.Name(link.From)} -To {FixCommand.Name(link.To)} -Protocol {link.Protocol}{(link.Port == LinkPorts.AllText ? "" : " -Port " + FixCommand.Word(link.Port))}{(force ? " -Force" : "")}";

    // A part kept in a disposable's template: Enable refuses it without -Force, as it refused the first time.
    private static bool NeedsForce(QubesInventory inventory, QubeInterVmLink link) =>
        new[] { link.NetVM, link.To }.Any(n => n is not null && inventory.Find(n) is { } q && ForwardPersistence.StorageOf(inventory, q).Name != q.Name);
}
