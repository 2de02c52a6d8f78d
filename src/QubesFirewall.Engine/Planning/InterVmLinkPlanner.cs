using QubesFirewall.Engine.Agent;
using System.Text;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Planning;

/// <summary>
/// The changes that enable or disable a set of links (one request: one or two protocols, several port specs,
/// maybe both directions). Enabling goes from the inside out: the declarations, the destinations' input
/// accepts, the network qube's forward accept, and last the sources' Qubes firewall (the part that lets the
/// traffic leave). Disabling goes the other way: the sources' firewall first, the declarations last. The steps
/// run through the one deployment <see cref="Rollout"/>, which puts everything back when a step fails.
/// </summary>
public sealed record InterVmLinkPlan : IDeploymentPlan
{
    /// <summary>Through the agent (the network qube and the destinations have it): feature calls and the sources' firewalls only, nothing written into a qube.</summary>
    public bool ViaAgent { get; init; }

    /// <summary>Via the agent: the generation each qube whose keys change must report.</summary>
    public IReadOnlyDictionary<string, string> AgentGenerations { get; init; } = new Dictionary<string, string>();

    /// <summary>Via the agent: how long to wait for the agents' confirmation (zero: not asked).</summary>
    public TimeSpan AgentWait { get; init; }

    /// <summary>Enable, Reapply (everything already declared) or Disable.</summary>
    public required PlanOperation Operation { get; init; }

    public required IReadOnlyList<InterVmLink> Links { get; init; }

    /// <summary>The shared network qube (several, comma-separated, for links of a pipeline behind different ones).</summary>
    public required string NetVM { get; init; }

    public IReadOnlyList<DeploymentStep> Steps { get; init; } = [];

    /// <summary>
    /// The qubes the change reaches that are not running, outermost first: the network qube and the qubes
    /// keeping the files (the destinations, a disposable's template). Live, their files are read inside them.
    /// </summary>
    public IReadOnlyList<Qube> NotRunning { get; init; } = [];

    /// <summary>False on the live backend while qubes of <see cref="NotRunning"/> are halted: there are no steps yet.</summary>
    public bool IsComplete { get; init; } = true;
    string IDeploymentPlan.Purpose => $"{Operation.ToString().ToLowerInvariant()} inter-qube link {Target}";

    public IReadOnlyList<string> Warnings { get; init; } = [];

    /// <summary>The ShouldProcess target: <c>work -> db tcp/5432 (through sys-firewall)</c>.</summary>
    public required string Target { get; init; }

    /// <summary>The whole plan for -WhatIf: one line per step, the nft commands indented under run steps.</summary>
    public string Describe()
    {
        var sb = new StringBuilder();
        sb.Append(Operation).Append(" inter-qube link ").Append(Target).Append(':');
        DeploymentStep.AppendList(sb, Steps);
        if (Steps.Count == 0) sb.Append(" nothing to change.");
        return sb.ToString();
    }

    /// <summary>Each qube's part in the plan, for the results: source, destination, network qube.</summary>
    public string RoleOf(string qube) =>
        string.Join(" and ", Links.SelectMany(l => new[] { (l.From, "source"), (l.To, "destination") }).Concat(NetVM.Split(", ").Select(n => (n, "network qube")))
            .Where(r => r.Item1 == qube).Select(r => r.Item2).Distinct());
}

/// <summary>One declared link as Get-QubeInterVmNetwork shows it, with its three parts and whether each is in place.</summary>
public sealed record QubeInterVmLink
{
    public required string From { get; init; }

    public required string To { get; init; }

    /// <summary>Tcp or Udp (never Any: a request for both protocols is two links).</summary>
    public InterVmProtocol Protocol { get; init; }

    /// <summary><c>5432</c>, <c>8000-8100</c> or <c>all</c>.</summary>
    public required string Port { get; init; }

    /// <summary>The shared network qube (null when the two qubes no longer share one).</summary>
    public string? NetVM { get; init; }

    /// <summary>The link also opens over IPv6 (both ends and the network qube have IPv6).</summary>
    public bool IPv6 { get; init; }

    /// <summary>The accept is in the network qube's managed block (its qubes-firewall-user-script); null when it could not be read.</summary>
    public bool? ForwardRulePresent { get; init; }

    /// <summary>The accept is in the destination's managed block (its rc.local); null when it could not be read.</summary>
    public bool? InputRulePresent { get; init; }

    /// <summary>The source's Qubes firewall has the accept for the destination, before its final catch-all; null when it could not be read.</summary>
    public bool? FirewallRulePresent { get; init; }

