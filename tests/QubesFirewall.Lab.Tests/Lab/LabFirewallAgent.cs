using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace QubesFirewall.Lab.Tests.Lab;

/// <summary>
/// One QubesDB entry of a network qube, e.g. <c>/qubes-firewall/10.137.0.5/0000</c> =
/// <c>action=accept dst4=10.137.0.6/32 proto=tcp dstports=80-80</c>.
/// (The engine's QubesDbEntry also names the qube whose QubesDB holds it; here the network qube is the one passed to
/// <see cref="LabTopology.LoadFirewallAgent"/>.)
/// </summary>
public sealed record LabDbEntry(string Path, string Value)
{
    /// <summary>
    /// What qubesd writes for one client address: <c>policy</c> (always <c>drop</c> in qubesd), one numbered entry per
    /// rule, then the empty commit marker <c>/qubes-firewall/&lt;ip&gt;</c>.
    /// </summary>
    public static IReadOnlyList<LabDbEntry> ForClient(string clientIp, params string[] rules) =>
        ForClient(clientIp, "drop", rules);

    public static IReadOnlyList<LabDbEntry> ForClient(string clientIp, string policy, IEnumerable<string> rules)
    {
        var list = new List<LabDbEntry> { new($"/qubes-firewall/{clientIp}/policy", policy) };
        var n = 0;
        foreach (var rule in rules)
        {
            list.Add(new($"/qubes-firewall/{clientIp}/{n.ToString("D4", CultureInfo.InvariantCulture)}", rule));
            n++;
        }

        list.Add(new($"/qubes-firewall/{clientIp}", ""));
        return list;
    }
}

public enum LabAgentClientStatus
{
    /// <summary>The client's entries were translated and loaded.</summary>
    Applied,

    /// <summary>No entries for this client: it got the default firewall (accept everything).</summary>
    DefaultAccept,

    /// <summary>The entries could not be parsed (or a host name did not resolve): everything from the client is rejected, as the Qubes agent does.</summary>
    BlockedParseError,

    /// <summary>nft refused the translated rules: everything from the client is rejected, as the Qubes agent does.</summary>
    BlockedApplyError,
}

public sealed record LabAgentClientResult(string Address, string Chain, LabAgentClientStatus Status, string? Message, string Script);

public sealed record LabAgentResult(string NetQube, string InitScript, IReadOnlyList<LabAgentClientResult> Clients)
{
    public LabAgentClientResult For(string address) =>
        Clients.FirstOrDefault(c => c.Address == address) ?? throw new KeyNotFoundException($"agent result has no client {address}");
}

/// <summary>What the agent stand-in knows about the network qube it runs in.</summary>
public sealed record LabAgentContext(
    IReadOnlyList<string> Dns4,
    IReadOnlyList<string> Dns6,
    IReadOnlyList<string> Connected4,
    IReadOnlyList<string> Connected6,
    bool WithIpv6Table,
    IReadOnlyDictionary<string, IReadOnlyList<string>> Hosts);

public sealed class LabRuleParseException(string message) : Exception(message);

/// <summary>
/// Test-side stand-in for the qubes-firewall service (core-agent-linux qubesagent/firewall.py, NftablesWorker):
/// renders <c>table ip qubes-firewall</c> (and <c>ip6</c>) with the <c>forward</c> chain (policy drop, established and
/// non-vif traffic accepted, then per source address a jump to <c>qbs-&lt;ip with dashes&gt;</c>) and translates each
/// client's QubesDB entries into its chain the way the agent does. Pure text functions; loading is done by
/// <see cref="LabTopology.LoadFirewallAgent"/> in the same steps as the agent (init, per client: chain + jump, then rules,
/// and on failure the drop fallback).
/// </summary>
public static class LabFirewallAgent
{
    public const string Table = "qubes-firewall";

    private static readonly string[] SupportedOptions =
        ["action", "proto", "dst4", "dst6", "dsthost", "dstports", "specialtarget", "icmptype"];

    public static string ChainFor(string address) => "qbs-" + address.Replace('.', '-').Replace(':', '-');

    public static int FamilyOf(string address) => address.Contains(':') ? 6 : 4;

    private static string Fam(int family) => family == 6 ? "ip6" : "ip";

    /// <summary>Client addresses that have entries (the agent's list_targets), in order of first appearance.</summary>
    public static IReadOnlyList<string> Targets(IEnumerable<LabDbEntry> entries)
    {
        var result = new List<string>();
        foreach (var e in entries)
        {
            var parts = e.Path.Split('/');
            if (parts.Length >= 3 && parts[0] == "" && parts[1] == "qubes-firewall" && parts[2] != "" && !result.Contains(parts[2]))
            {
                result.Add(parts[2]);
            }
        }

        return result;
    }

