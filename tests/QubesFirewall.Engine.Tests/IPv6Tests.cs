using QubesFirewall.Engine.Backends;
using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Planning;
using QubesFirewall.Engine.Tests.AdminApi;
using static QubesFirewall.Engine.Tests.TestQubes;

namespace QubesFirewall.Engine.Tests;

/// <summary>
/// The ipv6 feature as core-admin's net.py reads it (features.check_with_netvm("ipv6", False): the
/// first qube from the qube up its netvm chain that has the feature decides; Python truth of the
/// string, so '' is off and anything else, '0' included, is on) and the addresses it gives
/// (fd09:24ef:4179::a89:&lt;qid hex&gt;, disposables ::a8a:&lt;dispid hex&gt;). Expected values by hand.
/// </summary>
public sealed class IPv6Tests
{
    private static Q[] Chain(IReadOnlyDictionary<string, string>? net = null, IReadOnlyDictionary<string, string>? fw = null, IReadOnlyDictionary<string, string>? work = null) =>
    [
        new("sys-net", 2, NetVm: "", Provides: true, Features: net),
        new("sys-firewall", 3, Class: "DispVM", NetVm: "sys-net", Provides: true, Features: fw, DispId: 2741),
        new("work", 27, Features: work),
        new("vault", 28, NetVm: ""),
    ];

    private static string? V6(QubesInventory inventory, string name) => inventory.Get(name).IPv6;

    [Fact]
    public void Nobody_has_the_feature_no_IPv6()
    {
        var inv = Inventory("sys-firewall", null, Chain());
        Assert.All(inv.Qubes, q => Assert.Null(q.IPv6));
    }

    [Fact]
    public void On_at_the_top_the_chain_inherits_it()
    {
        var inv = Inventory("sys-firewall", null, Chain(net: F(("ipv6", "1"))));
        Assert.Equal("fd09:24ef:4179::a89:2", V6(inv, "sys-net"));
        Assert.Equal("fd09:24ef:4179::a8a:ab5", V6(inv, "sys-firewall"));   // dispid 2741 = 0xab5
        Assert.Equal("fd09:24ef:4179::a89:1b", V6(inv, "work"));           // qid 27 = 0x1b
        Assert.Null(V6(inv, "vault"));                                      // not networked
        Assert.Equal((true, "sys-net"), IPv6Planner.Decide(inv, inv.Get("work")));
    }

    [Fact]
    public void The_first_qube_with_the_feature_decides()
    {
        // sys-firewall opts out: work inherits the opt-out, although sys-net has it on.
        var inv = Inventory("sys-firewall", null, Chain(net: F(("ipv6", "1")), fw: F(("ipv6", ""))));
        Assert.NotNull(V6(inv, "sys-net"));
        Assert.Null(V6(inv, "sys-firewall"));
        Assert.Null(V6(inv, "work"));
        Assert.Equal((false, "sys-firewall"), IPv6Planner.Decide(inv, inv.Get("work")));
        // work turns it on for itself again.
        inv = Inventory("sys-firewall", null, Chain(net: F(("ipv6", "1")), fw: F(("ipv6", "")), work: F(("ipv6", "1"))));
        Assert.Equal("fd09:24ef:4179::a89:1b", V6(inv, "work"));
    }

    [Fact]
    public void Any_non_empty_value_is_on_even_0()
    {
        var inv = Inventory("sys-firewall", null, Chain(work: F(("ipv6", "0"))));
        Assert.Equal("fd09:24ef:4179::a89:1b", V6(inv, "work"));
    }

    [Fact]
    public void Plans_map_the_three_settings_to_the_feature()
    {
        var inv = Inventory("sys-firewall", null, Chain(net: F(("ipv6", "1")), work: F(("ipv6", ""))));
        var on = IPv6Planner.Plan(inv, "work", IPv6Setting.Enabled);
        Assert.Equal(("", "1", true, "work"), (on.CurrentValue, on.NewValue, on.EnabledAfter, on.DecidedBy));
        Assert.Equal("qvm-features work ipv6 '1'", on.Command);
        var inherit = IPv6Planner.Plan(inv, "work", IPv6Setting.Inherit);
        Assert.Equal(("", null, true, "sys-net"), (inherit.CurrentValue, inherit.NewValue, inherit.EnabledAfter, inherit.DecidedBy));
        Assert.Equal("qvm-features --unset work ipv6", inherit.Command);
        var off = IPv6Planner.Plan(inv, "work", IPv6Setting.Disabled);
        Assert.False(off.IsChange);
        Assert.False(off.EnabledAfter);
        Assert.Empty(on.Warnings);
    }

