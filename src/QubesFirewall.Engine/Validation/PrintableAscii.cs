using System.Globalization;
using System.Text;

namespace QubesFirewall.Engine.Validation;

/// <summary>
/// Printable ASCII (space to '~'): what qubesd accepts in feature and property values, and how a value outside it
/// is named in a message (qubes.xml, features, qube names).
/// </summary>
internal static class PrintableAscii
{
    /// <summary>The index of the first character outside printable ASCII, or -1.</summary>
    internal static int FirstNonPrintable(string s)
    {
        for (var i = 0; i < s.Length; i++)
            if (s[i] is < '\x20' or > '\x7E') return i;
        return -1;
    }

    /// <summary>A character outside printable ASCII in words: "a newline", "the character U+00E9".</summary>
    internal static string Describe(char c) => c switch
    {
        '\n' => "a newline",
        '\r' => "a carriage return",
        '\t' => "a tab",
        _ => $"the character U+{(int)c:X4}",
    };

    /// <summary>A value made safe to show in a message: control and non-ASCII characters escaped, long values cut.</summary>
    internal static string Printable(string? s)
    {
        if (s is null) return "";
        var sb = new StringBuilder();
        foreach (var c in s.Length > 80 ? s[..80] : s)
        {
            if (c is >= '\x20' and <= '\x7E') sb.Append(c);
            else sb.Append("\\u").Append(((int)c).ToString("X4", CultureInfo.InvariantCulture));
        }
        if (s.Length > 80) sb.Append("...");
        return sb.ToString();
    }
}