    /// <summary>The agent's init(): both tables (ip6 only when asked), then the connected-ips anti-spoofing rules.
    /// Replaces any earlier copy of the tables in the same transaction.</summary>
    public static string RenderInit(LabAgentContext ctx)
    {
        var sb = new StringBuilder();
        sb.Append("# QubesFirewall lab: stand-in for the qubes-firewall service\n");
        foreach (var family in ctx.WithIpv6Table ? new[] { 4, 6 } : [4])
        {
            var fam = Fam(family);
            var dns = family == 6 ? ctx.Dns6 : ctx.Dns4;
            var connected = family == 6 ? ctx.Connected6 : ctx.Connected4;
            sb.Append($"add table {fam} {Table}\n");
            sb.Append($"delete table {fam} {Table}\n");
            sb.Append($"table {fam} {Table} {{\n");
            sb.Append($"\tset dns-addr {{\n\t\ttype ipv{family}_addr\n");
            if (dns.Count > 0)
            {
                sb.Append("\t\telements = { ").Append(string.Join(", ", dns)).Append(" }\n");
            }

            sb.Append("\t}\n");
            sb.Append("\t# one jump per client address, added as clients are handled\n");
            sb.Append("\tchain qubes-forward {\n\t}\n");
            sb.Append("\tchain forward {\n");
            sb.Append("\t\ttype filter hook forward priority filter; policy drop;\n");
            sb.Append("\t\tct state established,related accept\n");
            sb.Append("\t\tiifname != \"vif*\" accept\n");
            sb.Append("\t\tjump qubes-forward\n");
            sb.Append("\t}\n");
            var set = connected.Count > 0 ? "{ " + string.Join(", ", connected) + " }" : null;
            sb.Append("\t# a client address may only arrive from, and leave toward, a vif\n");
            sb.Append("\tchain prerouting {\n\t\ttype filter hook prerouting priority raw; policy accept;\n");
            if (set is not null)
            {
                sb.Append($"\t\tiifname != \"vif*\" {fam} saddr {set} drop\n");
            }

            sb.Append("\t}\n");
            sb.Append("\tchain postrouting {\n\t\ttype filter hook postrouting priority raw; policy accept;\n");
            if (set is not null)
            {
                sb.Append($"\t\toifname != \"vif*\" {fam} daddr {set} drop\n");
            }

            sb.Append("\t}\n");
            sb.Append("}\n");
        }

        return sb.ToString();
    }

    /// <summary>The agent's create_chain(): the empty per-client chain and its jump.</summary>
    public static string RenderCreateChain(string address)
    {
        var fam = Fam(FamilyOf(address));
        var chain = ChainFor(address);
        return $"add chain {fam} {Table} {chain}\nadd rule {fam} {Table} qubes-forward {fam} saddr {address} jump {chain}\n";
    }

    /// <summary>The agent's read_rules(): the client's numbered entries in key order, then the policy as a last rule.</summary>
    public static IReadOnlyList<IReadOnlyDictionary<string, string>> ReadRules(IEnumerable<LabDbEntry> entries, string address)
    {
        var prefix = $"/qubes-firewall/{address}/";
        string? policy = null;
        var numbered = new SortedDictionary<string, string>(StringComparer.Ordinal);
        foreach (var e in entries.Where(e => e.Path.StartsWith(prefix, StringComparison.Ordinal)))
        {
            var key = e.Path.Split('/')[3];
            if (key == "policy")
            {
                policy = e.Value;
                continue;
            }

            if (key.Length != 4 || !key.All(char.IsAsciiDigit))
            {
                throw new LabRuleParseException($"Unexpected non-rule found: {key}={e.Value}");
            }

            numbered[key] = e.Value;
        }

        if (policy is null)
        {
            throw new LabRuleParseException("No 'policy' defined");
        }

        var rules = new List<IReadOnlyDictionary<string, string>>();
        foreach (var value in numbered.Values)
        {
            var rule = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var word in value.Split(' '))
            {
                var kv = word.Split('=');
                if (kv.Length != 2)
                {
                    throw new LabRuleParseException($"Malformed rule '{value}'");
                }

                rule[kv[0]] = kv[1];
            }

            if (!rule.ContainsKey("action"))
            {
                throw new LabRuleParseException($"Rule '{value}' lacks action");
            }

            rules.Add(rule);
        }

