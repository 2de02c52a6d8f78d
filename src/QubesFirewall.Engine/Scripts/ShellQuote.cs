namespace QubesFirewall.Engine.Scripts;

/// <summary>POSIX shell quoting for values written into generated scripts.</summary>
public static class ShellQuote
{
    /// <summary>
    /// Single-quotes a value for /bin/sh: everything between single quotes is literal, and a single
    /// quote itself becomes <c>'\''</c>. Control characters are refused (they have no business in the
    /// values this module writes, and a newline would end a comment line).
    /// </summary>
    public static string Single(string value)
    {
        ArgumentNullException.ThrowIfNull(value);
        foreach (var c in value)
            if (c < ' ' || c == '\x7f')
                throw QubesFirewallException.Invalid(ErrorIds.InvalidScriptValue, $"A value for a generated script contains the control character U+{(int)c:X4}.", value);
        return "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }

    /// <summary>Text for a shell comment line: printable ASCII only (the values were validated before; this is the last guard).</summary>
    public static string CommentText(string value)
    {
        foreach (var c in value)
            if (c is < ' ' or > '~')
                throw QubesFirewallException.Invalid(ErrorIds.InvalidScriptValue, $"Text for a generated script comment contains U+{(int)c:X4}.", value);
        return value;
    }
}
