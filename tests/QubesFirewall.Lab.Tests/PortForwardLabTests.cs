using System.Diagnostics;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Lab.Tests.Lab;
using Xunit.Abstractions;

namespace QubesFirewall.Lab.Tests;

/// <summary>
/// Port forwarding proven on real netfilter: the engine's plan applied to an offline root shaped like the
/// lab, its files copied into the qubes' /rw/config, its scripts run with bash in the namespaces, real TCP
/// and UDP through sys-net, sys-firewall and the VPN-like sys-vpn. Every "blocked" check has a positive
/// control in the same test, so a broken lab cannot pass as "blocked".
/// </summary>
[Collection(LabCollection.Name)]
public sealed class PortForwardLabTests : IDisposable
{
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(400);

    private const string SysNetLan = "192.168.1.10";
    private const string Outside = "192.168.1.50";

    private readonly LabTopology _lab;
    private readonly ITestOutputHelper _output;
    private readonly PortForwardLab _pf;
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public PortForwardLabTests(LabTopology lab, ITestOutputHelper output)
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

    private static readonly string[] AllQubes = ["sys-net", "sys-firewall", "sys-vpn", "work", "personal", "untrusted", "vpn-app"];

    private Dictionary<string, string> Rulesets() => AllQubes.ToDictionary(q => q, _lab.ListRuleset);

    private LabConnectResult Open(string from, string host, int port, LabProtocol protocol = LabProtocol.Tcp)
    {
        var r = _lab.Connect(from, host, port, protocol);
        Assert.True(r.Connected, $"{from} -> {host}:{port}/{protocol} should connect but {r}");
        return r;
    }

    private void Blocked(string from, string host, int port, LabProtocol protocol = LabProtocol.Tcp)
    {
        var r = _lab.Connect(from, host, port, protocol, Short);
        Assert.False(r.Connected, $"{from} -> {host}:{port}/{protocol} should be blocked but {r}");
    }

    [Fact]
    public void External_forward_reaches_the_qube_with_the_outside_address_and_only_from_allowed_sources()
    {
        using var work = _lab.StartServer("work", 8080);
        using var personal = _lab.StartServer("personal", 8080);
        using var personalUdp = _lab.StartServer("personal", 5353, LabProtocol.Udp);
        Blocked("outside", SysNetLan, 8443); // nothing forwarded yet

        _pf.Add(PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, ForwardType.External, [Outside + "/32"], comment: "web"));
        _pf.Add(PortForward.Create("personal", ForwardProtocol.Udp, 5353, allowFrom: ["192.168.1.0/24"]));

        var r = Open("outside", SysNetLan, 8443);
        Assert.Equal("work", r.ServerNode);
        Assert.Equal(Outside, r.PeerAddress); // no NAT on the way in: the server sees who connected
        Blocked("outside2", SysNetLan, 8443); // 192.168.1.60 is not in -AllowFrom
        Blocked("outside", SysNetLan, 8080); // the target port itself is not open at the edge
        Blocked("outside", _lab.Ip("personal"), 8080); // another qube's port is not exposed (routed straight at it)
        Blocked("outside", _lab.Ip("work"), 8080); // nor is the target's, except through the forward

        var u = Open("outside2", SysNetLan, 5353, LabProtocol.Udp);
        Assert.Equal("personal", u.ServerNode);
        Assert.Equal("192.168.1.60", u.PeerAddress);