    /// <summary>When Enable declared it (the feature's value).</summary>
    public DateTimeOffset? Enabled { get; init; }

    public required string FeatureName { get; init; }

    /// <summary>Why the link cannot work as declared (not resolvable, invalid feature, copied from another qube), else null.</summary>
    public string? Problem { get; init; }

    /// <summary>Bound to its qube's uuid, Legacy (no uuid yet: adopt it with Enable-QubeInterVmNetwork), or Copied (never deployed).</summary>
    public DeclarationOwnership Ownership { get; init; }
    /// <summary>
    /// The parts (<c>Forward</c>, <c>Input</c>, <c>Firewall</c>) in place for IPv4 but not for IPv6: IPv6 was turned on
    /// along the link since it was made. Not broken: the link works over IPv4; Enable again (Set-QubeIPv6 does it with
    /// the change) adds the IPv6 half.
    /// </summary>
    public IReadOnlyList<string> IPv4OnlyParts { get; init; } = [];

    /// <summary>What changed since the link was made, when that explains parts missing (IPv6 turned on), else null.</summary>
    public string? Change { get; init; }

    /// <summary>All three parts are in place.</summary>
    public bool IsComplete => ForwardRulePresent == true && InputRulePresent == true && FirewallRulePresent == true && Problem is null;

    public override string ToString() => $"{From} -> {To} {Protocol.ToString().ToLowerInvariant()}/{Port}";
}

/// <summary>Which links concern each qube (as network qube, as destination), from a set of links; unresolvable ones are left out with a warning.</summary>
public sealed class LinkLayout
{
    private readonly Dictionary<string, List<ResolvedLink>> _netvm = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<ResolvedLink>> _destination = new(StringComparer.Ordinal);

    public static LinkLayout Build(QubesInventory inventory, IEnumerable<InterVmLink> links, ICollection<string>? warnings)
    {
        var layout = new LinkLayout();
        foreach (var link in links)
        {
            ResolvedLink r;
            try
            {
                r = InterVmLinkPlanner.Resolve(inventory, link, checks: false);
            }
            catch (QubesFirewallException ex)
            {
                warnings?.Add($"The link {link.Text} (feature {link.FeatureName} of {link.From}) is left out of the generated scripts: {ex.Message}");
                continue;
            }
            if (!layout._netvm.TryGetValue(r.NetVM.Name, out var n)) layout._netvm[r.NetVM.Name] = n = [];
            n.Add(r);
            if (!layout._destination.TryGetValue(r.To.Name, out var d)) layout._destination[r.To.Name] = d = [];
            d.Add(r);
        }
        return layout;
    }

    /// <summary>The qubes some link concerns (network qubes and destinations), in no particular order.</summary>
    public IEnumerable<string> Qubes => _netvm.Keys.Union(_destination.Keys, StringComparer.Ordinal);

    public QubeLinks For(Qube qube) => new(qube,
        _netvm.TryGetValue(qube.Name, out var n) ? n : [],
        _destination.TryGetValue(qube.Name, out var d) ? d : []);
}

/// <summary>
/// Plans inter-qube links from their declarations (features <c>qubesfirewall.link.*</c> of the source qube,
/// the only source of truth): the network qube's forward accept and the destination's input accept live in
/// the managed blocks (rebuilt from every declaration that concerns the qube), the source's Qubes firewall
/// gets an accept for the destination's address and ports before its catch-all.
/// </summary>
public static class InterVmLinkPlanner
{
    /// <summary>The comment of the firewall rules Enable adds (comments allow letters, digits, space and <c>:;,./-_[]</c>; qube names keep to those).</summary>
    public static string RuleComment(InterVmLink link) => "qubesfirewall link to " + link.To;

    // ------------------------------------------------------------------ resolve

