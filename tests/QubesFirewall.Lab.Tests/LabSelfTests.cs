using System.Diagnostics;
using QubesFirewall.Lab.Tests.Lab;
using Xunit.Abstractions;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// Proves the lab itself: topology, baseline behaviour, masquerade, the agent stand-in, reboot semantics and hygiene.
/// Each negative check comes with a positive control, so a broken lab (no route, no server) cannot pass as "blocked".
/// </summary>
[Collection(LabCollection.Name)]
public sealed class LabSelfTests
{
    private const int Port = 8080;

    /// <summary>Expected-blocked attempts wait this long (a reply inside the namespaces takes milliseconds).</summary>
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(500);

    private readonly LabTopology _lab;
    private readonly ITestOutputHelper _output;

    public LabSelfTests(LabTopology lab, ITestOutputHelper output)
    {
        _lab = lab;
        _output = output;
        var sw = Stopwatch.StartNew();
        _lab.Reset();
        _output.WriteLine($"lab {_lab.Prefix}: built in {_lab.SetupTime.TotalMilliseconds:F0} ms, reset in {sw.ElapsedMilliseconds} ms");
    }

    /// <summary>A connection attempt that is expected to fail (short timeout); returns the result for the message.</summary>
    private LabConnectResult Blocked(LabTopology lab, string from, string host, int port, LabProtocol protocol = LabProtocol.Tcp)
    {
        var r = lab.Connect(from, host, port, protocol, Short);
        Assert.False(r.Connected, $"{from} -> {host}:{port}/{protocol} should be blocked but {r}");
        return r;
    }

    [Fact]
    public void Topology_IsWiredLikeQubes()
    {
        Assert.All(_lab.Nodes, n => Assert.StartsWith(_lab.Prefix, n.Namespace, StringComparison.Ordinal));
        var present = LabJanitor.ListNamespaces();
        Assert.All(_lab.Nodes, n => Assert.Contains(n.Namespace, present));

        Assert.Equal("10.137.0.5", _lab.Ip("work"));
        Assert.Equal("vif5.0", _lab.Node("work").Vif);

        // app qube: /32 on eth0 in group 1, gateway = its netvm's own address
        var workAddr = _lab.Exec("work", "ip", "-o", "-4", "addr", "show", "dev", "eth0").EnsureSuccess().StdOut;
        Assert.Contains("inet 10.137.0.5/32", workAddr);
        Assert.Contains("group 1", _lab.Exec("work", "ip", "-d", "link", "show", "eth0").EnsureSuccess().StdOut);
        Assert.Contains("default via 10.137.0.3 dev eth0", _lab.Exec("work", "ip", "route").EnsureSuccess().StdOut);

        // netvm: the client's vif in group 2, carrying the netvm's address, with a /32 route to the client
        var vif = _lab.Exec("sys-firewall", "ip", "-d", "link", "show", "vif5.0").EnsureSuccess().StdOut;
        Assert.Contains("group 2", vif);
        Assert.Contains("inet 10.137.0.3/32", _lab.Exec("sys-firewall", "ip", "-o", "-4", "addr", "show", "dev", "vif5.0").StdOut);
        Assert.Contains("10.137.0.5 dev vif5.0", _lab.Exec("sys-firewall", "ip", "route").StdOut);
        Assert.Contains("group 1", _lab.Exec("sys-firewall", "ip", "-d", "link", "show", "eth0").StdOut);

        // sys-net: physical NIC in group 0 on the LAN, forwarding on; app qubes do not forward
        Assert.Contains("group default", _lab.Exec("sys-net", "ip", "-d", "link", "show", "ens6").StdOut);
        Assert.Contains("inet 192.168.1.10/24", _lab.Exec("sys-net", "ip", "-o", "-4", "addr", "show", "dev", "ens6").StdOut);
        Assert.Equal("1", _lab.Exec("sys-net", "cat", "/proc/sys/net/ipv4/ip_forward").StdOut.Trim());
        Assert.Equal("0", _lab.Exec("work", "cat", "/proc/sys/net/ipv4/ip_forward").StdOut.Trim());

        // the VPN-like qube serves its own client
        Assert.Equal("sys-vpn", _lab.Node("vpn-app").NetVm!.Name);
        Assert.Contains("default via 10.137.0.4 dev eth0", _lab.Exec("vpn-app", "ip", "route").StdOut);
    }