        // the rulesets carry exactly the chains the script declares
        var sysNet = _lab.ListRuleset("sys-net");
        Assert.Contains("chain qubesfw-dnat {", sysNet);
        Assert.Contains("jump qubesfw-forward comment \"qubesfirewall\"", sysNet);
        Assert.DoesNotContain("qubesfw-input", sysNet);
        Assert.Contains("jump qubesfw-input comment \"qubesfirewall\"", _lab.ListRuleset("work"));
    }

    [Fact]
    public void Internal_forward_serves_the_network_qubes_clients_and_works_through_a_vpn_like_qube()
    {
        using var work = _lab.StartServer("work", 8080);
        using var vpnApp = _lab.StartServer("vpn-app", 9000);
        var sysFirewall = _lab.Ip("sys-firewall");
        Blocked("personal", sysFirewall, 8080);

        // work's port 8080 on sys-firewall's address, for personal and for sys-vpn (so for the qubes behind it)
        var plan = _pf.Add(PortForward.Create("work", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal,
            allowFrom: [_lab.Ip("personal") + "/32", _lab.Ip("sys-vpn") + "/32"]));
        Assert.Equal(["sys-firewall"], plan.Hops);

        var fromPersonal = Open("personal", sysFirewall, 8080);
        Assert.Equal("work", fromPersonal.ServerNode);
        Assert.Equal(_lab.Ip("personal"), fromPersonal.PeerAddress);
        var throughVpn = Open("vpn-app", sysFirewall, 8080); // vpn-app -> sys-vpn (masquerade) -> sys-firewall -> work
        Assert.Equal("work", throughVpn.ServerNode);
        Assert.Equal(_lab.Ip("sys-vpn"), throughVpn.PeerAddress);
        Blocked("untrusted", sysFirewall, 8080); // a client not in -AllowFrom
        Blocked("personal", _lab.Ip("work"), 8080); // only through the forward, not straight to work
        Blocked("outside", SysNetLan, 8080); // internal: nothing opens at the edge

        // a port of a qube behind the VPN-like qube, published on its uplink (standing in for its tunnel interface)
        _pf.Add(PortForward.Create("vpn-app", ForwardProtocol.Tcp, 9000, type: ForwardType.Internal, @interface: "eth0"));
        var fromUpstream = Open("sys-firewall", _lab.Ip("sys-vpn"), 9000);
        Assert.Equal("vpn-app", fromUpstream.ServerNode);
        Assert.Equal(sysFirewall, fromUpstream.PeerAddress);
    }

    [Fact]
    public void Every_script_is_idempotent_and_a_reboot_restores_the_forwards_from_the_persisted_files()
    {
        using var work = _lab.StartServer("work", 8080);
        using var personal = _lab.StartServer("personal", 8080);
        _pf.Add(PortForward.Create("work", ForwardProtocol.Tcp, 8443, 8080, allowFrom: ["192.168.1.0/24"]));
        _pf.Add(PortForward.Create("personal", ForwardProtocol.Tcp, 8080, type: ForwardType.Internal));
        _pf.Add(PortForward.Create("vpn-app", ForwardProtocol.Udp, 5000, expire: 1900000000));
        var before = Rulesets();

        foreach (var qube in AllQubes)
        {
            var script = _pf.Export(qube);
            if (script is null) continue;
            _pf.RunScriptRepeatedly(qube, script, 10).EnsureSuccess($"10 re-runs in {qube}");
            Assert.Equal(before[qube], _lab.ListRuleset(qube));
        }

        // "reboot" every qube: flush, baseline, agent, then the persisted hook files, as Qubes starts them
        foreach (var qube in AllQubes)
            Assert.All(_pf.Restart(qube), run => run.EnsureSuccess($"hook in {qube}"));
        var after = Rulesets();
        foreach (var qube in AllQubes) Assert.Equal(before[qube], after[qube]);
        Assert.Equal("work", Open("outside", SysNetLan, 8443).ServerNode);
        Assert.Equal("personal", Open("untrusted", _lab.Ip("sys-firewall"), 8080).ServerNode);
    }

    [Fact]
    public void Remove_closes_the_forward_restores_each_ruleset_exactly_and_keeps_user_lines_and_other_forwards()
    {
        // the user's own hook lines, with a rule of theirs in custom-forward, run as at boot
        const string userScript = "#!/bin/sh\n# my own rules\nnft add rule ip qubes custom-input tcp dport 2222 accept comment '\"mine\"'\n";
        _lab.WriteRwConfig("sys-net", "qubes-firewall-user-script", userScript, executable: true);
        _pf.Restart("sys-net");
        using var work = _lab.StartServer("work", 8080);
        using var personal = _lab.StartServer("personal", 8081);
        var before = Rulesets();
        Assert.Contains("comment \"mine\"", before["sys-net"]);

        _pf.Backend.WriteQubeFile("sys-net", "/rw/config/qubes-firewall-user-script", userScript, Engine.Persistence.ManagedBlock.FileMode);
        _pf.Add(PortForward.Create("work", ForwardProtocol.Tcp, 8080));
        _pf.Add(PortForward.Create("personal", ForwardProtocol.Tcp, 8081));
        Assert.Equal("work", Open("outside", SysNetLan, 8080).ServerNode);
        Assert.Equal("personal", Open("outside", SysNetLan, 8081).ServerNode);
        Assert.StartsWith(userScript, _lab.ReadRwConfig("sys-net", "qubes-firewall-user-script"), StringComparison.Ordinal);

        // remove one: the other, through the same sys-net and sys-firewall, keeps working
        _pf.Remove("work", ForwardProtocol.Tcp, 8080);
        Blocked("outside", SysNetLan, 8080);
        Assert.Equal("personal", Open("outside", SysNetLan, 8081).ServerNode);
        Assert.Equal(before["work"], _lab.ListRuleset("work"));

        // remove the last: every hop back to the ruleset it had before the first add, the user's file as it was
        var plan = _pf.Remove("personal", ForwardProtocol.Tcp, 8081);
        Assert.Equal(["sys-net", "sys-firewall"], plan.Hops);
        Blocked("outside", SysNetLan, 8081);
        var after = Rulesets();
        foreach (var qube in AllQubes) Assert.Equal(before[qube], after[qube]);
        Assert.Equal(userScript, _lab.ReadRwConfig("sys-net", "qubes-firewall-user-script"));
        Assert.Null(_lab.ReadRwConfig("personal", "rc.local")); // nothing of the forward was ever written into personal: its agent had the keys

        // and a reboot with the files as they are now gives the same rulesets again
        foreach (var qube in new[] { "sys-net", "sys-firewall", "personal" }) _pf.Restart(qube);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "personal" }) Assert.Equal(before[qube], _lab.ListRuleset(qube));
    }
}
