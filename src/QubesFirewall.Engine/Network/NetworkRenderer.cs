using System.Globalization;
using System.Text;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Network;

/// <summary>How Show-QubeNetwork draws.</summary>
public enum NetworkDiagram
{
    /// <summary>A tree for the console.</summary>
    Tree,
    /// <summary>A Mermaid flowchart (renders in GitHub, GitLab and many markdown viewers).</summary>
    Mermaid,
    /// <summary>A Graphviz digraph (<c>dot -Tsvg</c>).</summary>
    Dot,
}

/// <summary>The tree's characters and colours: Unicode box drawing with ANSI colours, or plain ASCII.</summary>
public sealed record TreeStyle(bool Unicode, bool Color)
{
    public static TreeStyle Plain { get; } = new(false, false);
    public static TreeStyle Rich { get; } = new(true, true);

    internal string Branch => Unicode ? "├── " : "+-- ";
    internal string Last => Unicode ? "└── " : "`-- ";
    internal string Bar => Unicode ? "│   " : "|   ";
    internal string Forward => Unicode ? "⇒" : "=>";
    internal string LinkOut => Unicode ? "→" : "->";
    internal string LinkIn => Unicode ? "←" : "<-";
    internal string BindingOut => Unicode ? "⇢" : "~>";
    internal string BindingIn => Unicode ? "⇠" : "<~";
    internal string Problem => "!";
}

/// <summary>Draws <see cref="QubeNetworkNode"/>s (from <see cref="NetworkView.Build"/>, in its order) as a tree, Mermaid or Dot.</summary>
public static class NetworkRenderer
{
    private const string Dim = "\u001b[2m", Red = "\u001b[31m", Yellow = "\u001b[33m", Reset = "\u001b[0m";
    public const string NoNetworkGroup = "(no network)";

    // ------------------------------------------------------------------ tree

    /// <summary>
    /// The tree: each top network qube (sys-net) with its clients indented under it, then the qubes without network
    /// under <c>(no network)</c>. Below each qube, a line per forward (port and sources), link (A → B port), binding and
    /// audit problem; halted qubes are dimmed (and say so).
    /// </summary>
    public static string Tree(IReadOnlyList<QubeNetworkNode> nodes, TreeStyle style)
    {
        var sb = new StringBuilder();
        var byName = nodes.ToDictionary(n => n.Name, StringComparer.Ordinal);
        var placed = new HashSet<string>(StringComparer.Ordinal);
        IEnumerable<QubeNetworkNode> ChildrenOf(QubeNetworkNode n) => nodes.Where(c => c.NetVM == n.Name && !placed.Contains(c.Name));

        void Walk(QubeNetworkNode node, string lead, string childLead)
        {
            placed.Add(node.Name);
            var children = ChildrenOf(node).ToList();
            foreach (var c in children) placed.Add(c.Name);
            Line(sb, lead, node, style);
            var markerLead = childLead + (children.Count > 0 ? style.Bar : "    ");
            foreach (var marker in Markers(node, style)) sb.Append(markerLead).Append(marker).Append('\n');
            for (var i = 0; i < children.Count; i++)
            {
                var last = i == children.Count - 1;
                Walk(children[i], childLead + (last ? style.Last : style.Branch), childLead + (last ? "    " : style.Bar));
            }
        }

        foreach (var node in nodes)
        {
            if (placed.Contains(node.Name)) continue;
            if (node.NetVM is null && !node.ProvidesNetwork) continue; // the no-network group, below
            Walk(node, "", "");
        }
        var offline = nodes.Where(n => !placed.Contains(n.Name)).ToList();
        if (offline.Count > 0)
        {
            sb.Append(NoNetworkGroup).Append('\n');
            for (var i = 0; i < offline.Count; i++)
            {
                var last = i == offline.Count - 1;
                Walk(offline[i], last ? style.Last : style.Branch, last ? "    " : style.Bar);
            }
        }
        return sb.ToString();
    }