    [Fact]
    public void OutsideCannotReachAQubePort_ForwardDropTowardGroup2()
    {
        // sys-firewall is sys-net's client: routed, but the forward chain drops anything new toward a vif
        using var server = _lab.StartServer("sys-firewall", Port);
        Blocked(_lab, "outside", _lab.Ip("sys-firewall"), Port);

        // positive control, one hop at a time: sys-net's forward, then sys-firewall's own input
        _lab.NftApply("sys-net", "add rule ip qubes custom-forward iifname \"ens6\" ip daddr 10.137.0.3 tcp dport 8080 accept\n");
        Blocked(_lab, "outside", _lab.Ip("sys-firewall"), Port); // sys-firewall's own input still drops it
        _lab.NftApply("sys-firewall", "add rule ip qubes custom-input tcp dport 8080 accept\n");
        var open = _lab.Connect("outside", _lab.Ip("sys-firewall"), Port);
        Assert.True(open.Connected, open.ToString());
        Assert.Equal("sys-firewall", open.ServerNode);
        Assert.Equal("192.168.1.50", open.PeerAddress); // inbound traffic keeps its source (no NAT toward clients)
    }

    [Fact]
    public void OutsideCannotReachAnAppQubePort_UntilForwardedHopByHop()
    {
        using var server = _lab.StartServer("work", Port);
        Blocked(_lab, "outside", _lab.Ip("work"), Port); // as in Qubes, sys-net has no route to sys-firewall's clients
        Blocked(_lab, "outside", "192.168.1.10", Port); // sys-net's input drops it

        // positive control: the documented manual port forward (DNAT + forward accept per hop, input in the target)
        _lab.NftApply("sys-net", """
            table ip qubes {
                chain custom-dnat-lab {
                    type nat hook prerouting priority filter + 1; policy accept;
                    iifname "ens6" ip saddr 192.168.1.50 tcp dport 8080 dnat to 10.137.0.3
                }
            }
            add rule ip qubes custom-forward iifname "ens6" ip saddr 192.168.1.50 ip daddr 10.137.0.3 tcp dport 8080 accept
            """);
        _lab.NftApply("sys-firewall", """
            table ip qubes {
                chain custom-dnat-lab {
                    type nat hook prerouting priority filter + 1; policy accept;
                    iifgroup 1 ip saddr 192.168.1.50 tcp dport 8080 dnat to 10.137.0.5
                }
            }
            add rule ip qubes custom-forward iifgroup 1 ip saddr 192.168.1.50 ip daddr 10.137.0.5 tcp dport 8080 accept
            """);
        Blocked(_lab, "outside", "192.168.1.10", Port); // work's own input chain still drops it
        _lab.NftApply("work", "add rule ip qubes custom-input ip daddr 10.137.0.5 tcp dport 8080 accept\n");

        var open = _lab.Connect("outside", "192.168.1.10", Port);
        Assert.True(open.Connected, open.ToString());
        Assert.Equal("work", open.ServerNode);
        Assert.Equal("192.168.1.50", open.PeerAddress);
        Blocked(_lab, "outside2", "192.168.1.10", Port); // a source the forward does not name
    }

    [Fact]
    public void AppQubeReachesOutside_MasqueradedAsSysNet()
    {
        using var server = _lab.StartServer("outside", Port);
        var r = _lab.Connect("work", _lab.Ip("outside"), Port);
        Assert.True(r.Connected, r.ToString());
        Assert.Equal("outside", r.ServerNode);
        Assert.Equal("192.168.1.10", r.PeerAddress);

        // through the VPN-like qube too (masquerade at each of its three hops)
        var vpn = _lab.Connect("vpn-app", _lab.Ip("outside"), Port);
        Assert.True(vpn.Connected, vpn.ToString());
        Assert.Equal("192.168.1.10", vpn.PeerAddress);

        using var udp = _lab.StartServer("outside", 5353, LabProtocol.Udp);
        var u = _lab.Connect("personal", _lab.Ip("outside"), 5353, LabProtocol.Udp);
        Assert.True(u.Connected, u.ToString());
        Assert.Equal("192.168.1.10", u.PeerAddress);
    }

