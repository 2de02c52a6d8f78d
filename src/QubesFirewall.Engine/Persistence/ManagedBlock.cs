using System.Text;

namespace QubesFirewall.Engine.Persistence;

/// <summary>
/// The part of a hook file (<c>/rw/config/qubes-firewall-user-script</c>, <c>/rw/config/rc.local</c>)
/// the module owns, between two marker lines:
/// <code>
/// # &gt;&gt;&gt; qubesfirewall managed block: do not edit &gt;&gt;&gt;
/// ...generated script...
/// # &lt;&lt;&lt; qubesfirewall &lt;&lt;&lt;
/// </code>
/// The block is replaced in place, never added twice; every line outside it stays byte for byte. A new
/// file starts with <c>#!/bin/sh</c> (the hooks are executed directly, so they need an interpreter line
/// and mode 0755). A damaged block (one marker without the other, two blocks) is refused rather than guessed.
/// </summary>
public static class ManagedBlock
{
    public const string BeginMarker = "# >>> qubesfirewall managed block: do not edit >>>";
    public const string EndMarker = "# <<< qubesfirewall <<<";
    public const string Shebang = "#!/bin/sh";

    /// <summary>The mode hook files get: Qubes runs them only when executable.</summary>
    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute |
        UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

    /// <summary>The body of the block (without the markers), or null when the file has none.</summary>
    public static string? Extract(string? content)
    {
        if (content is null) return null;
        var lines = SplitLines(content);
        var (begin, end) = Locate(lines);
        if (begin < 0) return null;
        var sb = new StringBuilder();
        for (var i = begin + 1; i < end; i++) sb.Append(lines[i]).Append('\n');
        return sb.ToString();
    }

    /// <summary>
    /// The file with the block set to <paramref name="body"/>: replaced where it is, else added at the end
    /// (before a final <c>exit</c> line, which would keep it from running); a missing file becomes
    /// <c>#!/bin/sh</c> plus the block.
    /// </summary>
    public static string Upsert(string? content, string body)
    {
        ArgumentNullException.ThrowIfNull(body);
        var block = Render(body);
        if (content is null) return Shebang + "\n" + block;
        var lines = SplitLines(content);
        var (begin, end) = Locate(lines);
        var sb = new StringBuilder(content.Length + block.Length);
        if (begin >= 0)
        {
            for (var i = 0; i < begin; i++) sb.Append(lines[i]).Append('\n');
            sb.Append(block);
            AppendRest(sb, lines, end + 1, content);
            return sb.ToString();
        }
        var exitLine = FinalExitLine(lines);
        if (exitLine >= 0)
        {
            for (var i = 0; i < exitLine; i++) sb.Append(lines[i]).Append('\n');
            sb.Append(block);
            AppendRest(sb, lines, exitLine, content);
            return sb.ToString();
        }
        sb.Append(content);
        if (content.Length > 0 && !content.EndsWith('\n')) sb.Append('\n');
        sb.Append(block);
        return sb.ToString();
    }

    /// <summary>The file without the block (null stays null: nothing to write).</summary>
    public static string? Remove(string? content)
    {
        if (content is null) return null;
        var lines = SplitLines(content);
        var (begin, end) = Locate(lines);
        if (begin < 0) return content;
        var sb = new StringBuilder(content.Length);
        for (var i = 0; i < begin; i++) sb.Append(lines[i]).Append('\n');
        AppendRest(sb, lines, end + 1, content);
        return sb.ToString();
    }

    /// <summary>The block as it is written: markers around the body.</summary>
    public static string Render(string body)
    {
        if (body.Split('\n').Any(l => l.TrimEnd('\r') is BeginMarker or EndMarker))
            throw new QubesFirewallException(ErrorIds.ManagedBlockDamaged, FailureKind.InvalidData, "A generated script must not contain the managed block's marker lines.", body);
        var sb = new StringBuilder(body.Length + 100);
        sb.Append(BeginMarker).Append('\n').Append(body);
        if (body.Length > 0 && !body.EndsWith('\n')) sb.Append('\n');
        sb.Append(EndMarker).Append('\n');
        return sb.ToString();
    }

    /// <summary>Whether the file's first line is an interpreter line (the qubes-firewall service executes the user script directly).</summary>
    public static bool HasShebang(string content) => content.StartsWith("#!", StringComparison.Ordinal);

    private static void AppendRest(StringBuilder sb, List<string> lines, int from, string content)
    {
        for (var i = from; i < lines.Count; i++)
        {
            sb.Append(lines[i]);
            if (i < lines.Count - 1 || content.EndsWith('\n')) sb.Append('\n');
        }
    }

    // Lines without their '\n'; a final newline does not make an empty last line.
    internal static List<string> SplitLines(string content)
    {
        var lines = content.Split('\n').ToList();
        if (content.EndsWith('\n')) lines.RemoveAt(lines.Count - 1);
        return lines;
    }

    /// <summary>The numbers of the lines that are <paramref name="beginMarker"/> and <paramref name="endMarker"/> (trailing blanks and '\r' aside).</summary>
    internal static (List<int> Begins, List<int> Ends) MarkerLines(List<string> lines, string beginMarker, string endMarker)
    {
        var begins = new List<int>();
        var ends = new List<int>();
        for (var i = 0; i < lines.Count; i++)
        {
            var l = lines[i].TrimEnd('\r', ' ', '\t');
            if (l == beginMarker) begins.Add(i);
            else if (l == endMarker) ends.Add(i);
        }
        return (begins, ends);
    }

    private static (int Begin, int End) Locate(List<string> lines)
    {
        var (begins, ends) = MarkerLines(lines, BeginMarker, EndMarker);
        if (begins.Count == 0 && ends.Count == 0) return (-1, -1);
        if (begins.Count != 1 || ends.Count != 1 || ends[0] < begins[0])
            throw new QubesFirewallException(ErrorIds.ManagedBlockDamaged, FailureKind.InvalidData,
                $"The file has {begins.Count} '{BeginMarker}' and {ends.Count} '{EndMarker}' lines{(begins.Count == 1 && ends.Count == 1 ? " in the wrong order" : "")}: " +
                "the block this module manages was edited by hand. Nothing was changed; restore the two marker lines around one block (or delete the block with both markers) and run the command again.");
        return (begins[0], ends[0]);
    }

    // A final `exit` (or `exit N`) statement, after which nothing would run: the block goes in front of it.
    private static int FinalExitLine(List<string> lines)
    {
        for (var i = lines.Count - 1; i >= 0; i--)
        {
            var l = lines[i].Trim();
            if (l.Length == 0 || l.StartsWith('#')) continue;
            var words = l.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            return words[0] == "exit" && words.Length <= 2 ? i : -1;
        }
        return -1;
    }
}