    /// <summary>
    /// The qubes of a link. Refuses: unknown qubes, dom0 or remote qubes, a qube without network, two qubes
    /// with different network qubes (naming each one's), a Whonix gateway as network qube, an agent before R4.2,
    /// Power states are the planner's business (<see cref="InterVmLinkPlan.NotRunning"/>).
    /// </summary>
    public static ResolvedLink Resolve(QubesInventory inventory, InterVmLink link, bool checks = true)
    {
        var from = inventory.Get(link.From);
        var to = inventory.Get(link.To);
        foreach (var q in new[] { from, to })
        {
            if (q.Class is QubeClass.AdminVM or QubeClass.RemoteVM)
                throw new QubesFirewallException(ErrorIds.NoNetVM, FailureKind.InvalidOperation,
                    $"'{q.Name}' is {(q.Class == QubeClass.AdminVM ? "dom0, which has no network" : "a remote qube, with no local network")}: it cannot be part of an inter-qube link.", q.Name);
            if (q.NetVM is null || q.IP is null)
                throw new QubesFirewallException(ErrorIds.NoNetVM, FailureKind.InvalidOperation,
                    $"'{q.Name}' has no network qube (its netvm is none), so no traffic can reach or leave it. Set its netvm first (qvm-prefs {q.Name} netvm sys-firewall).", q.Name);
        }
        if (from.NetVM != to.NetVM)
            throw DifferentNetVm(inventory, link, from, to);
        var netvm = inventory.Find(from.NetVM!) ?? throw new QubesFirewallException(ErrorIds.NetVmNotFound, FailureKind.ObjectNotFound,
            $"'{from.Name}' uses '{from.NetVM}' as its network qube, but there is no qube of that name.", from.NetVM);
        if (checks)
        {
            if (QubesFacts.IsWhonixGateway(inventory, netvm))
                throw new QubesFirewallException(ErrorIds.WhonixInChain, FailureKind.InvalidOperation,
                    $"'{netvm.Name}', the network qube of '{from.Name}' and '{to.Name}', is a Whonix gateway: it sends its clients' traffic through Tor and does not run the qubes-firewall service. " +
                    $"A link between its clients would go around Tor. Nothing was changed. {ConnectTcpAdvice(link)}", netvm.Name);
            foreach (var q in new[] { netvm, from, to }) QubesRelease.EnsureSupported(inventory, q);
        }
        return new ResolvedLink(link, from, to, netvm);
    }

    /// <summary>
    /// Two qubes behind different network qubes. The advice never moves a qube off a Whonix gateway or a VPN-like
    /// network qube (<see cref="Enforcement.IsAnonymizingOrTunnel"/>): that would take it off Tor or the tunnel.
    /// It says why the link cannot be made, and what can: qubes.ConnectTCP, which needs no network between them.
    /// </summary>
    private static QubesFirewallException DifferentNetVm(QubesInventory inventory, InterVmLink link, Qube from, Qube to)
    {
        var why = $"'{from.Name}' uses the network qube '{from.NetVM}' and '{to.Name}' uses '{to.NetVM}': a link joins two qubes behind the same network qube, " +
                  "which passes the traffic between its own clients. Nothing was changed.";
        var kept = new[] { from, to }.Where(q => inventory.Find(q.NetVM!) is { } n && Enforcement.IsAnonymizingOrTunnel(inventory, n)).ToList();
        string advice;
        if (kept.Count > 0)
        {
            var names = string.Join(" and ", kept.Select(q => $"'{q.Name}' off '{q.NetVM}'"));
            var whonix = kept.Any(q => QubesFacts.IsWhonixGateway(inventory, inventory.Find(q.NetVM!)!));
            advice = $" Moving {names} is not the way: that would take it off {(whonix ? "Tor" : "its tunnel")}, and a link around it would bypass it. {ConnectTcpAdvice(link)}";
        }
        else
            advice = $" Give both the same netvm (qvm-prefs {to.Name} netvm {from.NetVM}), or publish the service with Add-QubePortForward -Type Internal. {ConnectTcpAdvice(link)}";
        return new QubesFirewallException(ErrorIds.DifferentNetVM, FailureKind.InvalidOperation, why + advice, link);
    }

    /// <summary>What works between any two qubes, whatever their network: qrexec's qubes.ConnectTCP (TCP only).</summary>
    private static string ConnectTcpAdvice(InterVmLink link) =>
        link.Protocol == ForwardProtocol.Tcp && link.Ports.IsSinglePort
            ? $"For TCP from '{link.From}' to '{link.To}' without any network between them, use qubes.ConnectTCP: Add-QubeTcpBinding -From {link.From} -To {link.To} -Port {link.Ports.First.ToString(System.Globalization.CultureInfo.InvariantCulture)}."
            : $"For TCP from '{link.From}' to '{link.To}' without any network between them, use qubes.ConnectTCP (Add-QubeTcpBinding -From {link.From} -To {link.To} -Port <port>, one port per binding).";

    /// <summary>The valid declarations of the inventory.</summary>
    public static IReadOnlyList<InterVmLink> DeclaredLinks(QubesInventory inventory) =>
        InterVmLinkDeclaration.ReadAll(inventory).Where(d => d.Link is not null).Select(d => d.Link!).ToList();

