using System.Globalization;
using QubesFirewall.Engine.Agent;
using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Planning;

/// <summary>
/// Plans port forwards from the declarations in qube features (the only source of truth): resolves
/// the chain, checks conflicts and hazards, and lays out the feature calls of the qubes on the way: each
/// one's agent keys are the parts other declarations gave it (read from its own keys) and the change's,
/// sealed again. A change reads only the qubes it touches; Test-/Sync-QubeFirewall see and repair the rest.
/// </summary>
public static class PortForwardPlanner
{
    // ------------------------------------------------------------------ add

    /// <summary>Plans adding (or updating) a forward; reads the inventory and the hook files of the qubes on the way.</summary>
    public static PortForwardPlan PlanAdd(IQubesBackend backend, PortForward forward, DeploymentOptions options) => PlanAdd(backend, [forward], options);

    /// <summary>Plans adding (or updating) several forwards as one change (a pipeline of Add-QubePortForward): <see cref="PlanAdd(QubesInventory, IReadOnlyList{PortForward}, DeploymentOptions, Func{string, string, string?}, Func{string, IReadOnlyList{FirewallRule}}?)"/>.</summary>
    public static PortForwardPlan PlanAdd(IQubesBackend backend, IReadOnlyList<PortForward> forwards, DeploymentOptions options)
    {
        var inventory = backend.GetInventory();
        return PlanAdd(inventory, forwards, options, backend.ReadQubeFile, vm => backend.GetFirewall(vm).Rules);
    }

    /// <summary>The pure planner: inventory, request, file reader (qube, path -> content or null), firewall reader (for internal forwards' sources; may be null).</summary>
    public static PortForwardPlan PlanAdd(QubesInventory inventory, PortForward forward, DeploymentOptions options,
        Func<string, string, string?> readFile, Func<string, IReadOnlyList<FirewallRule>>? readFirewall = null) =>
        PlanAdd(inventory, [forward], options, readFile, readFirewall);

    /// <summary>
    /// Plans adding (or updating) forwards as one change: each is checked as a single Add checks it (<see cref="Check"/>, against
    /// the system and the forwards before it), its declaration set, and the keys of every qube they touch written once, with one
    /// new generation per qube (each data key carries its qube's generation, so a change per forward would write every key of
    /// a hop again per forward). A forward given again (same qube, protocol and port) replaces the earlier one, as an Add of a
    /// declared forward updates it. One forward gives the plan of that forward.
    /// </summary>
    public static PortForwardPlan PlanAdd(QubesInventory inventory, IReadOnlyList<PortForward> forwards, DeploymentOptions options,
        Func<string, string, string?> readFile, Func<string, IReadOnlyList<FirewallRule>>? readFirewall = null)
    {
        if (forwards.Count == 0) throw new ArgumentException("No port forward was given.", nameof(forwards));
        var admitted = new List<AdmittedForward>();
        foreach (var forward in forwards)
        {
            admitted.RemoveAll(a => a.Plan.VMName == forward.VMName && a.Plan.FeatureName == forward.FeatureName);
            admitted.Add(Admit(inventory, forward, options, readFirewall, admitted.Select(a => a.Plan).ToList()));
        }
        var warnings = admitted.SelectMany(a => a.Plan.Warnings).ToList();
        // the declarations first, then the keys of the qubes they touch: a failure half way takes the declarations back too
        var agentSteps = admitted.Select(a => a.Declaration).OfType<DeploymentStep>().ToList();
        var touched = admitted.SelectMany(a => a.Touched).ToHashSet(StringComparer.Ordinal);
        var strays = admitted.SelectMany(a => a.Strays).ToHashSet(StringComparer.Ordinal);
        var ids = admitted.Select(a => AgentFeatures.ForwardId(a.Plan.VMName, a.Plan.Forward!.Protocol, a.Plan.Forward.Port)).ToHashSet(StringComparer.Ordinal);
        var chains = admitted.Select(a => a.Chain).ToList();
        var generations = new Dictionary<string, string>(StringComparer.Ordinal);
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        agentSteps.AddRange(AgentDelivery.ScopedKeySteps(inventory, touched, f => strays.Contains(f) || AgentFeatures.IsPartOfForwards(f, ids),
            q => AgentFeatures.Parts(ForwardsOf(q, chains), new QubeLinks(q, [], [])), generations, counts));
        var basePlan = admitted.Count == 1 ? admitted[0].Plan : new PortForwardPlan
        {
            Operation = admitted.All(a => a.Plan.Operation == PlanOperation.Reapply) ? PlanOperation.Reapply : PlanOperation.Add,
            VMName = admitted[0].Plan.VMName,
            FeatureName = admitted[0].Plan.FeatureName,
            Hops = admitted.SelectMany(a => a.Plan.Hops).Distinct(StringComparer.Ordinal).ToList(),
            Target = PortForwardPlan.Several(admitted.Select(a => a.Plan).ToList()),
            Members = admitted.Select(a => a.Plan).ToList(),
        };
        return WithAgentSteps(basePlan, agentSteps, generations, options, warnings, counts);
    }

