using System.Diagnostics;
using QubesFirewall.Engine;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;
using Xunit.Abstractions;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// Port forwards over IPv6 on real netfilter, in a lab where sys-net has the <c>ipv6</c> feature (so
/// sys-firewall, work and the others inherit it: fd09:24ef:4179::a89:&lt;qid&gt; inside, 2001:db8:1::/64 on the
/// LAN) and sys-vpn opts out (so vpn-app behind it has no IPv6). Every "blocked" has a positive control.
/// </summary>
[Collection(LabCollection.Name)]
public sealed class PortForwardIPv6LabTests : IDisposable
{
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(400);

    private const string SysNetLan = "192.168.1.10";
    private const string SysNetLan6 = "2001:db8:1::10";
    private const string Outside6 = "2001:db8:1::50";
    private const string Outside26 = "2001:db8:1::60";

    private static readonly string[] AllQubes = ["sys-net", "sys-firewall", "sys-vpn", "work", "personal", "untrusted", "vpn-app"];

    private readonly LabTopology _lab;
    private readonly PortForwardLab _pf;
    private readonly ITestOutputHelper _output;
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public PortForwardIPv6LabTests(ITestOutputHelper output)
    {
        _output = output;
        _lab = LabTopology.Create(LabTopologyOptions.Default with
        {
            Ipv6 = true,
            Qubes = [.. LabTopologyOptions.Default.Qubes.Select(q => q.Name == "sys-vpn" ? q with { Ipv6 = false } : q)],
        });
        _pf = new PortForwardLab(_lab);
    }

    public void Dispose()
    {
        _output.WriteLine($"test took {_clock.ElapsedMilliseconds} ms (lab setup {_lab.SetupTime.TotalMilliseconds:0} ms); scripts run: {_pf.Ran.Count}");
        _pf.Dispose();
        _lab.Dispose();
    }

    private Dictionary<string, string> Rulesets() => AllQubes.ToDictionary(q => q, _lab.ListRuleset);

    private LabConnectResult Open(string from, string host, int port)
    {
        var r = _lab.Connect(from, host, port);
        Assert.True(r.Connected, $"{from} -> {host}:{port} should connect but {r}");
        return r;
    }

    private void Blocked(string from, string host, int port)
    {
        var r = _lab.Connect(from, host, port, LabProtocol.Tcp, Short);
        Assert.False(r.Connected, $"{from} -> {host}:{port} should be blocked but {r}");
    }

    [Fact]
    public void An_ipv6_forward_works_from_outside_only_where_the_chain_has_ipv6_and_removal_restores_every_ruleset()
    {
        // the engine sees the lab's addresses
        var inventory = _pf.Backend.GetInventory();
        Assert.Equal(_lab.Ip6("work"), inventory.Get("work").IPv6);
        Assert.Null(inventory.Get("vpn-app").IPv6);

        using var work = _lab.StartServer("work", 8080);
        using var vpnApp = _lab.StartServer("vpn-app", 9000);
        var before = Rulesets();
        Blocked("outside", SysNetLan6, 8443); // nothing forwarded yet

        // work: IPv4 and IPv6, the IPv6 side only from outside's address, the IPv4 side from the LAN
        var plan = _pf.Add(PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, allowFrom: ["192.168.1.0/24", Outside6]));
        Assert.Equal("IPv4 and IPv6", plan.AddressFamilies);
        var r6 = Open("outside", SysNetLan6, 8443);
        Assert.Equal("work", r6.ServerNode);
        Assert.Equal(Outside6, r6.PeerAddress); // no NAT on the way in, as for IPv4
        Blocked("outside2", SysNetLan6, 8443); // its IPv6 address is not in -AllowFrom...
        Assert.Equal("work", Open("outside2", SysNetLan, 8443).ServerNode); // ...but its IPv4 network is: each family has its own sources
        Blocked("outside", _lab.Ip6("work"), 8080); // only through the forward, not routed straight at the target
        Blocked("outside", SysNetLan6, 8080); // the target port is not open at the edge

        // vpn-app: sys-vpn has IPv6 off, so the chain has none: the forward exists for IPv4 only
        var v4 = _pf.Add(PortForward.Create("vpn-app", ForwardProtocol.Tcp, 9443, 9000, allowFrom: ["192.168.1.0/24"]));
        Assert.Equal("IPv4", v4.AddressFamilies);
        Assert.Equal("vpn-app", Open("outside", SysNetLan, 9443).ServerNode); // control: the forward works over IPv4
        Blocked("outside", SysNetLan6, 9443); // and an IPv6 connection to the same port fails
        Assert.DoesNotContain("ip6 qubes qubesfw", string.Join("\n", _pf.Ran.Where(r => r.Qube is "sys-vpn" or "vpn-app").Select(r => r.Script)));
        // an IPv6 source for that chain is refused before anything changes
        var ex = Assert.Throws<QubesFirewallException>(() => _pf.Add(PortForward.Create("vpn-app", ForwardProtocol.Tcp, 9444, 9000, allowFrom: [Outside6])));
        Assert.Equal("IPv6NotEnabled", ex.ErrorId);

        // scripts rerun change nothing; a reboot from the persisted files gives the same rulesets, IPv6 included
        var withForwards = Rulesets();
        Assert.Contains("chain qubesfw-dnat", withForwards["sys-firewall"].Split("table ip6 qubes {")[1]);
        foreach (var qube in AllQubes)
        {
            if (_pf.Export(qube) is not { } script) continue;
            _pf.RunScriptRepeatedly(qube, script, 3).EnsureSuccess($"re-runs in {qube}");
            Assert.Equal(withForwards[qube], _lab.ListRuleset(qube));
        }
        foreach (var qube in AllQubes) Assert.All(_pf.Restart(qube), run => run.EnsureSuccess($"hook in {qube}"));
        foreach (var qube in AllQubes) Assert.Equal(withForwards[qube], _lab.ListRuleset(qube));
        Assert.Equal("work", Open("outside", SysNetLan6, 8443).ServerNode);

        // removing both gives every qube back the ruleset it had, ip and ip6 tables alike
        _pf.Remove("work", ForwardProtocol.Tcp, 8443);
        Blocked("outside", SysNetLan6, 8443);
        Assert.Equal("vpn-app", Open("outside", SysNetLan, 9443).ServerNode);
        _pf.Remove("vpn-app", ForwardProtocol.Tcp, 9443);
        var after = Rulesets();
        foreach (var qube in AllQubes) Assert.Equal(before[qube], after[qube]);
    }
}
