using System.Text;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Persistence;

/// <summary>
/// The hook files of a qube's /rw/config (qubes-firewall-user-script, rc.local) that keep what the module generates running
/// across restarts: which file, in which qube's /rw (a disposable's is its template's), and whether Qubes runs them at all.
/// </summary>
public static class HookFiles
{
    public const string FirewallUserScript = "/rw/config/qubes-firewall-user-script";
    public const string RcLocal = "/rw/config/rc.local";

    /// <summary>
    /// The hook file: network qubes that run the qubes-firewall service run
    /// <c>/rw/config/qubes-firewall-user-script</c> each time that service starts (before it loads the
    /// clients' rules); every other qube runs <c>/rw/config/rc.local</c> at boot (qubes-misc-post).
    /// </summary>
    public static string HookPath(Qube qube) => QubesFacts.RunsFirewallService(qube) ? FirewallUserScript : RcLocal;

    /// <summary>The qube whose /rw holds the file (<see cref="QubesFacts.StorageOf"/>).</summary>
    public static Qube StorageOf(QubesInventory inventory, Qube qube) => QubesFacts.StorageOf(inventory, qube);

    /// <summary>
    /// R4.3's custom-persist service turns off every /rw/config hook of the qube (core-agent-linux
    /// <c>qubesagent/firewall.py</c> lines 91-92 look at the qube's own /var/run/qubes-service/custom-persist):
    /// the qube's own service setting (a disposable has its copy of its template's features).
    /// </summary>
    public static bool HasCustomPersist(QubesInventory inventory, Qube qube) => QubesFacts.Service(qube, "custom-persist") == true;

    /// <summary>
    /// What to do about custom-persist: the agent then runs neither rc.local nor the
    /// qubes-firewall-user-script of /rw/config (core-agent-linux misc-post.sh and qubesagent/firewall.py
    /// skip them whatever is bound), only what the template installs, such as /etc/qubes/qubes-firewall.d.
    /// </summary>
    public static string CustomPersistFix(Qube qube) =>
        $"Turn custom-persist off for it (qvm-service --disable {qube.Name} custom-persist), or have its template run the script at start " +
        $"(Export-QubeFirewallScript -VMName {qube.Name} gives it{(QubesFacts.RunsFirewallService(qube) ? "; a network qube runs the executables of the template's /etc/qubes/qubes-firewall.d/" : "")}).";

    /// <summary>
    /// The body of the managed block of one file: the script of the qube that owns the file, or, in a
    /// disposable template shared by several qubes, one part per qube, each run only in the qube it names
    /// (<c>qubesdb-read /name</c>). Empty when no forward crosses any of them.
    /// </summary>
    public static string BlockBody(QubesInventory inventory, Qube storage, string path, Func<Qube, QubeForwards> forwardsOf,
        Func<QubeForwards, string>? render = null)
    {
        render ??= NftForwardScript.Render;
        var owners = inventory.Qubes
            .Where(q => StorageOf(inventory, q).Name == storage.Name && HookPath(q) == path)
            .Select(forwardsOf)
            .Where(s => !s.IsEmpty)
            .OrderBy(s => s.Qube.Name, StringComparer.Ordinal)
            .ToList();
        if (owners.Count == 0) return "";
        if (owners.Count == 1 && owners[0].Qube.Name == storage.Name) return render(owners[0]);
        var sb = new StringBuilder();
        sb.Append("# Kept in ").Append(storage.Name).Append(", the disposable template of ")
          .Append(string.Join(", ", owners.Select(o => o.Qube.Name))).Append(": every disposable made from it\n");
        sb.Append("# gets this file, and each part below runs only in the qube it names.\n");
        foreach (var owner in owners)
        {
            sb.Append("if [ \"$(qubesdb-read /name 2>/dev/null)\" = ").Append(ShellQuote.Single(owner.Qube.Name)).Append(" ]; then\n");
            sb.Append(render(owner));
            sb.Append("fi\n");
        }
        return sb.ToString();
    }
}