    /// <summary>
    /// The checks a forward of an Add passes, against the system and <paramref name="earlier"/> (the forwards before it in the
    /// same change, as <see cref="Check"/> gave them): the plan of that forward alone, without steps (its operation, chain and
    /// warnings). Throws what a single Add refuses, and <c>PortAlreadyForwarded</c> when an earlier forward of the change takes
    /// its port through one of its network qubes.
    /// </summary>
    public static PortForwardPlan Check(QubesInventory inventory, PortForward forward, DeploymentOptions options, IReadOnlyList<PortForwardPlan> earlier,
        Func<string, IReadOnlyList<FirewallRule>>? readFirewall = null) =>
        Admit(inventory, forward, options, readFirewall, earlier).Plan;

    /// <summary>One forward of an Add, checked: its plan without steps, its chain, the qubes whose keys it rewrites, the stray keys it removes, its declaration step.</summary>
    private sealed record AdmittedForward(PortForwardPlan Plan, NetworkChain Chain, IReadOnlySet<string> Touched, IReadOnlySet<string> Strays, DeploymentStep? Declaration);

    private static AdmittedForward Admit(QubesInventory inventory, PortForward forward, DeploymentOptions options,
        Func<string, IReadOnlyList<FirewallRule>>? readFirewall, IReadOnlyList<PortForwardPlan> earlier)
    {
        var warnings = new List<string>();
        if (forward.Expire is { } expire && expire <= options.Now.ToUnixTimeSeconds())
            throw QubesFirewallException.Invalid(ErrorIds.ExpireInPast, $"{forward.Text}: the expiry time is not in the future, the forward would never match.", forward);

        // Power states are checked below, for every qube the change reaches, not only the hops.
        var chain = NetworkChain.Resolve(inventory, forward);
        CheckAddressFamilies(inventory, chain, warnings);
        // Only the qubes the change touches are read (the target and each hop; no other qube's features): the target's own
        // declarations, and on each hop the parts other declarations gave it, from its own keys (each names its declaring qube).
        var own = PortForwardDeclaration.Read(chain.Target).ToList();
        var existing = own.FirstOrDefault(d => d.FeatureName == forward.FeatureName);
        foreach (var d in own)
            if (!ReferenceEquals(d, existing) && d.Forward is null) warnings.Add(IgnoredWarning(d));

        // one port per protocol per hop: two forwards of tcp/443 through sys-net cannot both get it (read from the hops' key names;
        // a value only where a name matches, to see whose it is)
        var strays = new HashSet<string>(StringComparer.Ordinal);
        var taken = new List<(string Hop, string Key, AgentPart Part)>();
        foreach (var hop in chain.Hops)
        {
            foreach (var key in AgentFeatures.PartsOfPort(hop.Qube, forward.Protocol, forward.Port).Where(k => !AgentFeatures.IsPartOfForward(k, forward.VMName, forward.Protocol, forward.Port)))
            {
                // a part whose declaration is gone (or no longer crosses this hop), or a copy naming another qube, is a stray of this hop: removed with this change
                if (AgentFeatures.ReadPart(hop.Name, key, hop.Qube.Features[key]) is { } part && DeclaredThrough(inventory, part.Field("vm")!, forward.Protocol, forward.Port, hop.Name))
                    taken.Add((hop.Name, key, part));
                else strays.Add(key);
            }
        }
        if (taken.Count > 0)
        {
            var owner = taken[0].Part.Field("vm")!;
            var through = taken.Where(t => t.Part.Field("vm") == owner).Select(t => t.Hop).Distinct(StringComparer.Ordinal).ToList();
            var expired = taken[0].Part.Field("exp") is { } exp && long.Parse(exp, CultureInfo.InvariantCulture) <= options.Now.ToUnixTimeSeconds();
            throw new QubesFirewallException(ErrorIds.PortAlreadyForwarded, FailureKind.ResourceExists,
                $"{forward.ProtocolText}/{forward.Port.ToString(CultureInfo.InvariantCulture)} is already forwarded to '{owner}' through {string.Join(", ", through)}, so {forward.Text} cannot be declared " +
                $"({taken[0].Hop} carries it in {taken[0].Key}{(expired ? ", expired" : "")}; feature {PortForwardFeature.NameFor(forward.Protocol, forward.Port)} of {owner}). A network qube can pass one port to one qube only. " +
                $"Remove that forward first (Remove-QubePortForward -VMName {owner} -Port {forward.Port.ToString(CultureInfo.InvariantCulture)} -Protocol {forward.Protocol}), " +
                "or open another port and translate it with -TargetPort. Nothing was changed.", forward);
        }
        // the same within one change: an earlier forward of it that takes this port through one of this one's network qubes
        foreach (var other in earlier)
        {
            if (other.Forward is not { } f || f.Protocol != forward.Protocol || f.Port != forward.Port || other.VMName == forward.VMName) continue;
            var shared = other.Hops.Intersect(chain.HopNames, StringComparer.Ordinal).ToList();
            if (shared.Count == 0) continue;
            throw new QubesFirewallException(ErrorIds.PortAlreadyForwarded, FailureKind.ResourceExists,
                $"{forward.ProtocolText}/{forward.Port.ToString(CultureInfo.InvariantCulture)} is forwarded to '{f.VMName}' through {string.Join(", ", shared)} by {f.Text}, given earlier in the same change, " +
                $"so {forward.Text} cannot be declared with it. A network qube can pass one port to one qube only: give one of them, or open another port and translate it with -TargetPort.", forward);
        }

        var reach = chain.HopNames.Append(chain.Target.Name).ToList();
        if (existing?.Forward is { } replaced && TryResolve(inventory, replaced, out var replacedChain, out _))
            reach.AddRange(replacedChain!.HopNames.Append(replacedChain.Target.Name));
        // the qubes whose keys the change rewrites: the chain and, when it replaces a declaration, every qube that carries a part of
        // it, found by the parts' names on every qube (a qvm-prefs change since may have moved its way: a part left on a former hop
        // with the old sources would forward them again, undeclared, once the target is back behind it)
        var touched = reach.ToHashSet(StringComparer.Ordinal);
        if (existing is not null) touched.UnionWith(inventory.NamesWithFeature(f => AgentFeatures.IsPartOfForward(f, forward.VMName, forward.Protocol, forward.Port), skipAdminVm: true));
        // nothing is written into qubes per change: without the agent in every qube it reaches, the change is refused
        AgentDelivery.RequireAgent(inventory, reach, forward.Text);
        if (forward.Type == ForwardType.External && chain.Hops.Count > 2)
            warnings.Add($"{forward.Text} crosses {chain.Hops.Count} network qubes ({chain.Path}). Replies leave each of them by its own routing table: " +
                $"if one of {string.Join(", ", chain.Hops.Skip(1).Take(chain.Hops.Count - 2).Select(h => h.Name))} sends its traffic into a VPN tunnel, the replies go there too and the connection fails. " +
                "To publish a port through a VPN, forward it from the VPN's own interface with -Type Internal -Interface <tunnel> instead.");
        if (forward.Type == ForwardType.Internal && forward.Interface is null && readFirewall is not null)
            CheckSourceFirewalls(inventory, chain, readFirewall, options.Now, warnings);

        // the declaration carries the target's uuid, so a copy (qvm-clone, restore) is recognised and never deployed
        var value = DeclarationOwner.Bind(chain.Target.Uuid, forward.FeatureValue);
        var operation = existing is null ? PlanOperation.Add : existing.FeatureValue == value ? PlanOperation.Reapply : PlanOperation.Update;
        var plan = new PortForwardPlan
        {
            Operation = operation,
            Forward = forward,
            Previous = existing?.Forward,
            VMName = forward.VMName,
            FeatureName = forward.FeatureName,
            Hops = chain.HopNames.ToList(),
            Target = $"{forward.Text} ({chain.Path})",
            AddressFamilies = NftForwardScript.FamilyText(NftForwardScript.Families(chain)),
            Warnings = warnings,
        };
        return new AdmittedForward(plan, chain, touched, strays, DeploymentStep.SetFeature(forward.VMName, forward.FeatureName, value, existing?.FeatureValue));
    }

