using System.Text;

namespace QubesFirewall.Engine.Model;

/// <summary>Character sets qubesd enforces on rule values (core-admin RuleOption and Comment).</summary>
public static class RuleGrammar
{
    /// <summary>Characters qubesd allows in any rule value other than a comment.</summary>
    public static bool IsSafeValueChar(char c) => char.IsAsciiLetterOrDigit(c) || c is ':' or ';' or ',' or '.' or '/' or '-' or '_' or '[' or ']';

    /// <summary>Characters qubesd allows in a comment: the value set plus space.</summary>
    public static bool IsCommentChar(char c) => IsSafeValueChar(c) || c == ' ';

    /// <summary>True when every character may stand in a comment.</summary>
    public static bool IsComment(ReadOnlySpan<char> comment)
    {
        foreach (var c in comment)
            if (!IsCommentChar(c)) return false;
        return true;
    }

    public static void ValidateComment(string comment)
    {
        for (var i = 0; i < comment.Length; i++)
        {
            if (!IsCommentChar(comment[i]))
                throw QubesFirewallException.Invalid(ErrorIds.InvalidComment,
                    $"Invalid comment: character {Describe(comment[i])} at position {i + 1} is not allowed. qubesd accepts only ASCII letters, digits, space and :;,./-_[] in a comment.", comment);
        }
    }

    /// <summary>A character as a user can read it in an error message (control and non-ASCII characters as U+XXXX).</summary>
    public static string Describe(char c) => c is >= ' ' and <= '~' ? $"'{c}'" : $"U+{(int)c:X4}";

    /// <summary>Makes a value safe to echo in a message: control and non-ASCII characters escaped.</summary>
    public static string Printable(string? s)
    {
        if (s is null) return "";
        var sb = new StringBuilder(s.Length);
        foreach (var c in s.Length > 200 ? s[..200] + "…" : s)
            sb.Append(c is >= ' ' and <= '~' or '…' ? c.ToString() : $"\\u{(int)c:x4}");
        return sb.ToString();
    }
}
