using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Network;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests.Configuration;

/// <summary>
/// The network picture of the sample root and of a small root with a forward, a link and a binding. Expected text
/// written by hand from the qubes.xml files: addresses 10.137.0.&lt;qid&gt; (sys-firewall, a disposable with dispid 2741:
/// 10.138.10.201), running qubes those with a power-state file (sys-net, sys-firewall, sys-usb, work, personal),
/// anon-whonix and whonix-workstation-18-dvm behind the Whonix gateway sys-whonix (rules not enforced), personal's
/// version 1 firewall.xml (dns, icmp, three rules, policy deny: no catch-all rule) with the host name mail.example.org
/// as its rule 3.
/// </summary>
public sealed class NetworkViewTests
{
    private static IReadOnlyList<QubeNetworkNode> Sample()
    {
        using var backend = new OfflineRoot(TempRoot.SamplePath());
        return NetworkView.Build(new AuditContext(backend.GetInventory(), backend.GetFirewall, DateTimeOffset.FromUnixTimeSeconds(1_800_000_000)));
    }

    [Fact]
    public void The_sample_root_as_a_tree()
    {
        Assert.Equal("""
            sys-net  10.137.0.5
            `-- sys-firewall [DispVM]  10.138.10.201  accepts everything, enforced by sys-net
                +-- default-dvm  10.137.0.6  accepts everything, enforced by sys-firewall  (halted)
                +-- personal  10.137.0.10  5 rules, no catch-all (drop), enforced by sys-firewall  ! 1 warning
                |       ! Warning HostName #3
                +-- sys-whonix  10.137.0.14  accepts everything, enforced by sys-firewall  (halted)
                |   +-- anon-whonix  10.137.0.16  accepts everything, NOT enforced  (halted)
                |   `-- whonix-workstation-18-dvm  10.137.0.15  accepts everything, NOT enforced  (halted)
                +-- untrusted  10.137.0.12  accepts everything, enforced by sys-firewall  (halted)
                `-- work  10.137.0.11  7 rules, last action=drop, enforced by sys-firewall
            (no network)
            +-- debian-13-xfce [TemplateVM]  (halted)
            +-- default-mgmt-dvm  (halted)
            +-- fedora-42-xfce [TemplateVM]  (halted)
            +-- sys-usb
            +-- vault  (halted)
            +-- whonix-gateway-18 [TemplateVM]  (halted)
            `-- whonix-workstation-18 [TemplateVM]  (halted)

            """.Replace("\r", "", StringComparison.Ordinal), NetworkRenderer.Tree(Sample(), TreeStyle.Plain));
    }

    [Fact]
    public void The_rich_tree_draws_boxes_and_dims_halted_qubes()
    {
        var tree = NetworkRenderer.Tree(Sample(), TreeStyle.Rich);
        Assert.Contains("└── sys-firewall [DispVM]  10.138.10.201", tree);
        Assert.Contains("    ├── \u001b[2mdefault-dvm  10.137.0.6  accepts everything, enforced by sys-firewall  (halted)\u001b[0m\n", tree);
        Assert.Contains("personal  10.137.0.10  5 rules, no catch-all (drop), enforced by sys-firewall\u001b[33m  ! 1 warning\u001b[0m\n", tree);
        Assert.DoesNotContain("`--", tree);
    }

    [Fact]
    public void The_sample_root_as_Mermaid()
    {
        Assert.Equal("""
            flowchart LR
                sys_net["sys-net<br/>10.137.0.5"]
                sys_firewall["sys-firewall<br/>10.138.10.201"]
                default_dvm["default-dvm<br/>10.137.0.6"]
                personal["personal<br/>10.137.0.10"]
                sys_whonix["sys-whonix<br/>10.137.0.14"]
                anon_whonix["anon-whonix<br/>10.137.0.16<br/>rules not enforced"]
                whonix_workstation_18_dvm["whonix-workstation-18-dvm<br/>10.137.0.15<br/>rules not enforced"]
                untrusted["untrusted<br/>10.137.0.12"]
                work["work<br/>10.137.0.11"]
                subgraph nonet["no network"]
                    debian_13_xfce["debian-13-xfce"]
                    default_mgmt_dvm["default-mgmt-dvm"]
                    fedora_42_xfce["fedora-42-xfce"]
                    sys_usb["sys-usb"]
                    vault["vault"]
                    whonix_gateway_18["whonix-gateway-18"]
                    whonix_workstation_18["whonix-workstation-18"]
                end
                sys_net --> sys_firewall
                sys_firewall --> default_dvm
                sys_firewall --> personal
                sys_firewall --> sys_whonix
                sys_whonix --> anon_whonix
                sys_whonix --> whonix_workstation_18_dvm
                sys_firewall --> untrusted
                sys_firewall --> work
                classDef halted fill:#eeeeee,color:#777777,stroke-dasharray:4 3
                class default_dvm,sys_whonix,anon_whonix,whonix_workstation_18_dvm,untrusted,debian_13_xfce,default_mgmt_dvm,fedora_42_xfce,vault,whonix_gateway_18,whonix_workstation_18 halted
                classDef problem stroke:#cc0000,stroke-width:3px
                class personal problem

            """.Replace("\r", "", StringComparison.Ordinal), NetworkRenderer.Mermaid(Sample()));
    }

