using QubesFirewall.Engine.Validation;

namespace QubesFirewall.Engine.Planning;

/// <summary>
/// How values get into an audit finding's Fix, which users run (<c>Invoke-Expression $finding.Fix</c>): a Fix is
/// a command of this module or null, and every value in it is a validated name or a single-quoted literal made
/// here. An offline root is files nobody checked, so a comment, a host or even a qube name may hold <c>;</c>,
/// <c>$(</c>, a backtick or a quote: quoted here, they stay data.
/// </summary>
public static class FixCommand
{
    /// <summary>
    /// A PowerShell single-quoted string literal. Inside one, only a single quote ends it, and PowerShell takes the
    /// typographic quotes (U+2018 to U+201B) as single quotes too: each is doubled, which makes it a literal quote.
    /// </summary>
    public static string Quote(string s)
    {
        var sb = new System.Text.StringBuilder(s.Length + 2);
        sb.Append('\'');
        foreach (var c in s)
        {
            if (c is '\'' or '\u2018' or '\u2019' or '\u201A' or '\u201B') sb.Append(c);
            sb.Append(c);
        }
        return sb.Append('\'').ToString();
    }

    /// <summary>A value as an argument: bare when only ASCII letters and digits, else quoted.</summary>
    public static string Word(string value) => value.Length > 0 && value.All(char.IsAsciiLetterOrDigit) ? value : Quote(value);

    /// <summary>A qube name as an argument: bare when qubesd would accept it (letters, digits, _ . - after a letter), else quoted.</summary>
    public static string Name(string name) => QubeName.IsValid(name) ? name : Quote(name);
}
