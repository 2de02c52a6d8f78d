using QubesFirewall.Engine.Formats;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;

namespace QubesFirewall.Engine.Tests;

/// <summary>Chain resolution: which network qubes a forward crosses, and every refusal.</summary>
public sealed class PortForwardChainTests
{
    private static PortForward Tcp(string vm, int port, ForwardType type = ForwardType.External, string? iface = null) =>
        PortForward.Create(vm, ForwardProtocol.Tcp, port, type: type, @interface: iface);

    [Fact]
    public void External_goes_up_to_the_qube_with_the_physical_nic()
    {
        var chain = NetworkChain.Resolve(QubesXmlBuilder.Standard().Inventory(), Tcp("work", 443));
        Assert.Equal(["sys-net", "sys-firewall"], chain.HopNames);
        Assert.Equal("sys-net -> sys-firewall -> work", chain.Path);
        var (edge, inner) = (chain.Hops[0], chain.Hops[1]);
        Assert.Equal((HopIngressKind.OutsideInterfaces, null, "10.137.0.3", false), (edge.Ingress, edge.LocalAddress, edge.NextAddress, edge.IsLast));
        Assert.Equal((HopIngressKind.Uplink, "10.137.0.3", "10.137.0.11", true), (inner.Ingress, inner.LocalAddress, inner.NextAddress, inner.IsLast));
    }

    [Fact]
    public void External_with_an_interface_names_it_at_the_edge_only()
    {
        var chain = NetworkChain.Resolve(QubesXmlBuilder.Standard().Inventory(), Tcp("work", 443, iface: "wlp0s0"));
        Assert.Equal((HopIngressKind.NamedInterface, "wlp0s0"), (chain.Hops[0].Ingress, chain.Hops[0].Interface));
        Assert.Equal((HopIngressKind.Uplink, (string?)null), (chain.Hops[1].Ingress, chain.Hops[1].Interface));
    }

    [Fact]
    public void Internal_stops_at_the_first_network_qube()
    {
        var inv = QubesXmlBuilder.Standard().Inventory();
        var chain = NetworkChain.Resolve(inv, Tcp("work", 8080, ForwardType.Internal));
        var hop = Assert.Single(chain.Hops);
        Assert.Equal(("sys-firewall", HopIngressKind.Clients, "10.137.0.3", "10.137.0.11"), (hop.Name, hop.Ingress, hop.LocalAddress, hop.NextAddress));

        var vpn = NetworkChain.Resolve(inv, Tcp("vpn-app", 9000, ForwardType.Internal, "tun0"));
        var tunnel = Assert.Single(vpn.Hops);
        Assert.Equal(("sys-vpn", HopIngressKind.NamedInterface, (string?)null, "tun0"), (tunnel.Name, tunnel.Ingress, tunnel.LocalAddress, tunnel.Interface));
    }

    [Fact]
    public void A_vpn_and_a_second_firewall_in_between_give_four_hops_outermost_first()
    {
        var inv = new QubesXmlBuilder()
            .Qube("sys-net", 2, null, providesNetwork: true)
            .Qube("sys-firewall", 3, "sys-net", providesNetwork: true)
            .Qube("sys-vpn", 4, "sys-firewall", providesNetwork: true)
            .Qube("sys-firewall-2", 5, "sys-vpn", providesNetwork: true)
            .Qube("app", 6, "sys-firewall-2")
            .Inventory();
        var chain = NetworkChain.Resolve(inv, Tcp("app", 22));
        Assert.Equal(["sys-net", "sys-firewall", "sys-vpn", "sys-firewall-2"], chain.HopNames);
        Assert.Equal(["10.137.0.3", "10.137.0.4", "10.137.0.5", "10.137.0.6"], chain.Hops.Select(h => h.NextAddress));
        Assert.Equal([null, "10.137.0.3", "10.137.0.4", "10.137.0.5"], chain.Hops.Select(h => h.LocalAddress));
        Assert.Equal([false, false, false, true], chain.Hops.Select(h => h.IsLast));
        Assert.Equal(["sys-firewall-2"], NetworkChain.Resolve(inv, Tcp("app", 22, ForwardType.Internal)).HopNames);
    }

