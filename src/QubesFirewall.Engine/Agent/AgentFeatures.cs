using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Agent;

/// <summary>One derived feature: <c>vm-config.qubesfw.&lt;name&gt;</c> = value, exported by qubesd to the qube's QubesDB as <c>/vm-config/qubesfw.&lt;name&gt;</c>.</summary>
public sealed record AgentKey(string Feature, string Value)
{
    /// <summary>The QubesDB path the agent reads it at.</summary>
    public string QubesDbPath => "/vm-config/" + Feature[AgentFeatures.VmConfigPrefix.Length..];

    public override string ToString() => $"{Feature} = {Value}";
}

/// <summary>The derived keys of one qube: the data keys (one per rule part), and the <c>gen</c> key written last (null when the set is empty).</summary>
public sealed record QubeAgentKeys(string VMName, IReadOnlyList<AgentKey> Data, AgentKey? Gen)
{
    public bool IsEmpty => Data.Count == 0;

    /// <summary>The hash of the whole set (every data key carries it), null for an empty set.</summary>
    public string? Generation { get; init; }

    /// <summary>Data keys in name order, then <c>gen</c>.</summary>
    public IEnumerable<AgentKey> All => Gen is null ? Data : Data.Append(Gen);

    public static QubeAgentKeys Empty(string vmName) => new(vmName, [], null);
}

/// <summary>One feature call a plan makes for the agent: set (Value) or remove (Value null); Previous is its value now (null when not set).</summary>
public sealed record AgentFeatureChange(string VMName, string Feature, string? Value, string? Previous)
{
    public bool IsRemove => Value is null;

    public override string ToString() => IsRemove ? $"{VMName}: remove {Feature}" : $"{VMName}: set {Feature} = {Value}";
}

/// <summary>
/// Derives, from the declarations (<c>qubesfirewall.forward.*</c> on targets, <c>qubesfirewall.link.*</c> on
/// sources), the data features each qube's agent turns into its owned nft chains (invariant 3). qubesd exports
/// every <c>vm-config.&lt;name&gt;</c> feature of a qube to that qube's QubesDB as <c>/vm-config/&lt;name&gt;</c>, at
/// every start and live while it runs, so a change is only <c>admin.vm.feature.Set</c>/<c>Remove</c> calls in dom0.
/// <para>Keys, one per rule part and address family (each complete on its own: a part is applied whole or not at all):</para>
/// <list type="bullet">
/// <item><c>qubesfw.hop4.&lt;port5&gt;.&lt;proto&gt;.&lt;h10&gt;</c> (<c>hop6</c>): a network qube on a forward's way: its DNAT and its forward accept.
/// Value <c>for=Q gen=G proto=tcp port=443 to=8080 in=out|up|cl|if:NAME nat=ADDR dst=local|ADDR src=any|CIDR,... [exp=N] vm=TARGET</c>.</item>
/// <item><c>qubesfw.tgt4.&lt;port5&gt;.&lt;proto&gt;.&lt;h10&gt;</c> (<c>tgt6</c>): the forward's target: its input accept.
/// Value <c>for=Q gen=G proto=tcp port=443 to=8080 dst=ADDR src=any|CIDR,... [exp=N] vm=TARGET</c>.</item>
/// <item><c>qubesfw.lnet4.&lt;h12&gt;</c> (<c>lnet6</c>): the shared network qube of a link; <c>qubesfw.ldst4.&lt;h12&gt;</c> (<c>ldst6</c>): its destination.
/// Value <c>for=Q gen=G proto=tcp ports=all|N|N-M src=ADDR dst=ADDR from=SOURCE vm=DESTINATION</c>.</item>
/// <item><c>qubesfw.gen</c> = <c>for=Q gen=G keys=N</c>, set last: the agent applies only a set in which every key names
/// this qube and carries this <c>gen</c>, and which has <c>N</c> data keys.</item>
/// </list>
/// <para>A missing <c>src</c> is refused by the agent (never read as "anyone"); "any source" is <c>src=any</c>. G is a hash of
/// the qube's whole set, so an unchanged plan sets nothing. Names use lowercase letters only (the QubesDB daemon refuses
/// upper-case letters in paths); a part whose sources do not fit one value is split into several keys, one rule each.</para>
/// </summary>
public static partial class AgentFeatures
{
    public const string VmConfigPrefix = "vm-config.";
    public const string Prefix = OwnFeatures.AgentPrefix;
    public const string GenFeature = Prefix + "gen";