    /// <summary>Whether <paramref name="owner"/> declares a forward of <paramref name="protocol"/>/<paramref name="port"/> whose chain crosses <paramref name="hop"/> (read only when a hop's key names it).</summary>
    private static bool DeclaredThrough(QubesInventory inventory, string owner, ForwardProtocol protocol, int port, string hop) =>
        inventory.Find(owner) is { } other && PortForwardDeclaration.Read(other).Any(d => d.Forward is { } f && f.Protocol == protocol && f.Port == port
            && TryResolve(inventory, f, out var c, out _, structuralOnly: true) && c!.HopNames.Contains(hop, StringComparer.Ordinal));

    /// <summary>The plan with its feature steps, the generation each changed qube's agent must report, and how many forwards each carries after.</summary>
    private static PortForwardPlan WithAgentSteps(PortForwardPlan plan, List<DeploymentStep> steps, Dictionary<string, string> generations,
        DeploymentOptions options, List<string> warnings, IReadOnlyDictionary<string, int> forwardCounts) => plan with
    {
        Steps = steps,
        ViaAgent = true,
        AgentGenerations = generations,
        AgentWait = options.AgentWait,
        Warnings = warnings.Distinct().ToList(),
        ForwardCounts = generations.Keys.ToDictionary(q => q, q => forwardCounts.GetValueOrDefault(q), StringComparer.Ordinal),
    };

