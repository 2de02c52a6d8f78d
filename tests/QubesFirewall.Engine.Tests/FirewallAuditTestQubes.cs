using System.Security;
using System.Text;
using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Small hand-made systems for the NetVM repair, IPv6 and audit tests: a qubes.xml built from a list
/// of qubes (in the order given, which is qubes.xml order), read back through the engine's reader.
/// </summary>
internal static class TestQubes
{
    /// <summary>One qube. NetVm: null = property not set (class default), "" = none, else a name.</summary>
    public sealed record Q(string Name, int Qid, string Class = "AppVM", string? NetVm = null, bool Provides = false,
        string? Template = null, IReadOnlyDictionary<string, string>? Features = null, IReadOnlyList<string>? Tags = null, int? DispId = null);

    public static Dictionary<string, string> F(params (string Name, string Value)[] features) =>
        features.ToDictionary(f => f.Name, f => f.Value, StringComparer.Ordinal);

    public static string Xml(string? defaultNetVm, IEnumerable<Q> qubes)
    {
        var sb = new StringBuilder();
        sb.Append("<qubes>\n  <labels>\n    <label id=\"label-1\" color=\"0xcc0000\">red</label>\n  </labels>\n  <properties>\n");
        if (defaultNetVm is not null) sb.Append($"    <property name=\"default_netvm\">{defaultNetVm}</property>\n");
        sb.Append("  </properties>\n  <domains>\n");
        foreach (var q in qubes)
        {
            sb.Append($"    <domain id=\"domain-{q.Qid}\" class=\"{q.Class}\">\n      <properties>\n");
            sb.Append("        <property name=\"label\">red</property>\n");
            sb.Append($"        <property name=\"name\">{q.Name}</property>\n");
            if (q.Provides) sb.Append("        <property name=\"provides_network\">True</property>\n");
            sb.Append($"        <property name=\"qid\">{q.Qid}</property>\n");
            if (q.DispId is { } d) sb.Append($"        <property name=\"dispid\">{d}</property>\n");
            if (q.NetVm is not null) sb.Append(q.NetVm.Length == 0 ? "        <property name=\"netvm\"></property>\n" : $"        <property name=\"netvm\">{q.NetVm}</property>\n");
            if (q.Template is not null) sb.Append($"        <property name=\"template\">{q.Template}</property>\n");
            sb.Append("      </properties>\n");
            if (q.Features is { Count: > 0 } features)
            {
                sb.Append("      <features>\n");
                foreach (var (k, v) in features)
                    sb.Append(v.Length == 0 ? $"        <feature name=\"{k}\"></feature>\n" : $"        <feature name=\"{k}\">{SecurityElement.Escape(v)}</feature>\n");
                sb.Append("      </features>\n");
            }
            else sb.Append("      <features/>\n");
            if (q.Tags is { Count: > 0 } tags)
            {
                sb.Append("      <tags>\n");
                foreach (var t in tags) sb.Append($"        <tag name=\"{t}\"/>\n");
                sb.Append("      </tags>\n");
            }
            else sb.Append("      <tags/>\n");
            sb.Append("    </domain>\n");
        }
        sb.Append("  </domains>\n</qubes>\n");
        return sb.ToString();
    }

    public static QubesInventory Inventory(string? defaultNetVm, IReadOnlyDictionary<string, PowerState>? states, params Q[] qubes)
    {
        var inventory = QubesXml.Parse(Xml(defaultNetVm, qubes));
        return inventory.WithPowerStates(n => states is not null && states.TryGetValue(n, out var s) ? s : PowerState.Halted);
    }

    /// <summary>Rules from text lines as qvm-firewall writes them (expire values taken as given).</summary>
    public static FirewallDocument Rules(params string[] lines) =>
        new(lines.Select(l => RuleText.Parse(l)).ToList(), 2, true);

    /// <summary>Rules read leniently from firewall.xml property lists, e.g. ("action","accept"),("dstports","65536").</summary>
    public static FirewallDocument FromXml(params (string Name, string Value)[][] rules)
    {
        var sb = new StringBuilder("<firewall version=\"2\"><rules>");
        foreach (var rule in rules)
        {
            sb.Append("<rule><properties>");
            foreach (var (n, v) in rule) sb.Append($"<property name=\"{n}\">{SecurityElement.Escape(v)}</property>");
            sb.Append("</properties></rule>");
        }
        sb.Append("</rules></firewall>");
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(sb.ToString()));
        return FirewallXml.Parse(stream, "test firewall.xml");
    }
}
