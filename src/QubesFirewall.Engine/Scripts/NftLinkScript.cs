using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Scripts;

/// <summary>A declared link with the qubes it joins: the source, the destination and their shared network qube.</summary>
public sealed record ResolvedLink(InterVmLink Link, Qube From, Qube To, Qube NetVM)
{
    /// <summary>Both ends and the network qube have IPv6 (the <c>ipv6</c> feature on along the chain): the link opens over IPv6 too.</summary>
    public bool HasIPv6 => From.IPv6 is not null && To.IPv6 is not null && NetVM.IPv6 is not null;
}

/// <summary>Everything one qube does for the declared links: those it passes (as the shared network qube) and those it receives.</summary>
public sealed record QubeLinks(Qube Qube, IReadOnlyList<ResolvedLink> AsNetVM, IReadOnlyList<ResolvedLink> AsDestination)
{
    public bool IsEmpty => AsNetVM.Count == 0 && AsDestination.Count == 0;

    public int Count => AsNetVM.Count + AsDestination.Count;
}

/// <summary>
/// Generates, for one qube, the script that makes its ruleset carry exactly the declared inter-qube links
/// that concern it (Qubes R4.2 and later). The module owns two chains per family table, apart from the
/// port forwards' chains so that each script can rebuild its own from scratch:
/// <list type="bullet">
/// <item><c>qubesfw-link-forward</c>, jumped to from <c>custom-forward</c> in the shared network qube: accepts
/// new connections from the source's address (on a client interface, group 2, where Qubes' anti-spoofing only
/// lets a client send from its own address) to the destination's address and ports. Qubes' own
/// <c>forward</c> chain otherwise drops anything new toward a client's vif.</item>
/// <item><c>qubesfw-link-input</c>, jumped to from <c>custom-input</c> in the destination: accepts the same
/// traffic (Qubes' <c>input</c> chain drops it by default).</item>
/// </list>
/// The jumps carry the comment <c>qubesfirewall-link</c> and are replaced by handle, as the forward script does
/// with its own. IPv6 (<c>ip6 qubes</c>) is covered in qubes that have IPv6; the link's IPv6 rules exist only when
/// both ends and the network qube have IPv6 addresses. With nothing left, the chains and jumps are removed.
/// </summary>
public static class NftLinkScript
{
    public const string Marker = "qubesfirewall-link";
    public const string ForwardChain = "qubesfw-link-forward";
    public const string InputChain = "qubesfw-link-input";

    /// <summary>IPv4 always (an empty script still cleans up); IPv6 when the qube has IPv6 (only then does its <c>ip6 qubes</c> carry the custom chains).</summary>
    public static IReadOnlyList<NftFamily> Families(QubeLinks set) =>
        set.Qube.IPv6 is null ? [NftFamily.Ip] : [NftFamily.Ip, NftFamily.Ip6];

    public static string Render(QubeLinks set)
    {
        var name = set.Qube.Name;
        var sb = new StringBuilder(1024);
        sb.Append("# QubesFirewall inter-qube links ").Append(set.IsEmpty ? "removed from " : "in ").Append(name);
        if (set.Qube.IP is { } ip) sb.Append(" (").Append(ip).Append(')');
        sb.Append(", generated in dom0 from the qubesfirewall.link.*\n");
        sb.Append("# qube features. Enable-QubeInterVmNetwork and Disable-QubeInterVmNetwork rewrite it: do not edit.\n");
        foreach (var line in Summary(set)) sb.Append("#   ").Append(ShellQuote.CommentText(line)).Append('\n');
        if (set.IsEmpty) sb.Append("#   (none left: this removes the chains and jumps the module added)\n");
        sb.Append("# One nft transaction replaces the chains ").Append(ForwardChain).Append(" and ").Append(InputChain)
          .Append(" and their jumps (commented \"").Append(Marker).Append("\");\n");
        sb.Append("# nothing else is touched, and running it again changes nothing.\n");
        NftOwnedChains.AppendRun(sb, name, Families(set), Marker, Transaction(set), "inter-qube link");
        return sb.ToString();
    }

