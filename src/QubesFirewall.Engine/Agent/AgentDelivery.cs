using System.Diagnostics;
using System.Text.RegularExpressions;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Agent;

/// <summary>What the agent of one qube reported for the generation a change gave it.</summary>
public enum AgentOutcomeKind
{
    /// <summary>The agent loaded that generation.</summary>
    Applied,
    /// <summary>The agent refused it or nft did (the message says why); the change is rolled back.</summary>
    Failed,
    /// <summary>The qube is halted: qubesd writes its keys at its next start and the agent applies them then.</summary>
    Pending,
    /// <summary>No answer with that generation in time (or an answer outside the grammar).</summary>
    Unconfirmed,
    /// <summary>Offline root: the features are written; nothing runs.</summary>
    Recorded,
}

/// <summary>One qube's outcome, with the agent's message (sanitized) when it has one.</summary>
public sealed record AgentOutcome(string VMName, string? Generation, AgentOutcomeKind Kind, string? Message);

/// <summary>The agent's status line, read with a strict grammar.</summary>
public sealed partial record AgentStatus(string State, string Generation, string Applied, string Version, string Message)
{
    /// <summary>The longest status line dom0 accepts (the agent cuts its message at 400 bytes).</summary>
    public const int MaxLength = 600;

    [GeneratedRegex(@"\Astate=(applied|partial|waiting|refused|failed) gen=([0-9a-f]{16}|none) applied=([0-9a-f]{16}|none) version=([0-9a-f]{12}) msg=([ -~]{0,400})\n?\z", RegexOptions.CultureInvariant)]
    private static partial Regex Line();

    /// <summary>The status from what the qube printed; null when it is not one status line of the grammar.</summary>
    public static AgentStatus? Parse(string? text)
    {
        if (text is null || text.Length > MaxLength) return null;
        var m = Line().Match(text);
        return m.Success ? new AgentStatus(m.Groups[1].Value, m.Groups[2].Value, m.Groups[3].Value, m.Groups[4].Value, m.Groups[5].Value) : null;
    }

    /// <summary>Whether the agent reports that it could not apply its keys (its message says why).</summary>
    public bool IsFailure => State is "failed" or "partial" or "refused";

    /// <summary>The line as the agent wrote it (every field already in the grammar).</summary>
    public override string ToString() => $"state={State} gen={Generation} applied={Applied} version={Version} msg={Message}";

    /// <summary>
    /// The one read of an agent's status: one bounded qvm-run of <see cref="AgentDelivery.StatusCommand"/> in the running qube
    /// (the backend's bounded reader), its answer held to the agent's grammar (<see cref="Parse"/>), anything else shown escaped.
    /// Nothing is sent offline or to a qube that is not running. Throws what the read throws (a qube that answers too much, qvm-run failing).
    /// </summary>
    public static AgentStatusReading Read(IQubesBackend backend, Qube qube)
    {
        if (!backend.RunsInQubes) return new(AgentStatusReadingKind.NotRead, null, "the offline root runs no qube: no agent status to read");
        if (qube.State != PowerState.Running) return new(AgentStatusReadingKind.NotRead, null, $"'{qube.Name}' is not running: its agent applies its keys when it starts");
        var read = backend.RunQubeShellScript(qube.Name, AgentDelivery.StatusCommand, "read the QubesFirewall agent status");
        if (!read.Executed) return new(AgentStatusReadingKind.NotRead, null, $"the status of {qube.Name} was not read (nothing was sent)");
        var output = read.Output;
        if (Parse(output) is { } status) return new(AgentStatusReadingKind.Status, status, status.ToString());
        return output.TrimEnd() == "state=none"
            ? new(AgentStatusReadingKind.NoStatus, null, "no status: the agent has not run since the qube started")
            : new(AgentStatusReadingKind.NotAStatus, null, "not an agent status: " + Shown(output.TrimEnd('\n')));
    }

    // what a qube printed: control characters escaped (the one sanitizer for qube output), bounded
    private static string Shown(string output)
    {
        var text = Trust.QubeText.Escape(output.Length > 400 ? output[..400] : output);
        return text.Length == 0 ? "(no output)" : text;
    }
}