    [Fact]
    public void AppQubeCannotReachAnotherAppQube_UntilForwardAndInputAllowIt()
    {
        using var server = _lab.StartServer("personal", Port);
        Blocked(_lab, "work", _lab.Ip("personal"), Port);

        _lab.NftApply("sys-firewall", "add rule ip qubes custom-forward ip saddr 10.137.0.5 ip daddr 10.137.0.6 tcp dport 8080 accept\n");
        _lab.NftApply("personal", "add rule ip qubes custom-input ip saddr 10.137.0.5 tcp dport 8080 accept\n");
        var open = _lab.Connect("work", _lab.Ip("personal"), Port);
        Assert.True(open.Connected, open.ToString());
        Assert.Equal("10.137.0.5", open.PeerAddress); // qube to qube: no masquerade toward group 2

        // the other direction stays closed
        using var back = _lab.StartServer("work", Port);
        Blocked(_lab, "personal", _lab.Ip("work"), Port);
    }

    [Fact]
    public void AgentStandIn_EnforcesEachClientsOwnFirewall()
    {
        using var server = _lab.StartServer("outside", Port);
        using var server2 = _lab.StartServer("outside2", Port);
        Assert.True(_lab.Connect("work", _lab.Ip("outside"), Port).Connected, "default firewall accepts");

        var dropAll = _lab.LoadFirewallAgent("sys-firewall", LabDbEntry.ForClient("10.137.0.5"));
        Assert.Equal(LabAgentClientStatus.Applied, dropAll.For("10.137.0.5").Status);
        Assert.Equal(LabAgentClientStatus.DefaultAccept, dropAll.For("10.137.0.6").Status);
        var denied = Blocked(_lab, "work", _lab.Ip("outside"), Port);
        Assert.Contains("No route to host", denied.Error); // rejected with admin-prohibited, not silently dropped
        Assert.True(_lab.Connect("personal", _lab.Ip("outside"), Port).Connected, "another client keeps its default firewall");

        var ruleset = _lab.ListRuleset("sys-firewall");
        Assert.Contains("chain qbs-10-137-0-5 {", ruleset);
        Assert.Contains("ip saddr 10.137.0.5 jump qbs-10-137-0-5", ruleset);

        _lab.LoadFirewallAgent("sys-firewall", LabDbEntry.ForClient("10.137.0.5",
            "action=accept dst4=192.168.1.50/32 proto=tcp dstports=8080-8080"));
        var allowed = _lab.Connect("work", _lab.Ip("outside"), Port);
        Assert.True(allowed.Connected, allowed.ToString());
        Blocked(_lab, "work", _lab.Ip("outside2"), Port); // only the accepted destination is open

        // the agent of the next hop enforces the clients it serves (sys-firewall is sys-net's client)
        _lab.LoadFirewallAgent("sys-net", LabDbEntry.ForClient("10.137.0.3", "action=accept dst4=192.168.1.60/32"));
        Blocked(_lab, "work", _lab.Ip("outside"), Port);
        Assert.True(_lab.Connect("personal", _lab.Ip("outside2"), Port).Connected);
    }

    [Fact]
    public void AgentStandIn_SpecialTargetDns_FollowsTheDnsDnat()
    {
        using var dns = _lab.StartServer(LabTopology.LanNode, 53, LabProtocol.Udp);
        using var web = _lab.StartServer("outside", Port);
        _lab.LoadFirewallAgent("sys-firewall", LabDbEntry.ForClient("10.137.0.5", "action=accept specialtarget=dns"));

        // 10.139.1.1 is DNATed hop by hop to sys-net's resolver (the LAN router)
        var q = _lab.Connect("work", "10.139.1.1", 53, LabProtocol.Udp);
        Assert.True(q.Connected, q.ToString());
        Assert.Equal(LabTopology.LanNode, q.ServerNode);
        Assert.Equal("192.168.1.10", q.PeerAddress);
        Blocked(_lab, "work", _lab.Ip("outside"), Port);
        Blocked(_lab, "work", _lab.Ip("outside"), 53, LabProtocol.Udp); // port 53 elsewhere is not DNS
    }

