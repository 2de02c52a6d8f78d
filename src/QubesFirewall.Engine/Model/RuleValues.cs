using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace QubesFirewall.Engine.Model;

public enum RuleAction { Accept, Drop }

public enum RuleProtocol { Tcp, Udp, Icmp }

public enum SpecialTarget { Dns }

/// <summary>How qubesd classifies a destination: the key it uses in the text form and QubesDB.</summary>
public enum HostKind { IPv4, IPv6, Name }

/// <summary>
/// A destination host or network as qubesd stores it: an address always carries a prefix
/// (a bare address gets /32 or /128), a name is kept as is.
/// </summary>
public sealed record HostSpec(string Value, HostKind Kind, int PrefixLength)
{
    /// <summary>The key qubesd uses for this host in the text form and in QubesDB.</summary>
    public string TextKey => Kind switch { HostKind.IPv4 => "dst4", HostKind.IPv6 => "dst6", _ => "dsthost" };

    public bool IsAddress => Kind != HostKind.Name;

    public override string ToString() => Value;

    public static HostSpec Parse(string value) =>
        TryParse(value, out var host, out var error) ? host! : throw QubesFirewallException.Invalid(ErrorIds.InvalidDstHost, $"Invalid destination host '{Printable(value)}': {error}.", value);

    /// <summary>qubesd's DstHost grammar, stricter where qubesd would accept something that can never work.</summary>
    public static bool TryParse(string? value, out HostSpec? host, out string error) => TryParse(value.AsSpan(), value, out host, out error);

    /// <summary>As <see cref="TryParse(string?, out HostSpec?, out string)"/>, on a part of a rule line: a string is made only
    /// for the value kept (<paramref name="text"/>, the same characters as a string, when the caller has one).</summary>
    internal static bool TryParse(ReadOnlySpan<char> value, string? text, out HostSpec? host, out string error)
    {
        host = null;
        error = "";
        if (value.IsEmpty) { error = "the host is empty"; return false; }
        var slash = value.IndexOf('/');
        if (slash >= 0 && value[(slash + 1)..].IndexOf('/') >= 0) { error = "more than one '/'"; return false; }
        if (slash < 0)
        {
            if (TryIPv6(value)) { host = new HostSpec(string.Concat(value, "/128"), HostKind.IPv6, 128); return true; }
            if (TryIPv4(value)) { host = new HostSpec(string.Concat(value, "/32"), HostKind.IPv4, 32); return true; }
            if (!value.ContainsAnyExcept(HostNameChars))
            {
                // qubesd would accept "1.2.3.999" as a host name; it can never resolve, and a failed
                // lookup makes the firewall qube reject all of the client's traffic.
                if (!value.ContainsAnyInRange('a', 'z')) { error = "not a valid IPv4 address, and a host name needs a letter"; return false; }
                if (value.Length > 253) { error = "a host name has at most 253 characters"; return false; }
                host = new HostSpec(text ?? value.ToString(), HostKind.Name, 0);
                return true;
            }
            error = value.ContainsAnyInRange('A', 'Z')
                ? "host names are lower case (letters a-z, digits, '-', '.', '_')"
                : "not an IPv4 or IPv6 address, and not a host name of a-z, 0-9, '-', '.', '_'";
            return false;
        }
        var address = value[..slash];
        var prefixText = value[(slash + 1)..];
        if (prefixText.Length == 0 || prefixText.Length > 3 || prefixText.ContainsAnyExceptInRange('0', '9')) { error = "bad prefix length"; return false; }
        var prefix = int.Parse(prefixText, CultureInfo.InvariantCulture);
        // The value as given when its prefix is already written without leading zeros (no new string when there is one).
        var normal = prefixText.Length == 1 || prefixText[0] != '0'
            ? text ?? value.ToString()
            : string.Concat(address, "/", prefix.ToString(CultureInfo.InvariantCulture));
        if (TryIPv6(address))
        {
            if (prefix > 128) { error = "an IPv6 prefix length is at most 128"; return false; }
            host = new HostSpec(normal, HostKind.IPv6, prefix);
            return true;
        }
        if (TryIPv4(address))
        {
            if (prefix > 32) { error = "an IPv4 prefix length is at most 32"; return false; }
            host = new HostSpec(normal, HostKind.IPv4, prefix);
            return true;
        }
        error = $"'{Printable(address.ToString())}' is not an IP address";
        return false;
    }