    /// <summary>The Qubes firewall rules a link needs in its source's list: IPv4, and IPv6 when the link has it.</summary>
    public static IReadOnlyList<FirewallRule> FirewallRules(ResolvedLink r)
    {
        var proto = r.Link.Protocol == ForwardProtocol.Tcp ? RuleProtocol.Tcp : RuleProtocol.Udp;
        var rules = new List<FirewallRule>
        {
            FirewallRule.Create(RuleAction.Accept, proto, r.To.IP, r.Link.Ports.DstPorts, comment: RuleComment(r.Link)),
        };
        if (r.HasIPv6) rules.Add(FirewallRule.Create(RuleAction.Accept, proto, r.To.IPv6, r.Link.Ports.DstPorts, comment: RuleComment(r.Link)));
        return rules;
    }

    // ------------------------------------------------------------------ enable / disable

    public static InterVmLinkPlan PlanEnable(IQubesBackend backend, IReadOnlyList<InterVmLink> links, DeploymentOptions options) =>
        PlanEnable(backend.GetInventory(), links, options, backend.ReadQubeFile, backend.GetFirewall);

    /// <summary>The pure planner: inventory, the links of one request, file reader (qube, path → content or null), rule-list reader.</summary>
    public static InterVmLinkPlan PlanEnable(QubesInventory inventory, IReadOnlyList<InterVmLink> links, DeploymentOptions options,
        Func<string, string, string?> readFile, Func<string, FirewallDocument> readFirewall)
    {
        var resolved = CheckEnable(inventory, links);
        return PlanEnableViaAgent(inventory, links, resolved, options, readFirewall, []);
    }

    /// <summary>
    /// What Enable checks of links before planning them (a pipeline checks each record's as it comes): each resolves (both
    /// qubes behind the same network qube, no Whonix gateway...), and the network qubes and destinations have the agent.
    /// </summary>
    public static List<ResolvedLink> CheckEnable(QubesInventory inventory, IReadOnlyList<InterVmLink> links)
    {
        if (links.Count == 0) throw QubesFirewallException.Invalid(ErrorIds.NoLink, "No link was given.");
        var resolved = links.Select(l => Resolve(inventory, l)).ToList();
        var agentQubes = resolved.Select(r => r.NetVM.Name).Concat(resolved.Select(r => r.To.Name)).ToList();
        // nothing is written into qubes per change: without the agent in the network qube and the destinations, refused
        AgentDelivery.RequireAgent(inventory, agentQubes, TargetText(links, NetVmsOf(resolved)));
        return resolved;
    }

    /// <summary>The network qubes of resolved links, comma-separated (one for the links of one command).</summary>
    private static string NetVmsOf(IEnumerable<ResolvedLink> resolved) => string.Join(", ", resolved.Select(r => r.NetVM.Name).Distinct(StringComparer.Ordinal));

    /// <summary>The declaration features Enable sets: none for a link in force and bound to its qube; a legacy (no uuid) or copied one is adopted.</summary>
    private static List<DeploymentStep> EnableDeclarationSteps(QubesInventory inventory, IReadOnlyList<InterVmLink> links, DeploymentOptions options, List<string> warnings)
    {
        var declarations = SourceDeclarations(inventory, links);
        // in force and bound to its qube: nothing to set; a legacy (no uuid) or copied one is adopted (written again with the uuid)
        var existing = new HashSet<string>(declarations.Where(d => d.Link is not null && (d.Ownership == DeclarationOwnership.Bound || inventory.Get(d.From).Uuid is null)).Select(d => d.From + "\0" + d.FeatureName), StringComparer.Ordinal);
        foreach (var d in declarations.Where(d => d.Link is null && !links.Any(l => l.From == d.From && l.FeatureName == d.FeatureName))) warnings.Add($"{d.Problem} The feature of {d.From} is ignored.");

        var steps = new List<DeploymentStep>();
        foreach (var link in links.Where(l => !existing.Contains(l.From + "\0" + l.FeatureName)))
        {
            var stored = declarations.FirstOrDefault(d => d.From == link.From && d.FeatureName == link.FeatureName);
            var value = DeclarationOwner.Bind(inventory.Get(link.From).Uuid, stored is { Link: not null } && InterVmLinkFeature.EnabledAt(stored.FeatureValue) is { } since
                ? InterVmLinkFeature.FormatValue(since) : InterVmLinkFeature.FormatValue(options.Now));
            steps.Add(new DeploymentStep
            {
                Kind = DeploymentStepKind.SetFeature,
                VMName = link.From,
                ForQube = link.From,
                FeatureName = link.FeatureName,
                FeatureValue = value,
                PreviousFeatureValue = stored?.FeatureValue,
                Description = $"{link.From}: {(stored is null ? "set" : "adopt")} feature {link.FeatureName} = '{value}'",
            });
        }
        return steps;
    }

