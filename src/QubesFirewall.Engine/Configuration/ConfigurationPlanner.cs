using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Configuration;

/// <summary>A netvm change that takes a qube away from a Whonix gateway or a VPN qube: it needs its own confirmation.</summary>
public sealed record NetVmMove(string VMName, string From, string To, string Reason)
{
    public override string ToString() => $"{VMName}: {From} -> {To}";
}

/// <summary>
/// Invoke-QubeNetworkConfiguration's plan: one ordered list of steps that makes the system match the file for the
/// qubes it names, deployed and rolled back as one by <see cref="Rollout"/>. Order: forwards, links and bindings that go
/// (pruned, or crossing a qube whose netvm changes) first, then netvm changes (network qubes before their clients), the
/// ipv6 features, the rule lists, and last the forwards, links and bindings that come (new, changed, or re-laid
/// along a new netvm chain). Each part is planned by the planner the single cmdlets use, on the system as the earlier
/// parts leave it.
/// </summary>
public sealed record ConfigurationPlan : IDeploymentPlan
{
    public PlanOperation Operation => PlanOperation.Apply;

    public IReadOnlyList<DeploymentStep> Steps { get; init; } = [];

    public IReadOnlyList<Qube> NotRunning { get; init; } = [];

    public bool IsComplete { get; init; } = true;

    public string Purpose => "apply the network configuration";

    public string Target => "the network configuration";

    string IDeploymentPlan.Question => $"Apply the network configuration ({Steps.Count.ToString(CultureInfo.InvariantCulture)} changes)?";

    /// <summary>What the file changes, as Test-QubeNetworkConfiguration shows it (before the plan).</summary>
    public IReadOnlyList<ConfigurationDrift> Drift { get; init; } = [];

    public IReadOnlyList<string> Warnings { get; init; } = [];

    /// <summary>Qubes the plan takes off a Whonix gateway or a VPN qube (each asks for its own confirmation).</summary>
    public IReadOnlyList<NetVmMove> SensitiveMoves { get; init; } = [];

    public bool IsEmpty => Steps.Count == 0;

    /// <summary>The numbered steps for -WhatIf.</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        sb.Append("Apply the network configuration: ").Append(Steps.Count.ToString(CultureInfo.InvariantCulture)).Append(" change(s)");
        if (!IsComplete) sb.Append("; first start ").Append(string.Join(", ", NotRunning.Select(q => q.Name)));
        DeploymentStep.AppendList(sb, Steps);
        return sb.ToString();
    }
}

