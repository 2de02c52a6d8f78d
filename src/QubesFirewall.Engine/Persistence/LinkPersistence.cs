using System.Text;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Persistence;

/// <summary>
/// Where inter-qube links are kept: a section of the managed block of the qube's hook file
/// (<see cref="HookFiles.HookPath"/>: the shared network qube's qubes-firewall-user-script, the
/// destination's rc.local), between two lines of its own:
/// <code>
/// # --- qubesfirewall: inter-qube links ---
/// ...the script of <see cref="NftLinkScript.Render"/>...
/// # --- end of qubesfirewall inter-qube links ---
/// </code>
/// The block may also hold port forwards and qubes.ConnectTCP bindings; each writer replaces only its own part
/// (<see cref="ReplacePart"/>). For a disposable,
/// the file is its disposable template's, and each qube's part runs only in the qube it names.
/// </summary>
public static class LinkPersistence
{
    public const string BeginMarker = "# --- qubesfirewall: inter-qube links ---";
    public const string EndMarker = "# --- end of qubesfirewall inter-qube links ---";

    private static readonly BlockSection Section = new(BeginMarker, EndMarker, "inter-qube links");

    /// <summary>The section for <paramref name="path"/> of <paramref name="storage"/> (markers included), or "" when no link concerns the qubes keeping that file there.</summary>
    public static string Part(QubesInventory inventory, Qube storage, string path, Func<Qube, QubeLinks> linksOf)
    {
        var owners = inventory.Qubes
            .Where(q => q.Class != QubeClass.AdminVM && HookFiles.StorageOf(inventory, q).Name == storage.Name && HookFiles.HookPath(q) == path)
            .Select(linksOf)
            .Where(s => !s.IsEmpty)
            .OrderBy(s => s.Qube.Name, StringComparer.Ordinal)
            .ToList();
        if (owners.Count == 0) return "";
        var sb = new StringBuilder();
        sb.Append(BeginMarker).Append('\n');
        if (owners.Count == 1 && owners[0].Qube.Name == storage.Name)
        {
            sb.Append(NftLinkScript.Render(owners[0]));
        }
        else
        {
            sb.Append("# Kept in ").Append(storage.Name).Append(", the disposable template of ")
              .Append(string.Join(", ", owners.Select(o => o.Qube.Name))).Append(": every disposable made from it\n");
            sb.Append("# gets this file, and each part below runs only in the qube it names.\n");
            foreach (var owner in owners)
            {
                sb.Append("if [ \"$(qubesdb-read /name 2>/dev/null)\" = ").Append(ShellQuote.Single(owner.Qube.Name)).Append(" ]; then\n");
                sb.Append(NftLinkScript.Render(owner));
                sb.Append("fi\n");
            }
        }
        sb.Append(EndMarker).Append('\n');
        return sb.ToString();
    }

    public static string Extract(string? body) => Section.Extract(body);

    public static string ReplacePart(string? body, string part) => Section.ReplacePart(body, part);

    /// <summary>The body without the links section (what the other writers own).</summary>
    public static string Without(string? body) => Section.Without(body);
}