    /// <summary>qubesd's limit for <c>&lt;name&gt;</c> in <c>vm-config.&lt;name&gt;</c> (QubesDB paths are at most 63 bytes, <c>/vm-config/</c> takes 11).</summary>
    public const int MaxNameBytes = 52;

    /// <summary>QubesDB's limit per value (<c>QDB_MAX_DATA</c>): a longer vm-config value makes the qube fail to start.</summary>
    public const int MaxValueBytes = 3072;

    /// <summary>Whether a feature is one of the derived agent keys.</summary>
    public static bool IsAgentFeature(string name) => name.StartsWith(Prefix, StringComparison.Ordinal);

    // ------------------------------------------------------------------ derive

    /// <summary>
    /// The keys of every qube of the inventory, from all valid declarations (unresolvable ones left out, with a warning):
    /// only the qubes a declaration crosses are read further than their feature names, every other qube's set is empty.
    /// </summary>
    public static IReadOnlyDictionary<string, QubeAgentKeys> DeriveAll(QubesInventory inventory, ICollection<string>? warnings = null)
    {
        var list = warnings ?? new List<string>();
        var forwards = PortForwardDeclaration.ReadAll(inventory, networkedOnly: true).Where(d => d.Forward is not null).Select(d => d.Forward!).ToList();
        var layout = ForwardLayout.Build(inventory, forwards, list);
        var links = LinkLayout.Build(inventory, InterVmLinkPlanner.DeclaredLinks(inventory), list);
        var result = new Dictionary<string, QubeAgentKeys>(StringComparer.Ordinal);
        var crossed = layout.Qubes.Union(links.Qubes, StringComparer.Ordinal).ToHashSet(StringComparer.Ordinal);
        foreach (var name in inventory.Names)
            result[name] = crossed.Contains(name) ? Derive(layout.For(inventory.Get(name)), links.For(inventory.Get(name))) : QubeAgentKeys.Empty(name);
        return result;
    }

    /// <summary>The keys of one qube from what crosses it: the forwards it is a hop or the target of, the links it passes or receives.</summary>
    public static QubeAgentKeys Derive(QubeForwards forwards, QubeLinks links) => Seal(forwards.Qube.Name, Parts(forwards, links));

    /// <summary>The rule parts (key name after <c>vm-config.</c>, fields after <c>for=</c> and <c>gen=</c>) of what crosses one qube, unsealed.</summary>
    public static List<(string Name, List<string> Fields)> Parts(QubeForwards forwards, QubeLinks links)
    {
        var qube = forwards.Qube;
        if (links.Qube.Name != qube.Name) throw new ArgumentException("forwards and links of different qubes", nameof(links));
        var parts = new List<(string Name, List<string> Fields)>();
        foreach (var family in NftForwardScript.Families(forwards))
        {
            var fam = FamilyDigit(family);
            foreach (var (chain, hop) in forwards.AsHop)
            {
                var f = chain.Forward;
                if (NftForwardScript.NextAddress(hop, family) is not { } next || !NftForwardScript.TrySourceList(f, family, out var sources)) continue;
                var local = NftForwardScript.LocalAddress(hop, family);
                var head = new List<string>
                {
                    "proto=" + f.ProtocolText,
                    "port=" + Port(f.Port),
                    "to=" + Port(hop.IsLast ? f.TargetPort : f.Port),
                    "in=" + Ingress(hop),
                    "nat=" + NftForwardScript.Address(next, family),
                    "dst=" + (local is null ? "local" : NftForwardScript.Address(local, family)),
                };
                AddSourceParts(parts, $"qubesfw.hop{fam}.{ForwardId(f)}", qube.Name, head, sources, Tail(f));
            }
            foreach (var chain in forwards.AsTarget)
            {
                var f = chain.Forward;
                var target = family == NftFamily.Ip ? chain.Target.IP : chain.HasIPv6 ? chain.Target.IPv6 : null;
                if (target is null || !NftForwardScript.TrySourceList(f, family, out var sources)) continue;
                var head = new List<string>
                {
                    "proto=" + f.ProtocolText,
                    "port=" + Port(f.Port),
                    "to=" + Port(f.TargetPort),
                    "dst=" + NftForwardScript.Address(target, family),
                };
                AddSourceParts(parts, $"qubesfw.tgt{fam}.{ForwardId(f)}", qube.Name, head, sources, Tail(f));
            }
        }
        foreach (var family in NftLinkScript.Families(links))
        {
            var fam = FamilyDigit(family);
            foreach (var (kind, list) in new[] { ("lnet", links.AsNetVM), ("ldst", links.AsDestination) })
            {
                foreach (var l in list)
                {
                    if (NftLinkScript.Addresses(l, family) is not { } a) continue;
                    parts.Add((LinkKeyName(kind, family, l.Link), [
                        "proto=" + l.Link.ProtocolText,
                        "ports=" + l.Link.Ports,
                        "src=" + a.From,
                        "dst=" + a.To,
                        "from=" + l.Link.From,
                        "vm=" + l.Link.To,
                    ]));
                }
            }
        }
        return parts;
    }

