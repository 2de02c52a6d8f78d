using System.Globalization;
using System.Numerics;

namespace QubesFirewall.TestQubesd.CoreAdmin;

/// <summary>A value qubesd's firewall code refuses (a Python ValueError there: an unhandled error, so an empty reply).</summary>
public sealed class RuleValueError(string message) : Exception(message);

/// <summary>
/// One firewall rule as qubesd holds it, read from core-admin <c>qubes/firewall.py</c> (snapshot
/// 1ad5f9b8, August 2026; line numbers below are of that file). Each property keeps the string qubesd
/// stores for it (<c>str(value)</c>, what firewall.xml holds); <see cref="DstHostType"/> is DstHost's
/// <c>type</c>. Independent of the module's own rule grammar on purpose: the live-backend tests compare the two.
/// </summary>
public sealed class QubesdRule
{
    /// <summary>
    /// Rule's properties in <c>property_list()</c> order (core-admin <c>qubes/__init__.py</c>
    /// <c>property.__lt__</c>, l.387: by load stage, then <c>order</c>, then name; firewall.py l.286-330:
    /// action, comment and expire have order 0, dsthost, proto and specialtarget order 1, dstports and
    /// icmptype order 2). firewall.xml stores them in this order (<c>PropertyHolder.xml_properties</c>, l.759).
    /// </summary>
    public static readonly string[] PropertyOrder = ["action", "comment", "expire", "dsthost", "proto", "specialtarget", "dstports", "icmptype"];

    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    // qubesd before core-admin commit f92669dd (April 2026: "reject invalid port 65536") checked "port > 65536".
    private readonly bool _acceptPort65536;

    private QubesdRule(bool acceptPort65536 = false) => _acceptPort65536 = acceptPort65536;

    public string? this[string property] => _values.GetValueOrDefault(property);

    /// <summary>DstHost.type (firewall.py l.101-166): dst4, dst6 or dsthost (a host name); null without dsthost.</summary>
    public string? DstHostType { get; private set; }

    // ------------------------------------------------------------------ option types

    // RuleOption.__init__ (l.39-45): the stored string may hold only letters, digits and ":;,./-_[]".
    private const string SafeSet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:;,./-_[]";

    private static string Option(string value) =>
        value.All(c => SafeSet.Contains(c, StringComparison.Ordinal)) ? value : throw new RuleValueError("strange characters in rule");

    // RuleChoice.__init__ (l.65-76): the safe-set check, then one of the class's values.
    private static string Choice(string value, params string[] allowed)
    {
        Option(value);
        return allowed.Contains(value, StringComparer.Ordinal) ? value : throw new RuleValueError(value);
    }

    /// <summary>The stored value of one property from its untrusted text, as the option's class builds it.</summary>
    private (string Value, string? HostType) Build(string property, string untrusted, int? prefixLength = null) => property switch
    {
        "action" => (Choice(untrusted, "accept", "drop"), null),                 // Action, l.79
        "proto" => (Choice(untrusted, "tcp", "udp", "icmp"), null),              // Proto, l.88
        "specialtarget" => (Choice(untrusted, "dns"), null),                     // SpecialTarget, l.214
        "dsthost" => DstHost(untrusted, prefixLength),
        "dstports" => (DstPorts(untrusted, _acceptPort65536), null),
        "icmptype" => (IcmpType(untrusted), null),
        "expire" => (Expire(untrusted), null),
        "comment" => (Comment(untrusted), null),
        _ => throw new RuleValueError("Unknown firewall option"),
    };