        rules.Add(new Dictionary<string, string> { ["action"] = policy });
        return rules;
    }

    /// <summary>The agent's prepare_rules(): nft input that refills the client's chain.</summary>
    public static string RenderClientRules(string address, IReadOnlyList<IReadOnlyDictionary<string, string>> rules, LabAgentContext ctx)
    {
        var family = FamilyOf(address);
        var fam = Fam(family);
        var fullMask = family == 6 ? "/128" : "/32";
        var lines = new List<string>();
        foreach (var rule in rules)
        {
            var unsupported = rule.Keys.Except(SupportedOptions).ToList();
            if (unsupported.Count > 0)
            {
                throw new LabRuleParseException("Unsupported rule option(s): " + string.Join(", ", unsupported));
            }

            if (rule.ContainsKey("dst4") && family == 6)
            {
                throw new LabRuleParseException("IPv4 rule found for IPv6 address");
            }

            if (rule.ContainsKey("dst6") && family == 4)
            {
                throw new LabRuleParseException("dst6 rule found for IPv4 address");
            }

            var action = rule["action"] switch
            {
                "accept" => "accept",
                "drop" => family == 6 ? "reject with icmpv6 type admin-prohibited" : "reject with icmp type admin-prohibited",
                var other => throw new LabRuleParseException($"Invalid rule action {other}"),
            };

            var match = new StringBuilder();
            if (rule.TryGetValue("proto", out var proto))
            {
                match.Append(family == 4 ? $" ip protocol {proto}" : $" ip6 nexthdr {(proto == "icmp" ? "icmpv6" : proto)}");
            }

            if (rule.TryGetValue("dst4", out var dst4))
            {
                match.Append($" ip daddr {dst4}");
            }
            else if (rule.TryGetValue("dst6", out var dst6))
            {
                match.Append($" ip6 daddr {dst6}");
            }
            else if (rule.TryGetValue("dsthost", out var host))
            {
                var addrs = Resolve(host, family, ctx);
                match.Append($" {fam} daddr {{ {string.Join(", ", addrs.Select(a => a + fullMask))} }}");
            }

            string? ports = null;
            if (rule.TryGetValue("dstports", out var dstports))
            {
                var bounds = dstports.Split('-');
                ports = bounds.Distinct().Count() == 1 ? bounds[0] : dstports;
            }

            if (rule.TryGetValue("specialtarget", out var special) && special == "dns")
            {
                if (ports is not null && ports != "53")
                {
                    continue;
                }

                ports = "53";
                match.Append($" {fam} daddr @dns-addr");
            }

            if (rule.TryGetValue("icmptype", out var icmpType))
            {
                match.Append(family == 4 ? $" icmp type {icmpType}" : $" icmpv6 type {icmpType}");
            }

            if (ports is not null)
            {
                if (proto is null)
                {
                    // "tcp or udp port N" is two rules
                    lines.Add($"{match} tcp dport {ports} {action}");
                    lines.Add($"{match} udp dport {ports} {action}");
                }
                else
                {
                    lines.Add($"{match} {proto} dport {ports} {action}");
                }
            }
            else
            {
                lines.Add($"{match} {action}");
            }
        }

        var dns = family == 6 ? ctx.Dns6 : ctx.Dns4;
        var chain = ChainFor(address);
        var sb = new StringBuilder();
        sb.Append($"flush set {fam} {Table} dns-addr\n");
        if (dns.Count > 0)
        {
            sb.Append($"add element {fam} {Table} dns-addr {{ {string.Join(", ", dns)} }}\n");
        }

        sb.Append($"flush chain {fam} {Table} {chain}\n");
        sb.Append($"table {fam} {Table} {{\n\tchain {chain} {{\n");
        foreach (var line in lines)
        {
            sb.Append("\t\t").Append(line.TrimStart()).Append('\n');
        }

        sb.Append("\t}\n}\n");
        return sb.ToString();
    }

    /// <summary>The fallback the agent loads when a client's rules cannot be parsed or applied: reject everything.</summary>
    public static string RenderBlockAll(string address, LabAgentContext ctx) =>
        RenderClientRules(address, [new Dictionary<string, string> { ["action"] = "drop" }], ctx);

    /// <summary>The default firewall qubesd sends for a qube without rules (policy drop, one bare accept rule).</summary>
    public static IReadOnlyList<IReadOnlyDictionary<string, string>> DefaultAcceptRules { get; } =
        [new Dictionary<string, string> { ["action"] = "accept" }, new Dictionary<string, string> { ["action"] = "drop" }];

    private static IReadOnlyList<string> Resolve(string host, int family, LabAgentContext ctx)
    {
        var want = family == 6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork;
        if (ctx.Hosts.TryGetValue(host, out var addrs))
        {
            var matching = addrs.Where(a => IPAddress.TryParse(a, out var ip) && ip.AddressFamily == want).ToList();
            if (matching.Count > 0)
            {
                return matching;
            }
        }

        throw new LabRuleParseException($"Failed to resolve {host}: no address in the lab's host map");
    }
}