    private static void Line(StringBuilder sb, string lead, QubeNetworkNode n, TreeStyle style)
    {
        var text = new StringBuilder(n.Name);
        if (n.Class is not (QubeClass.AppVM)) text.Append(" [").Append(n.Class).Append(']');
        if (n.IP is not null) text.Append("  ").Append(n.IP);
        if (n.IPv6 is not null) text.Append(' ').Append(n.IPv6);
        if (n.NetVM is not null)
        {
            text.Append("  ").Append(RuleSummary(n));
            text.Append(n.EnforcedBy is { } by ? $", enforced by {by}" : ", NOT enforced");
        }
        var down = n.State is not (PowerState.Running or PowerState.Unknown);
        if (down) text.Append("  (").Append(n.State.ToString().ToLowerInvariant()).Append(')');
        var errors = n.Problems.Count(p => p.Severity == AuditSeverity.Error);
        var warnings = n.Problems.Length - errors;
        sb.Append(lead);
        if (style.Color && down) sb.Append(Dim);
        sb.Append(text);
        if (style.Color && down) sb.Append(Reset);
        if (errors + warnings > 0)
        {
            var flag = new StringBuilder("  ").Append(style.Problem).Append(' ');
            if (errors > 0) flag.Append(errors.ToString(CultureInfo.InvariantCulture)).Append(errors == 1 ? " error" : " errors");
            if (errors > 0 && warnings > 0) flag.Append(", ");
            if (warnings > 0) flag.Append(warnings.ToString(CultureInfo.InvariantCulture)).Append(warnings == 1 ? " warning" : " warnings");
            sb.Append(style.Color ? (errors > 0 ? Red : Yellow) + flag + Reset : flag.ToString());
        }
        sb.Append('\n');
    }

    /// <summary>"accepts everything" or "7 rules, last action=drop".</summary>
    public static string RuleSummary(QubeNetworkNode n) =>
        n.OpenToAll ? "accepts everything"
        : $"{n.RuleCount.ToString(CultureInfo.InvariantCulture)} rule{(n.RuleCount == 1 ? "" : "s")}, " + (n.CatchAll is { } c ? $"last {c}" : "no catch-all (drop)");

    private static IEnumerable<string> Markers(QubeNetworkNode n, TreeStyle style)
    {
        foreach (var f in n.Forwards.Where(f => f.VMName == n.Name))
            yield return $"{style.Forward} forward {ForwardText(f)}" + (IsCopy(f) ? " COPIED from another qube, never deployed" : "");
        foreach (var l in n.Links.Where(l => l.From == n.Name))
            yield return $"{style.LinkOut} link {l.From} -> {l.To} {l.ProtocolText}/{l.Ports}";
        foreach (var l in n.Links.Where(l => l.To == n.Name))
            yield return $"{style.LinkIn} link {l.From} -> {l.To} {l.ProtocolText}/{l.Ports}";
        foreach (var b in n.Bindings.Where(b => b.From == n.Name))
            yield return $"{style.BindingOut} binding {b.From} -> {b.To}:{b.Port.ToString(CultureInfo.InvariantCulture)} (qubes.ConnectTCP{(b.Permanent ? $", listening on 127.0.0.1:{b.LocalPort.ToString(CultureInfo.InvariantCulture)}" : "")})";
        foreach (var b in n.Bindings.Where(b => b.To == n.Name))
            yield return $"{style.BindingIn} binding {b.From} -> {b.To}:{b.Port.ToString(CultureInfo.InvariantCulture)} (qubes.ConnectTCP)";
        foreach (var p in n.Problems)
        {
            var line = $"{style.Problem} {p.Severity} {p.Check}{(p.Number is { } num ? " #" + num.ToString(CultureInfo.InvariantCulture) : "")}";
            yield return style.Color ? (p.Severity == AuditSeverity.Error ? Red : Yellow) + line + Reset : line;
        }
    }

