using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Scripts;

/// <summary>An nftables address family the generator writes for (table <c>ip qubes</c> or <c>ip6 qubes</c>).</summary>
public enum NftFamily { Ip, Ip6 }

/// <summary>Everything one qube does for the declared forwards: the hops it is on, the forwards it is the target of.</summary>
public sealed record QubeForwards(Qube Qube, IReadOnlyList<(NetworkChain Chain, ChainHop Hop)> AsHop, IReadOnlyList<NetworkChain> AsTarget)
{
    public bool IsEmpty => AsHop.Count == 0 && AsTarget.Count == 0;

    public int Count => AsHop.Count + AsTarget.Count;
}

/// <summary>
/// Generates, for one qube, the script that makes its nftables ruleset carry exactly the declared
/// forwards that cross it (Qubes R4.2 and later), from scratch each time.
/// <para>The module owns three chains per family table (<c>ip qubes</c>, later <c>ip6 qubes</c>):</para>
/// <list type="bullet">
/// <item><c>qubesfw-dnat</c>: its own base chain, <c>type nat hook prerouting priority dstnat</c>. Not a
/// jump from Qubes' <c>dnat-dns</c>: qubes-setup-dnat-to-ns deletes and recreates that chain each time
/// the DNS servers change, which would drop the jump. Rules there match only traffic addressed to this
/// qube (its Qubes address, or any local address on the outside), so nothing else is translated.</item>
/// <item><c>qubesfw-forward</c>: jumped to from the user chain <c>custom-forward</c> (first in Qubes'
/// <c>forward</c>), accepting only connections this qube translated (<c>ct status dnat</c>).</item>
/// <item><c>qubesfw-input</c>: jumped to from <c>custom-input</c> in the target, accepting the port.</item>
/// </list>
/// <para>The script reads the table once (<c>nft -a list table ip qubes</c>) to find the handles of earlier
/// jumps (rules commented <c>"qubesfirewall"</c> in custom-forward and custom-input), then pipes one
/// transaction into <c>nft -f -</c>: delete those jumps, declare the three chains, flush them, refill the
/// ones in use, insert the jumps again at the top of the custom chains and delete the chains not in use.
/// Either all of it applies or nothing does; run again, it leaves the same ruleset; the user's own rules
/// in the custom chains are never touched. With nothing left to forward, it removes the chains and the
/// jumps, giving back the ruleset as it was before the first forward.</para>
/// </summary>
public static class NftForwardScript
{
    public const string Marker = "qubesfirewall";
    public const string DnatChain = "qubesfw-dnat";
    public const string ForwardChain = "qubesfw-forward";
    public const string InputChain = "qubesfw-input";
    public const string HeredocDelimiter = "QUBESFW_NFT";

    public static string Table(NftFamily family) => family == NftFamily.Ip ? "ip qubes" : "ip6 qubes";

    private static string AddrKeyword(NftFamily family) => family == NftFamily.Ip ? "ip" : "ip6";

    /// <summary>
    /// The families a qube's script covers: IPv4 always (so an empty script still cleans up); IPv6 whenever
    /// the qube has an IPv6 address, that is when Qubes loaded its <c>ip6 qubes</c> table with the custom
    /// chains (qubes-iptables loads the IPv6-disabled ruleset otherwise, without them). Covering IPv6 even
    /// when no forward needs it is what removes the IPv6 chains once the last IPv6 forward is gone.
    /// </summary>
    public static IReadOnlyList<NftFamily> Families(QubeForwards set) =>
        set.Qube.IPv6 is null ? [NftFamily.Ip] : [NftFamily.Ip, NftFamily.Ip6];

    /// <summary>
    /// The families a forward is generated for: IPv4 unless its sources are all IPv6; IPv6 when the whole
    /// chain has IPv6 (<see cref="NetworkChain.HasIPv6"/>) unless its sources are all IPv4.
    /// </summary>
    public static IReadOnlyList<NftFamily> Families(NetworkChain chain)
    {
        var list = new List<NftFamily>(2);
        if (TrySources(chain.Forward, NftFamily.Ip, out _)) list.Add(NftFamily.Ip);
        if (chain.HasIPv6 && TrySources(chain.Forward, NftFamily.Ip6, out _)) list.Add(NftFamily.Ip6);
        return list;
    }

