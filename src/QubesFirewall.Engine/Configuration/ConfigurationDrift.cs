using System.Globalization;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Configuration;

/// <summary>What a difference between a configuration file and a system is about.</summary>
public enum DriftKind
{
    /// <summary>The file names a qube the system does not have.</summary>
    QubeMissing,
    NetVM,
    IPv6,
    /// <summary>The qube's Qubes firewall differs (Expected and Actual list the rules, one per line).</summary>
    Rules,
    Forward,
    Link,
    Binding,
    /// <summary>A declaration that belongs to another qube: copied with the qube (qvm-clone, a restore); it is never deployed.</summary>
    Copied,
}

/// <summary>
/// One difference between a configuration file and the system (Test-QubeNetworkConfiguration). <see cref="Expected"/>
/// is what the file says (null: the file does not list it), <see cref="Actual"/> what the system has (null: it has none).
/// </summary>
public sealed record ConfigurationDrift(string VMName, DriftKind Kind, string? Item, string? Expected, string? Actual)
{
    public override string ToString() =>
        $"{VMName} {Kind}{(Item is null ? "" : " " + Item)}: expected {Show(Expected)}, actual {Show(Actual)}";

    private static string Show(string? value) => value is null ? "(none)" : "'" + value.Replace("\n", "; ", StringComparison.Ordinal) + "'";
}

/// <summary>The differences of one qube, typed, as both the comparison and the planner use them.</summary>
internal sealed class QubeDiff
{
    public required QubeConfiguration Wanted { get; init; }
    public required Qube Qube { get; init; }
    public NetVmSetting? NetVmNow { get; init; }
    public IPv6Setting? IPv6Now { get; init; }
    public IReadOnlyList<FirewallRule> RulesNow { get; init; } = [];
    /// <summary>The list the qube should have (the file's rules plus what its links need), null when it has it.</summary>
    public IReadOnlyList<FirewallRule>? RulesWanted { get; init; }
    public List<PortForward> ForwardsToSet { get; } = [];
    public List<PortForwardDeclaration> ForwardsExtra { get; } = [];
    public List<InterVmLink> LinksToAdd { get; } = [];
    public List<InterVmLinkDeclaration> LinksExtra { get; } = [];
    public List<TcpBinding> BindingsToSet { get; } = [];
    public List<TcpBindingDeclaration> BindingsExtra { get; } = [];

    public bool NetVmChanges => Wanted.NetVM is { } w && w != NetVmNow;
    public bool IPv6Changes => Wanted.IPv6 is { } w && w != IPv6Now;

    /// <summary>Compares one qube of the file with the system (<paramref name="inventory"/> may be a simulated one).</summary>
    public static QubeDiff Compute(QubesInventory inventory, QubeConfiguration wanted, Qube qube, Func<string, FirewallDocument> readFirewall, DateTimeOffset now)
    {
        var rulesNow = wanted.Rules is null ? [] : readFirewall(qube.Name).VisibleAt(now);
        IReadOnlyList<FirewallRule>? rulesWanted = null;
        if (wanted.Rules is { } fileRules)
        {
            var full = WithLinkRules(inventory, wanted, qube, fileRules);
            if (!full.Select(r => r.Text).SequenceEqual(rulesNow.Select(r => r.Text), StringComparer.Ordinal)) rulesWanted = full;
        }
        var diff = new QubeDiff
        {
            Wanted = wanted,
            Qube = qube,
            NetVmNow = NetVmSetting.Of(qube),
            IPv6Now = ConfigurationExport.IPv6SettingOf(qube),
            RulesNow = rulesNow,
            RulesWanted = rulesWanted,
        };
        // A declaration is as the file says when its words are the file's and it is bound to this qube (its uuid):
        // a legacy one (no uuid yet) is adopted, a copied one (another qube's uuid) shows as Copied; both are declared again.
        if (wanted.Forwards is { } forwards)
        {
            var declared = PortForwardDeclaration.Read(qube).ToList();
            foreach (var f in forwards)
                if (declared.FirstOrDefault(d => d.FeatureName == f.FeatureName) is not { } d || d.FeatureValue != DeclarationOwner.Bind(qube.Uuid, f.FeatureValue))
                    diff.ForwardsToSet.Add(f);
            diff.ForwardsExtra.AddRange(declared.Where(d => !forwards.Any(f => f.FeatureName == d.FeatureName)));
        }
        if (wanted.Links is { } links)
        {
            var declared = InterVmLinkDeclaration.Read(qube);
            diff.LinksToAdd.AddRange(links.Where(l => !declared.Any(d => d.Link is not null && d.FeatureName == l.FeatureName && IsBound(qube, d.Ownership))));
            diff.LinksExtra.AddRange(declared.Where(d => d.Link is null && d.Ownership != DeclarationOwnership.Copied || !links.Any(l => l.FeatureName == d.FeatureName)));
        }
        if (wanted.Bindings is { } bindings)
        {
            var declared = TcpBindingDeclaration.Read(qube).ToList();
            foreach (var b in bindings)
                if (declared.FirstOrDefault(d => d.FeatureName == b.FeatureName) is not { } d || d.FeatureValue != DeclarationOwner.Bind(qube.Uuid, b.FeatureValue))
                    diff.BindingsToSet.Add(b);
            diff.BindingsExtra.AddRange(declared.Where(d => !bindings.Any(b => b.FeatureName == d.FeatureName)));
        }
        return diff;
    }