    /// <summary>Dotted quad, four decimal octets, no leading zeros (as glibc's inet_pton).</summary>
    internal static bool TryIPv4(ReadOnlySpan<char> s)
    {
        // One pass, digit by digit (a 10,000-rule file checks 10,000 addresses).
        int dots = 0, digits = 0, octet = 0;
        foreach (var c in s)
        {
            if (c == '.')
            {
                if (digits == 0 || ++dots > 3) return false;
                digits = octet = 0;
                continue;
            }
            if (!char.IsAsciiDigit(c) || (digits == 1 && octet == 0)) return false; // a leading zero
            octet = octet * 10 + (c - '0');
            if (++digits > 3 || octet > 255) return false;
        }
        return dots == 3 && digits > 0;
    }

    private static readonly System.Buffers.SearchValues<char> HostNameChars =
        System.Buffers.SearchValues.Create("abcdefghijklmnopqrstuvwxyz0123456789-._");

    internal static bool TryIPv6(ReadOnlySpan<char> s)
    {
        if (!s.Contains(':') || s.Length > 45) return false;
        if (s.ContainsAnyExcept(IPv6Chars)) return false;
        return IPAddress.TryParse(s, out var ip) && ip.AddressFamily == AddressFamily.InterNetworkV6;
    }

    internal static string Printable(string? s) => RuleGrammar.Printable(s);

    private static readonly System.Buffers.SearchValues<char> IPv6Chars = System.Buffers.SearchValues.Create("0123456789abcdefABCDEF:.");
}

/// <summary>A destination port or range, 0-65535, first ≤ last.</summary>
public readonly record struct PortRange(int First, int Last)
{
    public const int MaxPort = 65535;

    public bool IsSinglePort => First == Last;

    /// <summary>As qubesd stores it in firewall.xml: "443" or "8000-8100".</summary>
    public override string ToString() => IsSinglePort
        ? First.ToString(CultureInfo.InvariantCulture)
        : First.ToString(CultureInfo.InvariantCulture) + "-" + Last.ToString(CultureInfo.InvariantCulture);

    /// <summary>As the text form and QubesDB show it: always a range, "443-443".</summary>
    public string RangeText => First.ToString(CultureInfo.InvariantCulture) + "-" + Last.ToString(CultureInfo.InvariantCulture);

    public bool IsValid => First is >= 0 and <= MaxPort && Last is >= 0 and <= MaxPort && First <= Last;

    public static PortRange Parse(string value) =>
        TryParse(value, out var range, out var error) ? range : throw QubesFirewallException.Invalid(ErrorIds.InvalidDstPorts, $"Invalid destination ports '{HostSpec.Printable(value)}': {error}.", value);

    public static bool TryParse(string? value, out PortRange range, out string error) => TryParse(value, strict: true, out range, out error);

    /// <summary>
    /// "N" or "N-M". Leading zeros are dropped ("080" is 80). Lenient mode accepts values an
    /// older qubesd let through (65536, reversed range) so such files still load.
    /// </summary>
    internal static bool TryParse(string? value, bool strict, out PortRange range, out string error) =>
        TryParse(value.AsSpan(), strict, out range, out error);

    internal static bool TryParse(ReadOnlySpan<char> value, bool strict, out PortRange range, out string error)
    {
        range = default;
        error = "";
        if (value.IsEmpty) { error = "empty"; return false; }
        var dash = value.IndexOf('-');
        if (dash >= 0 && value[(dash + 1)..].IndexOf('-') >= 0) { error = "use N or N-M"; return false; }
        Span<int> numbers = stackalloc int[2];
        var count = dash < 0 ? 1 : 2;
        for (var i = 0; i < count; i++)
        {
            var p = dash < 0 ? value : i == 0 ? value[..dash] : value[(dash + 1)..];
            if (p.Length == 0 || p.ContainsAnyExceptInRange('0', '9')) { error = "use N or N-M with decimal digits"; return false; }
            var trimmed = p.TrimStart('0');
            if (trimmed.Length > 6) { error = "ports are 0-65535"; return false; }
            numbers[i] = trimmed.Length == 0 ? 0 : int.Parse(trimmed, CultureInfo.InvariantCulture);
        }
        range = new PortRange(numbers[0], count == 2 ? numbers[1] : numbers[0]);
        if (strict && (range.First > MaxPort || range.Last > MaxPort)) { error = "ports are 0-65535"; return false; }
        if (strict && range.First > range.Last) { error = "the first port of a range must not be above the last"; return false; }
        return true;
    }
}
