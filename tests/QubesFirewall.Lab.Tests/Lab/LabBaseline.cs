using System.Text;

namespace QubesFirewall.Lab.Tests.Lab;

/// <summary>
/// The ruleset a Qubes R4.2+ qube has before any user or tool touches it, written for the lab from the documented
/// behaviour of core-agent-linux (network/qubes-antispoof.nft, qubes-ipv4.nft, qubes-ipv6.nft or
/// qubes-ipv6-disabled.nft, the per-vif anti-spoofing set elements added by vif-route-qubes, and the dnat-dns
/// chain written by qubes-setup-dnat-to-ns in network qubes). No flowtable: the lab kernel has none, and Qubes'
/// qubes-nat-accel table is only an accelerator.
/// </summary>
public static class LabBaseline
{
    /// <summary>Qubes' virtual DNS addresses (/qubes-netvm-primary-dns, /qubes-netvm-secondary-dns).</summary>
    public static readonly IReadOnlyList<string> VirtualDns = ["10.139.1.1", "10.139.1.2"];

    /// <summary>The whole baseline for one node as a single <c>nft -f</c> transaction, starting with <c>flush ruleset</c>.</summary>
    public static string Render(LabNode node)
    {
        var sb = new StringBuilder();
        sb.Append("# QubesFirewall lab baseline for ").Append(node.Name).Append('\n');
        sb.Append("flush ruleset\n");
        if (node.Kind != LabNodeKind.Qube)
        {
            return sb.ToString();
        }

        var clients = node.Clients;
        RenderIpv4(sb, clients);
        if (node.Ipv6Enabled)
        {
            RenderIpv6(sb, clients);
        }
        else
        {
            RenderIpv6Disabled(sb, clients);
        }

        if (node.ProvidesNetwork)
        {
            RenderDnatDns(sb, node);
        }

        return sb.ToString();
    }

    private static void RenderAntispoof(StringBuilder sb, string family, IReadOnlyList<(string Vif, string Addr)> downstream)
    {
        var addrType = family == "ip" ? "ipv4_addr" : "ipv6_addr";
        var saddr = family == "ip" ? "ip saddr" : "ip6 saddr";
        sb.Append("\t# anti-spoofing: a client may only send from its own address, on its own vif\n");
        sb.Append("\tset downstream {\n\t\ttype ").Append(addrType).Append('\n');
        if (downstream.Count > 0)
        {
            sb.Append("\t\telements = { ").Append(string.Join(", ", downstream.Select(d => d.Addr))).Append(" }\n");
        }

        sb.Append("\t}\n");
        sb.Append("\tset allowed {\n\t\ttype ifname . ").Append(addrType).Append('\n');
        if (downstream.Count > 0)
        {
            sb.Append("\t\telements = { ").Append(string.Join(", ", downstream.Select(d => $"\"{d.Vif}\" . {d.Addr}"))).Append(" }\n");
        }

        sb.Append("\t}\n");
        sb.Append("\tchain antispoof {\n");
        sb.Append("\t\tiifname . ").Append(saddr).Append(" @allowed accept\n");
        sb.Append("\t\tcounter drop\n");
        sb.Append("\t}\n");
        sb.Append("\tchain prerouting {\n");
        sb.Append("\t\ttype filter hook prerouting priority raw; policy accept;\n");
        sb.Append("\t\tiifgroup 2 goto antispoof\n");
        sb.Append("\t\t").Append(saddr).Append(" @downstream counter drop\n");
        sb.Append("\t}\n");
    }

    private static void RenderCommon(StringBuilder sb)
    {
        // outbound NAT at every hop; traffic toward clients keeps its source
        sb.Append("\tchain postrouting {\n");
        sb.Append("\t\ttype nat hook postrouting priority srcnat; policy accept;\n");
        sb.Append("\t\toifgroup 2 accept\n");
        sb.Append("\t\toifname \"lo\" accept\n");
        sb.Append("\t\tmasquerade\n");
        sb.Append("\t}\n");
    }

    private static void RenderForward(StringBuilder sb)
    {
        sb.Append("\tchain forward {\n");
        sb.Append("\t\ttype filter hook forward priority filter; policy accept;\n");
        sb.Append("\t\tjump custom-forward\n");
        sb.Append("\t\tct state invalid counter drop\n");
        sb.Append("\t\tct state established,related accept\n");
        sb.Append("\t\t# nothing new may enter a client's vif\n");
        sb.Append("\t\toifgroup 2 counter drop\n");
        sb.Append("\t}\n");
        sb.Append("\t# reserved for the user (and for this tool's jumps); Qubes never writes here\n");
        sb.Append("\tchain custom-input {\n\t}\n");
        sb.Append("\tchain custom-forward {\n\t}\n");
    }