    /// <summary>Enable through the agent: the declarations, the keys of the network qube and the destinations, then the sources' firewalls (dom0); nothing written into a qube.</summary>
    private static InterVmLinkPlan PlanEnableViaAgent(QubesInventory inventory, IReadOnlyList<InterVmLink> links, List<ResolvedLink> resolved, DeploymentOptions options,
        Func<string, FirewallDocument> readFirewall, List<string> warnings)
    {
        var steps = EnableDeclarationSteps(inventory, links, options, warnings);
        var after = inventory;
        foreach (var step in steps) after = AgentDelivery.WithFeature(after, step.VMName, step.FeatureName!, step.FeatureValue);
        var operation = steps.Count == 0 ? PlanOperation.Reapply : PlanOperation.Enable;
        var generations = new Dictionary<string, string>(StringComparer.Ordinal);
        // only the network qube and the destinations are touched: the parts other declarations gave them are kept from their keys
        var layout = LinkLayout.Build(after, links, warnings);
        var touched = resolved.Select(r => r.NetVM.Name).Concat(resolved.Select(r => r.To.Name)).ToHashSet(StringComparer.Ordinal);
        steps.AddRange(AgentDelivery.ScopedKeySteps(inventory, touched, f => links.Any(l => AgentFeatures.IsPartOfLink(f, l)),
            q => AgentFeatures.Parts(new QubeForwards(q, [], []), layout.For(q)), generations));
        steps.AddRange(FirewallSteps(resolved, readFirewall, options.Now, adding: true, keep: []));
        return new InterVmLinkPlan
        {
            Operation = operation,
            Links = links,
            NetVM = NetVmsOf(resolved),
            Steps = steps,
            Warnings = warnings.Distinct().ToList(),
            Target = TargetText(links, NetVmsOf(resolved)),
            ViaAgent = true,
            AgentGenerations = generations,
            AgentWait = options.AgentWait,
        };
    }

    public static InterVmLinkPlan PlanDisable(IQubesBackend backend, IReadOnlyList<InterVmLink> links, DeploymentOptions options) =>
        PlanDisable(backend.GetInventory(), links, options, backend.ReadQubeFile, backend.GetFirewall);

    /// <summary>
    /// Removes exactly the given links: their firewall rules (unless a link that stays needs the same rule),
    /// their parts in the agent keys of the network qube and the destination, then their features. Links that are not
    /// declared are refused (all of them) or, when some are, left out with a warning.
    /// </summary>
    public static InterVmLinkPlan PlanDisable(QubesInventory inventory, IReadOnlyList<InterVmLink> links, DeploymentOptions options,
        Func<string, string, string?> readFile, Func<string, FirewallDocument> readFirewall)
    {
        var warnings = new List<string>();
        var (declarations, removing, resolved, netvmName) = AdmitDisable(inventory, links, warnings);
        var agentQubes = resolved.Select(r => r.NetVM.Name).Concat(resolved.Select(r => r.To.Name)).ToList();
        // outside in: the sources' firewalls, the keys of the qubes the links joined, the declarations last
        var gone = new HashSet<string>(removing.Select(l => l.From + "\0" + l.FeatureName), StringComparer.Ordinal);
        // the links that stay, of the same sources (a rule they need in a source's list stays)
        var kept = declarations.Where(d => d.Link is not null).Select(d => d.Link!).Where(l => !gone.Contains(l.From + "\0" + l.FeatureName))
            .Select(l => { try { return Resolve(inventory, l, checks: false); } catch (QubesFirewallException) { return null; } })
            .Where(r => r is not null).Select(r => r!).ToList();
        var agentSteps = new List<DeploymentStep>(FirewallSteps(resolved, readFirewall, options.Now, adding: false, kept));
        var generations = new Dictionary<string, string>(StringComparer.Ordinal);
        // the network qube and destination of each link, and every qube that carries a part of one, found by the parts' names (a
        // netvm changed since may have left one on a former network qube: it would pass the traffic again, undeclared)
        bool Owned(string f) => removing.Any(l => AgentFeatures.IsPartOfLink(f, l));
        var touched = agentQubes.ToHashSet(StringComparer.Ordinal);
        touched.UnionWith(inventory.NamesWithFeature(Owned, skipAdminVm: true));
        agentSteps.AddRange(AgentDelivery.ScopedKeySteps(inventory, touched, Owned, _ => [], generations));
        foreach (var l in removing)
            agentSteps.Add(DeploymentStep.RemoveFeature(l.From, l.FeatureName, declarations.First(d => d.From == l.From && d.FeatureName == l.FeatureName).FeatureValue));
        return new InterVmLinkPlan
        {
            Operation = PlanOperation.Disable,
            Links = removing,
            NetVM = netvmName,
            Steps = agentSteps,
            Warnings = warnings.Distinct().ToList(),
            Target = TargetText(removing, netvmName),
            ViaAgent = true,
            AgentGenerations = generations,
            AgentWait = options.AgentWait,
        };
    }

