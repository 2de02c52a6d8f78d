using System.Globalization;
using System.Text;

namespace QubesFirewall.Engine.Model;

/// <summary>
/// The qvm-firewall / Admin API text form of a rule:
/// <c>action=accept expire=1900000000 dst4=10.1.2.0/24 proto=tcp dstports=443-443 comment=intranet https</c>.
/// </summary>
public static class RuleText
{
    /// <summary>
    /// Formats as qubesd's <c>admin.vm.firewall.Get</c> returns a rule: action, expire, host, proto,
    /// specialtarget, dstports (always a range), icmptype, comment last.
    /// </summary>
    public static string Format(FirewallRule rule)
    {
        var sb = new StringBuilder(64);
        sb.Append("action=").Append(ActionText(rule.Action));
        if (rule.Expire is { } expire) sb.Append(" expire=").Append(expire.ToString(CultureInfo.InvariantCulture));
        AppendMatch(sb, rule);
        if (rule.Comment is { Length: > 0 } comment) sb.Append(" comment=").Append(comment);
        return sb.ToString();
    }

    /// <summary>The value qubesd writes into QubesDB for a rule: matching properties only, no expire or comment.</summary>
    public static string FormatForQubesDb(FirewallRule rule)
    {
        var sb = new StringBuilder(64);
        sb.Append("action=").Append(ActionText(rule.Action));
        AppendMatch(sb, rule);
        return sb.ToString();
    }

    private static void AppendMatch(StringBuilder sb, FirewallRule rule)
    {
        if (rule.DstHost is { } host) sb.Append(' ').Append(host.TextKey).Append('=').Append(host.Value);
        else if (rule.RawDstHost is { } raw) sb.Append(" dsthost=").Append(raw);
        if (rule.Protocol is { } proto) sb.Append(" proto=").Append(ProtocolText(proto));
        if (rule.SpecialTarget is not null) sb.Append(" specialtarget=dns");
        if (rule.DstPorts is { } ports) sb.Append(" dstports=").Append(ports.RangeText);
        if (rule.IcmpType is { } icmp) sb.Append(" icmptype=").Append(icmp.ToString(CultureInfo.InvariantCulture));
    }

    /// <summary>The action keyword as stored and typed (accept, drop), or null for anything else.</summary>
    public static RuleAction? ParseAction(string value) => value switch
    {
        "accept" => RuleAction.Accept,
        "drop" => RuleAction.Drop,
        _ => null,
    };

    /// <summary>The proto keyword as stored and typed (tcp, udp, icmp), or null for anything else.</summary>
    public static RuleProtocol? ParseProtocol(string value) => value switch
    {
        "tcp" => RuleProtocol.Tcp,
        "udp" => RuleProtocol.Udp,
        "icmp" => RuleProtocol.Icmp,
        _ => null,
    };

    public static string ActionText(RuleAction action) => action == RuleAction.Accept ? "accept" : "drop";

    public static string ProtocolText(RuleProtocol protocol) => protocol switch
    {
        RuleProtocol.Tcp => "tcp",
        RuleProtocol.Udp => "udp",
        _ => "icmp",
    };

    /// <summary>
    /// Parses one rule line as qubesd does (any key order, <c>comment=</c> last and taking the rest
    /// of the line; <c>dsthost</c>, <c>dst4</c>, <c>dst6</c> accepted; <c>expire=+N</c> is N seconds from
    /// <paramref name="now"/>, as qvm-firewall converts it) and validates it strictly.
    /// </summary>
    public static FirewallRule Parse(string line, DateTimeOffset? now = null)
    {
        ArgumentNullException.ThrowIfNull(line);
        string optionsPart = line;
        string? comment = null;
        var commentAt = FindCommentKey(line);
        if (commentAt >= 0)
        {
            optionsPart = line[..commentAt];
            comment = line[(commentAt + "comment=".Length)..];
            if (comment.Length == 0) comment = null;
        }

        RuleAction? action = null;
        RuleProtocol? proto = null;
        string? host = null, ports = null;
        int? icmp = null;
        SpecialTarget? special = null;
        long? expire = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);