    private static void RenderIpv4(StringBuilder sb, List<LabNode> clients)
    {
        sb.Append("table ip qubes {\n");
        RenderAntispoof(sb, "ip", clients.Select(c => (c.Vif!, c.Ip!)).ToList());
        RenderCommon(sb);
        sb.Append("\tchain input {\n");
        sb.Append("\t\ttype filter hook input priority filter; policy drop;\n");
        sb.Append("\t\tjump custom-input\n");
        sb.Append("\t\tct state invalid counter drop\n");
        sb.Append("\t\t# clients must not reach a DHCP client in their netvm\n");
        sb.Append("\t\tiifgroup 2 udp dport 68 counter drop\n");
        sb.Append("\t\tct state established,related accept\n");
        sb.Append("\t\tiifgroup 2 ip protocol icmp accept\n");
        sb.Append("\t\tiifname \"lo\" accept\n");
        sb.Append("\t\tiifgroup 2 counter reject with icmp type host-prohibited\n");
        sb.Append("\t\tcounter\n");
        sb.Append("\t}\n");
        RenderForward(sb);
        sb.Append("}\n");
    }

    private static void RenderIpv6(StringBuilder sb, List<LabNode> clients)
    {
        sb.Append("table ip6 qubes {\n");
        RenderAntispoof(sb, "ip6", clients.Where(c => c.Ip6 is not null).Select(c => (c.Vif!, c.Ip6!)).ToList());
        RenderCommon(sb);
        sb.Append("\t# from clients only ICMPv6 (minus router adverts and redirects) reaches the qube itself\n");
        sb.Append("\tchain _icmpv6 {\n");
        sb.Append("\t\tmeta l4proto != ipv6-icmp counter reject with icmpv6 type admin-prohibited\n");
        sb.Append("\t\ticmpv6 type { nd-router-advert, nd-redirect } counter drop\n");
        sb.Append("\t\taccept\n");
        sb.Append("\t}\n");
        sb.Append("\tchain input {\n");
        sb.Append("\t\ttype filter hook input priority filter; policy drop;\n");
        sb.Append("\t\tjump custom-input\n");
        sb.Append("\t\tct state invalid counter drop\n");
        sb.Append("\t\tct state established,related accept\n");
        sb.Append("\t\tiifgroup 2 goto _icmpv6\n");
        sb.Append("\t\tiifname \"lo\" accept\n");
        sb.Append("\t\tip6 saddr fe80::/64 ip6 daddr fe80::/64 udp dport 546 accept\n");
        sb.Append("\t\tmeta l4proto ipv6-icmp accept\n");
        sb.Append("\t\tcounter\n");
        sb.Append("\t}\n");
        RenderForward(sb);
        sb.Append("}\n");
    }

    private static void RenderIpv6Disabled(StringBuilder sb, List<LabNode> clients)
    {
        // the anti-spoofing part of ip6 qubes is loaded in every qube; the rest of IPv6 is shut
        sb.Append("table ip6 qubes {\n");
        RenderAntispoof(sb, "ip6", clients.Where(c => c.Ip6 is not null).Select(c => (c.Vif!, c.Ip6!)).ToList());
        sb.Append("}\n");
        sb.Append("table ip6 qbs-filter {\n");
        sb.Append("\tchain input {\n");
        sb.Append("\t\ttype filter hook input priority filter; policy drop;\n");
        sb.Append("\t\tiifname \"lo\" accept\n");
        sb.Append("\t\tcounter\n");
        sb.Append("\t}\n");
        sb.Append("\tchain forward {\n");
        sb.Append("\t\ttype filter hook forward priority filter; policy drop;\n");
        sb.Append("\t\tcounter\n");
        sb.Append("\t}\n");
        sb.Append("}\n");
    }

    private static void RenderDnatDns(StringBuilder sb, LabNode node)
    {
        // qubes-setup-dnat-to-ns: the virtual DNS addresses are mapped, in turn, to the qube's own resolvers
        sb.Append("table ip qubes {\n");
        sb.Append("\tchain dnat-dns {\n");
        sb.Append("\t\ttype nat hook prerouting priority dstnat; policy accept;\n");
        for (var i = 0; i < VirtualDns.Count; i++)
        {
            var dest = node.Resolvers[i % node.Resolvers.Count];
            sb.Append("\t\tip daddr ").Append(VirtualDns[i]).Append(" udp dport 53 dnat to ").Append(dest).Append('\n');
            sb.Append("\t\tip daddr ").Append(VirtualDns[i]).Append(" tcp dport 53 dnat to ").Append(dest).Append('\n');
        }

        sb.Append("\t}\n");
        sb.Append("}\n");
    }
}
