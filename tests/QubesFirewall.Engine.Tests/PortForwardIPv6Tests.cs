using QubesFirewall.Engine.Deployment;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Scripts;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// Port forwards over IPv6: generated only where the whole chain has IPv6 (the <c>ipv6</c> feature), with
/// the sources of each family filtering that family only; cleaned up like IPv4; refused for IPv6 sources
/// when the chain has no IPv6. Addresses below are qubesd's: fd09:24ef:4179::a89:&lt;qid in hex&gt;.
/// </summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class PortForwardIPv6Tests
{
    private const string SysNet6 = "fd09:24ef:4179::a89:2";
    private const string SysFirewall6 = "fd09:24ef:4179::a89:3";
    private const string Work6 = "fd09:24ef:4179::a89:b"; // qid 11

    private static readonly Dictionary<string, string> On = new() { ["ipv6"] = "1" };
    private static readonly Dictionary<string, string> Off = new() { ["ipv6"] = "" };

    /// <summary>The standard layout with feature ipv6 on sys-net (the rest inherits), optionally opting one qube out or in.</summary>
    private static QubesXmlBuilder Layout(string? optOut = null, bool sysNetOn = true, string? optIn = null)
    {
        Dictionary<string, string>? F(string name) => name == optOut ? Off : name == optIn ? On : name == "sys-net" && sysNetOn ? On : null;
        return new QubesXmlBuilder()
            .Qube("fedora-42", 1, null, cls: "TemplateVM", features: new Dictionary<string, string> { ["qubes-agent-version"] = "4.2.17" })
            .Qube("sys-net", 2, null, providesNetwork: true, template: "fedora-42", features: F("sys-net"))
            .Qube("sys-firewall", 3, "sys-net", providesNetwork: true, template: "fedora-42", features: F("sys-firewall"))
            .Qube("sys-vpn", 4, "sys-firewall", providesNetwork: true, template: "fedora-42", features: F("sys-vpn"))
            .Qube("vpn-app", 8, "sys-vpn", template: "fedora-42", features: F("vpn-app"))
            .Qube("personal", 10, "sys-firewall", template: "fedora-42", features: F("personal"))
            .Qube("work", 11, "sys-firewall", template: "fedora-42", features: F("work"));
    }

    private static QubeForwards For(QubesInventory inventory, string qube, params PortForward[] forwards) =>
        ForwardLayout.Build(inventory, forwards, new List<string>()).For(inventory.Get(qube));

    private static readonly PortForward Web = PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443);

    [Fact]
    public void With_ipv6_along_the_chain_every_hop_translates_to_the_next_hops_ipv6_address_too()
    {
        var inv = Layout().Inventory();
        Assert.Equal(Work6, inv.Get("work").IPv6); // the builder's addresses are qubesd's

        var edge = NftForwardScript.Transaction(For(inv, "sys-net", Web));
        Assert.Contains("add rule ip qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local tcp dport 443 dnat to 10.137.0.3 comment \"tcp/443 to work\"\n", edge);
        Assert.Contains($"add rule ip6 qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local tcp dport 443 dnat to {SysFirewall6} comment \"tcp/443 to work\"\n", edge);
        Assert.Contains($"add rule ip6 qubes qubesfw-forward iifname != \"vif*\" iifname != \"lo\" ip6 daddr {SysFirewall6} tcp dport 443 ct status dnat accept comment \"tcp/443 to work\"\n", edge);
        Assert.Contains("insert rule ip6 qubes custom-forward jump qubesfw-forward comment \"qubesfirewall\"\n", edge);
        Assert.Contains("delete chain ip6 qubes qubesfw-input\n", edge);

        // the last hop matches its own IPv6 address from its uplink and translates address and port (brackets: an IPv6 address with a port)
        var fw = NftForwardScript.Transaction(For(inv, "sys-firewall", Web));
        Assert.Contains($"add rule ip6 qubes qubesfw-dnat iifgroup 1 ip6 daddr {SysFirewall6} tcp dport 443 dnat to [{Work6}]:8443 comment \"tcp/443 to work\"\n", fw);
        Assert.Contains($"add rule ip6 qubes qubesfw-forward iifgroup 1 ip6 daddr {Work6} tcp dport 8443 ct status dnat accept comment \"tcp/443 to work\"\n", fw);

        var target = NftForwardScript.Transaction(For(inv, "work", Web));
        Assert.Contains($"add rule ip6 qubes qubesfw-input iifgroup 1 ip6 daddr {Work6} tcp dport 8443 accept comment \"tcp/443 to work\"\n", target);
        Assert.Contains("insert rule ip6 qubes custom-input jump qubesfw-input comment \"qubesfirewall\"\n", target);

        // the script reads both tables once and pipes one transaction for both
        var script = NftForwardScript.Render(For(inv, "sys-firewall", Web));
        Assert.Contains("qubesfw_ip6=$(nft -a list table ip6 qubes)", script);
        Assert.Single(script.Split("| nft -f -").Skip(1));
        Assert.Contains("(sys-net -> sys-firewall -> work) over IPv4 and IPv6\n", script);
        Assert.Contains("tables ip qubes and ip6 qubes", script);
    }

    [Fact]
    public void Internal_forwards_match_the_network_qubes_own_ipv6_address_for_its_clients()
    {
        var inv = Layout().Inventory();
        var f = PortForward.Create("work", ForwardProtocol.Udp, 53, 5353, ForwardType.Internal);
        var tx = NftForwardScript.Transaction(For(inv, "sys-firewall", f));
        Assert.Contains($"add rule ip6 qubes qubesfw-dnat iifgroup 2 ip6 daddr {SysFirewall6} udp dport 53 dnat to [{Work6}]:5353 comment \"udp/53 to work\"\n", tx);
        Assert.Contains($"add rule ip6 qubes qubesfw-forward iifgroup 2 ip6 daddr {Work6} udp dport 5353 ct status dnat accept comment \"udp/53 to work\"\n", tx);
    }

    [Fact]
    public void Each_family_is_filtered_by_its_own_sources_only_and_never_opened_to_any_source_by_the_other()
    {
        var inv = Layout().Inventory();
        var both = PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24", "2001:db8:1::/64"]);
        var tx = NftForwardScript.Transaction(For(inv, "sys-net", both));
        Assert.Contains("add rule ip qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local ip saddr 192.168.1.0/24 tcp dport 443 dnat to 10.137.0.3", tx);
        Assert.Contains($"add rule ip6 qubes qubesfw-dnat iifname != \"vif*\" iifname != \"lo\" fib daddr type local ip6 saddr 2001:db8:1::/64 tcp dport 443 dnat to {SysFirewall6}", tx);
        Assert.DoesNotContain("ip6 saddr 192.168", tx);
        Assert.DoesNotContain("ip saddr 2001", tx);

        // IPv4 sources only: no IPv6 rule (not "any IPv6 source"); the IPv6 chains are declared and deleted again
        var v4 = PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]);
        var tx4 = NftForwardScript.Transaction(For(inv, "sys-net", v4));
        Assert.DoesNotContain("add rule ip6", tx4);
        Assert.DoesNotContain("insert rule ip6", tx4);
        Assert.Contains("delete chain ip6 qubes qubesfw-dnat\ndelete chain ip6 qubes qubesfw-forward\ndelete chain ip6 qubes qubesfw-input\n", tx4);
        Assert.Equal([NftFamily.Ip], NftForwardScript.Families(NetworkChain.Resolve(inv, v4)));

        // IPv6 sources only: the mirror image
        var v6 = PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["2001:db8:1::50"]);
        var tx6 = NftForwardScript.Transaction(For(inv, "sys-net", v6));
        Assert.DoesNotContain("add rule ip qubes", tx6);
        Assert.Contains("ip6 saddr 2001:db8:1::50 tcp dport 443", tx6);
        Assert.Equal([NftFamily.Ip6], NftForwardScript.Families(NetworkChain.Resolve(inv, v6)));
    }

    [Fact]
    public void Without_ipv6_on_the_chain_nothing_ip6_is_generated()
    {
        var none = Layout(sysNetOn: false).Inventory();
        Assert.False(NetworkChain.Resolve(none, Web).HasIPv6);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
            Assert.DoesNotContain("ip6", NftForwardScript.Render(For(none, qube, Web)));

        // sys-firewall opts out: work inherits "off" from it; sys-net still has IPv6 but the chain does not
        var gap = Layout(optOut: "sys-firewall").Inventory();
        Assert.Null(gap.Get("work").IPv6);
        var chain = NetworkChain.Resolve(gap, Web);
        Assert.False(chain.HasIPv6);
        Assert.Equal(["sys-firewall", "work"], chain.WithoutIPv6.Select(q => q.Name));
        var edge = NftForwardScript.Transaction(For(gap, "sys-net", Web));
        Assert.DoesNotContain("add rule ip6", edge); // sys-net has IPv6, but nothing to translate it to
        Assert.Contains("delete chain ip6 qubes qubesfw-forward\n", edge);
    }

    [Fact]
    public void The_planner_refuses_ipv6_sources_on_a_chain_without_ipv6_and_says_where_to_turn_it_on()
    {
        using var root = new TempRoot(Layout(optOut: "sys-firewall").Build());
        var options = DeploymentOptions.For(root.Backend, root.Now);
        var ex = Assert.Throws<QubesFirewallException>(() => PortForwardPlanner.PlanAdd(root.Backend,
            PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24", "2001:db8::/32"]), options));
        Assert.Equal("IPv6NotEnabled", ex.ErrorId);
        Assert.Contains("2001:db8::/32", ex.Message);
        Assert.Contains("'sys-firewall', 'work' have no IPv6 address", ex.Message);
        Assert.Contains("Set-QubeIPv6 -VMName sys-net -Enabled $true", ex.Message);
        Assert.DoesNotContain(root.Backend.GetInventory().Qubes, q => q.Features.Keys.Any(k => k.StartsWith("qubesfirewall.forward.", StringComparison.Ordinal) || Agent.AgentFeatures.IsAgentFeature(k))); // nothing was changed

        // IPv4 sources on the same chain: fine, IPv4 only
        var plan = PortForwardPlanner.PlanAdd(root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["192.168.1.0/24"]), options);
        Assert.Equal("IPv4", plan.AddressFamilies);
    }

    [Fact]
    public void A_target_with_ipv6_behind_a_chain_without_it_gets_an_ipv4_forward_and_a_warning()
    {
        using var root = new TempRoot(Layout(sysNetOn: false, optIn: "work").Build());
        Assert.NotNull(root.Backend.GetInventory().Get("work").IPv6);
        var plan = PortForwardPlanner.PlanAdd(root.Backend, Web, DeploymentOptions.For(root.Backend, root.Now));
        Assert.Equal("IPv4", plan.AddressFamilies);
        var warning = Assert.Single(plan.Warnings, w => w.Contains("over IPv4 only", StringComparison.Ordinal));
        Assert.Contains("'sys-net', 'sys-firewall' on the way do not", warning);
    }

    [Fact]
    public void Add_then_remove_generates_ip6_and_then_removes_it_from_every_hop()
    {
        using var root = new TempRoot(Layout().Build());
        var options = DeploymentOptions.For(root.Backend, root.Now);
        var add = PortForwardPlanner.PlanAdd(root.Backend, PortForward.Create("work", ForwardProtocol.Tcp, 443, allowFrom: ["2001:db8:1::/64"]), options);
        Assert.Equal("IPv6", add.AddressFamilies);
        Assert.Null(PortForwardPlanner.Apply(root.Backend, add).Failure);
        List<string> Keys(string qube, string kind) => root.Backend.GetInventory().Get(qube).Features
            .Where(f => f.Key.StartsWith(Agent.AgentFeatures.Prefix + kind, StringComparison.Ordinal)).Select(f => f.Value).ToList();
        // IPv6 sources only: each hop gets an IPv6 part, none for IPv4
        Assert.Contains(" nat=fd09:24ef:4179::a89:3 ", Assert.Single(Keys("sys-net", "hop6.")));
        Assert.Contains("2001:db8:1::/64", Assert.Single(Keys("sys-net", "hop6.")));
        Assert.Empty(Keys("sys-net", "hop4."));
        Assert.Single(Keys("sys-firewall", "hop6."));
        Assert.Single(Keys("work", "tgt6."));
        var listed = Assert.Single(PortForwardPlanner.List(root.Backend.GetInventory(), root.Now));
        Assert.True(listed.IPv6);

        var remove = PortForwardPlanner.PlanRemove(root.Backend, "work", ForwardProtocol.Tcp, 443, options);
        Assert.Null(PortForwardPlanner.Apply(root.Backend, remove).Failure);
        foreach (var qube in new[] { "sys-net", "sys-firewall", "work" })
        {
            Assert.Equal("none", remove.AgentGenerations[qube]);
            Assert.Empty(Keys(qube, ""));
        }
    }

    [Theory]
    [InlineData("10.137.0.3; touch /tmp/x", NftFamily.Ip)]
    [InlineData("10.137.0", NftFamily.Ip)]
    [InlineData("fd09::1", NftFamily.Ip)]
    [InlineData("10.137.0.3", NftFamily.Ip6)]
    [InlineData("fd09::1%eth0", NftFamily.Ip6)]
    [InlineData("fd09::1 ip6 saddr ::/0", NftFamily.Ip6)]
    [InlineData("$(id)", NftFamily.Ip6)]
    public void Addresses_are_checked_where_they_reach_a_rule(string value, NftFamily family)
    {
        Assert.Equal("InvalidAddress", Assert.Throws<QubesFirewallException>(() => NftForwardScript.Address(value, family)).ErrorId);
    }

    [Fact]
    public void A_hostile_ip6_property_never_reaches_a_script()
    {
        var inv = Layout().Inventory();
        var hostile = inv.Get("work") with { IPv6 = "fd09::b\ndelete table ip qubes" };
        var qubes = inv.Qubes.Select(q => q.Name == "work" ? hostile : q).ToList();
        var inventory = new QubesInventory(qubes, inv.GlobalProperties);
        Assert.Equal("InvalidAddress", Assert.Throws<QubesFirewallException>(() => NftForwardScript.Transaction(For(inventory, "sys-firewall", Web))).ErrorId);
    }

    [Theory]
    [InlineData("bash")]
    [InlineData("dash")]
    public void Ipv6_scripts_parse(string shell)
    {
        var inv = Layout().Inventory();
        var forwards = new[]
        {
            PortForward.Create("work", ForwardProtocol.Tcp, 443, 8443, allowFrom: ["192.168.1.0/24", "2001:db8::/32", "2001:db8:1::5"], comment: "web [v6]"),
            PortForward.Create("personal", ForwardProtocol.Udp, 51820, type: ForwardType.Internal),
            PortForward.Create("vpn-app", ForwardProtocol.Tcp, 22, 2222, @interface: "ens6"),
        };
        var layout = ForwardLayout.Build(inv, forwards, new List<string>());
        foreach (var qube in inv.Qubes)
        {
            PortForwardScriptTests.AssertParses(shell, NftForwardScript.Render(layout.For(qube)), $" for {qube.Name}");
        }
    }
}