    /// <summary><c>IPv4</c>, <c>IPv4 and IPv6</c>, <c>IPv6</c> or <c>none</c>.</summary>
    public static string FamilyText(IReadOnlyList<NftFamily> families) => families.Count switch
    {
        0 => "none",
        2 => "IPv4 and IPv6",
        _ => families[0] == NftFamily.Ip ? "IPv4" : "IPv6",
    };

    /// <summary>The whole script for one qube (shell, runs as root in that qube).</summary>
    public static string Render(QubeForwards set) => Render(set, Transaction(set));

    /// <summary>The script around a transaction already rendered by <see cref="Transaction"/> for the same set.</summary>
    public static string Render(QubeForwards set, string transaction)
    {
        var name = set.Qube.Name;
        var sb = new StringBuilder(2048);
        sb.Append("# QubesFirewall port forwards ").Append(set.IsEmpty ? "removed from " : "in ").Append(name);
        if (set.Qube.IP is { } ip) sb.Append(" (").Append(ip).Append(')');
        sb.Append(", generated in dom0 from the qubesfirewall.forward.*\n");
        sb.Append("# qube features. Add-QubePortForward and Remove-QubePortForward rewrite it: do not edit.\n");
        foreach (var line in Summary(set)) sb.Append("#   ").Append(ShellQuote.CommentText(line)).Append('\n');
        if (set.IsEmpty) sb.Append("#   (none left: this removes the chains and jumps the module added)\n");
        var families = Families(set);
        sb.Append("# One nft transaction replaces the chains ").Append(DnatChain).Append(", ").Append(ForwardChain).Append(" and ").Append(InputChain).Append('\n');
        sb.Append("# of ").Append(families.Count == 1 ? "table ip qubes" : "tables ip qubes and ip6 qubes").Append(" and their jumps (commented \"").Append(Marker).Append("\") in custom-forward and custom-input;\n");
        sb.Append("# nothing else is touched, and running it again changes nothing.\n");
        NftOwnedChains.AppendRun(sb, name, families, Marker, transaction, "port forward");
        return sb.ToString();
    }

    /// <summary>
    /// The static part of the transaction (after the deletions of earlier jumps, which the script adds at
    /// run time from the handles it read): declare, flush, refill, jump, delete unused chains.
    /// </summary>
    public static string Transaction(QubeForwards set)
    {
        var sb = new StringBuilder(1024);
        foreach (var family in Families(set))
        {
            var table = Table(family);
            var dnat = set.AsHop.OrderBy(h => h.Chain.Forward, ForwardOrder).SelectMany(h => DnatRules(h.Chain, h.Hop, family)).ToList();
            var forward = set.AsHop.OrderBy(h => h.Chain.Forward, ForwardOrder).SelectMany(h => ForwardRules(h.Chain, h.Hop, family)).ToList();
            var input = set.AsTarget.OrderBy(c => c.Forward, ForwardOrder).SelectMany(c => InputRules(c, family)).ToList();
            NftOwnedChains.AppendTransaction(sb, table, Marker,
            [
                new(DnatChain, dnat, Hook: "type nat hook prerouting priority dstnat; policy accept;"),
                new(ForwardChain, forward, JumpFrom: "custom-forward"),
                new(InputChain, input, JumpFrom: "custom-input"),
            ]);
        }
        return sb.ToString();
    }

    /// <summary>One line per forward for the script's header: role, forward, sources.</summary>
    public static IEnumerable<string> Summary(QubeForwards set)
    {
        foreach (var (chain, hop) in set.AsHop.OrderBy(h => h.Chain.Forward, ForwardOrder))
            yield return $"hop {hop.Index + 1} of {chain.Hops.Count}: {Describe(chain.Forward)} ({chain.Path}){FamilyNote(chain)}";
        foreach (var chain in set.AsTarget.OrderBy(c => c.Forward, ForwardOrder))
            yield return $"target: {Describe(chain.Forward)} ({chain.Path}){FamilyNote(chain)}";
    }

