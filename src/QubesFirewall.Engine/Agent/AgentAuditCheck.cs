using System.Runtime.CompilerServices;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Agent;

/// <summary>
/// Test-QubeFirewall's check of the agent keys, from dom0 facts only (nothing is read from the qube): the
/// <c>vm-config.qubesfw.*</c> features a qube carries against what the declarations derive for it now (stale after an
/// address changed through qvm-prefs or the ipv6 feature, strays, keys edited by hand), and the agent version it records.
/// </summary>
public sealed class AgentAuditCheck : IAuditCheck
{
    /// <summary>The qube's keys differ from what the declarations derive: its agent enforces something else.</summary>
    public const string AgentKeysStale = "AgentKeysStale";

    /// <summary>The qube carries keys (or the declarations give it some) but records no agent, or an older one.</summary>
    public const string AgentMissing = "AgentMissing";

    private static readonly ConditionalWeakTable<QubesInventory, IReadOnlyDictionary<string, QubeAgentKeys>> Derived = new();

    public string Name => "agent-keys";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        var keys = Derived.GetValue(context.Inventory, inv => AgentFeatures.DeriveAll(inv));
        var carries = qube.Features.Keys.Any(AgentFeatures.IsAgentFeature);
        var agent = qube.Features.GetValueOrDefault(AgentScript.VersionFeature);
        var desired = keys.GetValueOrDefault(qube.Name) ?? QubeAgentKeys.Empty(qube.Name);
        // a qube the declarations give keys must record the agent too: without it nothing applies them
        if (!carries && agent is null && desired.IsEmpty) yield break;
        var changes = AgentFeatures.Changes(qube, desired);
        if (changes.Count > 0)
        {
            var stray = changes.Where(c => c.IsRemove && c.Feature != AgentFeatures.GenFeature).Select(c => c.Feature).ToList();
            var stale = changes.Where(c => !c.IsRemove && c.Feature != AgentFeatures.GenFeature).Select(c => c.Feature).ToList();
            var parts = new List<string>();
            if (stale.Count > 0) parts.Add($"{stale.Count} key(s) missing or different from what the declarations give now ({string.Join(", ", stale)})");
            if (stray.Count > 0) parts.Add($"{stray.Count} stray key(s) no declaration gives ({string.Join(", ", stray)})");
            if (parts.Count == 0) parts.Add("its qubesfw.gen does not match its keys");
            yield return new AuditFinding(AuditSeverity.Error, qube.Name, AgentKeysStale, null,
                $"The agent keys of '{qube.Name}' are not what its forwards and links derive: {string.Join("; ", parts)}. An address changed by qvm-prefs or the ipv6 feature, " +
                "a declaration or key edited by hand, or an interrupted change leaves them so; its agent enforces the old set. " +
                "A forward or link change rewrites only the qubes on its way; Sync-QubeFirewall derives every declaration again and brings this qube's keys to it.",
                $"Sync-QubeFirewall -VMName {Planning.FixCommand.Name(qube.Name)}");
        }
        if ((carries || !desired.IsEmpty) && agent != AgentScript.Version)
            yield return new AuditFinding(AuditSeverity.Warning, qube.Name, AgentMissing, null,
                agent is null
                    ? $"'{qube.Name}' {(carries ? "carries agent keys" : "is on the way of a forward or link")} but records no QubesFirewall agent: nothing in it applies them."
                    : $"'{qube.Name}' records agent {agent}; this module ships {AgentScript.Version}.",
                AgentDelivery.InstallCommand([qube.Name]));
    }
}