public static class ConfigurationPlanner
{
    /// <summary>
    /// Plans making <paramref name="system"/> match <paramref name="configuration"/>. With <paramref name="prune"/>, the
    /// forwards, links and bindings of the named qubes that the file does not list are removed; without it they stay.
    /// Refuses before planning anything: qubes the file names that do not exist, netvms that are not network qubes,
    /// netvm loops, and whatever the single planners refuse.
    /// </summary>
    public static ConfigurationPlan Plan(SystemReader system, NetworkConfiguration configuration, bool prune, DeploymentOptions options)
    {
        var inventory = system.Inventory;
        var missing = configuration.Qubes.Where(q => inventory.Find(q.Name) is null).Select(q => q.Name).ToList();
        if (missing.Count > 0)
            throw new QubesFirewallException(ErrorIds.QubeNotFound, FailureKind.ObjectNotFound,
                $"The file names qubes this system does not have: {string.Join(", ", missing)}. Create them, or take them out of the file; nothing was changed.", missing);
        foreach (var wanted in configuration.Qubes)
        {
            var qube = inventory.Get(wanted.Name);
            if (!ConfigurationExport.IsManaged(qube))
                throw QubesFirewallException.Invalid(ErrorIds.NotManaged, $"'{qube.Name}' is {qube.Class}: it has no Qubes networking to configure. Take it out of the file; nothing was changed.", qube.Name);
            if (wanted.NetVM is { Mode: NetVmMode.Qube, Name: { } target })
            {
                var netvm = inventory.Find(target) ?? throw new QubesFirewallException(ErrorIds.NetVmNotFound, FailureKind.ObjectNotFound,
                    $"The file gives '{qube.Name}' the netvm '{target}', which this system does not have. Nothing was changed.", target);
                if (!netvm.ProvidesNetwork)
                    throw QubesFirewallException.Invalid(ErrorIds.NotANetVm, $"The file gives '{qube.Name}' the netvm '{target}', which does not provide network (provides_network is off). Nothing was changed.", target);
            }
        }

        var sim = new SimulatedSystem(system);
        var diffs = configuration.Qubes.Select(w => QubeDiff.Compute(inventory, w, inventory.Get(w.Name), sim.ReadFirewall, options.Now)).ToList();
        var drift = diffs.SelectMany(d => d.Drift()).ToList();
        var steps = new List<DeploymentStep>();
        var warnings = new List<string>();
        var notRunning = new List<Qube>();

        void Take(IDeploymentPlan plan, IEnumerable<string> planWarnings)
        {
            warnings.AddRange(planWarnings);
            if (!plan.IsComplete) { notRunning.AddRange(plan.NotRunning); return; }
            sim.Apply(plan.Steps);
            steps.AddRange(plan.Steps);
        }
        void TakeSteps(IReadOnlyList<DeploymentStep> list)
        {
            sim.Apply(list);
            steps.AddRange(list);
        }

        // ---- what goes: pruned declarations, and forwards and links of qubes whose netvm changes (laid again below)
        var moving = diffs.Where(d => d.NetVmChanges).Select(d => d.Qube.Name).ToHashSet(StringComparer.Ordinal);
        var forwardsOut = new List<(string VM, string Feature)>();
        var forwardsIn = new List<PortForward>();
        var linksOut = new List<InterVmLink>();
        var linksIn = new List<InterVmLink>();
        var bindingsOut = new List<TcpBindingDeclaration>();
        var bindingsIn = new List<TcpBinding>();
        foreach (var d in diffs)
        {
            if (prune) forwardsOut.AddRange(d.ForwardsExtra.Select(x => (x.VMName, x.FeatureName)));
            if (prune) bindingsOut.AddRange(d.BindingsExtra);
            // copies (another qube's uuid) are removed like the qube's own: Disable and Remove never refuse them
            if (prune) linksOut.AddRange(d.LinksExtra.Select(x => x.Link ?? x.Declared).OfType<InterVmLink>());
            if (prune)
                foreach (var bad in d.LinksExtra.Where(x => x.Link is null && x.Declared is null))
                    warnings.Add($"{bad.From}: the feature {bad.FeatureName} is not a link this module can remove ({bad.Problem}); remove it with qvm-features --unset {bad.From} {bad.FeatureName}.");
            forwardsIn.AddRange(d.ForwardsToSet);
            linksIn.AddRange(d.LinksToAdd);
            bindingsIn.AddRange(d.BindingsToSet);
            if (!moving.Contains(d.Qube.Name)) continue;
            foreach (var f in PortForwardDeclaration.Read(d.Qube).Where(x => x.Forward is not null))
            {
                forwardsOut.Add((f.VMName, f.FeatureName));
                var kept = d.Wanted.Forwards is { } list ? list.FirstOrDefault(w => w.FeatureName == f.FeatureName) : f.Forward;
                if (kept is not null) forwardsIn.Add(kept);
            }
        }
        foreach (var link in InterVmLinkPlanner.DeclaredLinks(inventory).Where(l => moving.Contains(l.From) || moving.Contains(l.To)))
        {
            linksOut.Add(link);
            var owner = configuration.Find(link.From);
            var stillWanted = owner?.Links is { } list ? list.Any(l => l.FeatureName == link.FeatureName) : !(prune && owner is not null);
            if (stillWanted) linksIn.Add(link);
        }
        foreach (var m in moving.Where(m => inventory.Get(m).ProvidesNetwork && inventory.ClientsOf(m).Count > 0))
            warnings.Add($"'{m}' gets another netvm and serves qubes itself: port forwards through it are laid out again only for its own; check the others with Test-QubeFirewall afterwards.");

        foreach (var (vm, feature) in forwardsOut.Distinct())
        {
            PortForwardFeature.TryParseName(feature, out var protocol, out var port, lenient: true);
            var plan = PortForwardPlanner.PlanRemove(sim.Inventory, vm, protocol, port, options, sim.ReadFile);
            Take(plan, plan.Warnings);
        }
        foreach (var link in linksOut.DistinctBy(l => l.From + "\0" + l.FeatureName))
        {
            var plan = InterVmLinkPlanner.PlanDisable(sim.Inventory, [link], options, sim.ReadFile, sim.ReadFirewall);
            Take(plan, plan.Warnings);
        }
        foreach (var b in bindingsOut)
        {
            TcpBindingFeature.TryParseName(b.FeatureName, out var to, out var port, lenient: true);
            var plan = TcpBindingPlanner.PlanRemove(sim.Inventory, b.From, to, port, options, sim.ReadFile, sim.Dom0);
            Take(plan, plan.Warnings);
        }

        // ---- netvms, network qubes before the qubes behind them
        var moves = new List<NetVmMove>();
        var pending = diffs.Where(d => d.NetVmChanges).ToList();
        while (pending.Count > 0)
        {
            var ready = pending.Where(d => d.Wanted.NetVM!.Mode != NetVmMode.Qube || !pending.Any(p => p.Qube.Name == d.Wanted.NetVM.Name)).ToList();
            if (ready.Count == 0) ready = [pending[0]]; // a loop: refused just below
            foreach (var d in ready)
            {
                var before = ChainOf(sim.Inventory, d.Qube.Name);
                TakeSteps([NetVmStep(sim.Inventory.Get(d.Qube.Name), d.Wanted.NetVM!)]);
                var after = ChainOf(sim.Inventory, d.Qube.Name);
                if (after.Contains(d.Qube.Name))
                    throw QubesFirewallException.Invalid(ErrorIds.NetVmLoop,
                        $"The file makes '{d.Qube.Name}' its own upstream ({string.Join(" -> ", after.Prepend(d.Qube.Name))}). Nothing was changed.", d.Qube.Name);
                foreach (var gate in before.Where(g => !after.Contains(g)))
                    if (SensitiveReason(sim.Inventory, gate) is { } why)
                        moves.Add(new NetVmMove(d.Qube.Name, before.FirstOrDefault() ?? "(none)", after.FirstOrDefault() ?? "(none)",
                            $"'{d.Qube.Name}' leaves {why} '{gate}': its traffic will no longer go through {gate}."));
                pending.Remove(d);
            }
        }

        // ---- ipv6 features
        foreach (var d in diffs.Where(d => d.IPv6Changes))
        {
            var change = IPv6Planner.Plan(sim.Inventory, d.Qube.Name, d.Wanted.IPv6!.Value);
            warnings.AddRange(change.Warnings);
            if (change.Step() is { } step) TakeSteps([step]);
        }

        // ---- rule lists, on the system as it is by now (links removed, netvms and addresses changed)
        foreach (var wanted in configuration.Qubes.Where(w => w.Rules is not null))
        {
            var diff = QubeDiff.Compute(sim.Inventory, wanted, sim.Inventory.Get(wanted.Name), sim.ReadFirewall, options.Now);
            if (diff.RulesWanted is not { } rules) continue;
            TakeSteps([FirewallListStep(FirewallListEdit.Plan(sim.ReadFirewall(wanted.Name), wanted.Name, rules, options.Now))]);
        }

        // ---- what comes
        // the forwards that come as one change, as a pipeline of Add-QubePortForward: each qube's keys written once
        if (forwardsIn.DistinctBy(f => f.VMName + "\0" + f.FeatureName).ToList() is { Count: > 0 } adding)
        {
            var plan = PortForwardPlanner.PlanAdd(sim.Inventory, adding, options, sim.ReadFile, vm => sim.ReadFirewall(vm).Rules);
            Take(plan, plan.Warnings);
        }
        foreach (var link in linksIn.DistinctBy(l => l.From + "\0" + l.FeatureName))
        {
            var plan = InterVmLinkPlanner.PlanEnable(sim.Inventory, [link], options, sim.ReadFile, sim.ReadFirewall);
            Take(plan, plan.Warnings);
        }
        foreach (var b in bindingsIn)
        {
            var plan = TcpBindingPlanner.PlanAdd(sim.Inventory, b, options, sim.ReadFile, sim.Dom0);
            Take(plan, plan.Warnings);
        }

        // outermost first, so each qube started finds its netvm running
        var down = notRunning.DistinctBy(q => q.Name).OrderBy(q => sim.Inventory.UpstreamOf(q.Name).Count).ToList();
        return new ConfigurationPlan
        {
            Steps = down.Count > 0 ? [] : steps,
            NotRunning = down,
            IsComplete = down.Count == 0,
            Drift = drift,
            Warnings = warnings.Distinct().ToList(),
            SensitiveMoves = moves,
        };
    }