    // IPv4-only forwards say nothing (as before IPv6 existed); the others name their families
    private static string FamilyNote(NetworkChain chain) => Families(chain) is var f && f.Count == 1 && f[0] == NftFamily.Ip ? "" : " over " + FamilyText(Families(chain));

    /// <summary><c>tcp/443 -> work:8443, external, from 192.168.1.0/24, until 2030-03-17 17:46:40Z (web)</c></summary>
    public static string Describe(PortForward f)
    {
        var sb = new StringBuilder(f.Text);
        sb.Append(", ").Append(f.Type == ForwardType.External ? "external" : "internal");
        sb.Append(f.AllowFrom.Count == 0 ? ", from anywhere" : ", from " + string.Join(" ", f.AllowFrom.Select(h => h.Value)));
        if (f.Interface is { } i) sb.Append(", on ").Append(i);
        if (f.ExpireTime is { } t) sb.Append(", until ").Append(t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture));
        if (f.Comment is { } c) sb.Append(" (").Append(c).Append(')');
        return sb.ToString();
    }

    // -------------------------------------------------------------------- rules

    /// <summary>Translation at one hop: to the next hop's address, or at the last hop to the target's address and port.</summary>
    public static IEnumerable<string> DnatRules(NetworkChain chain, ChainHop hop, NftFamily family)
    {
        if (NextAddress(hop, family) is not { } next || !TrySources(chain.Forward, family, out var sources)) yield break;
        var f = chain.Forward;
        var to = Address(next, family);
        if (hop.IsLast && f.TargetPort != f.Port) to = (family == NftFamily.Ip ? to : "[" + to + "]") + ":" + Port(f.TargetPort);
        yield return Join(Ingress(hop), Destination(hop, family), sources, $"{f.ProtocolText} dport {Port(f.Port)}", Time(f),
            $"dnat to {to}", Comment(f));
    }

    /// <summary>The forward accept at one hop: only what this hop translated, from the allowed sources, on the way in.</summary>
    public static IEnumerable<string> ForwardRules(NetworkChain chain, ChainHop hop, NftFamily family)
    {
        if (NextAddress(hop, family) is not { } next || !TrySources(chain.Forward, family, out var sources)) yield break;
        var f = chain.Forward;
        var port = hop.IsLast ? f.TargetPort : f.Port;
        yield return Join(Ingress(hop), sources, $"{AddrKeyword(family)} daddr {Address(next, family)}", $"{f.ProtocolText} dport {Port(port)}",
            "ct status dnat", Time(f), "accept", Comment(f));
    }

    /// <summary>The input accept in the target: the port, from its uplink, from the allowed sources.</summary>
    public static IEnumerable<string> InputRules(NetworkChain chain, NftFamily family)
    {
        var target = family == NftFamily.Ip ? chain.Target.IP : chain.HasIPv6 ? chain.Target.IPv6 : null;
        if (target is null || !TrySources(chain.Forward, family, out var sources)) yield break;
        var f = chain.Forward;
        yield return Join("iifgroup 1", sources, $"{AddrKeyword(family)} daddr {Address(target, family)}", $"{f.ProtocolText} dport {Port(f.TargetPort)}",
            Time(f), "accept", Comment(f));
    }

    // The next address in a family: null when the forward is not generated for it at this hop.
    public static string? NextAddress(ChainHop hop, NftFamily family) =>
        family == NftFamily.Ip ? (IsFamily(hop.NextAddress, family) ? hop.NextAddress : null) : hop.NextAddress6;

    public static string? LocalAddress(ChainHop hop, NftFamily family) =>
        family == NftFamily.Ip ? hop.LocalAddress : hop.LocalAddress6;

    /// <summary>
    /// An address as it goes into a rule: parsed in its family and written back canonically. Addresses come
    /// from qubes.xml or qubesd (an <c>ip</c>/<c>ip6</c> property may hold anything), so they are checked here,
    /// where they reach nft and the shell.
    /// </summary>
    public static string Address(string value, NftFamily family)
    {
        var wanted = family == NftFamily.Ip ? System.Net.Sockets.AddressFamily.InterNetwork : System.Net.Sockets.AddressFamily.InterNetworkV6;
        var ok = value.Length <= 45 && value.All(c => char.IsAsciiHexDigit(c) || c is '.' or ':')
            && System.Net.IPAddress.TryParse(value, out var ip) && ip.AddressFamily == wanted
            && (family == NftFamily.Ip6 || value.Count(c => c == '.') == 3);
        if (!ok)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidAddress,
                $"'{RuleGrammar.Printable(value)}' is not an {(family == NftFamily.Ip ? "IPv4" : "IPv6")} address; a qube's address must be one before it can go into a rule.", value);
        var text = System.Net.IPAddress.Parse(value).ToString();
        return family == NftFamily.Ip ? text : text.ToLowerInvariant();
    }

    private static string Ingress(ChainHop hop) => hop.Ingress switch
    {
        HopIngressKind.OutsideInterfaces => "iifname != \"vif*\" iifname != \"lo\"",
        HopIngressKind.NamedInterface => $"iifname \"{PortForward.ValidateInterface(hop.Interface)}\"",
        HopIngressKind.Uplink => "iifgroup 1",
        _ => "iifgroup 2",
    };

    private static string Destination(ChainHop hop, NftFamily family) =>
        LocalAddress(hop, family) is { } local ? $"{AddrKeyword(family)} daddr {Address(local, family)}" : "fib daddr type local";

    /// <summary>
    /// The source match for a family: empty for "any source"; false when the forward allows sources but
    /// none of this family (then it must not match at all in this family: no rule, never "any").
    /// Networks inside another listed network are left out (older nft refuses overlapping set elements).
    /// </summary>
    private static bool TrySources(PortForward f, NftFamily family, out string match)
    {
        match = "";
        if (!TrySourceList(f, family, out var kept)) return false;
        if (kept is null) return true;
        var key = $"{AddrKeyword(family)} saddr";
        match = kept.Count == 1 ? $"{key} {kept[0]}" : $"{key} {{ {string.Join(", ", kept)} }}";
        return true;
    }

    /// <summary>
    /// The sources of a forward in one family, as they go into a rule: null for "any source"; false when the
    /// forward allows sources but none of this family (then it must not match at all in this family: no rule,
    /// never "any"). Networks inside another listed network are left out (older nft refuses overlapping set
    /// elements); a single host is written without its prefix.
    /// </summary>
    public static bool TrySourceList(PortForward f, NftFamily family, out IReadOnlyList<string>? sources)
    {
        sources = null;
        if (f.AllowFrom.Count == 0) return true;
        var kind = family == NftFamily.Ip ? HostKind.IPv4 : HostKind.IPv6;
        var nets = f.AllowFrom.Where(h => h.Kind == kind).ToList();
        if (nets.Count == 0) return false;
        sources = nets.Where(n => !nets.Any(o => !ReferenceEquals(o, n) && o.PrefixLength < n.PrefixLength && PortForward.Contains(o, n.Value[..n.Value.IndexOf('/')])))
            .Select(n => n.PrefixLength == (kind == HostKind.IPv4 ? 32 : 128) ? n.Value[..n.Value.IndexOf('/')] : n.Value)
            .ToList();
        return true;
    }

    private static string Time(PortForward f) => f.Expire is { } e ? "meta time < " + e.ToString(CultureInfo.InvariantCulture) : "";

    private static string Comment(PortForward f) => $"comment \"{f.ProtocolText}/{Port(f.Port)} to {f.VMName}\"";

    private static bool IsFamily(string address, NftFamily family) => address.Contains(':') == (family == NftFamily.Ip6);

    private static string Join(params string[] parts) => string.Join(" ", parts.Where(p => p.Length > 0));

    private static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);

    /// <summary>Rules in a stable order: port, protocol, target.</summary>
    public static readonly IComparer<PortForward> ForwardOrder = Comparer<PortForward>.Create((a, b) =>
    {
        var c = a.Port.CompareTo(b.Port);
        if (c != 0) return c;
        c = a.Protocol.CompareTo(b.Protocol);
        return c != 0 ? c : string.CompareOrdinal(a.VMName, b.VMName);
    });
}
