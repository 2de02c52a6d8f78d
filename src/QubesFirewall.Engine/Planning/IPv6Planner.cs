using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Planning;

/// <summary>What Set-QubeIPv6 makes of a qube's <c>ipv6</c> feature.</summary>
public enum IPv6Setting
{
    /// <summary>Feature <c>ipv6</c> = <c>1</c>: IPv6 on for the qube and, as their default, the qubes behind it.</summary>
    Enabled,
    /// <summary>Feature <c>ipv6</c> = empty string: IPv6 off for the qube (and inherited off downstream), whatever upstream says.</summary>
    Disabled,
    /// <summary>No <c>ipv6</c> feature: the first qube up the netvm chain that has it decides (none: off).</summary>
    Inherit,
}

/// <summary>
/// One planned change of a qube's <c>ipv6</c> feature: the value now (null: absent), the value
/// after (null: removed), and what the qube's IPv6 will be.
/// </summary>
public sealed record IPv6Change(string VMName, IPv6Setting Setting, string? CurrentValue, string? NewValue, bool EnabledAfter, string? DecidedBy, IReadOnlyList<string> Warnings)
{
    /// <summary>False when the feature already has the wanted value (or is already absent).</summary>
    public bool IsChange => !string.Equals(CurrentValue, NewValue, StringComparison.Ordinal);

    /// <summary>Set (to on or off) or Remove (inherit): the feature change as a plan operation.</summary>
    public PlanOperation Operation => NewValue is null ? PlanOperation.Remove : PlanOperation.Set;

    /// <summary>The words the plan shows for the change.</summary>
    public string Description => NewValue switch
    {
        null => "Remove feature ipv6 (inherit IPv6 from the network qube)",
        "" => "Set feature ipv6 to '' (IPv6 off)",
        _ => $"Set feature ipv6 to '{NewValue}' (IPv6 on)",
    };

    /// <summary>The dom0 command that does the same.</summary>
    public string Command => NewValue switch
    {
        null => $"qvm-features --unset {VMName} ipv6",
        _ => $"qvm-features {VMName} ipv6 '{NewValue}'",
    };

    /// <summary>The feature change as a step (a rollback gives the feature its value back); null when there is nothing to change.</summary>
    public DeploymentStep? Step()
    {
        if (!IsChange) return null;
        var description = $"{VMName}: {Description}: {Command}";
        return NewValue is null
            ? DeploymentStep.RemoveFeature(VMName, IPv6Planner.Feature, CurrentValue!) with { Description = description }
            : DeploymentStep.SetFeature(VMName, IPv6Planner.Feature, NewValue, CurrentValue)! with { Description = description };
    }
}

/// <summary>
/// The <c>ipv6</c> feature as qubesd reads it (core-admin <c>qubes/vm/mix/net.py</c>, <c>_default_ip6</c>
/// and <c>gateway6</c>): <c>features.check_with_netvm("ipv6", False)</c> takes the value of the first
/// qube along the chain, the qube itself first, then its netvm, that netvm's netvm and so on, that
/// has the feature; Python's truth of that string decides, so any non-empty value (even <c>0</c>)
/// enables and only the empty string disables. A networked qube with IPv6 on gets
/// <c>fd09:24ef:4179::a89:&lt;qid hex&gt;</c> (disposables <c>::a8a:&lt;dispid hex&gt;</c>); its IPv6 gateway is
/// its network qube's own IPv6 address, which exists only when IPv6 is on for the network qube too.
/// </summary>
public static class IPv6Planner
{
    public const string Feature = "ipv6";

    public static IPv6Change Plan(QubesInventory inventory, string vmName, IPv6Setting setting)
    {
        QubeName.Validate(vmName);
        var qube = inventory.Find(vmName) ?? throw QubesInventory.NotFound(vmName);
        if (qube.Class is QubeClass.AdminVM or QubeClass.RemoteVM)
            throw new QubesFirewallException(ErrorIds.NoNetwork, FailureKind.InvalidOperation,
                $"'{qube.Name}' is {(qube.Class == QubeClass.AdminVM ? "dom0, which" : "a remote qube, which")} has no networking in Qubes: there is no IPv6 to turn on or off.", qube.Name);
        if (setting == IPv6Setting.Enabled && !IsNetworked(qube))
            throw new QubesFirewallException(ErrorIds.NoNetwork, FailureKind.InvalidOperation,
                $"'{qube.Name}' has no network (its netvm is empty and it does not provide network), so it gets no IPv6 address. Give it a netvm first (qvm-prefs {qube.Name} netvm sys-firewall); nothing was changed.", qube.Name);

        string? current = qube.Features.TryGetValue(Feature, out var v) ? v : null;
        string? next = setting switch
        {
            IPv6Setting.Enabled => "1",
            IPv6Setting.Disabled => "",
            _ => null,
        };
        var after = Decide(inventory, qube, next, qube.Name);
        var warnings = new List<string>();

        if (after.Enabled && IsNetworked(qube) && inventory.Find(qube.NetVM ?? "") is { } netvm && !Decide(inventory, netvm, next, qube.Name).Enabled)
            warnings.Add($"'{qube.Name}' gets an IPv6 address, but its network qube '{netvm.Name}' has IPv6 off, so '{qube.Name}' has no IPv6 gateway and no IPv6 connection. " +
                $"Turn IPv6 on where the chain starts instead (Set-QubeIPv6 -VMName {TopOf(inventory, qube).Name} -Enabled $true), and let the qubes behind it inherit.");

        if (qube.ProvidesNetwork && !after.Enabled)
        {
            var stranded = inventory.ClientsOf(qube.Name).Where(c => c.Features.TryGetValue(Feature, out var cv) && cv.Length > 0).Select(c => c.Name).ToList();
            if (stranded.Count > 0)
                warnings.Add($"{string.Join(", ", stranded.Select(n => $"'{n}'"))} turn IPv6 on themselves (feature ipv6) and keep an IPv6 address, but will have no IPv6 gateway through '{qube.Name}'.");
        }

        return new IPv6Change(qube.Name, setting, current, next, after.Enabled, after.DecidedBy, warnings);
    }

