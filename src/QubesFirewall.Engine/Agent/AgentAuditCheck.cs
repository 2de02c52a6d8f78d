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

    /// <summary>The keys the declarations derive for the qube now (derived once per inventory).</summary>
    internal static QubeAgentKeys DesiredOf(AuditContext context, Qube qube) =>
        Derived.GetValue(context.Inventory, inv => AgentFeatures.DeriveAll(inv)).GetValueOrDefault(qube.Name) ?? QubeAgentKeys.Empty(qube.Name);

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        var carries = qube.Features.Keys.Any(AgentFeatures.IsAgentFeature);
        var agent = qube.Features.GetValueOrDefault(AgentScript.VersionFeature);
        var desired = DesiredOf(context, qube);
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
                (agent is null
                    ? $"'{qube.Name}' {(carries ? "carries agent keys" : "is on the way of a forward or link")} but records no QubesFirewall agent: nothing in it applies them."
                    : $"'{qube.Name}' records agent {agent}; this module ships {AgentScript.Version}.")
                + " The fix installs it, and removes any managed block an earlier version left in the qube's hook files (your own lines there stay byte for byte).",
                AgentDelivery.InstallCommand([qube.Name]));
    }
}

/// <summary>
/// Test-QubeFirewall -Deep's check of what a qube's agent reports (<see cref="AgentStatus.Read"/>: one bounded qvm-run read
/// of its status file, held to the agent's grammar), against the generation dom0 gave it (its <c>vm-config.qubesfw.gen</c>
/// feature). Only for qubes that record the agent; only in a deep audit (<see cref="AuditContext.Deep"/>): otherwise nothing is
/// read from any qube. A qube that is not running is skipped, and says so (Info).
/// </summary>
public sealed class AgentStatusCheck : IAuditCheck
{
    /// <summary>The agent reports that it could not apply its keys (failed, refused, or applied only part): its message says why.</summary>
    public const string AgentFailed = "AgentFailed";

    /// <summary>The agent applied another generation than the one dom0's <c>vm-config.qubesfw.gen</c> gives it: it enforces an older set.</summary>
    public const string AgentBehind = "AgentBehind";

    /// <summary>The running qube gives no agent status (no status file, an answer outside the grammar, a read that failed).</summary>
    public const string AgentNoStatus = "AgentNoStatus";

    /// <summary>The agent status was not read: the qube is not running (or the root is offline).</summary>
    public const string AgentStatusNotRead = "AgentStatusNotRead";

    public string Name => "agent-status";

    public IEnumerable<AuditFinding> Run(AuditContext context, Qube qube)
    {
        if (context.ReadAgentStatus is not { } read || !qube.Features.ContainsKey(AgentScript.VersionFeature)) return [];
        AgentStatusReading reading;
        try
        {
            reading = read(qube);
        }
        catch (QubesFirewallException ex)
        {
            var hostile = ex.Kind == FailureKind.InvalidData;
            return [new AuditFinding(hostile ? AuditSeverity.Error : AuditSeverity.Warning, qube.Name, AgentNoStatus, null,
                $"The status of the QubesFirewall agent of '{qube.Name}' could not be read: {ex.Message} " +
                (hostile ? $"A compromised or broken qube can answer anything: look at /run/qubesfw/status in '{qube.Name}'." : "Fix what that says,") +
                $" then run Test-QubeFirewall -VMName {FixCommand.Name(qube.Name)} -Deep again.", null)];
        }
        return Judge(context, qube, reading);
    }

    private static IEnumerable<AuditFinding> Judge(AuditContext context, Qube qube, AgentStatusReading reading)
    {
        var name = qube.Name;
        if (reading.Kind == AgentStatusReadingKind.NotRead)
        {
            yield return new AuditFinding(AuditSeverity.Info, name, AgentStatusNotRead, null, $"The agent status of '{name}' was not read: {reading.Text}.", null);
            yield break;
        }
        var expected = AgentFeatures.GenerationOf(qube);
        if (reading.Status is not { } status)
        {
            var none = reading.Kind == AgentStatusReadingKind.NoStatus;
            yield return new AuditFinding(AuditSeverity.Error, name, AgentNoStatus, null,
                none
                    ? $"'{name}' records the QubesFirewall agent and runs, but gives {reading.Text}: nothing in it applies its keys (generation {expected ?? "?"}). Its hook did not start it (its files missing from the qube's /rw, or a start that failed). The fix installs what is missing and starts it."
                    : $"The agent status of '{name}' is {reading.Text} (a compromised or broken qube can answer anything): whether it applies its keys is unknown. Look at /run/qubesfw/status in '{name}', then run Test-QubeFirewall -VMName {FixCommand.Name(name)} -Deep again.",
                none ? AgentDelivery.InstallCommand([name]) : null);
            yield break;
        }
        // keys that are not what the declarations derive are repaired in dom0 (AgentKeysStale); otherwise the agent is started again, and re-reads every key
        var stale = AgentFeatures.Changes(qube, AgentAuditCheck.DesiredOf(context, qube)).Count > 0;
        var fix = stale ? $"Sync-QubeFirewall -VMName {FixCommand.Name(name)}" : AgentDelivery.InstallCommand([name]);
        var how = stale
            ? "Its keys are not what the declarations derive either (AgentKeysStale): the fix derives them again, and the agent applies the new set."
            : "The fix starts the agent again (installing what is missing), and it re-reads every key; if it fails again, its message says what to change in the qube.";
        if (status.IsFailure)
        {
            yield return new AuditFinding(AuditSeverity.Error, name, AgentFailed, null,
                $"The QubesFirewall agent of '{name}' reports {status.State} for generation {status.Generation}: {(status.Message.Length == 0 ? "(no message)" : status.Message)}. " +
                (status.State == "partial" ? "It applied the other keys; the refused ones are not enforced. " : $"It enforces what it applied last (generation {status.Applied}). ") + how,
                fix);
            yield break;
        }
        if (expected is not null && (status.State != "applied" || status.Applied != expected))
            yield return new AuditFinding(AuditSeverity.Error, name, AgentBehind, null,
                $"The QubesFirewall agent of '{name}' applied generation {status.Applied}, but dom0 gives it {expected} (its vm-config.qubesfw.gen); the agent says {status.State}{(status.Message.Length == 0 ? "" : ": " + status.Message)}. " +
                "It enforces an older set of forwards and links (right after a change it may still be loading the new one: if a second audit a moment later still says so, it is stuck). " + how,
                fix);
    }
}