/// <summary>What one read of an agent's status gave.</summary>
public enum AgentStatusReadingKind
{
    /// <summary>A status line of the agent's grammar.</summary>
    Status,
    /// <summary>The qube has no status file: its agent has not run since the qube started.</summary>
    NoStatus,
    /// <summary>The qube answered something outside the grammar (shown escaped).</summary>
    NotAStatus,
    /// <summary>Nothing was asked: offline, a qube that is not running, or -WhatIf.</summary>
    NotRead,
}

/// <summary>One read of an agent's status (<see cref="AgentStatus.Read"/>): the status when there is one, and a text to show either way (sanitized).</summary>
public sealed record AgentStatusReading(AgentStatusReadingKind Kind, AgentStatus? Status, string Text);

/// <summary>
/// Delivery through the agent (invariant 3): a change is the declaration feature plus the derived <c>vm-config.qubesfw.*</c>
/// features of every qube, set and removed in dom0; afterwards each running qube whose keys changed is asked, by one bounded
/// read of its status file per poll, whether its agent applied the new generation.
/// </summary>
public static class AgentDelivery
{
    public const string StatusCommand = "cat /run/qubesfw/status 2>/dev/null || echo state=none\n";

    /// <summary>Whether every named qube records the agent (feature <c>qubesfirewall.agent</c>).</summary>
    public static bool AllHaveAgent(QubesInventory inventory, IEnumerable<string> qubes) =>
        AgentInstaller.Missing(inventory, qubes).Count == 0;