    /// <summary>Declare, flush, refill, jump, delete unused chains (after the run-time deletions of earlier jumps).</summary>
    public static string Transaction(QubeLinks set)
    {
        var sb = new StringBuilder(512);
        foreach (var family in Families(set))
        {
            var table = NftForwardScript.Table(family);
            var forward = set.AsNetVM.OrderBy(l => l.Link, LinkOrder).SelectMany(l => ForwardRules(l, family)).ToList();
            var input = set.AsDestination.OrderBy(l => l.Link, LinkOrder).SelectMany(l => InputRules(l, family)).ToList();
            NftOwnedChains.AppendTransaction(sb, table, Marker,
            [
                new(ForwardChain, forward, JumpFrom: "custom-forward"),
                new(InputChain, input, JumpFrom: "custom-input"),
            ]);
        }
        return sb.ToString();
    }

    public static IEnumerable<string> Summary(QubeLinks set)
    {
        foreach (var l in set.AsNetVM.OrderBy(l => l.Link, LinkOrder))
            yield return $"network qube of: {l.Link.Text}{(l.HasIPv6 ? " (IPv4 and IPv6)" : "")}";
        foreach (var l in set.AsDestination.OrderBy(l => l.Link, LinkOrder))
            yield return $"destination of: {l.Link.Text}{(l.HasIPv6 ? " (IPv4 and IPv6)" : "")}";
    }

    /// <summary>The accept in the shared network qube: from the source's client interface, to the destination.</summary>
    public static IEnumerable<string> ForwardRules(ResolvedLink l, NftFamily family)
    {
        if (Addresses(l, family) is not { } a) yield break;
        yield return $"iifgroup 2 {a.Key} saddr {a.From} {a.Key} daddr {a.To} {Ports(l.Link)} accept comment \"{Comment(l.Link)}\"";
    }

    /// <summary>The accept in the destination: from the source, to its own address.</summary>
    public static IEnumerable<string> InputRules(ResolvedLink l, NftFamily family)
    {
        if (Addresses(l, family) is not { } a) yield break;
        yield return $"{a.Key} saddr {a.From} {a.Key} daddr {a.To} {Ports(l.Link)} accept comment \"{Comment(l.Link)}\"";
    }

    /// <summary>The address pair for a family (addresses come from the inventory, computed from qids: never user text), or null.</summary>
    public static (string Key, string From, string To)? Addresses(ResolvedLink l, NftFamily family)
    {
        if (family == NftFamily.Ip)
            return l.From.IP is { } f && l.To.IP is { } t ? ("ip", Address(f, false), Address(t, false)) : null;
        return l.HasIPv6 ? ("ip6", Address(l.From.IPv6!, true), Address(l.To.IPv6!, true)) : null;
    }

    private static string Address(string value, bool v6)
    {
        var kind = v6 ? HostKind.IPv6 : HostKind.IPv4;
        if (!HostSpec.TryParse(value, out var host, out _) || host!.Kind != kind || host.PrefixLength != (v6 ? 128 : 32))
            throw new QubesFirewallException(ErrorIds.InvalidQubeAddress, FailureKind.InvalidData, $"'{RuleGrammar.Printable(value)}' is not a single {(v6 ? "IPv6" : "IPv4")} address.", value);
        return host.Value[..host.Value.IndexOf('/')];
    }

    private static string Ports(InterVmLink link) => link.Ports.IsAll
        ? $"meta l4proto {link.ProtocolText}"
        : $"{link.ProtocolText} dport {link.Ports}";

    private static string Comment(InterVmLink link) => $"link {link.From} to {link.To} {link.ProtocolText}/{link.Ports}";

    /// <summary>Rules in a stable order: source, destination, protocol, first port.</summary>
    public static readonly IComparer<InterVmLink> LinkOrder = Comparer<InterVmLink>.Create((a, b) =>
    {
        var c = string.CompareOrdinal(a.From, b.From);
        if (c != 0) return c;
        c = string.CompareOrdinal(a.To, b.To);
        if (c != 0) return c;
        c = a.Protocol.CompareTo(b.Protocol);
        if (c != 0) return c;
        c = a.Ports.First.CompareTo(b.Ports.First);
        return c != 0 ? c : a.Ports.Last.CompareTo(b.Ports.Last);
    });

    internal static string Port(int port) => port.ToString(CultureInfo.InvariantCulture);
}
