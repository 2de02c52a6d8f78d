using System.Text;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Formats;

public static partial class FirewallXml
{
    /// <summary>
    /// Reads a version 2 file laid out as qubesd (and <see cref="Render"/>) write it, straight from its bytes: the
    /// root <c>&lt;firewall version="2"&gt;</c>, one <c>rules</c> element of <c>rule</c> elements, each with one
    /// <c>properties</c> element of <c>&lt;property name="NAME"&gt;VALUE&lt;/property&gt;</c> (or <c>/&gt;</c>),
    /// whitespace between elements, printable ASCII values with the five predefined entities. That is a strict
    /// subset of well-formed XML, and every value goes through <see cref="FromProperties(IReadOnlyList{KeyValuePair{string, string}}, string, string, int)"/>
    /// as with the XML reader. Null for anything else, and for a rule that is refused, so that the XML reader reads
    /// the file and reports its error with its line.
    /// </summary>
    internal static FirewallDocument? TryReadCanonical(ReadOnlySpan<byte> xml)
    {
        var at = 0;
        if (!Take(xml, ref at, "<firewall version=\"2\">"u8)) return null;
        SkipSpace(xml, ref at);
        var rules = new List<FirewallRule>(Math.Min(xml.Length / 300, 1 << 20)); // qubesd's layout takes about 320 bytes a rule
        if (!Take(xml, ref at, "<rules/>"u8))
        {
            if (!Take(xml, ref at, "<rules>"u8)) return null;
            var values = new List<KeyValuePair<string, string>>(8);
            while (true)
            {
                SkipSpace(xml, ref at);
                if (Take(xml, ref at, "</rules>"u8)) break;
                if (!Take(xml, ref at, "<rule>"u8)) return null;
                SkipSpace(xml, ref at);
                values.Clear();
                if (!Take(xml, ref at, "<properties/>"u8))
                {
                    if (!Take(xml, ref at, "<properties>"u8)) return null;
                    while (true)
                    {
                        SkipSpace(xml, ref at);
                        if (Take(xml, ref at, "</properties>"u8)) break;
                        if (!Take(xml, ref at, "<property name=\""u8) || CanonicalName(xml, ref at) is not { } name) return null;
                        string value;
                        if (Take(xml, ref at, "\"/>"u8)) value = "";
                        else if (!Take(xml, ref at, "\">"u8) || CanonicalValue(xml, ref at) is not { } text || !Take(xml, ref at, "</property>"u8)) return null;
                        else value = text;
                        values.Add(new(name, value));
                    }
                    SkipSpace(xml, ref at);
                }
                if (!Take(xml, ref at, "</rule>"u8)) return null;
                try
                {
                    rules.Add(FromProperties(values, "", "", 0));
                }
                catch (QubesFirewallException)
                {
                    return null;
                }
            }
        }
        SkipSpace(xml, ref at);
        if (!Take(xml, ref at, "</firewall>"u8)) return null;
        SkipSpace(xml, ref at);
        return at == xml.Length ? new FirewallDocument(rules, 2, true) : null;
    }

    private static bool Take(ReadOnlySpan<byte> xml, ref int at, ReadOnlySpan<byte> literal)
    {
        if (!xml[at..].StartsWith(literal)) return false;
        at += literal.Length;
        return true;
    }

    // XML's whitespace between elements (a carriage return there is dropped by the reader too).
    private static void SkipSpace(ReadOnlySpan<byte> xml, ref int at)
    {
        while (at < xml.Length && xml[at] is (byte)' ' or (byte)'\n' or (byte)'\t' or (byte)'\r') at++;
    }

    private static readonly System.Buffers.SearchValues<byte> NameBytes =
        System.Buffers.SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"u8);

    // A property name up to its closing quote (left for the caller): letters, digits, '_' and '-'; qubesd's names are
    // the strings of KnownOrder, so those come back without a new string.
    private static string? CanonicalName(ReadOnlySpan<byte> xml, ref int at)
    {
        var rest = xml[at..];
        var length = rest.IndexOfAnyExcept(NameBytes);
        if (length <= 0 || rest[length] != (byte)'"') return null;
        var name = rest[..length];
        at += length;
        foreach (var known in KnownOrder)
            if (Ascii.Equals(name, known)) return known;
        return Encoding.ASCII.GetString(name);
    }

    // Printable ASCII up to the next '<' (left for the caller), the predefined entities decoded. A raw '>' (lxml
    // writes &gt;), a control character, a non-ASCII byte or any other reference: null.
    private static string? CanonicalValue(ReadOnlySpan<byte> xml, ref int at)
    {
        var rest = xml[at..];
        var end = rest.IndexOf((byte)'<');
        if (end < 0) return null;
        var raw = rest[..end];
        if (raw.IndexOfAnyExceptInRange((byte)' ', (byte)'~') >= 0 || raw.IndexOf((byte)'>') >= 0) return null;
        at += end;
        if (raw.IndexOf((byte)'&') < 0) return Common(raw) ?? Encoding.ASCII.GetString(raw);
        var sb = new StringBuilder(raw.Length);
        while (raw.Length > 0)
        {
            var amp = raw.IndexOf((byte)'&');
            if (amp < 0) { sb.Append(Encoding.ASCII.GetString(raw)); break; }
            sb.Append(Encoding.ASCII.GetString(raw[..amp]));
            raw = raw[amp..];
            var semicolon = raw.IndexOf((byte)';');
            if (semicolon < 0) return null;
            sb.Append(raw[..(semicolon + 1)] switch
            {
                var e when e.SequenceEqual("&amp;"u8) => '&',
                var e when e.SequenceEqual("&lt;"u8) => '<',
                var e when e.SequenceEqual("&gt;"u8) => '>',
                var e when e.SequenceEqual("&quot;"u8) => '"',
                var e when e.SequenceEqual("&apos;"u8) => '\'',
                _ => '\0',
            });
            if (sb[^1] == '\0') return null;
            raw = raw[(semicolon + 1)..];
        }
        return sb.ToString();
    }

    // The keywords most values are, without a new string each.
    private static string? Common(ReadOnlySpan<byte> value) => value switch
    {
        _ when value.SequenceEqual("accept"u8) => "accept",
        _ when value.SequenceEqual("drop"u8) => "drop",
        _ when value.SequenceEqual("tcp"u8) => "tcp",
        _ when value.SequenceEqual("udp"u8) => "udp",
        _ when value.SequenceEqual("icmp"u8) => "icmp",
        _ when value.SequenceEqual("dns"u8) => "dns",
        _ => null,
    };
}