    /// <summary>What the forwards of a change give a qube of their chains: the hop it is there, or their target.</summary>
    private static QubeForwards ForwardsOf(Qube qube, IReadOnlyList<NetworkChain> chains) =>
        new(qube, chains.SelectMany(c => c.Hops.Where(h => h.Name == qube.Name).Select(h => (c, h))).ToList(), chains.Where(c => c.Target.Name == qube.Name).ToList());

    // ------------------------------------------------------------------ remove

    public static PortForwardPlan PlanRemove(IQubesBackend backend, string vmName, ForwardProtocol protocol, int port, DeploymentOptions options) =>
        PlanRemove(backend, [(vmName, protocol, port)], options);

    /// <summary>Plans removing several forwards as one change (a pipeline of Remove-QubePortForward).</summary>
    public static PortForwardPlan PlanRemove(IQubesBackend backend, IReadOnlyList<(string VMName, ForwardProtocol Protocol, int Port)> forwards, DeploymentOptions options) =>
        PlanRemove(backend.GetInventory(), forwards, options, backend.ReadQubeFile);

    /// <summary>
    /// Plans removing the forward of <paramref name="protocol"/>/<paramref name="port"/> declared on
    /// <paramref name="vmName"/> (also a hand-written feature with a non-canonical name or an unreadable value).
    /// The qubes on its way lose its parts (the parts other declarations gave them are kept and sealed again; a qube left with
    /// nothing loses its keys and its agent its chains), then the declaration is removed. Refused when a qube on its way lacks the agent.
    /// </summary>
    public static PortForwardPlan PlanRemove(QubesInventory inventory, string vmName, ForwardProtocol protocol, int port, DeploymentOptions options,
        Func<string, string, string?> readFile) =>
        PlanRemove(inventory, [(vmName, protocol, port)], options, readFile);

    /// <summary>
    /// Plans removing forwards as one change: each is checked as a single Remove checks it (<see cref="CheckRemove"/>), the keys
    /// of every qube they cross written once, with one new generation (or removed), then the declarations removed. A forward
    /// named twice is removed once. One forward gives the plan of that forward.
    /// </summary>
    public static PortForwardPlan PlanRemove(QubesInventory inventory, IReadOnlyList<(string VMName, ForwardProtocol Protocol, int Port)> forwards, DeploymentOptions options,
        Func<string, string, string?> readFile)
    {
        if (forwards.Count == 0) throw new ArgumentException("No port forward was given.", nameof(forwards));
        var removals = forwards.Distinct().Select(f => AdmitRemoval(inventory, f.VMName, f.Protocol, f.Port)).DistinctBy(r => r.Id).ToList();
        // the keys first (the rules go), the declarations last: on the qubes they cross and every qube that carries a part of one
        var touched = removals.SelectMany(r => r.Touched).ToHashSet(StringComparer.Ordinal);
        var ids = removals.Select(r => r.Id).ToHashSet(StringComparer.Ordinal);
        var generations = new Dictionary<string, string>(StringComparer.Ordinal);
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        var steps = AgentDelivery.ScopedKeySteps(inventory, touched, f => AgentFeatures.IsPartOfForwards(f, ids), _ => [], generations, counts);
        steps.AddRange(removals.SelectMany(r => r.Declarations));
        var basePlan = removals.Count == 1 ? removals[0].Plan : new PortForwardPlan
        {
            Operation = PlanOperation.Remove,
            VMName = removals[0].Plan.VMName,
            FeatureName = removals[0].Plan.FeatureName,
            Hops = removals.SelectMany(r => r.Plan.Hops).Distinct(StringComparer.Ordinal).ToList(),
            Target = PortForwardPlan.Several(removals.Select(r => r.Plan).ToList()),
            Members = removals.Select(r => r.Plan).ToList(),
        };
        return WithAgentSteps(basePlan, steps, generations, options, removals.SelectMany(r => r.Plan.Warnings).ToList(), counts);
    }