    /// <summary>
    /// The file's rules with the accept rules the qube's links need (Enable-QubeInterVmNetwork puts them before the
    /// catch-all, and so does this, unless the file lists them already): a file exported before a link was added to it
    /// stays true once the link is applied. Links are the file's when it manages them, else the qube's declared ones.
    /// </summary>
    /// <summary>In force and bound to the qube: carries its uuid, or the qube has none to carry (a root without uuids).</summary>
    private static bool IsBound(Qube qube, DeclarationOwnership ownership) =>
        ownership == DeclarationOwnership.Bound || (ownership == DeclarationOwnership.Legacy && qube.Uuid is null);

    private static IReadOnlyList<FirewallRule> WithLinkRules(QubesInventory inventory, QubeConfiguration wanted, Qube qube, IReadOnlyList<FirewallRule> fileRules)
    {
        var links = wanted.Links ?? InterVmLinkDeclaration.Read(qube).Where(d => d.Link is not null).Select(d => d.Link!).ToList();
        var extra = new List<RuleInsertion>();
        foreach (var link in links)
        {
            try
            {
                extra.AddRange(InterVmLinkPlanner.FirewallRules(InterVmLinkPlanner.Resolve(inventory, link, checks: false)).Select(r => new RuleInsertion(r)));
            }
            catch (QubesFirewallException)
            {
                // a link that cannot be resolved here is refused by its own plan, with the reason
            }
        }
        return extra.Count == 0 ? fileRules : FirewallEdit.Insert(extra).ApplyTo(fileRules).Rules;
    }

