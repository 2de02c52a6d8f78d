using System.Text;

namespace QubesFirewall.Engine.Model;

/// <summary>Character sets qubesd enforces on rule values (core-admin RuleOption and Comment).</summary>
public static class RuleGrammar
{
    // ASCII letters and digits and :;,./-_[] (qubesd's RuleOption), and with a space (its Comment). Searched vectorized for the
    // first character not among them: every value and comment of a 10,000-line pipeline is checked.
    private const string SafeValueCharList = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:;,./-_[]";
    private static readonly System.Buffers.SearchValues<char> SafeValueChars = System.Buffers.SearchValues.Create(SafeValueCharList);
    private static readonly System.Buffers.SearchValues<char> CommentChars = System.Buffers.SearchValues.Create(SafeValueCharList + " ");

    /// <summary>Characters qubesd allows in any rule value other than a comment.</summary>
    public static bool IsSafeValueChar(char c) => SafeValueChars.Contains(c);

    /// <summary>Characters qubesd allows in a comment: the value set plus space.</summary>
    public static bool IsCommentChar(char c) => CommentChars.Contains(c);

    /// <summary>Index of the first character <see cref="IsSafeValueChar"/> refuses, or -1.</summary>
    public static int IndexOfUnsafeValueChar(ReadOnlySpan<char> value) => value.IndexOfAnyExcept(SafeValueChars);

    /// <summary>True when every character may stand in a comment.</summary>
    public static bool IsComment(ReadOnlySpan<char> comment) => !comment.ContainsAnyExcept(CommentChars);

    public static void ValidateComment(string comment)
    {
        var i = comment.AsSpan().IndexOfAnyExcept(CommentChars);
        if (i >= 0)
            throw QubesFirewallException.Invalid(ErrorIds.InvalidComment,
                $"Invalid comment: character {Describe(comment[i])} at position {i + 1} is not allowed. qubesd accepts only ASCII letters, digits, space and :;,./-_[] in a comment.", comment);
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
