using System.Buffers;
using System.Globalization;

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
        var text = new TextWriter(stackalloc char[TextWriter.StackSize]);
        try
        {
            Write(ref text, rule);
            return new string(text.Written);
        }
        finally
        {
            text.Dispose();
        }
    }

    /// <summary>The value qubesd writes into QubesDB for a rule: matching properties only, no expire or comment.</summary>
    public static string FormatForQubesDb(FirewallRule rule)
    {
        var text = new TextWriter(stackalloc char[TextWriter.StackSize]);
        try
        {
            text.Append("action="); text.Append(ActionText(rule.Action));
            WriteMatch(ref text, rule);
            return new string(text.Written);
        }
        finally
        {
            text.Dispose();
        }
    }

    // The text of Format, written into a buffer.
    private static void Write(ref TextWriter text, FirewallRule rule)
    {
        text.Append("action="); text.Append(ActionText(rule.Action));
        if (rule.Expire is { } expire) { text.Append(" expire="); text.Append(expire); }
        WriteMatch(ref text, rule);
        if (rule.Comment is { Length: > 0 } comment) { text.Append(" comment="); text.Append(comment); }
    }

    private static void WriteMatch(ref TextWriter text, FirewallRule rule)
    {
        if (rule.DstHost is { } host) { text.Append(" "); text.Append(host.TextKey); text.Append("="); text.Append(host.Value); }
        else if (rule.RawDstHost is { } raw) { text.Append(" dsthost="); text.Append(raw); }
        if (rule.Protocol is { } proto) { text.Append(" proto="); text.Append(ProtocolText(proto)); }
        if (rule.SpecialTarget is not null) { text.Append(" specialtarget=dns"); }
        if (rule.DstPorts is { } ports) { text.Append(" dstports="); text.Append(ports.First); text.Append("-"); text.Append(ports.Last); }
        if (rule.IcmpType is { } icmp) { text.Append(" icmptype="); text.Append(icmp); }
    }

    /// <summary>
    /// Rules are the same for this comparer when their texts (<see cref="Format"/>) are, compared without making the text of
    /// a rule that has none yet: an Add of 10,000 new rules checks each against the list and the others without 10,000
    /// new strings kept to its end.
    /// </summary>
    internal sealed class SameTextComparer : IEqualityComparer<FirewallRule>
    {
        public static readonly SameTextComparer Instance = new();

        public bool Equals(FirewallRule? x, FirewallRule? y)
        {
            if (ReferenceEquals(x, y)) return true;
            if (x is null || y is null) return false;
            if (x.TextIfMade is { } a && y.TextIfMade is { } b) return string.Equals(a, b, StringComparison.Ordinal);
            var left = new TextWriter(stackalloc char[TextWriter.StackSize]);
            var right = new TextWriter(stackalloc char[TextWriter.StackSize]);
            try
            {
                return TextOf(ref left, x).SequenceEqual(TextOf(ref right, y));
            }
            finally
            {
                left.Dispose();
                right.Dispose();
            }
        }

        public int GetHashCode(FirewallRule rule)
        {
            var text = new TextWriter(stackalloc char[TextWriter.StackSize]);
            try
            {
                return string.GetHashCode(TextOf(ref text, rule), StringComparison.Ordinal);
            }
            finally
            {
                text.Dispose();
            }
        }

        private static ReadOnlySpan<char> TextOf(ref TextWriter text, FirewallRule rule)
        {
            if (rule.TextIfMade is { } made) return made;
            Write(ref text, rule);
            return text.Written;
        }
    }

    /// <summary>Characters appended into a stack buffer, then into one rented from the shared pool when it is full.</summary>
    private ref struct TextWriter
    {
        public const int StackSize = 256;

        private Span<char> _chars;
        private char[]? _rented;
        private int _length;

        public TextWriter(Span<char> initial)
        {
            _chars = initial;
            _rented = null;
            _length = 0;
        }

        public readonly ReadOnlySpan<char> Written => _chars[.._length];

        public void Append(ReadOnlySpan<char> text)
        {
            if (text.Length > _chars.Length - _length) Grow(text.Length);
            text.CopyTo(_chars[_length..]);
            _length += text.Length;
        }

        public void Append(long number)
        {
            int written;
            while (!number.TryFormat(_chars[_length..], out written, default, CultureInfo.InvariantCulture)) Grow(20);
            _length += written;
        }

        private void Grow(int more)
        {
            var larger = ArrayPool<char>.Shared.Rent(Math.Max(_chars.Length * 2, _length + more));
            _chars[.._length].CopyTo(larger);
            if (_rented is not null) ArrayPool<char>.Shared.Return(_rented);
            _rented = larger;
            _chars = larger;
        }

        public void Dispose()
        {
            if (_rented is not null) ArrayPool<char>.Shared.Return(_rented);
            _rented = null;
        }
    }

    /// <summary>The action keyword as stored and typed (accept, drop), or null for anything else.</summary>
    public static RuleAction? ParseAction(ReadOnlySpan<char> value) => value switch
    {
        "accept" => RuleAction.Accept,
        "drop" => RuleAction.Drop,
        _ => null,
    };

    /// <summary>The proto keyword as stored and typed (tcp, udp, icmp), or null for anything else.</summary>
    public static RuleProtocol? ParseProtocol(ReadOnlySpan<char> value) => value switch
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
        // One pass over the line without splitting it: a pipeline of 10,000 lines parses each once, and
        // the allocations (words, a set of keys) were most of the time.
        string? comment = null;

        RuleAction? action = null;
        RuleProtocol? proto = null;
        HostSpec? host = null;
        PortRange? ports = null;
        int? icmp = null;
        SpecialTarget? special = null;
        long? expire = null;
        var seen = 0; // one bit per option slot (dsthost, dst4 and dst6 share one)

        var options = line.AsSpan();
        var position = 0;
        while (position < options.Length)
        {
            if (options[position] is ' ' or '\t') { position++; continue; }
            // The first word starting with comment= takes the rest of the line (qubesd's rule: comment last).
            if (options[position..].StartsWith("comment="))
            {
                comment = line[(position + "comment=".Length)..];
                if (comment.Length == 0) comment = null;
                break;
            }
            var length = options[position..].IndexOfAny(' ', '\t');
            var end = length < 0 ? options.Length : position + length;
            var word = options[position..end];
            position = end;
            var eq = word.IndexOf('=');
            if (eq <= 0) throw Bad(line, $"'{RuleGrammar.Printable(word.ToString())}' is not a key=value word");
            var key = word[..eq];
            var value = word[(eq + 1)..];
            var slot = key switch
            {
                "action" => 1,
                "proto" => 2,
                "dsthost" or "dst4" or "dst6" => 4,
                "dstports" => 8,
                "icmptype" => 16,
                "specialtarget" => 32,
                "expire" => 64,
                _ => 0,
            };
            if ((seen & slot) != 0) throw Bad(line, $"'{(slot == 4 ? "dsthost" : key.ToString())}' is given twice");
            seen |= slot;
            // qvm-firewall turns expire=+SECONDS into a time before qubesd sees it; allow that '+'.
            var checkedValue = slot == 64 && value.Length > 0 && value[0] == '+' ? value[1..] : value;
            if (RuleGrammar.IndexOfUnsafeValueChar(checkedValue) is >= 0 and var unsafeAt)
                throw Bad(line, $"character {RuleGrammar.Describe(checkedValue[unsafeAt])} in {RuleGrammar.Printable(key.ToString())} is not allowed");
            switch (slot)
            {
                case 1:
                    action = ParseAction(value)
                        ?? throw Bad(line, $"action must be accept or drop, not '{value}' (qubesd knows no other action)");
                    break;
                case 2:
                    proto = ParseProtocol(value)
                        ?? throw Bad(line, $"proto must be tcp, udp or icmp, not '{value}'");
                    break;
                case 4:
                    if (!HostSpec.TryParse(value, null, out var parsed, out var hostError)) throw Bad(line, $"{key}: {hostError}");
                    if (key is "dst4" && parsed!.Kind != HostKind.IPv4) throw Bad(line, "dst4 takes an IPv4 address or network");
                    if (key is "dst6" && parsed!.Kind != HostKind.IPv6) throw Bad(line, "dst6 takes an IPv6 address or network");
                    host = parsed;
                    break;
                case 8:
                    if (!PortRange.TryParse(value, strict: true, out var range, out var portError)) throw Bad(line, $"dstports: {portError}");
                    ports = range;
                    break;
                case 16:
                    if (value.Length is 0 or > 3 || value.ContainsAnyExceptInRange('0', '9')) throw Bad(line, "icmptype must be a number 0-255");
                    icmp = int.Parse(value, CultureInfo.InvariantCulture);
                    if (icmp > 255) throw Bad(line, "icmptype must be a number 0-255");
                    break;
                case 32:
                    if (value is not "dns") throw Bad(line, $"specialtarget must be dns, not '{value}'");
                    special = SpecialTarget.Dns;
                    break;
                case 64:
                    expire = ParseExpire(value, now, line);
                    break;
                default:
                    throw Bad(line, $"unknown option '{RuleGrammar.Printable(key.ToString())}' (known: action, dsthost, dst4, dst6, proto, dstports, icmptype, specialtarget, expire, comment)");
            }
        }

        if (action is null) throw Bad(line, "action= is required");
        try
        {
            // What FirewallRule.Create builds from these values, without parsing the host and ports again.
            return FirewallRule.FromParts(action.Value, proto, host, ports, icmp, special, expire, comment);
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

    private static long ParseExpire(ReadOnlySpan<char> value, DateTimeOffset? now, string line)
    {
        var relative = value.Length > 0 && value[0] == '+';
        var digits = relative ? value[1..] : value;
        if (digits.Length is 0 or > 12 || digits.ContainsAnyExceptInRange('0', '9'))
            throw Bad(line, "expire must be a Unix time in seconds, or +SECONDS from now");
        var n = long.Parse(digits, CultureInfo.InvariantCulture);
        return relative ? (now ?? DateTimeOffset.UtcNow).ToUnixTimeSeconds() + n : n;
    }

    // "comment=" at the start of a word: it takes the rest of the line, spaces included.
    private static QubesFirewallException Bad(string line, string why) =>
        QubesFirewallException.Invalid(ErrorIds.InvalidRuleText, $"Invalid rule '{RuleGrammar.Printable(line)}': {why}.", line);
}