    [Fact]
    public void AgentStandIn_UnparsableEntriesBlockTheClient()
    {
        using var server = _lab.StartServer("outside", Port);
        var r = _lab.LoadFirewallAgent("sys-firewall", LabDbEntry.ForClient("10.137.0.5", "drop", ["action=forward dst4=192.168.1.50/32"]));
        Assert.Equal(LabAgentClientStatus.BlockedParseError, r.For("10.137.0.5").Status);
        Blocked(_lab, "work", _lab.Ip("outside"), Port);

        var r2 = _lab.LoadFirewallAgent("sys-firewall", LabDbEntry.ForClient("10.137.0.5", "action=accept dsthost=nowhere.example"));
        Assert.Equal(LabAgentClientStatus.BlockedParseError, r2.For("10.137.0.5").Status);
        Assert.Contains("Failed to resolve", r2.For("10.137.0.5").Message);

        var r3 = _lab.LoadFirewallAgent("sys-firewall", LabDbEntry.ForClient("10.137.0.5", "action=accept proto=tcp dstports=90-80"));
        Assert.Equal(LabAgentClientStatus.BlockedApplyError, r3.For("10.137.0.5").Status);
        Blocked(_lab, "work", _lab.Ip("outside"), Port);
        Assert.True(_lab.Connect("personal", _lab.Ip("outside"), Port).Connected);
    }

    [Fact]
    public void AgentStandIn_TranslatesRulesLikeTheQubesAgent()
    {
        var entries = LabDbEntry.ForClient("10.137.0.5",
            "action=accept dst4=10.137.0.6/32 proto=tcp dstports=80-80",
            "action=accept dst4=192.168.1.0/24 dstports=1000-2000",
            "action=accept proto=icmp icmptype=8",
            "action=accept specialtarget=dns",
            "action=accept specialtarget=dns proto=tcp dstports=443-443",
            "action=drop dst4=192.168.1.60/32",
            "action=accept dsthost=web.lab proto=tcp dstports=443-443");
        var ctx = new LabAgentContext(["10.139.1.1", "10.139.1.2"], [], ["10.137.0.5"], [], false,
            new Dictionary<string, IReadOnlyList<string>> { ["web.lab"] = ["192.168.1.50", "2001:db8:1::50"] });

        var text = LabFirewallAgent.RenderClientRules("10.137.0.5", LabFirewallAgent.ReadRules(entries, "10.137.0.5"), ctx);
        var lines = text.Split('\n').Select(l => l.Trim()).ToList();
        Assert.Equal(
            [
                "ip protocol tcp ip daddr 10.137.0.6/32 tcp dport 80 accept",
                "ip daddr 192.168.1.0/24 tcp dport 1000-2000 accept",
                "ip daddr 192.168.1.0/24 udp dport 1000-2000 accept",
                "ip protocol icmp icmp type 8 accept",
                "ip daddr @dns-addr tcp dport 53 accept",
                "ip daddr @dns-addr udp dport 53 accept",
                // a dns rule on another port is left out, as the agent does
                "ip daddr 192.168.1.60/32 reject with icmp type admin-prohibited",
                "ip protocol tcp ip daddr { 192.168.1.50/32 } tcp dport 443 accept",
                "reject with icmp type admin-prohibited",
            ],
            lines.SkipWhile(l => !l.StartsWith("chain qbs-10-137-0-5", StringComparison.Ordinal)).Skip(1).TakeWhile(l => l != "}").ToList());
        Assert.Contains("add element ip qubes-firewall dns-addr { 10.139.1.1, 10.139.1.2 }", lines);
        Assert.Equal("qbs-fd09-24ef-4179--a89-5", LabFirewallAgent.ChainFor("fd09:24ef:4179::a89:5"));

        // and nft loads it in the lab, listing the same meaning
        var r = _lab.LoadFirewallAgent("sys-firewall", entries, ctx.Hosts);
        Assert.Equal(LabAgentClientStatus.Applied, r.For("10.137.0.5").Status);
        var listed = _lab.ListRuleset("sys-firewall");
        Assert.Contains("ip daddr 10.137.0.6 tcp dport 80 accept", listed);
        Assert.Contains("ip daddr 192.168.1.60 reject with icmp admin-prohibited", listed);
        Assert.Contains("iifname != \"vif*\" ip saddr { 10.137.0.4, 10.137.0.5, 10.137.0.6, 10.137.0.7 } drop", listed);
        _lab.Reboot("sys-firewall");
        Assert.Equal(listed, _lab.ListRuleset("sys-firewall")); // the agent comes back with the same entries and names
    }