    /// <summary>
    /// What Disable checks of links before planning them (a pipeline checks each record's as it comes): at least one is
    /// declared (<c>LinkNotFound</c>), and the qubes of those that resolve have the agent.
    /// </summary>
    public static void CheckDisable(QubesInventory inventory, IReadOnlyList<InterVmLink> links) => AdmitDisable(inventory, links, []);

    private static (List<InterVmLinkDeclaration> Declarations, List<InterVmLink> Removing, List<ResolvedLink> Resolved, string NetVM) AdmitDisable(
        QubesInventory inventory, IReadOnlyList<InterVmLink> links, List<string> warnings)
    {
        if (links.Count == 0) throw QubesFirewallException.Invalid(ErrorIds.NoLink, "No link was given.");
        var declarations = SourceDeclarations(inventory, links);
        bool IsDeclared(InterVmLink l) => declarations.Any(d => d.From == l.From && d.FeatureName == l.FeatureName);
        var missing = links.Where(l => !IsDeclared(l)).ToList();
        var removing = links.Where(IsDeclared).ToList();
        if (removing.Count == 0)
            throw new QubesFirewallException(ErrorIds.LinkNotFound, FailureKind.ObjectNotFound,
                $"There is no link {string.Join(", ", missing.Select(l => $"{l.Text} (feature {l.FeatureName} of {l.From})"))}. Get-QubeInterVmNetwork lists the declared ones.", links[0].FeatureName);
        foreach (var l in missing) warnings.Add($"There is no link {l.Text} (no feature {l.FeatureName} of {l.From}); nothing is done for it.");

        var resolved = new List<ResolvedLink>();
        foreach (var l in removing)
        {
            try
            {
                resolved.Add(Resolve(inventory, l, checks: false));
            }
            catch (QubesFirewallException ex)
            {
                warnings.Add($"The qubes of {l.Text} cannot be resolved now ({ex.Message}); only its declaration is removed. Check the scripts and firewall of the qubes it joined.");
            }
        }
        var netvmName = resolved.Count > 0 ? NetVmsOf(resolved) : inventory.Find(removing[0].From)?.NetVM ?? "";
        if (resolved.Count > 0)
            AgentDelivery.RequireAgent(inventory, resolved.Select(r => r.NetVM.Name).Concat(resolved.Select(r => r.To.Name)), TargetText(removing, netvmName));
        return (declarations, removing, resolved, netvmName);
    }

    /// <summary>The link declarations of the sources of <paramref name="links"/> (the only qubes a link's declaration can be on).</summary>
    private static List<InterVmLinkDeclaration> SourceDeclarations(QubesInventory inventory, IReadOnlyList<InterVmLink> links) =>
        links.Select(l => l.From).Distinct(StringComparer.Ordinal).Where(n => inventory.Find(n) is not null)
            .SelectMany(n => InterVmLinkDeclaration.Read(inventory.Get(n))).ToList();

    /// <summary>Deploys the plan; the first failing step stops it and everything already changed is put back. Reported per qube.</summary>
    public static HopResults Apply(IQubesBackend backend, InterVmLinkPlan plan, RolloutOptions? options = null)
    {
        (plan, var run) = Rollout.Deploy(backend, plan, options, replan: null);
        var what = $"{plan.Operation} inter-qube link {plan.Target}";
        var stopped = run.Failure(ErrorIds.InterVmLinkRolledBack, ErrorIds.InterVmLinkPartiallyApplied, what, "Disable-QubeInterVmNetwork", plan.Operation == PlanOperation.Disable, null);
        if (stopped is not null) return new HopResults([], stopped) { Rollout = run };
        var p = plan;
        var (hops, error) = PortForwardPlanner.ConfirmAgents(backend, run, plan.AgentGenerations, plan.AgentWait, q => p.RoleOf(q), plan.Target, plan.Operation, _ => 0, ErrorIds.InterVmLinkAgentFailed, ErrorIds.InterVmLinkAgentUnconfirmed, what);
        return new HopResults(hops, error) { Rollout = run };
    }