    /// <summary>Deploys the plan (offline: planned again under the root's lock first); the result says what happened, a failure was rolled back.</summary>
    public static (ConfigurationPlan Plan, DeploymentResult Result, QubesFirewallException? Failure) Apply(IQubesBackend backend, ConfigurationPlan plan,
        RolloutOptions? options = null, Func<ConfigurationPlan>? replan = null)
    {
        var (deployed, result) = Rollout.Deploy(backend, plan, options, replan);
        var failure = result.Failure(ErrorIds.NetworkConfigurationRolledBack, ErrorIds.NetworkConfigurationPartiallyApplied, "Applying the network configuration", "Invoke-QubeNetworkConfiguration with the previous file", removing: false, target: null);
        return (deployed, result, failure);
    }

    /// <summary>The netvms upstream of a qube, nearest first; a qube that comes back marks a loop.</summary>
    private static List<string> ChainOf(QubesInventory inventory, string name)
    {
        var chain = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var q = inventory.Find(name); q?.NetVM is { } next && seen.Add(next);)
        {
            chain.Add(next);
            if (next == name) break;
            q = inventory.Find(next);
        }
        return chain;
    }

    /// <summary>
    /// Why leaving this network qube matters: a Whonix gateway (<see cref="QubesFacts.IsWhonixGateway"/>), or a VPN qube — one
    /// that provides network and is marked as such: a <c>service.vpn-handler-*</c> feature turned on (the Qubes VPN
    /// recipes' service), or the tag <c>vpn</c>. Names are never guessed from.
    /// </summary>
    public static string? SensitiveReason(QubesInventory inventory, string qubeName)
    {
        if (inventory.Find(qubeName) is not { } q) return null;
        if (QubesFacts.IsWhonixGateway(inventory, q)) return "the Whonix gateway";
        if (IsVpnQube(q)) return "the VPN qube";
        return null;
    }

    public static bool IsVpnQube(Qube qube) =>
        qube.ProvidesNetwork && (qube.Tags.Contains("vpn", StringComparer.Ordinal) ||
            qube.Features.Any(f => f.Key.StartsWith("service.vpn-handler", StringComparison.Ordinal) && f.Value.Length > 0));

    private static DeploymentStep NetVmStep(Qube qube, NetVmSetting wanted)
    {
        string? previous = qube.Properties.TryGetValue("netvm", out var p) ? p : null;
        var now = NetVmSetting.Of(qube);
        var (value, command) = wanted.Mode switch
        {
            NetVmMode.Default => ((string?)null, $"qvm-prefs --default {qube.Name} netvm"),
            NetVmMode.None => ("", $"qvm-prefs {qube.Name} netvm ''"),
            _ => (wanted.Name, $"qvm-prefs {qube.Name} netvm {wanted.Name}"),
        };
        return DeploymentStep.SetProperty(qube.Name, "netvm", value, previous,
            $"{qube.Name}: set netvm to {wanted} (was {now}{(now.Mode == NetVmMode.Default && qube.NetVM is { } eff ? " = " + eff : "")}): {command}");
    }

    private static DeploymentStep FirewallListStep(FirewallChange change)
    {
        var removed = change.Edit.Removals.Count;
        var added = change.Edit.Insertions.Count;
        var detail = new StringBuilder();
        foreach (var r in change.Edit.Removals) detail.Append("- #").Append(r.Number.ToString(CultureInfo.InvariantCulture)).Append(' ').Append(r.Text).Append('\n');
        foreach (var i in change.Edit.Insertions) detail.Append("+ #").Append(i.Position!.Value.ToString(CultureInfo.InvariantCulture)).Append(' ').Append(i.Rule.Text).Append('\n');
        return new DeploymentStep
        {
            Kind = DeploymentStepKind.EditFirewall,
            VMName = change.VMName,
            Firewall = change,
            Description = $"{change.VMName}: set the Qubes firewall: remove {removed.ToString(CultureInfo.InvariantCulture)} rule(s), add {added.ToString(CultureInfo.InvariantCulture)} ({change.Preview.Rules.Count.ToString(CultureInfo.InvariantCulture)} rules after)",
            Detail = detail.ToString(),
        };
    }
}