    /// <summary>The checks a forward of a Remove passes (it is declared; the agent in the qubes on its way): the plan of that forward alone, without steps.</summary>
    public static PortForwardPlan CheckRemove(QubesInventory inventory, string vmName, ForwardProtocol protocol, int port) =>
        AdmitRemoval(inventory, vmName, protocol, port).Plan;

    /// <summary>One forward of a Remove, checked: its plan without steps, the id its keys carry, the qubes whose keys lose its parts, the declarations removed.</summary>
    private sealed record AdmittedRemoval(PortForwardPlan Plan, string Id, IReadOnlySet<string> Touched, IReadOnlyList<DeploymentStep> Declarations);

    private static AdmittedRemoval AdmitRemoval(QubesInventory inventory, string vmName, ForwardProtocol protocol, int port)
    {
        var warnings = new List<string>();
        var target = inventory.Get(Validation.QubeName.Validate(vmName));
        PortForward.ValidatePort(port);
        // the target's own features, even if it has no network any more
        var own = PortForwardDeclaration.Read(target).ToList();
        var matching = own
            .Where(d => PortForwardFeature.TryParseName(d.FeatureName, out var p, out var n, lenient: true) && p == protocol && n == port).ToList();
        var name = PortForwardFeature.NameFor(protocol, port);
        if (matching.Count == 0)
            throw new QubesFirewallException(ErrorIds.PortForwardNotFound, FailureKind.ObjectNotFound,
                $"'{target.Name}' has no port forward {(protocol == ForwardProtocol.Tcp ? "tcp" : "udp")}/{port.ToString(CultureInfo.InvariantCulture)} (no feature {name}). Get-QubePortForward lists the declared ones.", name);
        var removed = matching.Select(d => d.Forward).FirstOrDefault(f => f is not null);
        foreach (var d in own)
            if (d.Forward is null && !matching.Contains(d)) warnings.Add(IgnoredWarning(d));

        var order = new List<Qube>();
        var hops = new List<string>();
        NetworkChain? chain = null;
        string? why = null;
        if (removed is not null && TryResolve(inventory, removed, out chain, out why, structuralOnly: true))
        {
            // outside in: the outermost hop closes first, the target last
            order.AddRange(chain!.Hops.Select(h => h.Qube));
            order.Add(chain.Target);
            hops.AddRange(chain.HopNames);
        }
        else
        {
            warnings.Add(removed is null && matching[0].Ownership == DeclarationOwnership.Copied
                ? $"The declaration {matching[0].FeatureName} of {target.Name} was copied from another qube and never deployed: only the feature is removed."
                : removed is null
                ? $"The declaration {matching[0].FeatureName} of {target.Name} cannot be read, so the network qubes it crossed are unknown: only the feature is removed, with the keys named for it wherever they are."
                : $"The network chain of {removed.Text} cannot be resolved now ({why}); only its declaration is removed, with the keys named for it wherever they are.");
            order.Add(target);
        }

        var text = removed?.Text ?? $"{(protocol == ForwardProtocol.Tcp ? "tcp" : "udp")}/{port.ToString(CultureInfo.InvariantCulture)} -> {target.Name}";
        // nothing is written into qubes per change: a forward whose qubes lack the agent is refused (a declaration that cannot be
        // resolved any more is only removed, with the keys every qube derives without it)
        if (chain is not null) AgentDelivery.RequireAgent(inventory, order.Select(q => q.Name), text);
        // on the qubes it crosses and every qube that carries a part of it, found by the parts' names (a qvm-prefs change since may
        // have moved its way: a part left on a former hop would forward the port again, with no declaration, once the target is back behind it)
        var touched = order.Select(q => q.Name).ToHashSet(StringComparer.Ordinal);
        touched.UnionWith(inventory.NamesWithFeature(f => AgentFeatures.IsPartOfForward(f, target.Name, protocol, port), skipAdminVm: true));
        var plan = new PortForwardPlan
        {
            Operation = PlanOperation.Remove,
            Forward = removed,
            VMName = target.Name,
            FeatureName = name,
            Hops = hops,
            Target = $"{text} ({string.Join(" -> ", hops.Append(target.Name))})",
            Warnings = warnings,
        };
        return new AdmittedRemoval(plan, AgentFeatures.ForwardId(target.Name, protocol, port), touched,
            matching.Select(d => DeploymentStep.RemoveFeature(target.Name, d.FeatureName, d.FeatureValue)).ToList());
    }