    /// <summary>
    /// Set-QubeIPv6's plan: the feature change, then the links and port forwards it affects (<paramref name="effects"/>),
    /// each planned again and deployed on the system as the feature change leaves it. A failure puts everything back,
    /// the feature included.
    /// </summary>
    public static Plan AsPlan(IPv6Change change, IPv6Effects effects, DateTimeOffset now)
    {
        var steps = new List<DeploymentStep>();
        if (change.Step() is { } feature) steps.Add(feature);
        // The declarations were accepted when they were made (a disposable on the way included): they are made again as they are.
        steps.AddRange(effects.Links.Select(link => new DeploymentStep
        {
            Kind = DeploymentStepKind.Redeploy,
            VMName = link.From,
            Description = $"link {link.Text}: plan the link again for the IPv6 change (its IPv6 part follows the ipv6 features)",
            Redeploy = backend =>
            {
                var result = InterVmLinkPlanner.Apply(backend, InterVmLinkPlanner.PlanEnable(backend, [link], DeploymentOptions.For(backend, now)));
                return (result.Rollout, result.Failure);
            },
        }));
        steps.AddRange(effects.Forwards.Select(forward => new DeploymentStep
        {
            Kind = DeploymentStepKind.Redeploy,
            VMName = forward.VMName,
            Description = $"port forward {forward.Text}: plan the port forward again for the IPv6 change (its IPv6 part follows the ipv6 features)",
            Redeploy = backend =>
            {
                var result = PortForwardPlanner.Apply(backend, PortForwardPlanner.PlanAdd(backend, forward, DeploymentOptions.For(backend, now)));
                return (result.Rollout, result.Failure);
            },
        }));
        return new Plan
        {
            Operation = PlanOperation.Set,
            Target = change.VMName,
            Purpose = $"set IPv6 of {change.VMName}",
            Description = $"Set IPv6 of {change.VMName}:",
            Steps = steps,
            Warnings = change.Warnings,
        };
    }

    /// <summary>Writes the change alone (live: <c>admin.vm.feature.Set</c> or <c>Remove</c> of <c>ipv6</c>; offline: qubes.xml). Nothing when the value is already right.</summary>
    public static void Apply(IQubesBackend backend, IPv6Change change)
    {
        if (AsPlan(change, new IPv6Effects([], [], []), DateTimeOffset.UtcNow).Apply(backend).Failure is { } failure) throw failure;
    }

    /// <summary>Whether IPv6 is on for the qube and which qube's feature decides (null: none has it, so off).</summary>
    public static (bool Enabled, string? DecidedBy) Decide(QubesInventory inventory, Qube qube) => Decide(inventory, qube, null, null);

    // check_with_netvm with the feature of one qube (overrideName) replaced by overrideValue (null: absent).
    internal static (bool Enabled, string? DecidedBy) Decide(QubesInventory inventory, Qube qube, string? overrideValue, string? overrideName)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (Qube? q = qube; q is not null && seen.Add(q.Name); q = q.NetVM is { } n ? inventory.Find(n) : null)
        {
            string? value;
            if (q.Name == overrideName) value = overrideValue;
            else value = q.Features.TryGetValue(Feature, out var f) ? f : null;
            if (value is not null) return (value.Length > 0, q.Name);
        }
        return (false, null);
    }

    /// <summary>qubesd's is_networked: provides network, or has a netvm.</summary>
    public static bool IsNetworked(Qube qube) => qube.Class is not (QubeClass.AdminVM or QubeClass.RemoteVM) && (qube.ProvidesNetwork || qube.NetVM is not null);

    /// <summary>The last qube of the chain upward from <paramref name="qube"/> (sys-net for a default setup).</summary>
    public static Qube TopOf(QubesInventory inventory, Qube qube) => inventory.UpstreamOf(qube.Name).LastOrDefault() ?? qube;
}