    /// <summary>The differences as drift objects, in a fixed order.</summary>
    public IEnumerable<ConfigurationDrift> Drift()
    {
        var name = Qube.Name;
        if (NetVmChanges) yield return new(name, DriftKind.NetVM, null, Wanted.NetVM!.ToString(), NetVmNow!.ToString() + (NetVmNow.Mode == NetVmMode.Default && Qube.NetVM is { } eff ? $" = {eff}" : ""));
        if (IPv6Changes) yield return new(name, DriftKind.IPv6, null, Wanted.IPv6.ToString(), IPv6Now.ToString());
        if (RulesWanted is { } rules)
            yield return new(name, DriftKind.Rules, null, string.Join("\n", rules.Select(r => r.Text)), string.Join("\n", RulesNow.Select(r => r.Text)));
        var forwards = PortForwardDeclaration.Read(Qube).ToDictionary(d => d.FeatureName, d => d.Ownership, StringComparer.Ordinal);
        var links = InterVmLinkDeclaration.Read(Qube).ToDictionary(d => d.FeatureName, d => d.Ownership, StringComparer.Ordinal);
        var bindings = TcpBindingDeclaration.Read(Qube).ToDictionary(d => d.FeatureName, d => d.Ownership, StringComparer.Ordinal);
        foreach (var f in ForwardsToSet)
            yield return new(name, KindOf(forwards, f.FeatureName, DriftKind.Forward), $"{f.ProtocolText}/{f.Port.ToString(CultureInfo.InvariantCulture)}", f.FeatureValue, Stored(f.FeatureName));
        foreach (var d in ForwardsExtra)
            yield return new(name, KindOf(forwards, d.FeatureName, DriftKind.Forward), ForwardItem(d.FeatureName), null, Stored(d.FeatureName));
        foreach (var l in LinksToAdd)
            yield return new(name, KindOf(links, l.FeatureName, DriftKind.Link), LinkItem(l), "declared", Stored(l.FeatureName) is null ? null : "declared" + Owner(l.FeatureName));
        foreach (var d in LinksExtra)
            yield return new(name, KindOf(links, d.FeatureName, DriftKind.Link), (d.Link ?? d.Declared) is { } l ? LinkItem(l) : d.FeatureName, null, "declared" + Owner(d.FeatureName));
        foreach (var b in BindingsToSet)
            yield return new(name, KindOf(bindings, b.FeatureName, DriftKind.Binding), $"{b.To}:{b.Port.ToString(CultureInfo.InvariantCulture)}", b.FeatureValue, Stored(b.FeatureName));
        foreach (var d in BindingsExtra)
            yield return new(name, KindOf(bindings, d.FeatureName, DriftKind.Binding), (d.Binding ?? d.Declared) is { } b ? $"{b.To}:{b.Port.ToString(CultureInfo.InvariantCulture)}" : d.FeatureName, null, Stored(d.FeatureName));
    }

    private static DriftKind KindOf(Dictionary<string, DeclarationOwnership> ownership, string feature, DriftKind kind) =>
        ownership.TryGetValue(feature, out var o) && o == DeclarationOwnership.Copied ? DriftKind.Copied : kind;

    /// <summary>A stored declaration as the file would say it (no uuid), and whose it is when it is not this qube's.</summary>
    private string? Stored(string feature) =>
        Qube.Features.TryGetValue(feature, out var value) ? DeclarationOwner.Split(value).Declaration + Owner(feature) : null;

    private string Owner(string feature)
    {
        if (!Qube.Features.TryGetValue(feature, out var value)) return "";
        var uuid = DeclarationOwner.Split(value).Uuid;
        return DeclarationOwner.Of(Qube, uuid) switch
        {
            DeclarationOwnership.Copied => $" (copied: bound to uuid {uuid}, not to this qube)",
            DeclarationOwnership.Legacy when Qube.Uuid is not null => " (no uuid: not bound to this qube yet)",
            _ => "",
        };
    }

    private static string ForwardItem(string featureName) =>
        PortForwardFeature.TryParseName(featureName, out var p, out var n, lenient: true)
            ? $"{(p == ForwardProtocol.Tcp ? "tcp" : "udp")}/{n.ToString(CultureInfo.InvariantCulture)}" : featureName;

    private static string LinkItem(InterVmLink l) => $"{l.To} {l.ProtocolText}/{l.Ports}";
}

/// <summary>Test-QubeNetworkConfiguration's engine: the drift between a configuration and a system.</summary>
public static class ConfigurationComparer
{
    /// <summary>Every difference, qube by qube in the file's order; empty when the system matches the file.</summary>
    public static IReadOnlyList<ConfigurationDrift> Compare(NetworkConfiguration configuration, QubesInventory inventory,
        Func<string, FirewallDocument> readFirewall, DateTimeOffset now)
    {
        var drift = new List<ConfigurationDrift>();
        foreach (var wanted in configuration.Qubes)
        {
            if (inventory.Find(wanted.Name) is not { } qube)
            {
                drift.Add(new ConfigurationDrift(wanted.Name, DriftKind.QubeMissing, null, wanted.Name, null));
                continue;
            }
            drift.AddRange(QubeDiff.Compute(inventory, wanted, qube, readFirewall, now).Drift());
        }
        return drift;
    }
}