    /// <summary>
    /// The keys of one qube from its parts (those kept from its keys as they are, <see cref="ReadPart"/>, and those derived now):
    /// sorted, sealed with the hash of the whole set, every limit checked; the same set as <see cref="Derive"/> gives for the same parts.
    /// </summary>
    public static QubeAgentKeys Seal(string vmName, IEnumerable<(string Name, IReadOnlyList<string> Fields)> parts) =>
        Seal(vmName, parts.Select(p => (p.Name, p.Fields.ToList())).ToList());

    /// <summary>
    /// The name (after <c>vm-config.</c>) of a link's part in the keys of the qube carrying it: <paramref name="kind"/> <c>lnet</c> for
    /// the shared network qube's forward accept, <c>ldst</c> for the destination's input accept.
    /// </summary>
    public static string LinkKeyName(string kind, NftFamily family, InterVmLink link) => $"qubesfw.{kind}{FamilyDigit(family)}.{Hash(link.Text, 12)}";

    /// <summary>
    /// Whether <paramref name="qube"/> carries its key named <paramref name="name"/> as the declarations derive it now, the
    /// hash of the set aside (dom0 facts only: the qube's features against <paramref name="derived"/>). The hash changes with
    /// every other key of the qube, so a part is there whatever else changed; a set whose hash no longer matches is
    /// <see cref="AgentAuditCheck.AgentKeysStale"/>'s finding, not a missing part.
    /// </summary>
    public static bool Carries(Qube qube, IReadOnlyDictionary<string, QubeAgentKeys> derived, string name)
    {
        var feature = VmConfigPrefix + name;
        return derived.GetValueOrDefault(qube.Name)?.Data.FirstOrDefault(k => k.Feature == feature) is { } key
            && qube.Features.GetValueOrDefault(feature) is { } value && WithoutGen(value) == WithoutGen(key.Value);
    }

    // "for=<qube> gen=<hash> ..." without its gen field
    private static string WithoutGen(string value) => GenField().Replace(value, "", 1);

    [System.Text.RegularExpressions.GeneratedRegex(@" gen=[0-9a-f]{16}(?= )", System.Text.RegularExpressions.RegexOptions.CultureInvariant)]
    private static partial System.Text.RegularExpressions.Regex GenField();

    /// <summary>Puts the hash of the whole set into every key, adds the <c>gen</c> key, checks every limit.</summary>
    private static QubeAgentKeys Seal(string vmName, List<(string Name, List<string> Fields)> parts)
    {
        if (parts.Count == 0) return QubeAgentKeys.Empty(vmName);
        parts.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        for (var i = 1; i < parts.Count; i++)
            if (parts[i].Name == parts[i - 1].Name)
                throw new QubesFirewallException(ErrorIds.AgentKeyCollision, FailureKind.InvalidData, $"Two rule parts of '{vmName}' derive the same key {parts[i].Name}.", parts[i].Name);
        var digest = new StringBuilder();
        digest.Append("qubesfw 1 for=").Append(vmName).Append('\n');
        foreach (var (name, fields) in parts) digest.Append(name).Append(' ').Append(string.Join(" ", fields)).Append('\n');
        var gen = Hash(digest.ToString(), 16);
        var data = parts.Select(p => Key(VmConfigPrefix + p.Name, $"for={vmName} gen={gen} {string.Join(" ", p.Fields)}")).ToList();
        var genKey = Key(GenFeature, $"for={vmName} gen={gen} keys={data.Count.ToString(CultureInfo.InvariantCulture)}");
        return new QubeAgentKeys(vmName, data, genKey) { Generation = gen };
    }

