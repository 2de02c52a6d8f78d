using System.Text;

namespace QubesFirewall.Engine.Persistence;

/// <summary>
/// A section of a managed block's body that one writer owns, between two marker lines of its own (the
/// qubes.ConnectTCP bindings, the inter-qube links). The managed block is one per file
/// (<see cref="ManagedBlock"/>); each writer replaces only its own section, every other byte of the body stays.
/// </summary>
public sealed class BlockSection(string beginMarker, string endMarker, string what)
{
    public string BeginMarker { get; } = beginMarker;
    public string EndMarker { get; } = endMarker;

    /// <summary>The section (markers included) in a block body, or "" when there is none.</summary>
    public string Extract(string? body)
    {
        if (body is null) return "";
        var (begin, end, lines) = Locate(body);
        if (begin < 0) return "";
        var sb = new StringBuilder();
        for (var i = begin; i <= end; i++) sb.Append(lines[i]).Append('\n');
        return sb.ToString();
    }

    /// <summary>
    /// <paramref name="body"/> with the section replaced by <paramref name="part"/> where it was, or added at the
    /// end; an empty part removes the section. The rest of the body stays byte for byte.
    /// </summary>
    public string ReplacePart(string? body, string part)
    {
        body ??= "";
        var (begin, end, lines) = Locate(body);
        var sb = new StringBuilder(body.Length + part.Length);
        if (begin < 0)
        {
            sb.Append(body);
            if (part.Length > 0 && body.Length > 0 && !body.EndsWith('\n')) sb.Append('\n');
            sb.Append(part);
            return sb.ToString();
        }
        for (var i = 0; i < begin; i++) sb.Append(lines[i]).Append('\n');
        sb.Append(part);
        for (var i = end + 1; i < lines.Count; i++) sb.Append(lines[i]).Append('\n');
        return sb.ToString();
    }

    /// <summary>The body with the section taken out (what the other writers own).</summary>
    public string Without(string? body) => ReplacePart(body, "");

    private (int Begin, int End, List<string> Lines) Locate(string body)
    {
        var lines = ManagedBlock.SplitLines(body);
        var (begins, ends) = ManagedBlock.MarkerLines(lines, BeginMarker, EndMarker);
        if (begins.Count == 0 && ends.Count == 0) return (-1, -1, lines);
        if (begins.Count != 1 || ends.Count != 1 || ends[0] < begins[0])
            throw new QubesFirewallException(ErrorIds.ManagedBlockDamaged, FailureKind.InvalidData,
                $"The managed block has {begins.Count} '{BeginMarker}' and {ends.Count} '{EndMarker}' lines{(begins.Count == 1 && ends.Count == 1 ? " in the wrong order" : "")}: " +
                $"the {what} section of the block was edited by hand. Nothing was changed; restore the two lines around one section (or delete the section with both lines) and run the command again.");
        return (begins[0], ends[0], lines);
    }
}