    [Fact]
    public void The_README_shows_the_sample_roots_diagram_and_tree_as_they_are()
    {
        var readme = File.ReadAllText(Path.Combine(TempRoot.SamplePath(), "..", "..", "README.md")).Replace("\r", "", StringComparison.Ordinal);
        var start = readme.IndexOf("```mermaid\n", StringComparison.Ordinal) + "```mermaid\n".Length;
        Assert.Equal(NetworkRenderer.Mermaid(Sample()), readme[start..(readme.IndexOf("```", start, StringComparison.Ordinal))]);
        var tree = readme.IndexOf("PS> Show-QubeNetwork\n", StringComparison.Ordinal) + "PS> Show-QubeNetwork\n".Length;
        Assert.Equal(NetworkRenderer.Tree(Sample(), TreeStyle.Plain), readme[tree..(readme.IndexOf("```", tree, StringComparison.Ordinal))]);
    }

    [Fact]
    public void The_sample_root_as_Dot()
    {
        var dot = NetworkRenderer.Dot(Sample());
        Assert.StartsWith("digraph qubes {\n    rankdir=LR;\n    node [shape=box, fontname=\"sans-serif\"];\n    \"sys-net\" [label=\"sys-net\\n10.137.0.5\"];\n", dot);
        Assert.Contains("    \"personal\" [label=\"personal\\n10.137.0.10\", color=red, penwidth=2];\n", dot);
        Assert.Contains("    \"anon-whonix\" [label=\"anon-whonix\\n10.137.0.16\\nrules not enforced\", style=dashed, fontcolor=gray40];\n", dot);
        Assert.Contains("    \"vault\" [label=\"vault\", style=dashed, fontcolor=gray40];\n", dot);
        var edges = dot.Split('\n').Where(l => l.Contains(" -> ", StringComparison.Ordinal)).ToList();
        Assert.Equal(
        [
            "    \"sys-net\" -> \"sys-firewall\";",
            "    \"sys-firewall\" -> \"default-dvm\";",
            "    \"sys-firewall\" -> \"personal\";",
            "    \"sys-firewall\" -> \"sys-whonix\";",
            "    \"sys-whonix\" -> \"anon-whonix\";",
            "    \"sys-whonix\" -> \"whonix-workstation-18-dvm\";",
            "    \"sys-firewall\" -> \"untrusted\";",
            "    \"sys-firewall\" -> \"work\";",
        ], edges);
        Assert.EndsWith("}\n", dot);
    }

    [Fact]
    public void Get_objects_carry_chain_enforcement_and_rule_summary()
    {
        var nodes = Sample().ToDictionary(n => n.Name);
        var work = nodes["work"];
        Assert.Equal(["sys-firewall", "sys-net"], work.NetVmChain);
        Assert.Equal((2, "sys-net", "sys-firewall"), (work.Depth, work.Uplink, work.EnforcedBy));
        Assert.Equal((7, "action=drop", false), (work.RuleCount, work.CatchAll, work.OpenToAll));
        Assert.Null(nodes["anon-whonix"].EnforcedBy);
        Assert.Contains("Whonix gateway", nodes["anon-whonix"].Enforcement);
        Assert.True(nodes["anon-whonix"].OpenToAll);
        Assert.Equal(["default-dvm", "personal", "sys-whonix", "untrusted", "work"], nodes["sys-firewall"].Clients);
        Assert.Equal("HostName", Assert.Single(nodes["personal"].Problems).Check);
        Assert.Null(nodes["vault"].NetVM);
        Assert.Empty(nodes["vault"].NetVmChain);
    }