    // The value must fit QubesDB: a part whose sources do not fit is split into several keys (each one rule, the same match otherwise).
    private static void AddSourceParts(List<(string Name, List<string> Fields)> parts, string baseName, string vmName, List<string> head,
        IReadOnlyList<string>? sources, List<string> tail)
    {
        // the final value: "for=<name> gen=<16 hex> " + head + "src=..." + tail
        var other = "for=".Length + vmName.Length + " gen=".Length + 16 + 1 + head.Sum(h => h.Length + 1) + "src=".Length + tail.Sum(t => t.Length + 1);
        var chunks = SplitSources(sources, other);
        for (var i = 0; i < chunks.Count; i++)
        {
            var fields = new List<string>(head) { "src=" + (chunks[i] is { } c ? string.Join(",", c) : "any") };
            fields.AddRange(tail);
            parts.Add((i == 0 ? baseName : baseName + "." + i.ToString(CultureInfo.InvariantCulture), fields));
        }
    }

    /// <summary>The source lists of the keys of one part: one list when <paramref name="otherBytes"/> plus the sources fit a value, else halves, recursively.</summary>
    internal static List<IReadOnlyList<string>?> SplitSources(IReadOnlyList<string>? sources, int otherBytes)
    {
        var chunks = new List<IReadOnlyList<string>?>();
        void Split(IReadOnlyList<string>? list)
        {
            var length = otherBytes + (list is null ? 3 : list.Sum(s => s.Length + 1) - 1);
            if (length <= MaxValueBytes || list is null || list.Count < 2)
            {
                chunks.Add(list);
                return;
            }
            var half = list.Count / 2;
            Split(list.Take(half).ToList());
            Split(list.Skip(half).ToList());
        }
        Split(sources);
        return chunks;
    }

    private static List<string> Tail(PortForward f)
    {
        var tail = new List<string>();
        if (f.Expire is { } e) tail.Add("exp=" + e.ToString(CultureInfo.InvariantCulture));
        tail.Add("vm=" + f.VMName);
        return tail;
    }

    private static string Ingress(ChainHop hop) => hop.Ingress switch
    {
        HopIngressKind.OutsideInterfaces => "out",
        HopIngressKind.NamedInterface => "if:" + PortForward.ValidateInterface(hop.Interface),
        HopIngressKind.Uplink => "up",
        _ => "cl",
    };

    // port first (five digits) and protocol: the agent's key order is the rule order Export-QubeFirewallScript uses
    private static string ForwardId(PortForward f) =>
        $"{f.Port.ToString("D5", CultureInfo.InvariantCulture)}.{f.ProtocolText}.{Hash(f.VMName, 10)}";