    // ------------------------------------------------------------------ export / list

    /// <summary>The script the module maintains for a qube (the body of its managed block), or null when no forward crosses it and no link concerns it.</summary>
    public static QubeForwardScript? Export(QubesInventory inventory, string vmName, ICollection<string>? warnings = null)
    {
        var qube = inventory.Get(Validation.QubeName.Validate(vmName));
        var list = new List<string>();
        var forwards = PortForwardDeclaration.ReadAll(inventory, networkedOnly: true).Where(d => d.Forward is not null).Select(d => d.Forward!).ToList();
        var layout = ForwardLayout.Build(inventory, forwards, list);
        foreach (var w in list) warnings?.Add(w);
        var set = layout.For(qube);
        var storage = HookFiles.StorageOf(inventory, qube);
        var path = HookFiles.HookPath(qube);
        // a qube that only keeps inter-qube links has a block too
        var links = LinkPersistence.Part(inventory, storage, path, LinkLayout.Build(inventory, InterVmLinkPlanner.DeclaredLinks(inventory), null).For);
        if (set.IsEmpty && links.Length == 0) return null;
        // The managed block is shared with ConnectTCP bindings and inter-qube links: keep their sections.
        var body = LinkPersistence.ReplacePart(ConnectTcpPersistence.WithBindings(inventory, storage, path, HookFiles.BlockBody(inventory, storage, path, layout.For)), links);
        return new QubeForwardScript(qube.Name, storage.Name, path, body, set.Count);
    }

    /// <summary>The declared forwards as Get-QubePortForward shows them (invalid declarations come back with their problem).</summary>
    public static IReadOnlyList<QubePortForward> List(QubesInventory inventory, DateTimeOffset now, Func<string, bool>? vmFilter = null)
    {
        var result = new List<QubePortForward>();
        foreach (var d in PortForwardDeclaration.ReadAll(inventory))
        {
            if (vmFilter is not null && !vmFilter(d.VMName)) continue;
            if (d.Forward is null)
            {
                // a copy (qvm-clone, restore) shows what it declares, with its Problem: never deployed
                result.Add(d is { Ownership: DeclarationOwnership.Copied, Declared: { } copy }
                    ? new QubePortForward(d, copy, [], copy.IsExpiredAt(now), d.Problem)
                    : new QubePortForward(d, null, [], false, d.Problem));
                continue;
            }
            var hops = TryResolve(inventory, d.Forward, out var chain, out var why) ? chain!.HopNames.ToList() : [];
            result.Add(new QubePortForward(d, d.Forward, hops, d.Forward.IsExpiredAt(now), chain is null ? why : null,
                ipv6: chain is not null && NftForwardScript.Families(chain).Contains(NftFamily.Ip6)));
        }
        return result;
    }

    // ------------------------------------------------------------------ apply

    /// <summary>
    /// Deploys the plan with <see cref="Rollout"/>: in order, the first failure stops it and every change
    /// made is put back (the feature included, so declarations and qubes agree). Under the backend's
    /// deployment lock (offline root) the plan is first made again by <paramref name="replan"/>, so a
    /// forward another process added since the first plan is kept. Reports, per qube, what happened.
    /// </summary>
    public static HopResults Apply(IQubesBackend backend, PortForwardPlan plan, RolloutOptions? options = null, Func<PortForwardPlan>? replan = null)
    {
        (plan, var run) = Rollout.Deploy(backend, plan, options, replan);
        var failure = run.Failure(ErrorIds.PortForwardRolledBack, ErrorIds.PortForwardPartiallyApplied, $"{plan.Operation} port forward {plan.Target}", "Remove-QubePortForward", plan.Operation == PlanOperation.Remove, null);
        if (failure is not null) return new HopResults([], failure) { Plan = plan, Rollout = run };
        var p = plan;
        var (hops, error) = ConfirmAgents(backend, run, plan.AgentGenerations, plan.AgentWait, q => RoleOf(p, q), plan.Subject,
            plan.Operation, q => p.ForwardCounts.GetValueOrDefault(q), ErrorIds.PortForwardAgentFailed, ErrorIds.PortForwardAgentUnconfirmed, $"{plan.Operation} port forward {plan.Target}");
        return new HopResults(hops, error) { Plan = plan, Rollout = run };
    }

