using System.Numerics;

namespace QubesFirewall.TestQubesd.CoreAdmin;

/// <summary>
/// The few Python and glibc behaviours qubesd's checks rest on, written here so that the stand-in
/// qubesd reads values the way CPython and glibc do, not the way .NET or the module does.
/// </summary>
internal static class PythonText
{
    /// <summary>Python's <c>str.isspace</c> for ASCII: space, \t \n \v \f \r and \x1c-\x1f.</summary>
    public static bool IsSpace(char c) => c is ' ' or '\t' or '\n' or '\v' or '\f' or '\r' or (>= '\x1c' and <= '\x1f');

    /// <summary>Python's <c>str.isdigit</c> for ASCII text: at least one character, all 0-9.</summary>
    public static bool IsDigits(string s) => s.Length > 0 && s.All(c => c is >= '0' and <= '9');

    /// <summary>
    /// Python's <c>int(str)</c>: surrounding whitespace, an optional sign, decimal digits with single
    /// underscores between digits. False where Python raises ValueError.
    /// </summary>
    public static bool TryInt(string s, out BigInteger value)
    {
        value = default;
        var start = 0;
        var end = s.Length;
        while (start < end && IsSpace(s[start])) start++;
        while (end > start && IsSpace(s[end - 1])) end--;
        if (start == end) return false;
        var negative = false;
        if (s[start] is '+' or '-')
        {
            negative = s[start] == '-';
            start++;
        }
        if (start == end || s[start] == '_' || s[end - 1] == '_') return false;
        BigInteger v = 0;
        for (var i = start; i < end; i++)
        {
            var c = s[i];
            if (c == '_')
            {
                if (s[i - 1] == '_') return false;
                continue;
            }
            if (c is < '0' or > '9') return false;
            v = v * 10 + (c - '0');
        }
        value = negative ? -v : v;
        return true;
    }

    /// <summary>
    /// Python's <c>str.splitlines()</c> for ASCII text: \n, \r, \r\n, \v, \f, \x1c, \x1d and \x1e end a
    /// line; a final separator does not start another line.
    /// </summary>
    public static List<string> SplitLines(string s)
    {
        var lines = new List<string>();
        var start = 0;
        for (var i = 0; i < s.Length; i++)
        {
            var c = s[i];
            if (c is not ('\n' or '\r' or '\v' or '\f' or '\x1c' or '\x1d' or '\x1e')) continue;
            lines.Add(s[start..i]);
            if (c == '\r' && i + 1 < s.Length && s[i + 1] == '\n') i++;
            start = i + 1;
        }
        if (start < s.Length) lines.Add(s[start..]);
        return lines;
    }

    /// <summary>glibc <c>inet_pton(AF_INET)</c>: exactly four decimal octets 0-255, no leading zeros, nothing else.</summary>
    public static bool IsInetPton4(string s)
    {
        var parts = s.Split('.');
        if (parts.Length != 4) return false;
        foreach (var p in parts)
        {
            if (p.Length is 0 or > 3 || !IsDigits(p)) return false;
            if (p.Length > 1 && p[0] == '0') return false;
            if (int.Parse(p, System.Globalization.CultureInfo.InvariantCulture) > 255) return false;
        }
        return true;
    }

    /// <summary>
    /// glibc <c>inet_pton(AF_INET6)</c>: up to eight groups of 1-4 hex digits, one "::" standing for at
    /// least one zero group, optionally an IPv4 dotted quad in place of the last two groups; no zone, no brackets.
    /// </summary>
    public static bool IsInetPton6(string s)
    {
        if (s.Length == 0) return false;
        var doubleColon = s.IndexOf("::", StringComparison.Ordinal);
        if (doubleColon >= 0 && s.IndexOf("::", doubleColon + 1, StringComparison.Ordinal) >= 0) return false;
        string head = doubleColon >= 0 ? s[..doubleColon] : s;
        string tail = doubleColon >= 0 ? s[(doubleColon + 2)..] : "";
        var groups = 0;
        bool Count(string part, bool last)
        {
            if (part.Length == 0) return true;
            var words = part.Split(':');
            for (var i = 0; i < words.Length; i++)
            {
                var w = words[i];
                if (last && i == words.Length - 1 && w.Contains('.'))
                {
                    if (!IsInetPton4(w)) return false;
                    groups += 2;
                    continue;
                }
                if (w.Length is 0 or > 4 || !w.All(Uri.IsHexDigit)) return false;
                groups++;
            }
            return true;
        }
        if (doubleColon < 0)
            return Count(head, last: true) && groups == 8;
        if (!Count(head, last: tail.Length == 0) || !Count(tail, last: true)) return false;
        return groups <= 7;
    }
}