    [Fact]
    public void Baseline_ReloadingLeavesTheRulesetIdentical()
    {
        foreach (var q in _lab.Qubes)
        {
            var before = _lab.ListRuleset(q.Name);
            Assert.Contains("chain custom-input {", before);
            Assert.Contains("chain custom-forward {", before);
            Assert.Contains("jump custom-forward", before);
            Assert.DoesNotContain("flowtable", before);
            Assert.Equal(q.ProvidesNetwork, before.Contains("chain dnat-dns {"));
            Assert.Equal(q.RunsFirewallService, before.Contains("table ip qubes-firewall {"));

            _lab.Reboot(q.Name);
            Assert.Equal(before, _lab.ListRuleset(q.Name));
            _lab.NftApply(q.Name, LabBaseline.Render(q));
            _lab.Reboot(q.Name);
            Assert.Equal(before, _lab.ListRuleset(q.Name));
        }

        // and a change is visible: the comparison can fail
        var base0 = _lab.ListRuleset("work");
        _lab.NftApply("work", "add rule ip qubes custom-input tcp dport 22 accept\n");
        Assert.NotEqual(base0, _lab.ListRuleset("work"));
    }

    [Fact]
    public void Reboot_RunsOnlyExecutableHooks_InQubesOrder()
    {
        const string marker = "comment \"lab-user-script\"";
        var script = "#!/bin/bash\nnft add rule ip qubes custom-forward tcp dport 9 accept " + marker + "\n";
        _lab.WriteRwConfig("sys-firewall", "qubes-firewall-user-script", script, executable: false);
        Assert.Empty(_lab.Reboot("sys-firewall"));
        Assert.DoesNotContain("lab-user-script", _lab.ListRuleset("sys-firewall"));

        _lab.SetRwConfigExecutable("sys-firewall", "qubes-firewall-user-script", true);
        var runs = _lab.Reboot("sys-firewall");
        Assert.Single(runs);
        Assert.True(runs[0].Success, runs[0].ToString());
        var once = _lab.ListRuleset("sys-firewall");
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(once, "lab-user-script"));
        _lab.Reboot("sys-firewall");
        Assert.Equal(once, _lab.ListRuleset("sys-firewall"));

        // app qubes run rc.local (not the firewall user script); the script sees its /rw/config folder
        _lab.WriteRwConfig("work", "qubes-firewall-user-script", script, executable: true);
        _lab.WriteRwConfig("work", "rc.local", "#!/bin/bash\nset -e\nnft add rule ip qubes custom-input tcp dport 8080 accept\necho ran > \"$QFW_LAB_RW_CONFIG/ran\"\n", executable: true);
        _lab.Reboot("work");
        var work = _lab.ListRuleset("work");
        Assert.DoesNotContain("lab-user-script", work);
        Assert.Contains("tcp dport 8080 accept", work);
        Assert.Equal("ran\n", _lab.ReadRwConfig("work", "ran"));

