using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;

namespace QubesFirewall.Engine.Planning;

public static partial class FirewallAudit
{
    static partial void AddExtensionChecks(List<IAuditCheck> checks)
    {
        checks.Add(new InterVmLinkAuditCheck());
        checks.Add(new Agent.AgentAuditCheck());
        checks.Add(new Agent.AgentStatusCheck());
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

    /// <summary>A part of a link could not be checked (the source's rule list cannot be read).</summary>
    public const string LinkUnchecked = "LinkUnchecked";

    /// <summary>A qube carrying a part of a link has R4.3's custom-persist on: the /rw/config hooks, and so its agent, do not run.</summary>
    public const string LinkNotPersistent = "LinkNotPersistent";

    public string Name => "inter-qube-links";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        var links = InterVmLinkPlanner.List(context.Inventory, vm => context.Firewall(vm), context.Now, name => name == qube.Name);
        foreach (var link in links)
        {
            var again = EnableCommand(link);
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
            if (link.ForwardRulePresent == false) missing.Add($"the forward accept in {link.NetVM}'s agent keys");
            if (link.InputRulePresent == false) missing.Add($"the input accept in {link.To}'s agent keys");
            if (link.FirewallRulePresent == false) missing.Add($"the accept for {link.To} in {link.From}'s own Qubes firewall (before its catch-all)");
            if (missing.Count > 0)
                yield return new AuditFinding(AuditSeverity.Error, qube.Name, LinkIncomplete, null,
                    $"The link {link} is missing {string.Join(", and ", missing)}: its traffic is dropped there.", again);
            if (link.FirewallRulePresent is null)
                yield return new AuditFinding(AuditSeverity.Warning, qube.Name, LinkUnchecked, null,
                    $"The link {link} could not be checked completely: {link.From}'s rule list could not be read. Fix that, then run Test-QubeFirewall again.",
                    null);
            foreach (var name in new[] { link.NetVM, link.To }.Distinct())
            {
                if (name is null || context.Inventory.Find(name) is not { } part) continue;
                if (HookFiles.HasCustomPersist(context.Inventory, part))
                    yield return new AuditFinding(AuditSeverity.Warning, qube.Name, LinkNotPersistent, null,
                        $"'{part.Name}', which carries a part of the link {link}, has the R4.3 custom-persist service on: Qubes does not run its /rw/config hooks, so its QubesFirewall agent does not start and the part is gone after it restarts. " +
                        $"Turn custom-persist off (qvm-service {part.Name} custom-persist off), or have its template start the agent.",
                        null);
            }
        }
    }

    private static string EnableCommand(QubeInterVmLink link) =>
        $"Enable-QubeInterVmNetwork -From {FixCommand.Name(link.From)} -To {FixCommand.Name(link.To)} -Protocol {link.Protocol}{(link.Port == LinkPorts.AllText ? "" : " -Port " + FixCommand.Word(link.Port))}";
}