        foreach (var word in optionsPart.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries))
        {
            var eq = word.IndexOf('=');
            if (eq <= 0) throw Bad(line, $"'{RuleGrammar.Printable(word)}' is not a key=value word");
            var key = word[..eq];
            var value = word[(eq + 1)..];
            var slot = key is "dst4" or "dst6" or "dsthost" ? "dsthost" : key;
            if (!seen.Add(slot)) throw Bad(line, $"'{RuleGrammar.Printable(slot)}' is given twice");
            // qvm-firewall turns expire=+SECONDS into a time before qubesd sees it; allow that '+'.
            foreach (var c in key == "expire" && value.StartsWith('+') ? value[1..] : value)
                if (!RuleGrammar.IsSafeValueChar(c)) throw Bad(line, $"character {RuleGrammar.Describe(c)} in {RuleGrammar.Printable(key)} is not allowed");
            switch (key)
            {
                case "action":
                    action = ParseAction(value)
                        ?? throw Bad(line, $"action must be accept or drop, not '{value}' (qubesd knows no other action)");
                    break;
                case "proto":
                    proto = ParseProtocol(value)
                        ?? throw Bad(line, $"proto must be tcp, udp or icmp, not '{value}'");
                    break;
                case "dsthost":
                case "dst4":
                case "dst6":
                    if (!HostSpec.TryParse(value, out var parsed, out var hostError)) throw Bad(line, $"{key}: {hostError}");
                    if (key == "dst4" && parsed!.Kind != HostKind.IPv4) throw Bad(line, "dst4 takes an IPv4 address or network");
                    if (key == "dst6" && parsed!.Kind != HostKind.IPv6) throw Bad(line, "dst6 takes an IPv6 address or network");
                    host = value;
                    break;
                case "dstports":
                    if (!PortRange.TryParse(value, out _, out var portError)) throw Bad(line, $"dstports: {portError}");
                    ports = value;
                    break;
                case "icmptype":
                    if (value.Length is 0 or > 3 || !value.All(char.IsAsciiDigit)) throw Bad(line, "icmptype must be a number 0-255");
                    icmp = int.Parse(value, CultureInfo.InvariantCulture);
                    if (icmp > 255) throw Bad(line, "icmptype must be a number 0-255");
                    break;
                case "specialtarget":
                    if (value != "dns") throw Bad(line, $"specialtarget must be dns, not '{value}'");
                    special = SpecialTarget.Dns;
                    break;
                case "expire":
                    expire = ParseExpire(value, now, line);
                    break;
                default:
                    throw Bad(line, $"unknown option '{RuleGrammar.Printable(key)}' (known: action, dsthost, dst4, dst6, proto, dstports, icmptype, specialtarget, expire, comment)");
            }
        }

        if (action is null) throw Bad(line, "action= is required");
        try
        {
            return FirewallRule.Create(action.Value, proto, host, ports, icmp, special, expire, comment);
        }
        catch (QubesFirewallException ex)
        {
            throw new QubesFirewallException(ex.ErrorId, FailureKind.InvalidArgument, $"Invalid rule '{RuleGrammar.Printable(line)}': {ex.Message}", line);
        }
    }

    public static bool TryParse(string line, out FirewallRule? rule, out string error, DateTimeOffset? now = null)
    {
        try
        {
            rule = Parse(line, now);
            error = "";
            return true;
        }
        catch (QubesFirewallException ex)
        {
            rule = null;
            error = ex.Message;
            return false;
        }
    }

    private static long ParseExpire(string value, DateTimeOffset? now, string line)
    {
        var relative = value.StartsWith('+');
        var digits = relative ? value[1..] : value;
        if (digits.Length is 0 or > 12 || !digits.All(char.IsAsciiDigit))
            throw Bad(line, "expire must be a Unix time in seconds, or +SECONDS from now");
        var n = long.Parse(digits, CultureInfo.InvariantCulture);
        return relative ? (now ?? DateTimeOffset.UtcNow).ToUnixTimeSeconds() + n : n;
    }

    // "comment=" at the start of a word: it takes the rest of the line, spaces included.
    private static int FindCommentKey(string line)
    {
        var i = 0;
        while ((i = line.IndexOf("comment=", i, StringComparison.Ordinal)) >= 0)
        {
            if (i == 0 || line[i - 1] is ' ' or '\t') return i;
            i++;
        }
        return -1;
    }

    private static QubesFirewallException Bad(string line, string why) =>
        QubesFirewallException.Invalid("InvalidRuleText", $"Invalid rule '{RuleGrammar.Printable(line)}': {why}.", line);
}