        // RunPersisted runs a file whatever its mode
        _lab.WriteRwConfig("personal", "rc.local", "#!/bin/bash\nexit 3\n");
        Assert.Equal(3, _lab.RunPersisted("personal", "rc.local").ExitCode);
    }

    [Fact]
    public void Servers_AreCleanedUp()
    {
        var server = _lab.StartServer("personal", 9999);
        _lab.NftApply("personal", "add rule ip qubes custom-input tcp dport 9999 accept\n");
        _lab.NftApply("sys-firewall", "add rule ip qubes custom-forward ip daddr 10.137.0.6 tcp dport 9999 accept\n");
        Assert.True(_lab.Connect("work", _lab.Ip("personal"), 9999).Connected);
        var pid = server.ProcessId;
        server.Dispose();
        Assert.False(Directory.Exists($"/proc/{pid}"), "the server process is gone");
        var after = _lab.Connect("work", _lab.Ip("personal"), 9999);
        Assert.False(after.Connected);
        Assert.Contains("refused", after.Error);
        Assert.Empty(_lab.Exec("personal", "ss", "-Hltn", "sport = :9999").StdOut.Trim());
    }

    [Fact]
    public void Janitor_RemovesLeftoversOfDeadRuns_AndKeepsLiveOnes()
    {
        // pid 4194305 is above the kernel's pid_max: that run is certainly dead
        const string stale = "qfw4194305n1-sys-net";
        LabProcess.Run(["ip", "netns", "add", stale]).EnsureSuccess();
        var staleDir = Path.Combine(Path.GetTempPath(), LabJanitor.WorkDirPrefix + "qfw4194305n1-");
        Directory.CreateDirectory(staleDir);
        try
        {
            var removed = LabJanitor.RemoveLeftovers();
            Assert.Contains(stale, removed);
            Assert.DoesNotContain(stale, LabJanitor.ListNamespaces());
            Assert.False(Directory.Exists(staleDir));
            Assert.All(_lab.Nodes, n => Assert.Contains(n.Namespace, LabJanitor.ListNamespaces()));
            Assert.True(Directory.Exists(_lab.WorkDir));
        }
        finally
        {
            LabProcess.Run(["ip", "netns", "delete", stale]);
        }
    }

    [Fact]
    public void Preflight_NamesEveryMissingPiece()
    {
        var problems = LabPreflight.Problems(["ip", "no-such-tool-qfw"], isRoot: false, t => t == "ip" ? "/usr/sbin/ip" : null);
        Assert.Equal(2, problems.Count);
        Assert.Contains("root", problems[0]);
        Assert.Contains("no-such-tool-qfw", problems[1]);
        Assert.Empty(LabPreflight.Problems(LabPreflight.RequiredTools, isRoot: true, LabProcess.Which));
    }

    [Fact]
    public void Ipv6Variant_RoutesAndMasqueradesLikeIpv4()
    {
        var options = LabTopologyOptions.Default with
        {
            Ipv6 = true,
            Qubes = [.. LabTopologyOptions.Default.Qubes.Select(q => q.Name == "untrusted" ? q with { Ipv6 = false } : q)],
        };
        using var lab6 = LabTopology.Create(options);
        Assert.Equal("fd09:24ef:4179::a89:5", lab6.Ip6("work"));
        Assert.Null(lab6.Node("untrusted").Ip6);
        Assert.Contains("table ip6 qubes-firewall {", lab6.ListRuleset("sys-firewall"));
        Assert.Contains("chain qbs-fd09-24ef-4179--a89-5 {", lab6.ListRuleset("sys-firewall"));

        using var server = lab6.StartServer("outside", Port);
        var r = lab6.Connect("work", lab6.Ip6("outside"), Port);
        Assert.True(r.Connected, r.ToString());
        Assert.Equal("2001:db8:1::10", r.PeerAddress);
        Blocked(lab6, "untrusted", lab6.Ip6("outside"), Port); // opted out: no IPv6 address, route or forward

        using var inside = lab6.StartServer("work", Port);
        Blocked(lab6, "outside", lab6.Ip6("work"), Port);

        lab6.LoadFirewallAgent("sys-firewall", LabDbEntry.ForClient(lab6.Ip6("work")));
        var denied = Blocked(lab6, "work", lab6.Ip6("outside"), Port);
        Assert.True(lab6.Connect("work", lab6.Ip("outside"), Port).Connected, "IPv4 keeps its own (default) rules");
    }
}