    /// <summary><c>tcp/443 -> 8443 from 192.168.1.0/24 (external, via sys-net, sys-firewall)</c>; "from anywhere" when unrestricted.</summary>
    public static string ForwardText(QubePortForward f)
    {
        var sb = new StringBuilder();
        sb.Append(f.Protocol?.ToString().ToLowerInvariant()).Append('/').Append(f.Port?.ToString(CultureInfo.InvariantCulture));
        if (f.TargetPort != f.Port) sb.Append(" -> ").Append(f.TargetPort?.ToString(CultureInfo.InvariantCulture));
        sb.Append(f.AllowFrom.Length == 0 || f.AllowFrom.Any(a => a.EndsWith("/0", StringComparison.Ordinal)) ? " from anywhere" : " from " + string.Join(", ", f.AllowFrom));
        sb.Append(" (").Append(f.Type?.ToString().ToLowerInvariant());
        if (f.Interface is { } iface) sb.Append(" on ").Append(iface);
        if (f.Hops.Length > 0) sb.Append(", via ").Append(string.Join(", ", f.Hops));
        if (f.IsExpired) sb.Append(", expired");
        sb.Append(')');
        return sb.ToString();
    }

    // ------------------------------------------------------------------ mermaid

    /// <summary>
    /// A Mermaid flowchart: one node per qube (name and address), an arrow from each netvm to its clients, dotted
    /// arrows for forwards (from "outside" for external ones, from the netvm for internal ones), thick arrows for links,
    /// dotted arrows labelled qubes.ConnectTCP for bindings; qubes without network in their own subgraph; halted qubes
    /// and qubes with audit problems styled.
    /// </summary>
    public static string Mermaid(IReadOnlyList<QubeNetworkNode> nodes)
    {
        var ids = Ids(nodes);
        var sb = new StringBuilder("flowchart LR\n");
        var networked = nodes.Where(n => n.NetVM is not null || n.ProvidesNetwork).ToList();
        var offline = nodes.Where(n => n.NetVM is null && !n.ProvidesNetwork).ToList();
        var external = nodes.SelectMany(n => n.Forwards.Where(f => f.VMName == n.Name && f.Type == ForwardType.External && !IsCopy(f))).ToList();
        if (external.Count > 0) sb.Append("    outside((outside))\n");
        foreach (var n in networked) sb.Append("    ").Append(ids[n.Name]).Append("[\"").Append(NodeLabel(n, "<br/>")).Append("\"]\n");
        if (offline.Count > 0)
        {
            sb.Append("    subgraph nonet[\"no network\"]\n");
            foreach (var n in offline) sb.Append("        ").Append(ids[n.Name]).Append("[\"").Append(NodeLabel(n, "<br/>")).Append("\"]\n");
            sb.Append("    end\n");
        }
        foreach (var n in networked.Where(n => n.NetVM is { } p && ids.ContainsKey(p)))
            sb.Append("    ").Append(ids[n.NetVM!]).Append(" --> ").Append(ids[n.Name]).Append('\n');
        foreach (var n in nodes)
        {
            foreach (var f in n.Forwards.Where(f => f.VMName == n.Name && !IsCopy(f)))
            {
                var from = f.Type == ForwardType.External ? "outside" : n.NetVM is { } p && ids.TryGetValue(p, out var pid) ? pid : "outside";
                sb.Append("    ").Append(from).Append(" -.->|\"").Append(EdgeForward(f)).Append("\"| ").Append(ids[n.Name]).Append('\n');
            }
            foreach (var l in n.Links.Where(l => l.From == n.Name && ids.ContainsKey(l.To)))
                sb.Append("    ").Append(ids[l.From]).Append(" ==>|\"").Append(l.ProtocolText).Append('/').Append(l.Ports).Append("\"| ").Append(ids[l.To]).Append('\n');
            foreach (var b in n.Bindings.Where(b => b.From == n.Name && ids.ContainsKey(b.To)))
                sb.Append("    ").Append(ids[b.From]).Append(" -.->|\"ConnectTCP ").Append(b.Port.ToString(CultureInfo.InvariantCulture)).Append("\"| ").Append(ids[b.To]).Append('\n');
        }
        var halted = nodes.Where(n => n.State is not (PowerState.Running or PowerState.Unknown)).Select(n => ids[n.Name]).ToList();
        var problems = nodes.Where(n => n.Problems.Length > 0).Select(n => ids[n.Name]).ToList();
        if (halted.Count > 0) sb.Append("    classDef halted fill:#eeeeee,color:#777777,stroke-dasharray:4 3\n    class ").Append(string.Join(",", halted)).Append(" halted\n");
        if (problems.Count > 0) sb.Append("    classDef problem stroke:#cc0000,stroke-width:3px\n    class ").Append(string.Join(",", problems)).Append(" problem\n");
        return sb.ToString();
    }