    [Fact]
    public void A_qube_without_network_is_refused()
    {
        var inv = QubesXmlBuilder.Standard().Inventory();
        var ex = Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(inv, Tcp("vault", 80)));
        Assert.Equal("NoNetVM", ex.ErrorId);
        Assert.Contains("netvm", ex.Message);
        Assert.Equal("NoNetVM", Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(inv, Tcp("sys-net", 80))).ErrorId);
        Assert.Equal("QubeNotFound", Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(inv, Tcp("nosuch", 80))).ErrorId);
    }

    [Fact]
    public void A_netvm_loop_and_a_missing_netvm_are_refused()
    {
        // qubesd never loads such a store; a live backend could still report one mid-change
        Qube Q(string name, int qid, string? netvm) => new() { Name = name, Qid = qid, NetVM = netvm, IP = $"10.137.0.{qid}", ProvidesNetwork = true };
        var loop = new QubesInventory([Q("a", 2, "b"), Q("b", 3, "c"), Q("c", 4, "a"), Q("app", 5, "a") with { ProvidesNetwork = false }], new Dictionary<string, string>());
        var ex = Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(loop, Tcp("app", 80)));
        Assert.Equal("NetVmLoop", ex.ErrorId);
        Assert.Contains("app -> a -> b -> c -> a", ex.Message);

        var missing = new QubesInventory([Q("app", 5, "gone") with { ProvidesNetwork = false }], new Dictionary<string, string>());
        Assert.Equal("NetVmNotFound", Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(missing, Tcp("app", 80))).ErrorId);
    }

    [Fact]
    public void A_whonix_gateway_on_the_way_or_as_target_is_refused_with_the_reason()
    {
        var inv = QubesXml.Load(System.IO.Path.Combine(TempRoot.SamplePath(), "qubes.xml"));
        var ex = Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(inv, Tcp("anon-whonix", 80)));
        Assert.Equal("WhonixInChain", ex.ErrorId);
        Assert.Contains("sys-whonix", ex.Message);
        Assert.Contains("Tor", ex.Message);
        Assert.Contains("qubes-firewall", ex.Message);
        Assert.Equal("WhonixInChain", Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(inv, Tcp("sys-whonix", 80))).ErrorId);

        // recognised by the template's whonix-gw feature alone, without the tag
        var byFeature = new QubesXmlBuilder()
            .Qube("whonix-gw-18", 1, null, cls: "TemplateVM", features: new Dictionary<string, string> { ["whonix-gw"] = "1" })
            .Qube("sys-net", 2, null, providesNetwork: true)
            .Qube("gw", 3, "sys-net", providesNetwork: true, template: "whonix-gw-18")
            .Qube("ws", 4, "gw")
            .Inventory();
        Assert.Equal("WhonixInChain", Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(byFeature, Tcp("ws", 80))).ErrorId);
        Assert.Equal("WhonixInChain", Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(byFeature, Tcp("ws", 80, ForwardType.Internal))).ErrorId);
    }

    [Fact]
    public void A_halted_hop_is_refused_only_when_applying_live()
    {
        var inv = QubesXmlBuilder.Standard().Inventory()
            .WithPowerStates(n => n == "sys-net" ? PowerState.Running : PowerState.Halted);
        Assert.Equal(2, NetworkChain.Resolve(inv, Tcp("work", 80)).Hops.Count); // offline: no check
        var ex = Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(inv, Tcp("work", 80), requireRunning: true));
        Assert.Equal("HopNotRunning", ex.ErrorId);
        Assert.Contains("sys-firewall: Halted", ex.Message);
        Assert.DoesNotContain("sys-net:", ex.Message);
        var running = inv.WithPowerStates(n => n == "work" ? PowerState.Halted : PowerState.Running);
        Assert.Equal(2, NetworkChain.Resolve(running, Tcp("work", 80), requireRunning: true).Hops.Count); // a halted target is fine
    }

    [Theory]
    [InlineData("4.1.2", true)]
    [InlineData("4.0.6", true)]
    [InlineData("3.2.1", true)]
    [InlineData("4.2.0", false)]
    [InlineData("4.3.5", false)]
    [InlineData("5.0", false)]
    public void Qubes_before_R42_are_refused_when_the_agent_version_says_so(string version, bool refused)
    {
        var inv = new QubesXmlBuilder()
            .Qube("tpl", 1, null, cls: "TemplateVM", features: new Dictionary<string, string> { ["qubes-agent-version"] = version })
            .Qube("sys-net", 2, null, providesNetwork: true, template: "tpl")
            .Qube("app", 3, "sys-net", template: "tpl")
            .Inventory();
        if (!refused)
        {
            Assert.Single(NetworkChain.Resolve(inv, Tcp("app", 80)).Hops);
            return;
        }
        var ex = Assert.Throws<QubesFirewallException>(() => NetworkChain.Resolve(inv, Tcp("app", 80)));
        Assert.Equal("QubesReleaseNotSupported", ex.ErrorId);
        Assert.Contains("R4.2", ex.Message);
        Assert.Contains("tpl", ex.Message);
    }

    [Fact]
    public void Removal_finds_the_hops_even_through_what_adding_refuses()
    {
        var inv = QubesXml.Load(System.IO.Path.Combine(TempRoot.SamplePath(), "qubes.xml"));
        var chain = NetworkChain.ResolveStructure(inv, Tcp("anon-whonix", 80));
        Assert.Equal(["sys-net", "sys-firewall", "sys-whonix"], chain.HopNames);
    }
}