    private static char FamilyDigit(NftFamily family) => family == NftFamily.Ip ? '4' : '6';

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static string Hash(string text, int hexChars) =>
        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..hexChars].ToLowerInvariant();

    private static AgentKey Key(string feature, string value)
    {
        Validate(feature, value);
        return new AgentKey(feature, value);
    }

    // ------------------------------------------------------------------ limits

    /// <summary>
    /// The limits a derived key must keep, checked before anything is sent (qubesd stores a feature before its
    /// vm-config check runs, and a value over 3,072 bytes makes the qube fail to start): the name after
    /// <c>vm-config.</c> 1-52 bytes, starting with a letter, of lowercase letters, digits, '.', '_' and '-'; the value
    /// at most 3,072 bytes of printable ASCII.
    /// </summary>
    public static void Validate(string feature, string value)
    {
        if (!feature.StartsWith(Prefix, StringComparison.Ordinal))
            throw new QubesFirewallException(ErrorIds.InvalidAgentKey, FailureKind.InvalidData, $"'{RuleGrammar.Printable(feature)}' is not an agent key ({Prefix}*).", feature);
        var name = feature[VmConfigPrefix.Length..];
        if (name.Length is 0 or > MaxNameBytes || !char.IsAsciiLetterLower(name[0]) || !name.All(c => char.IsAsciiLetterLower(c) || char.IsAsciiDigit(c) || c is '.' or '_' or '-'))
            throw new QubesFirewallException(ErrorIds.InvalidAgentKey, FailureKind.InvalidData,
                $"The agent key '{RuleGrammar.Printable(feature)}' does not fit QubesDB: the part after {VmConfigPrefix} must be 1 to {MaxNameBytes} bytes of lowercase letters, digits, '.', '_' and '-', starting with a letter.", feature);
        if (value.Length > MaxValueBytes || value.Any(c => c is < ' ' or > '~'))
            throw new QubesFirewallException(ErrorIds.InvalidAgentKey, FailureKind.InvalidData,
                $"The value of agent key '{feature}' does not fit QubesDB: at most {MaxValueBytes} bytes of printable ASCII ({value.Length} given).", feature);
    }

    // ------------------------------------------------------------------ changes

    /// <summary>
    /// The feature calls that bring one qube's agent keys to <paramref name="desired"/>, in the order the agent needs:
    /// data keys set (new or changed), stray keys removed, then <c>gen</c> set last. For an empty set: <c>gen</c> removed
    /// first (the agent then refuses the partial set it sees), then every data key. Nothing when the qube already has them.
    /// </summary>
    public static IReadOnlyList<AgentFeatureChange> Changes(Qube qube, QubeAgentKeys desired) => Changes(qube.Name, qube.Features, desired);

    private static List<AgentFeatureChange> Changes(string vmName, IReadOnlyDictionary<string, string> features, QubeAgentKeys desired)
    {
        if (desired.VMName != vmName) throw new ArgumentException("keys of another qube", nameof(desired));
        // the names first: only the agent keys' values are read (a template's own features never are)
        var current = Qube.FeaturesNamed(features, IsAgentFeature).ToDictionary(f => f.Key, f => f.Value, StringComparer.Ordinal);
        var changes = new List<AgentFeatureChange>();
        if (desired.IsEmpty)
        {
            if (current.TryGetValue(GenFeature, out var g)) changes.Add(new(vmName, GenFeature, null, g));
            foreach (var (name, value) in current.Where(c => c.Key != GenFeature).OrderBy(c => c.Key, StringComparer.Ordinal))
                changes.Add(new(vmName, name, null, value));
            return changes;
        }
        var wanted = desired.Data.ToDictionary(k => k.Feature, k => k.Value, StringComparer.Ordinal);
        foreach (var key in desired.Data)
        {
            var now = current.GetValueOrDefault(key.Feature);
            if (now != key.Value) changes.Add(new(vmName, key.Feature, key.Value, now));
        }
        foreach (var (name, value) in current.Where(c => c.Key != GenFeature && !wanted.ContainsKey(c.Key)).OrderBy(c => c.Key, StringComparer.Ordinal))
            changes.Add(new(vmName, name, null, value));
        var gen = current.GetValueOrDefault(GenFeature);
        // gen last; also rewritten when only data keys differed (repaired by hand), so the agent reads a whole set after them
        if (gen != desired.Gen!.Value || changes.Count > 0) changes.Add(new(vmName, GenFeature, desired.Gen.Value, gen));
        return changes;
    }

    /// <summary>
    /// The calls for every qube of the inventory (qubes in inventory order), re-deriving every qube's keys and removing strays:
    /// every qube's feature names are looked at (dom0's not: no plan gives it keys), the values of its agent keys only.
    /// </summary>
    public static IReadOnlyList<AgentFeatureChange> Changes(QubesInventory inventory, IReadOnlyDictionary<string, QubeAgentKeys> desired)
    {
        var changes = new List<AgentFeatureChange>();
        foreach (var name in inventory.Names)
        {
            var glance = inventory.Glance(name)!;
            var keys = desired.GetValueOrDefault(name) ?? QubeAgentKeys.Empty(name);
            if (glance.Class == QubeClass.AdminVM && keys.IsEmpty) continue;
            changes.AddRange(Changes(name, glance.Features, keys));
        }
        return changes;
    }
}