    [Fact]
    public void A_copied_forward_is_marked_in_the_tree_and_left_out_of_the_diagrams()
    {
        using var root = new TempRoot();
        // bound to personal's uuid (the sample's qubes.xml), found on work: what qvm-clone of personal would leave
        root.Backend.SetFeature("work", "qubesfirewall.forward.tcp.8080", "uuid=30f0be04-363a-548e-b2e8-c23ae627912a target=8080 type=external allow=10.0.0.0/8");
        var nodes = NetworkView.Build(new AuditContext(root.Backend.GetInventory(), root.Backend.GetFirewall, root.Now));
        Assert.Contains("            => forward tcp/8080 from 10.0.0.0/8 (external) COPIED from another qube, never deployed\n", NetworkRenderer.Tree(nodes, TreeStyle.Plain));
        Assert.DoesNotContain("outside", NetworkRenderer.Mermaid(nodes));
        Assert.DoesNotContain("(outside)", NetworkRenderer.Dot(nodes));
    }

    [Fact]
    public void Forwards_links_and_bindings_are_marked_where_they_touch()
    {
        using var root = new TempRoot(QubesXmlBuilder.Standard().Build("sys-firewall"));
        root.Backend.SetFeature("work", "qubesfirewall.forward.tcp.443", "target=8443 type=external allow=192.168.1.0/24");
        root.Backend.SetFeature("personal", "qubesfirewall.forward.udp.53", "target=53 type=internal");
        root.Backend.SetFeature("work", "qubesfirewall.link.personal.tcp.5432", "1");
        root.Backend.SetFeature("untrusted", "qubesfirewall.tcp.work.444", "localport=10444 permanent=yes");
        // the agent keys the declarations derive, as a deployment leaves them
        var declared = root.Backend.GetInventory();
        foreach (var key in Agent.AgentFeatures.Changes(declared, Agent.AgentFeatures.DeriveAll(declared))) root.Backend.SetFeature(key.VMName, key.Feature, key.Value!);
        // the link was declared by hand, without the accept in work's own firewall: the audit says so, and so does the tree
        var nodes = NetworkView.Build(new AuditContext(root.Backend.GetInventory(), root.Backend.GetFirewall, root.Now));
        var tree = NetworkRenderer.Tree(nodes, TreeStyle.Plain);
        Assert.Contains("""
                +-- personal  10.137.0.10  accepts everything, enforced by sys-firewall  (halted)
                |       => forward udp/53 from anywhere (internal, via sys-firewall)
                |       <- link work -> personal tcp/5432
            """.Replace("\r", "", StringComparison.Ordinal), tree);
        Assert.Contains("""
                |       ~> binding untrusted -> work:444 (qubes.ConnectTCP, listening on 127.0.0.1:10444)
                `-- work  10.137.0.11  accepts everything, enforced by sys-firewall  (halted)  ! 1 error
                        => forward tcp/443 -> 8443 from 192.168.1.0/24 (external, via sys-net, sys-firewall)
                        -> link work -> personal tcp/5432
                        <~ binding untrusted -> work:444 (qubes.ConnectTCP)
                        ! Error LinkIncomplete
            """.Replace("\r", "", StringComparison.Ordinal), tree);
        var mermaid = NetworkRenderer.Mermaid(nodes);
        Assert.Contains("    outside((outside))\n", mermaid);
        Assert.Contains("    outside -.->|\"tcp/443 from 192.168.1.0/24\"| work\n", mermaid);
        Assert.Contains("    sys_firewall -.->|\"udp/53 from anywhere\"| personal\n", mermaid);
        Assert.Contains("    work ==>|\"tcp/5432\"| personal\n", mermaid);
        Assert.Contains("    untrusted -.->|\"ConnectTCP 444\"| work\n", mermaid);
        var dot = NetworkRenderer.Dot(nodes);
        Assert.Contains("    \"(outside)\" -> \"work\" [style=dashed, label=\"tcp/443 from 192.168.1.0/24\"];\n", dot);
        Assert.Contains("    \"work\" -> \"personal\" [style=bold, label=\"tcp/5432\"];\n", dot);
        Assert.Contains("    \"untrusted\" -> \"work\" [style=dotted, label=\"ConnectTCP 444\"];\n", dot);
        // the forward crosses sys-net and sys-firewall: their objects list it too
        Assert.Single(nodes.Single(n => n.Name == "sys-net").Forwards, f => f.VMName == "work");
    }
}