/// <summary>The smallest edit that turns a rule list into another: the rules both share in order stay, the others go or come.</summary>
public static class FirewallListEdit
{
    public static FirewallChange Plan(FirewallDocument snapshot, string vmName, IReadOnlyList<FirewallRule> wanted, DateTimeOffset now)
    {
        foreach (var rule in wanted) rule.Validate();
        var visible = snapshot.VisibleAt(now);
        var a = visible.Select(r => r.Text).ToArray();
        var b = wanted.Select(r => r.Text).ToArray();
        // longest common subsequence of the texts
        var lcs = new int[a.Length + 1, b.Length + 1];
        for (var i = a.Length - 1; i >= 0; i--)
            for (var j = b.Length - 1; j >= 0; j--)
                lcs[i, j] = a[i] == b[j] ? lcs[i + 1, j + 1] + 1 : Math.Max(lcs[i + 1, j], lcs[i, j + 1]);
        var keepA = new bool[a.Length];
        var keepB = new bool[b.Length];
        for (int i = 0, j = 0; i < a.Length && j < b.Length;)
        {
            if (a[i] == b[j]) { keepA[i++] = true; keepB[j++] = true; }
            else if (lcs[i + 1, j] >= lcs[i, j + 1]) i++;
            else j++;
        }
        var removals = Enumerable.Range(0, a.Length).Where(i => !keepA[i]).Select(i => new RuleRemoval(i, a[i])).ToList();
        var insertions = Enumerable.Range(0, b.Length).Where(j => !keepB[j]).Select(j => new RuleInsertion(wanted[j], j)).ToList();
        var edit = new FirewallEdit(insertions, removals);
        var preview = edit.ApplyTo(visible);
        if (!preview.Rules.Select(r => r.Text).SequenceEqual(b, StringComparer.Ordinal))
            throw new InvalidOperationException("The rule list edit does not give the wanted list.");
        var steps = removals.Select(r => new FirewallChangeStep($"{vmName}: {r.Text}", $"Remove firewall rule number {r.Number}", null, r))
            .Concat(insertions.Select(i => new FirewallChangeStep($"{vmName}: {i.Rule.Text}", $"Add firewall rule as number {i.Position}", i, null)))
            .ToList();
        return new FirewallChange(vmName, snapshot, edit, preview, steps);
    }
}