    // ------------------------------------------------------------------ dot

    /// <summary>The same picture as a Graphviz digraph.</summary>
    public static string Dot(IReadOnlyList<QubeNetworkNode> nodes)
    {
        var sb = new StringBuilder("digraph qubes {\n    rankdir=LR;\n    node [shape=box, fontname=\"sans-serif\"];\n");
        var names = nodes.Select(n => n.Name).ToHashSet(StringComparer.Ordinal);
        if (nodes.Any(n => n.Forwards.Any(f => f.VMName == n.Name && f.Type == ForwardType.External && !IsCopy(f))))
            sb.Append("    \"(outside)\" [shape=ellipse];\n");
        foreach (var n in nodes)
        {
            sb.Append("    \"").Append(n.Name).Append("\" [label=\"").Append(NodeLabel(n, "\\n")).Append('"');
            if (n.State is not (PowerState.Running or PowerState.Unknown)) sb.Append(", style=dashed, fontcolor=gray40");
            if (n.Problems.Length > 0) sb.Append(", color=red, penwidth=2");
            sb.Append("];\n");
        }
        foreach (var n in nodes.Where(n => n.NetVM is { } p && names.Contains(p)))
            sb.Append("    \"").Append(n.NetVM).Append("\" -> \"").Append(n.Name).Append("\";\n");
        foreach (var n in nodes)
        {
            foreach (var f in n.Forwards.Where(f => f.VMName == n.Name && !IsCopy(f)))
            {
                var from = f.Type == ForwardType.External || n.NetVM is null ? "(outside)" : n.NetVM;
                sb.Append("    \"").Append(from).Append("\" -> \"").Append(n.Name).Append("\" [style=dashed, label=\"").Append(EdgeForward(f)).Append("\"];\n");
            }
            foreach (var l in n.Links.Where(l => l.From == n.Name && names.Contains(l.To)))
                sb.Append("    \"").Append(l.From).Append("\" -> \"").Append(l.To).Append("\" [style=bold, label=\"").Append(l.ProtocolText).Append('/').Append(l.Ports).Append("\"];\n");
            foreach (var b in n.Bindings.Where(b => b.From == n.Name && names.Contains(b.To)))
                sb.Append("    \"").Append(b.From).Append("\" -> \"").Append(b.To).Append("\" [style=dotted, label=\"ConnectTCP ").Append(b.Port.ToString(CultureInfo.InvariantCulture)).Append("\"];\n");
        }
        sb.Append("}\n");
        return sb.ToString();
    }

    /// <summary>A declaration copied from another qube (qvm-clone, restore): shown in the tree, never drawn as in force.</summary>
    private static bool IsCopy(QubePortForward f) => f.Ownership == DeclarationOwnership.Copied;

    private static string NodeLabel(QubeNetworkNode n, string newline) =>
        n.Name + (n.IP is { } ip ? newline + ip : "") + (n.NetVM is not null && n.EnforcedBy is null ? newline + "rules not enforced" : "");

    private static string EdgeForward(QubePortForward f) =>
        $"{f.Protocol?.ToString().ToLowerInvariant()}/{f.Port?.ToString(CultureInfo.InvariantCulture)}" +
        (f.AllowFrom.Length == 0 ? " from anywhere" : " from " + string.Join(" ", f.AllowFrom));

    /// <summary>Mermaid node ids: the name with every character but letters and digits as '_', made unique.</summary>
    private static Dictionary<string, string> Ids(IReadOnlyList<QubeNetworkNode> nodes)
    {
        var ids = new Dictionary<string, string>(StringComparer.Ordinal);
        var used = new HashSet<string>(StringComparer.Ordinal) { "outside", "nonet", "end", "subgraph", "classDef", "class", "flowchart" };
        foreach (var n in nodes)
        {
            var id = new string(n.Name.Select(c => char.IsAsciiLetterOrDigit(c) ? c : '_').ToArray());
            var unique = id;
            for (var i = 2; !used.Add(unique); i++) unique = id + "_" + i.ToString(CultureInfo.InvariantCulture);
            ids[n.Name] = unique;
        }
        return ids;
    }
}