    [Fact]
    public void Enabling_below_a_chain_without_IPv6_warns_that_there_is_no_gateway()
    {
        var change = IPv6Planner.Plan(Inventory("sys-firewall", null, Chain()), "work", IPv6Setting.Enabled);
        var warning = Assert.Single(change.Warnings);
        Assert.Contains("'sys-firewall' has IPv6 off", warning);
        Assert.Contains("Set-QubeIPv6 -VMName sys-net -Enabled $true", warning);
    }

    [Fact]
    public void Turning_a_network_qube_off_warns_about_clients_that_keep_it_on()
    {
        var change = IPv6Planner.Plan(Inventory("sys-firewall", null, Chain(net: F(("ipv6", "1")), fw: F(("ipv6", "1")))), "sys-net", IPv6Setting.Disabled);
        Assert.Contains("'sys-firewall' turn IPv6 on themselves", Assert.Single(change.Warnings));
    }

    [Theory]
    [InlineData("vault", IPv6Setting.Enabled, "NoNetwork")]
    [InlineData("dom0", IPv6Setting.Disabled, "NoNetwork")]
    [InlineData("nosuch", IPv6Setting.Enabled, "QubeNotFound")]
    public void Refusals(string name, IPv6Setting setting, string errorId)
    {
        var inv = Inventory("sys-firewall", null, Chain());
        Assert.Equal(errorId, Assert.Throws<QubesFirewallException>(() => IPv6Planner.Plan(inv, name, setting)).ErrorId);
    }

    [Fact]
    public void Turning_it_off_on_a_qube_without_network_is_allowed()
    {
        var change = IPv6Planner.Plan(Inventory("sys-firewall", null, Chain()), "vault", IPv6Setting.Disabled);
        Assert.Equal("", change.NewValue);
    }
}

/// <summary>The feature written by each backend, and the address both then report.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class IPv6BackendTests : IDisposable
{
    private readonly LiveQubesd _live = new();

    public void Dispose() => _live.Dispose();

    public static TheoryData<bool> Backends => new() { false, true };

    private IQubesBackend Open(bool live) => live ? _live.NewBackend() : new OfflineRoot(_live.Root);

    [Theory]
    [MemberData(nameof(Backends))]
    public void Enable_off_and_inherit_on_both_backends(bool live)
    {
        // sys-net on: everything networked behind it inherits. work is qid 11 (0xb), sys-firewall dispid 2741 (0xab5).
        IPv6Planner.Apply(Open(live), IPv6Planner.Plan(Open(live).GetInventory(), "sys-net", IPv6Setting.Enabled));
        var inv = Open(live).GetInventory();
        Assert.Equal("1", inv.Get("sys-net").Features["ipv6"]);
        Assert.Equal("fd09:24ef:4179::a89:b", inv.Get("work").IPv6);
        Assert.Equal("fd09:24ef:4179::a8a:ab5", inv.Get("sys-firewall").IPv6);

        IPv6Planner.Apply(Open(live), IPv6Planner.Plan(Open(live).GetInventory(), "work", IPv6Setting.Disabled));
        inv = Open(live).GetInventory();
        Assert.Equal("", inv.Get("work").Features["ipv6"]);
        Assert.Null(inv.Get("work").IPv6);

        IPv6Planner.Apply(Open(live), IPv6Planner.Plan(Open(live).GetInventory(), "work", IPv6Setting.Inherit));
        inv = Open(live).GetInventory();
        Assert.False(inv.Get("work").Features.ContainsKey("ipv6"));
        Assert.Equal("fd09:24ef:4179::a89:b", inv.Get("work").IPv6);
        if (live) Assert.Equal(["admin.vm.feature.Set", "admin.vm.feature.Set", "admin.vm.feature.Remove"],
            _live.Server.Calls.Where(c => c.Method.StartsWith("admin.vm.feature.S", StringComparison.Ordinal) || c.Method == "admin.vm.feature.Remove").Select(c => c.Method));
    }
}