    /// <summary>
    /// Refuses a forward or link change when a qube it reaches lacks the agent (<c>QubeFirewallAgentMissing</c>): the error names
    /// those qubes and the command that installs it. Nothing is ever written into qubes per change, so without the agent there is
    /// no way to deliver it.
    /// </summary>
    public static void RequireAgent(QubesInventory inventory, IEnumerable<string> qubes, string what)
    {
        var missing = AgentInstaller.Missing(inventory, qubes);
        if (missing.Count == 0) return;
        var disposables = missing.Select(inventory.Get).Where(q => AgentInstaller.StorageOf(inventory, q).Name != q.Name).ToList();
        throw new QubesFirewallException(ErrorIds.QubeFirewallAgentMissing, FailureKind.InvalidOperation,
            $"{what} needs the QubesFirewall agent in every qube on the way, and {string.Join(", ", missing)} {(missing.Count == 1 ? "has" : "have")} none. " +
            $"Install it once: {InstallCommand(missing)}" +
            (disposables.Count == 0 ? "" : $" ({string.Join(", ", disposables.Select(d => $"{d.Name}'s is kept in its disposable template {AgentInstaller.StorageOf(inventory, d).Name}"))}; asked once)") +
            ". Then each change is feature calls in dom0 only. Nothing was changed.", missing[0]);
    }

    /// <summary>The runnable command that installs the agent in <paramref name="qubes"/>.</summary>
    public static string InstallCommand(IEnumerable<string> qubes) =>
        "Install-QubeFirewallAgent -VMName " + string.Join(", ", qubes.Select(Planning.FixCommand.Name));

    /// <summary>The inventory with one feature of one qube set (or removed when <paramref name="value"/> is null), as it is after the declaration step.</summary>
    public static QubesInventory WithFeature(QubesInventory inventory, string vmName, string name, string? value) =>
        inventory.WithQube(vmName, q => q with { Features = new FeatureOverlay(q.Features, name, value) });

    /// <summary>
    /// A qube's features with one set or removed, over the features as read: nothing is read to make it (a copy of the whole
    /// map would read every value), the names and values it is asked for come from <paramref name="under"/> as they would.
    /// </summary>
    private sealed class FeatureOverlay(IReadOnlyDictionary<string, string> under, string name, string? value) : IReadOnlyDictionary<string, string>
    {
        public bool TryGetValue(string key, out string result)
        {
            if (key != name) return under.TryGetValue(key, out result!);
            result = value!;
            return value is not null;
        }

        public string this[string key] => TryGetValue(key, out var v) ? v : throw new KeyNotFoundException(key);
        public bool ContainsKey(string key) => key == name ? value is not null : under.ContainsKey(key);
        public IEnumerable<string> Keys => under.Keys.Where(k => k != name).Concat(value is null ? [] : [name]);
        public IEnumerable<string> Values => this.Select(p => p.Value);
        public int Count => Keys.Count();
        public IEnumerator<KeyValuePair<string, string>> GetEnumerator() =>
            Keys.Select(k => TryGetValue(k, out var v) ? new KeyValuePair<string, string>(k, v) : default).Where(p => p.Key is not null).GetEnumerator();
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>
    /// Sync-QubeFirewall's repair of one qube's agent keys, the drift a forward or link change leaves where it does not reach
    /// (<see cref="ScopedKeySteps"/>): every declaration derived again (each qube's feature names are read), and the qube's keys
    /// brought to what they give it, strays and copies removed, <c>gen</c> last. No steps for a qube that carries no keys and
    /// records no agent (nothing in it could apply them: Test-QubeFirewall says AgentMissing).
    /// </summary>
    public static Plan RepairPlan(QubesInventory inventory, Qube qube)
    {
        var steps = new List<DeploymentStep>();
        var warnings = new List<string>();
        if (qube.Features.Keys.Any(AgentFeatures.IsAgentFeature) || qube.Features.ContainsKey(AgentScript.VersionFeature))
        {
            var keys = AgentFeatures.DeriveAll(inventory, warnings).GetValueOrDefault(qube.Name) ?? QubeAgentKeys.Empty(qube.Name);
            steps.AddRange(Steps(AgentFeatures.Changes(qube, keys), keys, new Dictionary<string, string>(StringComparer.Ordinal)));
        }
        return new Plan
        {
            Operation = PlanOperation.Sync,
            Target = $"{qube.Name} (its QubesFirewall agent keys)",
            Purpose = $"bring the agent keys of {qube.Name} to what every forward and link declares",
            Description = steps.Count == 0 ? $"The agent keys of {qube.Name} are what the declarations derive: nothing to change." : $"Sync the agent keys of {qube.Name}:",
            Steps = steps,
            Warnings = warnings.Distinct().ToList(),
        };
    }

    /// <summary>
    /// The feature steps of a forward or link change, scoped to the qubes it touches (<paramref name="qubes"/>, in inventory order;
    /// no other qube is read). A qube's set is the parts of its own keys that <paramref name="owned"/> does not claim (those other
    /// declarations gave it: each part is complete on its own and names its declaring qube, so it is kept as it is, read with the
    /// agent's grammar, <see cref="AgentFeatures.ReadPart"/>; a copy naming another qube goes), plus <paramref name="parts"/> (what the changed declaration gives the
    /// qube now), sealed again: new and changed data keys, the change's own keys it no longer gives removed, <c>gen</c> last.
    /// Keys on qubes the change does not touch (strays, parts left stale by a <c>qvm-prefs</c> change) are Test-QubeFirewall's
    /// (<c>AgentKeysStale</c>) and Sync-QubeFirewall's to repair, which derive every declaration again.
    /// <paramref name="generations"/> gets the generation each changed qube's agent must report; <paramref name="forwardCounts"/>
    /// how many forwards each touched qube carries after.
    /// </summary>
    public static List<DeploymentStep> ScopedKeySteps(QubesInventory inventory, IReadOnlyCollection<string> qubes, Func<string, bool> owned,
        Func<Qube, IEnumerable<(string Name, List<string> Fields)>> parts, IDictionary<string, string> generations, IDictionary<string, int>? forwardCounts = null)
    {
        var steps = new List<DeploymentStep>();
        foreach (var name in inventory.Names.Where(qubes.Contains))
        {
            var qube = inventory.Get(name);
            var kept = Qube.FeaturesNamed(qube.Features, f => AgentFeatures.IsAgentFeature(f) && f != AgentFeatures.GenFeature && !owned(f))
                .Select(f => AgentFeatures.ReadPart(name, f.Key, f.Value)).OfType<AgentPart>().Select(p => (p.Name, p.Fields)).ToList();
            var keys = AgentFeatures.Seal(name, kept.Concat(parts(qube).Select(p => (p.Name, (IReadOnlyList<string>)p.Fields))));
            if (forwardCounts is not null)
                forwardCounts[name] = keys.Data.Select(k => AgentFeatures.ForwardIdOf(k.Feature[AgentFeatures.VmConfigPrefix.Length..])).OfType<string>().Distinct(StringComparer.Ordinal).Count();
            steps.AddRange(Steps(AgentFeatures.Changes(qube, keys), keys, generations));
        }
        return steps;
    }

    private static IEnumerable<DeploymentStep> Steps(IEnumerable<AgentFeatureChange> changes, QubeAgentKeys keys, IDictionary<string, string> generations)
    {
        foreach (var change in changes)
        {
            generations[change.VMName] = keys.Generation ?? "none";
            if ((change.IsRemove ? DeploymentStep.RemoveFeature(change.VMName, change.Feature, change.Previous!)
                    : DeploymentStep.SetFeature(change.VMName, change.Feature, change.Value!, change.Previous)) is { } step)
                yield return step;
        }
    }

    /// <summary>
    /// Asks each qube's agent whether it applied its generation: halted qubes are Pending, the offline root Recorded; a running
    /// qube is read (one bounded qvm-run per poll) until its status names the generation, up to <paramref name="wait"/>.
    /// </summary>
    public static IReadOnlyList<AgentOutcome> Confirm(IQubesBackend backend, QubesInventory inventory, IReadOnlyDictionary<string, string> generations, TimeSpan wait)
    {
        var outcomes = new Dictionary<string, AgentOutcome>(StringComparer.Ordinal);
        var waiting = new List<string>();
        foreach (var (vm, gen) in generations.OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var qube = inventory.Find(vm);
            if (!backend.RunsInQubes) outcomes[vm] = new(vm, gen, AgentOutcomeKind.Recorded, null);
            else if (qube is null || qube.State != PowerState.Running) outcomes[vm] = new(vm, gen, AgentOutcomeKind.Pending, $"{vm} is not running: its agent applies generation {gen} when it starts.");
            else waiting.Add(vm);
        }
        var clock = Stopwatch.StartNew();
        var last = new Dictionary<string, string>(StringComparer.Ordinal);
        while (waiting.Count > 0)
        {
            foreach (var vm in waiting.ToList())
            {
                var gen = generations[vm];
                AgentStatusReading reading;
                try
                {
                    reading = AgentStatus.Read(backend, inventory.Get(vm));
                }
                catch (QubesFirewallException ex)
                {
                    last[vm] = ex.Message;
                    continue;
                }
                if (reading.Kind == AgentStatusReadingKind.NotRead)
                {
                    // -WhatIf: the read was shown, not made; asking again would only show it again
                    outcomes[vm] = new(vm, gen, AgentOutcomeKind.Unconfirmed, reading.Text + ".");
                    waiting.Remove(vm);
                    continue;
                }
                if (reading.Status is not { } status)
                {
                    last[vm] = reading.Text;
                    continue;
                }
                last[vm] = $"state={status.State} gen={status.Generation}: {status.Message}";
                if (status.Generation != gen) continue;
                if (status.State == "applied" && status.Applied == gen)
                {
                    outcomes[vm] = new(vm, gen, AgentOutcomeKind.Applied, null);
                    waiting.Remove(vm);
                }
                else if (status.IsFailure)
                {
                    outcomes[vm] = new(vm, gen, AgentOutcomeKind.Failed, $"the agent of {vm} reports {status.State}: {status.Message}");
                    waiting.Remove(vm);
                }
            }
            if (waiting.Count == 0 || clock.Elapsed >= wait) break;
            Thread.Sleep(250);
        }
        foreach (var vm in waiting)
            outcomes[vm] = new(vm, generations[vm], AgentOutcomeKind.Unconfirmed,
                $"no confirmation of generation {generations[vm]} from {vm} within {wait.TotalSeconds:0.#} s ({last.GetValueOrDefault(vm) ?? "no answer"}). Test-QubeFirewallAgent -VMName {vm}");
        return outcomes.Values.OrderBy(o => o.VMName, StringComparer.Ordinal).ToList();
    }

    /// <summary>The steps that put features back as they were before <paramref name="applied"/> (reverse order).</summary>
    public static List<DeploymentStep> Undo(IEnumerable<DeploymentStep> applied) =>
        applied.Where(s => s.Kind is DeploymentStepKind.SetFeature or DeploymentStepKind.RemoveFeature).Reverse().Select(s =>
            s.PreviousFeatureValue is null
                ? DeploymentStep.RemoveFeature(s.VMName, s.FeatureName!, s.FeatureValue ?? "")
                : DeploymentStep.SetFeature(s.VMName, s.FeatureName!, s.PreviousFeatureValue, s.Kind == DeploymentStepKind.RemoveFeature ? null : s.FeatureValue)).OfType<DeploymentStep>().ToList();
}