    // DstHost.__init__ (l.101-166). The stored value is the text as given (never canonicalized), with
    // "/prefix" added to a bare address (prefix 128 or 32, or the v1 netmask).
    private static (string, string) DstHost(string untrusted, int? prefixLength)
    {
        var slashes = untrusted.Count(c => c == '/');
        if (slashes > 1) throw new RuleValueError("Too many /: " + untrusted);
        if (slashes == 0)
        {
            if (PythonText.IsInetPton6(untrusted))
            {
                var p = prefixLength is null or 0 ? 128 : prefixLength.Value;   // prefixlen or 128
                if (p is < 0 or > 128) throw new RuleValueError("netmask for IPv6 must be between 0 and 128");
                return (Option(untrusted + "/" + p.ToString(CultureInfo.InvariantCulture)), "dst6");
            }
            if (PythonText.IsInetPton4(untrusted))
            {
                var p = prefixLength is null or 0 ? 32 : prefixLength.Value;    // prefixlen or 32
                if (p is < 0 or > 32) throw new RuleValueError("netmask for IPv4 must be between 0 and 32");
                return (Option(untrusted + "/" + p.ToString(CultureInfo.InvariantCulture)), "dst4");
            }
            // a host name (l.131-136): lowercase letters, digits, '-', '.', '_' (the empty name included)
            if (!untrusted.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '.' or '_'))
                throw new RuleValueError("Invalid hostname");
            return (Option(untrusted), "dsthost");
        }
        var slash = untrusted.IndexOf('/');
        var host = untrusted[..slash];
        var prefixText = untrusted[(slash + 1)..];
        if (!PythonText.IsDigits(prefixText)) throw new RuleValueError("bad prefix length");
        var prefix = BigInteger.Parse(prefixText, CultureInfo.InvariantCulture);
        if (PythonText.IsInetPton6(host))
        {
            if (prefix > 128) throw new RuleValueError("netmask for IPv6 must be <= 128");
            return (Option(untrusted), "dst6");
        }
        if (PythonText.IsInetPton4(host))
        {
            if (prefix > 32) throw new RuleValueError("netmask for IPv4 must be <= 32");
            return (Option(untrusted), "dst4");
        }
        throw new RuleValueError("Invalid IP address: " + host);
    }

    // DstPorts.__init__ (l.174-191): "N" or "N-M" read with Python's int(), 0-65535, N <= M; stored "N" or "N-M".
    private static string DstPorts(string untrusted, bool acceptPort65536)
    {
        var dashes = untrusted.Count(c => c == '-');
        string[] ends = dashes switch
        {
            0 => [untrusted, untrusted],
            1 => untrusted.Split('-', 2),
            _ => throw new RuleValueError(untrusted),
        };
        var range = ends.Select(e => PythonText.TryInt(e, out var v) ? v : throw new RuleValueError("invalid literal for int()")).ToArray();
        if (range.Any(p => p < 0 || p > (acceptPort65536 ? 65536 : 65535))) throw new RuleValueError("Ports out of range");
        if (range[0] > range[1]) throw new RuleValueError("Invalid port range");
        return Option(range[0] == range[1] ? range[0].ToString(CultureInfo.InvariantCulture) : $"{range[0]}-{range[1]}");
    }

    // IcmpType.__init__ (l.199-207): at most three digits, 0-255; stored as the number.
    private static string IcmpType(string untrusted)
    {
        if (untrusted.Length > 3 || !PythonText.IsDigits(untrusted)) throw new RuleValueError("bad ICMP type");
        var v = int.Parse(untrusted, CultureInfo.InvariantCulture);
        if (v > 255) throw new RuleValueError("ICMP type out of range");
        return Option(v.ToString(CultureInfo.InvariantCulture));
    }

    // Expire.__init__ (l.223-230): the safe-set check, digits only, and a time datetime.fromtimestamp
    // can hold (years 1-9999: at most 253402300799 in UTC, where the tests run); stored as given, leading zeros kept.
    private static string Expire(string untrusted)
    {
        Option(untrusted);
        if (!PythonText.IsDigits(untrusted)) throw new RuleValueError("bad expiration time");
        if (BigInteger.Parse(untrusted, CultureInfo.InvariantCulture) > 253402300799) throw new RuleValueError("year is out of range");
        return untrusted;
    }

    // Comment.__init__ (l.247-254): letters, digits, ":;,./-_[]" and space; nothing else is checked.
    private static string Comment(string untrusted) =>
        untrusted.All(c => SafeSet.Contains(c, StringComparison.Ordinal) || c == ' ') ? untrusted : throw new RuleValueError("strange characters comment");

    // ------------------------------------------------------------------ building rules

    private void Set(string property, string untrusted, int? prefixLength = null)
    {
        var (value, hostType) = Build(property, untrusted, prefixLength);
        _values[property] = value;
        if (property == "dsthost") DstHostType = hostType;
    }

    // Rule.__init__ (l.266-284): after the properties are set, dstports needs proto tcp or udp
    // (on_set_dstports, l.337), icmptype needs proto icmp (on_set_icmptype, l.346), and action must be set
    // (property_require("action", False, True)).
    private QubesdRule Checked()
    {
        if (_values.ContainsKey("dstports") && this["proto"] is not ("tcp" or "udp"))
            throw new RuleValueError("dstports valid only for 'tcp' and 'udp' protocols");
        if (_values.ContainsKey("icmptype") && this["proto"] != "icmp")
            throw new RuleValueError("icmptype valid only for 'icmp' protocol");
        if (!_values.ContainsKey("action")) throw new RuleValueError("Required property 'action' not set");
        return this;
    }

    /// <summary>
    /// <c>Rule.from_api_string</c> (l.445-476): everything after the first "comment=" is the comment (used
    /// only if not empty); the rest is stripped and split on single spaces into key=value options, each key
    /// once; dst4, dst6 and dstname are all read as dsthost (whatever address they hold).
    /// </summary>
    public static QubesdRule FromApiString(string untrustedRule, bool acceptPort65536 = false)
    {
        var rule = new QubesdRule(acceptPort65536);
        var at = untrustedRule.IndexOf("comment=", StringComparison.Ordinal);
        var options = at < 0 ? untrustedRule : untrustedRule[..at];
        var comment = at < 0 ? "" : untrustedRule[(at + "comment=".Length)..];
        var seen = new HashSet<string>(StringComparer.Ordinal);
        if (comment.Length > 0)
        {
            rule.Set("comment", comment);
            seen.Add("comment");
        }
        foreach (var option in options.Trim(PythonWhitespace).Split(' '))
        {
            var eq = option.IndexOf('=');
            if (eq < 0) throw new RuleValueError("not enough values to unpack");
            var key = option[..eq];
            var value = option[(eq + 1)..];
            if (seen.Contains(key)) throw new RuleValueError($"Option '{key}' already set");
            if (Array.IndexOf(PropertyOrder, key) >= 0)
            {
                rule.Set(key, value);
                seen.Add(key);
            }
            else if (key is "dst4" or "dst6" or "dstname")
            {
                if (!seen.Add("dsthost")) throw new RuleValueError("Option 'dsthost' already set");
                rule.Set("dsthost", value);
            }
            else throw new RuleValueError("Unknown firewall option");
        }
        return rule.Checked();
    }

    private static readonly char[] PythonWhitespace = [' ', '\t', '\n', '\v', '\f', '\r', '\x1c', '\x1d', '\x1e', '\x1f'];

    /// <summary>A rule of a version 2 firewall.xml (<c>Rule(xml)</c>, <c>PropertyHolder.load_properties</c>): the last value of a name wins.</summary>
    public static QubesdRule FromStored(IEnumerable<KeyValuePair<string, string>> properties, bool acceptPort65536 = false)
    {
        var rule = new QubesdRule(acceptPort65536);
        foreach (var (name, value) in properties)
        {
            // PropertyHolder.__init__ (qubes/__init__.py l.619-628) refuses a property the class does not have.
            if (Array.IndexOf(PropertyOrder, name) < 0) throw new RuleValueError($"property '{name}' not applicable to 'Rule'");
            rule.Set(name, value);
        }
        return rule.Checked();
    }

    /// <summary>A rule built by qubesd itself (Firewall.load_v1 and load_defaults, l.507-579).</summary>
    internal static QubesdRule Of(string action, string? proto = null, string? specialTarget = null, string? dstHost = null, int? prefixLength = null,
        string? dstPorts = null, string? expire = null)
    {
        var rule = new QubesdRule();
        rule.Set("action", action);
        if (dstHost is not null) rule.Set("dsthost", dstHost, prefixLength);
        if (dstPorts is not null) rule.Set("dstports", dstPorts);
        if (proto is not null) rule.Set("proto", proto);
        if (specialTarget is not null) rule.Set("specialtarget", specialTarget);
        if (expire is not null) rule.Set("expire", expire);
        return rule.Checked();
    }

    // ------------------------------------------------------------------ reading rules back

    /// <summary>
    /// <c>Expire.expired</c> (l.241): <c>datetime.fromtimestamp(expire) &lt; datetime.now()</c>, i.e. the
    /// expiry second lies strictly before now.
    /// </summary>
    public bool IsExpiredAt(DateTimeOffset now) =>
        this["expire"] is { } e && (decimal)BigInteger.Parse(e, CultureInfo.InvariantCulture) < (decimal)now.ToUnixTimeMilliseconds() / 1000m;

    /// <summary>Each set property with its stored value, in <see cref="PropertyOrder"/> (what firewall.xml holds).</summary>
    public IEnumerable<KeyValuePair<string, string>> StoredProperties =>
        PropertyOrder.Where(_values.ContainsKey).Select(p => new KeyValuePair<string, string>(p, _values[p]));

    // Each property's Rule.rule / api_rule word (l.84-261): dsthost under its type's key, dstports always
    // as a range "N-M" (DstPorts.rule, l.194); expire and comment only in api_rule.
    private string Word(string property) => property switch
    {
        "dsthost" => DstHostType + "=" + _values[property],
        "dstports" => "dstports=" + (_values[property].Contains('-', StringComparison.Ordinal) ? _values[property] : _values[property] + "-" + _values[property]),
        _ => property + "=" + _values[property],
    };

    /// <summary>
    /// <c>Rule.api_rule</c> (l.381-395), the line admin.vm.firewall.Get returns: the properties in
    /// <see cref="PropertyOrder"/> with comment moved to the end (a stable sort on "is comment"), so
    /// action, expire, dsthost, proto, specialtarget, dstports, icmptype, comment. Null once expired.
    /// </summary>
    public string? ApiRule(DateTimeOffset now) => IsExpiredAt(now) ? null :
        string.Join(' ', PropertyOrder.Where(_values.ContainsKey).OrderBy(p => p == "comment").Select(Word));

    /// <summary><c>Rule.rule</c> (l.367-378), the QubesDB value: as api_rule without expire and comment. Null once expired.</summary>
    public string? QubesDbRule(DateTimeOffset now) => IsExpiredAt(now) ? null :
        string.Join(' ', PropertyOrder.Where(p => _values.ContainsKey(p) && p is not ("expire" or "comment")).Select(Word));
}