    private static string TargetText(IReadOnlyList<InterVmLink> links, string netvm)
    {
        var text = links.Count <= 3 ? string.Join(", ", links.Select(l => l.Text)) : $"{string.Join(", ", links.Take(3).Select(l => l.Text))} and {links.Count - 3} more";
        return netvm.Length == 0 ? text : $"{text} (through {netvm})";
    }

    // ------------------------------------------------------------------ steps

    /// <summary>Per source qube: the accept rules to add (before the catch-all) or to remove (those no remaining link needs).</summary>
    private static IEnumerable<DeploymentStep> FirewallSteps(IReadOnlyList<ResolvedLink> links, Func<string, FirewallDocument> readFirewall,
        DateTimeOffset now, bool adding, IReadOnlyList<ResolvedLink> keep)
    {
        foreach (var group in links.GroupBy(l => l.From.Name, StringComparer.Ordinal))
        {
            var vm = group.Key;
            var snapshot = readFirewall(vm);
            var visible = snapshot.VisibleAt(now);
            var texts = visible.Select(r => r.Text).ToList();
            var wanted = group.SelectMany(FirewallRules).DistinctBy(r => r.Text).ToList();
            FirewallChange change;
            if (adding)
            {
                // A link's IPv6 half left over from when IPv6 was on along it (Set-QubeIPv6 plans links again when it
                // turns off): the link's own comment, protocol and ports, an IPv6 host, and the link has no IPv6 now.
                var stale = visible.Select((r, i) => (r, i))
                    .Where(x => group.Any(l => !l.HasIPv6 && x.r.Comment == RuleComment(l.Link) && x.r.DstHost?.Kind == HostKind.IPv6
                                              && FirewallRules(l).Any(w => w.Protocol == x.r.Protocol && w.DstPorts == x.r.DstPorts)))
                    .Select(x => (x.i, (string?)x.r.Text)).ToList();
                if (stale.Count > 0)
                {
                    var removal = FirewallPlanner.PlanRemove(snapshot, vm, stale, now);
                    yield return FirewallStep(vm, removal, "remove from");
                    snapshot = snapshot with { Rules = removal.Preview.Rules };
                    texts = snapshot.VisibleAt(now).Select(r => r.Text).ToList();
                }
                var missing = wanted.Where(r => !texts.Contains(r.Text)).ToList();
                if (missing.Count == 0) continue;
                change = FirewallPlanner.PlanInsert(snapshot, vm, missing.Select(r => new RuleInsertion(r)).ToList(), now);
            }
            else
            {
                var needed = new HashSet<string>(keep.Where(k => k.From.Name == vm).SelectMany(FirewallRules).Select(r => r.Text), StringComparer.Ordinal);
                var targets = wanted.Where(r => !needed.Contains(r.Text)).Select(r => texts.IndexOf(r.Text)).Where(i => i >= 0)
                    .Select(i => (i, (string?)texts[i])).ToList();
                if (targets.Count == 0) continue;
                change = FirewallPlanner.PlanRemove(snapshot, vm, targets, now);
            }
            yield return FirewallStep(vm, change, adding ? "add to" : "remove from");
        }
    }

    private static DeploymentStep FirewallStep(string vm, FirewallChange change, string verb)
    {
        var lines = change.Steps.Where(s => !s.Action.StartsWith("Keep", StringComparison.Ordinal)).ToList();
        return new DeploymentStep
        {
            Kind = DeploymentStepKind.EditFirewall,
            VMName = vm,
            ForQube = vm,
            Firewall = change,
            Description = $"{vm}: {verb} its Qubes firewall: {string.Join("; ", lines.Select(s => s.Target[(vm.Length + 2)..] + " (" + s.Action.ToLowerInvariant() + ")"))}",
        };
    }

    // ------------------------------------------------------------------ list

