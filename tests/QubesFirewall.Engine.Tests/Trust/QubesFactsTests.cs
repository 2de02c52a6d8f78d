using QubesFirewall.Engine.Model;
using QubesFirewall.Engine.Persistence;
using QubesFirewall.Engine.Planning;
using static QubesFirewall.Engine.Tests.TestQubes;

namespace QubesFirewall.Engine.Tests.Trust;

/// <summary>
/// The one place for each Qubes fact (<see cref="QubesFacts"/>), each test citing the Qubes source line it follows,
/// and the planners and the audit giving the same answer through it.
/// </summary>
public sealed class QubesFactsTests
{
    private static QubesInventory Inv(params Q[] qubes) => Inventory(null, null, qubes);

    // core-admin qubes/ext/services.py line 106: str(int(bool(value))) — a non-empty string is true, '0' included.
    [Theory]
    [InlineData("1", true)]
    [InlineData("0", true)]
    [InlineData("False", true)]
    [InlineData("false", true)]
    [InlineData(" ", true)]
    [InlineData("", false)]
    [InlineData(null, false)]
    public void A_feature_is_true_when_its_value_is_a_non_empty_string(string? value, bool expected) =>
        Assert.Equal(expected, QubesFacts.IsTrue(value));

    // core-agent-linux vm-systemd/qubes-sysinit.sh lines 9-10 (on by default in network qubes) + services.py line 106.
    [Theory]
    [InlineData(null, true)]
    [InlineData("1", true)]
    [InlineData("0", true)]
    [InlineData("", false)]
    public void Service_qubes_firewall_0_is_on_for_planners_and_audit_alike(string? service, bool runs)
    {
        var features = service is null ? F() : F(("service.qubes-firewall", service));
        var inv = Inv(new Q("fedora", 1, Class: "TemplateVM"), new Q("sys-net", 2, NetVm: "", Provides: true, Template: "fedora", Features: features),
            new Q("work", 3, NetVm: "sys-net", Template: "fedora"));
        var netvm = inv.Get("sys-net");
        Assert.Equal(runs, QubesFacts.RunsFirewallService(netvm));
        // the planners' hook file and the audit's verdict follow the same answer
        Assert.Equal(runs ? HookFiles.FirewallUserScript : HookFiles.RcLocal, HookFiles.HookPath(netvm));
        Assert.Equal(runs, Enforcement.OfNetVm(inv, netvm).Enforces);
    }

    // core-admin qubes/features.py lines 169-175 and 193-198: check_with_template — the first qube along the chain that has the feature decides.
    [Fact]
    public void Check_with_template_stops_at_the_first_qube_that_has_the_feature()
    {
        var inv = Inv(new Q("tpl", 1, Class: "TemplateVM", Features: F(("x", "1"))), new Q("dvm", 2, Template: "tpl", Features: F(("x", ""))),
            new Q("disp", 3, Class: "DispVM", Template: "dvm"), new Q("other", 4, Template: "tpl"));
        Assert.Equal("", QubesFacts.CheckWithTemplate(inv, inv.Get("disp"), "x"));
        Assert.Equal("1", QubesFacts.CheckWithTemplate(inv, inv.Get("other"), "x"));
        Assert.Null(QubesFacts.CheckWithTemplate(inv, inv.Get("other"), "y"));
        Assert.Equal(["disp", "dvm", "tpl"], QubesFacts.TemplateChain(inv, inv.Get("disp")).Select(q => q.Name));
    }

    // core-admin-addon-whonix qubeswhonix/__init__.py lines 187-188, 261-263 (anon-gateway tag where check_with_template("whonix-gw")),
    // lines 246-247 and mgmt-salt qvm/template-whonix-gateway.sls lines 26-29 (the feature on the template).
    [Theory]
    [InlineData("whonix-gateway-18", null, null, false)] // a name decides nothing
    [InlineData("tpl", "1", null, true)]
    [InlineData("tpl", "0", null, true)] // non-empty: true, as bool('0') is
    [InlineData("tpl", "", null, false)]
    [InlineData("tpl", "1", "", false)] // the qube's own empty value wins (check_with_template)
    [InlineData("tpl", null, "1", true)]
    public void A_Whonix_gateway_is_the_tag_or_the_feature_along_the_template_chain(string template, string? templateValue, string? ownValue, bool gateway)
    {
        var inv = Inv(new Q(template, 1, Class: "TemplateVM", Features: templateValue is null ? F() : F(("whonix-gw", templateValue))),
            new Q("gw", 2, NetVm: "", Provides: true, Template: template, Features: ownValue is null ? F() : F(("whonix-gw", ownValue))),
            new Q("tagged", 3, NetVm: "", Provides: true, Template: template, Tags: ["anon-gateway"]));
        Assert.Equal(gateway, QubesFacts.IsWhonixGateway(inv, inv.Get("gw")));
        Assert.True(QubesFacts.IsWhonixGateway(inv, inv.Get("tagged")));
        // planners refuse what the audit reports: one answer
        Assert.Equal(!gateway, Enforcement.OfNetVm(inv, inv.Get("gw")).Enforces);
    }

    // core-agent-linux post-install.d/10-qubes-core-agent-features.sh lines 94-98, core-admin core_features.py lines 91-100, r3compatibility.py line 82.
    [Fact]
    public void The_agents_qubes_firewall_report_is_read_with_the_template()
    {
        var inv = Inv(new Q("old", 1, Class: "TemplateVM", Features: F(("qubes-firewall", ""))), new Q("new", 2, Class: "TemplateVM", Features: F(("qubes-firewall", "1"))),
            new Q("a", 3, NetVm: "", Provides: true, Template: "old"), new Q("b", 4, NetVm: "", Provides: true, Template: "old", Features: F(("qubes-firewall", "1"))),
            new Q("c", 5, NetVm: "", Provides: true, Template: "new"));
        Assert.False(QubesFacts.AgentHasFirewallService(inv, inv.Get("a")));
        Assert.True(QubesFacts.AgentHasFirewallService(inv, inv.Get("b")));
        Assert.True(QubesFacts.AgentHasFirewallService(inv, inv.Get("c")));
        Assert.False(Enforcement.OfNetVm(inv, inv.Get("a")).Enforces);
        Assert.True(Enforcement.OfNetVm(inv, inv.Get("b")).Enforces);
    }

    // core-admin qubes/vm/dispvm.py line 118 (class DispVM, volumes not saved on stop) and line 250 (its template).
    [Fact]
    public void A_disposable_keeps_its_files_in_its_disposable_template()
    {
        var inv = Inv(new Q("fedora", 1, Class: "TemplateVM"), new Q("default-dvm", 2, Template: "fedora"),
            new Q("sys-firewall", 3, Class: "DispVM", NetVm: "", Provides: true, Template: "default-dvm", DispId: 5), new Q("work", 4, Template: "fedora"));
        Assert.True(QubesFacts.IsDisposable(inv.Get("sys-firewall")));
        Assert.False(QubesFacts.IsDisposable(inv.Get("default-dvm")));
        Assert.Equal("default-dvm", QubesFacts.StorageOf(inv, inv.Get("sys-firewall")).Name);
        Assert.Equal("work", QubesFacts.StorageOf(inv, inv.Get("work")).Name);
        Assert.Equal("default-dvm", HookFiles.StorageOf(inv, inv.Get("sys-firewall")).Name);
    }
}