    /// <summary>
    /// After the feature calls of a change through the agent (port forwards, links): each running qube's agent asked for its
    /// generation; one result per qube. A Failed agent rolls every applied feature back (<paramref name="failedId"/>);
    /// Unconfirmed is an error without rollback (<paramref name="unconfirmedId"/>); with a zero wait nothing is asked (Sent).
    /// </summary>
    internal static (List<PortForwardHopResult> Hops, QubesFirewallException? Error) ConfirmAgents(IQubesBackend backend, DeploymentResult run,
        IReadOnlyDictionary<string, string> generations, TimeSpan wait, Func<string, string> roleOf, string subject, PlanOperation operation,
        Func<string, int> counts, string failedId, string unconfirmedId, string what)
    {
        IReadOnlyList<AgentOutcome> outcomes = wait <= TimeSpan.Zero && backend.RunsInQubes
            ? generations.OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => new AgentOutcome(g.Key, g.Value, AgentOutcomeKind.Unconfirmed, "not asked (-NoWait)")).ToList()
            : AgentDelivery.Confirm(backend, backend.GetInventory(), generations, wait);
        var failed = outcomes.Where(o => o.Kind == AgentOutcomeKind.Failed).ToList();
        var rolledBack = false;
        if (failed.Count > 0)
        {
            var undo = Rollout.Run(backend, AgentDelivery.Undo(run.Steps.Where(r => r.Status == DeploymentStepStatus.Applied).Select(r => r.Step)));
            rolledBack = undo.Steps.All(r => r.Status == DeploymentStepStatus.Applied);
        }
        var hops = outcomes.Select(o => new PortForwardHopResult
        {
            VMName = o.VMName,
            Role = roleOf(o.VMName),
            Forward = subject,
            Operation = operation,
            StoredIn = o.VMName,
            Path = AgentFeatures.Prefix + "*",
            Forwards = counts(o.VMName),
            Status = o.Kind switch
            {
                AgentOutcomeKind.Applied => failed.Count > 0 ? PortForwardHopStatus.RolledBack : PortForwardHopStatus.Applied,
                AgentOutcomeKind.Failed => PortForwardHopStatus.Failed,
                AgentOutcomeKind.Pending => PortForwardHopStatus.Pending,
                AgentOutcomeKind.Recorded => PortForwardHopStatus.Recorded,
                _ => wait <= TimeSpan.Zero ? PortForwardHopStatus.Sent : PortForwardHopStatus.Unconfirmed,
            },
            Message = o.Message is null ? $"generation {o.Generation}" : RuleGrammar.Printable(o.Message),
        }).ToList();
        QubesFirewallException? error = null;
        if (failed.Count > 0)
            error = new QubesFirewallException(failedId, FailureKind.InvalidOperation,
                $"{what}: {string.Join("; ", failed.Select(f => RuleGrammar.Printable(f.Message)))}. " +
                (rolledBack ? "Every feature was put back as it was." : "Putting the features back failed too: check Test-QubeFirewall."), what);
        else if (wait > TimeSpan.Zero && outcomes.Any(o => o.Kind == AgentOutcomeKind.Unconfirmed))
            error = new QubesFirewallException(unconfirmedId, FailureKind.ResourceUnavailable,
                $"{what}: the features are set, but {string.Join("; ", outcomes.Where(o => o.Kind == AgentOutcomeKind.Unconfirmed).Select(o => RuleGrammar.Printable(o.Message)))}.", what);
        return (hops, error);
    }

    private static string RoleOf(PortForwardPlan plan, string qube)
    {
        // several forwards: what the qube is to each that reaches it (target of one, hop of another), once each
        if (plan.Members.Count > 1)
            return string.Join(", ", plan.Members.Select(m => RoleOf(m, qube)).Where(r => r != "previous hop").Distinct(StringComparer.Ordinal).DefaultIfEmpty("previous hop"));
        if (qube == plan.VMName) return "target";
        var i = plan.Hops.ToList().IndexOf(qube);
        return i >= 0 ? $"hop {(i + 1).ToString(CultureInfo.InvariantCulture)} of {plan.Hops.Count.ToString(CultureInfo.InvariantCulture)}" : "previous hop";
    }

    // ------------------------------------------------------------------ checks

    /// <summary>
    /// IPv6 sources need IPv6 end to end (each family's rules filter by that family's sources only, so an
    /// IPv6 source on an IPv4-only chain could never connect: refused). A target with IPv6 on a chain
    /// without it gets a forward for IPv4 only: said in a warning.
    /// </summary>
    private static void CheckAddressFamilies(QubesInventory inventory, NetworkChain chain, List<string> warnings)
    {
        var forward = chain.Forward;
        var v6 = forward.AllowFrom.Where(h => h.Kind == HostKind.IPv6).Select(h => h.Value).ToList();
        if (chain.HasIPv6 || (v6.Count == 0 && chain.Target.IPv6 is null)) return;
        var missing = chain.WithoutIPv6;
        var names = string.Join(", ", missing.Select(q => $"'{q.Name}'"));
        var top = IPv6Planner.TopOf(inventory, chain.Target).Name;
        var fix = $"Turn IPv6 on where the chain starts (Set-QubeIPv6 -VMName {top} -Enabled $true; the qubes behind it inherit it, and running qubes get their IPv6 address when they start again)";
        if (v6.Count > 0)
            throw new QubesFirewallException(ErrorIds.IPv6NotEnabled, FailureKind.InvalidOperation,
                $"{forward.Text}: -AllowFrom lists IPv6 sources ({string.Join(", ", v6)}), but IPv6 is not on along {chain.Path}: {names} {(missing.Count == 1 ? "has" : "have")} no IPv6 address. " +
                $"The forward would be generated for IPv4 only, where IPv6 sources never match. {fix}, or list IPv4 sources only. Nothing was changed.", forward);
        warnings.Add($"{forward.Text} is forwarded over IPv4 only: '{chain.Target.Name}' has IPv6, but {names} on the way {(missing.Count == 1 ? "does" : "do")} not. {fix} to forward IPv6 too.");
    }

    /// <summary>For an internal forward: the qubes the network qube serves reach the target only if their own Qubes firewall lets them.</summary>
    private static void CheckSourceFirewalls(QubesInventory inventory, NetworkChain chain, Func<string, IReadOnlyList<FirewallRule>> readFirewall,
        DateTimeOffset now, List<string> warnings)
    {
        var f = chain.Forward;
        var netvm = chain.Hops[0].Qube;
        var destination = chain.Target.IP!;
        var proto = f.Protocol == ForwardProtocol.Tcp ? RuleProtocol.Tcp : RuleProtocol.Udp;
        foreach (var client in inventory.ClientsOf(netvm.Name))
        {
            if (client.Name == chain.Target.Name || client.IP is null) continue;
            if (f.AllowFrom.Count > 0 && !f.AllowFrom.Any(n => PortForward.Contains(n, client.IP))) continue;
            IReadOnlyList<FirewallRule> rules;
            try { rules = readFirewall(client.Name); }
            catch (QubesFirewallException) { continue; }
            var (verdict, number, rule) = FirewallVerdict.Evaluate(rules, proto, destination, f.TargetPort, now);
            if (verdict == FirewallVerdictKind.Accept) continue;
            var why = verdict switch
            {
                FirewallVerdictKind.Drop when rule is not null => $"its rule {number.ToString(CultureInfo.InvariantCulture)} ({rule.Text}) drops it",
                FirewallVerdictKind.Drop => "no rule of its list matches, and what matches nothing is dropped",
                _ => $"its rule {number.ToString(CultureInfo.InvariantCulture)} ({rule!.Text}) names a host that only {netvm.Name} resolves, so this cannot be checked here",
            };
            if (verdict == FirewallVerdictKind.Unknown)
            {
                warnings.Add($"'{client.Name}' may not be able to use {f.Text}: {why}. Its own Qubes firewall must allow {destination} {f.ProtocolText} port {f.TargetPort.ToString(CultureInfo.InvariantCulture)}.");
                continue;
            }
            warnings.Add($"'{client.Name}' cannot use {f.Text}: after {netvm.Name} translates the address, the connection goes to {destination} {f.ProtocolText} port {f.TargetPort.ToString(CultureInfo.InvariantCulture)}, and {client.Name}'s own Qubes firewall, " +
                $"enforced in {netvm.Name}, must allow that: {why}. Allow it with: Add-QubeFirewallRule -VMName {client.Name} -Action Accept -Protocol {f.Protocol} -DstHost {destination} -DstPorts {f.TargetPort.ToString(CultureInfo.InvariantCulture)}");
        }
    }

    private static string IgnoredWarning(PortForwardDeclaration d) =>
        $"The feature {d.FeatureName} of {d.VMName} is not a valid port forward and is ignored (nothing is generated for it): {d.Problem} Fix or remove it: Remove-QubePortForward removes it by port.";

    internal static bool TryResolve(QubesInventory inventory, PortForward forward, out NetworkChain? chain, out string? why, bool structuralOnly = false)
    {
        try
        {
            chain = structuralOnly ? NetworkChain.ResolveStructure(inventory, forward) : NetworkChain.Resolve(inventory, forward);
            why = null;
            return true;
        }
        catch (QubesFirewallException ex)
        {
            chain = null;
            why = ex.Message;
            return false;
        }
    }
}