    /// <summary>
    /// The declared links with their parts: the network qube's and the destination's from their agent keys (dom0 facts: the
    /// features each carries against what the declarations derive), the source's from its rule list (a reader that fails gives
    /// null for that part).
    /// </summary>
    public static IReadOnlyList<QubeInterVmLink> List(QubesInventory inventory, Func<string, FirewallDocument>? readFirewall,
        DateTimeOffset now, Func<string, bool>? fromFilter = null)
    {
        var result = new List<QubeInterVmLink>();
        var firewalls = new Dictionary<string, IReadOnlyList<FirewallRule>?>(StringComparer.Ordinal);
        IReadOnlyDictionary<string, Agent.QubeAgentKeys>? derived = null;
        IReadOnlyList<FirewallRule>? Rules(string vm)
        {
            if (!firewalls.TryGetValue(vm, out var rules))
            {
                try { rules = readFirewall is null ? null : readFirewall(vm).VisibleAt(now); }
                catch (QubesFirewallException) { rules = null; }
                firewalls[vm] = rules;
            }
            return rules;
        }

        foreach (var d in InterVmLinkDeclaration.ReadAll(inventory))
        {
            if (fromFilter is not null && !fromFilter(d.From)) continue;
            InterVmLinkFeature.TryParseName(d.FeatureName, out var to, out var protocol, out var ports);
            var item = new QubeInterVmLink
            {
                From = d.From,
                To = to.Length > 0 ? to : "?",
                Protocol = protocol == ForwardProtocol.Udp ? InterVmProtocol.Udp : InterVmProtocol.Tcp,
                Port = to.Length > 0 ? ports.ToString() : "?",
                FeatureName = d.FeatureName,
                Enabled = InterVmLinkFeature.EnabledAt(d.FeatureValue),
                Problem = d.Problem,
                Ownership = d.Ownership,
            };
            if (d.Link is null) { result.Add(item); continue; }
            ResolvedLink r;
            try
            {
                r = Resolve(inventory, d.Link, checks: false);
            }
            catch (QubesFirewallException ex)
            {
                result.Add(item with { Problem = ex.Message });
                continue;
            }
            var families = new List<NftFamily> { NftFamily.Ip };
            if (r.HasIPv6) families.Add(NftFamily.Ip6);
            derived ??= AgentFeatures.DeriveAll(inventory);
            var keys = derived;
            bool Has(Qube qube, string kind, IEnumerable<NftFamily> of) => of.All(f => AgentFeatures.Carries(qube, keys, AgentFeatures.LinkKeyName(kind, f, d.Link)));
            var forward = Has(r.NetVM, "lnet", families);
            var input = Has(r.To, "ldst", families);
            var rules = Rules(r.From.Name);
            var firewall = rules is null ? (bool?)null : FirewallRules(r).All(rule => IsEffective(rules, rule));
            // With IPv6 on along the link, a part that holds its IPv4 half only was made before IPv6 was turned on.
            var ipv4Only = new List<string>();
            if (r.HasIPv6)
            {
                if (!forward && Has(r.NetVM, "lnet", [NftFamily.Ip])) ipv4Only.Add("Forward");
                if (!input && Has(r.To, "ldst", [NftFamily.Ip])) ipv4Only.Add("Input");
                if (firewall == false && IsEffective(rules!, FirewallRules(r)[0])) ipv4Only.Add("Firewall");
            }
            result.Add(item with
            {
                NetVM = r.NetVM.Name,
                IPv6 = r.HasIPv6,
                ForwardRulePresent = forward,
                InputRulePresent = input,
                FirewallRulePresent = firewall,
                IPv4OnlyParts = ipv4Only,
                Change = ipv4Only.Count == 0 ? null
                    : $"IPv6 was turned on along the link since it was made: its {string.Join(", ", ipv4Only.Select(p => p.ToLowerInvariant()))} part{(ipv4Only.Count == 1 ? " is" : "s are")} in place for IPv4 only. " +
                      $"It works over IPv4; Enable-QubeInterVmNetwork -From {d.Link.From} -To {d.Link.To} again (Set-QubeIPv6 does it with the change) adds the IPv6 half.",
            });
        }
        return result;
    }

    /// <summary>The rule is in the list and comes before the final catch-all (a rule after it never matches).</summary>
    private static bool IsEffective(IReadOnlyList<FirewallRule> rules, FirewallRule rule)
    {
        var index = rules.Select(r => r.Text).ToList().IndexOf(rule.Text);
        if (index < 0) return false;
        for (var i = 0; i < index; i++) if (rules[i].IsCatchAll) return false;
        return true;
    }
}
