using System.Globalization;
using System.Text;

namespace QubesFirewall.Engine.Trust;

/// <summary>
/// The one sanitizer and the one byte codec for everything that comes back from a qube (file content,
/// script output, error output). dom0 trusts nothing a qube sends:
/// <list type="bullet">
/// <item><see cref="Decode"/>/<see cref="Encode"/> keep a file's bytes exactly, valid UTF-8 or not: a byte that is
/// not part of valid UTF-8 becomes the lone surrogate U+DC80–U+DCFF (as Python's <c>surrogateescape</c> does) and
/// is written back as that byte, so the user's own lines of a hook file survive a read-modify-write unchanged.</item>
/// <item><see cref="Escape"/> makes text safe to show: C0 controls other than newline and tab, DEL, C1 controls
/// (U+0080–U+009F) and kept raw bytes become visible escapes such as <c>\x1b</c>, so a qube cannot move the dom0
/// terminal's cursor, set its title or fake a prompt. Apply it before anything from a qube reaches a stream, an
/// error message or a result property.</item>
/// </list>
/// </summary>
public static class QubeText
{
    private const char RawByteBase = '\uDC00';

    /// <summary>Text of <paramref name="bytes"/>: UTF-8, each byte that is not valid UTF-8 kept as U+DC80–U+DCFF.</summary>
    public static string Decode(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        Span<char> pair = stackalloc char[2];
        while (!bytes.IsEmpty)
        {
            if (bytes[0] < 0x80)
            {
                sb.Append((char)bytes[0]);
                bytes = bytes[1..];
                continue;
            }
            if (Rune.DecodeFromUtf8(bytes, out var rune, out var used) == System.Buffers.OperationStatus.Done)
            {
                sb.Append(pair[..rune.EncodeToUtf16(pair)]);
                bytes = bytes[used..];
            }
            else
            {
                sb.Append((char)(RawByteBase + bytes[0]));
                bytes = bytes[1..];
            }
        }
        return sb.ToString();
    }

    /// <summary>The bytes of text made by <see cref="Decode"/> (or any text): UTF-8, U+DC80–U+DCFF written back as the raw byte.</summary>
    public static byte[] Encode(string text)
    {
        var output = new List<byte>(text.Length + 16);
        Span<byte> buffer = stackalloc byte[4];
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var n = new Rune(c, text[i + 1]).EncodeToUtf8(buffer);
                for (var k = 0; k < n; k++) output.Add(buffer[k]);
                i++;
            }
            else if (c is >= '\uDC80' and <= '\uDCFF')
                output.Add((byte)(c - RawByteBase));
            else if (char.IsSurrogate(c))
                throw new ArgumentException($"The text holds a lone surrogate U+{(int)c:X4} at {i.ToString(CultureInfo.InvariantCulture)} that is no kept byte.", nameof(text));
            else
            {
                var n = new Rune(c).EncodeToUtf8(buffer);
                for (var k = 0; k < n; k++) output.Add(buffer[k]);
            }
        }
        return output.ToArray();
    }

    /// <summary>True for a character <see cref="Escape"/> shows as an escape.</summary>
    public static bool NeedsEscape(char c) =>
        c is < ' ' and not ('\n' or '\t') or '\x7f' or (>= '\x80' and <= '\x9f') || char.IsSurrogate(c);

    /// <summary>
    /// <paramref name="text"/> with C0 controls other than newline and tab, DEL, C1 controls and kept raw bytes
    /// shown as <c>\xNN</c> (a lone surrogate that is no kept byte as <c>\uNNNN</c>); everything else as it is.
    /// </summary>
    public static string Escape(string? text)
    {
        if (text is null) return "";
        var i = 0;
        while (i < text.Length && !NeedsEscape(text[i])) i++;
        if (i == text.Length) return text;
        var sb = new StringBuilder(text.Length + 16).Append(text, 0, i);
        for (; i < text.Length; i++)
        {
            var c = text[i];
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                sb.Append(c).Append(text[i + 1]);
                i++;
            }
            else if (c is >= '\uDC80' and <= '\uDCFF')
                sb.Append("\\x").Append(((int)(c - RawByteBase)).ToString("x2", CultureInfo.InvariantCulture));
            else if (char.IsSurrogate(c))
                sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
            else if (NeedsEscape(c))
                sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            else
                sb.Append(c);
        }
        return sb.ToString();
    }

    /// <summary><see cref="Escape"/> of <see cref="Decode"/>: bytes a qube sent, ready to show.</summary>
    public static string Show(ReadOnlySpan<byte> bytes) => Escape(Decode(bytes));
}
