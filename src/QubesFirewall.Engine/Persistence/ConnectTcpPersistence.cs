using System.Text;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Persistence;

/// <summary>
/// Where a client keeps its permanent qubes.ConnectTCP bindings: a section of the managed block of its
/// <c>/rw/config/rc.local</c> (every qube runs rc.local at boot, network qubes included), between two lines
/// of its own:
/// <code>
/// # --- qubesfirewall: qubes.ConnectTCP bindings ---
/// ...the script of <see cref="ConnectTcpUnits.Render"/>...
/// # --- end of qubesfirewall qubes.ConnectTCP bindings ---
/// </code>
/// The managed block is one per file (<see cref="ManagedBlock"/>); a qube that is also the target of a port
/// forward has the forward's script in the same block. Each writer replaces only its own part of the body
/// (<see cref="ReplacePart"/>); <see cref="WithBindings"/> is what another writer of rc.local's block calls on
/// the body it rendered, so the bindings' section stays in it.
/// For a disposable, the file is its disposable template's (<see cref="HookFiles.StorageOf"/>), and
/// each qube's part runs only in the qube it names (<c>qubesdb-read /name</c>).
/// </summary>
public static class ConnectTcpPersistence
{
    public const string Path = HookFiles.RcLocal;
    public const string BeginMarker = "# --- qubesfirewall: qubes.ConnectTCP bindings ---";
    public const string EndMarker = "# --- end of qubesfirewall qubes.ConnectTCP bindings ---";

    /// <summary>
    /// The section for the rc.local of <paramref name="storage"/> (markers included), or "" when none of the
    /// qubes keeping their rc.local there has a permanent binding.
    /// </summary>
    public static string Part(QubesInventory inventory, Qube storage, Func<Qube, IReadOnlyList<TcpBinding>> permanentOf)
    {
        var owners = inventory.Qubes
            .Where(q => q.Class != QubeClass.AdminVM && HookFiles.StorageOf(inventory, q).Name == storage.Name)
            .Select(q => (Qube: q, Bindings: permanentOf(q)))
            .Where(o => o.Bindings.Count > 0)
            .OrderBy(o => o.Qube.Name, StringComparer.Ordinal)
            .ToList();
        if (owners.Count == 0) return "";
        var sb = new StringBuilder();
        sb.Append(BeginMarker).Append('\n');
        if (owners.Count == 1 && owners[0].Qube.Name == storage.Name)
        {
            sb.Append(ConnectTcpUnits.Render(storage.Name, owners[0].Bindings));
        }
        else
        {
            sb.Append("# Kept in ").Append(storage.Name).Append(", the disposable template of ")
              .Append(string.Join(", ", owners.Select(o => o.Qube.Name))).Append(": every disposable made from it\n");
            sb.Append("# gets this file, and each part below runs only in the qube it names.\n");
            foreach (var (qube, bindings) in owners)
            {
                sb.Append("if [ \"$(qubesdb-read /name 2>/dev/null)\" = ").Append(ShellQuote.Single(qube.Name)).Append(" ]; then\n");
                sb.Append(ConnectTcpUnits.Render(qube.Name, bindings));
                sb.Append("fi\n");
            }
        }
        sb.Append(EndMarker).Append('\n');
        return sb.ToString();
    }

    /// <summary>The section as built from the declarations of the inventory (valid, permanent ones).</summary>
    public static string Part(QubesInventory inventory, Qube storage)
    {
        var byClient = TcpBindingDeclaration.ReadAll(inventory)
            .Where(d => d.Binding is { Permanent: true })
            .GroupBy(d => d.From, StringComparer.Ordinal)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<TcpBinding>)g.Select(d => d.Binding!).ToList(), StringComparer.Ordinal);
        return Part(inventory, storage, q => byClient.TryGetValue(q.Name, out var list) ? list : []);
    }

    /// <summary>
    /// For another writer of a managed block (port forwards): its rendered <paramref name="body"/> for
    /// <paramref name="path"/> of <paramref name="storage"/>, with the bindings' section of that file added
    /// (rc.local only; any other hook file is returned as it is).
    /// </summary>
    public static string WithBindings(QubesInventory inventory, Qube storage, string path, string body) =>
        path == Path ? ReplacePart(body, Part(inventory, storage)) : body;

    private static readonly BlockSection Section = new(BeginMarker, EndMarker, "qubes.ConnectTCP");

    /// <summary>The section in a block body (markers included), or "" when there is none.</summary>
    public static string Extract(string? body) => Section.Extract(body);

    /// <summary>
    /// <paramref name="body"/> with its bindings' section replaced by <paramref name="part"/> where it was, or
    /// added at the end; an empty part removes the section. The rest of the body stays byte for byte.
    /// </summary>
    public static string ReplacePart(string? body, string part) => Section.ReplacePart(body, part);
}
