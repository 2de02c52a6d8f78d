using QubesFirewall.Engine.Deployment;
using System.Diagnostics;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;
using Xunit.Abstractions;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// Inter-qube links proven on real netfilter: the engine's link plan applied to an offline root shaped like the
/// lab, its files copied into the qubes' /rw/config, its scripts run in the namespaces, and the source's Qubes
/// firewall (the offline root's firewall.xml, rendered to QubesDB entries by the engine) loaded into the
/// qubes-firewall agent stand-in of sys-firewall, whose per-client qbs-* chains reject what the source's list
/// does not accept. Every "blocked" check has a positive control in the same test.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class InterVmLinkLabTests : IDisposable
{
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(400);
    private static readonly string[] AllQubes = ["sys-net", "sys-firewall", "sys-vpn", "work", "personal", "untrusted", "vpn-app"];

    private readonly LabTopology _lab;
    private readonly ITestOutputHelper _output;
    private readonly PortForwardLab _pf;
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public InterVmLinkLabTests(LabTopology lab, ITestOutputHelper output)
    {
        _lab = lab;
        _output = output;
        _lab.Reset();
        _pf = new PortForwardLab(lab);
    }

    public void Dispose()
    {
        _output.WriteLine($"test took {_clock.ElapsedMilliseconds} ms; scripts run: {_pf.Ran.Count}");
        _pf.Dispose();
    }

    [Fact]
    public void Link_opens_exactly_one_direction_port_and_source_and_disable_restores_every_ruleset()
    {
        RestrictFirewall(_pf, "work");
        SyncAgent(_lab, _pf);
        using var db = _lab.StartServer("personal", 5432);
        using var other = _lab.StartServer("personal", 5433);
        using var back = _lab.StartServer("work", 5432);
        var before = Rulesets(_lab);
        Blocked(_lab, "work", _lab.Ip("personal"), 5432); // nothing linked yet

        var plan = Enable(_lab, _pf, "work", "personal", 5432);
        Assert.Equal(PlanOperation.Enable, plan.Operation);
        Assert.Equal("sys-firewall", plan.NetVM);

        var r = Open(_lab, "work", _lab.Ip("personal"), 5432);
        Assert.Equal("personal", r.ServerNode);
        Assert.Equal(_lab.Ip("work"), r.PeerAddress); // routed, not translated: the destination sees the source
        Blocked(_lab, "personal", _lab.Ip("work"), 5432); // B -> A: one direction only
        Blocked(_lab, "untrusted", _lab.Ip("personal"), 5432); // C, behind the same sys-firewall: not linked
        Blocked(_lab, "work", _lab.Ip("personal"), 5433); // another port of B

        var sysFirewall = _lab.ListRuleset("sys-firewall");
        Assert.Contains("jump qubesfw-link-forward comment \"qubesfirewall-link\"", sysFirewall);
        Assert.DoesNotContain("qubesfw-link-input", sysFirewall);
        Assert.Contains("jump qubesfw-link-input comment \"qubesfirewall-link\"", _lab.ListRuleset("personal"));

        // re-running changes nothing: no file write, no feature, no firewall edit; the scripts leave the same rulesets
        var during = Rulesets(_lab);
        var again = Enable(_lab, _pf, "work", "personal", 5432);
        Assert.Equal(PlanOperation.Reapply, again.Operation);
        Assert.DoesNotContain(again.Steps, s => s.Kind is DeploymentStepKind.WriteFile or DeploymentStepKind.SetFeature or DeploymentStepKind.EditFirewall);
        Assert.Equal(during, Rulesets(_lab));

        // a reboot of each qube from its persisted files gives the same rulesets and the link still works
        foreach (var qube in new[] { "sys-firewall", "personal" })
            Assert.All(_pf.Restart(qube), run => run.EnsureSuccess($"hook in {qube}"));
        Assert.Equal(during, Rulesets(_lab));
        Assert.Equal("personal", Open(_lab, "work", _lab.Ip("personal"), 5432).ServerNode);

        var disable = _pf.Backend;
        var off = InterVmLinkPlanner.PlanDisable(disable, [InterVmLink.Create("work", "personal", ForwardProtocol.Tcp, new LinkPorts(5432, 5432))],
            DeploymentOptions.For(disable, _pf.Now));
        Execute(_lab, _pf, off);
        Blocked(_lab, "work", _lab.Ip("personal"), 5432);
        var after = Rulesets(_lab);
        foreach (var qube in AllQubes) Assert.Equal(before[qube], after[qube]);
        // nothing of the link was ever written into a qube: their agents had the keys
        Assert.Null(_lab.ReadRwConfig("personal", "rc.local"));
        Assert.Null(_lab.ReadRwConfig("sys-firewall", "qubes-firewall-user-script"));
        Assert.DoesNotContain(_pf.Backend.GetInventory().Get("work").Features.Keys, InterVmLinkFeature.IsLinkFeature);
        Assert.Equal(["action=drop"], _pf.Backend.GetFirewall("work").Rules.Select(x => x.Text));
    }

    [Fact]
    public void Without_the_sources_own_firewall_rule_the_network_qube_rejects_the_link()
    {
        RestrictFirewall(_pf, "work");
        SyncAgent(_lab, _pf);
        using var db = _lab.StartServer("personal", 5432);
        Enable(_lab, _pf, "work", "personal", 5432);
        Assert.Equal("personal", Open(_lab, "work", _lab.Ip("personal"), 5432).ServerNode);

        // take only the third part away: work's accept rule, as if removed by hand, and the agent reloads
        var rules = _pf.Backend.GetFirewall("work").VisibleAt(_pf.Now);
        var index = rules.ToList().FindIndex(x => x.Comment == "qubesfirewall link to personal");
        Assert.True(index >= 0);
        FirewallPlanner.PlanRemove(_pf.Backend, "work", [(index, rules[index].Text)], _pf.Now).Apply(_pf.Backend);
        SyncAgent(_lab, _pf);
        var denied = _lab.Connect("work", _lab.Ip("personal"), 5432, LabProtocol.Tcp, Short);
        Assert.False(denied.Connected, denied.ToString());
        var listed = InterVmLinkPlanner.List(_pf.Backend.GetInventory(), _pf.Backend.GetFirewall, _pf.Now).Single();
        Assert.Equal((true, true, false), (listed.ForwardRulePresent, listed.InputRulePresent, listed.FirewallRulePresent));

        // Enable again puts back just that part, and the link works again
        var again = Enable(_lab, _pf, "work", "personal", 5432);
        Assert.Contains(again.Steps, s => s.Kind == DeploymentStepKind.EditFirewall);
        Assert.DoesNotContain(again.Steps, s => s.Kind is DeploymentStepKind.WriteFile or DeploymentStepKind.SetFeature);
        Assert.Equal("personal", Open(_lab, "work", _lab.Ip("personal"), 5432).ServerNode);
    }

    [Fact]
    public void Links_both_ways_udp_and_all_ports_and_a_port_forward_through_the_same_network_qube_coexist()
    {
        RestrictFirewall(_pf, "work");
        RestrictFirewall(_pf, "personal");
        SyncAgent(_lab, _pf);
        using var udp = _lab.StartServer("personal", 5353, LabProtocol.Udp);
        using var workTcp = _lab.StartServer("work", 7000);
        using var fwd = _lab.StartServer("untrusted", 8080);
        var before = Rulesets(_lab);

        // a port forward crossing sys-firewall too: its chains and the links' chains live side by side
        _pf.Add(PortForward.Create("untrusted", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal, allowFrom: [_lab.Ip("vpn-app") + "/32", _lab.Ip("sys-vpn") + "/32"]));
        var links = InterVmLink.Expand("work", "personal", InterVmProtocol.Udp, [new LinkPorts(5353, 5353)], bidirectional: false)
            .Concat(InterVmLink.Expand("personal", "work", InterVmProtocol.Tcp, [], bidirectional: false)).ToList();
        Execute(_lab, _pf, InterVmLinkPlanner.PlanEnable(_pf.Backend, links, DeploymentOptions.For(_pf.Backend, _pf.Now)));

        Assert.Equal("personal", Open(_lab, "work", _lab.Ip("personal"), 5353, LabProtocol.Udp).ServerNode);
        Assert.Equal("work", Open(_lab, "personal", _lab.Ip("work"), 7000).ServerNode); // all tcp ports
        Blocked(_lab, "work", _lab.Ip("personal"), 5353, LabProtocol.Tcp); // udp only that way
        Blocked(_lab, "untrusted", _lab.Ip("work"), 7000);
        Assert.Equal("untrusted", Open(_lab, "vpn-app", _lab.Ip("sys-firewall"), 8080).ServerNode);

        // the forward's writer keeps the links' section of the shared block, and vice versa
        _pf.Remove("untrusted", ForwardProtocol.Tcp, 8080);
        Assert.Equal("personal", Open(_lab, "work", _lab.Ip("personal"), 5353, LabProtocol.Udp).ServerNode);
        Assert.Equal("work", Open(_lab, "personal", _lab.Ip("work"), 7000).ServerNode);

        Execute(_lab, _pf, InterVmLinkPlanner.PlanDisable(_pf.Backend, links, DeploymentOptions.For(_pf.Backend, _pf.Now)));
        Blocked(_lab, "personal", _lab.Ip("work"), 7000);
        var after = Rulesets(_lab);
        foreach (var qube in AllQubes) Assert.Equal(before[qube], after[qube]);
    }

    [Fact]
    public void Ipv6_link_works_when_ipv6_is_on_and_needs_its_dst6_rule()
    {
        var options = LabTopologyOptions.Default with { Ipv6 = true };
        using var lab6 = LabTopology.Create(options);
        using var pf6 = new PortForwardLab(lab6);
        Assert.NotNull(pf6.Backend.GetInventory().Get("work").IPv6);
        RestrictFirewall(pf6, "work");
        SyncAgent(lab6, pf6);
        using var db = lab6.StartServer("personal", 5432);
        var before = Rulesets(lab6);
        Blocked(lab6, "work", lab6.Ip6("personal"), 5432);

        var plan = Enable(lab6, pf6, "work", "personal", 5432);
        var firewall = pf6.Backend.GetFirewall("work").Rules.Select(r => r.Text).ToList();
        Assert.Contains("action=accept dst6=fd09:24ef:4179::a89:6/128 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal", firewall);
        Assert.Contains("action=accept dst4=10.137.0.6/32 proto=tcp dstports=5432-5432 comment=qubesfirewall link to personal", firewall);
        var v6 = Open(lab6, "work", lab6.Ip6("personal"), 5432);
        Assert.Equal(lab6.Ip6("work"), v6.PeerAddress);
        Assert.Equal("personal", Open(lab6, "work", lab6.Ip("personal"), 5432).ServerNode);
        Blocked(lab6, "untrusted", lab6.Ip6("personal"), 5432);
        Assert.True(InterVmLinkPlanner.List(pf6.Backend.GetInventory(), pf6.Backend.GetFirewall, pf6.Now).Single().IPv6);

        // without the dst6 rule the agent's ip6 qbs chain rejects IPv6, while IPv4 keeps working
        var rules = pf6.Backend.GetFirewall("work").VisibleAt(pf6.Now);
        var index = rules.ToList().FindIndex(x => x.DstHost?.Kind == HostKind.IPv6);
        FirewallPlanner.PlanRemove(pf6.Backend, "work", [(index, rules[index].Text)], pf6.Now).Apply(pf6.Backend);
        SyncAgent(lab6, pf6);
        Blocked(lab6, "work", lab6.Ip6("personal"), 5432);
        Assert.Equal("personal", Open(lab6, "work", lab6.Ip("personal"), 5432).ServerNode);
        Enable(lab6, pf6, "work", "personal", 5432);
        Assert.Equal("personal", Open(lab6, "work", lab6.Ip6("personal"), 5432).ServerNode);

        Execute(lab6, pf6, InterVmLinkPlanner.PlanDisable(pf6.Backend, plan.Links, DeploymentOptions.For(pf6.Backend, pf6.Now)));
        Blocked(lab6, "work", lab6.Ip6("personal"), 5432);
        var after = Rulesets(lab6);
        foreach (var qube in AllQubes) Assert.Equal(before[qube], after[qube]);
    }

    [Fact]
    public void Without_ipv6_the_link_opens_ipv4_only()
    {
        RestrictFirewall(_pf, "work");
        SyncAgent(_lab, _pf);
        using var db = _lab.StartServer("personal", 5432);
        var plan = Enable(_lab, _pf, "work", "personal", 5432);
        Assert.Equal("personal", Open(_lab, "work", _lab.Ip("personal"), 5432).ServerNode);
        Assert.DoesNotContain(plan.Steps, s => (s.Script ?? "").Contains("ip6 qubes", StringComparison.Ordinal));
        Assert.DoesNotContain(_pf.Backend.GetFirewall("work").Rules, r => r.DstHost?.Kind == HostKind.IPv6);
        Assert.Null(_lab.Node("personal").Ip6);
    }

    // ------------------------------------------------------------------ helpers

    private static InterVmLinkPlan Enable(LabTopology lab, PortForwardLab pf, string from, string to, int port)
    {
        var plan = InterVmLinkPlanner.PlanEnable(pf.Backend, [InterVmLink.Create(from, to, ForwardProtocol.Tcp, new LinkPorts(port, port))], DeploymentOptions.For(pf.Backend, pf.Now));
        Execute(lab, pf, plan);
        return plan;
    }

    /// <summary>Applies through the shared rollout, copies files and runs scripts in the lab, then reloads the agent when a rule list changed.</summary>
    private static void Execute(LabTopology lab, PortForwardLab pf, InterVmLinkPlan plan)
    {
        pf.Execute(plan);
        if (plan.Steps.Any(s => s.Kind == DeploymentStepKind.EditFirewall)) SyncAgent(lab, pf);
    }

    /// <summary>A list that lets nothing out but DNS: only what a link adds reaches other qubes.</summary>
    private static void RestrictFirewall(PortForwardLab pf, string vm)
    {
        var drop = FirewallRule.Create(RuleAction.Drop);
        pf.Backend.ApplyFirewallEdit(vm, new FirewallEdit([new RuleInsertion(drop, 0)], [new RuleRemoval(0, "action=accept")]), pf.Backend.GetFirewall(vm));
        Assert.Equal(["action=drop"], pf.Backend.GetFirewall(vm).Rules.Select(r => r.Text));
    }

    /// <summary>What qubesd does after a rule-list change: sys-firewall's QubesDB gets every client's entries (rendered by the engine), and its agent reloads.</summary>
    private static void SyncAgent(LabTopology lab, PortForwardLab pf)
    {
        var inventory = pf.Backend.GetInventory();
        var entries = inventory.ClientsOf("sys-firewall")
            .SelectMany(c => pf.Backend.SyncFirewall(c.Name))
            .Select(e => new LabDbEntry(e.Path, e.Value))
            .ToList();
        var result = lab.LoadFirewallAgent("sys-firewall", entries);
        Assert.All(result.Clients, c => Assert.Equal(LabAgentClientStatus.Applied, c.Status));
    }

    private static Dictionary<string, string> Rulesets(LabTopology lab) => AllQubes.ToDictionary(q => q, lab.ListRuleset);

    private static LabConnectResult Open(LabTopology lab, string from, string host, int port, LabProtocol protocol = LabProtocol.Tcp)
    {
        var r = lab.Connect(from, host, port, protocol);
        Assert.True(r.Connected, $"{from} -> {host}:{port}/{protocol} should connect but {r}");
        return r;
    }

    private static void Blocked(LabTopology lab, string from, string host, int port, LabProtocol protocol = LabProtocol.Tcp)
    {
        var r = lab.Connect(from, host, port, protocol, Short);
        Assert.False(r.Connected, $"{from} -> {host}:{port}/{protocol} should be blocked but {r}");
    }
}
